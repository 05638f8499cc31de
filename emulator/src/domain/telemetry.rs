//! Device-to-cloud messages: the property bag of the topic, and the bounded per-device buffer.

use std::collections::{BTreeMap, VecDeque};

use jiff::Timestamp;
use percent_encoding::percent_decode_str;

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

/// Names of the system properties that travel as `$.<short>` in the property bag (wire-spec B.6).
fn system_name(short: &str) -> Option<&'static str> {
    Some(match short {
        "mid" => "messageId",
        "cid" => "correlationId",
        "uid" => "userId",
        "to" => "to",
        "ct" => "contentType",
        "ce" => "contentEncoding",
        "exp" => "absoluteExpiryTime",
        "ifid" => "interfaceId",
        "on" => "outputName",
        "sub" => "subject",
        _ => return None,
    })
}

/// Splits a property bag (`key=value&...`, percent-encoded, `$` encoded as `%24`) into system and
/// application properties.
pub fn parse_property_bag(bag: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut system = BTreeMap::new();
    let mut application = BTreeMap::new();
    for pair in bag.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (key, value) = (decode(key), decode(value));
        match key.strip_prefix("$.").map(|short| (short, system_name(short))) {
            Some((_, Some(name))) => system.insert(name.to_owned(), value),
            Some((short, None)) => system.insert(format!("$.{short}"), value),
            None => application.insert(key, value),
        };
    }
    (system, application)
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
    fn system_and_application_properties_are_separated_and_decoded() {
        let (system, app) =
            parse_property_bag("%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&temp%20alert=true&flag&%24.zz=1");
        assert_eq!(system["messageId"], "m1");
        assert_eq!(system["contentType"], "application/json");
        assert_eq!(system["contentEncoding"], "utf-8");
        assert_eq!(system["$.zz"], "1");
        assert_eq!(app["temp alert"], "true");
        assert_eq!(app["flag"], "");
    }

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
