//! Cloud-to-device messages end to end: the service sends over AMQP (after a `$cbs` put-token), devices receive
//! over MQTT (PUBACK completes) or HTTPS (pull, complete, reject, abandon), feedback comes back over AMQP and
//! HTTPS, the queue's limits, purge, and what survives a restart.

mod common;

use std::time::Duration;

use common::amqp::{self, message_to, rejected_with, send, token_for};
use common::mqtt::{WAIT, connect_device, next, next_publish, subscribe};
use common::{TestHub, start, start_with, unix_now};
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition, LinkError};
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Data, Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, Timestamp as AmqpTimestamp};
use futures_util::SinkExt as _;
use reqwest::{Method, StatusCode};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck};
use serde_json::Value;

const C2D: fn(&str) -> String = iothub_proto::topics::cloud_to_device_filter;

/// A message for `device_id` with ids, content type, `iothub-ack` and two application properties.
fn rich_message(device_id: &str, ack: &str) -> Message<Data> {
    Message::builder()
        .properties(
            Properties::builder()
                .to(format!("/devices/{device_id}/messages/devicebound"))
                .message_id(String::from("msg-1"))
                .correlation_id(String::from("corr/1"))
                .content_type("application/json")
                .content_encoding("utf-8")
                .build(),
        )
        .application_properties(
            ApplicationProperties::builder()
                .insert("iothub-ack", ack)
                .insert("zeta", "z 1")
                .insert("alpha", 2i32)
                .build(),
        )
        .data(Binary::from(br#"{"lock":true}"#.to_vec()))
        .build()
}

/// The feedback records of the next feedback message on `receiver`, accepted.
async fn next_feedback(receiver: &mut fe2o3_amqp::Receiver) -> Vec<Value> {
    let delivery =
        tokio::time::timeout(WAIT, receiver.recv::<Body<Value>>()).await.expect("feedback in time").expect("feedback");
    receiver.accept(&delivery).await.expect("accept");
    let message = delivery.message();
    let properties = message.properties.as_ref().expect("properties");
    assert_eq!(
        properties.content_type.as_ref().map(|c| c.as_str()),
        Some("application/vnd.microsoft.iothub.feedback.json")
    );
    let Body::Data(sections) = &message.body else { panic!("feedback is a data section: {:?}", message.body) };
    let bytes: Vec<u8> = sections.iter().flat_map(|d| d.0.iter().copied()).collect();
    serde_json::from_slice(&bytes).expect("a JSON array")
}

#[tokio::test]
async fn a_message_reaches_an_mqtt_device_with_its_properties_and_its_feedback_comes_back() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut device = connect_device(&hub, "d1").await;
    subscribe(&mut device, &[&C2D("d1")], QoS::AtLeastOnce).await;
    let mut service = amqp::open(&hub, None).await;
    service.authorize(&hub).await;
    let mut feedback = service.feedback().await;
    let mut sender = service.devicebound().await;
    assert!(matches!(send(&mut sender, rich_message("d1", "full")).await, Outcome::Accepted(_)));

    let publish = next_publish(&mut device).await;
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert_eq!(&publish.payload[..], br#"{"lock":true}"#);
    let bag = publish.topic.strip_prefix("devices/d1/messages/devicebound/").expect("the device's own topic");
    assert!(!bag.contains('/'), "the bag is one topic level: {bag}");
    let (system, application) = iothub_proto::property_bag::decode(bag);
    assert_eq!(system["messageId"], "msg-1");
    assert_eq!(system["correlationId"], "corr/1");
    assert_eq!(system["to"], "/devices/d1/messages/devicebound");
    assert_eq!((system["contentType"].as_str(), system["contentEncoding"].as_str()), ("application/json", "utf-8"));
    assert_eq!(
        (application["iothub-ack"].as_str(), application["zeta"].as_str(), application["alpha"].as_str()),
        ("full", "z 1", "2")
    );
    let twin: Value = hub.get_json("/twins/d1").await;
    assert_eq!(twin["cloudToDeviceMessageCount"], 1, "held by the device until it acknowledges");

    device.send(Packet::PubAck(PubAck::new(publish.pkid))).await.expect("PUBACK");
    let records = next_feedback(&mut feedback).await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!((record["originalMessageId"].as_str(), record["statusCode"].as_str()), (Some("msg-1"), Some("Success")));
    assert_eq!(record["deviceId"], "d1");
    let generation: Value = hub.get_json("/devices/d1").await;
    assert_eq!(record["deviceGenerationId"], generation["generationId"]);
    let device_doc: Value = hub.get_json("/devices/d1").await;
    assert_eq!(device_doc["cloudToDeviceMessageCount"], 0);
    service.close().await;
}

#[tokio::test]
async fn the_hub_refuses_what_it_cannot_queue_with_the_conditions_the_sdks_map() {
    let hub = start().await;
    hub.create_device("quiet").await;
    let mut service = amqp::open(&hub, None).await;
    service.authorize(&hub).await;
    let mut sender = service.devicebound().await;
    let refused = send(&mut sender, message_to("nobody", b"x").build()).await;
    assert_eq!(rejected_with(&refused), Some(ErrorCondition::AmqpError(AmqpError::NotFound)), "unknown device");
    for i in 0..50 {
        let outcome = send(&mut sender, message_to("quiet", format!("m{i}").as_bytes()).build()).await;
        assert!(matches!(outcome, Outcome::Accepted(_)), "message {i}: {outcome:?}");
    }
    let full = send(&mut sender, message_to("quiet", b"one too many").build()).await;
    assert_eq!(rejected_with(&full), Some(ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded)));
    let device: Value = hub.get_json("/devices/quiet").await;
    assert_eq!(device["cloudToDeviceMessageCount"], 50);

    hub.create_device("roomy").await;
    let big = send(&mut sender, message_to("roomy", &vec![b'x'; 64 * 1024 + 1]).build()).await;
    assert_eq!(rejected_with(&big), Some(ErrorCondition::LinkError(LinkError::MessageSizeExceeded)));
    let untargeted =
        Message::builder().properties(Properties::builder().build()).data(Binary::from(b"x".to_vec())).build();
    let untargeted = send(&mut sender, untargeted).await;
    assert_eq!(rejected_with(&untargeted), Some(ErrorCondition::AmqpError(AmqpError::InvalidField)), "no 'to'");
    let bad_ack = message_to("roomy", b"x")
        .application_properties(ApplicationProperties::builder().insert("iothub-ack", "sometimes").build())
        .build();
    assert_eq!(
        rejected_with(&send(&mut sender, bad_ack).await),
        Some(ErrorCondition::AmqpError(AmqpError::InvalidField))
    );
    assert!(matches!(send(&mut sender, message_to("roomy", b"still works").build()).await, Outcome::Accepted(_)));

    let purged = hub.request(Method::DELETE, "/devices/quiet/commands").send().await.expect("purge");
    assert_eq!(purged.status(), StatusCode::OK);
    let purged: Value = purged.json().await.expect("json");
    assert_eq!((purged["totalMessagesPurged"].as_u64(), purged["deviceId"].as_str()), (Some(50), Some("quiet")));
    let device: Value = hub.get_json("/devices/quiet").await;
    assert_eq!(device["cloudToDeviceMessageCount"], 0);
    service.close().await;
}

#[tokio::test]
async fn links_need_a_valid_token_with_service_connect_and_end_when_it_expires() {
    let hub = start().await;
    hub.create_device("d1").await;

    // No token: the link is detached with unauthorized-access.
    let mut anonymous = amqp::open(&hub, None).await;
    let mut sender = anonymous.devicebound().await;
    let refused = sender.send(message_to("d1", b"x").build()).await;
    assert!(refused.is_err(), "a link without a claim is closed: {refused:?}");

    // A token signed with the wrong key, or for another hub, is 401.
    let mut client = amqp::open(&hub, None).await;
    let forged =
        iothub_proto::generate_token("localhost", &base64_key(), Some("iothubowner"), unix_now() + 600).expect("token");
    assert_eq!(client.put_token(&forged, "localhost").await, 401);
    assert_eq!(client.put_token(&token_for(&hub, "iothubowner", "elsewhere", 600), "localhost").await, 401);
    // A policy without ServiceConnect: the token is good, but it opens nothing here.
    assert_eq!(client.put_token(&hub.policy_token("registryRead"), "localhost").await, 200);
    let mut sender = client.devicebound().await;
    assert!(sender.send(message_to("d1", b"x").build()).await.is_err(), "registryRead cannot send messages");

    // A token that expires ends the link; renewed in time, the link lives on.
    let mut client = amqp::open(&hub, None).await;
    assert_eq!(client.put_token(&token_for(&hub, "service", "localhost", 2), "localhost").await, 200);
    let mut sender = client.devicebound().await;
    assert!(matches!(send(&mut sender, message_to("d1", b"in time").build()).await, Outcome::Accepted(_)));
    assert_eq!(client.put_token(&token_for(&hub, "service", "localhost", 600), "localhost").await, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(matches!(send(&mut sender, message_to("d1", b"renewed").build()).await, Outcome::Accepted(_)));

    let mut short = amqp::open(&hub, None).await;
    assert_eq!(short.put_token(&token_for(&hub, "service", "localhost", 2), "localhost").await, 200);
    let mut sender = short.devicebound().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(sender.send(message_to("d1", b"too late").build()).await.is_err(), "the expired claim ended the link");
}

fn base64_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

#[tokio::test]
async fn sasl_plain_with_a_token_and_anonymous_then_cbs_both_work() {
    let hub = start().await;
    hub.create_device("d1").await;
    let plain = fe2o3_amqp::sasl_profile::SaslProfile::Plain {
        username: "service@sas.root.localhost".into(),
        password: token_for(&hub, "service", "localhost", 600),
    };
    let mut client = amqp::open(&hub, Some(plain)).await;
    let mut sender = client.devicebound().await;
    assert!(matches!(send(&mut sender, message_to("d1", b"plain").build()).await, Outcome::Accepted(_)));
    let mut anonymous = amqp::open(&hub, Some(fe2o3_amqp::sasl_profile::SaslProfile::Anonymous)).await;
    anonymous.authorize(&hub).await;
    let mut sender = anonymous.devicebound().await;
    assert!(matches!(send(&mut sender, message_to("d1", b"anonymous").build()).await, Outcome::Accepted(_)));
}

/// Pulls over HTTPS as the Node device SDK does.
async fn pull(hub: &TestHub, device: &str) -> reqwest::Response {
    let token = common::mqtt::device_token(hub, device, device, unix_now() + 600);
    hub.request_as(&token, Method::GET, &format!("/devices/{device}/messages/devicebound")).send().await.expect("send")
}

fn lock_of(response: &reqwest::Response) -> String {
    let etag = response.headers()["etag"].to_str().expect("ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "the lock token is quoted: {etag}");
    etag.trim_matches('"').to_owned()
}

#[tokio::test]
async fn https_devices_pull_complete_reject_and_abandon_and_feedback_is_read_over_https() {
    let hub = start().await;
    hub.create_device("h1").await;
    hub.create_device("other").await;
    let mut service = amqp::open(&hub, None).await;
    service.authorize(&hub).await;
    let mut sender = service.devicebound().await;
    for (id, ack) in [("first", "full"), ("second", "negative"), ("third", "none")] {
        let message = message_to("h1", id.as_bytes())
            .properties(Properties::builder().to("/devices/h1/messages/devicebound").message_id(id.to_owned()).build())
            .application_properties(ApplicationProperties::builder().insert("iothub-ack", ack).insert("n", id).build())
            .build();
        assert!(matches!(send(&mut sender, message).await, Outcome::Accepted(_)));
    }
    let device_token = common::mqtt::device_token(&hub, "h1", "h1", unix_now() + 600);
    let settle = |method: Method, path: String| hub.request_as(&device_token, method, &path).send();

    let first = pull(&hub, "h1").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["iothub-messageid"], "first");
    assert_eq!(first.headers()["iothub-app-n"], "first");
    let lock = lock_of(&first);
    assert_eq!(first.bytes().await.expect("body").as_ref(), b"first");
    assert_eq!(
        settle(Method::DELETE, format!("/devices/h1/messages/devicebound/{lock}")).await.expect("complete").status(),
        StatusCode::NO_CONTENT
    );
    let again = settle(Method::DELETE, format!("/devices/h1/messages/devicebound/{lock}")).await.expect("again");
    assert_eq!(again.status(), StatusCode::PRECONDITION_FAILED, "a lock is used once");

    let second = pull(&hub, "h1").await;
    let lock = lock_of(&second);
    let rejected =
        settle(Method::DELETE, format!("/devices/h1/messages/devicebound/{lock}?reject")).await.expect("reject");
    assert_eq!(rejected.status(), StatusCode::NO_CONTENT);

    let third = pull(&hub, "h1").await;
    assert_eq!(third.headers()["iothub-deliverycount"], "0");
    let lock = lock_of(&third);
    let abandoned =
        settle(Method::POST, format!("/devices/h1/messages/devicebound/{lock}/abandon")).await.expect("abandon");
    assert_eq!(abandoned.status(), StatusCode::NO_CONTENT);
    let third_again = pull(&hub, "h1").await;
    assert_eq!(
        (
            third_again.headers()["iothub-messageid"].to_str().ok(),
            third_again.headers()["iothub-deliverycount"].to_str().ok()
        ),
        (Some("third"), Some("1"))
    );
    let lock = lock_of(&third_again);
    settle(Method::DELETE, format!("/devices/h1/messages/devicebound/{lock}")).await.expect("complete");
    assert_eq!(pull(&hub, "h1").await.status(), StatusCode::NO_CONTENT, "nothing waits");

    // Another device's token opens none of h1's paths.
    let foreign = common::mqtt::device_token(&hub, "other", "other", unix_now() + 600);
    let response =
        hub.request_as(&foreign, Method::GET, "/devices/h1/messages/devicebound").send().await.expect("send");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Feedback: Success for the completed "first" (full), Rejected for "second" (negative); nothing for "third".
    let feedback = hub.request(Method::GET, "/messages/serviceBound/feedback").send().await.expect("feedback");
    assert_eq!(feedback.status(), StatusCode::OK);
    let lock = lock_of(&feedback);
    let records: Vec<Value> = feedback.json().await.expect("json");
    let outcomes: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["originalMessageId"].as_str().unwrap_or(""), r["statusCode"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(outcomes, [("first", "Success"), ("second", "Rejected")]);
    let abandoned = hub
        .request(Method::POST, &format!("/messages/serviceBound/feedback/{lock}/abandon"))
        .send()
        .await
        .expect("abandon");
    assert_eq!(abandoned.status(), StatusCode::NO_CONTENT);
    let again = hub.request(Method::GET, "/messages/serviceBound/feedback").send().await.expect("feedback");
    let lock = lock_of(&again);
    let completed =
        hub.request(Method::DELETE, &format!("/messages/serviceBound/feedback/{lock}")).send().await.expect("complete");
    assert_eq!(completed.status(), StatusCode::NO_CONTENT);
    let none = hub.request(Method::GET, "/messages/serviceBound/feedback").send().await.expect("feedback");
    assert_eq!(none.status(), StatusCode::NO_CONTENT);
    service.close().await;
}

#[tokio::test]
async fn expired_messages_leave_the_queue_with_feedback() {
    let hub = start().await;
    hub.create_device("slow").await;
    let mut service = amqp::open(&hub, None).await;
    service.authorize(&hub).await;
    let mut feedback = service.feedback().await;
    let mut sender = service.devicebound().await;
    let expiry = AmqpTimestamp::from_milliseconds((unix_now() as i64 + 1) * 1000);
    let message = message_to("slow", b"soon gone")
        .properties(
            Properties::builder()
                .to("/devices/slow/messages/devicebound")
                .message_id(String::from("brief"))
                .absolute_expiry_time(expiry)
                .build(),
        )
        .application_properties(ApplicationProperties::builder().insert("iothub-ack", "negative").build())
        .build();
    assert!(matches!(send(&mut sender, message).await, Outcome::Accepted(_)));
    let records = next_feedback(&mut feedback).await;
    assert_eq!(
        (records[0]["originalMessageId"].as_str(), records[0]["statusCode"].as_str()),
        (Some("brief"), Some("Expired"))
    );
    let device: Value = hub.get_json("/devices/slow").await;
    assert_eq!(device["cloudToDeviceMessageCount"], 0);
}

#[tokio::test]
async fn a_message_queued_before_a_restart_is_delivered_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let builder = || iothub_emulator::Emulator::builder().data_dir(dir.path());
    let hub = start_with(builder()).await;
    hub.create_device("later").await;
    let mut service = amqp::open(&hub, None).await;
    service.authorize(&hub).await;
    let mut sender = service.devicebound().await;
    assert!(matches!(send(&mut sender, rich_message("later", "none")).await, Outcome::Accepted(_)));
    service.close().await;
    hub.emulator.shutdown().await;

    let hub = start_with(builder()).await;
    let mut device = connect_device(&hub, "later").await;
    subscribe(&mut device, &[&C2D("later")], QoS::AtLeastOnce).await;
    let publish = next_publish(&mut device).await;
    assert_eq!(&publish.payload[..], br#"{"lock":true}"#, "the accepted message survived the restart");
    // Not acknowledged: the next connection gets it again.
    drop(device);
    let mut device = connect_device(&hub, "later").await;
    let again = next_publish(&mut device).await;
    assert_eq!(again.payload, publish.payload, "redelivered to the resumed session");
    device.send(Packet::PubAck(PubAck::new(again.pkid))).await.expect("PUBACK");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let device_doc: Value = hub.get_json("/devices/later").await;
    assert_eq!(device_doc["cloudToDeviceMessageCount"], 0);
    let _ = next;
}
