//! Helpers for black-box tests: an in-process emulator on ephemeral ports and an HTTPS client that trusts only
//! the emulator's CA.

#![allow(dead_code)]

pub mod amqp;
pub mod mqtt;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use iothub_emulator::{Emulator, EmulatorBuilder, RunningEmulator};
use reqwest::{Method, RequestBuilder, StatusCode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::Value;

pub const API: &str = "api-version=2021-04-12";

/// A running emulator with a client pointed at it.
pub struct TestHub {
    pub emulator: RunningEmulator,
    pub http: reqwest::Client,
}

/// A rustls client config trusting only `ca_pem`, limited to `versions`.
pub fn client_tls(ca_pem: &str, versions: &[&'static rustls::SupportedProtocolVersion]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add root");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An HTTPS client that trusts only the emulator's CA and resolves `localhost` to its listener.
pub fn http_client(emulator: &RunningEmulator) -> reqwest::Client {
    let tls = client_tls(emulator.ca_pem(), rustls::DEFAULT_VERSIONS);
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve("localhost", emulator.https_addr())
        .build()
        .expect("client")
}

pub async fn start() -> TestHub {
    start_with(Emulator::builder()).await
}

pub async fn start_with(builder: EmulatorBuilder) -> TestHub {
    let emulator = builder.start().await.expect("emulator starts");
    let http = http_client(&emulator);
    TestHub { emulator, http }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

impl TestHub {
    pub fn url(&self, path_and_query: &str) -> String {
        format!("https://localhost:{}{path_and_query}", self.emulator.https_addr().port())
    }

    /// A token of `policy` for the whole hub, valid for an hour.
    pub fn policy_token(&self, policy: &str) -> String {
        let key = &self.emulator.hub().policies().get(policy).expect("policy").primary_key;
        iothub_proto::generate_token(self.emulator.host_name(), key, Some(policy), unix_now() + 3600).expect("token")
    }

    pub fn owner_token(&self) -> String {
        self.policy_token("iothubowner")
    }

    /// A request with the owner's token and `?api-version=` appended.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_as(&self.owner_token(), method, path)
    }

    /// A request with `token` as its Authorization and `?api-version=` appended.
    pub fn request_as(&self, token: &str, method: Method, path: &str) -> RequestBuilder {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.http.request(method, self.url(&format!("{path}{sep}{API}"))).header("Authorization", token)
    }

    /// `GET path` with the owner's token, parsed as JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.request(Method::GET, path).send().await.expect("send").json().await.expect("json")
    }

    /// Creates a device with generated keys and returns its JSON.
    pub async fn create_device(&self, id: &str) -> Value {
        let response = self
            .request(Method::PUT, &format!("/devices/{id}"))
            .json(&serde_json::json!({"deviceId": id}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK, "creating {id}");
        response.json().await.expect("json")
    }
}

/// Reads an error answer and checks the hub's envelope: status, `iothub-errorcode`, `ErrorCode:<code>;`.
pub async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status, "status");
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(response.headers().get("iothub-errorcode").and_then(|v| v.to_str().ok()), Some(code));
    let body: Value = response.json().await.expect("error body is JSON");
    let message = body["Message"].as_str().expect("Message").to_owned();
    assert!(message.starts_with(&format!("ErrorCode:{code};")), "{message}");
    assert!(body["ExceptionMessage"].as_str().expect("ExceptionMessage").starts_with("Tracking ID:"));
    message
}
