//! Cloud-to-device messages: a service sends over AMQP, a device receives over MQTT and completes by taking the
//! message, the sender reads the feedback it asked for over HTTPS; and what the hub refuses.

use std::time::Duration;

use iothub_service::CloudToDeviceMessage;
use iothub_service::proto::messages::{Ack, FeedbackRecord};
use serde_json::json;

use super::{PATIENCE, failure};
use crate::run::{Run, eventually};

/// How long a device waits for a message the service sent.
const DELIVERY: Duration = Duration::from_secs(60);

pub(super) async fn round_trip(run: &Run) -> anyhow::Result<()> {
    let (id, cs) = run.create_device("c2d").await?;
    let device = run.device(&cs)?.connect().await?;
    let mut inbox = device.messages();
    let message = CloudToDeviceMessage::new(br#"{"command":"unlock","door":2}"#.to_vec())
        .with_message_id(run.id("m1"))
        .with_correlation_id("corr-1")
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_ack(Ack::Full)
        .with_property("severity", "high")
        .with_property("alpha", "a&b=c");
    run.service().messages().send(&id, &message).await?;
    let received = tokio::time::timeout(DELIVERY, inbox.recv())
        .await
        .map_err(|_| anyhow::anyhow!("the message did not arrive within {DELIVERY:?}"))?
        .ok_or_else(|| anyhow::anyhow!("the device's message stream ended"))?;
    run.observe(
        "received by the device",
        json!({
            "body": String::from_utf8_lossy(&received.body),
            "messageId": received.message_id,
            "correlationId": received.correlation_id,
            "to": received.to,
            "contentType": received.content_type,
            "contentEncoding": received.content_encoding,
            "ack": received.ack,
            "properties": received.properties,
        }),
    );
    // Taking the message from the stream completed it; the sender asked for every outcome.
    let message_id = run.id("m1");
    let record = eventually(PATIENCE, Duration::from_secs(1), || async {
        let Some(batch) = run.service().messages().receive_feedback().await? else { return Ok(None) };
        let ours: Option<FeedbackRecord> =
            batch.records.iter().find(|r| r.device_id == id && r.original_message_id == message_id).cloned();
        run.service().messages().complete_feedback(&batch.lock_token).await?;
        Ok(ours)
    })
    .await?;
    run.observe(
        "feedback",
        json!({
            "originalMessageId": record.original_message_id,
            "deviceId": record.device_id,
            "statusCode": record.status_code,
            "description": record.description,
        }),
    );
    device.close().await;
    Ok(())
}

pub(super) async fn refusals(run: &Run) -> anyhow::Result<()> {
    let messages = run.service().messages();
    let unknown = messages.send(&run.id("no-such-device"), &CloudToDeviceMessage::new(b"x".to_vec())).await;
    run.observe("send to an unknown device", failure(unknown));
    // Nobody connects as this device, so its queue fills up.
    let (id, _) = run.create_device("full").await?;
    for i in 0..50 {
        messages.send(&id, &CloudToDeviceMessage::new(format!("m{i}").into_bytes())).await?;
    }
    let count = run.service().registry().get_device(&id).await?.cloud_to_device_message_count;
    run.observe("cloudToDeviceMessageCount with 50 queued", count);
    let full = messages.send(&id, &CloudToDeviceMessage::new(b"one too many".to_vec())).await;
    run.observe("the 51st message", failure(full));
    let too_large = messages.send(&id, &CloudToDeviceMessage::new(vec![b'x'; 64 * 1024 + 1])).await;
    run.observe("a body over 64 KiB", failure(too_large));
    let purged = messages.purge(&id).await?;
    run.observe("purge", json!({"totalMessagesPurged": purged.total_messages_purged, "deviceId": purged.device_id}));
    let after = run.service().registry().get_device(&id).await?.cloud_to_device_message_count;
    run.observe("cloudToDeviceMessageCount after the purge", after);
    messages.send(&id, &CloudToDeviceMessage::new(b"room again".to_vec())).await?;
    run.observe("a send after the purge", "accepted");
    Ok(())
}
