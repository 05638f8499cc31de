//! Cloud-to-device messages on the wire, for the emulator and the Rust clients alike: the AMQP addresses, the
//! acknowledgement a sender asks for (`iothub-ack`), the feedback records the hub sends back
//! (`application/vnd.microsoft.iothub.feedback.json`) and the answer of a queue purge.

use serde::{Deserialize, Serialize};

/// The AMQP node a service sends cloud-to-device messages to.
pub const DEVICEBOUND_ADDRESS: &str = "/messages/devicebound";
/// The AMQP node a service reads feedback from (the hub matches it case-insensitively).
pub const FEEDBACK_ADDRESS: &str = "/messages/serviceBound/feedback";
/// The content type of a feedback message.
pub const FEEDBACK_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.feedback.json";
/// Largest cloud-to-device message body the hub takes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A message's `to`: the device's own devicebound address, `/devices/<id>/messages/devicebound`, with the id
/// percent-encoded as the SDKs write it (`encodeURIComponent`; the hub decodes it).
pub fn devicebound_to(device_id: &str) -> String {
    let id = percent_encoding::utf8_percent_encode(device_id, crate::property_bag::COMPONENT);
    format!("/devices/{id}/messages/devicebound")
}

/// Which outcomes of a message its sender wants feedback on (`iothub-ack`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Ack {
    /// None: the default.
    #[default]
    None,
    /// Completion only.
    Positive,
    /// Expiry, too many deliveries, rejection, purge.
    Negative,
    /// Every outcome.
    Full,
}

impl Ack {
    /// Reads an `iothub-ack` value (case-insensitive); `None` for an unknown one.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::None, Self::Positive, Self::Negative, Self::Full]
            .into_iter()
            .find(|ack| ack.as_str().eq_ignore_ascii_case(text))
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Positive => "positive",
            Self::Negative => "negative",
            Self::Full => "full",
        }
    }

    /// True when an outcome with `status` is reported to the sender.
    pub fn wants(self, status: FeedbackStatus) -> bool {
        match self {
            Self::Full => true,
            Self::Positive => status == FeedbackStatus::Success,
            Self::Negative => status != FeedbackStatus::Success,
            Self::None => false,
        }
    }
}

/// The outcome a feedback record reports (`statusCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeedbackStatus {
    /// The device completed the message.
    Success,
    /// The message expired before a device completed it.
    Expired,
    /// The message was delivered too often without being completed.
    DeliveryCountExceeded,
    /// The device rejected the message.
    Rejected,
    /// The service purged the device's queue.
    Purged,
}

impl FeedbackStatus {
    /// The wire spelling (`statusCode`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::Expired => "Expired",
            Self::DeliveryCountExceeded => "DeliveryCountExceeded",
            Self::Rejected => "Rejected",
            Self::Purged => "Purged",
        }
    }

    /// Reads a `statusCode`; `None` for one this crate does not know.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Success, Self::Expired, Self::DeliveryCountExceeded, Self::Rejected, Self::Purged]
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    /// The record's `description`, as the hub words it.
    pub fn description(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::Expired => "Message expired",
            Self::DeliveryCountExceeded => "Message delivery count exceeded",
            Self::Rejected => "Message rejected",
            Self::Purged => "Message purged",
        }
    }
}

/// One record of a feedback message, in the hub's member order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRecord {
    /// The `message-id` the sender gave (empty when it gave none).
    pub original_message_id: String,
    /// The outcome in words.
    pub description: String,
    /// The generation of the device the message was for.
    pub device_generation_id: String,
    /// The device the message was for.
    pub device_id: String,
    /// When the outcome happened (ISO 8601, UTC).
    pub enqueued_time_utc: String,
    /// The outcome (`Success`, `Expired`, `DeliveryCountExceeded`, `Rejected`, `Purged`); kept as text so that
    /// a code this crate does not know still reads.
    pub status_code: String,
}

impl FeedbackRecord {
    /// The outcome, when it is one this crate knows.
    pub fn status(&self) -> Option<FeedbackStatus> {
        FeedbackStatus::parse(&self.status_code)
    }
}

/// The answer of `DELETE /devices/{id}/commands`: how many messages the purge removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeMessageQueueResult {
    /// Messages removed.
    pub total_messages_purged: u64,
    /// The device whose queue was purged.
    pub device_id: String,
    /// The module, for a module's queue.
    pub module_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_read_any_case_and_ask_for_their_outcomes() {
        assert_eq!(Ack::parse("FULL"), Some(Ack::Full));
        assert_eq!(Ack::parse("positive"), Some(Ack::Positive));
        assert_eq!(Ack::parse("always"), None);
        assert!(Ack::Positive.wants(FeedbackStatus::Success) && !Ack::Positive.wants(FeedbackStatus::Rejected));
        assert!(Ack::Negative.wants(FeedbackStatus::Expired) && !Ack::Negative.wants(FeedbackStatus::Success));
        assert!(Ack::Full.wants(FeedbackStatus::Purged) && !Ack::None.wants(FeedbackStatus::Success));
    }

    #[test]
    fn a_feedback_record_reads_and_writes_in_the_hubs_member_order() {
        let text = r#"{"originalMessageId":"m1","description":"Message rejected","deviceGenerationId":"6378","deviceId":"d1","enqueuedTimeUtc":"2026-12-04T10:00:00.0000000Z","statusCode":"Rejected"}"#;
        let record: FeedbackRecord = serde_json::from_str(text).expect("record");
        assert_eq!(record.status(), Some(FeedbackStatus::Rejected));
        assert_eq!(serde_json::to_string(&record).expect("json"), text);
        let unknown = FeedbackRecord { status_code: "Later".into(), ..record };
        assert_eq!(unknown.status(), None);
    }
}
