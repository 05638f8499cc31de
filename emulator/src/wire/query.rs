//! Query results on the wire (wire-spec C.5, F.5): twins as full twin documents, device job records as
//! `devices.jobs` documents, and rows with their members in SELECT order.

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::jobs::device_job_document;
use super::twin::TwinDocument;
use crate::error::HubError;
use crate::hub::QueryItem;

/// The query text of a `POST /devices/query` body (`{"query": "SELECT ..."}`).
pub fn query_text(body: &Value) -> Result<&str, HubError> {
    match body.get("query") {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(HubError::ArgumentNull("The query text is missing: send {\"query\": \"SELECT ...\"}".into()))
        }
        Some(other) => Err(HubError::ArgumentInvalid(format!("query must be a string, not {other}"))),
    }
}

/// One query result as the hub renders it.
pub struct Item<'a>(pub &'a QueryItem);

impl Serialize for Item<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            QueryItem::Twin(snapshot) => TwinDocument::of(snapshot).serialize(serializer),
            QueryItem::DeviceJob(record) => device_job_document(record).serialize(serializer),
            QueryItem::Row(row) => row.serialize(serializer),
        }
    }
}

/// The items of a page, rendered.
pub fn items(items: &[QueryItem]) -> Vec<Item<'_>> {
    items.iter().map(Item).collect()
}
