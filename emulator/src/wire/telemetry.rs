//! Device-to-cloud messages as the emulator-only endpoint `GET /emulator/devices/{id}/messages/events` shows
//! them (a real hub routes telemetry to its Event Hubs-compatible endpoint instead).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;

use crate::clock::format_time;
use crate::domain::eventlog::Event;

/// One message: the body as text (or `null` when it is not UTF-8) and as base64, with its properties and its
/// place in the Event Hubs-compatible log.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message<'a> {
    device_id: &'a str,
    enqueued_time: String,
    partition_id: String,
    sequence_number: u64,
    offset: String,
    body: Option<&'a str>,
    body_base64: String,
    properties: &'a BTreeMap<String, String>,
    system_properties: &'a BTreeMap<String, String>,
}

/// The message as the endpoint lists it.
pub fn message(event: &Event) -> Message<'_> {
    let message = &event.message;
    Message {
        device_id: &message.device_id,
        enqueued_time: format_time(message.enqueued_time),
        partition_id: event.partition.to_string(),
        sequence_number: event.sequence,
        offset: event.offset.to_string(),
        body: std::str::from_utf8(&message.body).ok(),
        body_base64: BASE64.encode(&message.body),
        properties: &message.properties,
        system_properties: &message.system_properties,
    }
}
