//! The AMQP side of the service client: one connection to the hub's AMQPS port, opened on first use and kept,
//! with a session, the `$cbs` links (a SAS token for the hub, renewed before it runs out) and a sender to
//! `/messages/devicebound`.
//!
//! TLS is the crate's own rustls configuration (fe2o3-amqp gets the tokio-rustls stream), and no SASL is used:
//! the token on `$cbs` authorizes the links, as the Node SDK does it.

pub(crate) mod cbs;
pub(crate) mod failure;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{Data, Message, Outcome};
use fe2o3_amqp::{Connection, Sender, Session};
use iothub_proto::ServiceConnectionString;
use iothub_proto::messages::DEVICEBOUND_ADDRESS;
use iothub_proto::tls::Trust;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use self::cbs::Cbs;
use self::failure::{link_error, rejection, send_cause};
use crate::error::Error;

/// The AMQPS port of a hub.
pub(crate) const DEFAULT_PORT: u16 = 5671;
/// Lifetime of the token put on `$cbs`.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Age at which the token is put again, well before it expires.
const TOKEN_RENEWAL: Duration = Duration::from_secs(45 * 60);
/// How long closing waits for the hub's answers.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and as whom to connect, and the connection once open.
pub(crate) struct Amqp {
    host: String,
    port: u16,
    key_name: String,
    key: String,
    trust: Trust,
    timeout: Duration,
    link: Mutex<Option<AmqpLink>>,
}

/// One open connection and what runs on it.
struct AmqpLink {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    cbs: Cbs,
    devicebound: Sender,
    /// When the current token was put.
    token_put: Instant,
    /// Tells this connection from the ones before it (a failed send drops only its own connection).
    generation: u64,
}

/// Why one attempt failed, and whether a fresh connection may do better.
enum Failure {
    /// The connection that was reused is broken: send again on a new one.
    Stale(Error),
    /// The answer (a rejection, a refusal of the token, a time-out, a new connection failing).
    Final(Error),
}

impl Amqp {
    pub(crate) fn new(cs: &ServiceConnectionString, port: u16, trust: Trust, timeout: Duration) -> Self {
        Self {
            host: cs.host_name.clone(),
            port,
            key_name: cs.key_name.clone(),
            key: cs.key.clone(),
            trust,
            timeout,
            link: Mutex::new(None),
        }
    }

    /// Sends `message` and waits for the hub's outcome. A connection found broken is replaced and the message
    /// sent once more; when the old connection broke after the message went out, the device may get it twice
    /// (delivery is at least once anyway).
    pub(crate) async fn send(&self, message: Message<Data>) -> Result<(), Error> {
        match self.send_once(message.clone()).await {
            Ok(()) => Ok(()),
            Err(Failure::Final(error)) => Err(error),
            Err(Failure::Stale(error)) => {
                tracing::debug!(%error, "the AMQP connection broke; sending again on a new one");
                self.send_once(message).await.map_err(|failure| match failure {
                    Failure::Stale(error) | Failure::Final(error) => error,
                })
            }
        }
    }

    async fn send_once(&self, message: Message<Data>) -> Result<(), Failure> {
        let (delivery, generation, reused) = {
            let mut guard = self.lock().await.map_err(Failure::Final)?;
            let reused = guard.is_some();
            let link = match guard.take() {
                Some(link) => link,
                None => self.bounded(self.open()).await.map_err(Failure::Final)?,
            };
            let link = guard.insert(link);
            let generation = link.generation;
            if link.token_put.elapsed() >= TOKEN_RENEWAL {
                let token = self.token().map_err(Failure::Final)?;
                let renewed = self.bounded(link.cbs.put_token(&self.host, token)).await;
                match renewed {
                    Ok(()) => link.token_put = Instant::now(),
                    Err(error) => {
                        guard.take();
                        return Err(retry_if(reused, error));
                    }
                }
            }
            let sent = tokio::time::timeout(self.timeout, link.devicebound.send_batchable(message)).await;
            match sent {
                Ok(Ok(delivery)) => (delivery, generation, reused),
                Ok(Err(error)) => {
                    guard.take();
                    return Err(retry_if(reused, send_failure(&error)));
                }
                Err(_) => {
                    guard.take();
                    return Err(Failure::Final(Error::Timeout(self.timeout)));
                }
            }
        };
        self.outcome(delivery, generation, reused).await
    }

    /// Waits for the hub's disposition, outside the lock so that other sends go on meanwhile.
    async fn outcome(
        &self,
        delivery: DeliveryFut<Result<Outcome, SendError>>,
        generation: u64,
        reused: bool,
    ) -> Result<(), Failure> {
        match tokio::time::timeout(self.timeout, delivery).await {
            Ok(Ok(Outcome::Accepted(_))) => Ok(()),
            Ok(Ok(Outcome::Rejected(rejected))) => Err(Failure::Final(rejection(rejected.error.as_ref()))),
            Ok(Ok(other)) => {
                Err(Failure::Final(Error::Transport(format!("the hub did not take the message: {other:?}"))))
            }
            Ok(Err(error)) => {
                self.forget(generation).await;
                Err(retry_if(reused, send_failure(&error)))
            }
            Err(_) => {
                self.forget(generation).await;
                Err(Failure::Final(Error::Timeout(self.timeout)))
            }
        }
    }

    /// Drops the connection of `generation` if it is still the current one.
    async fn forget(&self, generation: u64) {
        let Ok(mut guard) = self.lock().await else { return };
        if guard.as_ref().is_some_and(|link| link.generation == generation) {
            guard.take();
        }
    }

    /// Closes the connection, if one is open.
    pub(crate) async fn close(&self) {
        let link = match self.lock().await {
            Ok(mut guard) => guard.take(),
            Err(_) => None,
        };
        if let Some(link) = link {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, link.close()).await;
        }
    }

    /// The connection slot, waiting at most the time-out for another send that is opening a connection.
    async fn lock(&self) -> Result<MutexGuard<'_, Option<AmqpLink>>, Error> {
        tokio::time::timeout(self.timeout, self.link.lock()).await.map_err(|_| Error::Timeout(self.timeout))
    }

    async fn bounded<T>(&self, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        tokio::time::timeout(self.timeout, work).await.map_err(|_| Error::Timeout(self.timeout))?
    }

    fn token(&self) -> Result<String, Error> {
        let expiry = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + TOKEN_LIFETIME.as_secs();
        iothub_proto::generate_token(&self.host, &self.key, Some(&self.key_name), expiry)
            .map_err(|e| Error::Config(format!("cannot sign with the policy key: {e}")))
    }

    /// TCP, TLS, AMQP open (no SASL), a session, `$cbs` with a token for the hub, and the devicebound sender.
    async fn open(&self) -> Result<AmqpLink, Error> {
        let tls = connect_tls(&self.host, self.port, &self.trust).await?;
        let generation = rand::random::<u64>();
        let suffix = format!("{generation:016x}");
        let mut connection = Connection::builder()
            .container_id(format!("iothub-service-rust-{suffix}"))
            .hostname(self.host.as_str())
            .open_with_stream(tls)
            .await
            .map_err(|e| Error::Transport(format!("AMQP open: {e}")))?;
        let mut session =
            Session::begin(&mut connection).await.map_err(|e| Error::Transport(format!("AMQP begin: {e}")))?;
        let mut cbs = Cbs::attach(&mut session, &suffix).await?;
        cbs.put_token(&self.host, self.token()?).await?;
        let devicebound = Sender::attach(&mut session, format!("devicebound-{suffix}"), DEVICEBOUND_ADDRESS)
            .await
            .map_err(|e| Error::Transport(format!("cannot attach to {DEVICEBOUND_ADDRESS}: {e}")))?;
        tracing::debug!(host = %self.host, port = self.port, "AMQP connection open");
        Ok(AmqpLink { connection, session, cbs, devicebound, token_put: Instant::now(), generation })
    }
}

/// TCP and TLS to `host:port`, trusting `trust`: the stream fe2o3 runs AMQP on.
pub(crate) async fn connect_tls(
    host: &str,
    port: u16,
    trust: &Trust,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let config = trust.client_config(&[]).map_err(|e| Error::Config(e.to_string()))?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| Error::Config(format!("'{host}' is not a valid host name")))?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| Error::Transport(format!("cannot connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Transport(format!("TLS handshake with {host}:{port}: {e}")))
}

impl AmqpLink {
    async fn close(mut self) {
        let _ = self.devicebound.close().await;
        self.cbs.close().await;
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

/// A failed send as the user's error: a message too big for the link is the hub's `MessageTooLarge`.
fn send_failure(error: &SendError) -> Error {
    match error {
        SendError::MessageSizeExceeded(exceeded) => Error::Hub {
            status: 413,
            code: "MessageTooLarge".into(),
            message: format!("The message is {} bytes; the link takes {}", exceeded.size, exceeded.max_size),
            number: None,
        },
        other => link_error("sending the message", &other.to_string(), send_cause(other)),
    }
}

/// Only a connection that was reused may be stale; a new one that fails gives its answer.
fn retry_if(reused: bool, error: Error) -> Failure {
    if reused && matches!(error, Error::Transport(_) | Error::Hub { status: 401, .. }) {
        Failure::Stale(error)
    } else {
        Failure::Final(error)
    }
}
