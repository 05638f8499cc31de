//! The device client under the emulator's faults: it rides out a hub outage with bounded back-off (no
//! reconnect storm), comes back by itself, and then answers methods and gets the desired changes made while
//! it was away.

mod common;

use std::time::{Duration, Instant};

use common::{WAIT, emulator_with, options};
use iothub_device::{ConnectionStatus, DesiredUpdate, DeviceClient, MethodResponse, RetryPolicy};
use iothub_emulator::domain::faults::{FaultKind, FaultSpec};
use iothub_emulator::domain::registry::IfMatch;
use iothub_emulator::domain::twin::json::object_from_json;
use iothub_emulator::domain::twin::{TwinWrite, WriteMode};
use iothub_emulator::wire::methods::parse_call_value;
use serde_json::json;

const DEVICES: usize = 20;
const OUTAGE: Duration = Duration::from_secs(8);

#[tokio::test]
async fn devices_ride_out_an_outage_with_bounded_back_off_and_catch_up() {
    let ids: Vec<String> = (0..DEVICES).map(|n| format!("fleet-{n}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let emulator = emulator_with(&id_refs).await;
    let hub = emulator.hub();
    // The library's default first delay, a lower cap so the test does not wait a minute for the last device.
    let retry = RetryPolicy {
        initial_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(4),
        max_attempts: None,
    };
    let mut clients = Vec::new();
    for id in &ids {
        let cs = emulator.device_connection_string(id).expect("connection string");
        let client = DeviceClient::builder(&cs)
            .expect("builder")
            .options(options(&emulator).with_retry(retry))
            .on_method("ping", |_| async { MethodResponse::ok(json!("pong")) })
            .connect()
            .await
            .expect("connects");
        clients.push(client);
    }
    let mut desired: Vec<_> = clients.iter().map(DeviceClient::desired_updates).collect();

    let before = hub.connect_attempts();
    let started = Instant::now();
    hub.inject_fault(FaultSpec { kind: FaultKind::Outage, target: None, duration: OUTAGE }).expect("outage");
    // A desired change made while the devices are away.
    let patch = object_from_json(json!({"firmware": "2.0"}).as_object().expect("object"));
    let write = TwinWrite { desired: Some(Some(patch)), ..Default::default() };
    for id in &ids {
        hub.write_twin(id, &write, WriteMode::Merge, Some(&IfMatch::Any)).await.expect("desired write");
    }
    tokio::time::sleep(OUTAGE.saturating_sub(started.elapsed())).await;
    let during = hub.connect_attempts() - before;
    let per_device_per_second = during as f64 / DEVICES as f64 / OUTAGE.as_secs_f64();
    eprintln!(
        "connection attempts during a {} s outage: {during} from {DEVICES} devices ({per_device_per_second:.2}/s per device)",
        OUTAGE.as_secs()
    );
    // Back-off from 0.5 s doubling to 4 s allows about 6 attempts in 8 s; a storm would be hundreds.
    assert!(per_device_per_second < 2.0, "reconnect storm: {during} attempts");
    assert!(during >= DEVICES as u64, "every device tried at least once");

    for client in &clients {
        let mut status = client.watch_status();
        tokio::time::timeout(Duration::from_secs(20), async {
            while *status.borrow_and_update() != ConnectionStatus::Connected {
                status.changed().await.expect("status");
            }
        })
        .await
        .expect("back by itself after the outage");
    }
    for (id, updates) in ids.iter().zip(&mut desired) {
        let call =
            parse_call_value(&json!({"methodName":"ping","responseTimeoutInSeconds":5,"connectTimeoutInSeconds":5}))
                .expect("call");
        let answer = hub.invoke_method(id, &call).await.expect("answered after the outage");
        assert_eq!((answer.status, answer.payload), (200, json!("pong")));
        let seen = tokio::time::timeout(WAIT, async {
            loop {
                match updates.next().await {
                    Some(DesiredUpdate::Full { desired, .. }) if desired.get("firmware") == Some(&json!("2.0")) => {
                        return;
                    }
                    Some(DesiredUpdate::Patch { patch, .. }) if patch.get("firmware") == Some(&json!("2.0")) => return,
                    Some(_) => {}
                    None => panic!("updates ended"),
                }
            }
        })
        .await;
        assert!(seen.is_ok(), "{id} got the desired change made during the outage");
    }
    for client in clients {
        client.close().await;
    }
    emulator.shutdown().await;
}
