//! How a device client connects: transport, trust, port, token lifetime, keep-alive and retry policy.

use std::time::Duration;

/// The protocol between the device and the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// MQTT 3.1.1 over TLS, port 8883 by default.
    #[default]
    Mqtt,
    /// MQTT over secure WebSockets at `/$iothub/websocket`, port 443 by default (for networks that block 8883).
    WebSocket,
}

impl Transport {
    /// The port the hub serves this transport on.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Mqtt => 8883,
            Self::WebSocket => 443,
        }
    }
}

pub use iothub_proto::tls::Trust;

/// Exponential back-off with full jitter between reconnection attempts after transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Upper bound of the first delay.
    pub initial_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
    /// Attempts after which the client gives up (`None`: keep trying while failures are transient).
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { initial_delay: Duration::from_millis(500), max_delay: Duration::from_secs(60), max_attempts: None }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt` (1-based): uniformly random up to `initial * 2^(attempt-1)`, capped,
    /// so a fleet that lost the hub at once does not come back at once.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let ceiling = self.initial_delay.saturating_mul(1 << exponent).min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(if nanos == 0 { 0 } else { rand::random_range(0..=nanos) })
    }

    /// True when attempt `attempt` may still be made.
    pub fn allows(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt <= max)
    }
}

/// Settings of a device client. `ClientOptions::default()` suits a real hub; for the emulator set
/// [`Trust::CaPem`] (and a port when it does not listen on 8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// MQTT over TLS or over WebSockets.
    pub transport: Transport,
    /// Which CAs to trust for the hub's certificate.
    pub trust: Trust,
    /// Port to connect to, overriding the transport's default and any port in `GatewayHostName`.
    pub port: Option<u16>,
    /// Lifetime of each SAS token. A new token is made, and the connection renewed with it, a quarter of the
    /// lifetime before the current one expires.
    pub token_lifetime: Duration,
    /// MQTT keep-alive: a ping goes out when the connection is quiet, and a hub that stays silent for this long
    /// is taken as gone.
    pub keep_alive: Duration,
    /// How long twin requests wait for their answer.
    pub request_timeout: Duration,
    /// How long the first connection may take, retries included, before `connect` gives up.
    pub connect_timeout: Duration,
    /// How reconnection attempts are spaced and bounded.
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            transport: Transport::Mqtt,
            trust: Trust::PlatformRoots,
            port: None,
            token_lifetime: Duration::from_secs(3600),
            keep_alive: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

impl ClientOptions {
    /// Trusts only the CA certificates in `pem` (the emulator's `ca.pem`).
    pub fn with_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.trust = Trust::CaPem(pem.into());
        self
    }

    /// Connects to `port` instead of the transport's default.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Uses `transport`.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Makes SAS tokens that live for `lifetime` (renewed a quarter of it before they expire).
    pub fn with_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// Reconnects with `retry`.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_grows_to_its_cap_with_jitter() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_attempts: Some(5),
        };
        for attempt in 1..=10 {
            let ceiling = Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_secs(2));
            for _ in 0..50 {
                assert!(policy.delay(attempt) <= ceiling, "attempt {attempt}");
            }
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| policy.delay(4)).collect();
        assert!(spread.len() > 10, "delays are jittered");
        assert!(policy.allows(5) && !policy.allows(6));
        assert!(RetryPolicy::default().allows(u32::MAX));
    }
}
