//! The device's view of its twin: desired and reported properties with their versions, and the changes to the
//! desired properties it is told about.

use serde_json::{Map, Value};

use crate::error::Error;

/// The twin as a device sees it (no tags: those are for the back end only).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Twin {
    /// Desired properties, without `$version`.
    pub desired: Map<String, Value>,
    /// The desired properties' `$version`.
    pub desired_version: u64,
    /// Reported properties, without `$version`.
    pub reported: Map<String, Value>,
    /// The reported properties' `$version`.
    pub reported_version: u64,
}

/// Takes `$version` out of a property section.
fn split_version(section: Option<&Value>) -> (Map<String, Value>, u64) {
    let mut map = section.and_then(Value::as_object).cloned().unwrap_or_default();
    let version = map.remove("$version").and_then(|v| v.as_u64()).unwrap_or(0);
    (map, version)
}

impl Twin {
    /// Reads the body of a `$iothub/twin/res/200` answer: `{"desired": {..}, "reported": {..}}`.
    pub(crate) fn from_response(body: &[u8]) -> Result<Self, Error> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Error::Twin { status: 200, message: format!("the twin is not JSON: {e}") })?;
        let (desired, desired_version) = split_version(value.get("desired"));
        let (reported, reported_version) = split_version(value.get("reported"));
        Ok(Self { desired, desired_version, reported, reported_version })
    }
}

/// A change to the desired properties.
#[derive(Debug, Clone, PartialEq)]
pub enum DesiredUpdate {
    /// A patch the back end made: changed members, `null` for removed ones.
    Patch {
        /// The desired `$version` after the patch.
        version: u64,
        /// The changed members (`$version` removed).
        patch: Map<String, Value>,
    },
    /// The whole desired section, read again after a reconnect, so that changes made while the device was away
    /// are not missed. Replaces everything known before.
    Full {
        /// The desired `$version`.
        version: u64,
        /// Every desired property (`$version` removed).
        desired: Map<String, Value>,
    },
}

impl DesiredUpdate {
    /// The `$version` the desired properties have after this update.
    pub fn version(&self) -> u64 {
        match self {
            Self::Patch { version, .. } | Self::Full { version, .. } => *version,
        }
    }

    /// Reads a desired-change notification; `version` from the topic when the body has none.
    pub(crate) fn from_patch(body: &[u8], topic_version: Option<u64>) -> Option<Self> {
        let mut patch: Map<String, Value> = serde_json::from_slice(body).ok()?;
        let version = patch.remove("$version").and_then(|v| v.as_u64()).or(topic_version).unwrap_or(0);
        Some(Self::Patch { version, patch })
    }
}

/// The message of a twin error answer: the hub's `message` member when the body is its JSON error, the raw text
/// otherwise.
pub(crate) fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn twin_answers_and_patches_are_read() {
        let twin = Twin::from_response(br#"{"desired":{"a":1,"$version":4},"reported":{"$version":2}}"#).expect("twin");
        assert_eq!((twin.desired.get("a"), twin.desired_version, twin.reported_version), (Some(&json!(1)), 4, 2));
        assert!(twin.reported.is_empty());
        let update = DesiredUpdate::from_patch(br#"{"floor":3,"$version":5}"#, Some(9)).expect("patch");
        assert_eq!(update.version(), 5);
        assert_eq!(DesiredUpdate::from_patch(b"{}", Some(9)).expect("patch").version(), 9);
        assert!(DesiredUpdate::from_patch(b"not json", None).is_none());
        assert_eq!(error_message(br#"{"errorCode":400004,"message":"bad key"}"#), "bad key");
        assert_eq!(error_message(b"plain"), "plain");
    }
}
