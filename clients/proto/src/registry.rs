//! Registry wire types (swagger `Device`, `AuthenticationMechanism`, `RegistryStatistics`, ...).
//!
//! Every member is optional when read, so partial bodies from any SDK parse; when written, absent values
//! appear as `null` like the hub prints them (except the edge-only scope members, which are left out).

use serde::{Deserialize, Serialize};

/// A device identity as `PUT/GET /devices/{id}` carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Device {
    /// `deviceId`: the device's id, unique in the hub.
    pub device_id: Option<String>,
    /// `generationId`: set by the hub at creation, so a device re-created with the same id is told apart.
    pub generation_id: Option<String>,
    /// `etag`: the identity's version tag, for `If-Match` on updates and deletes.
    pub etag: Option<String>,
    /// `connectionState`: `Connected` or `Disconnected`.
    pub connection_state: Option<String>,
    /// `status`: `enabled` or `disabled`; a disabled device cannot connect.
    pub status: Option<String>,
    /// `statusReason`: free text saying why the status was set (at most 128 characters).
    pub status_reason: Option<String>,
    /// `connectionStateUpdatedTime`: when `connectionState` last changed (ISO 8601 UTC).
    pub connection_state_updated_time: Option<String>,
    /// `statusUpdatedTime`: when `status` last changed (ISO 8601 UTC).
    pub status_updated_time: Option<String>,
    /// `lastActivityTime`: when the device last connected, sent or received a message (ISO 8601 UTC).
    pub last_activity_time: Option<String>,
    /// `cloudToDeviceMessageCount`: cloud-to-device messages queued for the device.
    pub cloud_to_device_message_count: Option<u64>,
    /// `authentication`: how the device authenticates, with its keys or thumbprints.
    pub authentication: Option<AuthenticationMechanism>,
    /// `capabilities`: what kind of device this is, e.g. an IoT Edge device.
    pub capabilities: Option<DeviceCapabilities>,
    /// `deviceScope`: the scope that ties the device to its parent edge device (edge only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// `parentScopes`: the scopes of the device's parent edge devices (edge only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_scopes: Option<Vec<String>>,
}

impl Device {
    /// An enabled device with SAS authentication whose keys the hub generates: what a create sends by default.
    pub fn sas(device_id: &str) -> Self {
        Self {
            device_id: Some(device_id.to_owned()),
            status: Some("enabled".into()),
            authentication: Some(AuthenticationMechanism {
                symmetric_key: Some(SymmetricKey::default()),
                kind: Some("sas".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A module identity as `PUT/GET /devices/{id}/modules/{mid}` carry it (swagger `Module`, in its member order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Module {
    /// `moduleId`: the module's id, unique on its device.
    pub module_id: Option<String>,
    /// `managedBy`: free text naming what manages the module (IoT Edge writes `IotEdge`).
    pub managed_by: Option<String>,
    /// `deviceId`: the device the module belongs to.
    pub device_id: Option<String>,
    /// `generationId`: set by the hub at creation, so a module re-created with the same id is told apart.
    pub generation_id: Option<String>,
    /// `etag`: the identity's version tag, for `If-Match` on updates and deletes.
    pub etag: Option<String>,
    /// `connectionState`: `Connected` or `Disconnected`.
    pub connection_state: Option<String>,
    /// `connectionStateUpdatedTime`: when `connectionState` last changed (ISO 8601 UTC).
    pub connection_state_updated_time: Option<String>,
    /// `lastActivityTime`: when the module last connected or sent a message (ISO 8601 UTC).
    pub last_activity_time: Option<String>,
    /// `cloudToDeviceMessageCount`: always 0 (modules receive no cloud-to-device messages).
    pub cloud_to_device_message_count: Option<u64>,
    /// `authentication`: how the module authenticates, with its keys or thumbprints.
    pub authentication: Option<AuthenticationMechanism>,
}

/// How a device authenticates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthenticationMechanism {
    /// `symmetricKey`: the SAS keys of a `sas` device.
    pub symmetric_key: Option<SymmetricKey>,
    /// `x509Thumbprint`: the certificate thumbprints of a `selfSigned` device.
    pub x509_thumbprint: Option<X509Thumbprint>,
    /// `sas`, `selfSigned`, `certificateAuthority` or `none`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// A device's two SAS keys (base64).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SymmetricKey {
    /// `primaryKey`: the primary key (base64).
    pub primary_key: Option<String>,
    /// `secondaryKey`: the secondary key (base64); tokens signed with either key are accepted.
    pub secondary_key: Option<String>,
}

/// A device's two X.509 thumbprints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct X509Thumbprint {
    /// `primaryThumbprint`: the primary certificate's thumbprint.
    pub primary_thumbprint: Option<String>,
    /// `secondaryThumbprint`: the secondary certificate's thumbprint.
    pub secondary_thumbprint: Option<String>,
}

/// Device capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceCapabilities {
    /// `iotEdge`: true for an IoT Edge device.
    pub iot_edge: Option<bool>,
}

/// One item of a bulk registry call (`POST /devices`): an identity and what to do with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExportImportDevice {
    /// `id`: the device's id.
    pub id: String,
    /// `moduleId`: set for a module item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// `eTag`: the identity's etag, for the `*IfMatchETag` identity modes.
    #[serde(rename = "eTag", skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `importMode`: `create`, `update`, `updateIfMatchETag`, `createOrUpdate`, `createOrUpdateIfMatchETag`,
    /// `delete`, `deleteIfMatchETag`, `updateTwin` or `updateTwinIfMatchETag` (none: `createOrUpdate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_mode: Option<String>,
    /// `status`: `enabled` or `disabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `statusReason`: why the status was set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// `authentication`: as for a single device; left out, SAS with generated keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationMechanism>,
    /// `twinETag`: the twin's etag, for `updateTwinIfMatchETag`.
    #[serde(rename = "twinETag", skip_serializing_if = "Option::is_none")]
    pub twin_etag: Option<String>,
    /// `tags`: the twin's tags to write (create and `updateTwin` modes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<serde_json::Value>,
    /// `properties`: `{"desired": {...}}` to write (create and `updateTwin` modes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
    /// `capabilities`: e.g. an IoT Edge device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<DeviceCapabilities>,
    /// `deviceScope`: the parent's scope, for a leaf child of an IoT Edge device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    /// `parentScopes`: the parent's scope, for a nested IoT Edge device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_scopes: Option<Vec<String>>,
}

/// The answer to a bulk registry call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BulkRegistryOperationResult {
    /// `isSuccessful`: every item succeeded.
    pub is_successful: bool,
    /// `errors`: one per failed item.
    pub errors: Vec<DeviceRegistryOperationError>,
    /// `warnings`: items that succeeded with a remark.
    pub warnings: Vec<DeviceRegistryOperationWarning>,
}

/// Why one item of a bulk call failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceRegistryOperationError {
    /// `deviceId`: the item's device.
    pub device_id: Option<String>,
    /// `errorCode`: the hub's numeric code (409001 DeviceAlreadyExists, 404001, 412001, ...). The hub writes a
    /// number although its REST definition says text; both are read.
    #[serde(deserialize_with = "number_or_text")]
    pub error_code: Option<u32>,
    /// `errorStatus`: the message.
    pub error_status: Option<String>,
    /// `moduleId`: the item's module, for a module item.
    pub module_id: Option<String>,
    /// `operation`: the item's import mode.
    pub operation: Option<String>,
}

/// A remark on an item of a bulk call that succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceRegistryOperationWarning {
    /// `deviceId`: the item's device.
    pub device_id: Option<String>,
    /// `warningCode`: e.g. `DeviceRegisteredWithoutTwin`.
    pub warning_code: Option<String>,
    /// `warningStatus`: the message.
    pub warning_status: Option<String>,
}

fn number_or_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(text) => text.parse().ok(),
        _ => None,
    })
}

/// `GET /statistics/devices`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatistics {
    /// `totalDeviceCount`: the devices in the registry.
    pub total_device_count: u64,
    /// `enabledDeviceCount`: the devices whose `status` is `enabled`.
    pub enabled_device_count: u64,
    /// `disabledDeviceCount`: the devices whose `status` is `disabled`.
    pub disabled_device_count: u64,
}

/// `GET /statistics/service`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatistics {
    /// `connectedDeviceCount`: the devices connected now.
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
