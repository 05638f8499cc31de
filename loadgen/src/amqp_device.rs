//! One simulated device over AMQP, as the .NET SDK's default transport and Node's `Amqp` connect: TLS without
//! SASL, the device's own token on `$cbs`, a telemetry sender and the methods link pair. It answers methods
//! with 200 and, in a running phase, sends telemetry one message at a time, each timed to the hub's
//! disposition (accepted once the message is stored, as MQTT's PUBACK).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Data, Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::device::{Counters, Identity, Phase, Target, Work};
use crate::stats::Latencies;

/// An AMQP device's connection and links.
pub struct AmqpDevice {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    events: Sender,
    method_requests: Receiver,
    method_answers: Sender,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Connects `identity` (the `index`-th device) to the AMQP port and attaches its links.
pub async fn connect(target: &Target, identity: &Identity, index: usize) -> anyhow::Result<AmqpDevice> {
    let tcp = crate::device::tcp_to(target, target.amqp_addr, index).await?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(target.host.clone()).context("host name")?;
    let tls = target.tls.connect(name, tcp).await.context("TLS handshake")?;
    let mut connection = Connection::builder()
        .container_id(identity.device_id.as_str())
        .hostname(target.host.as_str())
        .open_with_stream(tls)
        .await
        .context("AMQP open")?;
    let mut session = Session::begin(&mut connection).await.context("AMQP session")?;
    let resource = format!("{}/devices/{}", target.host, identity.device_id);
    let token = iothub_proto::generate_token(&resource, &identity.key, None, unix_now() + target.token_ttl_secs)
        .map_err(|e| anyhow::anyhow!("SAS token: {e}"))?;
    crate::c2d::put_token(&mut session, token, &resource).await?;
    let id = &identity.device_id;
    let events = Sender::attach(&mut session, "events", format!("/devices/{id}/messages/events")).await?;
    let methods = format!("/devices/{id}/methods/devicebound");
    let method_requests = Receiver::attach(&mut session, "methods-in", methods.as_str()).await?;
    let method_answers = Sender::attach(&mut session, "methods-out", methods.as_str()).await?;
    Ok(AmqpDevice { connection, session, events, method_requests, method_answers })
}

/// Answers every method request with 200 until the links end.
async fn answer_methods(mut requests: Receiver, mut answers: Sender, counters: Arc<Counters>) {
    while let Ok(request) = requests.recv::<Body<Value>>().await {
        if requests.accept(&request).await.is_err() {
            return;
        }
        counters.methods.fetch_add(1, Ordering::Relaxed);
        let correlation = request.message().properties.as_ref().and_then(|p| p.correlation_id.clone());
        let mut properties = Properties::builder();
        if let Some(id) = correlation {
            properties = properties.correlation_id(id);
        }
        let answer = Message::builder()
            .properties(properties.build())
            .application_properties(
                ApplicationProperties::builder().insert("IoThub-status", SimpleValue::Int(200)).build(),
            )
            .data(Binary::from(&b"{\"ok\":true}"[..]))
            .build();
        if answers.send(answer).await.is_err() {
            return;
        }
    }
}

fn telemetry(seq: u64) -> Message<Data> {
    // The send time first: Event Hubs readers time the message from it (`events::sent_at`).
    let body = format!("{{\"t\":{},\"seq\":{seq},\"temperature\":21.5,\"humidity\":40}}", crate::c2d::now_nanos());
    Message::builder()
        .properties(Properties::builder().content_type("application/json").content_encoding("utf-8").build())
        .data(Binary::from(body.into_bytes()))
        .build()
}

/// Serves the device until its connection ends: methods answered on their own task, telemetry sent in running
/// phases, the latencies sent to `results` when each phase ends.
pub async fn serve(
    device: AmqpDevice,
    counters: Arc<Counters>,
    mut phase: watch::Receiver<Phase>,
    results: mpsc::UnboundedSender<Latencies>,
) -> anyhow::Result<()> {
    let AmqpDevice { mut connection, mut session, mut events, method_requests, method_answers } = device;
    let methods = tokio::spawn(answer_methods(method_requests, method_answers, counters));
    let mut seq: u64 = 0;
    loop {
        if phase.changed().await.is_err() {
            break;
        }
        let Phase::Running { work, until, interval } = *phase.borrow_and_update() else { continue };
        if work != Work::Telemetry {
            let _ = results.send(Latencies::default());
            continue;
        }
        let mut latencies = Latencies::default();
        let mut next_due = Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(rand::random::<f64>()));
        while Instant::now() < until {
            if let Some(every) = interval {
                tokio::time::sleep_until(next_due.min(until)).await;
                next_due += every;
                if Instant::now() >= until {
                    break;
                }
            }
            seq += 1;
            let sent = Instant::now();
            match events.send(telemetry(seq)).await.context("telemetry")? {
                Outcome::Accepted(_) => latencies.record(sent.elapsed()),
                other => bail!("telemetry not accepted: {other:?}"),
            }
        }
        let _ = results.send(latencies);
    }
    methods.abort();
    let _ = events.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    Ok(())
}
