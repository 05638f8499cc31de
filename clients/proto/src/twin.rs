//! Twin wire types (swagger `Twin`, `TwinProperties`) as `GET/PATCH/PUT /twins/{id}` and queries carry them.
//!
//! Members are optional and left out when unset, so a patch carries only what it changes. Property maps keep the
//! hub's `$metadata` and `$version` members as they came.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::registry::{DeviceCapabilities, X509Thumbprint};

/// A device twin, its members in the hub's order (wire-spec D.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Twin {
    /// `deviceId`: the device the twin belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `moduleId`: the module the twin belongs to, for module twins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// `etag`: the twin's version tag, for `If-Match` on twin writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `deviceEtag`: the `etag` of the device identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_etag: Option<String>,
    /// `status`: the device's status, `enabled` or `disabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `statusReason`: free text saying why the status was set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// `statusUpdateTime`: when `status` last changed (ISO 8601 UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_update_time: Option<String>,
    /// `connectionState`: `Connected` or `Disconnected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_state: Option<String>,
    /// `lastActivityTime`: when the device last connected, sent or received a message (ISO 8601 UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<String>,
    /// `cloudToDeviceMessageCount`: cloud-to-device messages queued for the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_to_device_message_count: Option<u64>,
    /// `authenticationType`: `sas`, `selfSigned`, `certificateAuthority` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_type: Option<String>,
    /// `x509Thumbprint`: the device's certificate thumbprints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x509_thumbprint: Option<X509Thumbprint>,
    /// `modelId`: the IoT Plug and Play model the device announced; empty when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// `version`: the twin's version number, which grows with every change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// `tags`: metadata the service sets and reads; devices do not see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Map<String, Value>>,
    /// `properties`: the desired and reported properties.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<TwinProperties>,
    /// `capabilities`: what kind of device this is, e.g. an IoT Edge device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<DeviceCapabilities>,
}

/// The desired and reported property sections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TwinProperties {
    /// `desired`: properties the service sets for the device to act on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<Map<String, Value>>,
    /// `reported`: properties the device sets to report its state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported: Option<Map<String, Value>>,
}

impl Twin {
    /// A patch of desired properties (`null` members remove).
    pub fn desired_patch(desired: Map<String, Value>) -> Self {
        Self { properties: Some(TwinProperties { desired: Some(desired), reported: None }), ..Self::default() }
    }

    /// A patch of tags (`null` members remove).
    pub fn tags_patch(tags: Map<String, Value>) -> Self {
        Self { tags: Some(tags), ..Self::default() }
    }

    /// The desired properties (with `$metadata` and `$version` as the hub sent them).
    pub fn desired(&self) -> Option<&Map<String, Value>> {
        self.properties.as_ref()?.desired.as_ref()
    }

    /// The reported properties (with `$metadata` and `$version` as the hub sent them).
    pub fn reported(&self) -> Option<&Map<String, Value>> {
        self.properties.as_ref()?.reported.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_carries_only_what_it_sets() {
        let patch = Twin::desired_patch(serde_json::json!({"floor": 3}).as_object().cloned().unwrap_or_default());
        assert_eq!(serde_json::to_string(&patch).expect("json"), r#"{"properties":{"desired":{"floor":3}}}"#);
        let twin: Twin = serde_json::from_str(
            r#"{"deviceId":"d","etag":"AAAA","version":2,"properties":{"desired":{"$version":1}},"unknown":1}"#,
        )
        .expect("parse");
        assert_eq!(twin.desired().and_then(|d| d.get("$version")), Some(&serde_json::json!(1)));
        assert!(twin.reported().is_none());
    }
}
