//! Twins as query documents: paths resolve straight against the stored record, without building the JSON
//! document, so a scan over a million twins allocates nothing for the fields it only compares.
//!
//! Top-level system members match case-insensitively and are reported in their canonical spelling (the docs
//! write `SELECT DeviceId, LastActivityTime` and get `deviceId`, `lastActivityTime`); keys below `tags` and
//! `properties` are case-sensitive, like the twin itself (wire-spec H.55).

use std::borrow::Cow;

use super::eval::{Document, Val};
use crate::clock::{format_optional_time, format_time};
use crate::domain::registry::{Device, Liveness};
use crate::domain::twin::json::{MetadataJson, mark_status};
use crate::domain::twin::{Object, Section, Stamp};

/// The root members of a twin document, in canonical spelling and in the order the document lists them
/// (wire-spec D.1; `moduleId` only on module twins, `deviceScope` only on edge devices and their children,
/// `configurations` only on twins that configurations target).
pub const ROOT_MEMBERS: [&str; 20] = [
    "deviceId",
    "moduleId",
    "etag",
    "deviceEtag",
    "status",
    "statusReason",
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
    "capabilities",
    "deviceScope",
    "parentScopes",
    "configurations",
];

/// The canonical spelling of a root member, matched case-insensitively (exact spellings first: they are the
/// common case and cost one comparison each).
pub fn canonical_root(name: &str) -> Option<&'static str> {
    ROOT_MEMBERS
        .iter()
        .find(|m| **m == name)
        .or_else(|| ROOT_MEMBERS.iter().find(|m| m.eq_ignore_ascii_case(name)))
        .copied()
}

/// How a view learns a device's connection facts: asked only when a query reads `connectionState` or
/// `lastActivityTime`, so scans that do not pay nothing for it.
pub enum LivenessSource<'a> {
    Known(Liveness),
    Lookup(&'a dyn Fn(&str) -> Liveness),
}

impl LivenessSource<'_> {
    fn get(&self, device_id: &str) -> Liveness {
        match self {
            Self::Known(liveness) => *liveness,
            Self::Lookup(lookup) => lookup(device_id),
        }
    }
}

/// A device's twin seen by the query engine.
pub struct TwinView<'a> {
    pub device: &'a Device,
    pub liveness: LivenessSource<'a>,
}

fn section<'a>(section: &'a Section, path: &[String], desired: bool) -> Val<'a> {
    match path.split_first() {
        Some((first, rest)) if first == "$version" && rest.is_empty() => Val::Num(section.version as f64),
        Some((first, rest)) if first == "$metadata" => {
            metadata(section.stamp, Some(&section.properties), desired, rest)
        }
        _ => Val::walk_twin(&section.properties, path),
    }
}

/// A path into a section's `$metadata`, read off the stamps of the typed tree.
fn metadata<'a>(stamp: Stamp, children: Option<&'a Object>, desired: bool, path: &[String]) -> Val<'a> {
    match path.split_first() {
        None => match serde_json::to_value(MetadataJson { stamp, children, desired }) {
            Ok(serde_json::Value::Object(map)) => Val::Obj(Cow::Owned(map)),
            _ => Val::Undefined,
        },
        Some((first, rest)) if first == "$lastUpdated" => leaf(Val::Str(Cow::Owned(format_time(stamp.time()))), rest),
        Some((first, rest)) if first == "$lastUpdatedVersion" && desired => leaf(Val::Num(stamp.version as f64), rest),
        Some((first, rest)) => match children.and_then(|c| c.property(first)) {
            Some(child) => metadata(child.stamp, child.value.as_object(), desired, rest),
            None => Val::Undefined,
        },
    }
}

fn leaf<'a>(value: Val<'a>, rest: &[String]) -> Val<'a> {
    if rest.is_empty() { value } else { Val::Undefined }
}

fn text(value: Option<&str>) -> Val<'_> {
    value.map_or(Val::Null, |s| Val::Str(Cow::Borrowed(s)))
}

impl Document for TwinView<'_> {
    fn resolve(&self, path: &[String]) -> Val<'_> {
        let Some((first, rest)) = path.split_first() else { return Val::Undefined };
        let Some(member) = canonical_root(first) else { return Val::Undefined };
        let device = self.device;
        let auth = &device.authentication;
        match member {
            "deviceId" => leaf(Val::Str(Cow::Borrowed(&device.device_id)), rest),
            "moduleId" => leaf(device.module_id().map_or(Val::Undefined, |m| Val::Str(Cow::Borrowed(m))), rest),
            "etag" => leaf(Val::Str(Cow::Owned(device.twin.etag())), rest),
            "deviceEtag" => leaf(Val::Str(Cow::Owned(device.etag())), rest),
            "version" => leaf(Val::Num(device.twin.version as f64), rest),
            "status" => leaf(Val::Str(Cow::Borrowed(device.status.as_str())), rest),
            "statusReason" => leaf(text(device.status_reason.as_deref()), rest),
            "statusUpdateTime" => leaf(Val::Str(Cow::Owned(format_optional_time(device.status_updated))), rest),
            "connectionState" => {
                let connected = self.liveness.get(&device.key()).connected_since.is_some();
                leaf(Val::Str(Cow::Borrowed(if connected { "Connected" } else { "Disconnected" })), rest)
            }
            "lastActivityTime" => {
                let time =
                    format_optional_time(self.liveness.get(&device.key()).last_activity.or(device.last_activity));
                leaf(Val::Str(Cow::Owned(time)), rest)
            }
            "cloudToDeviceMessageCount" => {
                leaf(Val::Num(self.liveness.get(&device.key()).queued_messages as f64), rest)
            }
            "authenticationType" => leaf(Val::Str(Cow::Borrowed(auth.kind.as_str())), rest),
            "modelId" => leaf(Val::Str(Cow::Borrowed("")), rest),
            "deviceScope" => {
                leaf(device.device_scope.as_deref().map_or(Val::Undefined, |s| Val::Str(Cow::Borrowed(s))), rest)
            }
            // Shown beside `deviceScope`, as in the twin document.
            "parentScopes" => match &device.device_scope {
                Some(_) => {
                    let scopes =
                        device.parent_scopes.iter().map(|s| serde_json::Value::String(s.clone())).collect::<Vec<_>>();
                    leaf(Val::Arr(Cow::Owned(scopes)), rest)
                }
                None => Val::Undefined,
            },
            "x509Thumbprint" => match rest {
                [name] if name.eq_ignore_ascii_case("primaryThumbprint") => text(auth.primary_thumbprint.as_deref()),
                [name] if name.eq_ignore_ascii_case("secondaryThumbprint") => {
                    text(auth.secondary_thumbprint.as_deref())
                }
                _ => Val::Undefined,
            },
            "capabilities" => match rest {
                [name] if name.eq_ignore_ascii_case("iotEdge") => Val::Bool(device.iot_edge),
                _ => Val::Undefined,
            },
            "tags" => Val::walk_twin(&device.twin.tags, rest),
            // `configurations.<id>.status`: `Applied` or `Targeted`, as the twin document shows.
            "configurations" => {
                let marks = device.twin.configuration_marks();
                let entry = |mark| {
                    let status = serde_json::Value::String(mark_status(mark).to_owned());
                    serde_json::Map::from_iter([("status".to_owned(), status)])
                };
                match rest {
                    [] if marks.is_empty() => Val::Undefined,
                    [] => Val::Obj(Cow::Owned(
                        marks.iter().map(|m| (m.id.clone(), serde_json::Value::Object(entry(m)))).collect(),
                    )),
                    [id, tail @ ..] => match (marks.iter().find(|m| m.id == *id), tail) {
                        (Some(mark), []) => Val::Obj(Cow::Owned(entry(mark))),
                        (Some(mark), [name]) if name == "status" => Val::Str(Cow::Borrowed(mark_status(mark))),
                        _ => Val::Undefined,
                    },
                }
            }
            "properties" => match rest.split_first() {
                Some((name, rest)) if name.eq_ignore_ascii_case("desired") => section(&device.twin.desired, rest, true),
                Some((name, rest)) if name.eq_ignore_ascii_case("reported") => {
                    section(&device.twin.reported, rest, false)
                }
                _ => Val::Undefined,
            },
            _ => Val::Undefined,
        }
    }
}
