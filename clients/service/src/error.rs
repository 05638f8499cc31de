//! Service client errors. A hub error keeps what the hub said: HTTP status, `ErrorCode` and message.

use serde_json::Value;

/// A service client error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The connection string is not valid.
    #[error("invalid connection string: {0}")]
    ConnectionString(#[from] iothub_proto::ConnectionStringError),
    /// The options cannot work (bad CA PEM, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The hub answered with an error: over HTTPS, or by refusing a cloud-to-device message or a token over
    /// AMQP (then with the status and code the Azure SDKs report for the AMQP condition, e.g. `amqp:not-found`
    /// is 404 `DeviceNotFound`).
    #[error("the hub answered {status} {code}: {message}")]
    Hub {
        /// HTTP status.
        status: u16,
        /// The hub's symbolic error code (`DeviceNotFound`, `PreconditionFailed`, `JobNotFound`,
        /// `DeviceMaximumQueueDepthExceeded`, `MessageTooLarge`, `IotHubUnauthorizedAccess`, ...).
        code: String,
        /// The hub's message.
        message: String,
        /// The hub's numeric code (e.g. 404103) when its body gives one.
        number: Option<u32>,
    },
    /// The hub could not be reached, or the connection broke.
    #[error("request to the hub failed: {0}")]
    Transport(String),
    /// The hub's answer was not what the API promises.
    #[error("unexpected answer from the hub: {0}")]
    Decode(String),
    /// A wait (e.g. for a job, or for the hub's answer over AMQP) ran out of time.
    #[error("gave up waiting after {0:?}")]
    Timeout(std::time::Duration),
}

impl Error {
    /// The hub's error code, when the hub answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Hub { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when the hub answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Hub { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Reads an error answer. The hub uses two bodies (wire-spec C.0.6):
    /// `{"Message":"ErrorCode:<Code>;<text>",..}` and, for direct methods,
    /// `{"Message":"{\"errorCode\":404103,..,\"message\":\"..\"}",..}`; the `iothub-errorcode` header names the code.
    pub(crate) fn from_answer(status: u16, code_header: Option<&str>, body: &[u8]) -> Self {
        let outer: Option<Value> = serde_json::from_slice(body).ok();
        let text = outer.as_ref().and_then(|v| v.get("Message")).and_then(Value::as_str).unwrap_or_default();
        let (mut code, mut message, mut number) = (None, text.to_owned(), None);
        if let Some(rest) = text.strip_prefix("ErrorCode:") {
            let (name, detail) = rest.split_once(';').unwrap_or((rest, ""));
            code = Some(name.to_owned());
            message = detail.to_owned();
        } else if let Ok(inner) = serde_json::from_str::<Value>(text) {
            number = inner.get("errorCode").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok());
            if let Some(inner_message) = inner.get("message").and_then(Value::as_str) {
                message = inner_message.to_owned();
            }
        }
        if message.is_empty() {
            message = String::from_utf8_lossy(body).chars().take(500).collect();
        }
        let code = code_header.map(str::to_owned).or(code).unwrap_or_else(|| format!("Http{status}"));
        Self::Hub { status, code, message, number }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_hub_error_bodies_are_read() {
        let legacy =
            br#"{"Message":"ErrorCode:DeviceNotFound;Device d1 not found","ExceptionMessage":"Tracking ID:x"}"#;
        let error = Error::from_answer(404, None, legacy);
        assert_eq!(
            error,
            Error::Hub {
                status: 404,
                code: "DeviceNotFound".into(),
                message: "Device d1 not found".into(),
                number: None
            }
        );
        let json = br#"{"Message":"{\"errorCode\":404103,\"message\":\"Timed out waiting for device to connect.\"}","ExceptionMessage":""}"#;
        let error = Error::from_answer(404, Some("DeviceNotOnline"), json);
        assert_eq!(error.code(), Some("DeviceNotOnline"));
        assert!(matches!(&error, Error::Hub { number: Some(404103), message, .. } if message.starts_with("Timed out")));
        let bare = Error::from_answer(502, None, b"bad gateway");
        assert_eq!((bare.code(), bare.status()), (Some("Http502"), Some(502)));
    }
}
