//! One simulated device: MQTT 3.1.1 over TLS with a SAS token, subscribed to direct methods, twin responses
//! and desired properties. It always answers methods with 200 and counts desired patches; during a run it also
//! works: reported-property patches or QoS 1 telemetry, one in flight at a time, each timed to its answer.
//!
//! Written on rumqttc's packet codec rather than rumqttc's client: a client with its own event loop and
//! request queue per device costs far more memory than a loop over one `Framed` stream, and tens of
//! thousands of devices share one process here.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use iothub_proto::topics::{self, Outbound};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Codec, Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeFilter};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

use crate::stats::Latencies;

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

/// How devices connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// MQTT 3.1.1 over TLS (the default of the Node, Python and C SDKs).
    Mqtt,
    /// AMQP 1.0 over TLS, no SASL, a token on `$cbs` (the .NET SDK's default).
    Amqp,
}

/// Where and how devices connect.
pub struct Target {
    pub addr: SocketAddr,
    /// The AMQPS address (devices over AMQP, and cloud-to-device senders).
    pub amqp_addr: SocketAddr,
    pub transport: Transport,
    /// The hub's host name: SAS audience, user-name prefix, TLS name.
    pub host: String,
    pub tls: TlsConnector,
    pub token_ttl_secs: u64,
    /// Local addresses to connect from, in turn (several loopback addresses give more ephemeral ports).
    pub sources: Vec<IpAddr>,
}

/// What the fleet received, summed over every device.
#[derive(Default)]
pub struct Counters {
    pub methods: AtomicU64,
    pub desired: AtomicU64,
    /// Cloud-to-device messages received.
    pub messages: AtomicU64,
    /// Their latencies from the sender's send to the device's receipt (messages carrying a send time).
    pub message_latencies: std::sync::Mutex<Latencies>,
}

/// The work devices do during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// `$iothub/twin/PATCH/properties/reported`, timed to its `res/204`.
    Reported,
    /// `devices/<id>/messages/events` at QoS 1, timed to its PUBACK.
    Telemetry,
}

/// The phase the fleet is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Only answering methods.
    Serving,
    /// Doing `work` until `until`: back to back, or one every `interval` (a hub that falls behind shows as a
    /// lower rate).
    Running { work: Work, until: Instant, interval: Option<Duration> },
}

pub(crate) type Mqtt = Framed<tokio_rustls::client::TlsStream<TcpStream>, Codec>;

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

/// A TCP connection to the target's MQTT address from the `index`-th source address (if any).
pub(crate) async fn tcp(target: &Target, index: usize) -> anyhow::Result<TcpStream> {
    tcp_to(target, target.addr, index).await
}

/// A TCP connection to `addr` from the `index`-th source address of the target (if any).
pub(crate) async fn tcp_to(target: &Target, addr: SocketAddr, index: usize) -> anyhow::Result<TcpStream> {
    let Some(source) = (!target.sources.is_empty()).then(|| target.sources[index % target.sources.len()]) else {
        return TcpStream::connect(addr).await.context("TCP connect");
    };
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0)).context("binding the source address")?;
    socket.connect(addr).await.context("TCP connect")
}

/// Connects `identity` (the `index`-th device) and subscribes; returns the connection ready for `serve`.
pub async fn connect(target: &Target, identity: &Identity, index: usize) -> anyhow::Result<Mqtt> {
    let tcp = tcp(target, index).await?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(target.host.clone()).context("host name")?;
    let tls = target.tls.connect(name, tcp).await.context("TLS handshake")?;
    let mut mqtt =
        Framed::with_capacity(tls, Codec { max_incoming_size: MAX_PACKET, max_outgoing_size: MAX_PACKET }, 1024);

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
    let mut filters: Vec<SubscribeFilter> =
        [topics::METHODS_FILTER, topics::TWIN_RESPONSES_FILTER, topics::DESIRED_FILTER]
            .map(|f| SubscribeFilter::new(f.to_owned(), QoS::AtMostOnce))
            .into();
    filters.push(SubscribeFilter::new(topics::cloud_to_device_filter(&identity.device_id), QoS::AtLeastOnce));
    let mut subscribe = Subscribe::new_many(filters);
    subscribe.pkid = 1;
    mqtt.send(Packet::Subscribe(subscribe)).await.context("SUBSCRIBE")?;
    match expect_packet(&mut mqtt, "SUBACK").await? {
        Packet::SubAck(_) => Ok(mqtt),
        other => bail!("expected SUBACK, got {other:?}"),
    }
}

/// The operation in flight during a run.
enum InFlight {
    None,
    Reported { rid: String, sent: Instant },
    Telemetry { pkid: u16, sent: Instant },
}

/// Serves the device until the hub ends the connection: answers methods, counts desired patches, and in a
/// running phase does its work, sending the latencies to `results` when the phase ends.
pub async fn serve(
    mut mqtt: Mqtt,
    device_id: String,
    counters: Arc<Counters>,
    mut phase: watch::Receiver<Phase>,
    results: mpsc::UnboundedSender<Latencies>,
) -> anyhow::Result<()> {
    let mut ping = tokio::time::interval(Duration::from_secs(u64::from(KEEP_ALIVE_SECS) / 2));
    ping.reset();
    let mut latencies = Latencies::default();
    let mut running: Option<(Work, Instant)> = None;
    let mut interval: Option<Duration> = None;
    let mut next_due = Instant::now();
    let mut in_flight = InFlight::None;
    let mut seq: u64 = 0;
    let telemetry_topic = topics::telemetry(&device_id, "");
    let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    loop {
        let until = running.map_or(never, |(_, until)| until);
        let waiting_for_due = running.is_some() && matches!(in_flight, InFlight::None) && interval.is_some();
        tokio::select! {
            packet = mqtt.next() => {
                let Some(packet) = packet else { return Ok(()) };
                match packet.context("reading")? {
                    Packet::Publish(publish) => match topics::parse_hub_publish(&publish.topic) {
                        Outbound::MethodRequest { rid, .. } => {
                            counters.methods.fetch_add(1, Ordering::Relaxed);
                            let topic = topics::method_response(200, &rid);
                            mqtt.send(Packet::Publish(Publish::new(topic, QoS::AtMostOnce, &b"{\"ok\":true}"[..]))).await?;
                        }
                        Outbound::DesiredPatch { .. } => {
                            counters.desired.fetch_add(1, Ordering::Relaxed);
                        }
                        Outbound::TwinResponse { rid, .. } => {
                            if let InFlight::Reported { rid: expected, sent } = &in_flight
                                && *expected == rid
                            {
                                latencies.record(sent.elapsed());
                                in_flight = InFlight::None;
                            }
                        }
                        Outbound::CloudToDevice { .. } => {
                            if publish.qos == QoS::AtLeastOnce {
                                mqtt.send(Packet::PubAck(PubAck::new(publish.pkid))).await?;
                            }
                            counters.messages.fetch_add(1, Ordering::Relaxed);
                            if let Some(sent) = crate::c2d::sent_at(&publish.payload) {
                                let nanos = crate::c2d::now_nanos().saturating_sub(sent);
                                let latency = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                                counters.message_latencies.lock().unwrap_or_else(|p| p.into_inner()).record(latency);
                            }
                        }
                        Outbound::Other => {}
                    },
                    Packet::PubAck(ack) => {
                        if let InFlight::Telemetry { pkid, sent } = &in_flight
                            && *pkid == ack.pkid
                        {
                            latencies.record(sent.elapsed());
                            in_flight = InFlight::None;
                        }
                    }
                    _ => {}
                }
            }
            changed = phase.changed(), if running.is_none() => {
                if changed.is_err() {
                    return Ok(());
                }
                if let Phase::Running { work, until, interval: every } = *phase.borrow_and_update() {
                    running = Some((work, until));
                    interval = every;
                    // Devices start at random points of their first interval, so they do not all send at once.
                    next_due = Instant::now() + every.map_or(Duration::ZERO, |i| i.mul_f64(rand::random::<f64>()));
                }
            }
            () = tokio::time::sleep_until(until), if running.is_some() => {
                running = None;
                in_flight = InFlight::None;
                let _ = results.send(std::mem::take(&mut latencies));
            }
            () = tokio::time::sleep_until(next_due), if waiting_for_due => {}
            _ = ping.tick() => mqtt.send(Packet::PingReq).await?,
        }
        let due = interval.is_none() || Instant::now() >= next_due;
        if let (Some((work, _)), InFlight::None, true) = (running, &in_flight, due) {
            seq += 1;
            if let Some(every) = interval {
                next_due += every;
            }
            let sent = Instant::now();
            match work {
                Work::Reported => {
                    let rid = seq.to_string();
                    let body = Bytes::from(format!("{{\"seq\":{seq},\"load\":\"reported\"}}"));
                    mqtt.send(Packet::Publish(Publish::from_bytes(
                        topics::reported_patch(&rid),
                        QoS::AtMostOnce,
                        body,
                    )))
                    .await?;
                    in_flight = InFlight::Reported { rid, sent };
                }
                Work::Telemetry => {
                    let pkid = u16::try_from(seq % 65_000 + 2).unwrap_or(2);
                    // The send time first: Event Hubs readers time the message from it (`events::sent_at`).
                    let body = Bytes::from(format!(
                        "{{\"t\":{},\"seq\":{seq},\"temperature\":21.5,\"humidity\":40}}",
                        crate::c2d::now_nanos()
                    ));
                    let mut publish = Publish::from_bytes(telemetry_topic.as_str(), QoS::AtLeastOnce, body);
                    publish.pkid = pkid;
                    mqtt.send(Packet::Publish(publish)).await?;
                    in_flight = InFlight::Telemetry { pkid, sent };
                }
            }
        }
    }
}
