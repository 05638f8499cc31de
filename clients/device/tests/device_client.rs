//! The device client against the in-process emulator over real TLS (and WebSockets): methods, twin, desired
//! updates, telemetry, reconnects after the hub drops the connection, token renewal, and typed errors.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{WAIT, emulator_with, options};

use iothub_device::{ConnectionStatus, DesiredUpdate, DeviceClient, Error, Message, MethodResponse, Transport};
use iothub_emulator::domain::registry::{DeviceSpec, DeviceStatus, IfMatch};
use iothub_emulator::domain::twin::json::{object_from_json, object_to_json};
use iothub_emulator::domain::twin::{TwinWrite, WriteMode};
use iothub_emulator::wire::methods::parse_call_value;
use iothub_emulator::{Emulator, HubError, RunningEmulator};
use serde_json::{Value, json};

async fn connect(emulator: &RunningEmulator, id: &str) -> DeviceClient {
    let cs = emulator.device_connection_string(id).expect("connection string");
    DeviceClient::from_connection_string(&cs, options(emulator)).await.expect("connects")
}

/// Invokes a method the way the REST API does, waiting up to 5 s for the device to be subscribed.
async fn invoke(emulator: &RunningEmulator, id: &str, name: &str, payload: Value) -> Result<(i64, Value), HubError> {
    let call = parse_call_value(
        &json!({"methodName": name, "payload": payload, "responseTimeoutInSeconds": 5, "connectTimeoutInSeconds": 5}),
    )
    .expect("call");
    emulator.hub().invoke_method(id, &call).await.map(|r| (r.status, r.payload))
}

async fn desired_patch(emulator: &RunningEmulator, id: &str, patch: Value) {
    let patch = object_from_json(patch.as_object().expect("object"));
    let write = TwinWrite { desired: Some(Some(patch)), ..Default::default() };
    emulator.hub().write_twin(id, &write, WriteMode::Merge, Some(&IfMatch::Any)).await.expect("desired write");
}

async fn wait_for_status(client: &DeviceClient, wanted: impl Fn(&ConnectionStatus) -> bool) -> ConnectionStatus {
    let mut watch = client.watch_status();
    tokio::time::timeout(WAIT, async {
        loop {
            let status = watch.borrow_and_update().clone();
            if wanted(&status) {
                return status;
            }
            watch.changed().await.expect("status channel");
        }
    })
    .await
    .expect("status reached in time")
}

#[tokio::test]
async fn methods_are_answered_by_their_handlers_and_unknown_ones_with_501() {
    let emulator = emulator_with(&["d1"]).await;
    let cs = emulator.device_connection_string("d1").expect("cs");
    let client = DeviceClient::builder(&cs)
        .expect("builder")
        .options(options(&emulator))
        .on_method(
            "lockDoor",
            |request| async move { MethodResponse::ok(json!({"locked": true, "got": request.payload})) },
        )
        .connect()
        .await
        .expect("connects");
    assert_eq!(client.device_id(), "d1");
    let (status, payload) = invoke(&emulator, "d1", "lockDoor", json!({"pin": 7})).await.expect("answered");
    assert_eq!((status, payload), (200, json!({"locked": true, "got": {"pin": 7}})));
    let (status, payload) = invoke(&emulator, "d1", "reboot", Value::Null).await.expect("answered");
    assert_eq!(status, 501);
    assert!(payload["message"].as_str().expect("message").contains("not implemented"));

    client.on_method("reboot", |_| async { MethodResponse::new(202, json!("rebooting")) });
    assert_eq!(invoke(&emulator, "d1", "reboot", Value::Null).await.expect("answered"), (202, json!("rebooting")));
    client.on_method("crash", |_| async { panic!("handler bug") });
    assert_eq!(
        invoke(&emulator, "d1", "crash", Value::Null).await.expect("answered").0,
        500,
        "a panicking handler is a 500"
    );
    client.remove_method("reboot");
    assert_eq!(invoke(&emulator, "d1", "reboot", Value::Null).await.expect("answered").0, 501);
    client.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!emulator.hub().is_connected("d1"), "close disconnects");
}

#[tokio::test]
async fn the_twin_reads_patches_and_follows_desired_changes() {
    let emulator = emulator_with(&["t1"]).await;
    let client = connect(&emulator, "t1").await;
    let twin = client.get_twin().await.expect("twin");
    assert_eq!((twin.desired_version, twin.reported_version), (1, 1));
    let version = client.update_reported(&json!({"battery": 80, "fw": {"v": "1.0"}})).await.expect("patch");
    assert_eq!(version, 2);
    let service_view = emulator.hub().twin("t1").expect("twin");
    let reported = object_to_json(&service_view.device.twin.reported.properties);
    assert_eq!(reported["fw"]["v"], "1.0");
    assert_eq!(client.update_reported(&json!({"fw": null})).await.expect("patch"), 3);
    assert!(client.get_twin().await.expect("twin").reported.get("fw").is_none(), "null removes");
    assert!(matches!(client.update_reported(&json!([1])).await, Err(Error::Config(_))));
    let err = client.update_reported(&json!({"bad key": 1})).await.expect_err("the hub refuses");
    assert!(matches!(&err, Error::Twin { status: 400, message } if message.contains("bad key")), "{err}");

    let mut updates = client.desired_updates();
    desired_patch(&emulator, "t1", json!({"building": "43", "floor": 3})).await;
    let update = tokio::time::timeout(WAIT, updates.next()).await.expect("in time").expect("update");
    assert_eq!(
        update,
        DesiredUpdate::Patch {
            version: 2,
            patch: json!({"building": "43", "floor": 3}).as_object().cloned().expect("map")
        }
    );
    let twin = client.get_twin().await.expect("twin");
    assert_eq!((twin.desired.get("floor"), twin.desired_version), (Some(&json!(3)), 2));
    client.close().await;
}

#[tokio::test]
async fn telemetry_carries_its_properties_and_waits_for_the_puback() {
    let emulator = emulator_with(&["tel"]).await;
    let mut feed = emulator.hub().telemetry_stream();
    let client = connect(&emulator, "tel").await;
    let message =
        Message::json(&json!({"temperature": 21.5})).expect("json").property("alert", "true").message_id("m-1");
    client.send_telemetry(message).await.expect("acknowledged");
    let received = tokio::time::timeout(WAIT, feed.recv()).await.expect("in time").expect("message");
    assert_eq!(received.message.device_id, "tel");
    assert_eq!(serde_json::from_slice::<Value>(&received.message.body).expect("json"), json!({"temperature": 21.5}));
    assert_eq!(received.message.properties.get("alert").map(String::as_str), Some("true"));
    assert_eq!(received.message.system_properties.get("contentType").map(String::as_str), Some("application/json"));
    assert_eq!(received.message.system_properties.get("contentEncoding").map(String::as_str), Some("utf-8"));
    assert_eq!(received.message.system_properties.get("messageId").map(String::as_str), Some("m-1"));
    client.close().await;
}

#[tokio::test]
async fn after_the_hub_drops_the_connection_the_device_comes_back_and_misses_nothing() {
    let emulator = emulator_with(&["r1"]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let cs = emulator.device_connection_string("r1").expect("cs");
    let client = DeviceClient::builder(&cs)
        .expect("builder")
        .options(options(&emulator))
        .on_method("ping", move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { MethodResponse::ok(json!("pong")) }
        })
        .connect()
        .await
        .expect("connects");
    let mut updates = client.desired_updates();
    let mut feed = emulator.hub().telemetry_stream();

    for round in 0..3 {
        assert!(emulator.hub().drop_connection("r1"), "round {round}: connected before the drop");
        // A desired change made while the device is away...
        desired_patch(&emulator, "r1", json!({"round": round})).await;
        // ...and telemetry sent while it is away; both must arrive once it is back.
        let telemetry = client.send_telemetry(Message::new(format!("round {round}")));
        tokio::time::timeout(WAIT, telemetry).await.expect("acknowledged in time").expect("acknowledged");
        let received = tokio::time::timeout(WAIT, feed.recv()).await.expect("in time").expect("message");
        assert_eq!(received.message.body, format!("round {round}").into_bytes());
        let update = loop {
            match tokio::time::timeout(WAIT, updates.next()).await.expect("in time").expect("update") {
                DesiredUpdate::Full { desired, version } => break (desired, version),
                DesiredUpdate::Patch { .. } => {}
            }
        };
        assert_eq!(update.0.get("round"), Some(&json!(round)), "the re-read twin has the change made while away");
        assert_eq!(invoke(&emulator, "r1", "ping", Value::Null).await.expect("answered"), (200, json!("pong")));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(client.status(), ConnectionStatus::Connected);
    client.close().await;
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_without_losing_work() {
    let emulator = emulator_with(&["renew"]).await;
    let cs = emulator.device_connection_string("renew").expect("cs");
    let client = DeviceClient::builder(&cs)
        .expect("builder")
        .options(options(&emulator).with_token_lifetime(Duration::from_secs(2)))
        .on_method("ping", |_| async { MethodResponse::ok(json!("pong")) })
        .connect()
        .await
        .expect("connects");
    let mut feed = emulator.hub().telemetry_stream();
    // Every status the client goes through: a renewal reconnects without ever showing a lost connection.
    let mut watch = client.watch_status();
    let seen = tokio::spawn(async move {
        let mut seen = Vec::new();
        while watch.changed().await.is_ok() {
            seen.push(watch.borrow_and_update().clone());
        }
        seen
    });
    // Over 6 s the 2 s token is renewed several times; the hub would close a connection whose token expired.
    for i in 0..30 {
        client.send_telemetry(Message::new(format!("{i}"))).await.expect("acknowledged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut received = Vec::new();
    while let Ok(message) = feed.try_recv() {
        received.push(String::from_utf8(message.message.body.to_vec()).expect("utf8"));
    }
    for i in 0..30 {
        assert!(received.contains(&i.to_string()), "message {i} arrived (at least once)");
    }
    assert_eq!(invoke(&emulator, "renew", "ping", Value::Null).await.expect("answered"), (200, json!("pong")));
    assert_eq!(client.status(), ConnectionStatus::Connected);
    client.close().await;
    let seen = seen.await.expect("watcher");
    let renewals = seen.iter().filter(|s| **s == ConnectionStatus::Connected).count();
    assert!(renewals >= 3, "the token was renewed (a new connection each time): {seen:?}");
    assert!(!seen.iter().any(|s| matches!(s, ConnectionStatus::Disconnected { .. })), "never lost: {seen:?}");
}

#[tokio::test]
async fn mqtt_over_websockets_works_the_same() {
    let emulator = emulator_with(&["ws"]).await;
    let cs = emulator.device_connection_string("ws").expect("cs");
    let options = options(&emulator).with_transport(Transport::WebSocket).with_port(emulator.https_addr().port());
    let client = DeviceClient::builder(&cs)
        .expect("builder")
        .options(options)
        .on_method("ping", |_| async { MethodResponse::ok(json!("pong over ws")) })
        .connect()
        .await
        .expect("connects over WebSockets");
    assert_eq!(invoke(&emulator, "ws", "ping", Value::Null).await.expect("answered"), (200, json!("pong over ws")));
    assert_eq!(client.update_reported(&json!({"via": "ws"})).await.expect("patch"), 2);
    client.send_telemetry(Message::new("over ws")).await.expect("acknowledged");
    client.close().await;
}

#[tokio::test]
async fn permanent_failures_are_typed_and_not_retried() {
    let emulator = emulator_with(&["good", "disabled"]).await;
    let good = emulator.device_connection_string("good").expect("cs");
    let wrong_key = format!(
        "HostName=localhost;DeviceId=good;SharedAccessKey={}",
        iothub_emulator::domain::registry::generate_key()
    );
    let started = std::time::Instant::now();
    let err = DeviceClient::from_connection_string(&wrong_key, options(&emulator)).await.err().expect("refused");
    assert_eq!(err, Error::Unauthorized { code: 5 });
    assert!(started.elapsed() < Duration::from_secs(2), "not retried");
    let unknown = good.replace("DeviceId=good", "DeviceId=nobody");
    assert!(matches!(
        DeviceClient::from_connection_string(&unknown, options(&emulator)).await,
        Err(Error::Unauthorized { .. })
    ));
    let other_ca = iothub_emulator::tls::LocalCa::generate().expect("ca").cert_pem().to_owned();
    let untrusted = options(&emulator).with_ca_pem(other_ca);
    let err = DeviceClient::from_connection_string(&good, untrusted).await.err().expect("refused");
    assert!(matches!(err, Error::Certificate(_)), "{err}");
    assert!(matches!(DeviceClient::builder("HostName=h;DeviceId=d"), Err(Error::ConnectionString(_))));

    // Disabled while connected: the hub closes the connection and refuses the next one; the client stops.
    let cs = emulator.device_connection_string("disabled").expect("cs");
    let client = DeviceClient::from_connection_string(&cs, options(&emulator)).await.expect("connects");
    let spec = DeviceSpec { status: Some(DeviceStatus::Disabled), ..Default::default() };
    emulator.hub().put_device("disabled", &spec, Some(&IfMatch::Any)).await.expect("disable");
    let status = wait_for_status(&client, |s| matches!(s, ConnectionStatus::Failed(_))).await;
    assert_eq!(status, ConnectionStatus::Failed(Error::Unauthorized { code: 5 }));
    assert_eq!(client.get_twin().await, Err(Error::Unauthorized { code: 5 }), "calls fail with the reason");
    assert_eq!(client.send_telemetry(Message::new("x")).await, Err(Error::Unauthorized { code: 5 }));
}

#[tokio::test]
async fn a_hub_that_is_down_is_retried_until_it_is_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = Emulator::builder().data_dir(dir.path()).start().await.expect("emulator");
    emulator.hub().put_device("later", &DeviceSpec::default(), None).await.expect("device");
    let cs = emulator.device_connection_string("later").expect("cs");
    let client = DeviceClient::builder(&cs)
        .expect("builder")
        .options(options(&emulator))
        .on_method("ping", |_| async { MethodResponse::ok(json!("back")) })
        .connect()
        .await
        .expect("connects");
    let port = emulator.mqtt_addr().port();
    emulator.shutdown().await;
    let status = wait_for_status(&client, |s| matches!(s, ConnectionStatus::Disconnected { .. })).await;
    assert!(matches!(status, ConnectionStatus::Disconnected { reason: Error::Connection(_), .. }), "{status:?}");
    // The same hub (data dir: CA, keys, devices) back on the same port lets the device in again.
    let emulator = Emulator::builder().data_dir(dir.path()).mqtt_port(port).start().await.expect("restart");
    wait_for_status(&client, |s| *s == ConnectionStatus::Connected).await;
    assert_eq!(invoke(&emulator, "later", "ping", Value::Null).await.expect("answered"), (200, json!("back")));
    client.close().await;
    emulator.shutdown().await;
}
