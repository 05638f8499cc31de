//! Device-to-cloud messages as the hub receives them. (The topic's property bag is `iothub_proto::property_bag`;
//! where messages are kept is `eventlog`.)

use std::collections::BTreeMap;

use bytes::Bytes;
use jiff::Timestamp;

/// Largest message body (wire-spec B.4).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Messages of one device the emulator-only read (`GET /emulator/devices/{id}/messages/events`) lists.
pub const RECENT_MESSAGES: usize = 100;

/// One telemetry message as the hub received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryMessage {
    pub device_id: String,
    /// The sending module, for module connections.
    pub module_id: Option<String>,
    /// The sender's `generationId` (`iothub-connection-auth-generation-id`); the hub fills it in.
    pub generation_id: String,
    pub enqueued_time: Timestamp,
    pub body: Bytes,
    /// System properties by their names (`messageId`, `correlationId`, `contentType`, ...).
    pub system_properties: BTreeMap<String, String>,
    /// Application properties; a bare key (no `=`) has an empty value.
    pub properties: BTreeMap<String, String>,
}
