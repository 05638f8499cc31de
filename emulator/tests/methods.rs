//! Direct methods end to end: REST caller -> hub -> device over MQTT -> back, with real timers.

mod common;

use std::time::{Duration, Instant};

use common::mqtt::{Mqtt, connect_device, next_publish, publish, subscribe, topic_param};
use common::{TestHub, expect_error, start};
use reqwest::{Method, StatusCode};
use rumqttc::mqttbytes::QoS;
use serde_json::{Value, json};

const METHODS: &str = "$iothub/methods/POST/#";

fn invoke(hub: &TestHub, id: &str, body: Value) -> impl std::future::Future<Output = reqwest::Response> + 'static {
    let request = hub.request(Method::POST, &format!("/twins/{id}/methods")).json(&body);
    async move { request.send().await.expect("send") }
}

/// Answers the next method request on `mqtt` with `status` and a body built from the request.
async fn answer_next(
    mqtt: &mut Mqtt,
    status: i64,
    qos: QoS,
    body: impl Fn(&str, &Value) -> Vec<u8>,
) -> (String, Value) {
    let request = next_publish(mqtt).await;
    let name =
        request.topic.strip_prefix("$iothub/methods/POST/").and_then(|t| t.split('/').next()).expect("name").to_owned();
    assert!(request.topic.contains("/?$rid="), "slash before ?: {}", request.topic);
    let rid = topic_param(&request.topic, "$rid").expect("rid").to_owned();
    let payload: Value = serde_json::from_slice(&request.payload).expect("the request body is JSON, `null` when empty");
    let reply = body(&name, &payload);
    publish(mqtt, &format!("$iothub/methods/res/{status}/?$rid={rid}"), qos, &reply).await;
    (name, payload)
}

#[tokio::test]
async fn a_method_call_reaches_the_device_and_its_answer_comes_back() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut device = connect_device(&hub, "d1").await;
    subscribe(&mut device, &[METHODS], QoS::AtLeastOnce).await;

    let call = tokio::spawn(invoke(
        &hub,
        "d1",
        json!({"methodName":"lockDoor","payload":{"door":"front"},"responseTimeoutInSeconds":10}),
    ));
    let (name, payload) = answer_next(&mut device, 299, QoS::AtLeastOnce, |_, p| {
        json!({"locked": true, "was": p}).to_string().into_bytes()
    })
    .await;
    assert_eq!(name, "lockDoor");
    assert_eq!(payload, json!({"door":"front"}));
    let response = call.await.expect("task");
    assert_eq!(response.status(), StatusCode::OK, "HTTP 200 whatever status the device chose");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"status":299,"payload":{"locked":true,"was":{"door":"front"}}}));

    // No payload is sent as `null`; an empty answer comes back as `null`; a non-JSON answer as a string.
    let call = tokio::spawn(invoke(&hub, "d1", json!({"methodName":"reboot"})));
    let (_, payload) = answer_next(&mut device, 200, QoS::AtMostOnce, |_, _| Vec::new()).await;
    assert_eq!(payload, Value::Null);
    assert_eq!(call.await.expect("task").json::<Value>().await.expect("json"), json!({"status":200,"payload":null}));
    let call = tokio::spawn(invoke(&hub, "d1", json!({"methodName":"raw"})));
    answer_next(&mut device, 500, QoS::AtMostOnce, |_, _| b"not json".to_vec()).await;
    assert_eq!(
        call.await.expect("task").json::<Value>().await.expect("json"),
        json!({"status":500,"payload":"not json"})
    );
}

#[tokio::test]
async fn payloads_keep_the_callers_and_the_devices_member_order() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut device = connect_device(&hub, "d1").await;
    subscribe(&mut device, &[METHODS], QoS::AtLeastOnce).await;
    let sent = r#"{"nonce":"ab","n":42,"list":[3,1,{"z":1,"a":2}],"flag":true}"#;
    let body = format!(r#"{{"methodName":"echo","payload":{sent},"responseTimeoutInSeconds":10}}"#);
    let request = hub.request(Method::POST, "/twins/d1/methods").header("content-type", "application/json").body(body);
    let call = tokio::spawn(async move { request.send().await.expect("send") });
    let received = next_publish(&mut device).await;
    assert_eq!(std::str::from_utf8(&received.payload).expect("UTF-8"), sent, "the device gets the caller's text");
    let rid = topic_param(&received.topic, "$rid").expect("rid").to_owned();
    let answer = br#"{"zeta":1,"alpha":{"b":2,"a":1}}"#;
    publish(&mut device, &format!("$iothub/methods/res/200/?$rid={rid}"), QoS::AtLeastOnce, answer).await;
    let text = call.await.expect("task").text().await.expect("body");
    assert_eq!(text, r#"{"status":200,"payload":{"zeta":1,"alpha":{"b":2,"a":1}}}"#, "the device's order comes back");
}

#[tokio::test]
async fn offline_and_unsubscribed_devices_get_404103() {
    let hub = start().await;
    hub.create_device("offline").await;
    hub.create_device("deaf").await;
    let response = invoke(&hub, "offline", json!({"methodName":"m"})).await;
    let body: Value = response_json_error(response, StatusCode::NOT_FOUND, "DeviceNotOnline").await;
    assert_eq!(body["errorCode"], 404103);
    assert_eq!(body["message"], "Timed out waiting for device to connect.");
    assert_eq!(body["info"]["timeout"], "00:00:00");

    let _deaf = connect_device(&hub, "deaf").await;
    let response = invoke(&hub, "deaf", json!({"methodName":"m"})).await;
    let body = response_json_error(response, StatusCode::NOT_FOUND, "DeviceNotOnline").await;
    assert_eq!(body["message"], "Timed out waiting for device to subscribe.");

    let unknown = invoke(&hub, "ghost", json!({"methodName":"m"})).await;
    expect_error(unknown, StatusCode::NOT_FOUND, "DeviceNotFound").await;
}

/// Reads a direct-method error: the JSON envelope, whose `Message` is itself a JSON document.
async fn response_json_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers().get("iothub-errorcode").and_then(|v| v.to_str().ok()), Some(code));
    let outer: Value = response.json().await.expect("json");
    assert_eq!(outer["ExceptionMessage"], "");
    let inner: Value = serde_json::from_str(outer["Message"].as_str().expect("Message")).expect("Message is JSON");
    assert!(inner["trackingId"].is_string() && inner["timestampUtc"].is_string());
    inner
}

#[tokio::test]
async fn a_device_that_connects_within_the_connect_timeout_gets_the_call() {
    let hub = start().await;
    hub.create_device("late").await;
    let call = tokio::spawn(invoke(
        &hub,
        "late",
        json!({"methodName":"m","connectTimeoutInSeconds":10,"responseTimeoutInSeconds":10}),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut device = connect_device(&hub, "late").await;
    subscribe(&mut device, &[METHODS], QoS::AtMostOnce).await;
    answer_next(&mut device, 200, QoS::AtMostOnce, |_, _| b"{\"on\":\"time\"}".to_vec()).await;
    let body: Value = call.await.expect("task").json().await.expect("json");
    assert_eq!(body["payload"], json!({"on":"time"}));
}

#[tokio::test]
async fn no_answer_within_the_response_timeout_is_504101() {
    let hub = start().await;
    hub.create_device("slow").await;
    let mut device = connect_device(&hub, "slow").await;
    subscribe(&mut device, &[METHODS], QoS::AtMostOnce).await;
    let started = Instant::now();
    let call = tokio::spawn(invoke(&hub, "slow", json!({"methodName":"m","responseTimeoutInSeconds":5})));
    let request = next_publish(&mut device).await;
    let response = call.await.expect("task");
    let elapsed = started.elapsed();
    let body = response_json_error(response, StatusCode::GATEWAY_TIMEOUT, "GatewayTimeout").await;
    assert_eq!(body["errorCode"], 504101);
    assert_eq!(body["message"], "Timed out waiting for the response from device.");
    assert!(elapsed >= Duration::from_secs(5), "not before the timeout: {elapsed:?}");
    // A late answer is dropped without harm.
    let rid = topic_param(&request.topic, "$rid").expect("rid");
    publish(&mut device, &format!("$iothub/methods/res/200/?$rid={rid}"), QoS::AtLeastOnce, b"{}").await;
}

#[tokio::test]
async fn many_concurrent_calls_to_many_devices_do_not_mix_up() {
    let hub = start().await;
    let mut devices = Vec::new();
    for i in 0..10 {
        let id = format!("d{i}");
        hub.create_device(&id).await;
        let mut mqtt = connect_device(&hub, &id).await;
        subscribe(&mut mqtt, &[METHODS], QoS::AtMostOnce).await;
        devices.push((id, mqtt));
    }
    let mut calls = Vec::new();
    for (id, _) in &devices {
        for n in 0..5 {
            calls.push((id.clone(), n, tokio::spawn(invoke(&hub, id, json!({"methodName":"echo","payload":{"n":n}})))));
        }
    }
    // Each device answers its five requests, in the order they arrived, with its own id.
    let answering: Vec<_> = devices
        .into_iter()
        .map(|(id, mut mqtt)| {
            tokio::spawn(async move {
                for _ in 0..5 {
                    let device = id.clone();
                    answer_next(&mut mqtt, 200, QoS::AtMostOnce, move |_, p| {
                        json!({"from": device, "n": p["n"]}).to_string().into_bytes()
                    })
                    .await;
                }
                mqtt
            })
        })
        .collect();
    for (id, n, call) in calls {
        let body: Value = call.await.expect("task").json().await.expect("json");
        assert_eq!(body["payload"], json!({"from": id, "n": n}));
    }
    for task in answering {
        task.await.expect("device task");
    }
}

#[tokio::test]
async fn a_device_cannot_answer_another_devices_call() {
    let hub = start().await;
    hub.create_device("target").await;
    hub.create_device("intruder").await;
    let mut target = connect_device(&hub, "target").await;
    let mut intruder = connect_device(&hub, "intruder").await;
    subscribe(&mut target, &[METHODS], QoS::AtMostOnce).await;
    let call = tokio::spawn(invoke(&hub, "target", json!({"methodName":"m","responseTimeoutInSeconds":10})));
    let request = next_publish(&mut target).await;
    let rid = topic_param(&request.topic, "$rid").expect("rid");
    publish(&mut intruder, &format!("$iothub/methods/res/666/?$rid={rid}"), QoS::AtLeastOnce, b"\"forged\"").await;
    publish(&mut target, &format!("$iothub/methods/res/200/?$rid={rid}"), QoS::AtLeastOnce, b"\"genuine\"").await;
    let body: Value = call.await.expect("task").json().await.expect("json");
    assert_eq!(body, json!({"status":200,"payload":"genuine"}));
}

#[tokio::test]
async fn invalid_method_requests_are_400() {
    let hub = start().await;
    hub.create_device("d1").await;
    for (body, code) in [
        (json!({"payload":1}), "ArgumentNull"),
        (json!({"methodName":"m","responseTimeoutInSeconds":4}), "ArgumentInvalid"),
        (json!({"methodName":"m","responseTimeoutInSeconds":301}), "ArgumentInvalid"),
        (json!({"methodName":"m","connectTimeoutInSeconds":301}), "ArgumentInvalid"),
        (json!({"methodName":"a/b"}), "ArgumentInvalid"),
    ] {
        let response = invoke(&hub, "d1", body).await;
        expect_error(response, StatusCode::BAD_REQUEST, code).await;
    }
    let big = invoke(&hub, "d1", json!({"methodName":"m","payload":"x".repeat(130 * 1024)})).await;
    expect_error(big, StatusCode::PAYLOAD_TOO_LARGE, "MessageTooLarge").await;
}
