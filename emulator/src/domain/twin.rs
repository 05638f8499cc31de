//! The device twin: tags, desired and reported properties, their versions and `$metadata`, and the full twin
//! document (wire-spec D.1) that the REST API returns and queries run over.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::registry::Device;
use crate::clock::{format_optional_time, format_time};

/// One property section (`desired` or `reported`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub properties: Map<String, Value>,
    /// `$version`: starts at 1, grows by one on every write of this section.
    pub version: u64,
    /// `$metadata`: mirrors `properties` with `$lastUpdated` (and `$lastUpdatedVersion` for desired) per node.
    pub metadata: Map<String, Value>,
}

impl Section {
    fn new(now: Timestamp, with_version_stamps: bool) -> Self {
        let mut metadata = Map::new();
        metadata.insert("$lastUpdated".into(), Value::String(format_time(now)));
        if with_version_stamps {
            metadata.insert("$lastUpdatedVersion".into(), json!(1));
        }
        Self { properties: Map::new(), version: 1, metadata }
    }

    /// The section as the REST API shows it: properties plus `$metadata` and `$version`.
    pub fn document(&self) -> Value {
        let mut out = self.properties.clone();
        out.insert("$metadata".into(), Value::Object(self.metadata.clone()));
        out.insert("$version".into(), json!(self.version));
        Value::Object(out)
    }
}

/// The twin of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Twin {
    /// Twin `version`: starts at 1 and grows on every twin write; the twin etag is derived from it.
    pub version: u64,
    pub tags: Map<String, Value>,
    pub desired: Section,
    pub reported: Section,
}

impl Twin {
    /// A new twin as the hub makes it with its device: empty sections at `$version` 1.
    pub fn new(now: Timestamp) -> Self {
        Self { version: 1, tags: Map::new(), desired: Section::new(now, true), reported: Section::new(now, false) }
    }

    /// The twin etag: base64 of the 8-byte big-endian version (`AAAAAAAAAAE=` for a new twin), as real hubs show.
    pub fn etag(&self) -> String {
        BASE64.encode(self.version.to_be_bytes())
    }
}

/// The full twin document of a device (wire-spec D.1): identity fields, tags and both property sections.
pub fn twin_document(device: &Device, connected: bool) -> Value {
    let auth = &device.authentication;
    let mut doc = json!({
        "deviceId": device.device_id,
        "etag": device.twin.etag(),
        "deviceEtag": device.etag(),
        "status": device.status.as_str(),
        "statusReason": device.status_reason,
        "statusUpdateTime": format_optional_time(device.status_updated),
        "connectionState": if connected { "Connected" } else { "Disconnected" },
        "lastActivityTime": format_optional_time(device.last_activity),
        "cloudToDeviceMessageCount": device.cloud_to_device_message_count,
        "authenticationType": auth.kind.as_str(),
        "x509Thumbprint": {
            "primaryThumbprint": auth.primary_thumbprint,
            "secondaryThumbprint": auth.secondary_thumbprint,
        },
        "modelId": "",
        "version": device.twin.version,
        "tags": Value::Object(device.twin.tags.clone()),
        "properties": {
            "desired": device.twin.desired.document(),
            "reported": device.twin.reported.document(),
        },
        "capabilities": { "iotEdge": device.iot_edge },
    });
    if let (Some(scope), Value::Object(map)) = (&device.device_scope, &mut doc) {
        map.insert("deviceScope".into(), Value::String(scope.clone()));
        map.insert("parentScopes".into(), json!(device.parent_scopes));
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::registry::{DeviceSpec, create_device};

    #[test]
    fn a_new_twin_looks_like_the_hubs() {
        let now: Timestamp = "2026-01-02T03:04:05.5Z".parse().expect("time");
        let device = create_device("dev1", &DeviceSpec::default(), now, 3).expect("create");
        let doc = twin_document(&device, false);
        assert_eq!(doc["etag"], "AAAAAAAAAAE=");
        assert_eq!(doc["version"], 1);
        assert_eq!(doc["tags"], json!({}));
        assert_eq!(doc["properties"]["desired"]["$version"], 1);
        assert_eq!(doc["properties"]["reported"]["$version"], 1);
        assert_eq!(doc["properties"]["desired"]["$metadata"]["$lastUpdated"], "2026-01-02T03:04:05.5000000Z");
        assert_eq!(doc["properties"]["desired"]["$metadata"]["$lastUpdatedVersion"], 1);
        assert!(doc["properties"]["reported"]["$metadata"].get("$lastUpdatedVersion").is_none());
        assert_eq!(doc["statusUpdateTime"], "0001-01-01T00:00:00Z");
        assert_eq!(doc["deviceEtag"], device.etag());
        assert_eq!(doc["connectionState"], "Disconnected");
    }
}
