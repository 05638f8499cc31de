//! The device side beyond methods and twins: telemetry (read back from the Event Hubs-compatible endpoint, as
//! back ends read it) and MQTT over WebSockets.

use std::time::{Duration, SystemTime};

use iothub_device::{Message, MethodResponse, Transport};
use iothub_service::{EventHubConsumer, EventPosition, ReceivedEvent};
use serde_json::{Value, json};

use super::lock_door;
use crate::run::Run;

pub(super) async fn telemetry(run: &Run) -> anyhow::Result<()> {
    let (id, cs) = run.create_device("tel").await?;
    let device = run.device(&cs)?.connect().await?;
    // Enqueued times are the hub's clock: a margin covers a skew between this machine and the hub.
    let since = SystemTime::now() - Duration::from_secs(60);
    let mut acknowledged = 0;
    for i in 0..5 {
        let message =
            Message::json(&json!({"temperature": 20 + i}))?.property("alert", "false").message_id(format!("m{i}"));
        device.send_telemetry(message).await?;
        acknowledged += 1;
    }
    run.observe("messages acknowledged (PUBACK)", acknowledged);
    device.close().await;
    let Some(event_hub) = &run.target.event_hub else {
        run.observe("read back", "skipped: no Event Hub-compatible connection string for this hub");
        return Ok(());
    };
    let events = read_back(event_hub, &id, since, acknowledged).await?;
    let temperatures: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_slice::<Value>(&e.body).unwrap_or_default()["temperature"].clone())
        .collect();
    anyhow::ensure!(temperatures == [20, 21, 22, 23, 24], "read back in order: {temperatures:?}");
    let first = &events[0];
    anyhow::ensure!(first.properties.get("alert").map(String::as_str) == Some("false"), "properties {first:?}");
    anyhow::ensure!(first.message_id.as_deref() == Some("m0"), "message id {first:?}");
    anyhow::ensure!(first.content_type.as_deref() == Some("application/json"), "content type {first:?}");
    anyhow::ensure!(events.windows(2).all(|w| w[1].sequence_number > w[0].sequence_number), "sequence numbers grow");
    let mut annotations: Vec<&str> =
        first.annotations.keys().map(String::as_str).filter(|k| k.starts_with("iothub-")).collect();
    annotations.sort_unstable();
    run.observe("read back from the Event Hubs-compatible endpoint", events.len());
    run.observe("iothub annotations", annotations);
    Ok(())
}

/// The device's messages enqueued since `since`, from whichever partition holds them (a real hub hashes device
/// ids its own way), reading every partition side by side until `count` arrived.
async fn read_back(
    event_hub: &EventHubConsumer,
    device_id: &str,
    since: SystemTime,
    count: usize,
) -> anyhow::Result<Vec<ReceivedEvent>> {
    let mut readers = tokio::task::JoinSet::new();
    for partition in event_hub.partition_ids().await? {
        let mut receiver = event_hub.receive(&partition, EventPosition::EnqueuedAfter(since)).await?;
        let device_id = device_id.to_owned();
        readers.spawn(async move {
            let mut found = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while found.len() < count {
                match tokio::time::timeout_at(deadline, receiver.next()).await {
                    Ok(Ok(event)) if event.device_id.as_deref() == Some(device_id.as_str()) => found.push(event),
                    Ok(Ok(_)) => {}
                    _ => break,
                }
            }
            receiver.close().await;
            found
        });
    }
    // The first partition that holds them all wins; the others stop at their deadline or are dropped.
    while let Some(found) = readers.join_next().await {
        let found = found?;
        if found.len() >= count {
            readers.abort_all();
            return Ok(found);
        }
    }
    anyhow::bail!("fewer than {count} messages of {device_id} came back from the Event Hubs-compatible endpoint")
}

pub(super) async fn websocket(run: &Run) -> anyhow::Result<()> {
    let (id, cs) = run.create_device("ws").await?;
    let options = run.target.device_options().with_transport(Transport::WebSocket).with_port(run.target.https_port);
    let device = iothub_device::DeviceClient::builder(&cs)?
        .options(options)
        .on_method("lockDoor", |request| async move {
            MethodResponse::ok(json!({"via": "websocket", "echo": request.payload}))
        })
        .connect()
        .await?;
    let result = run.service().methods().invoke(&id, &lock_door(json!({"door": 1}), 10)).await?;
    run.observe("method over WebSockets", &result);
    run.observe("reported $version over WebSockets", device.update_reported(&json!({"via": "ws"})).await?);
    device.close().await;
    Ok(())
}
