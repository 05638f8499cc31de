//! The anchor: request/response through a plain MQTT broker (Mosquitto), the nearest equivalent of a direct
//! method. Responders echo what arrives on their request topic to the caller's response topic; callers time
//! each round trip. Both sides use TLS, like devices and back ends on the hub.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Codec, Connect, ConnectReturnCode, Packet, Publish, Subscribe, SubscribeFilter};
use tokio_util::codec::Framed;

use crate::device::{Target, tcp};
use crate::stats::Latencies;

type Mqtt = Framed<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Codec>;

async fn open(target: &Target, client_id: &str, filter: &str, index: usize) -> anyhow::Result<Mqtt> {
    let stream = tcp(target, index).await?;
    stream.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(target.host.clone())?;
    let tls = target.tls.connect(name, stream).await.context("TLS handshake")?;
    let mut mqtt = Framed::with_capacity(tls, Codec { max_incoming_size: 1 << 16, max_outgoing_size: 1 << 16 }, 1024);
    let mut connect = Connect::new(client_id);
    connect.keep_alive = 120;
    mqtt.send(Packet::Connect(connect)).await?;
    match mqtt.next().await {
        Some(Ok(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {}
        other => bail!("{client_id}: expected a successful CONNACK, got {other:?}"),
    }
    let mut subscribe = Subscribe::new_many([SubscribeFilter::new(filter.to_owned(), QoS::AtMostOnce)]);
    subscribe.pkid = 1;
    mqtt.send(Packet::Subscribe(subscribe)).await?;
    match mqtt.next().await {
        Some(Ok(Packet::SubAck(_))) => Ok(mqtt),
        other => bail!("{client_id}: expected SUBACK, got {other:?}"),
    }
}

/// Connects `responders` echoing clients and `callers` timing clients, runs for `duration` (back to back, or
/// together `rate` round trips per second), and returns the callers' merged round-trip latencies and the time
/// taken.
pub async fn run(
    target: Arc<Target>,
    responders: usize,
    callers: usize,
    duration: Duration,
    rate: Option<f64>,
) -> anyhow::Result<(Latencies, Duration)> {
    for r in 0..responders {
        let mut mqtt = open(&target, &format!("echo-r-{r}"), &format!("bench/req/r-{r}"), r).await?;
        tokio::spawn(async move {
            while let Some(Ok(packet)) = mqtt.next().await {
                if let Packet::Publish(request) = packet {
                    let reply_to =
                        String::from_utf8_lossy(&request.payload).split('|').next().unwrap_or_default().to_owned();
                    let reply =
                        Publish::from_bytes(format!("bench/res/{reply_to}"), QoS::AtMostOnce, request.payload.clone());
                    if mqtt.send(Packet::Publish(reply)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let callers = callers.max(1);
    let mut connections = Vec::new();
    for c in 0..callers {
        let me = format!("c-{c}");
        connections.push((open(&target, &format!("echo-{me}"), &format!("bench/res/{me}"), responders + c).await?, me));
    }
    let started = Instant::now();
    let until = tokio::time::Instant::now() + duration;
    let interval = rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(callers as f64 / r));
    let mut tasks = Vec::new();
    for (mut mqtt, me) in connections {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut seq: u64 = 0;
            let mut due =
                tokio::time::Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(rand::random::<f64>()));
            while tokio::time::Instant::now() < until {
                seq += 1;
                let responder = rand::random_range(0..responders.max(1));
                let body = Bytes::from(format!("{me}|{seq}|{{\"n\":{seq}}}"));
                if let Some(every) = interval {
                    tokio::time::sleep_until(due).await;
                    due += every;
                }
                let sent = Instant::now();
                let request = Publish::from_bytes(format!("bench/req/r-{responder}"), QoS::AtMostOnce, body.clone());
                if mqtt.send(Packet::Publish(request)).await.is_err() {
                    break;
                }
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), mqtt.next()).await {
                        Ok(Some(Ok(Packet::Publish(reply)))) if reply.payload == body => {
                            latencies.record(sent.elapsed());
                            break;
                        }
                        Ok(Some(Ok(_))) => {}
                        _ => return latencies,
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Latencies::default();
    for task in tasks {
        all.merge(&task.await?);
    }
    Ok((all, started.elapsed()))
}
