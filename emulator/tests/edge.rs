//! IoT Edge devices in the registry: their generated scope, leaf children (`deviceScope`) and nested Edge devices
//! (`parentScopes`), the refusals (a scope no Edge device owns, a cycle, too many layers), children left without
//! a parent when theirs goes, the fields in twins and queries, and the system modules an Edge device gets.

mod common;

use common::{TestHub, expect_error, start, start_with};
use iothub_emulator::Emulator;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `PUT /devices/{id}` with `body` (`If-Match: *` when `update`); the answer.
async fn put(hub: &TestHub, id: &str, body: Value, update: bool) -> reqwest::Response {
    let mut request = hub.request(Method::PUT, &format!("/devices/{id}")).json(&body);
    if update {
        request = request.header("If-Match", "*");
    }
    request.send().await.expect("send")
}

async fn put_ok(hub: &TestHub, id: &str, body: Value, update: bool) -> Value {
    let response = put(hub, id, body, update).await;
    assert_eq!(response.status(), StatusCode::OK, "PUT {id}");
    response.json().await.expect("json")
}

async fn edge(hub: &TestHub, id: &str, parent: Option<&str>) -> Value {
    let mut body = json!({"deviceId": id, "capabilities": {"iotEdge": true}});
    if let Some(parent) = parent {
        body["parentScopes"] = json!([parent]);
    }
    put_ok(hub, id, body, false).await
}

fn scope_of(device: &Value) -> String {
    device["deviceScope"].as_str().expect("deviceScope").to_owned()
}

async fn query(hub: &TestHub, text: &str) -> Vec<Value> {
    let response =
        hub.request(Method::POST, "/devices/query").json(&json!({"query": text})).send().await.expect("send");
    assert_eq!(response.status(), StatusCode::OK, "{text}");
    response.json().await.expect("json")
}

#[tokio::test]
async fn an_edge_device_gets_its_scope_and_a_leaf_names_it_to_become_its_child() {
    let hub = start().await;
    let gateway = edge(&hub, "gateway", None).await;
    let scope = scope_of(&gateway);
    assert_eq!(
        scope,
        format!("ms-azure-iot-edge://gateway-{}", gateway["generationId"].as_str().expect("generationId"))
    );
    assert_eq!(gateway["parentScopes"], json!([]));

    let leaf = put_ok(&hub, "sensor", json!({"deviceId": "sensor", "deviceScope": scope}), false).await;
    assert_eq!((leaf["deviceScope"].as_str(), &leaf["parentScopes"]), (Some(scope.as_str()), &json!([scope])));
    let twin: Value = hub.get_json("/twins/sensor").await;
    assert_eq!((twin["deviceScope"].as_str(), &twin["parentScopes"]), (Some(scope.as_str()), &json!([scope])));

    // The scope is the hub's: an Edge device keeps it whatever an update says.
    let updated = put_ok(
        &hub,
        "gateway",
        json!({"deviceId": "gateway", "capabilities": {"iotEdge": true}, "deviceScope": "x"}),
        true,
    )
    .await;
    assert_eq!(scope_of(&updated), scope);

    // Queries see the hierarchy.
    let children =
        query(&hub, &format!("SELECT deviceId FROM devices WHERE ARRAY_CONTAINS(parentScopes, '{scope}')")).await;
    assert_eq!(children, vec![json!({"deviceId": "sensor"})]);
    let edges = query(&hub, "SELECT deviceId, deviceScope FROM devices WHERE capabilities.iotEdge = true").await;
    assert_eq!(edges, vec![json!({"deviceId": "gateway", "deviceScope": scope})]);

    // An empty scope takes the leaf out of the hierarchy.
    let freed = put_ok(&hub, "sensor", json!({"deviceId": "sensor", "deviceScope": ""}), true).await;
    assert!(freed.get("deviceScope").is_none_or(Value::is_null), "{freed}");
    assert!(freed.get("parentScopes").is_none_or(|p| p == &json!([])), "{freed}");
}

#[tokio::test]
async fn a_scope_no_edge_device_owns_is_refused() {
    let hub = start().await;
    hub.create_device("plain").await;
    let made_up = "ms-azure-iot-edge://nobody-637000000000000000";
    let response = put(&hub, "leaf", json!({"deviceId": "leaf", "deviceScope": made_up}), false).await;
    let message = expect_error(response, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    assert!(message.contains("not the scope of an IoT Edge device"), "{message}");
    let not_found = hub.request(Method::GET, "/devices/leaf").send().await.expect("send");
    assert_eq!(not_found.status(), StatusCode::NOT_FOUND, "nothing was created");

    // A gateway's scope stops being one when it stops being an Edge device.
    let gateway = edge(&hub, "gateway", None).await;
    put_ok(&hub, "gateway", json!({"deviceId": "gateway", "capabilities": {"iotEdge": false}}), true).await;
    let response = put(&hub, "plain", json!({"deviceId": "plain", "deviceScope": scope_of(&gateway)}), true).await;
    expect_error(response, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    let response = put(
        &hub,
        "nested",
        json!({"deviceId": "nested", "capabilities": {"iotEdge": true}, "parentScopes": [scope_of(&gateway)]}),
        false,
    )
    .await;
    expect_error(response, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
}

#[tokio::test]
async fn nested_edge_devices_stop_at_five_layers_and_never_loop() {
    let hub = start().await;
    let mut parent = edge(&hub, "layer1", None).await;
    for layer in 2..=5 {
        let id = format!("layer{layer}");
        let device = edge(&hub, &id, Some(&scope_of(&parent))).await;
        assert_eq!(device["parentScopes"], json!([scope_of(&parent)]), "{id} names its parent");
        assert_ne!(scope_of(&device), scope_of(&parent), "a nested Edge device keeps a scope of its own");
        parent = device;
    }
    let response = put(
        &hub,
        "layer6",
        json!({"deviceId": "layer6", "capabilities": {"iotEdge": true}, "parentScopes": [scope_of(&parent)]}),
        false,
    )
    .await;
    let message = expect_error(response, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    assert!(message.contains("layers"), "{message}");
    // A leaf below the fifth layer is no sixth Edge layer.
    put_ok(&hub, "leaf", json!({"deviceId": "leaf", "deviceScope": scope_of(&parent)}), false).await;

    // Moving a subtree counts its depth too: a second root with one child cannot go under layer 4.
    let root = edge(&hub, "root2", None).await;
    edge(&hub, "child2", Some(&scope_of(&root))).await;
    let layer4: Value = hub.get_json("/devices/layer4").await;
    let body = json!({"deviceId": "root2", "capabilities": {"iotEdge": true}, "parentScopes": [scope_of(&layer4)]});
    expect_error(put(&hub, "root2", body, true).await, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;

    // A device cannot go under its own descendant, nor name two parents.
    let layer3: Value = hub.get_json("/devices/layer3").await;
    let body = json!({"deviceId": "layer1", "capabilities": {"iotEdge": true}, "parentScopes": [scope_of(&layer3)]});
    let message = expect_error(put(&hub, "layer1", body, true).await, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    assert!(message.contains("ancestors"), "{message}");
    let body = json!({"deviceId": "two", "capabilities": {"iotEdge": true},
        "parentScopes": [scope_of(&layer3), scope_of(&layer4)]});
    expect_error(put(&hub, "two", body, false).await, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
}

#[tokio::test]
async fn children_lose_their_parent_when_it_is_deleted_or_stops_being_edge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
    let gateway = edge(&hub, "gateway", None).await;
    let scope = scope_of(&gateway);
    let leaf = put_ok(&hub, "leaf", json!({"deviceId": "leaf", "deviceScope": scope}), false).await;
    let nested = edge(&hub, "nested", Some(&scope)).await;

    let response = hub.request(Method::DELETE, "/devices/gateway").header("If-Match", "*").send().await.expect("send");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let leaf_after: Value = hub.get_json("/devices/leaf").await;
    assert!(leaf_after.get("deviceScope").is_none_or(Value::is_null), "{leaf_after}");
    assert_ne!(leaf_after["etag"], leaf["etag"], "a changed identity has a new etag");
    let nested_after: Value = hub.get_json("/devices/nested").await;
    assert_eq!(nested_after["parentScopes"], json!([]));
    assert_eq!(scope_of(&nested_after), scope_of(&nested), "its own scope stays");
    let twin: Value = hub.get_json("/twins/leaf").await;
    assert!(twin.get("deviceScope").is_none(), "{twin}");

    // The same when the parent turns into a plain device.
    let leaf2 = put_ok(&hub, "leaf2", json!({"deviceId": "leaf2", "deviceScope": scope_of(&nested)}), false).await;
    assert_eq!(leaf2["parentScopes"], json!([scope_of(&nested)]));
    put_ok(&hub, "nested", json!({"deviceId": "nested", "capabilities": {"iotEdge": false}}), true).await;
    let leaf2_after: Value = hub.get_json("/devices/leaf2").await;
    assert!(leaf2_after.get("deviceScope").is_none_or(Value::is_null), "{leaf2_after}");

    // Stored with the changes that caused them: a restart on the same data dir finds them.
    hub.emulator.shutdown().await;
    let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
    for id in ["leaf", "leaf2", "nested"] {
        let device = hub.emulator.hub().get_device(id).expect(id);
        assert!(device.parent_scopes.is_empty(), "{id} after the restart");
        assert_eq!(device.device_scope.is_some(), device.iot_edge, "{id}: only an Edge device keeps a scope");
    }
    assert!(hub.emulator.hub().get_device("gateway").is_err());
}

#[tokio::test]
async fn an_edge_device_gets_its_system_modules() {
    let hub = start().await;
    edge(&hub, "gateway", None).await;
    let modules: Vec<Value> = hub.get_json("/devices/gateway/modules").await;
    let ids: Vec<&str> = modules.iter().filter_map(|m| m["moduleId"].as_str()).collect();
    assert_eq!(ids, ["$edgeAgent", "$edgeHub"]);
    for module in &modules {
        assert_eq!(module["managedBy"], "IotEdge");
        assert_eq!(module["authentication"]["type"], "none", "no credentials until IoT Edge's agent sets them");
    }
    // IoT Edge's agent gives them SAS keys by updating them with an empty `sas` authentication.
    let response = hub
        .request(Method::PUT, "/devices/gateway/modules/$edgeHub")
        .header("If-Match", "*")
        .json(&json!({"deviceId": "gateway", "moduleId": "$edgeHub", "managedBy": "IotEdge",
            "authentication": {"type": "sas"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let module: Value = response.json().await.expect("json");
    assert_eq!(module["authentication"]["type"], "sas");
    assert_eq!(module["authentication"]["symmetricKey"]["primaryKey"].as_str().map(str::len), Some(44));
    let twin: Value = hub.get_json("/twins/gateway/modules/$edgeAgent").await;
    assert_eq!(twin["moduleId"], "$edgeAgent");

    // A plain device gets none; one turned into an Edge device gets them then.
    hub.create_device("plain").await;
    let none: Vec<Value> = hub.get_json("/devices/plain/modules").await;
    assert!(none.is_empty());
    put_ok(&hub, "plain", json!({"deviceId": "plain", "capabilities": {"iotEdge": true}}), true).await;
    let now: Vec<Value> = hub.get_json("/devices/plain/modules").await;
    assert_eq!(now.len(), 2);
}
