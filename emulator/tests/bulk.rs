//! Bulk identity operations (`POST /devices`): every import mode, each item on its own with its failure reported
//! beside it (the hub's numeric `errorCode`), modules, twin data, the limits, and the spellings the SDKs send.

mod common;

use common::{TestHub, expect_error, start};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn bulk(hub: &TestHub, path: &str, items: Value) -> reqwest::Response {
    hub.request(Method::POST, path).json(&items).send().await.expect("send")
}

async fn bulk_ok(hub: &TestHub, items: Value) -> Value {
    let response = bulk(hub, "/devices", items).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

fn codes(result: &Value) -> Vec<(String, u64)> {
    let errors = result["errors"].as_array().expect("errors");
    errors
        .iter()
        .map(|e| (e["deviceId"].as_str().expect("deviceId").to_owned(), e["errorCode"].as_u64().expect("a number")))
        .collect()
}

#[tokio::test]
async fn create_applies_each_item_on_its_own_with_its_twin_data() {
    let hub = start().await;
    hub.create_device("taken").await;
    let result = bulk_ok(
        &hub,
        json!([
            {"id": "b1", "importMode": "create", "tags": {"site": "a"}, "properties": {"desired": {"mode": "eco"}}},
            {"id": "taken", "importMode": "create"},
            {"id": "b2", "importMode": "create", "status": "disabled", "capabilities": {"iotEdge": false}},
        ]),
    )
    .await;
    assert_eq!(result["isSuccessful"], false);
    assert_eq!(codes(&result), vec![("taken".to_owned(), 409001)], "DeviceAlreadyExists, as a number");
    assert_eq!(result["errors"][0]["operation"], "create");
    assert_eq!(result["warnings"], json!([]));
    let keys: Vec<&String> = result.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["isSuccessful", "errors", "warnings"]);

    let b1: Value = hub.get_json("/devices/b1").await;
    assert_eq!(b1["authentication"]["symmetricKey"]["primaryKey"].as_str().map(str::len), Some(44), "keys generated");
    let twin: Value = hub.get_json("/twins/b1").await;
    assert_eq!(
        (twin["tags"]["site"].as_str(), twin["properties"]["desired"]["mode"].as_str()),
        (Some("a"), Some("eco"))
    );
    let b2: Value = hub.get_json("/devices/b2").await;
    assert_eq!(b2["status"], "disabled");

    let all_good = bulk_ok(&hub, json!([{"id": "b3", "importMode": "create"}])).await;
    assert_eq!(all_good, json!({"isSuccessful": true, "errors": [], "warnings": []}));
}

#[tokio::test]
async fn update_delete_and_their_etag_variants() {
    let hub = start().await;
    let d1 = hub.create_device("d1").await;
    let d2 = hub.create_device("d2").await;
    hub.create_device("d3").await;
    let stale = "MQ==";
    // Node's spellings: capitalised modes, a lower-case `etag`, the caller's whole device object.
    let result = bulk_ok(
        &hub,
        json!([
            {"id": "d1", "importMode": "UpdateIfMatchETag", "etag": d1["etag"], "status": "disabled",
             "generationId": d1["generationId"], "connectionState": "Disconnected"},
            {"id": "d2", "importMode": "UpdateIfMatchETag", "eTag": stale, "status": "disabled"},
            {"id": "ghost", "importMode": "Update"},
            {"id": "d3", "importMode": "Delete"},
            {"id": "d2x", "importMode": "delete"},
        ]),
    )
    .await;
    assert_eq!(
        codes(&result),
        vec![("d2".to_owned(), 412001), ("ghost".to_owned(), 404001), ("d2x".to_owned(), 404001)]
    );
    let result = bulk_ok(&hub, json!([{"id": "d2", "importMode": "DeleteIfMatchETag", "eTag": stale}])).await;
    assert_eq!(codes(&result), vec![("d2".to_owned(), 412001)]);
    let d1_now: Value = hub.get_json("/devices/d1").await;
    assert_eq!(d1_now["status"], "disabled");
    let d2_now: Value = hub.get_json("/devices/d2").await;
    assert_eq!(
        (d2_now["status"].as_str(), &d2_now["etag"]),
        (Some("enabled"), &d2["etag"]),
        "a stale etag changes nothing"
    );
    let gone = hub.request(Method::GET, "/devices/d3").send().await.expect("send");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);

    // No importMode is createOrUpdate (C# leaves it out): creates the new, overwrites the existing.
    let result = bulk_ok(&hub, json!([{"id": "d1", "status": "enabled"}, {"id": "fresh"}])).await;
    assert_eq!(result["isSuccessful"], true, "{result}");
    let d1_again: Value = hub.get_json("/devices/d1").await;
    assert_eq!(d1_again["status"], "enabled");
    let d2_current: Value = hub.get_json("/devices/d2").await;
    let result = bulk_ok(
        &hub,
        json!([
            {"id": "d2", "importMode": "createOrUpdateIfMatchETag", "eTag": d2_current["etag"], "statusReason": "ok"},
            {"id": "d1", "importMode": "createOrUpdateIfMatchETag", "eTag": stale},
            {"id": "new-one", "importMode": "createOrUpdateIfMatchETag"},
        ]),
    )
    .await;
    assert_eq!(codes(&result), vec![("d1".to_owned(), 412001)]);
    assert!(hub.emulator.hub().get_device("new-one").is_ok());
}

#[tokio::test]
async fn update_twin_replaces_tags_and_desired_under_the_twin_etag() {
    let hub = start().await;
    hub.create_device("t1").await;
    let twin: Value = hub.get_json("/twins/t1").await;
    let result = bulk_ok(
        &hub,
        json!([
            {"id": "t1", "importMode": "updateTwinIfMatchETag", "twinETag": twin["etag"], "tags": {"a": 1}},
            {"id": "t1", "moduleId": "m-missing", "importMode": "updateTwin", "tags": {"b": 2}},
        ]),
    )
    .await;
    assert_eq!(codes(&result), vec![("t1".to_owned(), 404010)], "ModuleNotFound for the module item");
    assert_eq!(result["errors"][0]["moduleId"], "m-missing");
    let after: Value = hub.get_json("/twins/t1").await;
    assert_eq!(after["tags"], json!({"a": 1}));
    let result = bulk_ok(
        &hub,
        json!([{"id": "t1", "importMode": "updateTwinIfMatchETag", "twinETag": twin["etag"], "tags": {}}]),
    )
    .await;
    assert_eq!(codes(&result), vec![("t1".to_owned(), 412001)], "the twin's etag moved on");
    let result = bulk_ok(&hub, json!([{"id": "nobody", "importMode": "updateTwin", "tags": {"x": 1}}])).await;
    assert_eq!(codes(&result), vec![("nobody".to_owned(), 404001)]);
}

#[tokio::test]
async fn modules_are_items_too() {
    let hub = start().await;
    hub.create_device("dev").await;
    let result = bulk_ok(
        &hub,
        json!([
            {"id": "dev", "moduleId": "m1", "importMode": "create"},
            {"id": "dev", "moduleId": "m2", "importMode": "create", "properties": {"desired": {"k": 1}}},
            {"id": "nodev", "moduleId": "m1", "importMode": "create"},
        ]),
    )
    .await;
    assert_eq!(codes(&result), vec![("nodev".to_owned(), 404001)]);
    let modules: Vec<Value> = hub.get_json("/devices/dev/modules").await;
    assert_eq!(modules.len(), 2);
    let twin: Value = hub.get_json("/twins/dev/modules/m2").await;
    assert_eq!(twin["properties"]["desired"]["k"], 1);
    let result = bulk_ok(&hub, json!([{"id": "dev", "moduleId": "m1", "importMode": "delete"}])).await;
    assert_eq!(result["isSuccessful"], true);
    let modules: Vec<Value> = hub.get_json("/devices/dev/modules").await;
    assert_eq!(modules.len(), 1);
}

#[tokio::test]
async fn limits_and_bad_bodies_refuse_the_whole_call() {
    let hub = start().await;
    let too_many: Vec<Value> = (0..101).map(|i| json!({"id": format!("x{i}"), "importMode": "create"})).collect();
    expect_error(bulk(&hub, "/devices", Value::Array(too_many)).await, StatusCode::PAYLOAD_TOO_LARGE, "TooManyDevices")
        .await;
    expect_error(bulk(&hub, "/devices", json!([])).await, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    expect_error(bulk(&hub, "/devices", json!({"id": "x"})).await, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    let twice = json!([{"id": "x", "importMode": "create"}, {"id": "x", "importMode": "delete"}]);
    expect_error(bulk(&hub, "/devices", twice).await, StatusCode::BAD_REQUEST, "DeviceDefinedMultipleTimes").await;
    let bad_mode = json!([{"id": "x", "importMode": "upsert"}]);
    expect_error(bulk(&hub, "/devices", bad_mode).await, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    expect_error(
        bulk(&hub, "/devices", json!([{"importMode": "create"}])).await,
        StatusCode::BAD_REQUEST,
        "ArgumentNull",
    )
    .await;
    assert!(
        hub.emulator.hub().get_device("x0").is_err() && hub.emulator.hub().get_device("x").is_err(),
        "nothing applied"
    );

    // The C# SDK's path has a trailing slash; exactly 100 items are taken.
    let hundred: Vec<Value> = (0..100).map(|i| json!({"id": format!("h{i}"), "importMode": "create"})).collect();
    let response = bulk(&hub, "/devices/", Value::Array(hundred)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let result: Value = response.json().await.expect("json");
    assert_eq!(result["isSuccessful"], true);
    // A read-only policy cannot write.
    let read_only = hub
        .request_as(&hub.policy_token("registryRead"), Method::POST, "/devices")
        .json(&json!([{"id": "y", "importMode": "create"}]))
        .send()
        .await
        .expect("send");
    assert_eq!(read_only.status(), StatusCode::UNAUTHORIZED);
}
