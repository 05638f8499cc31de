//! Back-end callers of the service API over HTTPS, each with its own keep-alive connection: direct methods on
//! the fleet's devices, twin patches, and jobs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::stats::Latencies;

/// How to reach the service API.
#[derive(Clone)]
pub struct Service {
    pub addr: SocketAddr,
    pub host: String,
    pub tls: rustls::ClientConfig,
    /// A SAS token of the connection string's policy, valid for the run.
    pub token: String,
}

impl Service {
    /// From a hub connection string.
    pub fn new(addr: SocketAddr, connection_string: &str, tls: rustls::ClientConfig) -> anyhow::Result<Self> {
        let cs: iothub_proto::ServiceConnectionString =
            connection_string.parse().context("service connection string")?;
        let expiry =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) + 4 * 3600;
        let token = iothub_proto::generate_token(&cs.host_name, &cs.key, Some(&cs.key_name), expiry)
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        Ok(Self { addr, host: cs.host_name, tls, token })
    }

    /// An HTTPS client with one keep-alive connection.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .tls_backend_preconfigured(self.tls.clone())
            .resolve(&self.host, self.addr)
            .pool_max_idle_per_host(1)
            .http1_only()
            .build()?)
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}?api-version=2021-04-12", self.host, self.addr.port())
    }

    /// Sends a JSON request and returns the status and body.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let patch = method == reqwest::Method::PATCH;
        let mut request = client.request(method, self.url(path)).header("Authorization", &self.token);
        if patch {
            request = request.header("If-Match", "\"*\"");
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }
}

/// What each caller does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `POST /twins/{id}/methods` on a random device of the fleet.
    Method,
    /// `PATCH /twins/{id}` (desired) on a random device.
    TwinPatch,
}

/// `callers` callers each doing `call` on random devices of `ids` until `duration` is over, back to back or
/// together `rate` calls per second; returns the merged latencies of successful calls, the failures, and the
/// time taken. Latencies count from each call's actual send (tokio's timers wake up to a millisecond late,
/// which is the load generator's lateness, not the hub's); a hub that cannot keep up shows as a lower rate.
pub async fn run(
    service: Arc<Service>,
    ids: Arc<Vec<String>>,
    call: Call,
    callers: usize,
    duration: Duration,
    rate: Option<f64>,
) -> anyhow::Result<(Latencies, u64, Duration)> {
    anyhow::ensure!(!ids.is_empty(), "no devices to call");
    let started = Instant::now();
    let until = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    let callers = callers.max(1);
    let interval = rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(callers as f64 / r));
    for caller in 0..callers {
        let (service, ids) = (service.clone(), ids.clone());
        let client = service.client()?;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut failures = 0u64;
            let mut n: u64 = caller as u64;
            let mut due =
                tokio::time::Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(rand::random::<f64>()));
            while tokio::time::Instant::now() < until {
                n += 1;
                let id = &ids[rand::random_range(0..ids.len())];
                if let Some(every) = interval {
                    tokio::time::sleep_until(due).await;
                    due += every;
                }
                let sent = Instant::now();
                let result = match call {
                    Call::Method => {
                        let body = json!({"methodName": "bench", "payload": {"n": n}, "responseTimeoutInSeconds": 30});
                        service.send(&client, reqwest::Method::POST, &format!("/twins/{id}/methods"), Some(&body)).await
                    }
                    Call::TwinPatch => {
                        let body = json!({"properties": {"desired": {"n": n, "caller": caller}}});
                        service.send(&client, reqwest::Method::PATCH, &format!("/twins/{id}"), Some(&body)).await
                    }
                };
                match result {
                    Ok((200, _)) => latencies.record(sent.elapsed()),
                    Ok((status, body)) => {
                        failures += 1;
                        if failures <= 3 {
                            eprintln!("{call:?} on {id}: {status} {body}");
                        }
                    }
                    Err(error) => {
                        failures += 1;
                        if failures <= 3 {
                            eprintln!("{call:?} on {id}: {error:#}");
                        }
                    }
                }
            }
            (latencies, failures)
        }));
    }
    let mut all = Latencies::default();
    let mut failures = 0;
    for task in tasks {
        let (latencies, failed) = task.await?;
        all.merge(&latencies);
        failures += failed;
    }
    Ok((all, failures, started.elapsed()))
}

/// Creates a job over every device and polls it until it is finished; returns the time from the PUT until it
/// read finished, and the job.
pub async fn job(service: &Service, job_id: &str, body: Value) -> anyhow::Result<(Duration, Value)> {
    let client = service.client()?;
    let started = Instant::now();
    let (status, created) =
        service.send(&client, reqwest::Method::PUT, &format!("/jobs/v2/{job_id}"), Some(&body)).await?;
    anyhow::ensure!(status == 200, "creating job {job_id}: {status} {created}");
    loop {
        let (status, job) = service.send(&client, reqwest::Method::GET, &format!("/jobs/v2/{job_id}"), None).await?;
        anyhow::ensure!(status == 200, "reading job {job_id}: {status} {job}");
        if matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
            return Ok((started.elapsed(), job));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
