//! Cloud-to-device messages (the hub's devguide-messages-c2d): the per-device queue and its states, and the
//! feedback each outcome leaves. Pure state: timers, transports and persistence are the hub's business.
//!
//! A message is *enqueued*, becomes *invisible* (locked) while a device holds it, and ends *completed* or
//! *dead-lettered* (rejected, expired, delivered too often, purged). Each end produces a feedback record when the
//! sender's `iothub-ack` asks for that kind of outcome.

pub mod feedback;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

pub use feedback::{FeedbackBatch, FeedbackQueue, FeedbackRecord};
pub use iothub_proto::messages::{Ack, FeedbackStatus};

/// Most messages waiting for one device (enqueued or locked), as on the hub.
pub const MAX_QUEUED: usize = 50;
/// Largest message body, as on the hub.
pub const MAX_MESSAGE_BYTES: usize = iothub_proto::messages::MAX_MESSAGE_BYTES;
/// How long a device holds a message before it is offered again.
pub const LOCK: SignedDuration = SignedDuration::from_secs(60);
/// How long a message lives when its sender sets no expiry (the hub's default TTL).
pub const DEFAULT_TTL: SignedDuration = SignedDuration::from_secs(3600);
/// The longest TTL the hub allows; a later `absolute-expiry-time` is cut to it.
pub const MAX_TTL: SignedDuration = SignedDuration::from_secs(2 * 24 * 3600);
/// Deliveries after which a message that is never completed is dead-lettered.
pub const MAX_DELIVERY_COUNT: u32 = 10;

/// A message as the service sent it: the properties a device sees, and its body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// `absolute-expiry-time`, when the sender set one.
    pub expiry: Option<Timestamp>,
    pub ack: Ack,
    /// Application properties, in the sender's order.
    pub properties: Vec<(String, String)>,
    /// Kept as base64 in the data file (a JSON array of numbers would triple it).
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
}

/// Serde for bytes as one base64 string.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// A message in a device's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// The hub's number for the message: its order in the queue and its key in the store.
    pub sequence: u64,
    pub message: Message,
    pub enqueued: Timestamp,
    /// When the message expires: its own expiry, or the default TTL, at most the longest TTL.
    pub expires: Timestamp,
    /// How often it was handed to a device.
    pub delivery_count: u32,
    /// Set while a device holds it: a lock token and when the lock runs out.
    pub lock: Option<Lock>,
}

/// A device's hold on a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub token: String,
    pub until: Timestamp,
}

/// Why a C2D operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum C2dError {
    #[error("The device already has {MAX_QUEUED} messages waiting; the hub queues no more until it takes some")]
    QueueFull,
    #[error("The message body is {0} bytes; the limit is {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("No message of this device holds the lock token '{0}' (it was completed, expired or offered again)")]
    LockLost(String),
}

/// How a device settles a message it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Done: removed, feedback `Success`.
    Complete,
    /// Refused: dead-lettered, feedback `Rejected`.
    Reject,
    /// Not now: offered again (or dead-lettered after too many deliveries).
    Abandon,
}

/// A message that left the queue, and the feedback it leaves (when its sender asked for that outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub sequence: u64,
    pub feedback: Option<FeedbackRecord>,
}

/// The queue of one device, in sequence order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceQueue {
    messages: Vec<Queued>,
}

fn later(time: Timestamp, by: SignedDuration) -> Timestamp {
    time.checked_add(by).unwrap_or(Timestamp::MAX)
}

impl DeviceQueue {
    /// A queue holding `messages` (read back from the store), ordered by sequence.
    pub fn from_messages(mut messages: Vec<Queued>) -> Self {
        messages.sort_by_key(|m| m.sequence);
        Self { messages }
    }

    /// Messages waiting or held: the device's `cloudToDeviceMessageCount`.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The messages in order.
    pub fn messages(&self) -> &[Queued] {
        &self.messages
    }

    /// Adds a message the service sent, as number `sequence`.
    pub fn enqueue(&mut self, sequence: u64, message: Message, now: Timestamp) -> Result<&Queued, C2dError> {
        if message.body.len() > MAX_MESSAGE_BYTES {
            return Err(C2dError::TooLarge(message.body.len()));
        }
        if self.messages.len() >= MAX_QUEUED {
            return Err(C2dError::QueueFull);
        }
        let longest = later(now, MAX_TTL);
        let expires = message.expiry.unwrap_or_else(|| later(now, DEFAULT_TTL)).min(longest);
        self.messages.push(Queued { sequence, message, enqueued: now, expires, delivery_count: 0, lock: None });
        Ok(self.messages.last().unwrap_or_else(|| unreachable!("just pushed")))
    }

    /// Locks the oldest message nobody holds and hands it out with `token`; `None` when none waits. Call
    /// `expire` first so an expired message is not handed out.
    pub fn take_next(&mut self, token: String, now: Timestamp) -> Option<&Queued> {
        let next = self.messages.iter_mut().find(|m| m.lock.is_none())?;
        next.delivery_count += 1;
        next.lock = Some(Lock { token, until: later(now, LOCK) });
        Some(next)
    }

    /// True when a message waits that nobody holds.
    pub fn has_waiting(&self) -> bool {
        self.messages.iter().any(|m| m.lock.is_none())
    }

    /// Settles the message held with `token`. A completed or rejected message leaves the queue; an abandoned one
    /// waits again, unless it was delivered too often (then it is dead-lettered).
    pub fn settle(
        &mut self,
        token: &str,
        how: Settlement,
        device: &DeviceRef<'_>,
        now: Timestamp,
    ) -> Result<Option<Ended>, C2dError> {
        let position = self
            .messages
            .iter()
            .position(|m| m.lock.as_ref().is_some_and(|l| l.token == token))
            .ok_or_else(|| C2dError::LockLost(token.to_owned()))?;
        let status = match how {
            Settlement::Complete => FeedbackStatus::Success,
            Settlement::Reject => FeedbackStatus::Rejected,
            Settlement::Abandon if self.messages[position].delivery_count >= MAX_DELIVERY_COUNT => {
                FeedbackStatus::DeliveryCountExceeded
            }
            Settlement::Abandon => {
                self.messages[position].lock = None;
                return Ok(None);
            }
        };
        let ended = self.messages.remove(position);
        Ok(Some(Ended { sequence: ended.sequence, feedback: FeedbackRecord::of(&ended, status, device, now) }))
    }

    /// Ends what time has ended: messages past their expiry leave (feedback `Expired`), locks that ran out are
    /// released (a message delivered too often is dead-lettered instead). Returns what left, and whether any
    /// lock was released (so a waiting device can be offered it again).
    pub fn expire(&mut self, device: &DeviceRef<'_>, now: Timestamp) -> (Vec<Ended>, bool) {
        let mut ended = Vec::new();
        let mut released = false;
        self.messages.retain_mut(|m| {
            let status = if m.expires <= now {
                FeedbackStatus::Expired
            } else if m.lock.as_ref().is_some_and(|l| l.until <= now) {
                if m.delivery_count < MAX_DELIVERY_COUNT {
                    m.lock = None;
                    released = true;
                    return true;
                }
                FeedbackStatus::DeliveryCountExceeded
            } else {
                return true;
            };
            ended.push(Ended { sequence: m.sequence, feedback: FeedbackRecord::of(m, status, device, now) });
            false
        });
        (ended, released)
    }

    /// Releases every lock (the device's connection ended before it settled them): the messages wait again.
    pub fn release_all(&mut self) -> bool {
        let mut released = false;
        for message in self.messages.iter_mut().filter(|m| m.lock.is_some()) {
            message.lock = None;
            released = true;
        }
        released
    }

    /// Removes every message (`DELETE /devices/{id}/commands`); each leaves feedback `Purged` where asked.
    pub fn purge(&mut self, device: &DeviceRef<'_>, now: Timestamp) -> Vec<Ended> {
        self.messages
            .drain(..)
            .map(|m| Ended {
                sequence: m.sequence,
                feedback: FeedbackRecord::of(&m, FeedbackStatus::Purged, device, now),
            })
            .collect()
    }

    /// The earliest time something here changes on its own (an expiry or a lock running out).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.messages.iter().map(|m| m.lock.as_ref().map_or(m.expires, |l| l.until.min(m.expires))).min()
    }

    /// The message held with `token`, if any.
    pub fn held(&self, token: &str) -> Option<&Queued> {
        self.messages.iter().find(|m| m.lock.as_ref().is_some_and(|l| l.token == token))
    }

    /// Takes back message `sequence` (its sender was told it could not be kept).
    pub fn remove(&mut self, sequence: u64) {
        self.messages.retain(|m| m.sequence != sequence);
    }

    /// The message numbered `sequence`, if it is still queued.
    pub fn get(&self, sequence: u64) -> Option<&Queued> {
        self.messages.iter().find(|m| m.sequence == sequence)
    }
}

/// The device a queue belongs to, as feedback names it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceRef<'a> {
    pub device_id: &'a str,
    pub generation_id: &'a str,
}

#[cfg(test)]
mod tests;
