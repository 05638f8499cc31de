//! Records written by releases before schema 4, read into today's types so an older data file is upgraded in
//! place (or served, when it is read-only). Two records changed:
//! - a device's twin kept each section as a JSON map beside a `$metadata` map; its stamps now live on the typed
//!   tree's nodes;
//! - a job kept its request as JSON (`cloudToDeviceMethod`, `updateTwin`, `queryCondition`); it now keeps its typed
//!   action and condition. Those members are the hub's JSON, so they are read with the wire layer's own readers
//!   (the one place the store looks upward, and only for files of older releases).

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::jobs::{Action, Job, TwinUpdate};
use crate::domain::registry::Device;
use crate::domain::twin::json::from_json;
use crate::domain::twin::{self, Object, Property, Section, Stamp, Twin};
use crate::wire;

#[derive(Deserialize)]
struct LegacyTwin {
    version: u64,
    tags: Map<String, Value>,
    desired: LegacySection,
    reported: LegacySection,
}

#[derive(Deserialize)]
struct LegacySection {
    properties: Map<String, Value>,
    version: u64,
    metadata: Map<String, Value>,
}

/// The stamp a legacy `$metadata` node records; members it lacks come from `fallback` (the parent's stamp).
fn stamp_of(node: Option<&Map<String, Value>>, fallback: Stamp) -> Stamp {
    let Some(node) = node else { return fallback };
    let time = node.get("$lastUpdated").and_then(Value::as_str).and_then(|t| t.parse::<Timestamp>().ok());
    Stamp {
        ticks: time.map_or(fallback.ticks, |t| Stamp::new(t, 0).ticks),
        version: node.get("$lastUpdatedVersion").and_then(Value::as_u64).unwrap_or(fallback.version),
    }
}

/// A legacy data map and its `$metadata` map as one typed object (members in the stored order).
fn object(data: &Map<String, Value>, metadata: Option<&Map<String, Value>>, parent: Stamp) -> Object {
    let members = data
        .iter()
        .map(|(key, value)| {
            let meta = metadata.and_then(|m| m.get(key)).and_then(Value::as_object);
            let stamp = stamp_of(meta, parent);
            let value = match value {
                Value::Object(child) => twin::Value::Object(object(child, meta, stamp)),
                other => from_json(other),
            };
            Property { key: key.as_str().into(), value, stamp }
        })
        .collect();
    Object::from_properties(members)
}

fn section(legacy: &LegacySection) -> Section {
    // Reported metadata records no version; the section's own stands in (what a write stamps today).
    let stamp = stamp_of(Some(&legacy.metadata), Stamp { ticks: 0, version: legacy.version });
    Section { properties: object(&legacy.properties, Some(&legacy.metadata), stamp), version: legacy.version, stamp }
}

fn twin(legacy: &LegacyTwin) -> Twin {
    Twin {
        version: legacy.version,
        tags: object(&legacy.tags, None, Stamp::default()),
        desired: section(&legacy.desired),
        reported: section(&legacy.reported),
        configurations: None,
    }
}

/// A device record of schema 1 to 3.
pub fn device(bytes: &[u8]) -> Result<Device, String> {
    let mut record: Map<String, Value> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let legacy: LegacyTwin =
        serde_json::from_value(record.shift_remove("twin").unwrap_or_default()).map_err(|e| format!("twin: {e}"))?;
    let converted = serde_json::to_value(twin(&legacy)).map_err(|e| e.to_string())?;
    record.insert("twin".into(), converted);
    serde_json::from_value(Value::Object(record)).map_err(|e| e.to_string())
}

/// A job record of schema 2 or 3.
pub fn job(bytes: &[u8]) -> Result<Job, String> {
    let mut record: Map<String, Value> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let condition = record.shift_remove("query_condition").unwrap_or_default();
    record.shift_remove("job_type");
    let method = record.shift_remove("cloud_to_device_method").filter(|v| !v.is_null());
    let update = record.shift_remove("update_twin").filter(|v| !v.is_null());
    let action = match (method, update) {
        (Some(method), _) => Action::Method(wire::methods::parse_call_value(&method).map_err(|e| e.to_string())?),
        (None, Some(update)) => Action::Twin(TwinUpdate {
            write: wire::twin::parse_write(&update).map_err(|e| e.to_string())?,
            etag: update.get("etag").and_then(Value::as_str).map(str::to_owned),
        }),
        (None, None) => return Err("the job has neither cloudToDeviceMethod nor updateTwin".into()),
    };
    record.insert("condition".into(), condition);
    record.insert("action".into(), serde_json::to_value(action).map_err(|e| e.to_string())?);
    serde_json::from_value(Value::Object(record)).map_err(|e| e.to_string())
}
