//! The shared core of the service clients: one HTTPS client, a SAS token per request from the policy key,
//! the hub's error bodies turned into [`Error::Hub`], and retries where they are safe; and the AMQP connection
//! cloud-to-device messages go over, opened when first needed.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iothub_proto::ServiceConnectionString;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::amqp::Amqp;
use crate::error::Error;
use crate::{
    ConfigurationClient, EmulatorControls, JobClient, MessageClient, MethodClient, ModuleClient, QueryClient,
    RegistryClient, TwinClient,
};

/// The REST api-version the client speaks (the one the Azure SDKs use).
pub const API_VERSION: &str = "2021-04-12";
/// Lifetime of the SAS token made for each request.
const TOKEN_LIFETIME_SECS: u64 = 3600;

pub use iothub_proto::tls::Trust;

/// Retries of requests the hub throttled (429, never processed, so always safe to send again) and, for
/// requests that change nothing or may safely happen twice, of 5xx answers and broken connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retries).
    pub max_attempts: u32,
    /// Upper bound of the first delay.
    pub initial_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 4, initial_delay: Duration::from_millis(200), max_delay: Duration::from_secs(10) }
    }
}

impl RetryPolicy {
    /// Exponential back-off with full jitter before attempt `attempt` (2-based: the first retry).
    fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.initial_delay.saturating_mul(1 << attempt.saturating_sub(2).min(16)).min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(if nanos == 0 { 0 } else { rand::random_range(0..=nanos) })
    }
}

/// Settings of a service client. The default suits a real hub; for the emulator trust its CA (and give its
/// ports when they are not 443 and 5671).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOptions {
    /// Which CAs to trust for the hub's certificate.
    pub trust: Trust,
    /// HTTPS port, when not 443.
    pub port: Option<u16>,
    /// AMQPS port (cloud-to-device messages), when not 5671.
    pub amqp_port: Option<u16>,
    /// Time allowed for one request (direct-method calls get their own timeouts on top), and for each step of
    /// sending a cloud-to-device message (connecting, the hub's outcome).
    pub timeout: Duration,
    /// Which failed requests are sent again, and how often.
    pub retry: RetryPolicy,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            trust: Trust::PlatformRoots,
            port: None,
            amqp_port: None,
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

impl ServiceOptions {
    /// Trusts only the CA certificates in `pem` (the emulator's `ca.pem`).
    pub fn with_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.trust = Trust::CaPem(pem.into());
        self
    }

    /// Connects to `port` instead of 443.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sends cloud-to-device messages to AMQPS port `port` instead of 5671.
    pub fn with_amqp_port(mut self, port: u16) -> Self {
        self.amqp_port = Some(port);
        self
    }

    /// Retries with `retry`.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// Whether a request may be sent again after an answer or a failure that leaves its effect unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Safety {
    /// Reads, deletes and cancels: sending twice does no harm.
    Idempotent,
    /// Creates, updates, method calls and job creation: might run twice, so only 429 is retried.
    Once,
}

/// One request to the hub.
pub(crate) struct Call {
    pub method: Method,
    /// Path below the host, e.g. `/devices/d1` (ids already encoded).
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<serde_json::Value>,
    pub headers: Vec<(HeaderName, String)>,
    pub safety: Safety,
    /// A longer timeout than the client's (direct methods).
    pub timeout: Option<Duration>,
}

impl Call {
    pub(crate) fn new(method: Method, path: String, safety: Safety) -> Self {
        Self { method, path, query: Vec::new(), body: None, headers: Vec::new(), safety, timeout: None }
    }

    pub(crate) fn body(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    pub(crate) fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }
}

/// A successful answer.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode(format!("{e}")))
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
}

struct Inner {
    http: reqwest::Client,
    base: String,
    connection_string: ServiceConnectionString,
    retry: RetryPolicy,
    amqp: Amqp,
}

/// A connection to a hub's service API, made from a hub connection string (a shared access policy); cheap to
/// clone (the clones share one HTTPS client and one AMQP connection). The per-area clients come from it:
/// [`registry`](Self::registry), [`twins`](Self::twins), [`methods`](Self::methods), [`jobs`](Self::jobs),
/// [`query`](Self::query), [`configurations`](Self::configurations) and [`messages`](Self::messages).
#[derive(Clone)]
pub struct ServiceClient {
    inner: Arc<Inner>,
}

/// What stays as it is in a path segment: the unreserved characters of RFC 3986.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Path segments as the hub expects them: percent-encoded (device ids may hold `#`, `?`, `%`, ...).
pub(crate) fn segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

impl ServiceClient {
    /// A client for the hub in `connection_string` (`HostName=..;SharedAccessKeyName=..;SharedAccessKey=..`).
    pub fn from_connection_string(connection_string: &str, options: ServiceOptions) -> Result<Self, Error> {
        let connection_string: ServiceConnectionString = connection_string.parse()?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(options.trust.client_config(&[]).map_err(|e| Error::Config(e.to_string()))?)
            .timeout(options.timeout)
            .user_agent(concat!("iothub-service-rust/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTPS client: {e}")))?;
        let base = match options.port {
            Some(port) => format!("https://{}:{port}", connection_string.host_name),
            None => format!("https://{}", connection_string.host_name),
        };
        let amqp = Amqp::new(
            &connection_string,
            options.amqp_port.unwrap_or(crate::amqp::DEFAULT_PORT),
            options.trust.clone(),
            options.timeout,
        );
        Ok(Self { inner: Arc::new(Inner { http, base, connection_string, retry: options.retry, amqp }) })
    }

    /// The hub's host name.
    pub fn host_name(&self) -> &str {
        &self.inner.connection_string.host_name
    }

    /// Device identities.
    pub fn registry(&self) -> RegistryClient {
        RegistryClient::new(self.clone())
    }

    /// **Emulator only**: iothub-emulator's test-suite controls (faults, recorded history, health, reset). A
    /// real hub answers these with 404.
    pub fn emulator(&self) -> EmulatorControls {
        EmulatorControls::new(self.clone())
    }

    /// Module identities, module twins and module methods.
    pub fn modules(&self) -> ModuleClient {
        ModuleClient::new(self.clone())
    }

    /// Device twins.
    pub fn twins(&self) -> TwinClient {
        TwinClient::new(self.clone())
    }

    /// Direct methods.
    pub fn methods(&self) -> MethodClient {
        MethodClient::new(self.clone())
    }

    /// Scheduled jobs.
    pub fn jobs(&self) -> JobClient {
        JobClient::new(self.clone())
    }

    /// Queries over twins and job records.
    pub fn query(&self) -> QueryClient {
        QueryClient::new(self.clone())
    }

    /// Configurations (automatic device management and IoT Edge deployments).
    pub fn configurations(&self) -> ConfigurationClient {
        ConfigurationClient::new(self.clone())
    }

    /// Cloud-to-device messages, their feedback and the devices' queues.
    pub fn messages(&self) -> MessageClient {
        MessageClient::new(self.clone())
    }

    /// Closes the AMQP connection, if cloud-to-device messages opened one (a later send opens a new one).
    /// HTTPS needs no closing.
    pub async fn close(&self) {
        self.inner.amqp.close().await;
    }

    pub(crate) fn amqp(&self) -> &Amqp {
        &self.inner.amqp
    }

    fn token(&self) -> Result<String, Error> {
        let cs = &self.inner.connection_string;
        let expiry = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + TOKEN_LIFETIME_SECS;
        iothub_proto::generate_token(&cs.host_name, &cs.key, Some(&cs.key_name), expiry)
            .map_err(|e| Error::Config(format!("cannot sign with the policy key: {e}")))
    }

    async fn send_once(&self, call: &Call) -> Result<(StatusCode, HeaderMap, Vec<u8>), Error> {
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), format!("{}{}", self.inner.base, call.path))
            .query(&[("api-version", API_VERSION)])
            .query(&call.query)
            .header(reqwest::header::AUTHORIZATION, self.token()?);
        for (name, value) in &call.headers {
            let value =
                HeaderValue::from_str(value).map_err(|_| Error::Config(format!("header {name} is not valid")))?;
            request = request.header(name, value);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        } else if call.method == Method::POST || call.method == Method::PUT {
            request = request.header(reqwest::header::CONTENT_LENGTH, "0");
        }
        if let Some(timeout) = call.timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| Error::Transport(describe(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| Error::Transport(describe(&e)))?.to_vec();
        Ok((status, headers, body))
    }

    /// Sends `call`, retrying as its safety allows, and returns the answer or the hub's error.
    pub(crate) async fn send(&self, call: Call) -> Result<Answer, Error> {
        let policy = self.inner.retry;
        let mut attempt = 1;
        loop {
            let result = self.send_once(&call).await;
            let may_retry = attempt < policy.max_attempts;
            let wait = match &result {
                Ok((status, headers, _)) => retry_wait(*status, retry_after(headers), call.safety),
                Err(Error::Transport(_)) if call.safety == Safety::Idempotent => Some(None),
                Err(_) => None,
            }
            .map(|hint| hint.unwrap_or_else(|| policy.delay(attempt + 1)));
            match (wait, may_retry) {
                (Some(wait), true) => {
                    tracing::debug!(path = %call.path, attempt, ?wait, "retrying");
                    tokio::time::sleep(wait.min(policy.max_delay)).await;
                    attempt += 1;
                }
                _ => {
                    let (status, headers, body) = result?;
                    if status.is_success() {
                        return Ok(Answer { status, headers, body });
                    }
                    let code = headers.get("iothub-errorcode").and_then(|v| v.to_str().ok());
                    return Err(Error::from_answer(status.as_u16(), code, &body));
                }
            }
        }
    }
}

/// Whether an answer may be retried: `Some(hint)` (the hub's `Retry-After`, if any) or `None`. A 429 was not
/// processed, so any request may go again; a 5xx may have been, so only requests safe to repeat do.
fn retry_wait(status: StatusCode, retry_after: Option<Duration>, safety: Safety) -> Option<Option<Duration>> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        Some(retry_after)
    } else if status.is_server_error() && safety == Safety::Idempotent {
        Some(None)
    } else {
        None
    }
}

/// The hub's `Retry-After`, in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A transport error with its causes (reqwest's top-level text hides the TLS or socket reason).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_retries_are_made() {
        let hint = Some(Duration::from_secs(3));
        assert_eq!(
            retry_wait(StatusCode::TOO_MANY_REQUESTS, hint, Safety::Once),
            Some(hint),
            "throttled: never processed"
        );
        assert_eq!(retry_wait(StatusCode::TOO_MANY_REQUESTS, None, Safety::Idempotent), Some(None));
        assert_eq!(retry_wait(StatusCode::SERVICE_UNAVAILABLE, None, Safety::Idempotent), Some(None));
        assert_eq!(retry_wait(StatusCode::INTERNAL_SERVER_ERROR, None, Safety::Once), None, "might double-run");
        assert_eq!(retry_wait(StatusCode::NOT_FOUND, None, Safety::Idempotent), None);
        assert_eq!(retry_wait(StatusCode::PRECONDITION_FAILED, None, Safety::Idempotent), None);
    }

    #[test]
    fn back_off_is_jittered_and_capped() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(250),
        };
        for attempt in 2..8 {
            assert!(policy.delay(attempt) <= Duration::from_millis(250));
        }
        assert!(policy.delay(2) <= Duration::from_millis(100));
    }

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        assert_eq!(segment("a b#c?d/e%"), "a%20b%23c%3Fd%2Fe%25");
        assert_eq!(segment("plain-id_1.x~"), "plain-id_1.x~");
    }
}
