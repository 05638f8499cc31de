//! The device twin: tags, desired and reported properties, their versions and `$metadata`, and the full twin
//! document (wire-spec D.1) that the REST API returns and queries run over.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::properties::{self, SectionKind, Stamp};
use super::registry::{Device, Liveness};
use crate::clock::{format_optional_time, format_time};
use crate::error::HubError;

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

    /// What a device sees on `$iothub/twin/GET`: both property sections with their `$version`, no `$metadata`
    /// and no tags (wire-spec B.8).
    pub fn device_view(&self) -> Value {
        let section = |s: &Section| {
            let mut out = s.properties.clone();
            out.insert("$version".into(), json!(s.version));
            Value::Object(out)
        };
        json!({ "desired": section(&self.desired), "reported": section(&self.reported) })
    }

    /// Applies a service write (REST PATCH/PUT, twin-update jobs). Returns the new twin and, when desired
    /// properties changed, the notification body for the device (changed members, `null` for removed ones,
    /// and `$version`). Nothing changes when any part is invalid.
    pub fn apply_service_write(
        &self,
        write: &TwinWrite,
        mode: WriteMode,
        now: Timestamp,
    ) -> Result<TwinChange, HubError> {
        let mut next = self.clone();
        let mut changed = false;
        let time = format_time(now);
        if let Some(tags) = &write.tags {
            let tags = tags.clone().map(properties::without_section_markers);
            match (tags, mode) {
                (Some(patch), WriteMode::Merge) if patch.is_empty() => {}
                (Some(patch), WriteMode::Merge) => {
                    properties::validate(SectionKind::Tags, &patch, true)?;
                    properties::merge(
                        &mut next.tags,
                        &mut Map::new(),
                        &patch,
                        &Stamp { time: time.clone(), version: None },
                    );
                    changed = true;
                }
                (new, _) => {
                    let new = new.unwrap_or_default();
                    properties::validate(SectionKind::Tags, &new, true)?;
                    properties::replace(
                        &mut next.tags,
                        &mut Map::new(),
                        &new,
                        &Stamp { time: time.clone(), version: None },
                    );
                    changed = true;
                }
            }
            properties::check_size(SectionKind::Tags, &next.tags)?;
        }
        let mut notification = None;
        if let Some(desired) = &write.desired {
            let desired = desired.clone().map(properties::without_section_markers);
            let version = next.desired.version + 1;
            let stamp = Stamp { time, version: Some(version) };
            let section = &mut next.desired;
            let body = match (desired, mode) {
                (Some(patch), WriteMode::Merge) if patch.is_empty() => None,
                (Some(patch), WriteMode::Merge) => {
                    properties::validate(SectionKind::Desired, &patch, true)?;
                    properties::merge(&mut section.properties, &mut section.metadata, &patch, &stamp);
                    Some(patch)
                }
                (new, _) => {
                    let new = new.unwrap_or_default();
                    properties::validate(SectionKind::Desired, &new, true)?;
                    let removed: Vec<String> = section
                        .properties
                        .keys()
                        .filter(|k| new.get(*k).is_none_or(|v| v.is_null()))
                        .cloned()
                        .collect();
                    properties::replace(&mut section.properties, &mut section.metadata, &new, &stamp);
                    // A device merging notifications (the Node SDK) converges only if removals are spelled out.
                    let mut body = section.properties.clone();
                    body.extend(removed.into_iter().map(|k| (k, Value::Null)));
                    Some(body)
                }
            };
            if let Some(mut body) = body {
                properties::check_size(SectionKind::Desired, &section.properties)?;
                section.version = version;
                body.insert("$version".into(), json!(version));
                notification = Some(DesiredNotification { version, body });
                changed = true;
            }
        }
        if changed {
            next.version += 1;
        }
        Ok(TwinChange { twin: next, desired_notification: notification })
    }

    /// Applies a device's reported-properties patch: merge, `$metadata` (times only), `$version` + 1.
    pub fn apply_reported_patch(&self, patch: &Map<String, Value>, now: Timestamp) -> Result<Twin, HubError> {
        let patch = properties::without_section_markers(patch.clone());
        properties::validate(SectionKind::Reported, &patch, true)?;
        let mut next = self.clone();
        let section = &mut next.reported;
        properties::merge(
            &mut section.properties,
            &mut section.metadata,
            &patch,
            &Stamp { time: format_time(now), version: None },
        );
        properties::check_size(SectionKind::Reported, &section.properties)?;
        section.version += 1;
        next.version += 1;
        Ok(next)
    }
}

/// A service write of a twin: each section absent (`None`), cleared (`Some(None)`, JSON `null`) or given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TwinWrite {
    pub tags: Option<Option<Map<String, Value>>>,
    pub desired: Option<Option<Map<String, Value>>>,
}

/// How a service write combines with the twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// PATCH: merge (null removes).
    Merge,
    /// PUT: the given sections replace the current ones; absent sections stay (wire-spec H.40).
    Replace,
}

/// The result of a service write.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinChange {
    pub twin: Twin,
    pub desired_notification: Option<DesiredNotification>,
}

/// What a connected device is sent on `$iothub/twin/PATCH/properties/desired/?$version=<version>`.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredNotification {
    pub version: u64,
    /// The JSON body, including `$version`.
    pub body: Map<String, Value>,
}

/// A section of a write body: absent, `null` (clear), or an object.
fn section(value: Option<&Value>, name: &str) -> Result<Option<Option<Map<String, Value>>>, HubError> {
    match value {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Object(map)) => Ok(Some(Some(map.clone()))),
        Some(other) => Err(HubError::ArgumentInvalid(format!("{name} must be a JSON object, not {other}"))),
    }
}

/// Reads a twin write body: `tags` and `properties.desired`. Identity members (`deviceId`, `etag`, ...) are
/// ignored, as the hub does; reported properties belong to the device, so a non-empty `properties.reported`
/// is refused (wire-spec H.22), while `{}` (which the Node twin-job sample sends) is accepted.
pub fn parse_twin_write(body: &Value) -> Result<TwinWrite, HubError> {
    let Value::Object(body) = body else {
        return Err(HubError::ArgumentInvalid("The twin must be a JSON object".into()));
    };
    let mut write = TwinWrite { tags: section(body.get("tags"), "tags")?, desired: None };
    match body.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(properties)) => {
            write.desired = section(properties.get("desired"), "properties.desired")?;
            match properties.get("reported") {
                None | Some(Value::Null) => {}
                Some(Value::Object(reported)) if reported.keys().all(|k| k.starts_with('$')) => {}
                Some(_) => {
                    return Err(HubError::ArgumentInvalid(
                        "Reported properties can only be written by the device; remove properties.reported".into(),
                    ));
                }
            }
        }
        Some(other) => return Err(HubError::ArgumentInvalid(format!("properties must be a JSON object, not {other}"))),
    }
    Ok(write)
}

/// The full twin document of a device (wire-spec D.1): identity fields, tags and both property sections.
pub fn twin_document(device: &Device, liveness: &Liveness) -> Value {
    let auth = &device.authentication;
    let mut doc = json!({
        "deviceId": device.device_id,
        "etag": device.twin.etag(),
        "deviceEtag": device.etag(),
        "status": device.status.as_str(),
        "statusReason": device.status_reason,
        "statusUpdateTime": format_optional_time(device.status_updated),
        "connectionState": if liveness.connected_since.is_some() { "Connected" } else { "Disconnected" },
        "lastActivityTime": format_optional_time(liveness.last_activity.or(device.last_activity)),
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

    fn t(n: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + n).expect("time")
    }

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn desired(patch: Value) -> TwinWrite {
        TwinWrite { desired: Some(if patch.is_null() { None } else { Some(map(patch)) }), ..Default::default() }
    }

    #[test]
    fn desired_patches_bump_versions_and_notify_with_the_patch() {
        let twin = Twin::new(t(0));
        let change = twin
            .apply_service_write(&desired(json!({"building":"43","floor":3})), WriteMode::Merge, t(1))
            .expect("write");
        assert_eq!(change.twin.desired.version, 2);
        assert_eq!(change.twin.version, 2);
        assert_ne!(change.twin.etag(), twin.etag());
        let note = change.desired_notification.expect("notification");
        assert_eq!(Value::Object(note.body), json!({"building":"43","floor":3,"$version":2}));
        let change =
            change.twin.apply_service_write(&desired(json!({"floor":null})), WriteMode::Merge, t(2)).expect("write");
        assert_eq!(Value::Object(change.twin.desired.properties.clone()), json!({"building":"43"}));
        assert_eq!(Value::Object(change.desired_notification.expect("n").body), json!({"floor":null,"$version":3}));
    }

    #[test]
    fn clearing_or_replacing_desired_spells_out_removals() {
        let twin = Twin::new(t(0));
        let twin =
            twin.apply_service_write(&desired(json!({"a":1,"b":2})), WriteMode::Merge, t(1)).expect("write").twin;
        let cleared = twin.apply_service_write(&desired(Value::Null), WriteMode::Merge, t(2)).expect("write");
        assert!(cleared.twin.desired.properties.is_empty());
        assert_eq!(
            Value::Object(cleared.desired_notification.expect("n").body),
            json!({"a":null,"b":null,"$version":3})
        );
        let replaced =
            twin.apply_service_write(&desired(json!({"b":5,"c":6})), WriteMode::Replace, t(2)).expect("write");
        assert_eq!(
            Value::Object(replaced.desired_notification.expect("n").body),
            json!({"a":null,"b":5,"c":6,"$version":3})
        );
    }

    #[test]
    fn tags_change_the_twin_but_notify_nobody() {
        let twin = Twin::new(t(0));
        let write = TwinWrite { tags: Some(Some(map(json!({"location":{"region":"US"}})))), ..Default::default() };
        let change = twin.apply_service_write(&write, WriteMode::Merge, t(1)).expect("write");
        assert_eq!(change.twin.tags["location"]["region"], "US");
        assert_eq!(change.twin.version, 2);
        assert_eq!(change.twin.desired.version, 1);
        assert!(change.desired_notification.is_none());
        let empty = TwinWrite { desired: Some(Some(Map::new())), ..Default::default() };
        assert_eq!(
            twin.apply_service_write(&empty, WriteMode::Merge, t(1)).expect("write").twin,
            twin,
            "an empty patch changes nothing"
        );
    }

    #[test]
    fn invalid_writes_change_nothing() {
        let twin = Twin::new(t(0));
        let bad = TwinWrite { tags: Some(Some(map(json!({"ok":1})))), desired: Some(Some(map(json!({"bad.key":1})))) };
        assert!(matches!(twin.apply_service_write(&bad, WriteMode::Merge, t(1)), Err(HubError::ArgumentInvalid(_))));
        let oversized = desired(
            json!({"a":"x".repeat(4000),"b":"x".repeat(4000),"c":"x".repeat(4000),"d":"x".repeat(4000),"e":"x".repeat(4000),"f":"x".repeat(4000),"g":"x".repeat(4000),"h":"x".repeat(4000),"i":"x".repeat(1000)}),
        );
        assert!(twin.apply_service_write(&oversized, WriteMode::Merge, t(1)).is_err(), "over 32 KB");
    }

    #[test]
    fn reported_patches_bump_the_reported_version_and_keep_times_only() {
        let twin = Twin::new(t(0));
        let next = twin.apply_reported_patch(&map(json!({"battery":55,"$version":9})), t(1)).expect("patch");
        assert_eq!(next.reported.version, 2);
        assert_eq!(next.version, 2);
        assert!(next.reported.metadata["battery"].get("$lastUpdatedVersion").is_none());
        assert_eq!(next.device_view(), json!({"desired":{"$version":1},"reported":{"battery":55,"$version":2}}));
        assert!(twin.apply_reported_patch(&map(json!({"a b":1})), t(1)).is_err());
    }

    #[test]
    fn a_new_twin_looks_like_the_hubs() {
        let now: Timestamp = "2026-01-02T03:04:05.5Z".parse().expect("time");
        let device = create_device("dev1", &DeviceSpec::default(), now, 3).expect("create");
        let doc = twin_document(&device, &Liveness::default());
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
