//! Cloud-to-device messages through the device client, against the in-process emulator over real TLS: the
//! service side is the hub's own API (`Hub::send_message`, the feedback queue), so these tests need no AMQP
//! client.
//!
//! "The client holds a message but the application has not taken it" is made observable without timing: the
//! hub writes a device's messages and method calls to its connection in the order they were queued, and the
//! client reads its connection in order, so once a method call queued after a message has been answered, the
//! client has received that message.

mod common;

use std::time::Duration;

use common::{WAIT, emulator_with, options};

use futures_util::StreamExt as _;
use iothub_device::{Ack, CloudToDeviceMessage, DeviceClient, MethodResponse};
use iothub_emulator::RunningEmulator;
use iothub_emulator::domain::c2d::{FeedbackStatus, Message};
use iothub_emulator::wire::methods::parse_call_value;
use serde_json::{Value, json};

/// A client for `id` that answers `ping`.
async fn connect(emulator: &RunningEmulator, id: &str) -> DeviceClient {
    let cs = emulator.device_connection_string(id).expect("connection string");
    DeviceClient::builder(&cs)
        .expect("builder")
        .options(options(emulator))
        .on_method("ping", |_| async { MethodResponse::ok(json!("pong")) })
        .connect()
        .await
        .expect("connects")
}

/// Calls `ping` on the device and waits for its answer: everything the hub queued for the device before has
/// then been read by the client.
async fn ping(emulator: &RunningEmulator, id: &str) {
    let call = parse_call_value(
        &json!({"methodName": "ping", "responseTimeoutInSeconds": 5, "connectTimeoutInSeconds": 5, "payload": null}),
    )
    .expect("call");
    let answer = emulator.hub().invoke_method(id, &call).await.expect("answered");
    assert_eq!((answer.status, answer.payload), (200, json!("pong")));
}

/// A message with id `id` and body `id`, asking for positive feedback.
fn message(id: &str) -> Message {
    Message { message_id: Some(id.into()), ack: Ack::Positive, body: id.as_bytes().to_vec(), ..Message::default() }
}

async fn send(emulator: &RunningEmulator, device_id: &str, message: Message) {
    emulator.hub().send_message(device_id, message).await.expect("queued");
}

async fn next(messages: &mut iothub_device::CloudToDeviceMessages) -> CloudToDeviceMessage {
    tokio::time::timeout(WAIT, messages.recv()).await.expect("a message in time").expect("a message")
}

fn ids(messages: &[CloudToDeviceMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.message_id.as_deref().unwrap_or_default()).collect()
}

/// Waits for `count` feedback records and completes them: (original message id, status), in order.
async fn feedback(emulator: &RunningEmulator, count: usize) -> Vec<(String, FeedbackStatus)> {
    let hub = emulator.hub();
    let mut records = Vec::new();
    while records.len() < count {
        tokio::time::timeout(WAIT, hub.feedback_waiting()).await.expect("feedback in time");
        let batch = hub.receive_feedback().expect("a feedback batch");
        hub.complete_feedback(&batch.token).await.expect("feedback completed");
        records.extend(batch.records.iter().map(|r| (r.original_message_id.clone(), r.status)));
    }
    records
}

fn queued(emulator: &RunningEmulator, device_id: &str) -> usize {
    emulator.hub().liveness(device_id).queued_messages
}

#[tokio::test]
async fn properties_and_body_arrive_as_sent_and_a_message_completes_only_once_taken() {
    let emulator = emulator_with(&["c1"]).await;
    let client = connect(&emulator, "c1").await;
    let expiry = emulator.hub().clock().now().checked_add(Duration::from_secs(3600)).expect("time");
    let rich = Message {
        message_id: Some("msg 1".into()),
        correlation_id: Some("corr/1".into()),
        user_id: Some("backend".into()),
        content_type: Some("application/json".into()),
        content_encoding: Some("utf-8".into()),
        expiry: Some(expiry),
        ack: Ack::Positive,
        properties: vec![
            ("zeta".into(), "z 1".into()),
            ("alpha".into(), "a&b=c".into()),
            ("ünï".into(), "ø".into()),
            ("$weird".into(), "%41".into()),
        ],
        body: br#"{"lock":true}"#.to_vec(),
    };
    // Queued before the device listens; both wait for it.
    send(&emulator, "c1", rich).await;
    send(&emulator, "c1", message("second")).await;
    assert_eq!(queued(&emulator, "c1"), 2);

    let mut messages = client.messages();
    let first = next(&mut messages).await;
    assert_eq!(first.body, br#"{"lock":true}"#);
    assert_eq!(first.json::<Value>().expect("json"), json!({"lock": true}));
    assert_eq!(first.message_id.as_deref(), Some("msg 1"));
    assert_eq!(first.correlation_id.as_deref(), Some("corr/1"));
    assert_eq!(first.user_id.as_deref(), Some("backend"));
    assert_eq!(first.to.as_deref(), Some("/devices/c1/messages/devicebound"));
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert_eq!(first.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(first.expiry, Some(iothub_emulator::clock::format_time(expiry)));
    assert_eq!(first.ack, Ack::Positive);
    let expected = [("zeta", "z 1"), ("alpha", "a&b=c"), ("ünï", "ø"), ("$weird", "%41")];
    assert_eq!(first.properties, expected.map(|(k, v)| (k.to_owned(), v.to_owned())), "in the sender's order");
    assert_eq!(feedback(&emulator, 1).await, [("msg 1".to_owned(), FeedbackStatus::Success)]);

    // The second message reached the client (the hub pushed both at once, and a method call queued after it
    // has been answered), but nobody took it: it is not completed.
    ping(&emulator, "c1").await;
    assert_eq!(queued(&emulator, "c1"), 1, "held by the client, not acknowledged");
    assert!(emulator.hub().receive_feedback().is_none(), "no feedback before the message is taken");
    let second = messages.next().await.expect("the stream gives it");
    assert_eq!((second.message_id.as_deref(), &second.body[..]), (Some("second"), &b"second"[..]));
    assert!(second.properties.is_empty(), "iothub-ack and system properties are not application properties");
    assert_eq!(feedback(&emulator, 1).await, [("second".to_owned(), FeedbackStatus::Success)]);
    assert_eq!(queued(&emulator, "c1"), 0);
    client.close().await;
}

#[tokio::test]
async fn a_message_nobody_took_is_delivered_again_on_the_next_connection() {
    let emulator = emulator_with(&["c2"]).await;
    let first_client = connect(&emulator, "c2").await;
    let mut messages = first_client.messages();
    send(&emulator, "c2", message("probe")).await;
    assert_eq!(next(&mut messages).await.message_id.as_deref(), Some("probe"), "listening");
    assert_eq!(feedback(&emulator, 1).await, [("probe".to_owned(), FeedbackStatus::Success)]);

    send(&emulator, "c2", message("untaken")).await;
    ping(&emulator, "c2").await;
    // The client received it; the application never takes it before the client goes away.
    drop(messages);
    first_client.close().await;
    assert_eq!(queued(&emulator, "c2"), 1, "not completed by a client that never handed it over");

    // The hub kept the session (and its subscription): a new client gets the message even before it asks for
    // messages, and hands it over when it does.
    let second_client = connect(&emulator, "c2").await;
    let mut messages = second_client.messages();
    let again = next(&mut messages).await;
    assert_eq!((again.message_id.as_deref(), &again.body[..]), (Some("untaken"), &b"untaken"[..]));
    assert_eq!(feedback(&emulator, 1).await, [("untaken".to_owned(), FeedbackStatus::Success)]);
    assert_eq!(queued(&emulator, "c2"), 0);
    second_client.close().await;
}

#[tokio::test]
async fn messages_queued_while_the_device_was_away_arrive_in_order_when_it_is_back() {
    let emulator = emulator_with(&["c3"]).await;
    // Queued before the device ever connected: no session, so they come once it subscribes.
    for id in ["before-1", "before-2"] {
        send(&emulator, "c3", message(id)).await;
    }
    let client = connect(&emulator, "c3").await;
    let mut messages = client.messages();
    let got = [next(&mut messages).await, next(&mut messages).await];
    assert_eq!(ids(&got), ["before-1", "before-2"]);
    assert_eq!(feedback(&emulator, 2).await.len(), 2);
    client.close().await;

    // Queued while the device was offline, with its session kept.
    for id in ["away-1", "away-2", "away-3"] {
        send(&emulator, "c3", message(id)).await;
    }
    assert_eq!(queued(&emulator, "c3"), 3);
    let client = connect(&emulator, "c3").await;
    let mut messages = client.messages();
    let got = [next(&mut messages).await, next(&mut messages).await, next(&mut messages).await];
    assert_eq!(ids(&got), ["away-1", "away-2", "away-3"]);
    let records = feedback(&emulator, 3).await;
    assert!(records.iter().all(|(_, status)| *status == FeedbackStatus::Success), "{records:?}");

    // The hub drops the connection; the client reconnects (subscribing again) and the listener goes on.
    assert!(emulator.hub().drop_connection("c3"));
    for id in ["dropped-1", "dropped-2"] {
        send(&emulator, "c3", message(id)).await;
    }
    let got = [next(&mut messages).await, next(&mut messages).await];
    assert_eq!(ids(&got), ["dropped-1", "dropped-2"]);
    assert_eq!(feedback(&emulator, 2).await.len(), 2);
    assert_eq!(queued(&emulator, "c3"), 0);
    client.close().await;
}

#[tokio::test]
async fn one_device_never_sees_another_devices_messages() {
    let emulator = emulator_with(&["left", "right"]).await;
    let left = connect(&emulator, "left").await;
    let right = connect(&emulator, "right").await;
    let mut left_messages = left.messages();
    let mut right_messages = right.messages();
    for i in 0..3 {
        send(&emulator, "right", message(&format!("for right {i}"))).await;
    }
    send(&emulator, "left", message("for left")).await;
    let got = [next(&mut right_messages).await, next(&mut right_messages).await, next(&mut right_messages).await];
    assert_eq!(ids(&got), ["for right 0", "for right 1", "for right 2"]);
    assert!(got.iter().all(|m| m.to.as_deref() == Some("/devices/right/messages/devicebound")));
    let only = next(&mut left_messages).await;
    assert_eq!(only.message_id.as_deref(), Some("for left"), "the right device's messages never reach the left");
    assert_eq!(only.to.as_deref(), Some("/devices/left/messages/devicebound"));
    assert_eq!(feedback(&emulator, 4).await.len(), 4);
    // Nothing else was waiting for the left device: the next one it gets is the next one sent to it.
    send(&emulator, "right", message("right again")).await;
    send(&emulator, "left", message("left again")).await;
    assert_eq!(next(&mut left_messages).await.message_id.as_deref(), Some("left again"));
    assert_eq!(next(&mut right_messages).await.message_id.as_deref(), Some("right again"));
    left.close().await;
    right.close().await;
}

#[tokio::test]
async fn a_second_listener_replaces_the_first_and_gets_what_it_left() {
    let emulator = emulator_with(&["c5"]).await;
    let client = connect(&emulator, "c5").await;
    let mut first = client.messages();
    send(&emulator, "c5", message("probe")).await;
    assert_eq!(next(&mut first).await.message_id.as_deref(), Some("probe"));

    send(&emulator, "c5", message("left over")).await;
    ping(&emulator, "c5").await;
    let mut second = client.messages();
    assert!(first.recv().await.is_none(), "the replaced listener ends");
    assert!(first.next().await.is_none(), "and stays ended");
    assert_eq!(next(&mut second).await.message_id.as_deref(), Some("left over"), "held for the next listener");
    let records = feedback(&emulator, 2).await;
    assert_eq!(records.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["probe", "left over"]);
    send(&emulator, "c5", message("after")).await;
    assert_eq!(next(&mut second).await.message_id.as_deref(), Some("after"));

    let closed = tokio::spawn(async move { second.recv().await });
    client.close().await;
    assert!(closed.await.expect("listener task").is_none(), "closing the client ends its listener");
}
