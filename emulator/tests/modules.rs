//! Module identities end to end: the registry under `/devices/{id}/modules`, module twins and methods over REST,
//! module connections over MQTT beside their device's, `FROM devices.modules`, and deleting a device.

mod common;

use common::mqtt::{Mqtt, connect_device, connect_with, expect_closed, next_publish, publish, subscribe, topic_param};
use common::{TestHub, expect_error, start, unix_now};
use reqwest::{Method, StatusCode};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, SubscribeReasonCode};
use serde_json::{Value, json};

async fn create_module(hub: &TestHub, device_id: &str, module_id: &str) -> reqwest::Response {
    hub.request(Method::PUT, &format!("/devices/{device_id}/modules/{module_id}"))
        .json(&json!({"moduleId": module_id, "deviceId": device_id}))
        .send()
        .await
        .expect("send")
}

/// Registers a module and returns its document.
async fn module(hub: &TestHub, device_id: &str, module_id: &str) -> Value {
    let response = create_module(hub, device_id, module_id).await;
    assert_eq!(response.status(), StatusCode::CREATED, "creating {device_id}/{module_id}");
    response.json().await.expect("json")
}

fn module_token(hub: &TestHub, device_id: &str, module_id: &str, key_of: &str) -> String {
    let key = hub.emulator.hub().get_device(key_of).expect("identity").authentication.primary_key.clone().expect("key");
    let resource = format!("localhost/devices/{device_id}/modules/{module_id}");
    iothub_proto::generate_token(&resource, &key, None, unix_now() + 600).expect("token")
}

fn module_user(device_id: &str, module_id: &str) -> String {
    format!("localhost/{device_id}/{module_id}/?api-version=2021-04-12&DeviceClientType=test%2F1.0")
}

async fn connect_module(hub: &TestHub, device_id: &str, module_id: &str) -> Mqtt {
    let key = format!("{device_id}/{module_id}");
    let token = module_token(hub, device_id, module_id, &key);
    let (mqtt, ack) = connect_with(hub, &key, &module_user(device_id, module_id), &token, false).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    mqtt
}

#[tokio::test]
async fn the_module_registry_creates_reads_updates_lists_and_deletes() {
    let hub = start().await;
    hub.create_device("d1").await;
    let created = module(&hub, "d1", "filter").await;
    let keys: Vec<&str> = created.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "moduleId",
            "managedBy",
            "deviceId",
            "generationId",
            "etag",
            "connectionState",
            "connectionStateUpdatedTime",
            "lastActivityTime",
            "cloudToDeviceMessageCount",
            "authentication"
        ],
        "the swagger's Module members, in its order"
    );
    let primary = created["authentication"]["symmetricKey"]["primaryKey"].as_str().expect("a generated key");
    assert_eq!(primary.len(), 44);
    assert_eq!(created["connectionState"], "Disconnected");

    let read: Value = hub.get_json("/devices/d1/modules/filter").await;
    assert_eq!(read, created);
    module(&hub, "d1", "another").await;
    let listed: Vec<Value> = hub.get_json("/devices/d1/modules").await;
    let ids: Vec<&str> = listed.iter().map(|m| m["moduleId"].as_str().expect("id")).collect();
    assert_eq!(ids, ["another", "filter"]);

    // An update as the Node SDK sends it: the whole document read back (read-only members included), If-Match.
    let mut update = read.clone();
    update["managedBy"] = json!("IotEdge");
    update["authentication"]["symmetricKey"]["secondaryKey"] = json!("");
    let response = hub
        .request(Method::PUT, "/devices/d1/modules/filter")
        .header("If-Match", format!("\"{}\"", read["etag"].as_str().expect("etag")))
        .json(&update)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.expect("json");
    assert_eq!(updated["managedBy"], "IotEdge");
    assert_eq!(updated["authentication"], read["authentication"], "keys left empty are kept");
    assert_eq!(updated["generationId"], read["generationId"]);
    assert_ne!(updated["etag"], read["etag"]);
    let stale = hub
        .request(Method::PUT, "/devices/d1/modules/filter")
        .header("If-Match", format!("\"{}\"", read["etag"].as_str().expect("etag")))
        .json(&update)
        .send()
        .await
        .expect("send");
    expect_error(stale, StatusCode::PRECONDITION_FAILED, "PreconditionFailed").await;

    let delete = hub.request(Method::DELETE, "/devices/d1/modules/another").send().await.expect("send");
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    let gone = hub.request(Method::GET, "/devices/d1/modules/another").send().await.expect("send");
    expect_error(gone, StatusCode::NOT_FOUND, "ModuleNotFound").await;
    // Devices and their statistics know nothing of modules.
    let devices: Vec<Value> = hub.get_json("/devices").await;
    assert_eq!(devices.len(), 1);
    let stats: Value = hub.get_json("/statistics/devices").await;
    assert_eq!(stats["totalDeviceCount"], 1);
}

#[tokio::test]
async fn module_requests_the_hub_refuses() {
    let hub = start().await;
    hub.create_device("d1").await;
    module(&hub, "d1", "m").await;
    let duplicate = create_module(&hub, "d1", "m").await;
    expect_error(duplicate, StatusCode::CONFLICT, "ModuleAlreadyExistsOnDevice").await;
    let no_device = create_module(&hub, "nobody", "m").await;
    expect_error(no_device, StatusCode::NOT_FOUND, "DeviceNotFound").await;
    let listed = hub.request(Method::GET, "/devices/nobody/modules").send().await.expect("send");
    expect_error(listed, StatusCode::NOT_FOUND, "DeviceNotFound").await;
    let missing = hub.request(Method::GET, "/twins/d1/modules/none").send().await.expect("send");
    expect_error(missing, StatusCode::NOT_FOUND, "ModuleNotFound").await;
    let bad_id = create_module(&hub, "d1", "has%20space").await;
    expect_error(bad_id, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    let slash = hub.request(Method::GET, "/devices/d1%2Fm").send().await.expect("send");
    expect_error(slash, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    let other_body =
        hub.request(Method::PUT, "/devices/d1/modules/x").json(&json!({"moduleId": "y"})).send().await.expect("send");
    expect_error(other_body, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    for n in 1..50 {
        module(&hub, "d1", &format!("m{n:02}")).await;
    }
    let fifty_first = create_module(&hub, "d1", "one-too-many").await;
    expect_error(fifty_first, StatusCode::FORBIDDEN, "IotHubQuotaExceeded").await;
}

#[tokio::test]
async fn a_module_connects_beside_its_device_with_its_own_twin_methods_and_telemetry() {
    let hub = start().await;
    hub.create_device("d1").await;
    module(&hub, "d1", "m1").await;
    let mut device = connect_device(&hub, "d1").await;
    let mut module_conn = connect_module(&hub, "d1", "m1").await;
    let filters = ["$iothub/methods/POST/#", "$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#"];
    subscribe(&mut device, &filters, QoS::AtLeastOnce).await;
    let mut module_filters = filters.to_vec();
    module_filters.push("devices/d1/modules/m1/inputs/#");
    let granted = subscribe(&mut module_conn, &module_filters, QoS::AtLeastOnce).await;
    assert!(granted.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_))), "{granted:?}");
    let modules: Vec<Value> = hub.get_json("/devices/d1/modules").await;
    assert_eq!(modules[0]["connectionState"], "Connected");

    // A method on the module reaches the module's connection, not the device's.
    let call = hub
        .request(Method::POST, "/twins/d1/modules/m1/methods")
        .json(&json!({"methodName": "whoami", "payload": {"n": 1}, "responseTimeoutInSeconds": 5}));
    let call = tokio::spawn(async move { call.send().await.expect("send") });
    let request = next_publish(&mut module_conn).await;
    assert!(request.topic.starts_with("$iothub/methods/POST/whoami/"), "{}", request.topic);
    let rid = topic_param(&request.topic, "$rid").expect("rid").to_owned();
    publish(&mut module_conn, &format!("$iothub/methods/res/200/?$rid={rid}"), QoS::AtMostOnce, b"{\"who\":\"m1\"}")
        .await;
    let answer: Value = call.await.expect("task").json().await.expect("json");
    assert_eq!(answer, json!({"status": 200, "payload": {"who": "m1"}}));

    // A desired change of the module twin reaches only the module.
    let twin: Value = hub.get_json("/twins/d1/modules/m1").await;
    assert_eq!((twin["deviceId"].as_str(), twin["moduleId"].as_str()), (Some("d1"), Some("m1")));
    let patch = hub
        .request(Method::PATCH, "/twins/d1/modules/m1")
        .header("If-Match", format!("\"{}\"", twin["etag"].as_str().expect("etag")))
        .json(&json!({"properties": {"desired": {"threshold": 5}}}))
        .send()
        .await
        .expect("send");
    assert_eq!(patch.status(), StatusCode::OK);
    let notified = next_publish(&mut module_conn).await;
    assert!(notified.topic.starts_with("$iothub/twin/PATCH/properties/desired/"), "{}", notified.topic);
    let body: Value = serde_json::from_slice(&notified.payload).expect("json");
    assert_eq!(body["threshold"], 5);

    // Reported properties of the module land in the module twin; the device twin is untouched.
    let acked =
        publish(&mut module_conn, "$iothub/twin/PATCH/properties/reported/?$rid=9", QoS::AtMostOnce, b"{\"s\":1}")
            .await;
    assert!(acked.is_empty());
    let response = next_publish(&mut module_conn).await;
    assert!(response.topic.starts_with("$iothub/twin/res/204/?$rid=9"), "{}", response.topic);
    let twin: Value = hub.get_json("/twins/d1/modules/m1").await;
    assert_eq!(twin["properties"]["reported"]["s"], 1);
    let device_twin: Value = hub.get_json("/twins/d1").await;
    assert!(device_twin["properties"]["desired"].get("threshold").is_none());
    assert!(device_twin["properties"]["reported"].get("s").is_none());

    // Module telemetry on its own topic is taken and read back with the module id.
    publish(&mut module_conn, "devices/d1/modules/m1/messages/events/a=1", QoS::AtLeastOnce, b"hello").await;
    let recent = hub.emulator.hub().recent_telemetry("d1");
    let last = recent.last().expect("recorded");
    assert_eq!(last.message.module_id.as_deref(), Some("m1"));
    assert_eq!(&last.message.body[..], b"hello");

    // Nothing above reached the device's connection: its next packet is the answer to its own request.
    publish(&mut device, "$iothub/twin/GET/?$rid=1", QoS::AtMostOnce, b"").await;
    let own = next_publish(&mut device).await;
    assert!(own.topic.starts_with("$iothub/twin/res/200/?$rid=1"), "{}", own.topic);
}

#[tokio::test]
async fn a_module_cannot_act_as_its_device_nor_the_device_as_its_module() {
    let hub = start().await;
    hub.create_device("d1").await;
    module(&hub, "d1", "m1").await;
    module(&hub, "d1", "m2").await;
    // The device's key does not sign for its module; one module's key does not sign for another.
    let with_device_key = module_token(&hub, "d1", "m1", "d1");
    let (_, ack) = connect_with(&hub, "d1/m1", &module_user("d1", "m1"), &with_device_key, true).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    let with_other_module_key = module_token(&hub, "d1", "m1", "d1/m2");
    let (_, ack) = connect_with(&hub, "d1/m1", &module_user("d1", "m1"), &with_other_module_key, true).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    // A module's token does not connect its device.
    let module_as_device = module_token(&hub, "d1", "m1", "d1/m1");
    let (_, ack) = connect_with(&hub, "d1", &common::mqtt::user_name("d1"), &module_as_device, true).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    // A module that does not exist is refused like a bad credential.
    let (_, ack) = connect_with(&hub, "d1/nope", &module_user("d1", "nope"), &module_as_device, true).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);

    // Neither sends on the other's telemetry topic.
    let mut module_conn = connect_module(&hub, "d1", "m1").await;
    publish(&mut module_conn, "devices/d1/messages/events/", QoS::AtMostOnce, b"x").await;
    expect_closed(&mut module_conn).await;
    let mut device = connect_device(&hub, "d1").await;
    publish(&mut device, "devices/d1/modules/m1/messages/events/", QoS::AtMostOnce, b"x").await;
    expect_closed(&mut device).await;
}

#[tokio::test]
async fn deleting_a_device_deletes_its_modules_and_ends_their_connections() {
    let hub = start().await;
    hub.create_device("d1").await;
    hub.create_device("d2").await;
    module(&hub, "d1", "m1").await;
    module(&hub, "d2", "m1").await;
    let mut module_conn = connect_module(&hub, "d1", "m1").await;
    let deleted = hub.request(Method::DELETE, "/devices/d1").send().await.expect("send");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    expect_closed(&mut module_conn).await;
    let gone = hub.request(Method::GET, "/twins/d1/modules/m1").send().await.expect("send");
    expect_error(gone, StatusCode::NOT_FOUND, "DeviceNotFound").await;
    // A device re-created with the same id starts without modules; another device keeps its own.
    hub.create_device("d1").await;
    let modules: Vec<Value> = hub.get_json("/devices/d1/modules").await;
    assert!(modules.is_empty());
    let kept: Vec<Value> = hub.get_json("/devices/d2/modules").await;
    assert_eq!(kept.len(), 1);
}

#[tokio::test]
async fn devices_modules_queries_page_over_module_twins_only() {
    let hub = start().await;
    for device in ["a", "b"] {
        hub.create_device(device).await;
        for module_id in ["m1", "m2", "m3"] {
            module(&hub, device, module_id).await;
        }
    }
    let query = |text: &str, continuation: Option<String>| {
        let mut request = hub.request(Method::POST, "/devices/query").header("x-ms-max-item-count", "2");
        if let Some(token) = continuation {
            request = request.header("x-ms-continuation", token);
        }
        request.json(&json!({"query": text})).send()
    };
    let mut seen = Vec::new();
    let mut continuation = None;
    for _ in 0..10 {
        let response = query("SELECT * FROM devices.modules", continuation.take()).await.expect("send");
        assert_eq!(response.headers()["x-ms-item-type"], "Twin");
        continuation = response.headers().get("x-ms-continuation").map(|v| v.to_str().expect("ascii").to_owned());
        let items: Vec<Value> = response.json().await.expect("json");
        seen.extend(
            items
                .iter()
                .map(|t| format!("{}/{}", t["deviceId"].as_str().expect("d"), t["moduleId"].as_str().expect("m"))),
        );
        if continuation.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["a/m1", "a/m2", "a/m3", "b/m1", "b/m2", "b/m3"]);
    let rows: Vec<Value> =
        query("SELECT deviceId, moduleId FROM devices.modules WHERE deviceId IN ['b'] AND moduleId != 'm2'", None)
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
    assert_eq!(rows, vec![json!({"deviceId": "b", "moduleId": "m1"}), json!({"deviceId": "b", "moduleId": "m3"})]);
    let counted: Vec<Value> =
        query("SELECT COUNT() AS n FROM devices.modules", None).await.expect("send").json().await.expect("json");
    assert_eq!(counted, vec![json!({"n": 6})]);
    let devices: Vec<Value> = query("SELECT * FROM devices", None).await.expect("send").json().await.expect("json");
    assert!(devices.iter().all(|t| t.get("moduleId").is_none()), "devices only: {devices:?}");
}

#[tokio::test]
async fn modules_and_their_twins_survive_a_restart_and_a_device_deletion_stays_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = common::start_with(iothub_emulator::Emulator::builder().data_dir(dir.path())).await;
    hub.create_device("d1").await;
    hub.create_device("d2").await;
    let created = module(&hub, "d1", "m1").await;
    module(&hub, "d2", "m1").await;
    let patched = hub
        .request(Method::PATCH, "/twins/d1/modules/m1")
        .json(&json!({"tags": {"role": "filter"}, "properties": {"desired": {"threshold": 5}}}))
        .send()
        .await
        .expect("send");
    assert_eq!(patched.status(), StatusCode::OK);
    let twin: Value = patched.json().await.expect("json");
    let deleted = hub.request(Method::DELETE, "/devices/d2").send().await.expect("send");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    hub.emulator.shutdown().await;

    let hub = common::start_with(iothub_emulator::Emulator::builder().data_dir(dir.path())).await;
    let read: Value = hub.get_json("/devices/d1/modules/m1").await;
    assert_eq!(read, created, "the module reads back as it was acknowledged");
    let read_twin: Value = hub.get_json("/twins/d1/modules/m1").await;
    assert_eq!(read_twin, twin);
    let gone = hub.request(Method::GET, "/devices/d2/modules/m1").send().await.expect("send");
    expect_error(gone, StatusCode::NOT_FOUND, "DeviceNotFound").await;
    let _connected = connect_module(&hub, "d1", "m1").await;
}
