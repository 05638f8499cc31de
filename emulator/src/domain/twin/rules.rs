//! The hub's rules for twin sections (`tags`, `properties.desired`, `properties.reported`): keys, values,
//! depth and size (wire-spec D.3), checked on the typed tree.

use super::tree::{Object, Value};
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
pub fn validate(kind: SectionKind, object: &Object, allow_null: bool) -> Result<(), HubError> {
    validate_object(kind, object, "", 1, allow_null)
}

fn validate_object(
    kind: SectionKind,
    object: &Object,
    path: &str,
    depth: usize,
    allow_null: bool,
) -> Result<(), HubError> {
    for property in object {
        check_key(kind, path, &property.key)?;
        let here = join(path, &property.key);
        if depth > MAX_DEPTH {
            return Err(invalid(kind, &here, &format!("objects may nest at most {MAX_DEPTH} levels")));
        }
        validate_value(kind, &property.value, &here, depth, allow_null)?;
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
        Value::Object(object) => validate_object(kind, object, path, depth + 1, allow_null),
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
pub fn size_of(object: &Object) -> usize {
    object.iter().map(|p| p.key.chars().count() + value_size(&p.value)).sum()
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::Null => 0,
        Value::Bool(_) => 4,
        Value::Number(_) => 8,
        Value::String(s) => s.chars().filter(|c| !c.is_control()).count(),
        Value::Array(items) => items.iter().map(value_size).sum(),
        Value::Object(object) => size_of(object),
    }
}

/// Fails when the tree is larger than its section allows.
pub fn check_size(kind: SectionKind, object: &Object) -> Result<(), HubError> {
    let size = size_of(object);
    if size > kind.max_size() {
        return Err(invalid(kind, "", &format!("the section would be {size} bytes; the limit is {}", kind.max_size())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::json::from_json;
    use super::*;
    use serde_json::json;

    fn obj(value: serde_json::Value) -> Object {
        match from_json(&value) {
            Value::Object(object) => object,
            other => panic!("not an object: {other:?}"),
        }
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
}
