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

/// The .NET SDK takes a cloud-to-device message's lock token from its delivery tag (`new Guid(tag)`, 16 bytes) and
/// announces 64 KiB frames; the hub's frames stay within what a peer announces.
#[tokio::test]
async fn cloud_to_device_tags_are_16_bytes_unique_per_link_and_frames_fit_the_peers_size() {
    let hub = start().await;
    hub.create_device("d1").await;
    let body = "x".repeat(5_000);
    let mut tags = Vec::new();
    for round in 0..2 {
        let mut amqp = common::amqp::open_taking_frames_of(&hub, None, Some(1_024)).await.expect("open");
        let token = device_token(&hub, "d1", "d1", unix_now() + 600);
        assert_eq!(amqp.put_token(&token, &audience("d1")).await, 200);
        let mut receiver = amqp.receiver_from("c2d", "/devices/d1/messages/devicebound").await;
        send_c2d(&hub, "d1", &format!("{body}{round}")).await;
        let delivery =
            tokio::time::timeout(WAIT, receiver.recv::<Body<Value>>()).await.expect("in time").expect("whole message");
        assert!(
            matches!(&delivery.message().body, Body::Data(d) if d.iter().map(|s| s.0.len()).sum::<usize>() == 5_001),
            "a message over several 1 KiB frames arrives whole"
        );
        let tag = delivery.delivery_tag().to_vec();
        assert_eq!(tag.len(), 16, "a GUID's worth");
        receiver.accept(&delivery).await.expect("settled by the delivery the tag names");
        tags.push(tag);
        amqp.close().await;
    }
    assert_ne!(tags[0], tags[1], "a lock token from an earlier link names nothing on the next");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stats: Json = hub.get_json("/devices/d1").await;
    assert_eq!(stats["cloudToDeviceMessageCount"], 0, "both completed");
}

#[tokio::test]
async fn several_devices_share_a_connection_each_confined_to_its_own_addresses() {
    let hub = start().await;
    hub.create_device("a").await;
    hub.create_device("b").await;
    hub.create_device("c").await;
    let mut amqp = device_connection(&hub, "a").await;
    // b puts its token as .NET's pooled device clients do: type `azure-devices.net:sastoken`, audience
    // `<host>/devices/<id>`.
    let token_b = device_token(&hub, "b", "b", unix_now() + 600);
    assert_eq!(amqp.put_token_of_type(&token_b, &audience("b"), "azure-devices.net:sastoken").await, 200);
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

/// A device's links live as long as its token: renewed on `$cbs` in time (as the SDKs do before expiry) they go
/// on; left to expire, they are detached with `amqp:unauthorized-access` and the device is disconnected.
#[tokio::test]
async fn device_links_end_when_their_token_expires_unless_it_is_renewed() {
    let hub = start().await;
    hub.create_device("renewing").await;
    hub.create_device("lapsing").await;
    let short = |id: &str| device_token(&hub, id, id, unix_now() + 2);

    let mut renewing = common::amqp::open(&hub, None).await;
    assert_eq!(renewing.put_token(&short("renewing"), &audience("renewing")).await, 200);
    let mut events = renewing.sender_to("events", "/devices/renewing/messages/events").await;
    let mut lapsing = common::amqp::open(&hub, None).await;
    assert_eq!(lapsing.put_token(&short("lapsing"), &audience("lapsing")).await, 200);
    let mut c2d = lapsing.receiver_from("c2d", "/devices/lapsing/messages/devicebound").await;
    let mut lapsing_events = lapsing.sender_to("events", "/devices/lapsing/messages/events").await;
    assert!(matches!(send(&mut lapsing_events, telemetry("{}")).await, Outcome::Accepted(_)));
    assert!(hub.emulator.hub().is_connected("lapsing"));

    let renewed = device_token(&hub, "renewing", "renewing", unix_now() + 600);
    assert_eq!(renewing.put_token(&renewed, &audience("renewing")).await, 200);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    assert!(matches!(send(&mut events, telemetry("{}")).await, Outcome::Accepted(_)), "renewed in time");
    assert_eq!(
        receiver_refusal(&mut c2d).await,
        Some(ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess)),
        "the lapsed token's receiver is detached, saying why"
    );
    assert!(lapsing_events.send(telemetry("late")).await.is_err(), "and its sender too");
    assert!(!hub.emulator.hub().is_connected("lapsing"), "a device without links is disconnected");
    assert!(hub.emulator.hub().is_connected("renewing"));
    renewing.close().await;
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

fn annotations_of(message: &Message<Body<Value>>) -> std::collections::HashMap<String, Value> {
    message
        .message_annotations
        .iter()
        .flat_map(|a| a.iter())
        .filter_map(|(k, v)| match k {
            fe2o3_amqp::types::messaging::annotations::OwnedKey::Symbol(s) => Some((s.as_str().to_owned(), v.clone())),
            _ => None,
        })
        .collect()
}

fn data_of(message: &Message<Body<Value>>) -> Vec<u8> {
    match &message.body {
        Body::Data(sections) => sections.iter().flat_map(|s| s.0.iter().copied()).collect(),
        other => panic!("expected data, got {other:?}"),
    }
}

async fn next_message(receiver: &mut fe2o3_amqp::Receiver) -> Message<Body<Value>> {
    let delivery = tokio::time::timeout(WAIT, receiver.recv::<Body<Value>>()).await.expect("in time").expect("message");
    receiver.accept(&delivery).await.expect("accept");
    delivery.into_message()
}

#[tokio::test]
async fn direct_methods_go_out_with_their_name_and_come_back_with_the_status() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut amqp = device_connection(&hub, "d1").await;
    let mut requests = amqp.receiver_from("methods-in", "/devices/d1/methods/devicebound").await;
    let mut answers = amqp.sender_to("methods-out", "/devices/d1/methods/devicebound").await;
    let body = json!({"methodName":"lockDoor","payload":{"door":"front"},"responseTimeoutInSeconds":10,"connectTimeoutInSeconds":5});
    let call = hub.request(Method::POST, "/twins/d1/methods").json(&body);
    let call = tokio::spawn(async move { call.send().await.expect("send") });
    let request = next_message(&mut requests).await;
    let name = request.application_properties.as_ref().and_then(|p| p.get("IoThub-methodname").cloned());
    assert_eq!(name, Some(SimpleValue::String("lockDoor".into())));
    let correlation = request.properties.as_ref().and_then(|p| p.correlation_id.clone()).expect("correlation-id");
    assert!(matches!(correlation, fe2o3_amqp::types::messaging::MessageId::Uuid(_)), "a uuid, as the hub sends");
    assert_eq!(serde_json::from_slice::<Json>(&data_of(&request)).expect("json"), json!({"door":"front"}));
    let answer = Message::builder()
        .properties(Properties::builder().correlation_id(correlation).build())
        .application_properties(ApplicationProperties::builder().insert("IoThub-status", SimpleValue::Int(200)).build())
        .data(Binary::from(br#"{"locked":true}"#.to_vec()))
        .build();
    assert!(matches!(send(&mut answers, answer).await, Outcome::Accepted(_)));
    let response = call.await.expect("task");
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Json>().await.expect("json"), json!({"status":200,"payload":{"locked":true}}));
    amqp.close().await;
}

fn twin_request(operation: &str, resource: Option<&str>, id: &str, body: &[u8]) -> Message<Data> {
    let mut annotations = fe2o3_amqp::types::messaging::MessageAnnotations::builder().insert("operation", operation);
    if let Some(resource) = resource {
        annotations = annotations.insert("resource", resource);
    }
    Message::builder()
        .properties(Properties::builder().correlation_id(String::from(id)).build())
        .message_annotations(annotations.build())
        .data(Binary::from(body.to_vec()))
        .build()
}

#[tokio::test]
async fn the_twin_link_pair_gets_patches_and_subscribes_to_desired_changes() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut amqp = device_connection(&hub, "d1").await;
    let mut answers = amqp.receiver_from("twin-in", "/devices/d1/twin").await;
    let mut requests = amqp.sender_to("twin-out", "/devices/d1/twin").await;

    send(&mut requests, twin_request("GET", None, "g1", b" ")).await;
    let got = next_message(&mut answers).await;
    assert_eq!(got.properties.as_ref().and_then(|p| p.correlation_id.clone()), Some(String::from("g1").into()));
    assert_eq!(annotations_of(&got).get("status"), Some(&Value::Int(200)));
    let twin: Json = serde_json::from_slice(&data_of(&got)).expect("json");
    assert_eq!((twin["desired"]["$version"].as_u64(), twin["reported"]["$version"].as_u64()), (Some(1), Some(1)));

    send(&mut requests, twin_request("PATCH", Some("/properties/reported"), "p1", br#"{"door":"locked"}"#)).await;
    let patched = next_message(&mut answers).await;
    let annotations = annotations_of(&patched);
    assert_eq!(
        (annotations.get("status"), annotations.get("version")),
        (Some(&Value::Int(204)), Some(&Value::Long(2)))
    );
    let service_view: Json = hub.get_json("/twins/d1").await;
    assert_eq!(service_view["properties"]["reported"]["door"], "locked");

    send(&mut requests, twin_request("PUT", Some("/notifications/twin/properties/desired"), "s1", b" ")).await;
    assert_eq!(annotations_of(&next_message(&mut answers).await).get("status"), Some(&Value::Int(200)));
    let patch = json!({"properties":{"desired":{"floor":3}}});
    assert!(hub.request(Method::PATCH, "/twins/d1").json(&patch).send().await.expect("send").status().is_success());
    let notification = next_message(&mut answers).await;
    assert_eq!(notification.properties.as_ref().and_then(|p| p.correlation_id.clone()), None);
    assert_eq!(serde_json::from_slice::<Json>(&data_of(&notification)).expect("json"), json!({"floor":3,"$version":2}));

    let fault = json!({"kind":"twinErrors","deviceId":"d1","status":429,"durationSeconds":60});
    let added = hub.http.post(hub.url("/emulator/faults")).header("Authorization", hub.owner_token()).json(&fault);
    assert_eq!(added.send().await.expect("send").status(), 201);
    send(&mut requests, twin_request("GET", None, "g2", b" ")).await;
    let throttled = next_message(&mut answers).await;
    assert_eq!(annotations_of(&throttled).get("status"), Some(&Value::Int(429)));
    let error: Json = serde_json::from_slice(&data_of(&throttled)).expect("an error body is JSON");
    assert!(error.is_object(), "{error}");

    send(&mut requests, twin_request("POST", Some("/nonsense"), "x1", b"{}")).await;
    assert_eq!(annotations_of(&next_message(&mut answers).await).get("status"), Some(&Value::Int(400)));
    amqp.close().await;
}

#[tokio::test]
async fn a_module_has_its_own_links_and_its_input_link_stays_open() {
    let hub = start().await;
    hub.create_device("d1").await;
    let module = hub.request(Method::PUT, "/devices/d1/modules/m1").json(&json!({"moduleId":"m1"})).send().await;
    let module: Json = module.expect("send").json().await.expect("json");
    let key = module["authentication"]["symmetricKey"]["primaryKey"].as_str().expect("key").to_owned();
    let token =
        iothub_proto::generate_token("localhost/devices/d1/modules/m1", &key, None, unix_now() + 600).expect("token");
    let mut amqp = open(&hub, None).await;
    assert_eq!(amqp.put_token(&token, "localhost/devices/d1/modules/m1").await, 200);
    let mut events = amqp.sender_to("module-events", "/devices/d1/modules/m1/messages/events").await;
    assert!(matches!(send(&mut events, telemetry("from m1")).await, Outcome::Accepted(_)));
    assert!(hub.emulator.hub().is_connected("d1/m1") && !hub.emulator.hub().is_connected("d1"));
    let mut inputs = amqp.receiver_from("module-inputs", "/devices/d1/modules/m1/messages/events").await;
    let nothing = tokio::time::timeout(std::time::Duration::from_millis(300), inputs.recv::<Body<Value>>()).await;
    assert!(nothing.is_err(), "the input link stays attached with nothing on it");
    let mut device_events = amqp.sender_to("device-events", "/devices/d1/messages/events").await;
    assert!(sender_refusal(&mut device_events).await.is_some(), "a module's token is not its device's");
    amqp.close().await;
}

#[tokio::test]
async fn a_disconnect_fault_detaches_the_links_and_refuses_new_ones_in_a_way_sdks_retry() {
    let hub = start().await;
    hub.create_device("d1").await;
    let mut amqp = device_connection(&hub, "d1").await;
    let mut sender = amqp.sender_to("events", "/devices/d1/messages/events").await;
    assert!(matches!(send(&mut sender, telemetry("{}")).await, Outcome::Accepted(_)));
    let fault = json!({"kind":"disconnect","deviceId":"d1","durationSeconds":2});
    let added = hub.http.post(hub.url("/emulator/faults")).header("Authorization", hub.owner_token()).json(&fault);
    assert_eq!(added.send().await.expect("send").status(), 201);
    let forced = Some(ErrorCondition::LinkError(fe2o3_amqp::types::definitions::LinkError::DetachForced));
    assert_eq!(sender_refusal(&mut sender).await, forced, "detach-forced, which the SDKs retry");
    assert!(!hub.emulator.hub().is_connected("d1"));
    let mut again = amqp.sender_to("events-2", "/devices/d1/messages/events").await;
    assert_eq!(sender_refusal(&mut again).await, forced, "refused while the fault holds");
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let mut later = amqp.sender_to("events-3", "/devices/d1/messages/events").await;
    assert!(matches!(send(&mut later, telemetry("{}")).await, Outcome::Accepted(_)), "back once it ended");
    amqp.close().await;
}
