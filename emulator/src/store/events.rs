//! The stored form of the Event Hubs-compatible log: one record per event, keyed (partition, sequence), in
//! postcard (compact binary: bodies are raw bytes, and this table takes every telemetry message).

use std::collections::BTreeMap;

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::eventlog::Event;
use crate::domain::telemetry::TelemetryMessage;

/// What the file records about the endpoint itself: the partition count is fixed when the hub is created, as
/// on a real hub, and `created_at` is what `$management` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventHubRecord {
    pub partitions: u32,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// The record as written: borrows the event, so encoding copies nothing but bytes into the output.
#[derive(Serialize)]
struct StoredEventRef<'a> {
    offset: u64,
    enqueued_ns: i64,
    device_id: &'a str,
    module_id: Option<&'a str>,
    generation_id: &'a str,
    body: &'a Bytes,
    system_properties: &'a BTreeMap<String, String>,
    properties: &'a BTreeMap<String, String>,
}

/// The record as read back (the same postcard layout as [`StoredEventRef`]).
#[derive(Deserialize)]
struct StoredEvent {
    offset: u64,
    enqueued_ns: i64,
    device_id: String,
    module_id: Option<String>,
    generation_id: String,
    body: Bytes,
    system_properties: BTreeMap<String, String>,
    properties: BTreeMap<String, String>,
}

/// The record of an event.
pub fn encode(event: &Event) -> Vec<u8> {
    let message = &event.message;
    let stored = StoredEventRef {
        offset: event.offset,
        enqueued_ns: i64::try_from(message.enqueued_time.as_nanosecond()).unwrap_or(i64::MAX),
        device_id: &message.device_id,
        module_id: message.module_id.as_deref(),
        generation_id: &message.generation_id,
        body: &message.body,
        system_properties: &message.system_properties,
        properties: &message.properties,
    };
    postcard::to_stdvec(&stored).unwrap_or_default()
}

/// Reads the record of event `sequence` in `partition`.
pub fn decode(partition: u32, sequence: u64, bytes: &[u8]) -> Result<Event, String> {
    let stored: StoredEvent = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    let enqueued_time = Timestamp::from_nanosecond(i128::from(stored.enqueued_ns)).map_err(|e| e.to_string())?;
    Ok(Event {
        partition,
        sequence,
        offset: stored.offset,
        message: TelemetryMessage {
            device_id: stored.device_id,
            module_id: stored.module_id,
            generation_id: stored.generation_id,
            enqueued_time,
            body: stored.body,
            system_properties: stored.system_properties,
            properties: stored.properties,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_survives_its_stored_form() {
        let event = Event {
            partition: 2,
            sequence: 7,
            offset: 4096,
            message: TelemetryMessage {
                device_id: "d1".into(),
                module_id: Some("m".into()),
                generation_id: "638000000000000000".into(),
                enqueued_time: "2026-12-05T03:00:00.123456789Z".parse().expect("time"),
                body: Bytes::from_static(&[0, 159, 146, 150, 255]),
                system_properties: [("contentType".to_owned(), "application/json".to_owned())].into(),
                properties: [("temperatureAlert".to_owned(), "true".to_owned())].into(),
            },
        };
        assert_eq!(decode(2, 7, &encode(&event)), Ok(event));
        assert!(decode(0, 0, b"\xff\xff").is_err());
    }
}
