//! The AMQP 1.0 endpoint (AMQPS on 5671, and over WebSockets with subprotocol `AMQPWSB10` on the HTTPS port):
//! the service side of cloud-to-device messages (`/messages/devicebound`) and their feedback
//! (`/messages/serviceBound/feedback`), authorized by tokens put on `$cbs`.
//!
//! Built on fe2o3-amqp's acceptor (pinned exactly: it breaks between minors), handed the emulator's own TLS or
//! WebSocket stream. Clients open three ways: no SASL at all (Node's rhea), SASL MSSBCBS (Python's uamqp), SASL
//! PLAIN or ANONYMOUS (Event Hubs clients). fe2o3's acceptor with SASL refuses a plain header, so the endpoint
//! reads the protocol header itself and picks the path. One task per connection, per session and per link.
//!
//! Memory: fe2o3's futures are large (a send ~3.9 KB, a receive ~2.9 KB, a detach ~5 KB), and an async fn's state
//! is as large as the largest thing it ever awaits, for the task's whole life. So the handshake, attaches, sends,
//! dispositions and detaches are boxed where they are awaited, and messages in channels are boxed (a channel holds
//! a block of 32 slots from the start). heaptrack, 1,000 AMQP devices: 197 → 156 MB of heap; what remains is
//! mostly fe2o3's own channels and tasks (~85 KB a connection).

mod c2d;
mod cbs;
mod context;
mod devices;
mod encoding;
mod eventhubs;
mod feedback;
mod io;
mod links;
mod outbound;
mod request;
mod sasl;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{ConnectionAcceptor, ListenerConnectionHandle, SessionAcceptor};
use fe2o3_amqp::types::definitions::{self, ConnectionError};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::context::Connection;
use self::io::PrefixedIo;
use self::links::{CLOSE_TIMEOUT, error};
use self::sasl::{Sasl, SaslIdentity};
use crate::hub::Hub;
use crate::limits;

const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// Largest frame either side sends.
const MAX_FRAME_SIZE: u32 = 64 * 1024;
/// Most links one session may have attached at once (its handle-max + 1).
const MAX_LINKS_PER_SESSION: u32 = 4095;
/// Idle time-out announced to clients: they send something (an empty frame will do) at least this often.
const IDLE_TIMEOUT_MS: u32 = 240_000;

/// The WebSocket subprotocol of AMQP.
pub const WEBSOCKET_SUBPROTOCOL: &str = "AMQPWSB10";

/// Serves one AMQP connection on `stream` (TLS, or a WebSocket byte stream) until it ends or `shutdown` fires.
pub async fn serve_connection<S>(mut stream: S, hub: Arc<Hub>, shutdown: CancellationToken, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = Duration::from_secs(limits::HANDSHAKE_TIMEOUT_SECS);
    let mut header = [0u8; 8];
    let read = tokio::select! {
        () = shutdown.cancelled() => return,
        read = tokio::time::timeout(handshake, stream.read_exact(&mut header)) => read,
    };
    if !matches!(read, Ok(Ok(_))) {
        tracing::debug!(%peer, "no AMQP protocol header in time");
        return;
    }
    let use_sasl = match header {
        AMQP_HEADER => false,
        SASL_HEADER => true,
        other => {
            // A protocol or version the endpoint does not speak: answer with the one it does, and hang up.
            tracing::debug!(%peer, header = ?other, "not an AMQP 1.0 protocol header");
            let _ = stream.write_all(&SASL_HEADER).await;
            return;
        }
    };
    let kill = CancellationToken::new();
    let io = PrefixedIo::new(header, stream, kill.clone());
    let acceptor = ConnectionAcceptor::builder()
        .container_id("iothub-emulator")
        .max_frame_size(MAX_FRAME_SIZE)
        .channel_max(255u16)
        .idle_time_out(IDLE_TIMEOUT_MS);
    let sasl = Sasl::new(Arc::clone(&hub));
    // Boxed: the handshake's state is large, and inline it would stay in the connection task's state for good.
    let opening = Box::pin(async {
        if use_sasl {
            acceptor.sasl_acceptor(sasl.clone()).build().accept(io).await.map_err(|e| format!("{e:?}"))
        } else {
            acceptor.build().accept(io).await.map_err(|e| format!("{e:?}"))
        }
    });
    let mut handle = tokio::select! {
        () = shutdown.cancelled() => return,
        opened = tokio::time::timeout(handshake, opening) => match opened {
            Ok(Ok(handle)) => handle,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "AMQP connection refused");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "AMQP open timed out");
                kill.cancel();
                return;
            }
        },
    };
    let connection = Arc::new(Connection::new(hub, peer));
    if let Some(SaslIdentity::Token(claim)) = sasl.identity() {
        connection.add_claim(claim);
    }
    tracing::debug!(%peer, sasl = use_sasl, "AMQP connection open");
    let sessions = TaskTracker::new();
    // Ends every link once the connection is gone: fe2o3 never resolves a send whose disposition was still
    // awaited when the connection ended, so a link blocked there would otherwise outlive the connection.
    let ended = shutdown.child_token();
    let local_close = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Some(error(ConnectionError::ConnectionForced, "The emulator is shutting down")),
            incoming = handle.next_incoming_session() => {
                let Some(incoming) = incoming else { break None };
                // An explicit handle-max: fe2o3 leaves the default (2^32-1) out, and pyamqp compares with it.
                let acceptor = SessionAcceptor::builder().handle_max(MAX_LINKS_PER_SESSION).build();
                match Box::pin(acceptor.accept_incoming_session(incoming, &mut handle)).await {
                    Ok(session) => {
                        sessions.spawn(links::serve_session(session, Arc::clone(&connection), ended.child_token()));
                    }
                    Err(error) => {
                        tracing::debug!(%peer, ?error, "session refused");
                        break None;
                    }
                }
            }
        }
    };
    match local_close {
        Some(reason) => close_or_kill(&mut handle, reason, &kill).await,
        None => {
            let _ = handle.on_close().await;
        }
    }
    ended.cancel();
    sessions.close();
    if tokio::time::timeout(CLOSE_TIMEOUT, sessions.wait()).await.is_err() {
        kill.cancel();
        sessions.wait().await;
    }
    tracing::debug!(%peer, "AMQP connection closed");
}

/// Closes the connection with `reason`; a peer that never answers has its stream cut.
async fn close_or_kill(handle: &mut ListenerConnectionHandle, reason: definitions::Error, kill: &CancellationToken) {
    if tokio::time::timeout(CLOSE_TIMEOUT, handle.close_with_error(reason)).await.is_err() {
        kill.cancel();
    }
}
