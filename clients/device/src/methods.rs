//! Direct methods as the device sees them: a request by name with a JSON payload, answered with a status and
//! a JSON payload by the handler registered for that name.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

/// A direct-method call from the back end.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodRequest {
    /// The method name, e.g. `lockDoor`.
    pub name: String,
    /// The payload (`null` when the caller sent none; a non-JSON payload arrives as a string).
    pub payload: Value,
}

/// A device's answer to a method call. Any status is passed back to the caller as is.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodResponse {
    /// The status the caller gets (the hub does not interpret it).
    pub status: i64,
    /// The JSON payload the caller gets.
    pub payload: Value,
}

impl MethodResponse {
    /// A 200 answer with `payload`.
    pub fn ok(payload: Value) -> Self {
        Self { status: 200, payload }
    }

    /// An answer with any status.
    pub fn new(status: i64, payload: Value) -> Self {
        Self { status, payload }
    }

    /// The answer to a method no handler is registered for: 501, as the Azure C# device SDK answers.
    pub fn not_implemented(name: &str) -> Self {
        Self::new(501, serde_json::json!({"message": format!("method '{name}' is not implemented by this device")}))
    }

    /// The answer when a handler panicked: 500.
    pub(crate) fn handler_failed(name: &str) -> Self {
        Self::new(500, serde_json::json!({"message": format!("the handler of method '{name}' failed")}))
    }

    /// The body sent to the hub: the payload as JSON text.
    pub(crate) fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.payload).unwrap_or_else(|_| b"null".to_vec())
    }
}

/// A registered method handler.
pub(crate) type Handler =
    Arc<dyn Fn(MethodRequest) -> Pin<Box<dyn Future<Output = MethodResponse> + Send>> + Send + Sync>;

/// Reads a method request body: empty means `null`, JSON is parsed, anything else is kept as a string.
pub(crate) fn parse_payload(body: &[u8]) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_read_like_the_sdks_do() {
        assert_eq!(parse_payload(b""), Value::Null);
        assert_eq!(parse_payload(b"null"), Value::Null);
        assert_eq!(parse_payload(br#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(parse_payload(b"plain text"), Value::String("plain text".into()));
        assert_eq!(MethodResponse::ok(Value::Null).body(), b"null");
        assert_eq!(MethodResponse::not_implemented("x").status, 501);
    }
}
