//! The typed twin against a reference model: the twin as the emulator kept it before the typed tree (each
//! section an order-preserving JSON map, with a parallel `$metadata` map stamped on every write), driven by the
//! same random writes. After every write both render the same text: values, member order, `$metadata`,
//! versions, the device's view and the desired notification.

use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::twin::{SectionDocument, desired_notification, device_view};
use crate::clock::format_time;
use crate::domain::twin::json::{PlainObject, object_from_json};
use crate::domain::twin::{SectionKind, Twin, TwinWrite, WriteMode};

/// What a write stamps into the reference `$metadata`.
struct Stamp {
    time: String,
    version: Option<u64>,
}

impl Stamp {
    fn apply(&self, node: &mut Map<String, Value>) {
        node.insert("$lastUpdated".into(), Value::String(self.time.clone()));
        if let Some(version) = self.version {
            node.insert("$lastUpdatedVersion".into(), json!(version));
        }
    }

    fn tree(&self, value: &Value) -> Value {
        let mut node = Map::new();
        self.apply(&mut node);
        if let Value::Object(children) = value {
            for (key, child) in children {
                node.insert(key.clone(), self.tree(child));
            }
        }
        Value::Object(node)
    }
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        other => other.clone(),
    }
}

fn merge(data: &mut Map<String, Value>, metadata: &mut Map<String, Value>, patch: &Map<String, Value>, stamp: &Stamp) {
    stamp.apply(metadata);
    for (key, value) in patch {
        match value {
            Value::Null => {
                data.shift_remove(key);
                metadata.shift_remove(key);
            }
            Value::Object(child_patch) if matches!(data.get(key), Some(Value::Object(_))) => {
                if !matches!(metadata.get(key), Some(Value::Object(_))) {
                    metadata.insert(key.clone(), Value::Object(Map::new()));
                }
                if let (Some(Value::Object(child)), Some(Value::Object(child_meta))) =
                    (data.get_mut(key), metadata.get_mut(key))
                {
                    merge(child, child_meta, child_patch, stamp);
                }
            }
            other => {
                let fresh = without_nulls(other);
                metadata.insert(key.clone(), stamp.tree(&fresh));
                data.insert(key.clone(), fresh);
            }
        }
    }
}

fn replace(data: &mut Map<String, Value>, metadata: &mut Map<String, Value>, new: &Map<String, Value>, stamp: &Stamp) {
    let Value::Object(fresh) = without_nulls(&Value::Object(new.clone())) else { unreachable!("an object") };
    let Value::Object(tree) = stamp.tree(&Value::Object(fresh.clone())) else { unreachable!("an object") };
    *metadata = tree;
    *data = fresh;
}

struct Section {
    properties: Map<String, Value>,
    version: u64,
    metadata: Map<String, Value>,
}

impl Section {
    fn new(time: &str, desired: bool) -> Self {
        let mut metadata = Map::new();
        Stamp { time: time.to_owned(), version: desired.then_some(1) }.apply(&mut metadata);
        Self { properties: Map::new(), version: 1, metadata }
    }

    fn document(&self) -> String {
        let mut out = self.properties.clone();
        out.insert("$metadata".into(), Value::Object(self.metadata.clone()));
        out.insert("$version".into(), json!(self.version));
        Value::Object(out).to_string()
    }
}

struct Reference {
    tags: Map<String, Value>,
    desired: Section,
    reported: Section,
}

impl Reference {
    /// The old `apply_service_write`: returns the desired notification body, if any.
    fn service_write(&mut self, write: &Write, mode: WriteMode, time: &str) -> Option<Value> {
        if let Some(tags) = &write.tags {
            let stamp = Stamp { time: time.to_owned(), version: None };
            match (tags, mode) {
                (Some(patch), WriteMode::Merge) if patch.is_empty() => {}
                (Some(patch), WriteMode::Merge) => merge(&mut self.tags, &mut Map::new(), patch, &stamp),
                (new, _) => replace(&mut self.tags, &mut Map::new(), &new.clone().unwrap_or_default(), &stamp),
            }
        }
        let desired = write.desired.as_ref()?;
        let version = self.desired.version + 1;
        let stamp = Stamp { time: time.to_owned(), version: Some(version) };
        let section = &mut self.desired;
        let mut body = match (desired, mode) {
            (Some(patch), WriteMode::Merge) if patch.is_empty() => return None,
            (Some(patch), WriteMode::Merge) => {
                merge(&mut section.properties, &mut section.metadata, patch, &stamp);
                patch.clone()
            }
            (new, _) => {
                let new = new.clone().unwrap_or_default();
                let removed: Vec<String> =
                    section.properties.keys().filter(|k| new.get(*k).is_none_or(Value::is_null)).cloned().collect();
                replace(&mut section.properties, &mut section.metadata, &new, &stamp);
                let mut body = section.properties.clone();
                body.extend(removed.into_iter().map(|k| (k, Value::Null)));
                body
            }
        };
        section.version = version;
        body.insert("$version".into(), json!(version));
        Some(Value::Object(body))
    }

    fn reported_patch(&mut self, patch: &Map<String, Value>, time: &str) {
        let section = &mut self.reported;
        merge(&mut section.properties, &mut section.metadata, patch, &Stamp { time: time.to_owned(), version: None });
        section.version += 1;
    }

    fn device_view(&self) -> String {
        let section = |s: &Section| {
            let mut out = s.properties.clone();
            out.insert("$version".into(), json!(s.version));
            Value::Object(out)
        };
        json!({"desired": section(&self.desired), "reported": section(&self.reported)}).to_string()
    }
}

/// A service write with sections as JSON maps.
#[derive(Debug, Clone)]
struct Write {
    tags: Option<Option<Map<String, Value>>>,
    desired: Option<Option<Map<String, Value>>>,
}

impl Write {
    fn typed(&self) -> TwinWrite {
        let section = |s: &Option<Option<Map<String, Value>>>| s.as_ref().map(|s| s.as_ref().map(object_from_json));
        TwinWrite { tags: section(&self.tags), desired: section(&self.desired) }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Service(Write, WriteMode),
    Reported(Map<String, Value>),
}

/// Objects whose keys come in any order (never sorted), drawn from a few names so writes meet earlier ones.
fn object(value: impl Strategy<Value = Value>) -> impl Strategy<Value = Map<String, Value>> {
    let key = prop::sample::select(vec!["zulu", "bravo", "alpha", "m", "b"]);
    prop::collection::vec((key, value), 0..5).prop_map(|members| {
        let mut map = Map::new();
        for (key, value) in members {
            map.entry(key).or_insert(value);
        }
        map
    })
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-50i64..50).prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::String),
    ];
    let array = prop::collection::vec(leaf.clone(), 0..3).prop_map(Value::Array);
    let flat = prop_oneof![4 => leaf, 1 => array];
    flat.prop_recursive(3, 24, 4, |inner| object(inner).prop_map(Value::Object))
}

fn section() -> impl Strategy<Value = Option<Option<Map<String, Value>>>> {
    prop_oneof![3 => Just(None), 1 => Just(Some(None)), 6 => object(value()).prop_map(|m| Some(Some(m)))]
}

fn op() -> impl Strategy<Value = Op> {
    let mode = prop_oneof![3 => Just(WriteMode::Merge), 1 => Just(WriteMode::Replace)];
    prop_oneof![
        2 => (section(), section(), mode).prop_map(|(tags, desired, mode)| Op::Service(Write { tags, desired }, mode)),
        1 => object(value()).prop_map(Op::Reported),
    ]
}

fn t(n: usize) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + n as i64 * 7).expect("time")
}

fn text(value: impl serde::Serialize) -> String {
    serde_json::to_string(&value).expect("JSON")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_typed_twin_renders_as_the_reference_model(ops in prop::collection::vec(op(), 1..10)) {
        let mut twin = Twin::new(t(0));
        let start = format_time(t(0));
        let mut reference =
            Reference { tags: Map::new(), desired: Section::new(&start, true), reported: Section::new(&start, false) };
        for (i, op) in ops.iter().enumerate() {
            let (now, time) = (t(i + 1), format_time(t(i + 1)));
            match op {
                Op::Service(write, mode) => {
                    let change = twin.apply_service_write(&write.typed(), *mode, now).expect("valid write");
                    let expected = reference.service_write(write, *mode, &time);
                    let notified = change.desired_notification.as_ref().map(desired_notification);
                    prop_assert_eq!(notified, expected.map(|body| body.to_string()));
                    twin = change.twin;
                }
                Op::Reported(patch) => {
                    twin = twin.apply_reported_patch(&object_from_json(patch), now).expect("valid patch");
                    reference.reported_patch(patch, &time);
                }
            }
            prop_assert_eq!(text(PlainObject(&twin.tags)), Value::Object(reference.tags.clone()).to_string());
            let desired = SectionDocument { section: &twin.desired, kind: SectionKind::Desired };
            prop_assert_eq!(text(desired), reference.desired.document());
            let reported = SectionDocument { section: &twin.reported, kind: SectionKind::Reported };
            prop_assert_eq!(text(reported), reference.reported.document());
            prop_assert_eq!(device_view(&twin), reference.device_view());
        }
    }
}
