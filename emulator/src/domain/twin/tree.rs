//! A twin section as typed data: properties in the order they were first written, each carrying the time (and
//! desired `$version`) of its last write. `$metadata` is read off these stamps rather than kept as a second tree
//! of JSON maps, keys and short strings are stored inline (`CompactString`), numbers as numbers.
//!
//! Order rules (the hub's): a key written first stays first, a merge that changes it keeps its place, a key
//! removed by `null` and written again goes last, and a replaced section takes the order of the new body.

use std::collections::HashMap;

use compact_str::CompactString;
use jiff::Timestamp;
use serde_json::Number;

/// When a node was last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// 100 ns ticks since the Unix epoch: the precision the hub prints (seven fractional digits).
    pub ticks: i64,
    /// The desired `$version` of that write (`$lastUpdatedVersion`); shown for desired properties only.
    pub version: u64,
}

impl Stamp {
    /// A write at `time` that made the section's `$version` `version`.
    pub fn new(time: Timestamp, version: u64) -> Self {
        let ticks = i64::try_from(time.as_nanosecond() / 100).unwrap_or(i64::MAX);
        Self { ticks, version }
    }

    /// The time of the write.
    pub fn time(self) -> Timestamp {
        Timestamp::from_nanosecond(i128::from(self.ticks) * 100).unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// A value in a twin section.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// In a patch, removes the property; inside arrays, it is data. Stored objects never hold it as a member.
    Null,
    Bool(bool),
    Number(Number),
    String(CompactString),
    /// Arrays are values, not properties: their members carry no stamps of their own.
    Array(Box<[Value]>),
    Object(Object),
}

impl Value {
    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Self::Object(object) => Some(object),
            _ => None,
        }
    }

    /// A copy for storing: `null` members of objects dropped (at every depth, not inside arrays) and every
    /// property stamped with `stamp`.
    fn fresh(&self, stamp: Stamp) -> Self {
        match self {
            Self::Object(object) => Self::Object(object.fresh(stamp)),
            other => other.clone(),
        }
    }
}

/// An object: properties in order, keys unique.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object(Box<[Property]>);

/// One member of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub key: CompactString,
    pub value: Value,
    pub stamp: Stamp,
}

/// Above this many key comparisons a merge looks keys up through a hash index instead of scanning.
const INDEX_FROM: usize = 4096;

impl Object {
    /// An object of `properties`, which must have unique keys (as parsed JSON objects do).
    pub fn from_properties(properties: Vec<Property>) -> Self {
        debug_assert!(
            {
                let mut keys: Vec<&str> = properties.iter().map(|p| p.key.as_str()).collect();
                keys.sort_unstable();
                keys.windows(2).all(|w| w[0] != w[1])
            },
            "duplicate keys in an object"
        );
        Self(properties.into_boxed_slice())
    }

    /// How many properties.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The properties in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Property> {
        self.0.iter()
    }

    /// The property named `key`.
    pub fn property(&self, key: &str) -> Option<&Property> {
        self.0.iter().find(|p| p.key == key)
    }

    /// The value of the property named `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.property(key).map(|p| &p.value)
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|p| p.key.as_str())
    }

    /// A copy without `null` members, every property stamped with `stamp` (what a replace stores).
    pub fn fresh(&self, stamp: Stamp) -> Self {
        Self(
            self.0
                .iter()
                .filter(|p| !p.value.is_null())
                .map(|p| Property { key: p.key.clone(), value: p.value.fresh(stamp), stamp })
                .collect(),
        )
    }

    /// Merges `patch` in (JSON merge patch): `null` removes a member, an object merges into an object member,
    /// anything else replaces the member in place; members new to the object go last. Every member on the path
    /// of a change gets `stamp` (the caller stamps the object itself).
    pub fn merge(&mut self, patch: &Object, stamp: Stamp) {
        if patch.is_empty() {
            return;
        }
        let mut members = std::mem::take(&mut self.0).into_vec();
        // A removed member is left as a `Null` tombstone until the end, so positions in the index stay true.
        let mut index: Option<HashMap<CompactString, usize>> = (members.len() * patch.len() > INDEX_FROM)
            .then(|| members.iter().enumerate().map(|(i, p)| (p.key.clone(), i)).collect());
        for change in patch.iter() {
            let found = match &index {
                Some(index) => index.get(&change.key).copied(),
                None => members.iter().position(|p| p.key == change.key && !p.value.is_null()),
            }
            .filter(|&i| !members[i].value.is_null());
            match (&change.value, found) {
                (Value::Null, Some(i)) => members[i].value = Value::Null,
                (Value::Null, None) => {}
                (Value::Object(child_patch), Some(i)) if matches!(members[i].value, Value::Object(_)) => {
                    let member = &mut members[i];
                    member.stamp = stamp;
                    if let Value::Object(child) = &mut member.value {
                        child.merge(child_patch, stamp);
                    }
                }
                (value, Some(i)) => {
                    members[i].value = value.fresh(stamp);
                    members[i].stamp = stamp;
                }
                (value, None) => {
                    if let Some(index) = &mut index {
                        index.insert(change.key.clone(), members.len());
                    }
                    members.push(Property { key: change.key.clone(), value: value.fresh(stamp), stamp });
                }
            }
        }
        members.retain(|p| !p.value.is_null());
        self.0 = members.into_boxed_slice();
    }
}

impl<'a> IntoIterator for &'a Object {
    type Item = &'a Property;
    type IntoIter = std::slice::Iter<'a, Property>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(n: u64) -> Stamp {
        Stamp { ticks: n as i64, version: n }
    }

    fn num(n: i64) -> Value {
        Value::Number(n.into())
    }

    fn obj(members: Vec<(&str, Value)>) -> Object {
        Object::from_properties(
            members.into_iter().map(|(k, v)| Property { key: k.into(), value: v, stamp: Stamp::default() }).collect(),
        )
    }

    fn keys(object: &Object) -> Vec<&str> {
        object.keys().collect()
    }

    #[test]
    fn keys_keep_their_first_place_and_come_back_last() {
        let mut section = obj(vec![]).fresh(stamp(1));
        section.merge(&obj(vec![("zulu", num(1)), ("bravo", num(2)), ("alpha", num(3))]), stamp(2));
        assert_eq!(keys(&section), ["zulu", "bravo", "alpha"]);
        section.merge(&obj(vec![("bravo", num(5))]), stamp(3));
        assert_eq!(keys(&section), ["zulu", "bravo", "alpha"], "an update keeps the place");
        section.merge(&obj(vec![("zulu", Value::Null)]), stamp(4));
        section.merge(&obj(vec![("zulu", num(9))]), stamp(5));
        assert_eq!(keys(&section), ["bravo", "alpha", "zulu"], "removed and written again goes last");
        assert_eq!(section.property("zulu").map(|p| p.stamp), Some(stamp(5)));
        assert_eq!(section.property("alpha").map(|p| p.stamp), Some(stamp(2)), "untouched members keep stamps");
    }

    #[test]
    fn large_objects_merge_through_the_index_with_the_same_result() {
        let big: Vec<(String, Value)> = (0..200).map(|i| (format!("k{i}"), num(i))).collect();
        let mut section = obj(big.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()).fresh(stamp(1));
        let patch: Vec<(String, Value)> = (0..100)
            .map(|i| (format!("k{}", i * 3), if i % 2 == 0 { Value::Null } else { num(-1) }))
            .chain((0..30).map(|i| (format!("new{i}"), num(i))))
            .collect();
        let patch = obj(patch.iter().map(|(k, v)| (k.as_str(), v.clone())).collect());
        assert!(section.len() * patch.len() > INDEX_FROM);
        let mut small_path = section.clone();
        section.merge(&patch, stamp(2));
        // The same merge one member at a time never takes the indexed path.
        for member in patch.iter() {
            small_path.merge(&Object::from_properties(vec![member.clone()]), stamp(2));
        }
        assert_eq!(section, small_path);
        assert_eq!(section.keys().last(), Some("new29"));
    }

    #[test]
    fn merging_an_object_into_a_leaf_replaces_it_in_place_without_nulls() {
        let mut section = obj(vec![("a", num(1)), ("b", num(2))]).fresh(stamp(1));
        section.merge(&obj(vec![("a", Value::Object(obj(vec![("x", Value::Null), ("y", num(3))])))]), stamp(2));
        assert_eq!(keys(&section), ["a", "b"]);
        let a = section.get("a").and_then(Value::as_object).expect("object");
        assert_eq!(keys(a), ["y"]);
        assert_eq!(a.property("y").map(|p| p.stamp), Some(stamp(2)));
    }

    #[test]
    fn stamps_round_trip_to_the_tick() {
        let time: Timestamp = "2026-12-04T10:11:12.1234567Z".parse().expect("time");
        assert_eq!(Stamp::new(time, 3).time(), time);
    }

    #[test]
    fn values_stay_small() {
        assert!(std::mem::size_of::<Value>() <= 32, "{}", std::mem::size_of::<Value>());
        assert!(std::mem::size_of::<Property>() <= 72, "{}", std::mem::size_of::<Property>());
    }
}
