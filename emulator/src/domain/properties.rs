//! Twin property trees (`tags`, `properties.desired`, `properties.reported`): the hub's rules for keys,
//! values, depth and size (wire-spec D.3), and merge/replace with the `$metadata` tree kept beside the data
//! (D.2, D.4).

use serde_json::{Map, Value, json};

use crate::error::HubError;

/// Deepest object nesting inside a section: keys may sit at most 10 levels deep.
pub const MAX_DEPTH: usize = 10;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest string value, in bytes.
pub const MAX_STRING_BYTES: usize = 4096;
/// Integers the hub accepts: 53-bit signed.
pub const MAX_INTEGER: i64 = 4_503_599_627_370_495;
pub const MIN_INTEGER: i64 = -4_503_599_627_370_496;

/// Which section a tree is, for its size limit and its name in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    Tags,
    Desired,
    Reported,
}

impl SectionKind {
    /// Largest size of the section's data (wire-spec D.3): tags 8 KB, properties 32 KB each.
    pub fn max_size(self) -> usize {
        match self {
            Self::Tags => 8 * 1024,
            Self::Desired | Self::Reported => 32 * 1024,
        }
    }

    /// The section's name as users write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tags => "tags",
            Self::Desired => "properties.desired",
            Self::Reported => "properties.reported",
        }
    }
}

fn invalid(kind: SectionKind, path: &str, what: &str) -> HubError {
    let at = if path.is_empty() { kind.name().to_owned() } else { format!("{}.{path}", kind.name()) };
    HubError::ArgumentInvalid(format!("Invalid twin property {at}: {what}"))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// Checks a key: non-empty, at most 1 KB, and free of `.`, `$`, spaces and control characters.
fn check_key(kind: SectionKind, path: &str, key: &str) -> Result<(), HubError> {
    let problem = if key.is_empty() {
        Some("property names must not be empty".to_owned())
    } else if key.len() > MAX_KEY_BYTES {
        Some(format!("property names are limited to {MAX_KEY_BYTES} bytes"))
    } else {
        key.chars()
            .find(|c| matches!(c, '.' | '$' | ' ') || c.is_control())
            .map(|c| format!("property names must not contain '.', '$', spaces or control characters (found {c:?})"))
    };
    match problem {
        Some(what) => Err(invalid(kind, &join(path, key), &what)),
        None => Ok(()),
    }
}

/// Checks a section tree: key rules, value types and ranges, depth. `null` values are allowed only where
/// `allow_null` (a patch, where they remove a property).
pub fn validate(kind: SectionKind, map: &Map<String, Value>, allow_null: bool) -> Result<(), HubError> {
    validate_object(kind, map, "", 1, allow_null)
}

fn validate_object(
    kind: SectionKind,
    map: &Map<String, Value>,
    path: &str,
    depth: usize,
    allow_null: bool,
) -> Result<(), HubError> {
    for (key, value) in map {
        check_key(kind, path, key)?;
        let here = join(path, key);
        if depth > MAX_DEPTH {
            return Err(invalid(kind, &here, &format!("objects may nest at most {MAX_DEPTH} levels")));
        }
        validate_value(kind, value, &here, depth, allow_null)?;
    }
    Ok(())
}

fn validate_value(
    kind: SectionKind,
    value: &Value,
    path: &str,
    depth: usize,
    allow_null: bool,
) -> Result<(), HubError> {
    match value {
        Value::Null if allow_null => Ok(()),
        Value::Null => Err(invalid(kind, path, "null is only allowed in a patch, to remove a property")),
        Value::Bool(_) => Ok(()),
        Value::Number(n) => {
            let in_range = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => (MIN_INTEGER..=MAX_INTEGER).contains(&i),
                (None, Some(_)) => false,
                (None, None) => true,
            };
            if in_range {
                Ok(())
            } else {
                Err(invalid(kind, path, &format!("integers must be between {MIN_INTEGER} and {MAX_INTEGER}")))
            }
        }
        Value::String(s) if s.len() > MAX_STRING_BYTES => {
            Err(invalid(kind, path, &format!("string values are limited to {MAX_STRING_BYTES} bytes")))
        }
        Value::String(_) => Ok(()),
        // Array elements are values, not properties: nulls inside arrays are data.
        Value::Array(items) => items.iter().try_for_each(|item| validate_array_item(kind, item, path, depth)),
        Value::Object(map) => validate_object(kind, map, path, depth + 1, allow_null),
    }
}

fn validate_array_item(kind: SectionKind, value: &Value, path: &str, depth: usize) -> Result<(), HubError> {
    match value {
        Value::Null => Ok(()),
        other => validate_value(kind, other, path, depth, false),
    }
}

/// The size the hub counts for a tree: key lengths plus value sizes (strings by characters other than control
/// characters, numbers 8, booleans 4), objects and arrays recursively.
pub fn size_of(map: &Map<String, Value>) -> usize {
    map.iter().map(|(k, v)| k.chars().count() + value_size(v)).sum()
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::Null => 0,
        Value::Bool(_) => 4,
        Value::Number(_) => 8,
        Value::String(s) => s.chars().filter(|c| !c.is_control()).count(),
        Value::Array(items) => items.iter().map(value_size).sum(),
        Value::Object(map) => size_of(map),
    }
}

/// Fails when the tree is larger than its section allows.
pub fn check_size(kind: SectionKind, map: &Map<String, Value>) -> Result<(), HubError> {
    let size = size_of(map);
    if size > kind.max_size() {
        return Err(invalid(kind, "", &format!("the section would be {size} bytes; the limit is {}", kind.max_size())));
    }
    Ok(())
}

/// What a write stamps into `$metadata`: the time, and for desired properties the section's new `$version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub time: String,
    pub version: Option<u64>,
}

impl Stamp {
    fn apply(&self, node: &mut Map<String, Value>) {
        node.insert("$lastUpdated".into(), Value::String(self.time.clone()));
        if let Some(version) = self.version {
            node.insert("$lastUpdatedVersion".into(), json!(version));
        }
    }

    /// A metadata tree for a freshly written `value`: every node stamped.
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

/// Removes the members that only describe a section (`$metadata`, `$version`) from a written section, so a
/// twin read back and written again is accepted (wire-spec H.39).
pub fn without_section_markers(mut map: Map<String, Value>) -> Map<String, Value> {
    map.remove("$metadata");
    map.remove("$version");
    map
}

/// A copy of `value` without `null` members: nulls mean "absent" in a new object.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        other => other.clone(),
    }
}

/// Merges `patch` into `data` (null removes, objects merge recursively, anything else replaces) and keeps
/// `metadata` mirroring the data, stamping every node on the path of a change.
pub fn merge(
    data: &mut Map<String, Value>,
    metadata: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    stamp: &Stamp,
) {
    stamp.apply(metadata);
    for (key, value) in patch {
        match value {
            Value::Null => {
                data.remove(key);
                metadata.remove(key);
            }
            Value::Object(child_patch) => {
                if let Some(Value::Object(child)) = data.get_mut(key) {
                    let child_meta = match metadata.get_mut(key) {
                        Some(Value::Object(m)) => m,
                        _ => {
                            metadata.insert(key.clone(), Value::Object(Map::new()));
                            match metadata.get_mut(key) {
                                Some(Value::Object(m)) => m,
                                _ => unreachable!("just inserted an object"),
                            }
                        }
                    };
                    merge(child, child_meta, child_patch, stamp);
                } else {
                    let fresh = without_nulls(value);
                    metadata.insert(key.clone(), stamp.tree(&fresh));
                    data.insert(key.clone(), fresh);
                }
            }
            other => {
                data.insert(key.clone(), other.clone());
                metadata.insert(key.clone(), stamp.tree(other));
            }
        }
    }
}

/// Replaces `data` with `new` (nulls dropped) and rebuilds `metadata` for it.
pub fn replace(
    data: &mut Map<String, Value>,
    metadata: &mut Map<String, Value>,
    new: &Map<String, Value>,
    stamp: &Stamp,
) {
    let fresh = match without_nulls(&Value::Object(new.clone())) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    *metadata = match stamp.tree(&Value::Object(fresh.clone())) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    *data = fresh;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn stamp(n: u64) -> Stamp {
        Stamp { time: format!("t{n}"), version: Some(n) }
    }

    #[test]
    fn merge_follows_the_spec_example() {
        let mut data = obj(json!({"a":{"x":1,"y":2},"b":3}));
        let mut meta = Map::new();
        merge(&mut data, &mut meta, &obj(json!({"a":{"y":null,"z":4},"c":5})), &stamp(2));
        assert_eq!(Value::Object(data), json!({"a":{"x":1,"z":4},"b":3,"c":5}));
        assert_eq!(meta["$lastUpdatedVersion"], 2);
        assert_eq!(meta["a"]["z"]["$lastUpdated"], "t2");
        assert_eq!(meta["c"]["$lastUpdated"], "t2");
    }

    #[test]
    fn metadata_is_kept_at_every_level_and_follows_removals() {
        let mut data = Map::new();
        let mut meta = Map::new();
        merge(&mut data, &mut meta, &obj(json!({"cfg":{"send":{"freq":"5m"}},"keep":1})), &stamp(2));
        assert_eq!(meta["cfg"]["send"]["freq"], json!({"$lastUpdated":"t2","$lastUpdatedVersion":2}));
        merge(&mut data, &mut meta, &obj(json!({"cfg":{"send":null}})), &stamp(3));
        assert_eq!(Value::Object(data.clone()), json!({"cfg":{},"keep":1}));
        assert_eq!(meta["cfg"], json!({"$lastUpdated":"t3","$lastUpdatedVersion":3}), "parent stamped by the removal");
        assert_eq!(meta["keep"]["$lastUpdatedVersion"], 2, "untouched members keep their stamps");
    }

    #[test]
    fn replace_drops_nulls_and_restamps_everything() {
        let mut data = obj(json!({"old":1}));
        let mut meta = Map::new();
        replace(&mut data, &mut meta, &obj(json!({"new":{"a":null,"b":[1,null]}})), &stamp(5));
        assert_eq!(Value::Object(data), json!({"new":{"b":[1,null]}}));
        assert!(meta.get("old").is_none());
        assert_eq!(meta["new"]["b"]["$lastUpdatedVersion"], 5);
    }

    #[test]
    fn keys_values_and_depth_follow_the_hub_rules() {
        let ok = obj(json!({"a":{"b":[1,"x",null,{"c":true}]},"n":-4503599627370496_i64,"f":1.5}));
        validate(SectionKind::Desired, &ok, false).expect("valid");
        let bad = [
            json!({"a.b":1}),
            json!({"$a":1}),
            json!({"a b":1}),
            json!({"tab\t":1}),
            json!({"":1}),
            json!({"big":4503599627370496_i64}),
            json!({"huge":u64::MAX}),
            json!({"s":"x".repeat(4097)}),
            json!({"nested":{"ok":{"bad.key":1}}}),
        ];
        for patch in bad {
            assert!(
                matches!(validate(SectionKind::Tags, &obj(patch.clone()), true), Err(HubError::ArgumentInvalid(_))),
                "{patch}"
            );
        }
        assert!(validate(SectionKind::Desired, &obj(json!({"gone":null})), true).is_ok());
        assert!(validate(SectionKind::Desired, &obj(json!({"gone":null})), false).is_err());
        assert!(validate(SectionKind::Tags, &obj(json!({ "k".repeat(1025): 1 })), true).is_err());
    }

    #[test]
    fn ten_levels_are_allowed_eleven_are_not() {
        let nest = |levels: usize| {
            let mut value = json!("leaf");
            for level in (1..=levels).rev() {
                value = json!({ format!("k{level}"): value });
            }
            obj(value)
        };
        validate(SectionKind::Desired, &nest(10), false).expect("ten levels");
        assert!(validate(SectionKind::Desired, &nest(11), false).is_err());
    }

    #[test]
    fn sizes_are_counted_like_the_hub() {
        assert_eq!(size_of(&obj(json!({"ab":"xyz","n":1,"b":true,"o":{"k":"v"}}))), 2 + 3 + 1 + 8 + 1 + 4 + 1 + 1 + 1);
        let big = obj(json!({ "k": "x".repeat(4000), "l": "y".repeat(4000), "m": "z".repeat(300) }));
        assert!(check_size(SectionKind::Tags, &big).is_err());
        assert!(check_size(SectionKind::Desired, &big).is_ok());
    }

    /// Reference merge patch (RFC 7386) over plain JSON, to compare `merge` against.
    fn reference_merge(target: &mut Value, patch: &Value) {
        if let Value::Object(patch_map) = patch {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(target_map) = target {
                for (k, v) in patch_map {
                    if v.is_null() {
                        target_map.remove(k);
                    } else {
                        reference_merge(target_map.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        } else {
            *target = patch.clone();
        }
    }

    /// True when `metadata` has an entry for exactly the keys of `data`, recursively.
    fn mirrors(data: &Map<String, Value>, metadata: &Map<String, Value>) -> bool {
        let meta_keys: Vec<&String> = metadata.keys().filter(|k| !k.starts_with('$')).collect();
        meta_keys.len() == data.len()
            && data.iter().all(|(k, v)| match (v, metadata.get(k)) {
                (Value::Object(child), Some(Value::Object(meta))) => mirrors(child, meta),
                (_, Some(Value::Object(meta))) => meta.keys().all(|m| m.starts_with('$')),
                _ => false,
            })
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1000i64..1000).prop_map(|n| json!(n)),
            "[a-z]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop::collection::btree_map("[a-c]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    fn arb_object() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map("[a-c]", arb_value(), 0..4).prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn merge_is_json_merge_patch_and_metadata_mirrors_data(start in arb_object(), patch in arb_object()) {
            let mut data = Map::new();
            let mut meta = Map::new();
            replace(&mut data, &mut meta, &start, &stamp(1));
            let mut expected = Value::Object(data.clone());
            merge(&mut data, &mut meta, &patch, &stamp(2));
            reference_merge(&mut expected, &Value::Object(patch.clone()));
            prop_assert_eq!(Value::Object(data.clone()), expected);
            prop_assert!(mirrors(&data, &meta), "metadata {:?} does not mirror {:?}", meta, data);
        }

        #[test]
        fn merging_the_same_patch_twice_changes_no_data(start in arb_object(), patch in arb_object()) {
            let mut data = Map::new();
            let mut meta = Map::new();
            replace(&mut data, &mut meta, &start, &stamp(1));
            merge(&mut data, &mut meta, &patch, &stamp(2));
            let once = data.clone();
            merge(&mut data, &mut meta, &patch, &stamp(3));
            prop_assert_eq!(data, once);
        }
    }
}
