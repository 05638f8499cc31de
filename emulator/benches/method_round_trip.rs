//! Direct-method round-trip latency over loopback TLS for one device:
//! HTTPS caller (keep-alive) -> hub -> MQTT/TLS device (rumqttc) -> hub -> caller.
//!
//! Run: `cargo bench -p iothub-emulator --bench method_round_trip [-- CALLS]`. The emulator runs in-process
//! (the load-generator issue measures it in separate processes); numbers are printed, never asserted.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iothub_emulator::Emulator;
use iothub_emulator::domain::registry::DeviceSpec;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

fn tls_config(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("root");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let calls: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5000);
    let emulator = Emulator::builder().start().await.expect("start");
    let hub = emulator.hub().clone();
    let device = hub.put_device("bench", &DeviceSpec::default(), None).await.expect("device");
    let key = device.authentication.primary_key.clone().expect("key");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();

    let mut options = MqttOptions::new("bench", "localhost", emulator.mqtt_addr().port());
    options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(tls_config(emulator.ca_pem())))));
    let token = iothub_proto::generate_token("localhost/devices/bench", &key, None, now + 3600).expect("token");
    options.set_credentials("localhost/bench/?api-version=2021-04-12", token);
    options.set_clean_session(false);
    let (client, mut events) = AsyncClient::new(options, 100);
    client.subscribe("$iothub/methods/POST/#", QoS::AtMostOnce).await.expect("subscribe");
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(request))) => {
                    let rid = request.topic.rsplit("$rid=").next().unwrap_or_default().to_owned();
                    let _ = client.try_publish(
                        format!("$iothub/methods/res/200/?$rid={rid}"),
                        QoS::AtMostOnce,
                        false,
                        request.payload,
                    );
                }
                Ok(_) => {}
                Err(error) => {
                    eprintln!("device connection ended: {error}");
                    return;
                }
            }
        }
    });

    let owner = hub.policies().get("iothubowner").expect("owner").primary_key.clone();
    let auth = iothub_proto::generate_token("localhost", &owner, Some("iothubowner"), now + 3600).expect("token");
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(emulator.ca_pem()))
        .resolve("localhost", emulator.https_addr())
        .build()
        .expect("client");
    let url = format!("https://localhost:{}/twins/bench/methods?api-version=2021-04-12", emulator.https_addr().port());
    let body = r#"{"methodName":"echo","payload":{"n":1},"responseTimeoutInSeconds":10,"connectTimeoutInSeconds":5}"#;
    let call = || {
        let request =
            http.post(&url).header("Authorization", &auth).header("Content-Type", "application/json").body(body);
        async move {
            let response = request.send().await.expect("send");
            assert!(response.status().is_success(), "status {}", response.status());
            response.bytes().await.expect("body");
        }
    };

    for _ in 0..200 {
        call().await;
    }
    let mut latencies = Vec::with_capacity(calls);
    let started = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        call().await;
        latencies.push(t.elapsed());
    }
    let total = started.elapsed();
    latencies.sort();
    println!(
        "method round trip, one device, sequential, loopback TLS: {calls} calls in {:.2} s ({:.0}/s); p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        total.as_secs_f64(),
        calls as f64 / total.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.90).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    emulator.shutdown().await;
}
