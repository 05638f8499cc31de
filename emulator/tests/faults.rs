//! The test-suite controls over real sockets: health, reset, recorded history and every fault kind, as a
//! device (raw MQTT) and a back end (REST) see them.

mod common;

use std::time::{Duration, Instant};

use common::mqtt::{
    Mqtt, connect_device, connect_with, device_token, expect_closed, next, next_publish, publish, subscribe,
    topic_param, user_name,
};
use common::{TestHub, expect_error, start, unix_now};
use futures_util::SinkExt as _;
use reqwest::{Method, StatusCode};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, Publish};
use serde_json::{Value, json};

/// Puts a fault in force with the owner's rights and returns its document.
async fn fault(hub: &TestHub, body: Value) -> Value {
    let response = hub.http.post(hub.url("/emulator/faults")).header("Authorization", hub.owner_token()).json(&body);
    let response = response.send().await.expect("send");
    assert_eq!(response.status(), StatusCode::CREATED, "{body}");
    response.json().await.expect("fault JSON")
}

async fn control(hub: &TestHub, method: Method, path: &str) -> reqwest::Response {
    hub.http.request(method, hub.url(path)).header("Authorization", hub.owner_token()).send().await.expect("send")
}

async fn connack(hub: &TestHub, device_id: &str) -> ConnectReturnCode {
    let token = device_token(hub, device_id, device_id, unix_now() + 600);
    connect_with(hub, device_id, &user_name(device_id), &token, false).await.1.code
}

fn invoke(hub: &TestHub, device_id: &str, timeout_secs: u64) -> impl Future<Output = reqwest::Response> + 'static {
    let body = json!({"methodName":"lockDoor","payload":{"door":"front"},"responseTimeoutInSeconds":timeout_secs});
    let request = hub.request(Method::POST, &format!("/twins/{device_id}/methods")).json(&body);
    async move { request.send().await.expect("send") }
}

/// Answers the next method request with 200 `{"locked":true}`.
async fn answer_method(mqtt: &mut Mqtt) {
    let request = next_publish(mqtt).await;
    let rid = topic_param(&request.topic, "$rid").expect("rid").to_owned();
    publish(mqtt, &format!("$iothub/methods/res/200/?$rid={rid}"), QoS::AtMostOnce, br#"{"locked":true}"#).await;
}

#[tokio::test]
async fn health_needs_no_credentials_and_the_other_controls_need_the_owner() {
    let hub = start().await;
    let health = hub.http.get(hub.url("/emulator/health")).send().await.expect("send");
    assert_eq!(health.status(), StatusCode::OK);
    let health: Value = health.json().await.expect("json");
    assert_eq!((health["status"].as_str(), health["hostName"].as_str()), (Some("healthy"), Some("localhost")));
    assert_eq!(health["activeFaults"], 0);

    hub.create_device("d1").await;
    let device = device_token(&hub, "d1", "d1", unix_now() + 600);
    let reader = hub.policy_token("registryRead");
    for (who, token) in [("no token", None), ("a device token", Some(&device)), ("a read-only policy", Some(&reader))] {
        for (method, path) in [
            (Method::GET, "/emulator/faults"),
            (Method::POST, "/emulator/reset"),
            (Method::DELETE, "/emulator/faults"),
            (Method::GET, "/emulator/devices/d1/methodCalls"),
            (Method::GET, "/emulator/devices/d1/twinChanges"),
        ] {
            let mut request = hub.http.request(method.clone(), hub.url(path));
            if let Some(token) = token {
                request = request.header("Authorization", token);
            }
            let response = request.send().await.expect("send");
            expect_error(response, StatusCode::UNAUTHORIZED, "IotHubUnauthorizedAccess").await;
            let _ = who;
        }
    }
    assert_eq!(hub.emulator.hub().get_device("d1").map(|d| d.device_id.clone()).ok(), Some("d1".into()), "not reset");
}

#[tokio::test]
async fn bad_fault_requests_are_refused_with_the_hubs_errors() {
    let hub = start().await;
    hub.create_device("d1").await;
    for body in [
        json!({"kind":"meteor","deviceId":"d1","durationSeconds":5}),
        json!({"kind":"disconnect","durationSeconds":5}),
        json!({"kind":"outage","deviceId":"d1","durationSeconds":5}),
        json!({"kind":"disconnect","deviceId":"d1","durationSeconds":0}),
        json!({"kind":"disconnect","deviceId":"d1","durationSeconds":100000}),
        json!({"kind":"latency","deviceId":"d1","durationSeconds":5}),
        json!({"kind":"twinErrors","deviceId":"d1","status":404,"durationSeconds":5}),
    ] {
        let response =
            hub.http.post(hub.url("/emulator/faults")).header("Authorization", hub.owner_token()).json(&body);
        let message =
            expect_error(response.send().await.expect("send"), StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
        assert!(message.len() > "ErrorCode:ArgumentInvalid;".len(), "says why: {message}");
    }
    let response = hub.http.post(hub.url("/emulator/faults")).header("Authorization", hub.owner_token());
    let unknown = response.json(&json!({"kind":"disconnect","deviceId":"ghost","durationSeconds":5}));
    expect_error(unknown.send().await.expect("send"), StatusCode::NOT_FOUND, "DeviceNotFound").await;
    let gone = control(&hub, Method::DELETE, "/emulator/faults/12345").await;
    expect_error(gone, StatusCode::NOT_FOUND, "NotFound").await;
    let listed: Value = control(&hub, Method::GET, "/emulator/faults").await.json().await.expect("json");
    assert_eq!(listed, json!([]), "nothing was put in force");
}

#[tokio::test]
async fn a_disconnect_drops_the_device_and_refuses_it_until_the_fault_ends() {
    let hub = start().await;
    hub.create_device("d1").await;
    hub.create_device("d2").await;
    let mut d1 = connect_device(&hub, "d1").await;
    let _d2 = connect_device(&hub, "d2").await;
    let injected = fault(&hub, json!({"kind":"disconnect","deviceId":"d1","durationSeconds":2})).await;
    assert_eq!((injected["kind"].as_str(), injected["deviceId"].as_str()), (Some("disconnect"), Some("d1")));
    expect_closed(&mut d1).await;
    assert_eq!(connack(&hub, "d1").await, ConnectReturnCode::ServiceUnavailable, "refused while in force");
    assert!(hub.emulator.hub().is_connected("d2"), "other devices are untouched");
    let listed: Value = control(&hub, Method::GET, "/emulator/faults").await.json().await.expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(connack(&hub, "d1").await, ConnectReturnCode::Success, "the fault ended by itself");
    let listed: Value = control(&hub, Method::GET, "/emulator/faults").await.json().await.expect("json");
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn an_outage_closes_every_connection_refuses_new_ones_and_answers_503_until_removed() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut d1 = connect_device(&hub, "d1").await;
    let outage = fault(&hub, json!({"kind":"outage","durationSeconds":600})).await;
    assert_eq!(outage.get("deviceId"), None);
    expect_closed(&mut d1).await;
    assert_eq!(connack(&hub, "d1").await, ConnectReturnCode::ServiceUnavailable);
    let response = hub.request(Method::GET, "/devices/d1").send().await.expect("send");
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable").await;
    assert!(retry_after.and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s > 500), "Retry-After in seconds");
    let health: Value =
        hub.http.get(hub.url("/emulator/health")).send().await.expect("send").json().await.expect("json");
    assert_eq!(health["status"], "outage");

    let id = outage["id"].as_str().expect("id");
    let removed = control(&hub, Method::DELETE, &format!("/emulator/faults/{id}")).await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT, "the controls answer during the outage");
    assert_eq!(hub.request(Method::GET, "/devices/d1").send().await.expect("send").status(), StatusCode::OK);
    assert_eq!(connack(&hub, "d1").await, ConnectReturnCode::Success);
}

#[tokio::test]
async fn undelivered_and_late_method_calls_and_their_records() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut device = connect_device(&hub, "d1").await;
    subscribe(&mut device, &["$iothub/methods/POST/#"], QoS::AtMostOnce).await;

    let held = fault(&hub, json!({"kind":"methodsUndelivered","deviceId":"d1","durationSeconds":60})).await;
    let started = Instant::now();
    let timed_out = invoke(&hub, "d1", 5).await;
    assert!(started.elapsed() >= Duration::from_secs(5), "the caller waits its response timeout");
    assert_eq!(timed_out.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: Value = timed_out.json().await.expect("json");
    assert!(body["Message"].as_str().is_some_and(|m| m.contains("504101")), "{body}");
    let nothing = tokio::time::timeout(Duration::from_millis(300), next(&mut device)).await;
    assert!(nothing.is_err(), "the device never got the call: {nothing:?}");
    control(&hub, Method::DELETE, &format!("/emulator/faults/{}", held["id"].as_str().expect("id"))).await;

    fault(&hub, json!({"kind":"methodsLate","deviceId":"d1","delayMs":1200,"durationSeconds":60})).await;
    let started = Instant::now();
    let call = tokio::spawn(invoke(&hub, "d1", 10));
    answer_method(&mut device).await;
    assert!(started.elapsed() >= Duration::from_millis(1100), "delivered late: {:?}", started.elapsed());
    assert_eq!(call.await.expect("task").status(), StatusCode::OK);
    fault(&hub, json!({"kind":"methodsLate","deviceId":"d1","delayMs":6000,"durationSeconds":60})).await;
    let too_late = invoke(&hub, "d1", 5).await;
    assert_eq!(too_late.status(), StatusCode::GATEWAY_TIMEOUT, "a delay past the timeout is a timeout");

    let calls: Value = control(&hub, Method::GET, "/emulator/devices/d1/methodCalls").await.json().await.expect("json");
    let calls = calls.as_array().expect("array");
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0]["errorCode"], "GatewayTimeout", "newest first");
    assert_eq!((calls[1]["status"].as_i64(), &calls[1]["response"]), (Some(200), &json!({"locked":true})));
    assert_eq!((calls[2]["methodName"].as_str(), &calls[2]["payload"]), (Some("lockDoor"), &json!({"door":"front"})));
    assert!(calls[2]["durationMs"].as_u64().is_some_and(|ms| ms >= 5000), "{}", calls[2]);
}

#[tokio::test]
async fn twin_faults_answer_the_devices_requests_with_the_status_asked_for() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut device = connect_device(&hub, "d1").await;
    subscribe(&mut device, &["$iothub/twin/res/#"], QoS::AtMostOnce).await;
    let throttled = fault(&hub, json!({"kind":"twinErrors","deviceId":"d1","status":429,"durationSeconds":60})).await;
    publish(&mut device, "$iothub/twin/GET/?$rid=1", QoS::AtMostOnce, b"").await;
    assert!(next_publish(&mut device).await.topic.starts_with("$iothub/twin/res/429/?$rid=1"));
    publish(&mut device, "$iothub/twin/PATCH/properties/reported/?$rid=2", QoS::AtMostOnce, br#"{"a":1}"#).await;
    assert!(next_publish(&mut device).await.topic.starts_with("$iothub/twin/res/429/?$rid=2"));
    control(&hub, Method::DELETE, &format!("/emulator/faults/{}", throttled["id"].as_str().expect("id"))).await;
    fault(&hub, json!({"kind":"twinErrors","deviceId":"d1","status":500,"durationSeconds":60})).await;
    publish(&mut device, "$iothub/twin/GET/?$rid=3", QoS::AtMostOnce, b"").await;
    assert!(next_publish(&mut device).await.topic.starts_with("$iothub/twin/res/500/?$rid=3"));
    control(&hub, Method::DELETE, "/emulator/faults").await;
    publish(&mut device, "$iothub/twin/GET/?$rid=4", QoS::AtMostOnce, b"").await;
    assert!(next_publish(&mut device).await.topic.starts_with("$iothub/twin/res/200/?$rid=4"));
    let twin: Value = hub.get_json("/twins/d1").await;
    assert_eq!(twin["properties"]["reported"].get("a"), None, "the refused patch was not applied");
}

#[tokio::test]
async fn withheld_pubacks_come_when_the_fault_ends_and_the_message_is_kept() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut device = connect_device(&hub, "d1").await;
    fault(&hub, json!({"kind":"withholdTelemetryAcks","deviceId":"d1","durationSeconds":2})).await;
    let started = Instant::now();
    let mut message = Publish::new("devices/d1/messages/events/", QoS::AtLeastOnce, b"{\"t\":1}".to_vec());
    message.pkid = 9;
    device.send(Packet::Publish(message)).await.expect("publish");
    match next(&mut device).await {
        Packet::PubAck(ack) => assert_eq!(ack.pkid, 9),
        other => panic!("expected the PUBACK, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(1800), "held back: {:?}", started.elapsed());
    let kept: Value = hub.get_json("/emulator/devices/d1/messages/events").await;
    assert_eq!(kept[0]["body"], "{\"t\":1}");
}

#[tokio::test]
async fn latency_delays_what_the_hub_sends_the_device() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut device = connect_device(&hub, "d1").await;
    subscribe(&mut device, &["$iothub/twin/res/#"], QoS::AtMostOnce).await;
    fault(&hub, json!({"kind":"latency","deviceId":"d1","delayMs":700,"durationSeconds":60})).await;
    let started = Instant::now();
    publish(&mut device, "$iothub/twin/GET/?$rid=1", QoS::AtMostOnce, b"").await;
    assert!(next_publish(&mut device).await.topic.starts_with("$iothub/twin/res/200/"));
    assert!(started.elapsed() >= Duration::from_millis(650), "late: {:?}", started.elapsed());
}

#[tokio::test]
async fn twin_changes_are_recorded_newest_first() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut device = connect_device(&hub, "d1").await;
    subscribe(&mut device, &["$iothub/twin/res/#"], QoS::AtMostOnce).await;
    let patch = json!({"tags":{"building":"43"},"properties":{"desired":{"floor":3}}});
    let response = hub.request(Method::PATCH, "/twins/d1").json(&patch).send().await.expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    publish(&mut device, "$iothub/twin/PATCH/properties/reported/?$rid=1", QoS::AtMostOnce, br#"{"door":"locked"}"#)
        .await;
    next_publish(&mut device).await;
    let changes: Value =
        control(&hub, Method::GET, "/emulator/devices/d1/twinChanges").await.json().await.expect("json");
    let sections: Vec<_> = changes.as_array().expect("array").iter().map(|c| c["section"].clone()).collect();
    assert_eq!(sections, vec![json!("reported"), json!("desired"), json!("tags")]);
    assert_eq!(changes[0]["patch"], json!({"door":"locked"}));
    assert_eq!((&changes[1]["patch"], changes[1]["version"].as_u64()), (&json!({"floor":3}), Some(2)));
    let missing = control(&hub, Method::GET, "/emulator/devices/ghost/twinChanges").await;
    expect_error(missing, StatusCode::NOT_FOUND, "DeviceNotFound").await;
}

#[tokio::test]
async fn reset_empties_the_hub_and_keeps_its_keys() {
    let hub = start().await;
    hub.create_device("d1").await;
    hub.create_device("d2").await;
    let module = hub.request(Method::PUT, "/devices/d1/modules/m1").json(&json!({"moduleId":"m1"})).send().await;
    assert!(module.expect("send").status().is_success());
    let mut device = connect_device(&hub, "d1").await;
    publish(&mut device, "devices/d1/messages/events/", QoS::AtLeastOnce, b"before").await;
    fault(&hub, json!({"kind":"latency","deviceId":"d2","delayMs":10,"durationSeconds":60})).await;
    let owner_before = hub.owner_token();

    let reset = control(&hub, Method::POST, "/emulator/reset").await;
    assert_eq!(reset.status(), StatusCode::OK);
    let summary: Value = reset.json().await.expect("json");
    assert_eq!(summary, json!({"devicesDeleted":2,"modulesDeleted":1,"jobsDeleted":0}));
    expect_closed(&mut device).await;
    let devices: Value = hub.get_json("/devices").await;
    assert_eq!(devices, json!([]));
    let faults: Value = control(&hub, Method::GET, "/emulator/faults").await.json().await.expect("json");
    assert_eq!(faults, json!([]));
    let again = hub.request_as(&owner_before, Method::PUT, "/devices/d1").json(&json!({"deviceId":"d1"}));
    assert_eq!(again.send().await.expect("send").status(), StatusCode::OK, "the same keys still work");
    let telemetry: Value = hub.get_json("/emulator/devices/d1/messages/events").await;
    assert_eq!(telemetry, json!([]), "telemetry from before the reset is gone");
}
