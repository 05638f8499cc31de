//! Reading telemetry from the in-process emulator's Event Hubs-compatible endpoint with the service crate's
//! reader: partition ids from `$management`, start positions, the hub's annotations, consumer groups.

use std::collections::BTreeMap;
use std::time::Duration;

use iothub_emulator::domain::eventlog::{LogSettings, partition_for};
use iothub_emulator::domain::telemetry::TelemetryMessage;
use iothub_emulator::{Emulator, RunningEmulator};
use iothub_service::{EventHubConsumer, EventPosition, PartitionReceiver, ReceivedEvent, Trust};

const WAIT: Duration = Duration::from_secs(10);

async fn start() -> RunningEmulator {
    let settings = LogSettings { consumer_groups: vec!["analytics".into()], ..LogSettings::default() };
    Emulator::builder().event_log(settings).start().await.expect("emulator")
}

fn consumer(emulator: &RunningEmulator, group: &str) -> EventHubConsumer {
    let trust = Trust::CaPem(emulator.ca_pem().to_owned());
    EventHubConsumer::from_connection_string(&emulator.event_hub_connection_string(), group, trust).expect("consumer")
}

async fn send(emulator: &RunningEmulator, device_id: &str, body: &str) {
    let hub = emulator.hub();
    let message = TelemetryMessage {
        device_id: device_id.into(),
        module_id: None,
        generation_id: String::new(),
        enqueued_time: hub.clock().now(),
        body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        system_properties: [("contentType".to_owned(), "application/json".to_owned())].into(),
        properties: BTreeMap::from([("kind".to_owned(), "test".to_owned())]),
    };
    hub.record_telemetry(message).await.expect("recorded");
}

async fn next(receiver: &mut PartitionReceiver) -> ReceivedEvent {
    tokio::time::timeout(WAIT, receiver.next()).await.expect("an event in time").expect("event")
}

fn partition_of(device_id: &str) -> String {
    partition_for(device_id, 4).to_string()
}

#[tokio::test]
async fn partitions_positions_and_annotations() {
    let emulator = start().await;
    let reader = consumer(&emulator, "$Default");
    assert_eq!(reader.name(), "localhost");
    assert_eq!(reader.partition_ids().await.expect("ids"), ["0", "1", "2", "3"]);

    for body in [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#] {
        send(&emulator, "d1", body).await;
    }
    let partition = partition_of("d1");
    let mut earliest = reader.receive(&partition, EventPosition::Earliest).await.expect("receiver");
    let first = next(&mut earliest).await;
    assert_eq!(first.body, br#"{"n":1}"#);
    assert_eq!(first.device_id.as_deref(), Some("d1"));
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert_eq!(first.properties.get("kind").map(String::as_str), Some("test"));
    assert_eq!(first.annotations.get("iothub-message-source").map(String::as_str), Some("Telemetry"));
    assert!(first.enqueued_time_ms > 0 && !first.offset.is_empty());
    let second = next(&mut earliest).await;
    assert_eq!(second.sequence_number, first.sequence_number + 1);
    earliest.close().await;

    let mut after =
        reader.receive(&partition, EventPosition::AfterSequenceNumber(second.sequence_number)).await.expect("receiver");
    assert_eq!(next(&mut after).await.body, br#"{"n":3}"#, "a checkpoint resumes after what was read");
    after.close().await;

    let mut latest = reader.receive(&partition, EventPosition::Latest).await.expect("receiver");
    let nothing = tokio::time::timeout(Duration::from_millis(300), latest.next()).await;
    assert!(nothing.is_err(), "nothing old is read from the latest position");
    send(&emulator, "d1", r#"{"n":4}"#).await;
    assert_eq!(next(&mut latest).await.body, br#"{"n":4}"#);
    latest.close().await;
}

#[tokio::test]
async fn consumer_groups_read_independently_and_an_undeclared_one_is_refused() {
    let emulator = start().await;
    send(&emulator, "d2", "hello").await;
    let partition = partition_of("d2");
    for group in ["$Default", "analytics"] {
        let mut receiver = consumer(&emulator, group).receive(&partition, EventPosition::Earliest).await.expect("rx");
        assert_eq!(next(&mut receiver).await.body, b"hello", "{group} reads from the start");
        receiver.close().await;
    }
    let refused = consumer(&emulator, "nosuch").receive(&partition, EventPosition::Earliest).await;
    let error = match refused {
        Err(error) => error.to_string(),
        Ok(mut receiver) => {
            tokio::time::timeout(WAIT, receiver.next()).await.expect("in time").expect_err("refused").to_string()
        }
    };
    assert!(error.contains("not-found") || error.contains("could not be found"), "{error}");
}

#[tokio::test]
async fn an_outage_detaches_readers_and_refuses_them_until_it_ends() {
    use iothub_emulator::domain::faults::{FaultKind, FaultSpec};
    let emulator = start().await;
    let reader = consumer(&emulator, "$Default");
    let partition = partition_of("d3");
    let mut receiver = reader.receive(&partition, EventPosition::Earliest).await.expect("receiver");
    let outage = FaultSpec { kind: FaultKind::Outage, target: None, duration: Duration::from_secs(600) };
    emulator.hub().inject_fault(outage).expect("outage");

    let ended = tokio::time::timeout(WAIT, receiver.next()).await.expect("in time").expect_err("detached");
    assert!(ended.to_string().contains("outage"), "{ended}");
    let refused = match reader.receive(&partition, EventPosition::Earliest).await {
        Err(error) => error.to_string(),
        Ok(mut again) => {
            tokio::time::timeout(WAIT, again.next()).await.expect("in time").expect_err("refused").to_string()
        }
    };
    assert!(refused.contains("outage"), "{refused}");

    emulator.hub().clear_faults();
    send(&emulator, "d3", "back").await;
    let mut receiver = reader.receive(&partition, EventPosition::Earliest).await.expect("receiver once it ended");
    assert_eq!(next(&mut receiver).await.body, b"back");
    receiver.close().await;
}
