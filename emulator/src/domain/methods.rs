//! Direct methods: request validation, the device's answer, and the table of calls waiting for an answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
#[derive(Debug, Clone, PartialEq)]
pub struct MethodCall {
    pub name: String,
    /// The payload as JSON text, exactly what the device receives (`null` when none).
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

fn timeout(name: &str, given: Option<&Value>, default: u64, min: u64, max: u64) -> Result<Duration, HubError> {
    let secs = match given {
        None | Some(Value::Null) => default,
        Some(value) => value.as_u64().filter(|s| (min..=max).contains(s)).ok_or_else(|| {
            HubError::ArgumentInvalid(format!(
                "{name} must be a whole number of seconds from {min} to {max}, not {value}"
            ))
        })?,
    };
    Ok(Duration::from_secs(secs))
}

/// Checks a `CloudToDeviceMethod` body (`methodName`, `payload`, `responseTimeoutInSeconds`,
/// `connectTimeoutInSeconds`), filling in the hub's defaults.
pub fn parse_call(body: &Value) -> Result<MethodCall, HubError> {
    let Value::Object(body) = body else {
        return Err(HubError::ArgumentInvalid("The method request must be a JSON object".into()));
    };
    let name = match body.get("methodName") {
        None | Some(Value::Null) => return Err(HubError::ArgumentNull("methodName is required".into())),
        Some(Value::String(name)) => name.clone(),
        Some(other) => return Err(HubError::ArgumentInvalid(format!("methodName must be a string, not {other}"))),
    };
    validate_name(&name)?;
    let payload = body.get("payload").cloned().unwrap_or(Value::Null).to_string();
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(HubError::MessageTooLarge(format!("The method payload is larger than {MAX_PAYLOAD_BYTES} bytes")));
    }
    Ok(MethodCall {
        name,
        payload,
        response_timeout: timeout(
            "responseTimeoutInSeconds",
            body.get("responseTimeoutInSeconds"),
            DEFAULT_RESPONSE_TIMEOUT_SECS,
            MIN_RESPONSE_TIMEOUT_SECS,
            MAX_RESPONSE_TIMEOUT_SECS,
        )?,
        connect_timeout: timeout(
            "connectTimeoutInSeconds",
            body.get("connectTimeoutInSeconds"),
            0,
            0,
            MAX_CONNECT_TIMEOUT_SECS,
        )?,
    })
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

/// Reads a device's answer: an empty body is `null`; a body that is not JSON is passed on as a JSON string
/// (wire-spec H.25).
pub fn parse_response(status: i64, body: &[u8]) -> MethodResponse {
    let payload = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    };
    MethodResponse { status, payload }
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
    use serde_json::json;

    #[test]
    fn defaults_and_ranges() {
        let call = parse_call(&json!({"methodName":"lockDoor"})).expect("call");
        assert_eq!(call.payload, "null");
        assert_eq!(call.response_timeout, Duration::from_secs(30));
        assert_eq!(call.connect_timeout, Duration::ZERO);
        let call = parse_call(
            &json!({"methodName":"m","payload":{"a":1},"responseTimeoutInSeconds":5,"connectTimeoutInSeconds":300}),
        )
        .expect("call");
        assert_eq!(call.payload, r#"{"a":1}"#);
        for bad in [
            json!({"methodName":"m","responseTimeoutInSeconds":4}),
            json!({"methodName":"m","responseTimeoutInSeconds":301}),
            json!({"methodName":"m","connectTimeoutInSeconds":-1}),
            json!({"methodName":"m","connectTimeoutInSeconds":1.5}),
            json!({"methodName":"a/b"}),
            json!({"methodName":7}),
            json!([1]),
        ] {
            assert!(matches!(parse_call(&bad), Err(HubError::ArgumentInvalid(_))), "{bad}");
        }
        assert!(matches!(parse_call(&json!({})), Err(HubError::ArgumentNull(_))));
        let big = json!({"methodName":"m","payload":"x".repeat(MAX_PAYLOAD_BYTES)});
        assert!(matches!(parse_call(&big), Err(HubError::MessageTooLarge(_))));
    }

    #[test]
    fn device_answers_of_every_shape() {
        assert_eq!(parse_response(200, b"").payload, Value::Null);
        assert_eq!(parse_response(200, b"null").payload, Value::Null);
        assert_eq!(parse_response(299, br#"{"ok":true}"#), MethodResponse { status: 299, payload: json!({"ok":true}) });
        assert_eq!(parse_response(500, b"not json").payload, json!("not json"));
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
