//! How the typed tree is kept in the data file: compact and quick to read back at start-up. An object is a list of
//! `[key, value, ticks, version]` members, an array `{"a": [...]}`, anything else the JSON value itself.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap as _, SerializeSeq as _, SerializeTuple as _};
use serde::{Deserialize, Serialize, Serializer};

use super::tree::{Object, Property, Stamp, Value};

/// The member naming an array in the stored form.
const ARRAY: &str = "a";

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.ticks, self.version).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (ticks, version) = <(i64, u64)>::deserialize(deserializer)?;
        Ok(Self { ticks, version })
    }
}

impl Serialize for Property {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(4)?;
        tuple.serialize_element(self.key.as_str())?;
        tuple.serialize_element(&self.value)?;
        tuple.serialize_element(&self.stamp.ticks)?;
        tuple.serialize_element(&self.stamp.version)?;
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Property {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (key, value, ticks, version) = <(compact_str::CompactString, Value, i64, u64)>::deserialize(deserializer)?;
        Ok(Self { key, value, stamp: Stamp { ticks, version } })
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for property in self {
            seq.serialize_element(property)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let members = Vec::<Property>::deserialize(deserializer)?;
        Ok(Self::from_properties(members))
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Bool(b) => serializer.serialize_bool(*b),
            Self::Number(n) => n.serialize(serializer),
            Self::String(s) => serializer.serialize_str(s),
            Self::Array(items) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(ARRAY, &items[..])?;
                map.end()
            }
            Self::Object(object) => object.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a stored twin value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut members = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(member) = seq.next_element::<Property>()? {
            members.push(member);
        }
        Ok(Value::Object(Object::from_properties(members)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? else {
            return Err(de::Error::custom("an empty map is not a stored twin value"));
        };
        if key != ARRAY {
            return Err(de::Error::custom(format!("unexpected member '{key}' in a stored twin value")));
        }
        let items: Vec<Value> = map.next_value()?;
        Ok(Value::Array(items.into_boxed_slice()))
    }
}

/// Serde for `Option<Option<T>>` members (a section of a twin write): absent, `null`, or a value. Use with
/// `#[serde(default, skip_serializing_if = "Option::is_none", with = "double_option")]`.
pub(crate) mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(value: &Option<Option<T>>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::super::json::{from_json, to_json};
    use super::*;
    use serde_json::json;

    #[test]
    fn the_stored_form_keeps_order_stamps_and_every_value_kind() {
        let object = match from_json(&json!({"z": {"b": [1, null, {"k": "v"}], "a": true}, "n": -2.5, "s": "x"})) {
            Value::Object(object) => object,
            _ => unreachable!("an object"),
        };
        let stamped = object.fresh(Stamp { ticks: 17, version: 3 });
        let text = serde_json::to_string(&stamped).expect("encode");
        assert!(text.starts_with(r#"[["z",[["b",{"a":[1,null,[["k","v",0,0]]]},17,3]"#), "{text}");
        let back: Object = serde_json::from_str(&text).expect("decode");
        assert_eq!(back, stamped);
        assert_eq!(
            to_json(&Value::Object(back)),
            json!({"z": {"b": [1, null, {"k": "v"}], "a": true}, "n": -2.5, "s": "x"})
        );
    }
}
