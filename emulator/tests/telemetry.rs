//! Telemetry (device-to-cloud messages) and MQTT over WebSockets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::mqtt::{connect_device, expect_closed, publish};
use common::{start, unix_now};
use reqwest::{Method, StatusCode};
use rumqttc::mqttbytes::QoS;
use serde_json::{Value, json};

#[tokio::test]
async fn telemetry_with_properties_is_acknowledged_streamed_and_readable() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut stream = hub.emulator.hub().telemetry_stream();
    let mut mqtt = connect_device(&hub, "d1").await;
    // Node's topic: system properties first, `$` encoded, then application properties.
    let topic = "devices/d1/messages/events/%24.mid=m-1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=high%20temp&flag";
    publish(&mut mqtt, topic, QoS::AtLeastOnce, br#"{"temperature":21.5}"#).await;
    publish(&mut mqtt, "devices/d1/messages/events/", QoS::AtMostOnce, &[0xff, 0x00]).await;

    let first = tokio::time::timeout(Duration::from_secs(5), stream.recv()).await.expect("in time").expect("message");
    let generation_id = hub.get_json::<Value>("/devices/d1").await["generationId"].clone();
    assert_eq!(first.message.generation_id, generation_id.as_str().expect("generationId"));
    let first = &first.message;
    assert_eq!(first.device_id, "d1");
    assert_eq!(first.body, &br#"{"temperature":21.5}"#[..]);
    assert_eq!(first.system_properties["messageId"], "m-1");
    assert_eq!(first.system_properties["contentType"], "application/json");
    assert_eq!(first.properties["alert"], "high temp");
    assert_eq!(first.properties["flag"], "");

    let second = tokio::time::timeout(Duration::from_secs(5), stream.recv()).await.expect("in time").expect("message");
    assert_eq!(second.message.body, vec![0xff, 0x00]);

    let messages: Vec<Value> = hub.get_json("/emulator/devices/d1/messages/events").await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["body"], r#"{"temperature":21.5}"#);
    assert_eq!(messages[0]["systemProperties"]["contentEncoding"], "utf-8");
    assert_eq!(messages[1]["body"], Value::Null, "a body that is not UTF-8 is only in bodyBase64");
    assert_eq!(messages[1]["bodyBase64"], "/wA=");
    assert_eq!(messages[0]["partitionId"], messages[1]["partitionId"], "a device's messages share a partition");
    assert_eq!(messages[1]["sequenceNumber"].as_u64(), messages[0]["sequenceNumber"].as_u64().map(|n| n + 1));
    let device: Value = hub.get_json("/devices/d1").await;
    assert_ne!(device["lastActivityTime"], "0001-01-01T00:00:00Z");
}

#[tokio::test]
async fn oversized_and_foreign_publishes_close_the_connection() {
    let hub = start().await;
    hub.create_device("d1").await;
    hub.create_device("d2").await;
    let mut mqtt = connect_device(&hub, "d1").await;
    let big = vec![b'x'; 256 * 1024 + 1];
    publish(&mut mqtt, "devices/d1/messages/events/", QoS::AtMostOnce, &big).await;
    expect_closed(&mut mqtt).await;

    let mut mqtt = connect_device(&hub, "d1").await;
    publish(&mut mqtt, "devices/d2/messages/events/", QoS::AtMostOnce, b"impersonation").await;
    expect_closed(&mut mqtt).await;
    assert!(hub.emulator.hub().recent_telemetry("d2").is_empty(), "nothing was recorded as d2");

    let mut mqtt = connect_device(&hub, "d1").await;
    publish(&mut mqtt, "devices/d1/messages/events/", QoS::ExactlyOnce, b"qos2").await;
    expect_closed(&mut mqtt).await;

    let unauthorised = hub
        .request_as(&hub.policy_token("registryRead"), Method::GET, "/emulator/devices/d1/messages/events")
        .send()
        .await
        .expect("send");
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn mqtt_over_websockets_carries_a_method_round_trip() {
    let hub = start().await;
    hub.create_device("ws").await;
    let port = hub.emulator.https_addr().port();
    let mut options = rumqttc::MqttOptions::new(
        "ws",
        format!("wss://localhost:{port}/$iothub/websocket?iothub-no-client-cert=true"),
        port,
    );
    let tls = common::client_tls(hub.emulator.ca_pem(), rustls::DEFAULT_VERSIONS);
    options.set_transport(rumqttc::Transport::wss_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(tls))));
    let token = common::mqtt::device_token(&hub, "ws", "ws", unix_now() + 600);
    options.set_credentials(common::mqtt::user_name("ws"), token);
    options.set_clean_session(false);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
    client.subscribe("$iothub/methods/POST/#", rumqttc::QoS::AtLeastOnce).await.expect("subscribe");

    let device = tokio::spawn(async move {
        loop {
            match events.poll().await.expect("connection") {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {}
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(request)) => {
                    let rid = request.topic.split("$rid=").nth(1).expect("rid").to_owned();
                    client
                        .publish(
                            format!("$iothub/methods/res/200/?$rid={rid}"),
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            r#"{"via":"websocket"}"#,
                        )
                        .await
                        .expect("answer");
                }
                rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => return,
                _ => {}
            }
        }
    });
    // Wait until the device's subscription is in place, then call it.
    let mut body = Value::Null;
    for _ in 0..50 {
        let response = hub
            .request(Method::POST, "/twins/ws/methods")
            .json(&json!({"methodName":"hello","connectTimeoutInSeconds":5}))
            .send()
            .await
            .expect("send");
        if response.status() == StatusCode::OK {
            body = response.json().await.expect("json");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(body, json!({"status":200,"payload":{"via":"websocket"}}));
    tokio::time::timeout(Duration::from_secs(5), device).await.expect("device finished").expect("device task");
}
