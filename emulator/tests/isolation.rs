//! Who may do what: every service endpoint against every policy of a new hub (and a device token), and devices
//! kept to their own twin, topics and methods.

mod common;

use std::time::Duration;

use common::mqtt::{WAIT, connect_device, connect_with, device_token, next_publish, publish, subscribe, user_name};
use common::{TestHub, start, unix_now};
use futures_util::StreamExt as _;
use iothub_emulator::auth::Rights;
use reqwest::{Method, StatusCode};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, SubscribeReasonCode};
use serde_json::{Value, json};

/// An endpoint, the body it takes, and the permissions of which any one lets a caller in.
struct Endpoint {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    needs: Rights,
}

fn endpoints() -> Vec<Endpoint> {
    let read = Rights::REGISTRY_READ;
    let write = Rights::REGISTRY_WRITE;
    let service = Rights::SERVICE_CONNECT;
    let e =
        |method: Method, path: &'static str, body: Option<Value>, needs: Rights| Endpoint { method, path, body, needs };
    vec![
        e(Method::GET, "/devices/target", None, read),
        e(Method::GET, "/devices", None, read),
        e(Method::PUT, "/devices/created-by-policy", Some(json!({"deviceId": "created-by-policy"})), write),
        e(Method::DELETE, "/devices/missing-device", None, write),
        e(Method::GET, "/statistics/devices", None, read),
        e(Method::GET, "/statistics/service", None, service.union(read)),
        e(Method::GET, "/twins/target", None, service.union(read)),
        e(Method::PATCH, "/twins/target", Some(json!({"tags": {"x": 1}})), service.union(write)),
        e(
            Method::POST,
            "/twins/target/methods",
            Some(json!({"methodName": "m", "responseTimeoutInSeconds": 5})),
            service,
        ),
        e(Method::POST, "/devices/query", Some(json!({"query": "SELECT * FROM devices"})), service.union(read)),
        e(
            Method::PUT,
            "/jobs/v2/job-by-policy",
            Some(
                json!({"type": "scheduleUpdateTwin", "queryCondition": "deviceId = 'nobody'", "updateTwin": {"tags": {"a": 1}}}),
            ),
            write,
        ),
        e(Method::GET, "/jobs/v2/job-by-policy", None, read),
        e(Method::GET, "/jobs/v2/query", None, read),
        e(Method::POST, "/jobs/v2/job-by-policy/cancel", None, write),
        e(Method::GET, "/emulator/devices/target/messages/events", None, service),
        e(Method::GET, "/devices/target/modules/mod", None, read),
        e(Method::GET, "/devices/target/modules", None, read),
        e(Method::PUT, "/devices/target/modules/by-policy", Some(json!({"moduleId": "by-policy"})), write),
        e(Method::DELETE, "/devices/target/modules/missing-module", None, write),
        e(Method::GET, "/twins/target/modules/mod", None, service.union(read)),
        e(Method::PATCH, "/twins/target/modules/mod", Some(json!({"tags": {"x": 1}})), service.union(write)),
        e(
            Method::POST,
            "/twins/target/modules/mod/methods",
            Some(json!({"methodName": "m", "responseTimeoutInSeconds": 5})),
            service,
        ),
        e(Method::POST, "/devices/query", Some(json!({"query": "SELECT * FROM devices.modules"})), service.union(read)),
    ]
}

#[tokio::test]
async fn every_endpoint_against_every_policy() {
    let hub = start().await;
    hub.create_device("target").await;
    let module = hub.request(Method::PUT, "/devices/target/modules/mod").json(&json!({})).send().await.expect("send");
    assert_eq!(module.status(), StatusCode::CREATED);
    let module_key = hub.emulator.hub().get_device("target/mod").expect("module").authentication.primary_key.clone();
    let module_token = iothub_proto::generate_token(
        "localhost/devices/target/modules/mod",
        &module_key.expect("key"),
        None,
        unix_now() + 600,
    )
    .expect("token");
    let policies: Vec<(String, Rights)> =
        hub.emulator.hub().policies().iter().map(|p| (p.key_name.clone(), p.rights)).collect();
    assert_eq!(policies.len(), 5, "the five policies of a new hub");
    let mut table = Vec::new();
    for endpoint in endpoints() {
        for (policy, rights) in &policies {
            let mut request = hub
                .request_as(&hub.policy_token(policy), endpoint.method.clone(), endpoint.path)
                .header("If-Match", "*");
            if let Some(body) = &endpoint.body {
                request = request.json(body);
            }
            let status = request.send().await.expect("send").status();
            let allowed = rights.intersects(endpoint.needs);
            table.push(format!("{} {} as {policy}: {status}", endpoint.method, endpoint.path));
            if allowed {
                assert_ne!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{} {} must be allowed for {policy}",
                    endpoint.method,
                    endpoint.path
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{} {} must be refused for {policy}",
                    endpoint.method,
                    endpoint.path
                );
            }
        }
        // A device's or module's own token is never a service credential.
        let device = device_token(&hub, "target", "target", unix_now() + 600);
        for (token, whose) in [(&device, "device"), (&module_token, "module")] {
            let mut request = hub.request_as(token, endpoint.method.clone(), endpoint.path);
            if let Some(body) = &endpoint.body {
                request = request.json(body);
            }
            assert_eq!(
                request.send().await.expect("send").status(),
                StatusCode::UNAUTHORIZED,
                "{} {} with a {whose} token",
                endpoint.method,
                endpoint.path
            );
        }
    }
    assert_eq!(table.len(), endpoints().len() * 5);
}

async fn invoke(hub: &TestHub, id: &str) -> reqwest::Response {
    hub.request(Method::POST, &format!("/twins/{id}/methods"))
        .json(&json!({"methodName": "secret", "responseTimeoutInSeconds": 5, "connectTimeoutInSeconds": 2}))
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn a_device_stays_in_its_own_lane() {
    let hub = start().await;
    for id in ["alice", "bob"] {
        hub.create_device(id).await;
    }
    // Alice's key cannot connect as Bob, with either client id.
    let alices_token_for_bob = device_token(&hub, "bob", "alice", unix_now() + 600);
    let (_, ack) = connect_with(&hub, "bob", &user_name("bob"), &alices_token_for_bob, false).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    let alices_token = device_token(&hub, "alice", "alice", unix_now() + 600);
    let (_, ack) = connect_with(&hub, "bob", &user_name("bob"), &alices_token, false).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized, "a token for alice does not open bob's session");

    let mut alice = connect_device(&hub, "alice").await;
    let codes = subscribe(
        &mut alice,
        &["$iothub/methods/POST/#", "$iothub/twin/res/#", "devices/bob/messages/devicebound/#"],
        QoS::AtLeastOnce,
    )
    .await;
    assert_eq!(codes[2], SubscribeReasonCode::Failure, "no subscribing to bob's messages");

    // Bob's twin is never what alice reads or writes.
    let patch = json!({"properties": {"desired": {"owner": "bob"}}});
    hub.request(Method::PATCH, "/twins/bob").header("If-Match", "*").json(&patch).send().await.expect("patch");
    publish(&mut alice, "$iothub/twin/GET/?$rid=1", QoS::AtMostOnce, b"").await;
    let twin = next_publish(&mut alice).await;
    let body: Value = serde_json::from_slice(&twin.payload).expect("json");
    assert!(body["desired"].get("owner").is_none(), "alice reads only her twin: {body}");
    publish(&mut alice, "$iothub/twin/PATCH/properties/reported/?$rid=2", QoS::AtMostOnce, br#"{"by":"alice"}"#).await;
    next_publish(&mut alice).await;
    let bobs: Value = hub.get_json("/twins/bob").await;
    assert!(bobs["properties"]["reported"].get("by").is_none(), "alice's reported patch lands on her own twin");

    // A method for bob never reaches alice: bob is offline, so it is 404103, and alice hears nothing.
    let response = invoke(&hub, "bob").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(tokio::time::timeout(Duration::from_millis(300), alice.next()).await.is_err(), "alice got nothing");

    // Bob online: alice answering bob's request id does not complete bob's call.
    let mut bob = connect_device(&hub, "bob").await;
    subscribe(&mut bob, &["$iothub/methods/POST/#"], QoS::AtMostOnce).await;
    let call = tokio::spawn({
        let request = hub
            .request(Method::POST, "/twins/bob/methods")
            .json(&json!({"methodName": "secret", "responseTimeoutInSeconds": 5}));
        async move { request.send().await.expect("send") }
    });
    let to_bob = next_publish(&mut bob).await;
    let rid = common::mqtt::topic_param(&to_bob.topic, "$rid").expect("rid").to_owned();
    publish(&mut alice, &format!("$iothub/methods/res/200/?$rid={rid}"), QoS::AtMostOnce, br#"{"from":"alice"}"#).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&mut bob, &format!("$iothub/methods/res/201/?$rid={rid}"), QoS::AtMostOnce, br#"{"from":"bob"}"#).await;
    let answer: Value =
        tokio::time::timeout(WAIT, call).await.expect("answered").expect("task").json().await.expect("json");
    assert_eq!(answer, json!({"status": 201, "payload": {"from": "bob"}}), "only bob answers bob's call");
}

/// Tokens on `$cbs` against the service's AMQP links: only a ServiceConnect claim for this hub opens
/// `/messages/devicebound` and `/messages/serviceBound/feedback`; every other link is detached with
/// `amqp:unauthorized-access`. (c2d.rs's `links_need_a_valid_token_with_service_connect_and_end_when_it_expires`
/// already covers no token, a forged key, another hub's token put for this hub's name, registryRead's send failing
/// and expiry; this adds the condition, the feedback link, every policy, device tokens and tokens scoped elsewhere.)
#[tokio::test]
async fn amqp_links_open_only_for_a_service_connect_claim_on_this_hub() {
    use common::amqp::{self, message_to, receiver_refusal, send, sender_refusal, token_for};
    use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition};
    use fe2o3_amqp::types::messaging::Outcome;

    let hub = start().await;
    hub.create_device("d1").await;
    let refused = Some(ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess));

    // Every policy of a new hub, with a valid token for the whole hub.
    let policies: Vec<(String, Rights)> =
        hub.emulator.hub().policies().iter().map(|p| (p.key_name.clone(), p.rights)).collect();
    for (policy, rights) in &policies {
        let mut client = amqp::open(&hub, None).await;
        assert_eq!(client.put_token(&hub.policy_token(policy), "localhost").await, 200, "{policy}: a valid token");
        let mut sender = client.devicebound().await;
        let mut feedback = client.feedback().await;
        if rights.intersects(Rights::SERVICE_CONNECT) {
            let outcome = send(&mut sender, message_to("d1", policy.as_bytes()).build()).await;
            assert!(matches!(outcome, Outcome::Accepted(_)), "{policy} sends: {outcome:?}");
            let quiet = tokio::time::timeout(
                Duration::from_millis(300),
                feedback.recv::<fe2o3_amqp::types::messaging::Body<Value>>(),
            )
            .await;
            assert!(quiet.is_err(), "{policy}: the feedback link stays attached, waiting");
        } else {
            assert_eq!(sender_refusal(&mut sender).await, refused, "{policy}: no devicebound link");
            assert_eq!(receiver_refusal(&mut feedback).await, refused, "{policy}: no feedback link");
        }
        client.close().await;
    }

    // Tokens that are no service credential for this hub's nodes: `$cbs` answers with `status` (a device's own
    // token is a claim, for the device's own links only), and neither service link opens on them.
    let device = device_token(&hub, "d1", "d1", unix_now() + 600);
    let cases: Vec<(&str, String, &str, i32)> = vec![
        ("a device's own token, for its own audience", device.clone(), "localhost/devices/d1", 200),
        ("a device's own token, for the hub", device.clone(), "localhost", 401),
        (
            "a ServiceConnect token scoped to one device",
            token_for(&hub, "service", "localhost/devices/d1", 600),
            "localhost/devices/d1",
            200,
        ),
        // Well signed and for its own audience, but that audience is not this hub.
        (
            "a token for another hub, put for that hub",
            token_for(&hub, "iothubowner", "elsewhere", 600),
            "elsewhere",
            401,
        ),
        (
            "a token for another hub, put for this hub's devicebound node",
            token_for(&hub, "iothubowner", "elsewhere", 600),
            "localhost/messages/devicebound",
            401,
        ),
    ];
    for (label, token, audience, status) in cases {
        let mut client = amqp::open(&hub, None).await;
        assert_eq!(client.put_token(&token, audience).await, status, "{label}");
        let mut sender = client.devicebound().await;
        assert_eq!(sender_refusal(&mut sender).await, refused, "{label}: no devicebound link");
        let mut feedback = client.feedback().await;
        assert_eq!(receiver_refusal(&mut feedback).await, refused, "{label}: no feedback link");
        client.close().await;
    }

    // SASL PLAIN with a device's token as the password (as older device SDKs log in) opens the connection for that
    // device's own links, and no service link.
    let plain = fe2o3_amqp::sasl_profile::SaslProfile::Plain { username: "d1@sas.localhost".into(), password: device };
    let mut client = amqp::try_open(&hub, Some(plain)).await.expect("SASL PLAIN with a device token");
    let mut sender = client.devicebound().await;
    assert_eq!(sender_refusal(&mut sender).await, refused, "a device's login: no devicebound link");
    let mut feedback = client.feedback().await;
    assert_eq!(receiver_refusal(&mut feedback).await, refused, "a device's login: no feedback link");
    client.close().await;

    let device_doc: Value = hub.get_json("/devices/d1").await;
    let senders = policies.iter().filter(|(_, r)| r.intersects(Rights::SERVICE_CONNECT)).count();
    assert_eq!(device_doc["cloudToDeviceMessageCount"], senders, "only the ServiceConnect policies queued messages");
}
