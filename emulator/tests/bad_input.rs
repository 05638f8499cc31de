//! Hostile and malformed input on every surface, as a table: each case expects the hub's own answer (an error
//! body, a CONNACK code, a refused subscription or a closed connection) and, after it, a hub that still serves
//! everyone else.

mod common;

use std::time::Duration;

use common::mqtt::{Mqtt, WAIT, connect_device, connect_with, device_token, next, tls, tls_to, user_name};
use common::{TestHub, expect_error, start, unix_now};
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::{Method, StatusCode};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, Publish, Subscribe, SubscribeFilter, SubscribeReasonCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The hub still answers the service API and accepts a device.
async fn assert_healthy(hub: &TestHub) {
    let response = hub.request(Method::GET, "/statistics/devices").send().await.expect("send");
    assert_eq!(response.status(), StatusCode::OK, "the service API still answers");
    let mut device = connect_device(hub, "healthy").await;
    device.send(Packet::PingReq).await.expect("ping");
    assert!(matches!(next(&mut device).await, Packet::PingResp), "devices still connect and are served");
}

/// Waits until the hub closes `stream` (read returns 0 or an error), within `WAIT`.
async fn closed_by_hub<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(WAIT * 3, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

async fn mqtt_closed(mqtt: &mut Mqtt) -> bool {
    tokio::time::timeout(WAIT, async {
        loop {
            match mqtt.next().await {
                None | Some(Err(_)) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Raw bytes on a TLS connection to the MQTT port; true when the hub closed it.
async fn raw_mqtt(hub: &TestHub, bytes: &[u8]) -> bool {
    let mut stream = tls(hub).await;
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    closed_by_hub(&mut stream).await
}

fn connect_bytes(level: u8, client_id: &str, user: Option<&str>, password: Option<&str>) -> Vec<u8> {
    let mut flags = 0x02u8;
    let mut payload = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    string(&mut payload, client_id);
    if let Some(user) = user {
        flags |= 0x80;
        string(&mut payload, user);
    }
    if let Some(password) = password {
        flags |= 0x40;
        string(&mut payload, password);
    }
    let mut variable = Vec::new();
    string(&mut variable, if level == 3 { "MQIsdp" } else { "MQTT" });
    variable.extend_from_slice(&[level, flags, 0, 60]);
    let body: Vec<u8> = variable.into_iter().chain(payload).collect();
    let mut packet = vec![0x10];
    let mut length = body.len();
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if length == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

async fn connack_of(hub: &TestHub, bytes: &[u8]) -> Option<u8> {
    let mut stream = tls(hub).await;
    stream.write_all(bytes).await.ok()?;
    let mut answer = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut answer)).await.ok()?.ok()?;
    (answer[0] == 0x20).then_some(answer[3])
}

#[tokio::test]
async fn hostile_mqtt_input_gets_the_hubs_answer_and_leaves_it_healthy() {
    let hub = start().await;
    for id in ["healthy", "d1", "d2"] {
        hub.create_device(id).await;
    }
    let token = device_token(&hub, "d1", "d1", unix_now() + 600);
    let user = user_name("d1");

    // CONNECT stage.
    let cases: Vec<(&str, Vec<u8>, Option<u8>)> = vec![
        ("MQTT 3.1 (protocol level 3)", connect_bytes(3, "d1", Some(&user), Some(&token)), Some(1)),
        ("MQTT 5 (protocol level 5)", connect_bytes(5, "d1", Some(&user), Some(&token)), Some(1)),
        ("CONNECT without a password", connect_bytes(4, "d1", Some(&user), None), Some(5)),
        ("CONNECT without user name or password", connect_bytes(4, "d1", None, None), Some(5)),
        (
            "client id other than the token's device",
            connect_bytes(4, "d2", Some(&user_name("d2")), Some(&token)),
            Some(5),
        ),
        (
            "a token for another hub",
            connect_bytes(4, "d1", Some(&user), Some(&token.replace("localhost", "elsewhere"))),
            Some(5),
        ),
    ];
    for (label, bytes, expected) in cases {
        assert_eq!(connack_of(&hub, &bytes).await, expected, "{label}");
    }
    for (label, bytes) in [
        ("a truncated CONNECT", connect_bytes(4, "d1", Some(&user), Some(&token))[..12].to_vec()),
        ("a PUBLISH before CONNECT", vec![0x30, 0x05, 0x00, 0x01, b'a', b'x', b'y']),
        ("a remaining length over the packet limit", vec![0x10, 0xff, 0xff, 0xff, 0x7f]),
        ("a malformed remaining length", vec![0x10, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ("random garbage", (0..200u8).map(|i| i.wrapping_mul(37)).collect()),
    ] {
        assert!(raw_mqtt(&hub, &bytes).await, "{label}: the hub closes the connection");
    }

    // Session stage.
    let mut device = connect_device(&hub, "d1").await;
    let foreign = Publish::new("devices/d2/messages/events/", QoS::AtMostOnce, b"spoof".to_vec());
    device.send(Packet::Publish(foreign)).await.expect("publish");
    assert!(mqtt_closed(&mut device).await, "publishing to another device's topic closes the connection");

    let mut device = connect_device(&hub, "d1").await;
    let filters = ["devices/d2/messages/devicebound/#", "#", "$iothub/#", "devices/+/messages/events/#"]
        .map(|f| SubscribeFilter::new(f.to_owned(), QoS::AtLeastOnce));
    let mut subscribe = Subscribe::new_many(filters);
    subscribe.pkid = 3;
    device.send(Packet::Subscribe(subscribe)).await.expect("subscribe");
    match next(&mut device).await {
        Packet::SubAck(ack) => {
            assert!(ack.return_codes.iter().all(|c| *c == SubscribeReasonCode::Failure), "foreign filters: 0x80")
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut qos2 = Publish::new("devices/d1/messages/events/", QoS::ExactlyOnce, b"x".to_vec());
    qos2.pkid = 9;
    device.send(Packet::Publish(qos2)).await.expect("publish");
    assert!(mqtt_closed(&mut device).await, "QoS 2 closes the connection");

    let mut device = connect_device(&hub, "d1").await;
    for _ in 0..2000 {
        device.feed(Packet::PingReq).await.expect("ping");
    }
    device.flush().await.expect("flush");
    let mut answered = 0;
    while answered < 2000 {
        match tokio::time::timeout(WAIT, device.next()).await {
            Ok(Some(Ok(Packet::PingResp))) => answered += 1,
            other => panic!("a PINGREQ flood is answered, got {other:?} after {answered}"),
        }
    }

    // An invalid UTF-8 topic, a PUBLISH larger than the 256 KB message limit.
    let mut stream = tls(&hub).await;
    stream.write_all(&connect_bytes(4, "d1", Some(&user), Some(&token))).await.expect("connect");
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.expect("connack");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    stream.write_all(&[0x30, 0x06, 0x00, 0x02, 0xff, 0xfe, b'h', b'i']).await.expect("publish");
    assert!(closed_by_hub(&mut stream).await, "an invalid UTF-8 topic closes the connection");
    let mut device = connect_device(&hub, "d1").await;
    let big = Publish::new("devices/d1/messages/events/", QoS::AtMostOnce, vec![b'x'; 300 * 1024]);
    let _ = device.send(Packet::Publish(big)).await;
    assert!(mqtt_closed(&mut device).await, "a message over 256 KB closes the connection");

    assert_healthy(&hub).await;
}

#[tokio::test]
async fn connections_that_never_finish_tls_or_connect_are_dropped() {
    let hub = start().await;
    hub.create_device("healthy").await;
    // A TCP connection that never starts TLS, and a TLS connection that never sends CONNECT.
    let mut silent_tcp = tokio::net::TcpStream::connect(hub.emulator.mqtt_addr()).await.expect("tcp");
    let mut silent_tls = tls(&hub).await;
    let mut half_http = tokio::net::TcpStream::connect(hub.emulator.https_addr()).await.expect("tcp");
    let _ = half_http.write_all(&[0x16, 0x03, 0x01]).await;
    let started = std::time::Instant::now();
    let (a, b, c) =
        tokio::join!(closed_by_hub(&mut silent_tcp), closed_by_hub(&mut silent_tls), closed_by_hub(&mut half_http));
    assert!(a && b && c, "slow-loris connections are dropped");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "after the 10 s handshake limit: {waited:?}"
    );
    assert_healthy(&hub).await;
}

#[tokio::test]
async fn an_https_request_whose_headers_never_end_is_dropped() {
    let hub = start().await;
    hub.create_device("healthy").await;
    let mut trickle = tls_to(&hub, hub.emulator.https_addr()).await;
    trickle
        .write_all(b"GET /statistics/devices?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(45), async {
        let mut buffer = [0u8; 1024];
        loop {
            match trickle.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a request whose headers never end holds its connection");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(29), "after the 30 s header limit, not before: {waited:?}");
    assert_healthy(&hub).await;
}

/// A bad request: what it is, the call, its body, and the status and `ErrorCode` the hub answers.
type ServiceCase = (&'static str, Method, &'static str, Option<String>, StatusCode, &'static str);

#[tokio::test]
async fn malformed_service_requests_get_the_hubs_errors() {
    let hub = start().await;
    hub.create_device("healthy").await;
    hub.create_device("d1").await;
    let module = hub.request(Method::PUT, "/devices/d1/modules/m1").json(&json!({})).send().await.expect("send");
    assert_eq!(module.status(), StatusCode::CREATED);
    let deep = format!("{}1{}", "[".repeat(1000), "]".repeat(1000));
    let deep_twin = format!("{{\"tags\":{}1{}}}", "{\"a\":".repeat(12), "}".repeat(12));
    let wide_tags: serde_json::Map<String, Value> =
        (0..600).map(|i| (format!("key{i:04}"), json!("x".repeat(20)))).collect();
    let in_list: Vec<String> = (0..700).map(|i| format!("'d{i:04}'")).collect();
    let huge_in = format!("SELECT * FROM devices WHERE deviceId IN [{}]", in_list.join(","));
    let too_long = format!("SELECT * FROM devices WHERE tags.a = '{}'", "x".repeat(9000));
    let configuration = json!({"content": {"deviceContent": {"properties.desired.a": 1}}, "targetCondition": "*"});
    let created = hub.request(Method::PUT, "/configurations/cfg").json(&configuration).send().await.expect("send");
    assert_eq!(created.status(), StatusCode::OK);
    let with = |member: &str, value: Value| {
        let mut body = configuration.clone();
        body[member] = value;
        Some(body.to_string())
    };
    let six_metrics: serde_json::Map<String, Value> =
        (0..6).map(|i| (format!("m{i}"), json!("SELECT deviceId FROM devices"))).collect();
    let too_many_items: Vec<Value> =
        (0..101).map(|i| json!({"id": format!("bulk{i}"), "importMode": "create"})).collect();
    let cases: Vec<ServiceCase> = vec![
        ("malformed JSON", Method::PUT, "/devices/x1", Some("{\"deviceId\":".into()), StatusCode::BAD_REQUEST, "IotHubFormatError"),
        ("JSON nested 1,000 deep", Method::PATCH, "/twins/d1", Some(deep), StatusCode::BAD_REQUEST, "IotHubFormatError"),
        ("twin nested past 10 levels", Method::PATCH, "/twins/d1", Some(deep_twin.clone()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("tags over 8 KB", Method::PATCH, "/twins/d1", Some(json!({"tags": wide_tags}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a key with a dot", Method::PATCH, "/twins/d1", Some(json!({"tags": {"a.b": 1}}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a key with a $", Method::PATCH, "/twins/d1", Some(json!({"properties": {"desired": {"$x": 1}}}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a body over 256 KB", Method::PATCH, "/twins/d1", Some(format!("{{\"tags\":{{\"a\":\"{}\"}}}}", "x".repeat(300 * 1024))), StatusCode::PAYLOAD_TOO_LARGE, "MessageTooLarge"),
        ("query text over 8,192 characters", Method::POST, "/devices/query", Some(json!({"query": too_long}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a query that does not parse", Method::POST, "/devices/query", Some(json!({"query": "SELECT * FROM"}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a job id with bad characters", Method::PUT, "/jobs/v2/bad%20id!", Some(json!({"type": "scheduleDeviceMethod", "queryCondition": "*", "cloudToDeviceMethod": {"methodName": "m"}}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a method timeout below 5 s", Method::POST, "/twins/d1/methods", Some(json!({"methodName": "m", "responseTimeoutInSeconds": 1}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a method timeout over 300 s", Method::POST, "/twins/d1/methods", Some(json!({"methodName": "m", "responseTimeoutInSeconds": 301}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a connect timeout over 300 s", Method::POST, "/twins/d1/methods", Some(json!({"methodName": "m", "connectTimeoutInSeconds": 301}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a device id with a space", Method::PUT, "/devices/a%20b", Some(json!({"deviceId": "a b"}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("an id with an encoded slash", Method::GET, "/devices/d1%2Fm1", None, StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a module id with a space", Method::PUT, "/devices/d1/modules/a%20b", Some("{}".into()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a deviceScope that is not a string", Method::PUT, "/devices/d1", Some(json!({"deviceId": "d1", "deviceScope": 5}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("parentScopes that is not an array", Method::PUT, "/devices/d1", Some(json!({"deviceId": "d1", "capabilities": {"iotEdge": true}, "parentScopes": "s"}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a deviceScope no Edge device owns", Method::PUT, "/devices/d1", Some(json!({"deviceId": "d1", "deviceScope": "ms-azure-iot-edge://none-1"}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("an Edge device naming two parents", Method::PUT, "/devices/d1", Some(json!({"deviceId": "d1", "capabilities": {"iotEdge": true}, "parentScopes": ["a", "b"]}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("malformed module JSON", Method::PUT, "/devices/d1/modules/m1", Some("{\"moduleId\":".into()), StatusCode::BAD_REQUEST, "IotHubFormatError"),
        ("a module body naming another module", Method::PUT, "/devices/d1/modules/m1", Some(json!({"moduleId": "other"}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a module key that is not base64", Method::PUT, "/devices/d1/modules/m1", Some(json!({"authentication": {"type": "sas", "symmetricKey": {"primaryKey": "***"}}}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a module twin nested past 10 levels", Method::PATCH, "/twins/d1/modules/m1", Some(deep_twin.clone()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a module method timeout over 300 s", Method::POST, "/twins/d1/modules/m1/methods", Some(json!({"methodName": "m", "responseTimeoutInSeconds": 301}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a module twin of a missing module", Method::GET, "/twins/d1/modules/nobody", None, StatusCode::NOT_FOUND, "ModuleNotFound"),
        ("a bulk body that is not an array", Method::POST, "/devices", Some("{}".into()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("101 bulk items", Method::POST, "/devices", Some(json!(too_many_items).to_string()), StatusCode::PAYLOAD_TOO_LARGE, "TooManyDevices"),
        ("one device twice in a bulk call", Method::POST, "/devices", Some(json!([{"id": "x"}, {"id": "x"}]).to_string()), StatusCode::BAD_REQUEST, "DeviceDefinedMultipleTimes"),
        ("a configuration id in upper case", Method::PUT, "/configurations/Cfg", with("priority", json!(1)), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("malformed configuration JSON", Method::PUT, "/configurations/cfg", Some("{\"content\":".into()), StatusCode::BAD_REQUEST, "IotHubFormatError"),
        ("a configuration that is not an object", Method::PUT, "/configurations/cfg", Some("[1]".into()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a target condition that does not parse", Method::PUT, "/configurations/cfg", with("targetCondition", json!("tags.x =")), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a priority beyond 32 bits", Method::PUT, "/configurations/cfg", with("priority", json!(1u64 << 40)), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("six custom metrics", Method::PUT, "/configurations/cfg", with("metrics", json!({"queries": six_metrics})), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("labels that are not strings", Method::PUT, "/configurations/cfg", with("labels", json!({"a": 1})), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("changed configuration content", Method::PUT, "/configurations/cfg", with("content", json!({"deviceContent": {"properties.desired.a": 2}})), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("a missing configuration", Method::DELETE, "/configurations/nobody", None, StatusCode::NOT_FOUND, "ConfigurationNotFound"),
        ("testQueries with a body that is not an object", Method::POST, "/configurations/testQueries", Some("[]".into()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
        ("content applied without modulesContent", Method::POST, "/devices/d1/applyConfigurationContent", Some(json!({"deviceContent": {}}).to_string()), StatusCode::BAD_REQUEST, "InvalidConfigurationContent"),
        ("modules content applied to a device that is not an Edge device", Method::POST, "/devices/d1/applyConfigurationContent", Some(json!({"modulesContent": {"$edgeAgent": {"properties.desired": {}}}}).to_string()), StatusCode::BAD_REQUEST, "ArgumentInvalid"),
    ];
    for (label, method, path, body, status, code) in cases {
        let mut request = hub.request(method, path).header("If-Match", "*");
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), status, "{label}");
        expect_error(response, status, code).await;
    }
    // A huge IN list (within the length limit) is answered, served from the index.
    let response =
        hub.request(Method::POST, "/devices/query").json(&json!({"query": huge_in})).send().await.expect("send");
    assert_eq!(response.status(), StatusCode::OK, "a long IN list is answered");
    // No api-version.
    let response =
        hub.http.get(hub.url("/devices/d1")).header("Authorization", hub.owner_token()).send().await.expect("send");
    expect_error(response, StatusCode::BAD_REQUEST, "InvalidProtocolVersion").await;
    assert_healthy(&hub).await;
}

#[tokio::test]
async fn a_reported_patch_over_the_limits_is_refused_over_mqtt() {
    let hub = start().await;
    hub.create_device("healthy").await;
    hub.create_device("d1").await;
    let (mut device, ack) =
        connect_with(&hub, "d1", &user_name("d1"), &device_token(&hub, "d1", "d1", unix_now() + 600), false).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    common::mqtt::subscribe(&mut device, &["$iothub/twin/res/#"], QoS::AtMostOnce).await;
    let big: serde_json::Map<String, Value> = (0..2000).map(|i| (format!("k{i}"), json!("y".repeat(20)))).collect();
    for (label, body, status) in [
        ("reported properties over 32 KB", json!(big).to_string(), "400"),
        ("malformed JSON", "{\"a\":".to_owned(), "400"),
        ("a bad key", json!({"a b": 1}).to_string(), "400"),
    ] {
        common::mqtt::publish(
            &mut device,
            "$iothub/twin/PATCH/properties/reported/?$rid=7",
            QoS::AtMostOnce,
            body.as_bytes(),
        )
        .await;
        let answer = common::mqtt::next_publish(&mut device).await;
        assert!(answer.topic.starts_with(&format!("$iothub/twin/res/{status}/?$rid=7")), "{label}: {}", answer.topic);
    }
    assert_healthy(&hub).await;
}

/// Raw bytes on a TLS connection to the AMQP port (then, if `leave`, the client shuts its side down): what the
/// hub answered, and whether it then closed.
async fn raw_amqp(hub: &TestHub, bytes: &[u8], leave: bool) -> (Vec<u8>, bool) {
    let mut stream = tls_to(hub, hub.emulator.amqp_addr()).await;
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    if leave {
        let _ = stream.shutdown().await;
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let closed = tokio::time::timeout(WAIT * 3, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .is_ok();
    (answer, closed)
}

/// An AMQP frame on channel 0 around `body` (size, doff 2, type 0).
fn amqp_frame(body: &[u8]) -> Vec<u8> {
    let size = u32::try_from(body.len() + 8).expect("a frame size");
    [&size.to_be_bytes()[..], &[2, 0, 0, 0], body].concat()
}

/// The hub still takes AMQP connections and queues a message sent over one.
async fn assert_amqp_healthy(hub: &TestHub) {
    use common::amqp::{self, message_to, send};
    let mut service = amqp::open(hub, None).await;
    service.authorize(hub).await;
    let mut sender = service.devicebound().await;
    let outcome = send(&mut sender, message_to("healthy", b"still here").build()).await;
    assert!(matches!(outcome, fe2o3_amqp::types::messaging::Outcome::Accepted(_)), "AMQP still serves: {outcome:?}");
    service.close().await;
}

#[tokio::test]
async fn hostile_amqp_input_gets_the_hubs_answer_and_leaves_it_healthy() {
    use common::amqp::{self, receiver_refusal, sender_refusal};
    use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition};

    let hub = start().await;
    hub.create_device("healthy").await;
    const AMQP: &[u8] = b"AMQP\x00\x01\x00\x00";
    const SASL: &[u8] = b"AMQP\x03\x01\x00\x00";
    // A minimal Open: container-id "test" and nothing else.
    let opened = [AMQP, &amqp_frame(&[0x00, 0x53, 0x10, 0xc0, 7, 1, 0xa1, 4, b't', b'e', b's', b't'])].concat();

    // The protocol header: one the endpoint does not speak is answered with the one it does (SASL), then the
    // connection ends. Frames whose size field is below the 8-byte frame header, or above the 64 KiB max frame size
    // (512 bytes before the Open), end the connection: fe2o3 sends no framing-error Close, it hangs up. A frame cut
    // short waits for its rest until the client leaves. Nothing panics (emulator/src/amqp/io.rs guards fe2o3
    // against sizes 4 to 7; fuzzing/amqp's cases check for panics in every task).
    let cases: Vec<(&str, Vec<u8>, &[u8])> = vec![
        ("a garbage 8-byte header", b"GARBAGE!".to_vec(), SASL),
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(), SASL),
        ("an AMQP 0-9-1 header", b"AMQP\x00\x00\x09\x01".to_vec(), SASL),
        ("an AMQP 1.0 header of a later revision", b"AMQP\x00\x01\x00\x01".to_vec(), SASL),
        ("frame size 0 before the Open", [AMQP, &[0, 0, 0, 0, 2, 0, 0, 0]].concat(), AMQP),
        ("frame size 4 before the Open", [AMQP, &[0, 0, 0, 4, 2, 0, 0, 0]].concat(), AMQP),
        ("frame size 7 after the Open", [&opened[..], &[0, 0, 0, 7, 2, 0, 0, 0]].concat(), AMQP),
        ("a 600-byte frame before the Open", [AMQP, &amqp_frame(&[0x40; 592])].concat(), AMQP),
        ("a frame over 64 KiB after the Open", [&opened[..], &amqp_frame(&vec![0x40; 70_000])].concat(), AMQP),
        ("a frame size of 4 GiB after the Open", [&opened[..], &[0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0]].concat(), AMQP),
        ("doff 1 after the Open", [&opened[..], &[0, 0, 0, 12, 1, 0, 0, 0, 0x00, 0x53, 0x11, 0x45]].concat(), AMQP),
    ];
    for (label, bytes, header) in cases {
        let (answer, closed) = raw_amqp(&hub, &bytes, false).await;
        assert!(answer.starts_with(header), "{label}: the hub answers with its header, got {answer:?}");
        if header == SASL {
            assert_eq!(answer.len(), 8, "{label}: only the header");
        }
        assert!(closed, "{label}: the hub closes the connection");
        assert_healthy(&hub).await;
        assert_amqp_healthy(&hub).await;
    }
    let cut_short = [&opened[..], &[0, 0, 0, 64, 2, 0, 0, 0, 0x00, 0x53]].concat();
    let (answer, closed) = raw_amqp(&hub, &cut_short, true).await;
    assert!(answer.starts_with(AMQP) && closed, "a frame cut short, then the client leaves: the hub closes too");
    assert_healthy(&hub).await;
    assert_amqp_healthy(&hub).await;

    // Links to nodes the hub does not have, or the wrong way round, are detached with amqp:not-found.
    let not_found = Some(ErrorCondition::AmqpError(AmqpError::NotFound));
    let mut client = amqp::open(&hub, None).await;
    client.authorize(&hub).await;
    for address in [
        "/nowhere",
        "/messages/serviceBound/feedback",
        "amqps://localhost/devices/healthy/nonsense",
        "/devices/ghost/messages/events",
        "/devices/healthy/modules/ghost/twin",
    ] {
        let mut sender = client.sender_to("to-nowhere", address).await;
        assert_eq!(sender_refusal(&mut sender).await, not_found, "a sender to {address}");
    }
    for address in ["/nowhere", "/messages/devicebound"] {
        let mut receiver = client.receiver_from("from-nowhere", address).await;
        assert_eq!(receiver_refusal(&mut receiver).await, not_found, "a receiver from {address}");
    }
    client.close().await;
    // Messages the hub cannot queue (no `to`, a bad `iothub-ack`, over 64 KB, an unknown device, a full queue) are
    // rejected with their conditions in c2d.rs's `the_hub_refuses_what_it_cannot_queue_with_the_conditions_the_sdks_map`,
    // and undecodable ones in fuzzing/amqp's cases.
    assert_healthy(&hub).await;
    assert_amqp_healthy(&hub).await;
}
