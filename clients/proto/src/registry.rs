//! Registry wire types (swagger `Device`, `AuthenticationMechanism`, `RegistryStatistics`, ...).
//!
//! Every member is optional when read, so partial bodies from any SDK parse; when written, absent values
//! appear as `null` like the hub prints them (except the edge-only scope members, which are left out).

use serde::{Deserialize, Serialize};

/// A device identity as `PUT/GET /devices/{id}` carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Device {
    pub device_id: Option<String>,
    pub generation_id: Option<String>,
    pub etag: Option<String>,
    pub connection_state: Option<String>,
    pub status: Option<String>,
    pub status_reason: Option<String>,
    pub connection_state_updated_time: Option<String>,
    pub status_updated_time: Option<String>,
    pub last_activity_time: Option<String>,
    pub cloud_to_device_message_count: Option<u64>,
    pub authentication: Option<AuthenticationMechanism>,
    pub capabilities: Option<DeviceCapabilities>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_scopes: Option<Vec<String>>,
}

/// How a device authenticates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthenticationMechanism {
    pub symmetric_key: Option<SymmetricKey>,
    pub x509_thumbprint: Option<X509Thumbprint>,
    /// `sas`, `selfSigned`, `certificateAuthority` or `none`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// A device's two SAS keys (base64).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SymmetricKey {
    pub primary_key: Option<String>,
    pub secondary_key: Option<String>,
}

/// A device's two X.509 thumbprints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct X509Thumbprint {
    pub primary_thumbprint: Option<String>,
    pub secondary_thumbprint: Option<String>,
}

/// Device capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceCapabilities {
    pub iot_edge: Option<bool>,
}

/// `GET /statistics/devices`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatistics {
    pub total_device_count: u64,
    pub enabled_device_count: u64,
    pub disabled_device_count: u64,
}

/// `GET /statistics/service`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatistics {
    pub connected_device_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_create_body_parses() {
        let body = r#"{"deviceId":"d","status":"enabled","authentication":{"symmetricKey":{"primaryKey":"","secondaryKey":""},"type":"sas"}}"#;
        let device: Device = serde_json::from_str(body).expect("parse");
        assert_eq!(device.device_id.as_deref(), Some("d"));
        let auth = device.authentication.expect("auth");
        assert_eq!(auth.kind.as_deref(), Some("sas"));
        assert_eq!(auth.symmetric_key.and_then(|k| k.primary_key).as_deref(), Some(""));
    }

    #[test]
    fn unset_members_print_as_null_except_scopes() {
        let text = serde_json::to_string(&Device::default()).expect("serialize");
        assert!(text.contains(r#""statusReason":null"#), "{text}");
        assert!(!text.contains("deviceScope"), "{text}");
    }
}
