//! Twins over MQTT and REST: GET, reported patches, desired notifications, merge rules, etags, limits, and
//! sessions that keep their subscriptions across reconnects.

mod common;

use common::mqtt::{
    connect_device, connect_with, device_token, next, next_publish, publish, subscribe, topic_param, user_name,
};
use common::{TestHub, expect_error, start, unix_now};
use reqwest::{Method, StatusCode};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, SubscribeReasonCode};
use serde_json::{Value, json};

const TWIN_RES: &str = "$iothub/twin/res/#";
const DESIRED: &str = "$iothub/twin/PATCH/properties/desired/#";

async fn twin(hub: &TestHub, id: &str) -> Value {
    hub.get_json(&format!("/twins/{id}")).await
}

async fn patch_twin(hub: &TestHub, id: &str, body: Value) -> reqwest::Response {
    hub.request(Method::PATCH, &format!("/twins/{id}"))
        .header("If-Match", "\"*\"")
        .json(&body)
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn device_gets_its_twin_and_patches_reported_properties() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut mqtt = connect_device(&hub, "d1").await;
    // Python subscribes and publishes at QoS 1; every QoS 1 publish is acknowledged.
    assert_eq!(
        subscribe(&mut mqtt, &[TWIN_RES], QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    publish(&mut mqtt, "$iothub/twin/GET/?$rid=get-1", QoS::AtLeastOnce, b" ").await;
    let response = next_publish(&mut mqtt).await;
    assert_eq!(response.topic, "$iothub/twin/res/200/?$rid=get-1");
    let body: Value = serde_json::from_slice(&response.payload).expect("json");
    assert_eq!(body, json!({"desired":{"$version":1},"reported":{"$version":1}}), "no $metadata, no tags");

    let patch = json!({"battery": 55, "firmware": {"version": "1.0", "channel": "beta"}});
    publish(
        &mut mqtt,
        "$iothub/twin/PATCH/properties/reported/?$rid=p1",
        QoS::AtMostOnce,
        patch.to_string().as_bytes(),
    )
    .await;
    let response = next_publish(&mut mqtt).await;
    assert_eq!(response.topic, "$iothub/twin/res/204/?$rid=p1&$version=2");
    assert!(response.payload.is_empty());

    let removal = json!({"firmware": {"channel": null}});
    publish(
        &mut mqtt,
        "$iothub/twin/PATCH/properties/reported/?$rid=p2",
        QoS::AtLeastOnce,
        removal.to_string().as_bytes(),
    )
    .await;
    let response = next_publish(&mut mqtt).await;
    assert_eq!(topic_param(&response.topic, "$version"), Some("3"));

    let doc = twin(&hub, "d1").await;
    assert_eq!(doc["properties"]["reported"]["battery"], 55);
    assert_eq!(doc["properties"]["reported"]["firmware"], json!({"version": "1.0"}));
    assert_eq!(doc["properties"]["reported"]["$version"], 3);
    assert!(doc["properties"]["reported"]["$metadata"]["firmware"]["version"]["$lastUpdated"].is_string());
    assert!(doc["properties"]["reported"]["$metadata"]["firmware"].get("channel").is_none());
    assert_eq!(doc["connectionState"], "Connected");
    assert_ne!(doc["lastActivityTime"], "0001-01-01T00:00:00Z");
}

#[tokio::test]
async fn bad_reported_patches_get_a_twin_error_and_change_nothing() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut mqtt = connect_device(&hub, "d1").await;
    subscribe(&mut mqtt, &[TWIN_RES], QoS::AtMostOnce).await;
    let too_deep = (1..=11).rev().fold(json!(1), |inner, level| json!({ format!("k{level}"): inner }));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "400"),
        (b"[1,2]".to_vec(), "400"),
        (b"null".to_vec(), "400"),
        (json!({"bad.key": 1}).to_string().into_bytes(), "400"),
        (json!({"$reserved": 1}).to_string().into_bytes(), "400"),
        (json!({"s": "x".repeat(4097)}).to_string().into_bytes(), "400"),
        (too_deep.to_string().into_bytes(), "400"),
        (json!({"a": "x".repeat(4000), "b": "x".repeat(4000), "c": "x".repeat(4000), "d": "x".repeat(4000), "e": "x".repeat(4000), "f": "x".repeat(4000), "g": "x".repeat(4000), "h": "x".repeat(4000), "i": "x".repeat(1000)}).to_string().into_bytes(), "400"),
    ];
    for (i, (body, status)) in cases.iter().enumerate() {
        let topic = format!("$iothub/twin/PATCH/properties/reported/?$rid=bad{i}");
        publish(&mut mqtt, &topic, QoS::AtLeastOnce, body).await;
        let response = next_publish(&mut mqtt).await;
        assert_eq!(response.topic, format!("$iothub/twin/res/{status}/?$rid=bad{i}"), "case {i}");
        let error: Value = serde_json::from_slice(&response.payload).expect("an error body");
        assert!(error["errorCode"].as_u64().is_some_and(|c| c / 1000 == 400), "errorCode in {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(twin(&hub, "d1").await["properties"]["reported"]["$version"], 1, "nothing was applied");
}

#[tokio::test]
async fn service_writes_notify_the_device_in_order_with_versions() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut mqtt = connect_device(&hub, "d1").await;
    subscribe(&mut mqtt, &[DESIRED], QoS::AtMostOnce).await;
    let before = twin(&hub, "d1").await;

    let response = patch_twin(&hub, "d1", json!({"properties":{"desired":{"building":"43","floor":3}}})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let after: Value = response.json().await.expect("json");
    assert_eq!(after["properties"]["desired"]["building"], "43");
    assert_eq!(after["properties"]["desired"]["$version"], 2);
    assert_eq!(after["properties"]["desired"]["$metadata"]["floor"]["$lastUpdatedVersion"], 2);
    assert_ne!(after["etag"], before["etag"]);
    assert_eq!(after["version"], before["version"].as_u64().expect("version") + 1);
    let note = next_publish(&mut mqtt).await;
    assert_eq!(note.topic, "$iothub/twin/PATCH/properties/desired/?$version=2");
    assert_eq!(
        serde_json::from_slice::<Value>(&note.payload).expect("json"),
        json!({"building":"43","floor":3,"$version":2})
    );

    // Tags change the twin but tell the device nothing; the next desired change comes with the next version.
    assert_eq!(patch_twin(&hub, "d1", json!({"tags":{"location":{"region":"EU"}}})).await.status(), StatusCode::OK);
    assert_eq!(patch_twin(&hub, "d1", json!({"properties":{"desired":{"floor":null}}})).await.status(), StatusCode::OK);
    let note = next_publish(&mut mqtt).await;
    assert_eq!(serde_json::from_slice::<Value>(&note.payload).expect("json"), json!({"floor":null,"$version":3}));

    // PUT replaces desired and spells out what disappeared.
    let put = hub
        .request(Method::PUT, "/twins/d1")
        .header("If-Match", "\"*\"")
        .json(&json!({"deviceId":"d1","properties":{"desired":{"mode":"eco","$metadata":{"ignored":true},"$version":99}}}))
        .send()
        .await
        .expect("send");
    assert_eq!(put.status(), StatusCode::OK);
    let note = next_publish(&mut mqtt).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&note.payload).expect("json"),
        json!({"building":null,"mode":"eco","$version":4})
    );
    let doc = twin(&hub, "d1").await;
    assert_eq!(doc["tags"], json!({"location":{"region":"EU"}}), "PUT without tags leaves tags alone");
    assert_eq!(doc["properties"]["desired"]["mode"], "eco");

    // Clearing all desired properties, as the Node e2e suite does.
    assert_eq!(patch_twin(&hub, "d1", json!({"properties":{"desired":null}})).await.status(), StatusCode::OK);
    let note = next_publish(&mut mqtt).await;
    assert_eq!(serde_json::from_slice::<Value>(&note.payload).expect("json"), json!({"mode":null,"$version":5}));
}

#[tokio::test]
async fn documents_list_members_in_the_hubs_order_and_properties_as_written() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut mqtt = connect_device(&hub, "d1").await;
    subscribe(&mut mqtt, &[TWIN_RES, DESIRED], QoS::AtLeastOnce).await;
    let patch = json!({"tags": {"zulu": 1, "bravo": {"y": 1, "x": 2}}, "properties": {"desired": {"zulu": 1, "bravo": {"y": 1, "x": 2}}}});
    assert_eq!(patch_twin(&hub, "d1", patch).await.status(), StatusCode::OK);
    let notification = next_publish(&mut mqtt).await;
    assert_eq!(
        std::str::from_utf8(&notification.payload).expect("UTF-8"),
        r#"{"zulu":1,"bravo":{"y":1,"x":2},"$version":2}"#
    );
    publish(&mut mqtt, "$iothub/twin/PATCH/properties/reported/?$rid=r1", QoS::AtMostOnce, br#"{"m":1,"b":2}"#).await;
    next_publish(&mut mqtt).await;

    let text = hub.request(Method::GET, "/twins/d1").send().await.expect("send").text().await.expect("body");
    let keys = |v: &Value| v.as_object().expect("object").keys().cloned().collect::<Vec<_>>();
    let doc: Value = serde_json::from_str(&text).expect("json");
    assert!(text.starts_with(r#"{"deviceId":"d1","etag":"#), "{text}");
    assert_eq!(keys(&doc["tags"]), ["zulu", "bravo"]);
    assert_eq!(keys(&doc["tags"]["bravo"]), ["y", "x"]);
    let desired = &doc["properties"]["desired"];
    assert_eq!(keys(desired), ["zulu", "bravo", "$metadata", "$version"]);
    assert_eq!(keys(&desired["$metadata"]), ["$lastUpdated", "$lastUpdatedVersion", "zulu", "bravo"]);
    assert_eq!(keys(&desired["$metadata"]["bravo"]), ["$lastUpdated", "$lastUpdatedVersion", "y", "x"]);
    assert_eq!(keys(&doc["properties"]["reported"]), ["m", "b", "$metadata", "$version"]);

    // A key removed and written again goes last; one written again in place keeps its place.
    patch_twin(&hub, "d1", json!({"properties": {"desired": {"zulu": null}}})).await;
    patch_twin(&hub, "d1", json!({"properties": {"desired": {"bravo": {"x": 5}, "zulu": 9}}})).await;
    let desired = &twin(&hub, "d1").await["properties"]["desired"];
    assert_eq!(keys(desired), ["bravo", "zulu", "$metadata", "$version"]);
    assert_eq!(keys(&desired["bravo"]), ["y", "x"]);
    publish(&mut mqtt, "$iothub/twin/GET/?$rid=g1", QoS::AtMostOnce, b"").await;
    let view = loop {
        let message = next_publish(&mut mqtt).await;
        if message.topic.starts_with("$iothub/twin/res/200/") {
            break message;
        }
    };
    assert_eq!(
        std::str::from_utf8(&view.payload).expect("UTF-8"),
        r#"{"desired":{"bravo":{"y":1,"x":5},"zulu":9,"$version":4},"reported":{"m":1,"b":2,"$version":2}}"#
    );
}

#[tokio::test]
async fn twin_etags_and_bad_writes() {
    let hub = start().await;
    hub.create_device("d1").await;
    let current = twin(&hub, "d1").await;
    let etag = format!("\"{}\"", current["etag"].as_str().expect("etag"));
    let ok = hub
        .request(Method::PATCH, "/twins/d1")
        .header("If-Match", &etag)
        .json(&json!({"tags":{"a":1}}))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), StatusCode::OK);
    let stale = hub
        .request(Method::PATCH, "/twins/d1")
        .header("If-Match", &etag)
        .json(&json!({"tags":{"a":2}}))
        .send()
        .await
        .expect("send");
    expect_error(stale, StatusCode::PRECONDITION_FAILED, "PreconditionFailed").await;

    let bad: Vec<Value> = vec![
        json!({"properties":{"reported":{"x":1}}}),
        json!({"properties":{"desired":{"a.b":1}}}),
        json!({"tags":"not an object"}),
        json!({"tags":{"big":4503599627370496_i64}}),
        json!([1]),
        json!({"tags":{"t": "x".repeat(8200)}}),
    ];
    for body in bad {
        let response = patch_twin(&hub, "d1", body.clone()).await;
        expect_error(response, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    }
    assert_eq!(twin(&hub, "d1").await["tags"], json!({"a":1}), "refused writes changed nothing");
    // An empty reported section is accepted (the Node twin-job sample sends it).
    let ok = patch_twin(&hub, "d1", json!({"properties":{"desired":{"x":1},"reported":{}}})).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let missing = patch_twin(&hub, "ghost", json!({"tags":{"a":1}})).await;
    expect_error(missing, StatusCode::NOT_FOUND, "DeviceNotFound").await;
}

#[tokio::test]
async fn a_device_that_did_not_subscribe_gets_no_notification() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut mqtt = connect_device(&hub, "d1").await;
    subscribe(&mut mqtt, &[TWIN_RES], QoS::AtMostOnce).await;
    patch_twin(&hub, "d1", json!({"properties":{"desired":{"x":1}}})).await;
    publish(&mut mqtt, "$iothub/twin/GET/?$rid=after", QoS::AtMostOnce, b" ").await;
    let first = next_publish(&mut mqtt).await;
    assert!(first.topic.starts_with("$iothub/twin/res/200/"), "the GET answer comes first: {}", first.topic);
    let body: Value = serde_json::from_slice(&first.payload).expect("json");
    assert_eq!(body["desired"], json!({"x":1,"$version":2}));
}

#[tokio::test]
async fn clean_session_0_keeps_subscriptions_across_reconnects() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut first = connect_device(&hub, "d1").await;
    subscribe(&mut first, &[DESIRED, "$iothub/methods/POST/#"], QoS::AtMostOnce).await;
    first.send_disconnect().await;

    // The Node SDK reconnects (SAS renewal) without subscribing again: notifications must still arrive.
    let token = device_token(&hub, "d1", "d1", unix_now() + 600);
    let (mut second, ack) = connect_with(&hub, "d1", &user_name("d1"), &token, false).await;
    assert!(ack.session_present, "a stored session is resumed");
    patch_twin(&hub, "d1", json!({"properties":{"desired":{"after":"reconnect"}}})).await;
    let note = next_publish(&mut second).await;
    assert!(note.topic.starts_with("$iothub/twin/PATCH/properties/desired/"));

    // A clean session starts with nothing.
    second.send_disconnect().await;
    let (mut third, ack) = connect_with(&hub, "d1", &user_name("d1"), &token, true).await;
    assert!(!ack.session_present);
    patch_twin(&hub, "d1", json!({"properties":{"desired":{"again":1}}})).await;
    third.send(Packet::PingReq).await.expect("ping");
    assert!(matches!(next(&mut third).await, Packet::PingResp), "no notification without a subscription");
}

trait Disconnect {
    async fn send_disconnect(&mut self);
    async fn send(&mut self, packet: Packet) -> Result<(), rumqttc::mqttbytes::Error>;
}

impl Disconnect for common::mqtt::Mqtt {
    async fn send_disconnect(&mut self) {
        futures_util::SinkExt::send(self, Packet::Disconnect).await.expect("disconnect");
        // Let the hub see the DISCONNECT before the next CONNECT.
        let _ = tokio::time::timeout(common::mqtt::WAIT, futures_util::StreamExt::next(self)).await;
    }

    async fn send(&mut self, packet: Packet) -> Result<(), rumqttc::mqttbytes::Error> {
        futures_util::SinkExt::send(self, packet).await
    }
}
