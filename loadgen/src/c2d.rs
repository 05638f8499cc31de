//! Cloud-to-device load: a back end sends messages over AMQP (as the service SDKs do: TLS, `$cbs` put-token, a
//! sender to `/messages/devicebound`) to the connected fleet, round robin, each message carrying the time it was
//! sent; the devices receive them over MQTT at QoS 1 and record the send-to-receive latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{AmqpValue, ApplicationProperties, Body, Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use iothub_proto::ServiceConnectionString;

use crate::device::Target;
use crate::stats::Latencies;

/// Nanoseconds since the Unix epoch: what a message carries, so any process on the machine can time it.
pub fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// The send time a message body carries (`{"t":<nanos>}`), if it is one of ours.
pub fn sent_at(body: &[u8]) -> Option<u128> {
    let text = std::str::from_utf8(body).ok()?;
    text.strip_prefix("{\"t\":")?.strip_suffix('}')?.parse().ok()
}

/// Puts `token` for `name` on `$cbs` over `session` (as the SDKs do) and checks the reply's `status-code` 200.
pub(crate) async fn put_token(session: &mut SessionHandle<()>, token: String, name: &str) -> anyhow::Result<()> {
    let mut requests = Sender::attach(session, "cbs-requests", "$cbs").await?;
    let mut replies = Receiver::attach(session, "cbs-replies", "$cbs").await?;
    let request = Message::builder()
        .properties(Properties::builder().message_id(1u64).reply_to("cbs").build())
        .application_properties(
            ApplicationProperties::builder()
                .insert("operation", "put-token")
                .insert("type", "servicebus.windows.net:sastoken")
                .insert("name", name)
                .build(),
        )
        .body(Body::Value(AmqpValue(Value::String(token))))
        .build();
    requests.send(request).await.context("put-token")?;
    let reply = tokio::time::timeout(Duration::from_secs(30), replies.recv::<Body<Value>>())
        .await
        .context("no put-token reply within 30 s")?
        .context("put-token reply")?;
    replies.accept(&reply).await?;
    match reply.message().application_properties.as_ref().and_then(|p| p.get("status-code")) {
        Some(SimpleValue::Int(200)) => {}
        other => bail!("put-token refused: {other:?}"),
    }
    let _ = requests.close().await;
    let _ = replies.close().await;
    Ok(())
}

/// An open connection and session, authorized for cloud-to-device sends.
async fn open(
    target: &Target,
    addr: SocketAddr,
    service: &ServiceConnectionString,
) -> anyhow::Result<(ConnectionHandle<()>, SessionHandle<()>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.context("TCP connect to the AMQP port")?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(target.host.clone()).context("host name")?;
    let tls = target.tls.connect(name, tcp).await.context("TLS handshake")?;
    let mut connection = Connection::builder()
        .container_id(format!("loadgen-{}", rand::random::<u32>()))
        .hostname(target.host.as_str())
        .open_with_stream(tls)
        .await
        .context("AMQP open")?;
    let mut session = Session::begin(&mut connection).await.context("AMQP session")?;
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + 4 * 3600;
    let token = iothub_proto::generate_token(&service.host_name, &service.key, Some(&service.key_name), expiry)
        .map_err(|e| anyhow::anyhow!("SAS token: {e}"))?;
    put_token(&mut session, token, &service.host_name).await?;
    Ok((connection, session))
}

/// What the senders did.
pub struct Sent {
    pub accepted: u64,
    pub refused: u64,
    /// Time from send to the hub's disposition.
    pub latencies: Latencies,
}

/// Sends to `ids` round robin for `duration` from `senders` links (each with one message in flight), at `rate`
/// messages per second in all when given; returns what the hub did with them.
pub async fn send(
    target: Arc<Target>,
    addr: SocketAddr,
    connection_string: &str,
    ids: Arc<Vec<String>>,
    senders: usize,
    duration: Duration,
    rate: Option<f64>,
) -> anyhow::Result<Sent> {
    let service: ServiceConnectionString = connection_string.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(!ids.is_empty(), "no devices to send to");
    let (mut connection, mut session) = open(&target, addr, &service).await?;
    let mut links = Vec::with_capacity(senders);
    for n in 0..senders.max(1) {
        links.push(Sender::attach(&mut session, format!("c2d-{n}"), "/messages/devicebound").await?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let every = rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(links.len() as f64 / r));
    let tasks: Vec<_> = links
        .into_iter()
        .enumerate()
        .map(|(n, mut link)| {
            let ids = ids.clone();
            let count = ids.len();
            tokio::spawn(async move {
                let mut sent = Sent { accepted: 0, refused: 0, latencies: Latencies::default() };
                let mut next_due = tokio::time::Instant::now();
                let mut i = n;
                while Instant::now() < deadline {
                    if let Some(every) = every {
                        tokio::time::sleep_until(next_due).await;
                        next_due += every;
                    }
                    let to = format!("/devices/{}/messages/devicebound", ids[i % count]);
                    i += senders.max(1);
                    let body = format!("{{\"t\":{}}}", now_nanos()).into_bytes();
                    let message = Message::builder()
                        .properties(Properties::builder().to(to).build())
                        .data(Binary::from(body))
                        .build();
                    let begun = Instant::now();
                    match link.send(message).await {
                        Ok(Outcome::Accepted(_)) => {
                            sent.accepted += 1;
                            sent.latencies.record(begun.elapsed());
                        }
                        Ok(_) => sent.refused += 1,
                        Err(error) => {
                            eprintln!("sender {n}: {error:?}");
                            break;
                        }
                    }
                }
                let _ = link.close().await;
                sent
            })
        })
        .collect();
    let mut total = Sent { accepted: 0, refused: 0, latencies: Latencies::default() };
    for task in tasks {
        let sent = task.await.context("sender task")?;
        total.accepted += sent.accepted;
        total.refused += sent.refused;
        total.latencies.merge(&sent.latencies);
    }
    let _ = session.end().await;
    let _ = connection.close().await;
    Ok(total)
}
