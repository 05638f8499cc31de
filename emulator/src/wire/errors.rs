//! Error bodies (wire-spec C.0.6): the HTTP envelope the SDKs parse, and the hub's JSON error object that the
//! direct-method envelope and MQTT twin error responses carry. Which status and code an error has is
//! `HubError::wire`; this is only how it is written.

use jiff::Timestamp;
use serde::Serialize;

use crate::clock::format_time;
use crate::error::{Envelope, HubError};

/// The hub's JSON error object, its members in the hub's order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    pub error_code: u32,
    pub tracking_id: String,
    pub message: String,
    pub info: ErrorInfo,
    pub timestamp_utc: String,
}

/// `info` of an error object: the connect timeout of a device that was not online, as a .NET TimeSpan.
#[derive(Debug, Default, Serialize)]
pub struct ErrorInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// The body of an HTTP error: `Message` and `ExceptionMessage`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    pub message: String,
    pub exception_message: String,
}

/// A tracking id as the hub prints it: a GUID, the gateway, and the time.
fn tracking_id(now: Timestamp) -> String {
    format!("{}-G:0-TimeStamp:{}", uuid::Uuid::new_v4().simple(), now.strftime("%m/%d/%Y %H:%M:%S"))
}

/// The error object of `error` (`{"errorCode","trackingId","message","info","timestampUtc"}`); the Node SDK
/// recognises MQTT twin errors by its `errorCode`.
pub fn detail(error: &HubError, now: Timestamp) -> ErrorDetail {
    let timeout = match error {
        HubError::DeviceNotOnline { connect_timeout_secs: Some(secs), .. } => {
            Some(format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60))
        }
        _ => None,
    };
    ErrorDetail {
        error_code: error.wire().number,
        tracking_id: tracking_id(now),
        message: error.to_string(),
        info: ErrorInfo { timeout },
        timestamp_utc: format_time(now),
    }
}

/// The error object as JSON text (the body of an MQTT twin error response).
pub fn detail_text(error: &HubError, now: Timestamp) -> String {
    serde_json::to_string(&detail(error, now)).unwrap_or_default()
}

/// The HTTP error body in the envelope the error calls for: `ErrorCode:<Code>;<text>` with a tracking id
/// (registry, twins, jobs), or the error object as text (direct methods).
pub fn body(error: &HubError, now: Timestamp) -> ErrorBody {
    let wire = error.wire();
    match wire.envelope {
        Envelope::Legacy => ErrorBody {
            message: format!("ErrorCode:{};{error}", wire.code),
            exception_message: format!("Tracking ID:{}", tracking_id(now)),
        },
        Envelope::Json => ErrorBody { message: detail_text(error, now), exception_message: String::new() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_600_000_000).expect("time")
    }

    #[test]
    fn method_errors_carry_the_hubs_texts_and_timeout_info() {
        let offline = HubError::DeviceNotOnline {
            message: "Timed out waiting for device to connect.".into(),
            connect_timeout_secs: Some(65),
        };
        let detail: serde_json::Value = serde_json::from_str(&detail_text(&offline, now())).expect("JSON");
        assert_eq!(detail["errorCode"], 404103);
        assert_eq!(detail["info"]["timeout"], "00:01:05");
        assert_eq!(detail["message"], "Timed out waiting for device to connect.");
        let keys: Vec<&String> = detail.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["errorCode", "trackingId", "message", "info", "timestampUtc"]);
        let timeout = body(&HubError::GatewayTimeout, now());
        assert!(timeout.message.contains("Timed out waiting for the response from device."));
        assert_eq!(timeout.exception_message, "");
    }

    #[test]
    fn other_errors_use_the_legacy_envelope() {
        let text = serde_json::to_string(&body(&HubError::DeviceNotFound("d1".into()), now())).expect("JSON");
        assert!(
            text.starts_with(
                r#"{"Message":"ErrorCode:DeviceNotFound;Device d1 not found","ExceptionMessage":"Tracking ID:"#
            ),
            "{text}"
        );
    }
}
