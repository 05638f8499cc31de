//! The throttling profile (`--throttle`): past one unit's rates the service API answers 429
//! ThrottlingException and device twin requests get status 429; without it nothing is throttled. The hub runs
//! on a stopped clock, so a quota refills only when a test moves time on.

mod common;

use std::sync::{Arc, Mutex};

use common::mqtt::{connect_device, next_publish, subscribe};
use common::{TestHub, expect_error, start, start_with};
use futures_util::SinkExt as _;
use iothub_emulator::Emulator;
use iothub_emulator::clock::Clock;
use iothub_emulator::domain::throttle::Tier;
use reqwest::{Method, StatusCode};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use serde_json::{Value, json};

/// Wall-clock time that moves only when told to.
#[derive(Debug)]
struct StoppedClock(Mutex<jiff::Timestamp>);

impl StoppedClock {
    fn advance(&self, by: std::time::Duration) {
        let mut now = self.0.lock().expect("clock");
        *now = now.checked_add(by).expect("time");
    }
}

impl Clock for StoppedClock {
    fn now(&self) -> jiff::Timestamp {
        *self.0.lock().expect("clock")
    }
}

async fn start_throttled(tier: Tier) -> (TestHub, Arc<StoppedClock>) {
    let clock = Arc::new(StoppedClock(Mutex::new(jiff::Timestamp::now())));
    let hub = start_with(Emulator::builder().throttle(tier).clock(clock.clone())).await;
    (hub, clock)
}

async fn put_device(hub: &TestHub, id: &str) -> reqwest::Response {
    hub.request(Method::PUT, &format!("/devices/{id}")).json(&json!({"deviceId": id})).send().await.expect("send")
}

async fn query(hub: &TestHub) -> reqwest::Response {
    hub.request(Method::POST, "/devices/query")
        .json(&json!({"query": "SELECT * FROM devices"}))
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn s1_allows_a_minute_of_registry_operations_then_answers_429_throttling_exception() {
    let (hub, clock) = start_throttled(Tier::S1).await;
    for n in 0..100 {
        assert_eq!(put_device(&hub, &format!("d{n}")).await.status(), StatusCode::OK, "operation {n} of 100");
    }
    let message =
        expect_error(put_device(&hub, "one-too-many").await, StatusCode::TOO_MANY_REQUESTS, "ThrottlingException")
            .await;
    assert!(message.contains("identity registry operations") && message.contains("S1"), "{message}");
    assert!(hub.emulator.hub().get_device("one-too-many").is_err(), "a refused create leaves nothing behind");
    // 100 a minute refill one every 0.6 s.
    clock.advance(std::time::Duration::from_millis(650));
    assert_eq!(put_device(&hub, "later").await.status(), StatusCode::OK, "the quota refilled");
    expect_error(put_device(&hub, "too-soon").await, StatusCode::TOO_MANY_REQUESTS, "ThrottlingException").await;

    // Other classes keep their own quota: queries (20 a minute on S1) and twin reads still pass.
    assert_eq!(hub.request(Method::GET, "/twins/d1").send().await.expect("send").status(), StatusCode::OK);
    for n in 0..20 {
        assert_eq!(query(&hub).await.status(), StatusCode::OK, "query {n} of 20");
    }
    expect_error(query(&hub).await, StatusCode::TOO_MANY_REQUESTS, "ThrottlingException").await;
}

#[tokio::test]
async fn twin_updates_share_one_quota_across_mqtt_and_rest_and_a_device_sees_status_429() {
    let (hub, clock) = start_throttled(Tier::S1).await;
    hub.create_device("d1").await;
    let mut mqtt = connect_device(&hub, "d1").await;
    subscribe(&mut mqtt, &["$iothub/twin/res/#"], QoS::AtMostOnce).await;

    // S1: 50 twin updates a second over a minute = 3,000; send one more, without waiting for answers.
    let sent = 3001;
    for n in 0..sent {
        let patch = json!({"n": n}).to_string();
        let topic = format!("$iothub/twin/PATCH/properties/reported/?$rid={n}");
        mqtt.feed(Packet::Publish(Publish::new(topic, QoS::AtMostOnce, patch.into_bytes()))).await.expect("feed");
    }
    mqtt.flush().await.expect("flush");
    let mut throttled = Vec::new();
    for _ in 0..sent {
        let response = next_publish(&mut mqtt).await;
        if response.topic.starts_with("$iothub/twin/res/429/") {
            throttled.push(response);
        } else {
            assert!(response.topic.starts_with("$iothub/twin/res/204/"), "{}", response.topic);
        }
    }
    assert_eq!(throttled.len(), 1, "exactly the patch past the quota is refused");
    let body: Value = serde_json::from_slice(&throttled[0].payload).expect("error JSON");
    assert_eq!(body["errorCode"], 429001, "{body}");

    let rest = hub
        .request(Method::PATCH, "/twins/d1")
        .header("If-Match", "\"*\"")
        .json(&json!({"properties": {"desired": {"x": 1}}}))
        .send()
        .await
        .expect("send");
    expect_error(rest, StatusCode::TOO_MANY_REQUESTS, "ThrottlingException").await;
    let twin: Value = hub.get_json("/twins/d1").await;
    assert_eq!(twin["properties"]["reported"]["$version"], 3001, "3,000 patches applied, the refused one not");
    assert_eq!(twin["properties"]["reported"]["n"], 2999);
    assert!(twin["properties"]["desired"].get("x").is_none(), "the refused service patch was not applied");

    // One second later 50 more pass.
    clock.advance(std::time::Duration::from_secs(1));
    for n in 0..50 {
        let patch = json!({"properties": {"desired": {"x": n}}});
        let response = hub
            .request(Method::PATCH, "/twins/d1")
            .header("If-Match", "\"*\"")
            .json(&patch)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK, "update {n} of 50");
    }
    let refused = hub.request(Method::PATCH, "/twins/d1").header("If-Match", "\"*\"").json(&json!({})).send().await;
    expect_error(refused.expect("send"), StatusCode::TOO_MANY_REQUESTS, "ThrottlingException").await;
}

#[tokio::test]
async fn without_a_profile_nothing_is_throttled() {
    let hub = start().await;
    assert_eq!(hub.emulator.hub().throttle_tier(), None);
    for n in 0..150 {
        assert_eq!(put_device(&hub, &format!("d{n}")).await.status(), StatusCode::OK, "operation {n}");
    }
    for _ in 0..30 {
        assert_eq!(query(&hub).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn cloud_to_device_sends_past_the_quota_are_refused_as_throttled_not_as_a_full_queue() {
    use common::amqp::{message_to, rejected_with, send};
    use fe2o3_amqp::types::definitions::ErrorCondition;
    use fe2o3_amqp::types::messaging::Outcome;

    let (hub, clock) = start_throttled(Tier::S1).await;
    // S1: 100 sends a minute; 50 each to two devices fill the quota, a third device has room in its queue.
    hub.create_device("d1").await;
    hub.create_device("d2").await;
    hub.create_device("d3").await;
    let mut amqp = common::amqp::open(&hub, None).await;
    amqp.authorize(&hub).await;
    let mut sender = amqp.devicebound().await;
    for n in 0..100 {
        let device = if n % 2 == 0 { "d1" } else { "d2" };
        let outcome = send(&mut sender, message_to(device, b"x").build()).await;
        assert!(matches!(outcome, Outcome::Accepted(_)), "send {n} of 100: {outcome:?}");
    }
    let refused = send(&mut sender, message_to("d3", b"one too many").build()).await;
    let condition = rejected_with(&refused).expect("the 101st send is rejected");
    assert!(
        matches!(&condition, ErrorCondition::Custom(symbol) if symbol.as_str() == "com.microsoft:device-container-throttled"),
        "the SDKs report this condition as throttling: {condition:?}"
    );
    clock.advance(std::time::Duration::from_millis(650));
    let outcome = send(&mut sender, message_to("d3", b"later").build()).await;
    assert!(matches!(outcome, Outcome::Accepted(_)), "the quota refilled: {outcome:?}");
    amqp.close().await;
}
