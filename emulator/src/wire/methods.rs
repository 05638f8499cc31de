//! Direct methods on the wire (wire-spec C.4, B.11): reading a `CloudToDeviceMethod` body into a call, with
//! the payload kept as the caller's JSON text, reading the device's answer, and the `{status, payload}` result
//! (`iothub_proto::methods::CloudToDeviceMethodResult`, shared with the Rust clients).

use std::time::Duration;

use iothub_proto::methods::CloudToDeviceMethodResult;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::domain::methods::{
    DEFAULT_RESPONSE_TIMEOUT_SECS, MAX_CONNECT_TIMEOUT_SECS, MAX_PAYLOAD_BYTES, MAX_RESPONSE_TIMEOUT_SECS,
    MIN_RESPONSE_TIMEOUT_SECS, MethodCall, MethodResponse, validate_name,
};
use crate::error::HubError;

/// A `CloudToDeviceMethod` body as sent: members read loosely so a wrong type gets the hub's own message, and the
/// payload left as the caller's JSON text, so it reaches the device member for member as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodBody {
    method_name: Option<Value>,
    payload: Option<Box<RawValue>>,
    response_timeout_in_seconds: Option<Value>,
    connect_timeout_in_seconds: Option<Value>,
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

/// Checks a method body (`methodName`, `payload`, `responseTimeoutInSeconds`, `connectTimeoutInSeconds`),
/// filling in the hub's defaults.
pub fn parse_call(body: &MethodBody) -> Result<MethodCall, HubError> {
    let name = match &body.method_name {
        None | Some(Value::Null) => return Err(HubError::ArgumentNull("methodName is required".into())),
        Some(Value::String(name)) => name.clone(),
        Some(other) => return Err(HubError::ArgumentInvalid(format!("methodName must be a string, not {other}"))),
    };
    validate_name(&name)?;
    let payload = body.payload.as_ref().map_or("null", |raw| raw.get()).to_owned();
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(HubError::MessageTooLarge(format!("The method payload is larger than {MAX_PAYLOAD_BYTES} bytes")));
    }
    Ok(MethodCall {
        name,
        payload,
        response_timeout: timeout(
            "responseTimeoutInSeconds",
            body.response_timeout_in_seconds.as_ref(),
            DEFAULT_RESPONSE_TIMEOUT_SECS,
            MIN_RESPONSE_TIMEOUT_SECS,
            MAX_RESPONSE_TIMEOUT_SECS,
        )?,
        connect_timeout: timeout(
            "connectTimeoutInSeconds",
            body.connect_timeout_in_seconds.as_ref(),
            0,
            0,
            MAX_CONNECT_TIMEOUT_SECS,
        )?,
    })
}

/// Checks a method body given as a parsed JSON value (a job's `cloudToDeviceMethod`).
pub fn parse_call_value(value: &Value) -> Result<MethodCall, HubError> {
    if !value.is_object() {
        return Err(HubError::ArgumentInvalid("The method request must be a JSON object".into()));
    }
    let body = MethodBody::deserialize(value)
        .map_err(|e| HubError::ArgumentInvalid(format!("The method request is invalid: {e}")))?;
    parse_call(&body)
}

/// Reads a device's answer: an empty body is `null`; a body that is not JSON is passed on as a JSON string
/// (wire-spec H.25). JSON keeps its members in the device's order.
pub fn parse_response(status: i64, body: &[u8]) -> MethodResponse {
    let payload = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    };
    MethodResponse { status, payload }
}

/// The answer of `POST /twins/{id}/methods`: the device's status and payload.
pub fn result(response: MethodResponse) -> CloudToDeviceMethodResult {
    CloudToDeviceMethodResult { status: response.status, payload: response.payload }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<MethodCall, HubError> {
        let body: MethodBody = serde_json::from_str(text).map_err(|e| HubError::ArgumentInvalid(e.to_string()))?;
        parse_call(&body)
    }

    #[test]
    fn defaults_and_ranges() {
        let call = parse(r#"{"methodName":"lockDoor"}"#).expect("call");
        assert_eq!(call.payload, "null");
        assert_eq!(call.response_timeout, Duration::from_secs(30));
        assert_eq!(call.connect_timeout, Duration::ZERO);
        let call = parse(
            r#"{"methodName":"m","payload":{"z":1,"a":[2, 1.50]},"responseTimeoutInSeconds":5,"connectTimeoutInSeconds":300}"#,
        )
        .expect("call");
        assert_eq!(call.payload, r#"{"z":1,"a":[2, 1.50]}"#, "the payload is the caller's text");
        for bad in [
            r#"{"methodName":"m","responseTimeoutInSeconds":4}"#,
            r#"{"methodName":"m","responseTimeoutInSeconds":301}"#,
            r#"{"methodName":"m","connectTimeoutInSeconds":-1}"#,
            r#"{"methodName":"m","connectTimeoutInSeconds":1.5}"#,
            r#"{"methodName":"a/b"}"#,
            r#"{"methodName":7}"#,
            "[1]",
        ] {
            assert!(matches!(parse(bad), Err(HubError::ArgumentInvalid(_))), "{bad}");
        }
        assert!(matches!(parse("{}"), Err(HubError::ArgumentNull(_))));
        let big = json!({"methodName":"m","payload":"x".repeat(MAX_PAYLOAD_BYTES)}).to_string();
        assert!(matches!(parse(&big), Err(HubError::MessageTooLarge(_))));
        let from_value = parse_call_value(&json!({"methodName":"m","payload":{"b":1,"a":2}})).expect("call");
        assert_eq!(from_value.payload, r#"{"b":1,"a":2}"#);
        assert!(parse_call_value(&json!([1])).is_err());
    }

    #[test]
    fn device_answers_of_every_shape() {
        assert_eq!(parse_response(200, b"").payload, Value::Null);
        assert_eq!(parse_response(200, b"null").payload, Value::Null);
        assert_eq!(parse_response(299, br#"{"ok":true}"#), MethodResponse { status: 299, payload: json!({"ok":true}) });
        assert_eq!(parse_response(500, b"not json").payload, json!("not json"));
        let ordered = parse_response(200, br#"{"zulu":1,"alpha":2}"#);
        assert_eq!(
            serde_json::to_string(&result(ordered)).expect("json"),
            r#"{"status":200,"payload":{"zulu":1,"alpha":2}}"#
        );
    }
}
