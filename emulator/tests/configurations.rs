//! Automatic device management: configurations over REST (etags, limits, the hub's JSON), their content applied
//! to targeted twins with per-path priority, taken back when a twin leaves the target or the configuration goes,
//! metrics counted live, IoT Edge deployments and `applyConfigurationContent`, and durability across a restart.

mod common;

use std::time::Duration;

use common::{TestHub, expect_error, start, start_with};
use iothub_emulator::Emulator;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn put(hub: &TestHub, id: &str, body: &Value, if_match: Option<&str>) -> reqwest::Response {
    let mut request = hub.request(Method::PUT, &format!("/configurations/{id}")).json(body);
    if let Some(etag) = if_match {
        request = request.header("If-Match", etag);
    }
    request.send().await.expect("send")
}

async fn create(hub: &TestHub, id: &str, body: Value) -> Value {
    let response = put(hub, id, &body, None).await;
    assert_eq!(response.status(), StatusCode::OK, "creating {id}");
    response.json().await.expect("json")
}

fn device_configuration(priority: i32, target: &str, content: Value) -> Value {
    json!({"content": {"deviceContent": content}, "targetCondition": target, "priority": priority})
}

/// `POST path` with a JSON body, the answer parsed as JSON.
async fn post_json(hub: &TestHub, path: &str, body: Value) -> Value {
    let response = hub.request(Method::POST, path).json(&body).send().await.expect("send");
    response.json().await.expect("json")
}

async fn tag(hub: &TestHub, id: &str, tags: Value) {
    let response = hub.request(Method::PATCH, &format!("/twins/{id}")).json(&json!({"tags": tags})).send().await;
    assert_eq!(response.expect("send").status(), StatusCode::OK);
}

/// Polls `path` until `done` holds (the hub applies configurations in the background), or fails after 10 s.
async fn eventually(hub: &TestHub, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value: Value = hub.get_json(path).await;
        if done(&value) {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: still {value:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_lifecycle_follows_the_hub_with_etags_and_errors() {
    let hub = start().await;
    let body = json!({
        "id": "cfg-1", "schemaVersion": "1.0", "labels": {"team": "a"},
        "content": {"deviceContent": {"properties.desired.x": 1}},
        "targetCondition": "tags.env = 'test'", "priority": 4,
        "metrics": {"queries": {"reported": "SELECT deviceId FROM devices WHERE properties.reported.x = 1"}}
    });
    let response = put(&hub, "cfg-1", &body, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"MQ==\"");
    let created: Value = response.json().await.expect("json");
    let keys: Vec<&String> = created.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "schemaVersion",
            "labels",
            "content",
            "targetCondition",
            "createdTimeUtc",
            "lastUpdatedTimeUtc",
            "priority",
            "systemMetrics",
            "metrics",
            "etag"
        ]
    );
    assert_eq!(created["etag"], "MQ==");
    assert_eq!(created["createdTimeUtc"], created["lastUpdatedTimeUtc"]);
    assert_eq!(
        created["systemMetrics"]["queries"],
        json!({
            "targetedCount": "select deviceId from devices where tags.env = 'test'",
            "appliedCount": "select deviceId from devices where configurations.[[cfg-1]].status = 'Applied'"
        })
    );
    // As on the hub, a write's answer has nothing counted yet; a read counts.
    assert_eq!((&created["systemMetrics"]["results"], &created["metrics"]["results"]), (&json!({}), &json!({})));
    let read: Value = hub.get_json("/configurations/cfg-1").await;
    assert_eq!(read["metrics"]["results"], json!({"reported": 0}));
    assert_eq!(read["systemMetrics"]["results"], json!({"targetedCount": 0, "appliedCount": 0}));

    expect_error(put(&hub, "cfg-1", &body, None).await, StatusCode::CONFLICT, "ConfigurationAlreadyExists").await;
    expect_error(
        put(&hub, "cfg-1", &body, Some("\"Mg==\"")).await,
        StatusCode::PRECONDITION_FAILED,
        "PreconditionFailed",
    )
    .await;
    expect_error(put(&hub, "nope", &body, Some("*")).await, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    expect_error(put(&hub, "nope", &json!({}), Some("*")).await, StatusCode::NOT_FOUND, "ConfigurationNotFound").await;

    // What a client reads back and sends again (Node's sample), with a changed priority: the Python SDK's
    // unquoted etag.
    let mut again = created.clone();
    again["priority"] = json!(9);
    let response = put(&hub, "cfg-1", &again, Some("MQ==")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.expect("json");
    assert_eq!((updated["etag"].as_str(), updated["priority"].as_i64()), (Some("Mg=="), Some(9)));
    assert_eq!(updated["createdTimeUtc"], created["createdTimeUtc"]);
    let mut content_changed = updated.clone();
    content_changed["content"]["deviceContent"]["properties.desired.x"] = json!(2);
    expect_error(put(&hub, "cfg-1", &content_changed, Some("*")).await, StatusCode::BAD_REQUEST, "ArgumentInvalid")
        .await;

    create(&hub, "cfg-2", device_configuration(0, "*", json!({}))).await;
    let listed: Vec<Value> = hub.get_json("/configurations").await;
    let ids: Vec<&str> = listed.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, ["cfg-1", "cfg-2"], "oldest first");
    let top: Vec<Value> = hub.get_json("/configurations/?top=1").await;
    assert_eq!(top.len(), 1, "the C# SDK's trailing slash and top");
    let big: Vec<Value> = hub.get_json("/configurations?top=500").await;
    assert_eq!(big.len(), 2, "a top above the limit is lowered, not refused");

    let stale = hub.request(Method::DELETE, "/configurations/cfg-1").header("If-Match", "\"MQ==\"").send().await;
    expect_error(stale.expect("send"), StatusCode::PRECONDITION_FAILED, "PreconditionFailed").await;
    let deleted = hub.request(Method::DELETE, "/configurations/cfg-1").send().await.expect("send");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let missing = hub.request(Method::GET, "/configurations/cfg-1").send().await.expect("send");
    expect_error(missing, StatusCode::NOT_FOUND, "ConfigurationNotFound").await;
    let missing = hub.request(Method::DELETE, "/configurations/cfg-1").send().await.expect("send");
    expect_error(missing, StatusCode::NOT_FOUND, "ConfigurationNotFound").await;
}

#[tokio::test]
async fn bad_configurations_and_the_limits_are_refused() {
    let hub = start().await;
    let ok = device_configuration(0, "*", json!({"properties.desired.a": 1}));
    let refused = |id: &str, body: Value, code: &'static str| {
        let id = id.to_owned();
        let hub = &hub;
        async move { expect_error(put(hub, &id, &body, None).await, StatusCode::BAD_REQUEST, code).await }
    };
    refused("Upper", ok.clone(), "ArgumentInvalid").await;
    refused("has space", ok.clone(), "ArgumentInvalid").await;
    refused("c", device_configuration(0, "tags.x = ", json!({})), "ArgumentInvalid").await;
    refused("c", device_configuration(0, "*", json!({"tags.a": 1})), "InvalidConfigurationContent").await;
    refused("c", device_configuration(0, "*", json!({"properties.desired": 5})), "InvalidConfigurationContent").await;
    refused("c", device_configuration(0, "*", json!({"properties.desired.$a": 5})), "InvalidConfigurationContent")
        .await;
    let both = json!({"content": {"deviceContent": {"properties.desired.a": 1}, "moduleContent": {"properties.desired.a": 1}}});
    refused("c", both, "InvalidConfigurationContent").await;
    let module_without_from =
        json!({"content": {"moduleContent": {"properties.desired.a": 1}}, "targetCondition": "tags.x = 1"});
    refused("c", module_without_from, "InvalidConfigurationContent").await;
    let mut six = ok.clone();
    six["metrics"] = json!({"queries": (0..6).map(|i| (format!("m{i}"), json!("SELECT deviceId FROM devices"))).collect::<serde_json::Map<_, _>>()});
    refused("c", six, "ArgumentInvalid").await;
    let mut bad_metric = ok.clone();
    bad_metric["metrics"] = json!({"queries": {"m": "SELECT FROM"}});
    refused("c", bad_metric, "ArgumentInvalid").await;

    for i in 0..100 {
        create(&hub, &format!("c{i}"), ok.clone()).await;
    }
    let over = put(&hub, "c100", &ok, None).await;
    expect_error(over, StatusCode::PAYLOAD_TOO_LARGE, "ConfigurationCountLimitExceeded").await;

    let answer = post_json(
        &hub,
        "/configurations/testQueries",
        json!({"targetCondition": "tags.a = 'b'", "customMetricQueries": {"ok": "SELECT deviceId FROM devices", "bad": "SELECT FROM"}}),
    )
    .await;
    assert_eq!(answer["targetConditionError"], "");
    assert_eq!(answer["customMetricQueryErrors"]["ok"], "");
    assert_ne!(answer["customMetricQueryErrors"]["bad"], "");
}

#[tokio::test]
async fn the_higher_priority_wins_each_path_and_the_other_takes_over_when_it_goes() {
    let hub = start().await;
    for id in ["d1", "d2"] {
        hub.create_device(id).await;
        tag(&hub, id, json!({"fleet": "a"})).await;
    }
    create(
        &hub,
        "low",
        device_configuration(1, "tags.fleet = 'a'", json!({"properties.desired.cfg": {"a": 1, "b": 1}})),
    )
    .await;
    create(&hub, "high", device_configuration(2, "tags.fleet = 'a'", json!({"properties.desired.cfg.b": 2}))).await;
    for id in ["d1", "d2"] {
        let twin = eventually(&hub, &format!("/twins/{id}"), "both configurations applied", |t| {
            t["properties"]["desired"]["cfg"] == json!({"a": 1, "b": 2})
                && t["configurations"] == json!({"high": {"status": "Applied"}, "low": {"status": "Applied"}})
        })
        .await;
        assert!(twin["properties"]["desired"]["$version"].as_u64() > Some(1));
    }
    // A third, higher still, over the whole object: `low` keeps nothing and is only targeted.
    create(&hub, "top", device_configuration(3, "*", json!({"properties.desired": {"cfg": {"a": 7, "b": 7}}}))).await;
    eventually(&hub, "/twins/d1", "top wins everything", |t| {
        t["properties"]["desired"]["cfg"] == json!({"a": 7, "b": 7})
            && t["configurations"]["low"]["status"] == "Targeted"
            && t["configurations"]["high"]["status"] == "Targeted"
    })
    .await;
    let query = json!({"query": "SELECT deviceId FROM devices WHERE configurations.[[low]].status = 'Targeted'"});
    let applied = post_json(&hub, "/devices/query", query).await;
    assert_eq!(applied.as_array().map(Vec::len), Some(2), "the twin member is queryable: {applied}");

    for gone in ["top", "high"] {
        let response = hub.request(Method::DELETE, &format!("/configurations/{gone}")).send().await.expect("send");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    eventually(&hub, "/twins/d2", "low takes its paths back", |t| {
        t["properties"]["desired"]["cfg"] == json!({"a": 1, "b": 1})
            && t["configurations"] == json!({"low": {"status": "Applied"}})
    })
    .await;
    let response = hub.request(Method::DELETE, "/configurations/low").send().await.expect("send");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let twin = eventually(&hub, "/twins/d2", "no configuration left", |t| t.get("configurations").is_none()).await;
    assert_eq!(
        twin["properties"]["desired"].get("cfg"),
        None,
        "its values are taken back, no empty object left: {twin:#}"
    );
}

#[tokio::test]
async fn metrics_count_devices_as_they_join_and_leave_the_target() {
    let hub = start().await;
    for id in ["m1", "m2", "m3"] {
        hub.create_device(id).await;
    }
    let mut body = device_configuration(0, "tags.site = 'x'", json!({"properties.desired.rate": 5}));
    body["metrics"] = json!({"queries": {"fast": "SELECT deviceId FROM devices WHERE properties.desired.rate = 5"}});
    create(&hub, "metered", body).await;
    let counts = |c: &Value| {
        (
            c["systemMetrics"]["results"]["targetedCount"].as_u64(),
            c["systemMetrics"]["results"]["appliedCount"].as_u64(),
            c["metrics"]["results"]["fast"].as_u64(),
        )
    };
    let zero: Value = hub.get_json("/configurations/metered").await;
    assert_eq!(counts(&zero), (Some(0), Some(0), Some(0)));

    tag(&hub, "m1", json!({"site": "x"})).await;
    tag(&hub, "m2", json!({"site": "x"})).await;
    eventually(&hub, "/configurations/metered", "two joined", |c| counts(c) == (Some(2), Some(2), Some(2))).await;

    tag(&hub, "m1", json!({"site": "y"})).await;
    let left = eventually(&hub, "/twins/m1", "m1 left", |t| t.get("configurations").is_none()).await;
    assert_eq!(left["properties"]["desired"].get("rate"), None, "its value went with it");
    eventually(&hub, "/configurations/metered", "one left", |c| counts(c) == (Some(1), Some(1), Some(1))).await;

    // A user's own write over a configured path is not fought over.
    let patch = json!({"properties": {"desired": {"rate": 9}}});
    let response = hub.request(Method::PATCH, "/twins/m2").json(&patch).send().await.expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let twin: Value = hub.get_json("/twins/m2").await;
    assert_eq!(twin["properties"]["desired"]["rate"], 9);
    assert_eq!(twin["configurations"]["metered"]["status"], "Applied");
}

#[tokio::test]
async fn edge_deployments_and_module_configurations_reach_module_twins() {
    let hub = start().await;
    let edge = hub
        .request(Method::PUT, "/devices/gw")
        .json(&json!({"deviceId": "gw", "capabilities": {"iotEdge": true}}))
        .send()
        .await
        .expect("send");
    assert_eq!(edge.status(), StatusCode::OK);
    tag(&hub, "gw", json!({"role": "gateway"})).await;
    let agent = json!({"schemaVersion": "1.1", "runtime": {"type": "docker"}, "modules": {}});
    create(
        &hub,
        "base",
        json!({
            "content": {"modulesContent": {
                "$edgeAgent": {"properties.desired": agent},
                "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}
            }},
            "targetCondition": "tags.role = 'gateway'", "priority": 1
        }),
    )
    .await;
    let twin = eventually(&hub, "/twins/gw/modules/$edgeAgent", "the deployment reaches $edgeAgent", |t| {
        t["properties"]["desired"]["runtime"]["type"] == "docker"
    })
    .await;
    assert_eq!(twin["configurations"], json!({"base": {"status": "Applied"}}));
    eventually(&hub, "/twins/gw/modules/$edgeHub", "and $edgeHub", |t| {
        t["properties"]["desired"]["schemaVersion"] == "1.1"
    })
    .await;
    let deployment: Value = hub.get_json("/configurations/base").await;
    assert_eq!(deployment["systemMetrics"]["results"]["appliedCount"], 1);
    assert_eq!(deployment["systemMetrics"]["results"]["targetedCount"], 1);

    // A module configuration targets module twins.
    let module =
        hub.request(Method::PUT, "/devices/gw/modules/sensor").json(&json!({"moduleId": "sensor"})).send().await;
    assert!(module.expect("send").status().is_success());
    create(
        &hub,
        "sensors",
        json!({
            "content": {"moduleContent": {"properties.desired.interval": 30}},
            "targetCondition": "FROM devices.modules WHERE moduleId = 'sensor'"
        }),
    )
    .await;
    eventually(&hub, "/twins/gw/modules/sensor", "module content applied", |t| {
        t["properties"]["desired"]["interval"] == 30 && t["configurations"]["sensors"]["status"] == "Applied"
    })
    .await;

    // Straight to a device: every named module twin gets its content, missing modules are created.
    let apply = hub
        .request(Method::POST, "/devices/gw/applyConfigurationContent")
        .json(&json!({"modulesContent": {
            "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {"m": {"type": "docker"}}}},
            "extra": {"properties.desired": {"k": 1}}
        }}))
        .send()
        .await
        .expect("send");
    assert_eq!(apply.status(), StatusCode::NO_CONTENT);
    let agent: Value = hub.get_json("/twins/gw/modules/$edgeAgent").await;
    assert_eq!(agent["properties"]["desired"]["modules"], json!({"m": {"type": "docker"}}));
    assert_eq!(agent["properties"]["desired"].get("runtime"), None, "the whole desired section is replaced");
    let extra: Value = hub.get_json("/twins/gw/modules/extra").await;
    assert_eq!(extra["properties"]["desired"]["k"], 1);
    let device_only = hub
        .request(Method::POST, "/devices/gw/applyConfigurationContent")
        .json(&json!({"deviceContent": {"properties.desired.a": 1}}))
        .send()
        .await
        .expect("send");
    expect_error(device_only, StatusCode::BAD_REQUEST, "InvalidConfigurationContent").await;
    let nobody = hub
        .request(Method::POST, "/devices/ghost/applyConfigurationContent")
        .json(&json!({"modulesContent": {"$edgeAgent": {"properties.desired": {}}}}))
        .send()
        .await
        .expect("send");
    expect_error(nobody, StatusCode::NOT_FOUND, "DeviceNotFound").await;
}

#[tokio::test]
async fn configurations_and_what_they_applied_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
        hub.create_device("p1").await;
        create(&hub, "kept", device_configuration(5, "*", json!({"properties.desired.kept": true}))).await;
        eventually(&hub, "/twins/p1", "applied", |t| t["properties"]["desired"]["kept"] == true).await;
        hub.emulator.shutdown().await;
    }
    let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
    let configuration: Value = hub.get_json("/configurations/kept").await;
    assert_eq!((configuration["priority"].as_i64(), configuration["etag"].as_str()), (Some(5), Some("MQ==")));
    let twin: Value = hub.get_json("/twins/p1").await;
    assert_eq!(twin["configurations"], json!({"kept": {"status": "Applied"}}));
    // The marks came back too: deleting the configuration after the restart still takes its value back.
    let response = hub.request(Method::DELETE, "/configurations/kept").send().await.expect("send");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    eventually(&hub, "/twins/p1", "taken back", |t| t["properties"]["desired"].get("kept").is_none()).await;
}
