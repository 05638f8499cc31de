//! One simulated device: MQTT 3.1.1 over TLS with a SAS token, subscribed to direct methods and desired
//! properties; it answers every method with 200 and counts what it receives.
//!
//! Written on rumqttc's packet codec rather than rumqttc's client: a client with its own event loop and
//! request queue per device costs far more memory than a loop over one `Framed` stream, and tens of
//! thousands of devices share one process here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use iothub_proto::topics::{self, Outbound};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Codec, Connect, ConnectReturnCode, Packet, Publish, Subscribe, SubscribeFilter};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

/// Keep-alive the devices announce; they ping at half of it.
const KEEP_ALIVE_SECS: u16 = 120;
/// Largest packet a device accepts or sends.
const MAX_PACKET: usize = 256 * 1024;

/// A device's identity as the seed file gives it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub device_id: String,
    pub key: String,
}

/// Where and how devices connect.
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub tls: TlsConnector,
    pub token_ttl_secs: u64,
}

/// What the fleet received, summed over every device.
#[derive(Debug, Default)]
pub struct Counters {
    pub methods: AtomicU64,
    pub desired: AtomicU64,
}

type Mqtt = Framed<tokio_rustls::client::TlsStream<TcpStream>, Codec>;

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn expect_packet(mqtt: &mut Mqtt, what: &str) -> anyhow::Result<Packet> {
    match tokio::time::timeout(Duration::from_secs(30), mqtt.next()).await {
        Err(_) => bail!("no {what} within 30 s"),
        Ok(None) => bail!("the hub closed the connection before {what}"),
        Ok(Some(packet)) => packet.with_context(|| format!("reading {what}")),
    }
}

/// Connects `identity` and subscribes; returns the connection ready for `serve`.
pub async fn connect(target: &Target, identity: &Identity) -> anyhow::Result<Mqtt> {
    let tcp = TcpStream::connect(target.addr).await.context("TCP connect")?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(target.host.clone()).context("host name")?;
    let tls = target.tls.connect(name, tcp).await.context("TLS handshake")?;
    let mut mqtt = Framed::new(tls, Codec { max_incoming_size: MAX_PACKET, max_outgoing_size: MAX_PACKET });

    let resource = format!("{}/devices/{}", target.host, identity.device_id);
    let token = iothub_proto::generate_token(&resource, &identity.key, None, unix_now() + target.token_ttl_secs)
        .map_err(|e| anyhow::anyhow!("SAS token: {e}"))?;
    let mut connect = Connect::new(identity.device_id.as_str());
    connect.keep_alive = KEEP_ALIVE_SECS;
    connect.clean_session = false;
    connect.set_login(format!("{}/{}/?api-version=2021-04-12", target.host, identity.device_id), token);
    mqtt.send(Packet::Connect(connect)).await.context("CONNECT")?;
    match expect_packet(&mut mqtt, "CONNACK").await? {
        Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
        Packet::ConnAck(ack) => bail!("connection refused: {:?}", ack.code),
        other => bail!("expected CONNACK, got {other:?}"),
    }
    let filters =
        [topics::METHODS_FILTER, topics::DESIRED_FILTER].map(|f| SubscribeFilter::new(f.to_owned(), QoS::AtMostOnce));
    let mut subscribe = Subscribe::new_many(filters);
    subscribe.pkid = 1;
    mqtt.send(Packet::Subscribe(subscribe)).await.context("SUBSCRIBE")?;
    match expect_packet(&mut mqtt, "SUBACK").await? {
        Packet::SubAck(_) => Ok(mqtt),
        other => bail!("expected SUBACK, got {other:?}"),
    }
}

/// Answers method requests and counts desired patches until the hub ends the connection.
pub async fn serve(mut mqtt: Mqtt, counters: Arc<Counters>) -> anyhow::Result<()> {
    let mut ping = tokio::time::interval(Duration::from_secs(u64::from(KEEP_ALIVE_SECS) / 2));
    ping.reset();
    loop {
        tokio::select! {
            packet = mqtt.next() => {
                let Some(packet) = packet else { return Ok(()) };
                if let Packet::Publish(publish) = packet.context("reading")? {
                    match topics::parse_hub_publish(&publish.topic) {
                        Outbound::MethodRequest { rid, .. } => {
                            counters.methods.fetch_add(1, Ordering::Relaxed);
                            let topic = topics::method_response(200, &rid);
                            mqtt.send(Packet::Publish(Publish::new(topic, QoS::AtMostOnce, &b"{\"ok\":true}"[..]))).await?;
                        }
                        Outbound::DesiredPatch { .. } => {
                            counters.desired.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }
            _ = ping.tick() => mqtt.send(Packet::PingReq).await?,
        }
    }
}
