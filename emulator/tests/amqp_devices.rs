//! Devices over AMQP (the .NET SDK's default, Node's `Amqp`): a device's own token on `$cbs`, telemetry on
//! `/devices/<id>/messages/events`, cloud-to-device messages on `/devices/<id>/messages/devicebound` with the
//! dispositions AMQP has, presence, several devices on one connection, and the refusals.

mod common;

use common::amqp::{open, receiver_refusal, rejected_with, send, sender_refusal};
use common::mqtt::{WAIT, connect_device, device_token, subscribe};
use common::{TestHub, start, unix_now};
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition};
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Data, Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Value};
use reqwest::Method;
use rumqttc::mqttbytes::QoS;
use serde_json::{Value as Json, json};

fn audience(device_id: &str) -> String {
    format!("localhost/devices/{device_id}")
}

/// A connection on which `device_id` put its own token.
async fn device_connection(hub: &TestHub, device_id: &str) -> common::amqp::Amqp {
    let mut amqp = open(hub, None).await;
    let token = device_token(hub, device_id, device_id, unix_now() + 600);
    assert_eq!(amqp.put_token(&token, &audience(device_id)).await, 200, "a device's own token is a claim");
    amqp
}

fn telemetry(body: &str) -> Message<Data> {
    Message::builder()
        .properties(
            Properties::builder()
                .message_id(String::from("m-1"))
                .correlation_id(String::from("c-1"))
                .content_type("application/json")
                .content_encoding("utf-8")
                .build(),
        )
        .application_properties(ApplicationProperties::builder().insert("temperatureAlert", "true").build())
        .data(Binary::from(body.as_bytes().to_vec()))
        .build()
}

async fn send_c2d(hub: &TestHub, device_id: &str, body: &str) {
    let response = hub
        .http
        .post(hub.url(&format!("/emulator/devices/{device_id}/messages/devicebound")))
        .header("Authorization", hub.owner_token())
        .json(&json!({"body": body, "properties": {"k": "v"}, "messageId": format!("c2d-{body}"), "ack": "full"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn telemetry_is_accepted_once_stored_with_the_same_record_as_mqtt() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut amqp = device_connection(&hub, "d1").await;
    let mut sender = amqp.sender_to("events", "/devices/d1/messages/events").await;
    let outcome = send(&mut sender, telemetry(r#"{"t":21.5}"#)).await;
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    assert!(hub.emulator.hub().is_connected("d1"), "a device with links is connected");
    let kept: Json = hub.get_json("/emulator/devices/d1/messages/events").await;
    let message = &kept[0];
    assert_eq!(message["body"], r#"{"t":21.5}"#);
    assert_eq!(message["properties"], json!({"temperatureAlert": "true"}));
    let system = &message["systemProperties"];
    assert_eq!((system["messageId"].as_str(), system["correlationId"].as_str()), (Some("m-1"), Some("c-1")));
    assert_eq!(
        (system["contentType"].as_str(), system["contentEncoding"].as_str()),
        (Some("application/json"), Some("utf-8"))
    );
    let twin: Json = hub.get_json("/twins/d1").await;
    assert_eq!(twin["connectionState"], "Connected");

    let _ = sender.close().await;
    amqp.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!hub.emulator.hub().is_connected("d1"), "disconnected with its connection");
}

#[tokio::test]
async fn cloud_to_device_messages_complete_reject_and_abandon_by_disposition() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut amqp = device_connection(&hub, "d1").await;
    let mut receiver = amqp.receiver_from("c2d", "/devices/d1/messages/devicebound").await;
    for body in ["one", "two", "three"] {
        send_c2d(&hub, "d1", body).await;
    }
    let first = tokio::time::timeout(WAIT, receiver.recv::<Body<Value>>()).await.expect("in time").expect("message");
    let message = first.message();
    assert_eq!(
        message.properties.as_ref().and_then(|p| p.to.clone()).as_deref(),
        Some("/devices/d1/messages/devicebound")
    );
    let ack = message.application_properties.as_ref().and_then(|p| p.get("iothub-ack").cloned());
    assert_eq!(ack, Some(SimpleValue::String("full".into())));
    assert!(
        matches!(&message.body, Body::Data(d) if d.iter().flat_map(|s| s.0.iter().copied()).collect::<Vec<u8>>() == b"one")
    );
    receiver.accept(&first).await.expect("accept");

    let second = tokio::time::timeout(WAIT, receiver.recv::<Body<Value>>()).await.expect("in time").expect("message");
    receiver.reject(&second, None).await.expect("reject");
    let third = tokio::time::timeout(WAIT, receiver.recv::<Body<Value>>()).await.expect("in time").expect("message");
    receiver.release(&third).await.expect("release");
    let again =
        tokio::time::timeout(WAIT, receiver.recv::<Body<Value>>()).await.expect("in time").expect("redelivered");
    let key = fe2o3_amqp::types::messaging::annotations::OwnedKey::from(fe2o3_amqp::types::primitives::Symbol::from(
        "iothub-deliverycount",
    ));
    let count = again.message().message_annotations.as_ref().and_then(|a| a.get(&key).cloned());
    assert_eq!(count, Some(Value::Uint(1)), "released comes back with its delivery count grown");
    receiver.accept(&again).await.expect("accept");

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stats: Json = hub.get_json("/devices/d1").await;
    assert_eq!(stats["cloudToDeviceMessageCount"], 0, "nothing left in the queue");
    amqp.close().await;
}

#[tokio::test]
async fn several_devices_share_a_connection_each_confined_to_its_own_addresses() {
    let hub = start().await;
    hub.create_device("a").await;
    hub.create_device("b").await;
    hub.create_device("c").await;
    let mut amqp = device_connection(&hub, "a").await;
    let token_b = device_token(&hub, "b", "b", unix_now() + 600);
    assert_eq!(amqp.put_token(&token_b, &audience("b")).await, 200);
    let mut to_a = amqp.sender_to("a-events", "/devices/a/messages/events").await;
    let mut to_b = amqp.sender_to("b-events", "/devices/b/messages/events").await;
    assert!(matches!(send(&mut to_a, telemetry("from a")).await, Outcome::Accepted(_)));
    assert!(matches!(send(&mut to_b, telemetry("from b")).await, Outcome::Accepted(_)));
    assert!(hub.emulator.hub().is_connected("a") && hub.emulator.hub().is_connected("b"));

    let mut to_c = amqp.sender_to("c-events", "/devices/c/messages/events").await;
    assert_eq!(sender_refusal(&mut to_c).await, Some(ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess)));
    let mut module = amqp.sender_to("a-module", "/devices/a/modules/m1/messages/events").await;
    assert_eq!(
        sender_refusal(&mut module).await,
        Some(ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess)),
        "a device's token does not reach its modules"
    );
    let mut service = amqp.sender_to("service", "/messages/devicebound").await;
    assert_eq!(sender_refusal(&mut service).await, Some(ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess)));
    let wrong = device_token(&hub, "c", "a", unix_now() + 600);
    assert_eq!(amqp.put_token(&wrong, &audience("c")).await, 401, "c's resource signed with a's key");
    amqp.close().await;
}

#[tokio::test]
async fn one_connection_per_identity_across_transports() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut mqtt = connect_device(&hub, "d1").await;
    subscribe(&mut mqtt, &["$iothub/methods/POST/#"], QoS::AtMostOnce).await;
    let mut amqp = device_connection(&hub, "d1").await;
    let mut receiver = amqp.receiver_from("c2d", "/devices/d1/messages/devicebound").await;
    common::mqtt::expect_closed(&mut mqtt).await;
    // And back: an MQTT connection replaces the AMQP one, whose links are detached.
    let _again = connect_device(&hub, "d1").await;
    assert!(receiver_refusal(&mut receiver).await.is_some());
    let response = hub.request(Method::GET, "/twins/d1").send().await.expect("send");
    let twin: Json = response.json().await.expect("json");
    assert_eq!(twin["connectionState"], "Connected");
    amqp.close().await;
}

#[tokio::test]
async fn bad_telemetry_is_rejected_and_disabled_devices_cannot_claim() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut amqp = device_connection(&hub, "d1").await;
    let mut sender = amqp.sender_to("events", "/devices/d1/messages/events").await;
    let big = Message::builder().data(Binary::from(vec![b'x'; 300 * 1024])).build();
    let outcome = send(&mut sender, big).await;
    assert!(rejected_with(&outcome).is_some(), "a 300 KB message is refused: {outcome:?}");
    let fine = send(&mut sender, telemetry("{}")).await;
    assert!(matches!(fine, Outcome::Accepted(_)), "the link goes on");
    amqp.close().await;

    let disable = hub
        .request(Method::PUT, "/devices/d1")
        .header("If-Match", "*")
        .json(&json!({"deviceId":"d1","status":"disabled"}));
    assert!(disable.send().await.expect("send").status().is_success());
    let mut amqp = open(&hub, None).await;
    let token = device_token(&hub, "d1", "d1", unix_now() + 600);
    assert_eq!(amqp.put_token(&token, &audience("d1")).await, 401, "a disabled device has no claim");
    amqp.close().await;
}
