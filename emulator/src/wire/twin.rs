//! Twins on the wire: the full twin document in the hub's member order (wire-spec D.1), the device's view of
//! its twin (B.8), desired-property notifications (B.10), and reading service writes (C.3) and reported patches
//! (B.9) into the typed twin.

use serde::Serialize;
use serde::ser::{SerializeMap as _, Serializer};
use serde_json::{Map, Value as Json};

use super::registry::{connection_state, thumbprints};
use crate::clock::format_optional_time;
use crate::domain::registry::{Device, Liveness};
use crate::domain::twin::json::{ConfigurationsJson, MetadataJson, Plain, PlainObject, from_json};
use crate::domain::twin::{DesiredNotification, Object, Property, Section, SectionKind, Stamp, Twin, TwinWrite};
use crate::error::HubError;
use crate::hub::DeviceSnapshot;

/// The full twin of a device (`GET /twins/{id}`, `SELECT * FROM devices`), serialised in the hub's order.
pub struct TwinDocument<'a> {
    pub device: &'a Device,
    pub liveness: Liveness,
}

impl Serialize for TwinDocument<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let device = self.device;
        let twin = &device.twin;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("deviceId", &device.device_id)?;
        // A module twin names its module, and has no status reason, capabilities or scopes (its `deviceEtag` is
        // the module identity's etag).
        let module_id = device.module_id();
        if let Some(module_id) = module_id {
            map.serialize_entry("moduleId", module_id)?;
        }
        map.serialize_entry("etag", &twin.etag())?;
        map.serialize_entry("deviceEtag", &device.etag())?;
        map.serialize_entry("status", device.status.as_str())?;
        if module_id.is_none() {
            map.serialize_entry("statusReason", &device.status_reason)?;
        }
        map.serialize_entry("statusUpdateTime", &format_optional_time(device.status_updated))?;
        map.serialize_entry("connectionState", connection_state(&self.liveness))?;
        let last_activity = self.liveness.last_activity.or(device.last_activity);
        map.serialize_entry("lastActivityTime", &format_optional_time(last_activity))?;
        map.serialize_entry("cloudToDeviceMessageCount", &self.liveness.queued_messages)?;
        map.serialize_entry("authenticationType", device.authentication.kind.as_str())?;
        map.serialize_entry("x509Thumbprint", &thumbprints(&device.authentication))?;
        map.serialize_entry("modelId", "")?;
        map.serialize_entry("version", &twin.version)?;
        map.serialize_entry("tags", &PlainObject(&twin.tags))?;
        map.serialize_entry("properties", &Properties(twin))?;
        let marks = twin.configuration_marks();
        if module_id.is_some() {
            if !marks.is_empty() {
                map.serialize_entry("configurations", &ConfigurationsJson(marks))?;
            }
            return map.end();
        }
        map.serialize_entry(
            "capabilities",
            &iothub_proto::registry::DeviceCapabilities { iot_edge: Some(device.iot_edge) },
        )?;
        if let Some(scope) = &device.device_scope {
            map.serialize_entry("deviceScope", scope)?;
            map.serialize_entry("parentScopes", &device.parent_scopes)?;
        }
        // Where the hub puts this member is not recorded; it is read by name.
        if !marks.is_empty() {
            map.serialize_entry("configurations", &ConfigurationsJson(marks))?;
        }
        map.end()
    }
}

impl<'a> TwinDocument<'a> {
    /// The twin document of a device snapshot.
    pub fn of(snapshot: &'a DeviceSnapshot) -> Self {
        Self { device: &snapshot.device, liveness: snapshot.liveness }
    }
}

/// `properties`: `desired` then `reported`, each a section document.
struct Properties<'a>(&'a Twin);

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("desired", &SectionDocument { section: &self.0.desired, kind: SectionKind::Desired })?;
        map.serialize_entry("reported", &SectionDocument { section: &self.0.reported, kind: SectionKind::Reported })?;
        map.end()
    }
}

/// A property section as documents show it: its properties in order, then `$metadata`, then `$version`.
pub struct SectionDocument<'a> {
    pub section: &'a Section,
    pub kind: SectionKind,
}

impl Serialize for SectionDocument<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for property in &self.section.properties {
            map.serialize_entry(property.key.as_str(), &Plain(&property.value))?;
        }
        let desired = self.kind == SectionKind::Desired;
        let metadata = MetadataJson { stamp: self.section.stamp, children: Some(&self.section.properties), desired };
        map.serialize_entry("$metadata", &metadata)?;
        map.serialize_entry("$version", &self.section.version)?;
        map.end()
    }
}

/// A section as the device sees it: its properties, then `$version`; no `$metadata`.
struct DeviceSection<'a>(&'a Section);

impl Serialize for DeviceSection<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.properties.len() + 1))?;
        for property in &self.0.properties {
            map.serialize_entry(property.key.as_str(), &Plain(&property.value))?;
        }
        map.serialize_entry("$version", &self.0.version)?;
        map.end()
    }
}

/// What a device gets for `$iothub/twin/GET`: `{"desired":{...,"$version":n},"reported":{...,"$version":m}}`.
pub fn device_view(twin: &Twin) -> String {
    #[derive(Serialize)]
    struct View<'a> {
        desired: DeviceSection<'a>,
        reported: DeviceSection<'a>,
    }
    to_text(&View { desired: DeviceSection(&twin.desired), reported: DeviceSection(&twin.reported) })
}

/// The body of a desired-property notification: the changed members (`null` for removed ones), then `$version`.
pub fn desired_notification(notification: &DesiredNotification) -> String {
    struct Body<'a>(&'a DesiredNotification);
    impl Serialize for Body<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.0.changes.len() + 1))?;
            for property in &self.0.changes {
                map.serialize_entry(property.key.as_str(), &Plain(&property.value))?;
            }
            map.serialize_entry("$version", &self.0.version)?;
            map.end()
        }
    }
    to_text(&Body(notification))
}

/// JSON text of a document made of strings, numbers and maps, which cannot fail to serialise.
fn to_text(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Reads a service write body (`PATCH`/`PUT /twins/{id}`, a job's `updateTwin`): `tags` and
/// `properties.desired`. Identity members (`deviceId`, `etag`, ...) are ignored, as the hub does; reported
/// properties belong to the device, so a non-empty `properties.reported` is refused (wire-spec H.22), while `{}`
/// (which the Node twin-job sample sends) is accepted.
pub fn parse_write(body: &Json) -> Result<TwinWrite, HubError> {
    let Json::Object(body) = body else {
        return Err(HubError::ArgumentInvalid("The twin must be a JSON object".into()));
    };
    let mut write = TwinWrite { tags: section(body.get("tags"), "tags")?, desired: None };
    match body.get("properties") {
        None | Some(Json::Null) => {}
        Some(Json::Object(properties)) => {
            write.desired = section(properties.get("desired"), "properties.desired")?;
            match properties.get("reported") {
                None | Some(Json::Null) => {}
                Some(Json::Object(reported)) if reported.keys().all(|k| k.starts_with('$')) => {}
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

/// A section of a write body: absent, `null` (clear), or an object.
fn section(value: Option<&Json>, name: &str) -> Result<Option<Option<Object>>, HubError> {
    match value {
        None => Ok(None),
        Some(Json::Null) => Ok(Some(None)),
        Some(Json::Object(map)) => Ok(Some(Some(section_patch(map)))),
        Some(other) => Err(HubError::ArgumentInvalid(format!("{name} must be a JSON object, not {other}"))),
    }
}

/// A section patch in typed form, without the members that only describe a section (`$metadata`, `$version`),
/// so a twin read back and written again is accepted (wire-spec H.39).
fn section_patch(map: &Map<String, Json>) -> Object {
    Object::from_properties(
        map.iter()
            .filter(|(key, _)| !matches!(key.as_str(), "$metadata" | "$version"))
            .map(|(key, value)| Property { key: key.as_str().into(), value: from_json(value), stamp: Stamp::default() })
            .collect(),
    )
}

/// Reads a device's reported-properties patch (the body of `$iothub/twin/PATCH/properties/reported/`).
pub fn parse_reported_patch(body: &[u8]) -> Result<Object, HubError> {
    match serde_json::from_slice::<Json>(body) {
        Ok(Json::Object(patch)) => Ok(section_patch(&patch)),
        Ok(_) => Err(HubError::ArgumentInvalid("A reported-properties patch must be a JSON object".into())),
        Err(e) => Err(HubError::FormatError(format!("The reported-properties patch is not valid JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::format_time;
    use crate::domain::query::twin_doc::ROOT_MEMBERS;
    use crate::domain::registry::{DeviceSpec, create_device};
    use crate::domain::twin::WriteMode;
    use jiff::Timestamp;
    use serde_json::json;

    fn t(n: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + n).expect("time")
    }

    #[test]
    fn a_module_twin_names_its_module_and_leaves_out_what_only_devices_have() {
        let now: Timestamp = "2026-01-02T03:04:05.5Z".parse().expect("time");
        let module =
            crate::domain::registry::create_module("dev1", "mod1", &DeviceSpec::default(), now, 4).expect("create");
        let text =
            serde_json::to_string(&TwinDocument { device: &module, liveness: Liveness::default() }).expect("json");
        let doc: Map<String, Json> = serde_json::from_str(&text).expect("object");
        let keys: Vec<&str> = doc.keys().map(String::as_str).collect();
        let expected = [
            "deviceId",
            "moduleId",
            "etag",
            "deviceEtag",
            "status",
            "statusUpdateTime",
            "connectionState",
            "lastActivityTime",
            "cloudToDeviceMessageCount",
            "authenticationType",
            "x509Thumbprint",
            "modelId",
            "version",
            "tags",
            "properties",
        ];
        assert_eq!(keys, expected);
        assert_eq!((doc["deviceId"].as_str(), doc["moduleId"].as_str()), (Some("dev1"), Some("mod1")));
        assert_eq!(doc["deviceEtag"], module.etag(), "a module twin's deviceEtag is the module identity's etag");
    }

    #[test]
    fn a_new_twin_looks_like_the_hubs() {
        let now: Timestamp = "2026-01-02T03:04:05.5Z".parse().expect("time");
        let device = create_device("dev1", &DeviceSpec::default(), now, 3).expect("create");
        let text =
            serde_json::to_string(&TwinDocument { device: &device, liveness: Liveness::default() }).expect("json");
        let keys: Vec<String> =
            serde_json::from_str::<Map<String, Json>>(&text).expect("object").keys().cloned().collect();
        let device_members: Vec<&str> = ROOT_MEMBERS[..17].iter().copied().filter(|m| *m != "moduleId").collect();
        assert_eq!(keys, device_members, "the members of wire-spec D.1, in its order");
        let doc: Json = serde_json::from_str(&text).expect("json");
        assert_eq!(doc["etag"], "AAAAAAAAAAE=");
        assert_eq!(doc["tags"], json!({}));
        assert_eq!(
            doc["properties"]["desired"],
            json!({"$metadata": {"$lastUpdated": "2026-01-02T03:04:05.5000000Z", "$lastUpdatedVersion": 1}, "$version": 1})
        );
        assert_eq!(
            doc["properties"]["reported"],
            json!({"$metadata": {"$lastUpdated": "2026-01-02T03:04:05.5000000Z"}, "$version": 1})
        );
        assert_eq!(doc["deviceEtag"], device.etag());
        assert_eq!(doc["connectionState"], "Disconnected");
    }

    #[test]
    fn sections_list_properties_in_written_order_then_metadata_then_version() {
        let twin = Twin::new(t(0));
        let write =
            parse_write(&json!({"properties": {"desired": {"zulu": 1, "bravo": {"y": 1, "x": 2}}}})).expect("w");
        let twin = twin.apply_service_write(&write, WriteMode::Merge, t(1)).expect("write").twin;
        let text = serde_json::to_string(&SectionDocument { section: &twin.desired, kind: SectionKind::Desired })
            .expect("json");
        let time = format_time(t(1));
        assert_eq!(
            text,
            format!(
                r#"{{"zulu":1,"bravo":{{"y":1,"x":2}},"$metadata":{{"$lastUpdated":"{time}","$lastUpdatedVersion":2,"zulu":{{"$lastUpdated":"{time}","$lastUpdatedVersion":2}},"bravo":{{"$lastUpdated":"{time}","$lastUpdatedVersion":2,"y":{{"$lastUpdated":"{time}","$lastUpdatedVersion":2}},"x":{{"$lastUpdated":"{time}","$lastUpdatedVersion":2}}}}}},"$version":2}}"#
            )
        );
        assert_eq!(
            device_view(&twin),
            r#"{"desired":{"zulu":1,"bravo":{"y":1,"x":2},"$version":2},"reported":{"$version":1}}"#
        );
    }

    #[test]
    fn writes_drop_section_markers_and_refuse_reported_members() {
        let write = parse_write(&json!({"deviceId": "x", "tags": {"$metadata": {}, "a": 1}, "properties": {"desired": null, "reported": {"$version": 3}}}))
            .expect("write");
        assert_eq!(write.tags.as_ref().and_then(Option::as_ref).map(|t| t.keys().collect::<Vec<_>>()), Some(vec!["a"]));
        assert_eq!(write.desired, Some(None));
        for bad in
            [json!([]), json!({"tags": 3}), json!({"properties": {"reported": {"x": 1}}}), json!({"properties": 1})]
        {
            assert!(matches!(parse_write(&bad), Err(HubError::ArgumentInvalid(_))), "{bad}");
        }
        assert!(matches!(parse_reported_patch(b"[1]"), Err(HubError::ArgumentInvalid(_))));
        assert!(matches!(parse_reported_patch(b"{"), Err(HubError::FormatError(_))));
        let patch = parse_reported_patch(br#"{"b":1,"$version":4,"a":null}"#).expect("patch");
        assert_eq!(patch.keys().collect::<Vec<_>>(), ["b", "a"]);
    }
}
