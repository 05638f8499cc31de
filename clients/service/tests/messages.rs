//! Cloud-to-device messages through the service client against the in-process emulator: sent over AMQPS,
//! received by a device over the hub's device HTTPS endpoint (pull, complete, reject), feedback read and settled
//! over HTTPS, the hub's refusals as typed errors, purges, and a connection that outlives the hub restarting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iothub_emulator::{Emulator, RunningEmulator};
use iothub_service::proto::messages::{Ack, FeedbackStatus, MAX_MESSAGE_BYTES};
use iothub_service::{CloudToDeviceMessage, Error, ServiceClient, ServiceOptions, Trust};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

async fn start() -> (RunningEmulator, ServiceClient) {
    start_with(Emulator::builder()).await
}

async fn start_with(builder: iothub_emulator::EmulatorBuilder) -> (RunningEmulator, ServiceClient) {
    let emulator = builder.start().await.expect("emulator");
    let service = service_for(&emulator, &emulator.service_connection_string());
    (emulator, service)
}

fn service_for(emulator: &RunningEmulator, connection_string: &str) -> ServiceClient {
    let options = ServiceOptions::default()
        .with_ca_pem(emulator.ca_pem())
        .with_port(emulator.https_addr().port())
        .with_amqp_port(emulator.amqp_addr().port());
    ServiceClient::from_connection_string(connection_string, options).expect("client")
}

/// A device that pulls its messages over HTTPS, as the Node SDK's HTTP transport does.
struct HttpDevice {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// A message as the device got it.
struct Pulled {
    lock: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Pulled {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl HttpDevice {
    async fn register(emulator: &RunningEmulator, service: &ServiceClient, id: &str) -> Self {
        let device = service.registry().create_sas_device(id).await.expect("create");
        let key =
            device.authentication.and_then(|a| a.symmetric_key).and_then(|k| k.primary_key).expect("the hub made keys");
        let expiry = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() + 3600;
        let resource = format!("{}/devices/{id}", emulator.host_name());
        let token = iothub_service::proto::generate_token(&resource, &key, None, expiry).expect("token");
        let tls = Trust::CaPem(emulator.ca_pem().to_owned()).client_config(&[]).expect("tls");
        let http = reqwest::Client::builder().tls_backend_preconfigured(tls).build().expect("http");
        let base = format!(
            "https://{}:{}/devices/{id}/messages/deviceBound",
            emulator.host_name(),
            emulator.https_addr().port()
        );
        Self { http, base, token }
    }

    async fn request(&self, method: Method, path: &str, query: &str) -> reqwest::Response {
        let url = format!("{}{path}?api-version=2020-09-30{query}", self.base);
        self.http.request(method, url).header("authorization", &self.token).send().await.expect("device request")
    }

    async fn pull(&self) -> Option<Pulled> {
        let response = self.request(Method::GET, "", "").await;
        if response.status() == StatusCode::NO_CONTENT {
            return None;
        }
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        let lock = headers["etag"].to_str().expect("etag").trim_matches('"').to_owned();
        let body = response.bytes().await.expect("body").to_vec();
        Some(Pulled { lock, headers, body })
    }

    async fn settle(&self, pulled: &Pulled, reject: bool) {
        let query = if reject { "&reject" } else { "" };
        let response = self.request(Method::DELETE, &format!("/{}", pulled.lock), query).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
}

/// `(originalMessageId, statusCode)` of each record of the next feedback batch, which is then completed.
async fn take_feedback(service: &ServiceClient) -> Vec<(String, String)> {
    let batch = service.messages().receive_feedback().await.expect("feedback").expect("a batch waits");
    service.messages().complete_feedback(&batch.lock_token).await.expect("complete");
    batch.records.into_iter().map(|r| (r.original_message_id, r.status_code)).collect()
}

#[tokio::test]
async fn a_message_arrives_with_its_properties_and_positive_feedback_comes_back() {
    let (emulator, service) = start().await;
    let device = HttpDevice::register(&emulator, &service, "d1").await;
    let expiry =
        UNIX_EPOCH + Duration::from_secs(SystemTime::now().duration_since(UNIX_EPOCH).expect("now").as_secs() + 3600);
    let message = CloudToDeviceMessage::new(r#"{"lock":true}"#)
        .with_message_id("msg-1")
        .with_correlation_id("corr/1")
        .with_user_id("operator")
        .with_content_type("application/json")
        .with_content_encoding("utf-8")
        .with_expiry(expiry)
        .with_ack(Ack::Positive)
        .with_property("zeta", "z 1")
        .with_property("alpha", "2");
    service.messages().send("d1", &message).await.expect("send");

    let pulled = device.pull().await.expect("the message waits");
    assert_eq!(pulled.body, br#"{"lock":true}"#);
    assert_eq!(pulled.header("iothub-messageid"), Some("msg-1"));
    assert_eq!(pulled.header("iothub-correlationid"), Some("corr/1"));
    assert_eq!(pulled.header("iothub-userid"), Some("operator"));
    assert_eq!(pulled.header("content-type"), Some("application/json"));
    assert_eq!(pulled.header("content-encoding"), Some("utf-8"));
    assert_eq!(pulled.header("iothub-ack"), Some("positive"));
    assert_eq!((pulled.header("iothub-app-zeta"), pulled.header("iothub-app-alpha")), (Some("z 1"), Some("2")));
    let expires: jiff::Timestamp = pulled.header("iothub-expiry").expect("expiry").parse().expect("a time");
    assert_eq!(SystemTime::from(expires), expiry);
    assert!(
        service.messages().receive_feedback().await.expect("feedback").is_none(),
        "nothing to report before the device settles"
    );
    device.settle(&pulled, false).await;

    let batch = service.messages().receive_feedback().await.expect("feedback").expect("a batch");
    let record = &batch.records[..];
    assert_eq!(record.len(), 1);
    assert_eq!((record[0].original_message_id.as_str(), record[0].device_id.as_str()), ("msg-1", "d1"));
    assert_eq!(record[0].status(), Some(FeedbackStatus::Success));
    assert!(!batch.lock_token.contains('"'), "the lock token is the ETag without quotes");
    service.messages().abandon_feedback(&batch.lock_token).await.expect("abandon");
    let again = service.messages().receive_feedback().await.expect("feedback").expect("given back");
    assert_eq!(again.records, batch.records);
    service.messages().complete_feedback(&again.lock_token).await.expect("complete");
    assert!(service.messages().receive_feedback().await.expect("feedback").is_none());
    let err = service.messages().complete_feedback(&again.lock_token).await.expect_err("used once");
    assert_eq!(err.status(), Some(412), "{err}");
    service.close().await;
}

#[tokio::test]
async fn a_rejected_message_gives_negative_feedback_and_each_ack_only_its_outcomes() {
    let (emulator, service) = start().await;
    let device = HttpDevice::register(&emulator, &service, "d2").await;
    let messages = service.messages();
    for (id, ack) in [("rejected-negative", Ack::Negative), ("rejected-positive", Ack::Positive)] {
        messages.send("d2", &CloudToDeviceMessage::new(id).with_message_id(id).with_ack(ack)).await.expect("send");
        let pulled = device.pull().await.expect("waits");
        assert_eq!(pulled.body, id.as_bytes());
        device.settle(&pulled, true).await;
    }
    for (id, ack) in [("completed-negative", Ack::Negative), ("completed-full", Ack::Full), ("quiet", Ack::None)] {
        messages.send("d2", &CloudToDeviceMessage::new(id).with_message_id(id).with_ack(ack)).await.expect("send");
        let pulled = device.pull().await.expect("waits");
        device.settle(&pulled, false).await;
    }
    assert!(device.pull().await.is_none(), "every message was settled");
    assert_eq!(
        take_feedback(&service).await,
        [("rejected-negative".to_owned(), "Rejected".to_owned()), ("completed-full".into(), "Success".into())]
    );
    service.close().await;
}

#[tokio::test]
async fn the_hubs_refusals_are_typed_errors_and_a_purge_counts() {
    let (emulator, service) = start().await;
    let device = HttpDevice::register(&emulator, &service, "full").await;
    let messages = service.messages();
    let err = messages.send("nobody", &CloudToDeviceMessage::new("x")).await.expect_err("unknown device");
    assert!(
        matches!(&err, Error::Hub { status: 404, code, message, .. } if code == "DeviceNotFound" && message.contains("nobody")),
        "{err}"
    );
    for i in 0..50 {
        let message =
            CloudToDeviceMessage::new(format!("m{i}")).with_ack(if i == 0 { Ack::Negative } else { Ack::None });
        messages.send("full", &message.with_message_id(format!("m{i}"))).await.expect("queued");
    }
    let err = messages.send("full", &CloudToDeviceMessage::new("one too many")).await.expect_err("queue full");
    assert_eq!((err.status(), err.code()), (Some(403), Some("DeviceMaximumQueueDepthExceeded")), "{err}");

    let purged = messages.purge("full").await.expect("purge");
    assert_eq!((purged.total_messages_purged, purged.device_id.as_str()), (50, "full"));
    assert!(device.pull().await.is_none(), "the queue is empty");
    assert_eq!(take_feedback(&service).await, [("m0".to_owned(), "Purged".to_owned())], "negative ack: told");
    let err = messages.purge("nobody").await.expect_err("unknown device");
    assert_eq!(err.code(), Some("DeviceNotFound"));

    let big = CloudToDeviceMessage::new(vec![b'x'; MAX_MESSAGE_BYTES + 1]);
    let err = messages.send("full", &big).await.expect_err("too large");
    assert_eq!((err.status(), err.code()), (Some(413), Some("MessageTooLarge")), "{err}");
    let largest = CloudToDeviceMessage::new(vec![b'y'; MAX_MESSAGE_BYTES]);
    messages.send("full", &largest).await.expect("the largest body the hub takes");
    assert_eq!(device.pull().await.expect("waits").body.len(), MAX_MESSAGE_BYTES);
    service.close().await;
}

#[tokio::test]
async fn policies_without_service_connect_and_wrong_keys_are_unauthorized() {
    let (emulator, _service) = start().await;
    let read_only = service_for(&emulator, &emulator.policy_connection_string("registryRead").expect("policy"));
    let err = read_only.messages().send("d1", &CloudToDeviceMessage::new("x")).await.expect_err("no ServiceConnect");
    assert_eq!((err.status(), err.code()), (Some(401), Some("IotHubUnauthorizedAccess")), "{err}");
    let err = read_only.messages().receive_feedback().await.expect_err("no ServiceConnect");
    assert_eq!(err.status(), Some(401), "{err}");

    let wrong = emulator
        .service_connection_string()
        .rsplit_once("SharedAccessKey=")
        .map(|(head, _)| format!("{head}SharedAccessKey={}", iothub_emulator::domain::registry::generate_key()))
        .expect("connection string");
    let err = service_for(&emulator, &wrong)
        .messages()
        .send("d1", &CloudToDeviceMessage::new("x"))
        .await
        .expect_err("bad key");
    assert_eq!((err.status(), err.code()), (Some(401), Some("IotHubUnauthorizedAccess")), "{err}");
}

#[tokio::test]
async fn concurrent_sends_share_the_client_and_a_closed_client_reconnects() {
    let (emulator, service) = start().await;
    let device = HttpDevice::register(&emulator, &service, "busy").await;
    let sends: Vec<_> = (0..20)
        .map(|i| {
            let messages = service.messages();
            tokio::spawn(async move { messages.send("busy", &CloudToDeviceMessage::new(format!("m{i}"))).await })
        })
        .collect();
    for send in sends {
        send.await.expect("task").expect("sent");
    }
    let mut bodies = Vec::new();
    while let Some(pulled) = device.pull().await {
        device.settle(&pulled, false).await;
        bodies.push(String::from_utf8(pulled.body).expect("text"));
    }
    bodies.sort_by_key(|b| b[1..].parse::<u32>().unwrap_or(u32::MAX));
    assert_eq!(bodies, (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>());

    service.close().await;
    service.close().await;
    service.messages().send("busy", &CloudToDeviceMessage::new("after close")).await.expect("a new connection");
    assert_eq!(device.pull().await.expect("waits").body, b"after close");
    service.close().await;
}

#[tokio::test]
async fn a_send_after_the_hub_restarted_goes_over_a_new_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (emulator, service) = start_with(Emulator::builder().data_dir(dir.path())).await;
    let device = HttpDevice::register(&emulator, &service, "steady").await;
    service.messages().send("steady", &CloudToDeviceMessage::new("before")).await.expect("send");
    let (https, mqtt, amqp) = (emulator.https_addr(), emulator.mqtt_addr(), emulator.amqp_addr());
    emulator.shutdown().await;

    let builder =
        Emulator::builder().data_dir(dir.path()).https_port(https.port()).mqtt_port(mqtt.port()).amqp_port(amqp.port());
    let _emulator = builder.start().await.expect("restarted on the same ports");
    service.messages().send("steady", &CloudToDeviceMessage::new("after")).await.expect("sent again");
    let first = device.pull().await.expect("waits");
    device.settle(&first, false).await;
    let second = device.pull().await.expect("waits");
    assert_eq!((first.body.as_slice(), second.body.as_slice()), (&b"before"[..], &b"after"[..]));
    service.close().await;
}

#[tokio::test]
async fn an_outage_detaches_the_sender_and_refuses_sends_until_it_ends() {
    let (emulator, service) = start().await;
    let device = HttpDevice::register(&emulator, &service, "away").await;
    service.messages().send("away", &CloudToDeviceMessage::new("before")).await.expect("send");
    let controls = service.emulator();
    let outage = controls.outage(Duration::from_secs(600)).await.expect("outage");

    // The open sender is detached, and the client's one reconnect is refused too: the hub is away.
    let refused = service.messages().send("away", &CloudToDeviceMessage::new("during")).await.expect_err("refused");
    assert!(refused.to_string().contains("outage"), "{refused}");

    controls.remove_fault(&outage.id).await.expect("ended");
    service.messages().send("away", &CloudToDeviceMessage::new("after")).await.expect("sent once it ended");
    let mut bodies = Vec::new();
    while let Some(pulled) = device.pull().await {
        device.settle(&pulled, false).await;
        bodies.push(String::from_utf8(pulled.body).expect("text"));
    }
    assert_eq!(bodies, ["before", "after"], "nothing sent during the outage was queued");
    service.close().await;
}
