//! A cloud-to-device message as a service sends it, and its AMQP form: the body as one data section, the system
//! properties in the message's properties, `iothub-ack` and the user's properties as application properties.

use std::time::{SystemTime, UNIX_EPOCH};

use fe2o3_amqp::types::messaging::{ApplicationProperties, Data, Message, Properties};
use fe2o3_amqp::types::primitives::{Binary, Timestamp};
use iothub_proto::messages::{Ack, devicebound_to};

/// A message for one device, built step by step:
///
/// ```
/// use iothub_service::CloudToDeviceMessage;
/// use iothub_service::proto::messages::Ack;
/// let message = CloudToDeviceMessage::new(r#"{"lock":true}"#)
///     .with_message_id("lock-1")
///     .with_content_type("application/json")
///     .with_ack(Ack::Full)
///     .with_property("priority", "high");
/// assert_eq!(message.body, br#"{"lock":true}"#);
/// ```
///
/// The hub takes bodies of up to [`MAX_MESSAGE_BYTES`](iothub_proto::messages::MAX_MESSAGE_BYTES); a bigger one
/// is refused with `MessageTooLarge` when sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudToDeviceMessage {
    /// The payload, as the device receives it.
    pub body: Vec<u8>,
    /// `message-id`: the id feedback records name as `originalMessageId`.
    pub message_id: Option<String>,
    /// `correlation-id`.
    pub correlation_id: Option<String>,
    /// `user-id`.
    pub user_id: Option<String>,
    /// `content-type` of the body, e.g. `application/json`.
    pub content_type: Option<String>,
    /// `content-encoding` of the body, e.g. `utf-8`.
    pub content_encoding: Option<String>,
    /// When the message expires if no device completed it (`absolute-expiry-time`); the hub's default applies
    /// without one.
    pub expiry: Option<SystemTime>,
    /// Which outcomes the sender wants feedback on (`iothub-ack`).
    pub ack: Ack,
    /// Application properties, in order; the device sees them as its message's properties.
    pub properties: Vec<(String, String)>,
}

impl CloudToDeviceMessage {
    /// A message with `body` and nothing else.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Self { body: body.into(), ..Self::default() }
    }

    /// Sets the `message-id`.
    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Sets the `correlation-id`.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the `user-id`.
    pub fn with_user_id(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }

    /// Sets the body's content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets the body's content encoding.
    pub fn with_content_encoding(mut self, encoding: impl Into<String>) -> Self {
        self.content_encoding = Some(encoding.into());
        self
    }

    /// Sets when the message expires.
    pub fn with_expiry(mut self, expiry: SystemTime) -> Self {
        self.expiry = Some(expiry);
        self
    }

    /// Asks for feedback on `ack`'s outcomes.
    pub fn with_ack(mut self, ack: Ack) -> Self {
        self.ack = ack;
        self
    }

    /// Adds an application property (after those already set).
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }

    /// The AMQP message for `device_id`: addressed to its devicebound node (the id percent-encoded, as the SDKs
    /// do), the body as a single data section.
    pub(crate) fn to_amqp(&self, device_id: &str) -> Message<Data> {
        let mut properties = Properties::builder().to(devicebound_to(device_id));
        if let Some(id) = &self.message_id {
            properties = properties.message_id(id.clone());
        }
        if let Some(id) = &self.correlation_id {
            properties = properties.correlation_id(id.clone());
        }
        if let Some(user) = &self.user_id {
            properties = properties.user_id(Binary::from(user.as_bytes().to_vec()));
        }
        if let Some(content_type) = &self.content_type {
            properties = properties.content_type(content_type.as_str());
        }
        if let Some(encoding) = &self.content_encoding {
            properties = properties.content_encoding(encoding.as_str());
        }
        if let Some(expiry) = self.expiry {
            properties = properties.absolute_expiry_time(Timestamp::from_milliseconds(unix_millis(expiry)));
        }
        let mut application = ApplicationProperties::builder();
        for (name, value) in &self.properties {
            application = application.insert(name.as_str(), value.as_str());
        }
        if self.ack != Ack::None {
            application = application.insert("iothub-ack", self.ack.as_str());
        }
        Message::builder()
            .properties(properties.build())
            .application_properties(application.build())
            .data(Binary::from(self.body.clone()))
            .build()
    }
}

/// Milliseconds since the Unix epoch (negative before it).
fn unix_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fe2o3_amqp::types::messaging::MessageId;
    use fe2o3_amqp::types::primitives::SimpleValue;

    use super::*;

    #[test]
    fn the_amqp_form_carries_every_field_and_one_data_section() {
        let expiry = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        let message = CloudToDeviceMessage::new("hello")
            .with_message_id("m1")
            .with_correlation_id("c1")
            .with_user_id("u1")
            .with_content_type("text/plain")
            .with_content_encoding("utf-8")
            .with_expiry(expiry)
            .with_ack(Ack::Negative)
            .with_property("zeta", "1")
            .with_property("alpha", "2");
        let amqp = message.to_amqp("dev #1");
        let properties = amqp.properties.as_ref().expect("properties");
        assert_eq!(properties.to.as_deref(), Some("/devices/dev%20%231/messages/devicebound"));
        assert_eq!(properties.message_id, Some(MessageId::String("m1".into())));
        assert_eq!(properties.correlation_id, Some(MessageId::String("c1".into())));
        assert_eq!(properties.user_id.as_ref().map(|u| u.to_vec()), Some(b"u1".to_vec()));
        assert_eq!(properties.content_type.as_ref().map(|s| s.as_str()), Some("text/plain"));
        assert_eq!(properties.content_encoding.as_ref().map(|s| s.as_str()), Some("utf-8"));
        assert_eq!(properties.absolute_expiry_time.as_ref().map(|t| t.milliseconds()), Some(1_800_000_000_123));
        let application: Vec<(&str, &SimpleValue)> = amqp
            .application_properties
            .as_ref()
            .expect("application properties")
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let text = |s: &str| SimpleValue::String(s.into());
        assert_eq!(
            application,
            [("zeta", &text("1")), ("alpha", &text("2")), ("iothub-ack", &text("negative"))],
            "in order, the ack last"
        );
        assert_eq!(amqp.body.0.as_slice(), b"hello");
    }

    #[test]
    fn without_an_ack_none_is_sent() {
        let amqp = CloudToDeviceMessage::new(Vec::new()).to_amqp("d");
        assert!(amqp.application_properties.as_ref().is_none_or(|p| p.is_empty()));
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_millis(5)), -5);
    }
}
