//! The MQTT device endpoint's CONNECT stage over real TLS: SAS checks, CONNACK codes, presence, one
//! connection per device.

mod common;

use std::time::Duration;

use common::mqtt::{Mqtt, connect_packet, connect_with, device_token, expect_closed, tls, user_name};
use common::{TestHub, start, unix_now};
use futures_util::{SinkExt as _, StreamExt as _};
use iothub_proto::generate_token;
use reqwest::Method;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, Subscribe};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Sends CONNECT as the SDKs do (clean session 0) and returns the transport and the CONNACK code.
async fn connect(hub: &TestHub, client_id: &str, user_name: &str, password: &str) -> (Mqtt, ConnectReturnCode) {
    let (mqtt, ack) = connect_with(hub, client_id, user_name, password, false).await;
    assert!(!ack.session_present || ack.code == ConnectReturnCode::Success);
    (mqtt, ack.code)
}

async fn device_json(hub: &TestHub, id: &str) -> Value {
    hub.get_json(&format!("/devices/{id}")).await
}

#[tokio::test]
async fn a_device_connects_with_its_own_key_and_shows_as_connected() {
    let hub = start().await;
    hub.create_device("d1").await;
    let token = device_token(&hub, "d1", "d1", unix_now() + 600);
    let (mut mqtt, code) = connect(&hub, "d1", &user_name("d1"), &token).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let device = device_json(&hub, "d1").await;
    assert_eq!(device["connectionState"], "Connected");
    assert_ne!(device["connectionStateUpdatedTime"], "0001-01-01T00:00:00Z");
    let twin: Value = hub.get_json("/twins/d1").await;
    assert_eq!(twin["connectionState"], "Connected");
    let stats: Value = hub.get_json("/statistics/service").await;
    assert_eq!(stats, json!({"connectedDeviceCount": 1}));

    mqtt.send(Packet::PingReq).await.expect("ping");
    let pong = tokio::time::timeout(Duration::from_secs(5), mqtt.next()).await.expect("in time");
    assert!(matches!(pong, Some(Ok(Packet::PingResp))), "{pong:?}");

    mqtt.send(Packet::Disconnect).await.expect("disconnect");
    expect_closed(&mut mqtt).await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while hub.emulator.hub().is_connected("d1") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("presence cleared after DISCONNECT");
}

#[tokio::test]
async fn bad_credentials_get_connack_5() {
    let hub = start().await;
    hub.create_device("d1").await;
    hub.create_device("d2").await;
    hub.create_device("off").await;
    hub.request(Method::PUT, "/devices/off")
        .header("If-Match", "*")
        .json(&json!({"status":"disabled"}))
        .send()
        .await
        .expect("send");
    let later = unix_now() + 600;
    let registry_key = hub.emulator.hub().policies().get("registryRead").expect("policy").primary_key.clone();
    let cases: Vec<(&str, &str, String, String)> = vec![
        ("signed with another device's key", "d1", user_name("d1"), device_token(&hub, "d1", "d2", later)),
        ("expired", "d1", user_name("d1"), device_token(&hub, "d1", "d1", unix_now() - 1)),
        ("token for another device", "d1", user_name("d1"), device_token(&hub, "d2", "d2", later)),
        ("unknown device", "ghost", user_name("ghost"), device_token(&hub, "ghost", "d1", later)),
        ("disabled device", "off", user_name("off"), device_token(&hub, "off", "off", later)),
        ("user name for another device", "d1", user_name("d2"), device_token(&hub, "d1", "d1", later)),
        (
            "user name for another hub",
            "d1",
            "elsewhere/d1/?api-version=2021-04-12".into(),
            device_token(&hub, "d1", "d1", later),
        ),
        ("not a SAS token", "d1", user_name("d1"), "hunter2".into()),
        ("empty password", "d1", user_name("d1"), String::new()),
        (
            "policy without DeviceConnect",
            "d1",
            user_name("d1"),
            generate_token("localhost", &registry_key, Some("registryRead"), later).expect("token"),
        ),
    ];
    for (what, client_id, user, password) in cases {
        let (mut mqtt, code) = connect(&hub, client_id, &user, &password).await;
        assert_eq!(code, ConnectReturnCode::NotAuthorized, "{what}");
        expect_closed(&mut mqtt).await;
    }
    assert_eq!(hub.emulator.hub().connected_device_count(), 0);
}

#[tokio::test]
async fn a_device_connect_policy_token_is_accepted() {
    let hub = start().await;
    hub.create_device("d1").await;
    let key = hub.emulator.hub().policies().get("device").expect("policy").primary_key.clone();
    let token = generate_token("localhost/devices", &key, Some("device"), unix_now() + 600).expect("token");
    let (_mqtt, code) = connect(&hub, "d1", &user_name("d1"), &token).await;
    assert_eq!(code, ConnectReturnCode::Success);
}

#[tokio::test]
async fn a_second_connection_replaces_the_first() {
    let hub = start().await;
    hub.create_device("d1").await;
    let token = device_token(&hub, "d1", "d1", unix_now() + 600);
    let (mut first, code) = connect(&hub, "d1", &user_name("d1"), &token).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let (mut second, code) = connect(&hub, "d1", &user_name("d1"), &token).await;
    assert_eq!(code, ConnectReturnCode::Success);
    expect_closed(&mut first).await;
    second.send(Packet::PingReq).await.expect("ping");
    let pong = tokio::time::timeout(Duration::from_secs(5), second.next()).await.expect("in time");
    assert!(matches!(pong, Some(Ok(Packet::PingResp))), "the newer connection lives on: {pong:?}");
    assert!(hub.emulator.hub().is_connected("d1"));
}

#[tokio::test]
async fn disabling_or_deleting_a_device_closes_its_connection() {
    let hub = start().await;
    for id in ["d1", "d2"] {
        hub.create_device(id).await;
    }
    let (mut one, _) = connect(&hub, "d1", &user_name("d1"), &device_token(&hub, "d1", "d1", unix_now() + 600)).await;
    let (mut two, _) = connect(&hub, "d2", &user_name("d2"), &device_token(&hub, "d2", "d2", unix_now() + 600)).await;
    hub.request(Method::PUT, "/devices/d1")
        .header("If-Match", "*")
        .json(&json!({"status":"disabled"}))
        .send()
        .await
        .expect("send");
    expect_closed(&mut one).await;
    hub.request(Method::DELETE, "/devices/d2").header("If-Match", "*").send().await.expect("send");
    expect_closed(&mut two).await;
}

#[tokio::test]
async fn foreign_topics_are_refused() {
    let hub = start().await;
    hub.create_device("d1").await;
    let token = device_token(&hub, "d1", "d1", unix_now() + 600);
    let (mut mqtt, _) = connect(&hub, "d1", &user_name("d1"), &token).await;
    let mut subscribe = Subscribe::new("some/other/topic", QoS::AtLeastOnce);
    subscribe.pkid = 1;
    mqtt.send(Packet::Subscribe(subscribe)).await.expect("subscribe");
    let reply = tokio::time::timeout(Duration::from_secs(5), mqtt.next()).await.expect("in time");
    match reply {
        Some(Ok(Packet::SubAck(ack))) => {
            assert_eq!(ack.return_codes, vec![rumqttc::mqttbytes::v4::SubscribeReasonCode::Failure]);
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let publish = rumqttc::mqttbytes::v4::Publish::new("devices/d2/messages/events/", QoS::AtMostOnce, b"x".to_vec());
    mqtt.send(Packet::Publish(publish)).await.expect("publish");
    expect_closed(&mut mqtt).await;
}

#[tokio::test]
async fn mqtt_3_1_gets_connack_1_and_garbage_is_closed() {
    let hub = start().await;
    // A v3.1 CONNECT: protocol name "MQIsdp", level 3, clean session, keep-alive 60, client id "d".
    let mut stream = tls(&hub).await;
    let v31 = [0x10, 0x0f, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3c, 0x00, 0x01, b'd'];
    stream.write_all(&v31).await.expect("write");
    let mut ack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut ack)).await.expect("in time").expect("read");
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x01], "CONNACK: unacceptable protocol version");

    let mut stream = tls(&hub).await;
    stream.write_all(&[0x10, 0xff, 0xff, 0xff, 0x7f]).await.expect("write");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "an oversized packet header closes the connection: {read:?}");
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_one_and_a_half_keep_alives() {
    let hub = start().await;
    hub.create_device("quiet").await;
    let mut packet = Connect::new("quiet");
    packet.keep_alive = 1;
    packet.set_login(user_name("quiet"), device_token(&hub, "quiet", "quiet", unix_now() + 600));
    let (mut mqtt, ack) = connect_packet(&hub, packet).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let started = std::time::Instant::now();
    // Pings keep it alive past the deadline...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        mqtt.send(Packet::PingReq).await.expect("ping");
        let pong = tokio::time::timeout(Duration::from_secs(5), mqtt.next()).await.expect("in time");
        assert!(matches!(pong, Some(Ok(Packet::PingResp))), "{pong:?}");
    }
    assert!(started.elapsed() > Duration::from_millis(1500));
    // ...and silence ends it.
    let quiet_from = std::time::Instant::now();
    expect_closed(&mut mqtt).await;
    let waited = quiet_from.elapsed();
    assert!(waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4), "closed after {waited:?}");
    assert!(!hub.emulator.hub().is_connected("quiet"));
}

#[tokio::test]
async fn the_connection_ends_when_its_token_expires() {
    let hub = start().await;
    hub.create_device("brief").await;
    let expiry = unix_now() + 2;
    let (mut mqtt, code) =
        connect(&hub, "brief", &user_name("brief"), &device_token(&hub, "brief", "brief", expiry)).await;
    assert_eq!(code, ConnectReturnCode::Success);
    expect_closed(&mut mqtt).await;
    assert!(unix_now() >= expiry, "not closed before the token expired");
}

#[tokio::test]
async fn connections_past_the_ceiling_get_server_unavailable() {
    let hub = common::start_with(iothub_emulator::Emulator::builder().max_connections(1)).await;
    assert_eq!(hub.emulator.max_connections(), 1);
    assert!(hub.emulator.open_file_limit() >= 1024, "the open-file limit was read (and raised to the hard limit)");
    let registry = hub.emulator.hub();
    for id in ["a", "b"] {
        registry.put_device(id, &iothub_emulator::domain::registry::DeviceSpec::default(), None).await.expect("device");
    }
    let (mut first, code) = connect(&hub, "a", &user_name("a"), &device_token(&hub, "a", "a", unix_now() + 600)).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let token_b = device_token(&hub, "b", "b", unix_now() + 600);
    let (mut refused, code) = connect(&hub, "b", &user_name("b"), &token_b).await;
    assert_eq!(code, ConnectReturnCode::ServiceUnavailable, "no room: CONNACK 3");
    expect_closed(&mut refused).await;
    first.send(Packet::Disconnect).await.expect("disconnect");
    expect_closed(&mut first).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_second, code) = connect(&hub, "b", &user_name("b"), &token_b).await;
    assert_eq!(code, ConnectReturnCode::Success, "a freed place admits the next device");
}
