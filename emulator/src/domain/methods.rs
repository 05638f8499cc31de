//! Direct methods: the call and its limits, the device's answer, and the table of calls waiting for an answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::error::HubError;

/// Largest request or response payload, as JSON text (wire-spec B.11).
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;
/// `responseTimeoutInSeconds`: default and range (wire-spec C.4).
pub const DEFAULT_RESPONSE_TIMEOUT_SECS: u64 = 30;
pub const MIN_RESPONSE_TIMEOUT_SECS: u64 = 5;
pub const MAX_RESPONSE_TIMEOUT_SECS: u64 = 300;
/// `connectTimeoutInSeconds`: default (the device must already be connected) and maximum.
pub const MAX_CONNECT_TIMEOUT_SECS: u64 = 300;
/// Longest method name; names become a topic level, so `/`, `+`, `#` and `?` are refused too.
pub const MAX_METHOD_NAME_LEN: usize = 256;

/// A validated invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodCall {
    pub name: String,
    /// The payload as JSON text, as the caller wrote it: exactly what the device receives (`null` when none).
    pub payload: String,
    pub response_timeout: Duration,
    pub connect_timeout: Duration,
}

/// What the device answered.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodResponse {
    pub status: i64,
    pub payload: Value,
}

/// Checks a method name: non-empty, bounded, and safe as an MQTT topic level.
pub fn validate_name(name: &str) -> Result<(), HubError> {
    if name.is_empty() {
        return Err(HubError::ArgumentNull("methodName must not be empty".into()));
    }
    if name.len() > MAX_METHOD_NAME_LEN || name.chars().any(|c| matches!(c, '/' | '+' | '#' | '?') || c.is_control()) {
        return Err(HubError::ArgumentInvalid(format!(
            "methodName must be at most {MAX_METHOD_NAME_LEN} characters without '/', '+', '#', '?' or control characters"
        )));
    }
    Ok(())
}

struct Waiting {
    device_id: String,
    reply: oneshot::Sender<MethodResponse>,
}

/// Calls handed to devices and not answered yet, by request id (`$rid`). A device can only answer its own.
#[derive(Default)]
pub struct PendingCalls {
    next_rid: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
}

impl PendingCalls {
    /// Registers a call to `device_id`; returns its request id and where the answer will arrive.
    pub fn register(&self, device_id: &str) -> (u64, oneshot::Receiver<MethodResponse>) {
        let rid = self.next_rid.fetch_add(1, Ordering::Relaxed) + 1;
        let (reply, answer) = oneshot::channel();
        self.lock().insert(rid, Waiting { device_id: device_id.to_owned(), reply });
        (rid, answer)
    }

    /// Delivers `device_id`'s answer to call `rid`. False when there is no such call for that device (an unknown,
    /// expired or foreign `$rid`), which the hub silently drops.
    pub fn complete(&self, device_id: &str, rid: u64, response: MethodResponse) -> bool {
        let mut waiting = self.lock();
        match waiting.get(&rid) {
            Some(w) if w.device_id == device_id => waiting.remove(&rid).is_some_and(|w| w.reply.send(response).is_ok()),
            _ => false,
        }
    }

    /// Forgets a call that timed out or could not be delivered.
    pub fn forget(&self, rid: u64) {
        self.lock().remove(&rid);
    }

    /// How many calls are waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no call is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_become_a_topic_level() {
        validate_name("lockDoor").expect("plain name");
        for bad in ["", "a/b", "a+b", "a#", "a?b", &"m".repeat(MAX_METHOD_NAME_LEN + 1)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn only_the_called_device_can_answer() {
        let pending = PendingCalls::default();
        let (rid, answer) = pending.register("d1");
        let response = MethodResponse { status: 200, payload: Value::Null };
        assert!(!pending.complete("d2", rid, response.clone()), "another device cannot answer");
        assert!(!pending.complete("d1", rid + 100, response.clone()), "unknown rid");
        assert!(pending.complete("d1", rid, response.clone()));
        assert_eq!(answer.await.expect("answer"), response);
        assert!(!pending.complete("d1", rid, response), "answered once");
        assert!(pending.is_empty());
    }
}
