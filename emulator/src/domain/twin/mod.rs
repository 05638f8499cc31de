//! The device twin: tags, desired and reported properties as typed trees (wire-spec D), their versions, and the
//! rules of service writes and device patches (D.4, D.5). How a twin looks as JSON is `crate::wire::twin`.

pub mod json;
pub mod rules;
mod stored;
pub mod tree;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use rules::SectionKind;
pub use tree::{Object, Property, Stamp, Value};

use crate::error::HubError;

/// One property section (`desired` or `reported`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub properties: Object,
    /// `$version`: starts at 1, grows by one on every write of this section.
    pub version: u64,
    /// The section's own `$metadata` stamp (`$lastUpdated`, and `$lastUpdatedVersion` for desired).
    pub stamp: Stamp,
}

impl Section {
    fn new(now: Timestamp) -> Self {
        Self { properties: Object::default(), version: 1, stamp: Stamp::new(now, 1) }
    }
}

/// The twin of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Twin {
    /// Twin `version`: starts at 1 and grows on every twin write; the twin etag is derived from it.
    pub version: u64,
    pub tags: Object,
    pub desired: Section,
    pub reported: Section,
    /// The configurations (automatic device management) that target this twin: the twin's `configurations`
    /// member. Boxed and usually absent, so twins without any cost one pointer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configurations: Option<Box<[ConfigurationMark]>>,
}

/// A configuration's mark on a twin it targets: whether its content is applied, and which desired paths it
/// wrote and still owns, so they can be taken back when it stops applying (even after it is deleted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationMark {
    pub id: String,
    /// Tells a configuration from one re-created later under the same id (its creation time, in microseconds).
    pub generation: i64,
    /// `Applied` (some path is its), else `Targeted` (higher-priority configurations won every path).
    pub applied: bool,
    /// Set by IoT Edge deployments: their content stays when no deployment applies any more, as on the hub.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edge: bool,
    /// The paths below `properties.desired` this configuration wrote and still owns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<Vec<String>>,
}

impl Twin {
    /// The marks of the configurations that target this twin.
    pub fn configuration_marks(&self) -> &[ConfigurationMark] {
        self.configurations.as_deref().unwrap_or(&[])
    }

    /// A new twin as the hub makes it with its device: empty sections at `$version` 1.
    pub fn new(now: Timestamp) -> Self {
        Self {
            version: 1,
            tags: Object::default(),
            desired: Section::new(now),
            reported: Section::new(now),
            configurations: None,
        }
    }

    /// The twin etag: base64 of the 8-byte big-endian version (`AAAAAAAAAAE=` for a new twin), as real hubs show.
    pub fn etag(&self) -> String {
        BASE64.encode(self.version.to_be_bytes())
    }

    /// Applies a service write (REST PATCH/PUT, twin-update jobs). Returns the new twin and, when desired
    /// properties changed, what the device is told. Nothing changes when any part is invalid.
    pub fn apply_service_write(
        &self,
        write: &TwinWrite,
        mode: WriteMode,
        now: Timestamp,
    ) -> Result<TwinChange, HubError> {
        let mut next = self.clone();
        let mut changed = false;
        if let Some(tags) = &write.tags {
            let stamp = Stamp::new(now, 0);
            match (tags, mode) {
                (Some(patch), WriteMode::Merge) if patch.is_empty() => {}
                (Some(patch), WriteMode::Merge) => {
                    rules::validate(SectionKind::Tags, patch, true)?;
                    next.tags.merge(patch, stamp);
                    changed = true;
                }
                (new, _) => {
                    let new = new.clone().unwrap_or_default();
                    rules::validate(SectionKind::Tags, &new, true)?;
                    next.tags = new.fresh(stamp);
                    changed = true;
                }
            }
            rules::check_size(SectionKind::Tags, &next.tags)?;
        }
        let mut notification = None;
        if let Some(desired) = &write.desired {
            let version = next.desired.version + 1;
            let stamp = Stamp::new(now, version);
            let section = &mut next.desired;
            let changes = match (desired, mode) {
                (Some(patch), WriteMode::Merge) if patch.is_empty() => None,
                (Some(patch), WriteMode::Merge) => {
                    rules::validate(SectionKind::Desired, patch, true)?;
                    section.properties.merge(patch, stamp);
                    Some(patch.clone())
                }
                (new, _) => {
                    let new = new.clone().unwrap_or_default();
                    rules::validate(SectionKind::Desired, &new, true)?;
                    let replaced = new.fresh(stamp);
                    // A device merging notifications (the Node SDK) converges only if removals are spelled out.
                    let removed = section
                        .properties
                        .iter()
                        .filter(|p| replaced.property(&p.key).is_none())
                        .map(|p| Property { key: p.key.clone(), value: Value::Null, stamp: Stamp::default() });
                    let changes = replaced.iter().cloned().chain(removed).collect();
                    section.properties = replaced;
                    Some(Object::from_properties(changes))
                }
            };
            if let Some(changes) = changes {
                rules::check_size(SectionKind::Desired, &section.properties)?;
                section.version = version;
                section.stamp = stamp;
                notification = Some(DesiredNotification { version, changes });
                changed = true;
            }
        }
        if changed {
            next.version += 1;
        }
        Ok(TwinChange { twin: next, desired_notification: notification })
    }

    /// Applies a device's reported-properties patch: merge, stamps (shown as times only), `$version` + 1.
    pub fn apply_reported_patch(&self, patch: &Object, now: Timestamp) -> Result<Twin, HubError> {
        rules::validate(SectionKind::Reported, patch, true)?;
        let mut next = self.clone();
        let section = &mut next.reported;
        let version = section.version + 1;
        let stamp = Stamp::new(now, version);
        section.properties.merge(patch, stamp);
        rules::check_size(SectionKind::Reported, &section.properties)?;
        section.version = version;
        section.stamp = stamp;
        next.version += 1;
        Ok(next)
    }
}

/// A service write of a twin: each section absent (`None`), cleared (`Some(None)`, JSON `null`) or given.
/// Patches hold `Value::Null` where they remove a member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinWrite {
    #[serde(default, skip_serializing_if = "Option::is_none", with = "stored::double_option")]
    pub tags: Option<Option<Object>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "stored::double_option")]
    pub desired: Option<Option<Object>>,
}

impl TwinWrite {
    /// True when the write touches neither section.
    pub fn is_empty(&self) -> bool {
        self.tags.is_none() && self.desired.is_none()
    }
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

/// What a connected device is told on `$iothub/twin/PATCH/properties/desired/?$version=<version>`: the changed
/// members (`null` for removed ones) at the new `$version`.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredNotification {
    pub version: u64,
    pub changes: Object,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(n: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + n).expect("time")
    }

    fn obj(value: serde_json::Value) -> Object {
        match json::from_json(&value) {
            Value::Object(object) => object,
            other => panic!("not an object: {other:?}"),
        }
    }

    fn plain(object: &Object) -> serde_json::Value {
        serde_json::Value::Object(json::object_to_json(object))
    }

    fn desired(patch: serde_json::Value) -> TwinWrite {
        TwinWrite { desired: Some(if patch.is_null() { None } else { Some(obj(patch)) }), ..Default::default() }
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
        assert_eq!((note.version, plain(&note.changes)), (2, json!({"building":"43","floor":3})));
        let change =
            change.twin.apply_service_write(&desired(json!({"floor":null})), WriteMode::Merge, t(2)).expect("write");
        assert_eq!(plain(&change.twin.desired.properties), json!({"building":"43"}));
        let note = change.desired_notification.expect("n");
        assert_eq!((note.version, plain(&note.changes)), (3, json!({"floor":null})));
        assert_eq!(change.twin.desired.stamp, Stamp::new(t(2), 3), "the section root is stamped by the removal");
    }

    #[test]
    fn clearing_or_replacing_desired_spells_out_removals() {
        let twin = Twin::new(t(0));
        let twin =
            twin.apply_service_write(&desired(json!({"a":1,"b":2})), WriteMode::Merge, t(1)).expect("write").twin;
        let cleared = twin.apply_service_write(&desired(serde_json::Value::Null), WriteMode::Merge, t(2)).expect("w");
        assert!(cleared.twin.desired.properties.is_empty());
        assert_eq!(plain(&cleared.desired_notification.expect("n").changes), json!({"a":null,"b":null}));
        let replaced =
            twin.apply_service_write(&desired(json!({"c":6,"b":5})), WriteMode::Replace, t(2)).expect("write");
        let changes = replaced.desired_notification.expect("n").changes;
        assert_eq!(changes.keys().collect::<Vec<_>>(), ["c", "b", "a"], "the new body in order, then removals");
        assert_eq!(plain(&changes), json!({"a":null,"b":5,"c":6}));
    }

    #[test]
    fn tags_change_the_twin_but_notify_nobody() {
        let twin = Twin::new(t(0));
        let write = TwinWrite { tags: Some(Some(obj(json!({"location":{"region":"US"}})))), ..Default::default() };
        let change = twin.apply_service_write(&write, WriteMode::Merge, t(1)).expect("write");
        assert_eq!(plain(&change.twin.tags), json!({"location":{"region":"US"}}));
        assert_eq!(change.twin.version, 2);
        assert_eq!(change.twin.desired.version, 1);
        assert!(change.desired_notification.is_none());
        let empty = TwinWrite { desired: Some(Some(Object::default())), ..Default::default() };
        assert_eq!(
            twin.apply_service_write(&empty, WriteMode::Merge, t(1)).expect("write").twin,
            twin,
            "an empty patch changes nothing"
        );
    }

    #[test]
    fn invalid_writes_change_nothing() {
        let twin = Twin::new(t(0));
        let bad = TwinWrite { tags: Some(Some(obj(json!({"ok":1})))), desired: Some(Some(obj(json!({"bad.key":1})))) };
        assert!(matches!(twin.apply_service_write(&bad, WriteMode::Merge, t(1)), Err(HubError::ArgumentInvalid(_))));
        let oversized = desired(
            json!({"a":"x".repeat(4000),"b":"x".repeat(4000),"c":"x".repeat(4000),"d":"x".repeat(4000),"e":"x".repeat(4000),"f":"x".repeat(4000),"g":"x".repeat(4000),"h":"x".repeat(4000),"i":"x".repeat(1000)}),
        );
        assert!(twin.apply_service_write(&oversized, WriteMode::Merge, t(1)).is_err(), "over 32 KB");
    }

    #[test]
    fn reported_patches_bump_the_reported_version() {
        let twin = Twin::new(t(0));
        let next = twin.apply_reported_patch(&obj(json!({"battery":55})), t(1)).expect("patch");
        assert_eq!((next.reported.version, next.version), (2, 2));
        assert_eq!(next.reported.stamp.time(), t(1));
        assert_eq!(plain(&next.reported.properties), json!({"battery":55}));
        assert!(twin.apply_reported_patch(&obj(json!({"a b":1})), t(1)).is_err());
    }

    #[test]
    fn a_new_twin_starts_at_version_one() {
        let twin = Twin::new(t(0));
        assert_eq!((twin.version, twin.etag().as_str()), (1, "AAAAAAAAAAE="));
        assert_eq!((twin.desired.version, twin.reported.version), (1, 1));
        assert_eq!(twin.desired.stamp, Stamp::new(t(0), 1));
    }
}
