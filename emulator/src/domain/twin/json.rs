//! Twin values and JSON: reading a parsed JSON value into the typed tree (keeping its member order), writing
//! tree values back out as plain JSON, and a node's `$metadata` as JSON. Which members a document has and in
//! what order is the wire layer's business; these are the value mappings it and the query engine share.

use serde::ser::{SerializeMap as _, SerializeSeq as _};
use serde::{Serialize, Serializer};

use super::tree::{Object, Property, Stamp, Value};
use crate::clock::format_time;

/// The typed form of a JSON value (members in their written order, unstamped).
pub fn from_json(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Number(n.clone()),
        serde_json::Value::String(s) => Value::String(s.as_str().into()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => Value::Object(object_from_json(map)),
    }
}

/// The typed form of a JSON object.
pub fn object_from_json(map: &serde_json::Map<String, serde_json::Value>) -> Object {
    Object::from_properties(
        map.iter()
            .map(|(key, value)| Property { key: key.as_str().into(), value: from_json(value), stamp: Stamp::default() })
            .collect(),
    )
}

/// The plain JSON form of a tree value.
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => serde_json::Value::Number(n.clone()),
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Object(object) => serde_json::Value::Object(object_to_json(object)),
    }
}

/// The plain JSON form of an object.
pub fn object_to_json(object: &Object) -> serde_json::Map<String, serde_json::Value> {
    object.iter().map(|p| (p.key.to_string(), to_json(&p.value))).collect()
}

/// Serialises a tree value as plain JSON, in order, without building a `serde_json::Value` first.
pub struct Plain<'a>(pub &'a Value);

impl Serialize for Plain<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Number(n) => n.serialize(serializer),
            Value::String(s) => serializer.serialize_str(s),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Plain(item))?;
                }
                seq.end()
            }
            Value::Object(object) => PlainObject(object).serialize(serializer),
        }
    }
}

/// Serialises an object as plain JSON, in order.
pub struct PlainObject<'a>(pub &'a Object);

impl Serialize for PlainObject<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for property in self.0 {
            map.serialize_entry(property.key.as_str(), &Plain(&property.value))?;
        }
        map.end()
    }
}

/// Serialises the `$metadata` of one node: when it was last written (and, for desired properties, at which
/// `$version`), then the same for each member of an object (wire-spec D.2).
pub struct MetadataJson<'a> {
    pub stamp: Stamp,
    pub children: Option<&'a Object>,
    pub desired: bool,
}

impl Serialize for MetadataJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("$lastUpdated", &format_time(self.stamp.time()))?;
        if self.desired {
            map.serialize_entry("$lastUpdatedVersion", &self.stamp.version)?;
        }
        for child in self.children.into_iter().flatten() {
            let node = MetadataJson { stamp: child.stamp, children: child.value.as_object(), desired: self.desired };
            map.serialize_entry(child.key.as_str(), &node)?;
        }
        map.end()
    }
}

/// A twin's `configurations` member: `{"<id>": {"status": "Applied" | "Targeted"}}`.
pub struct ConfigurationsJson<'a>(pub &'a [super::ConfigurationMark]);

/// A configuration's status on a twin, as the hub spells it.
pub fn mark_status(mark: &super::ConfigurationMark) -> &'static str {
    if mark.applied { "Applied" } else { "Targeted" }
}

impl Serialize for ConfigurationsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Status(&'static str);
        impl Serialize for Status {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("status", self.0)?;
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for mark in self.0 {
            map.serialize_entry(&mark.id, &Status(mark_status(mark)))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn member_order_and_values_round_trip() {
        let value = json!({"zulu": 1, "bravo": {"y": [1, null, {"b": 1, "a": 2}], "x": "s"}, "f": 1.5, "n": null});
        let typed = from_json(&value);
        assert_eq!(to_json(&typed), value);
        let text = serde_json::to_string(&Plain(&typed)).expect("json");
        assert_eq!(text, r#"{"zulu":1,"bravo":{"y":[1,null,{"b":1,"a":2}],"x":"s"},"f":1.5,"n":null}"#);
    }
}
