//! Bulk registry calls on the wire (`POST /devices`, docs/research/bulk-registry.md): the array of
//! `ExportImportDevice` items read into [`BulkItem`]s, and the `BulkRegistryOperationResult` answer.
//!
//! Member names are matched case-insensitively and unknown members ignored: Node sends the caller's whole device
//! object with `id` put in, so `etag` comes lower-case and `generationId` or `connectionState` may come along.

use iothub_proto::registry as proto;
use serde_json::{Map, Value as Json, json};

use crate::domain::bulk::{BulkFailure, BulkItem, ImportMode, MAX_BULK_ITEMS};
use crate::error::HubError;

/// The members an `ExportImportDevice` may have, in the hub's spelling.
const MEMBERS: [&str; 13] = [
    "id",
    "moduleId",
    "eTag",
    "importMode",
    "status",
    "statusReason",
    "authentication",
    "twinETag",
    "tags",
    "properties",
    "capabilities",
    "deviceScope",
    "parentScopes",
];

/// Reads a bulk call's body: 1 to 100 items, no identity twice.
pub fn parse_items(body: &Json) -> Result<Vec<BulkItem>, HubError> {
    let Json::Array(items) = body else {
        return Err(HubError::ArgumentInvalid("The body must be a JSON array of devices".into()));
    };
    if items.is_empty() {
        return Err(HubError::ArgumentInvalid("The array of devices is empty".into()));
    }
    if items.len() > MAX_BULK_ITEMS {
        return Err(HubError::TooManyDevices(format!(
            "{} devices were given; a bulk operation takes {MAX_BULK_ITEMS} at most",
            items.len()
        )));
    }
    let parsed =
        items.iter().enumerate().map(|(index, item)| parse_item(index, item)).collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::HashSet::new();
    for item in &parsed {
        if !seen.insert((item.device_id.as_str(), item.module_id.as_deref())) {
            return Err(HubError::DeviceDefinedMultipleTimes(match &item.module_id {
                Some(module_id) => {
                    format!("Module '{module_id}' of device '{}' appears more than once", item.device_id)
                }
                None => format!("Device '{}' appears more than once", item.device_id),
            }));
        }
    }
    Ok(parsed)
}

fn parse_item(index: usize, item: &Json) -> Result<BulkItem, HubError> {
    let Json::Object(given) = item else {
        return Err(HubError::ArgumentInvalid(format!("Item {index} is not a JSON object")));
    };
    let mut members = Map::new();
    for (name, value) in given {
        if let Some(canonical) = MEMBERS.iter().find(|m| m.eq_ignore_ascii_case(name)) {
            members.insert((*canonical).to_owned(), value.clone());
        }
    }
    let text = |name: &str| members.get(name).and_then(Json::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let device_id = text("id").ok_or_else(|| HubError::ArgumentNull(format!("Item {index} has no id")))?;
    let module_id = text("moduleId");
    let mode = match members.get("importMode") {
        None | Some(Json::Null) => ImportMode::CreateOrUpdate,
        Some(Json::String(mode)) => ImportMode::parse(mode)
            .ok_or_else(|| HubError::ArgumentInvalid(format!("Item {index}: '{mode}' is not an importMode")))?,
        Some(other) => return Err(HubError::ArgumentInvalid(format!("Item {index}: importMode {other} is not text"))),
    };
    let unquoted = |name: &str| text(name).map(|tag| tag.trim_matches('"').to_owned());
    let (etag, twin_etag) = (unquoted("eTag"), unquoted("twinETag"));

    let identity_member = |name: &str| members.get(name).cloned().unwrap_or(Json::Null);
    let spec = match &module_id {
        Some(module_id) => {
            let body: proto::Module = from_json(
                index,
                json!({
                    "deviceId": device_id, "moduleId": module_id, "authentication": identity_member("authentication"),
                }),
            )?;
            super::registry::module_spec(&device_id, module_id, &body)?
        }
        None => {
            let body: proto::Device = from_json(
                index,
                json!({
                    "deviceId": device_id,
                    "status": identity_member("status"),
                    "statusReason": identity_member("statusReason"),
                    "authentication": identity_member("authentication"),
                    "capabilities": identity_member("capabilities"),
                    "deviceScope": identity_member("deviceScope"),
                    "parentScopes": identity_member("parentScopes"),
                }),
            )?;
            super::registry::device_spec(&device_id, &body)?
        }
    };
    let twin = if members.contains_key("tags") || members.contains_key("properties") {
        let mut twin = Map::new();
        for name in ["tags", "properties"] {
            if let Some(value) = members.get(name) {
                twin.insert(name.to_owned(), value.clone());
            }
        }
        Some(super::twin::parse_write(&Json::Object(twin))?)
    } else {
        None
    };
    Ok(BulkItem { device_id, module_id, mode, etag, twin_etag, spec, twin })
}

fn from_json<T: serde::de::DeserializeOwned>(index: usize, value: Json) -> Result<T, HubError> {
    serde_json::from_value(value).map_err(|error| HubError::ArgumentInvalid(format!("Item {index}: {error}")))
}

/// The answer: `isSuccessful`, `errors` (one per failed item; `errorCode` a number, as the hub sends it) and
/// `warnings` (always empty: every device is registered with its twin).
pub fn result(failures: &[BulkFailure]) -> Json {
    let errors: Vec<Json> = failures
        .iter()
        .map(|failure| {
            json!({
                "deviceId": failure.device_id,
                "errorCode": failure.code,
                "errorStatus": failure.message,
                "moduleId": failure.module_id,
                "operation": failure.mode.as_str(),
            })
        })
        .collect();
    json!({"isSuccessful": failures.is_empty(), "errors": errors, "warnings": []})
}
