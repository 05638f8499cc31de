//! Device-to-cloud messages as the hub keeps them: the bounded per-device buffer. (The topic's property bag is
//! `iothub_proto::property_bag`.)

use std::collections::{BTreeMap, VecDeque};

use jiff::Timestamp;

/// Largest message body (wire-spec B.4).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Messages kept per device for inspection; older ones are dropped.
pub const BUFFER_MESSAGES: usize = 100;
/// Bytes of bodies kept per device.
pub const BUFFER_BYTES: usize = 1024 * 1024;

/// One telemetry message as the hub received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryMessage {
    pub device_id: String,
    pub enqueued_time: Timestamp,
    pub body: Vec<u8>,
    /// System properties by their names (`messageId`, `correlationId`, `contentType`, ...).
    pub system_properties: BTreeMap<String, String>,
    /// Application properties; a bare key (no `=`) has an empty value.
    pub properties: BTreeMap<String, String>,
}

/// The last messages of one device, bounded by count and bytes.
#[derive(Debug, Default)]
pub struct DeviceBuffer {
    messages: VecDeque<std::sync::Arc<TelemetryMessage>>,
    bytes: usize,
}

impl DeviceBuffer {
    /// Adds a message, dropping the oldest ones beyond the bounds.
    pub fn push(&mut self, message: std::sync::Arc<TelemetryMessage>) {
        self.bytes += message.body.len();
        self.messages.push_back(message);
        while self.messages.len() > BUFFER_MESSAGES || (self.bytes > BUFFER_BYTES && self.messages.len() > 1) {
            if let Some(old) = self.messages.pop_front() {
                self.bytes -= old.body.len();
            }
        }
    }

    /// The kept messages, oldest first.
    pub fn messages(&self) -> Vec<std::sync::Arc<TelemetryMessage>> {
        self.messages.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_bounded() {
        let mut buffer = DeviceBuffer::default();
        for i in 0..(BUFFER_MESSAGES + 10) {
            buffer.push(std::sync::Arc::new(TelemetryMessage {
                device_id: "d".into(),
                enqueued_time: Timestamp::UNIX_EPOCH,
                body: i.to_string().into_bytes(),
                system_properties: BTreeMap::new(),
                properties: BTreeMap::new(),
            }));
        }
        let kept = buffer.messages();
        assert_eq!(kept.len(), BUFFER_MESSAGES);
        assert_eq!(kept[0].body, b"10");
    }
}
