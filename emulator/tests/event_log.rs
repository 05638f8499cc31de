//! The Event Hubs-compatible log behind telemetry: durable before the device is answered, kept across restarts
//! with its positions, trimmed by retention on the hub's clock.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::mqtt::{connect_device, publish};
use common::start_with;
use iothub_emulator::Emulator;
use iothub_emulator::auth::Policies;
use iothub_emulator::clock::TokioClock;
use iothub_emulator::domain::eventlog::{LogSettings, StartAt};
use iothub_emulator::domain::telemetry::TelemetryMessage;
use iothub_emulator::hub::Hub;
use iothub_emulator::store::{Loaded, Store};
use reqwest::{Method, StatusCode};
use rumqttc::mqttbytes::QoS;
use serde_json::Value;

#[tokio::test]
async fn acknowledged_telemetry_is_in_the_log_after_a_restart_and_positions_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
    hub.create_device("d1").await;
    let mut mqtt = connect_device(&hub, "d1").await;
    publish(&mut mqtt, "devices/d1/messages/events/%24.ct=text%2Fplain&kind=mqtt", QoS::AtLeastOnce, b"one").await;
    let token = hub.owner_token();
    let sent = hub
        .request_as(&token, Method::POST, "/devices/d1/messages/events")
        .header("iothub-app-kind", "https")
        .body("two")
        .send()
        .await
        .expect("send");
    assert_eq!(sent.status(), StatusCode::NO_CONTENT);
    let before: Vec<Value> = hub.get_json("/emulator/devices/d1/messages/events").await;
    assert_eq!(before.len(), 2);
    drop(mqtt);
    hub.emulator.shutdown().await;

    let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
    let after: Vec<Value> = hub.get_json("/emulator/devices/d1/messages/events").await;
    assert_eq!(after, before, "both acknowledged messages read back exactly, with their positions");
    let mut mqtt = connect_device(&hub, "d1").await;
    publish(&mut mqtt, "devices/d1/messages/events/", QoS::AtLeastOnce, b"three").await;
    let now: Vec<Value> = hub.get_json("/emulator/devices/d1/messages/events").await;
    assert_eq!(now.len(), 3);
    assert_eq!(now[2]["sequenceNumber"].as_u64(), before[1]["sequenceNumber"].as_u64().map(|n| n + 1));
    let (previous, last) = (now[1]["offset"].as_str().expect("offset"), now[2]["offset"].as_str().expect("offset"));
    assert!(last.parse::<u64>().expect("number") > previous.parse::<u64>().expect("number"), "offsets grow");
}

#[tokio::test]
async fn the_partition_count_is_fixed_when_the_hub_is_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let two = LogSettings { partitions: 2, ..LogSettings::default() };
    let hub = start_with(Emulator::builder().data_dir(dir.path()).event_log(two)).await;
    assert_eq!(hub.emulator.hub().event_log().partition_count(), 2);
    let created = hub.emulator.hub().event_log().created_at();
    hub.emulator.shutdown().await;
    let eight = LogSettings { partitions: 8, ..LogSettings::default() };
    let hub = start_with(Emulator::builder().data_dir(dir.path()).event_log(eight)).await;
    assert_eq!(hub.emulator.hub().event_log().partition_count(), 2, "the data dir keeps its count");
    let kept = hub.emulator.hub().event_log().created_at();
    assert_eq!(kept.as_millisecond(), created.as_millisecond());
}

fn message(hub: &Hub, body: &str) -> TelemetryMessage {
    TelemetryMessage {
        device_id: "d1".into(),
        module_id: None,
        generation_id: String::new(),
        enqueued_time: hub.clock().now(),
        body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        system_properties: BTreeMap::new(),
        properties: BTreeMap::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn retention_drops_messages_older_than_the_period_on_the_hubs_clock() {
    let clock = Arc::new(TokioClock::starting_at("2026-12-05T00:00:00Z".parse().expect("time")));
    let settings = LogSettings { retention: Duration::from_secs(3600), ..LogSettings::default() };
    let hub = Arc::new(
        Hub::new("localhost".into(), Policies::generate(), clock, Store::memory(), Loaded::default())
            .with_event_log(settings),
    );
    hub.start();
    let old = hub.record_telemetry(message(&hub, "old")).await.expect("recorded");
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    let young = hub.record_telemetry(message(&hub, "young")).await.expect("recorded");
    assert_eq!(hub.recent_telemetry("d1").len(), 2);

    tokio::time::sleep(Duration::from_secs(31 * 60)).await;
    let kept = hub.recent_telemetry("d1");
    assert_eq!(kept.len(), 1, "the first message is past the hour of retention");
    assert_eq!(kept[0].message.body, "young");
    let info = hub.event_log().partition_info(old.partition).expect("partition");
    assert_eq!(info.begin_sequence, i64::try_from(young.sequence).expect("small"));
    let start = hub.event_log().first_sequence(old.partition, StartAt::Start).expect("partition");
    assert_eq!(start, young.sequence, "a reader from the start of the stream begins at the oldest kept");

    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    assert!(hub.recent_telemetry("d1").is_empty(), "the second one expires too");
    let info = hub.event_log().partition_info(old.partition).expect("partition");
    assert!(info.is_empty);
    assert_eq!(info.last_sequence, i64::try_from(young.sequence).expect("small"), "positions are not reused");
    hub.close().await;
}

#[tokio::test]
async fn the_size_cap_drops_the_oldest_first() {
    let settings = LogSettings { partitions: 1, max_bytes: 10 * 1024, ..LogSettings::default() };
    let hub = start_with(Emulator::builder().event_log(settings)).await;
    hub.create_device("d1").await;
    let mut mqtt = connect_device(&hub, "d1").await;
    for i in 0..20 {
        let body = format!("{i:04}").repeat(256); // 1 KiB
        publish(&mut mqtt, "devices/d1/messages/events/", QoS::AtLeastOnce, body.as_bytes()).await;
    }
    let kept = hub.emulator.hub().recent_telemetry("d1");
    assert!((8..=10).contains(&kept.len()), "about 10 KiB of 1 KiB messages is kept: {}", kept.len());
    assert!(kept.last().expect("newest").message.body.starts_with(b"0019"), "the newest is kept");
    assert_eq!(kept.last().expect("newest").sequence, 19);
}
