//! Delivery feedback: one record per outcome a sender asked for (`iothub-ack`), handed to the service in batches
//! (one feedback message holds every record waiting when it is read), each batch locked while a reader holds it
//! and dropped once completed. Records are what is kept; a batch is only how they travel, so a batch that is
//! abandoned, or held when the emulator stops, comes back as part of a later one.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{DeviceRef, FeedbackStatus, LOCK, Queued, later};

/// The outcome of one message, for its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    /// The hub's number for the record (its key in the store), set when it is kept.
    pub sequence: u64,
    /// The `message-id` the sender gave (empty when it gave none).
    pub original_message_id: String,
    pub device_id: String,
    pub device_generation_id: String,
    /// When the outcome happened.
    pub enqueued_time: Timestamp,
    pub status: FeedbackStatus,
}

impl FeedbackRecord {
    /// The record `message` leaves with `status`, if its sender asked for that outcome.
    pub fn of(message: &Queued, status: FeedbackStatus, device: &DeviceRef<'_>, now: Timestamp) -> Option<Self> {
        message.message.ack.wants(status).then(|| Self {
            sequence: 0,
            original_message_id: message.message.message_id.clone().unwrap_or_default(),
            device_id: device.device_id.to_owned(),
            device_generation_id: device.generation_id.to_owned(),
            enqueued_time: now,
            status,
        })
    }
}

/// One feedback message: the records it carries, while a reader holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackBatch {
    pub token: String,
    pub records: Vec<FeedbackRecord>,
    pub locked_until: Timestamp,
}

/// Most records in one feedback message.
pub const MAX_BATCH: usize = 100;
/// Most records kept waiting for the service; the oldest go first beyond it.
pub const MAX_WAITING: usize = 10_000;

/// The hub's feedback: records no reader has taken, and batches readers hold.
#[derive(Debug, Default)]
pub struct FeedbackQueue {
    waiting: Vec<FeedbackRecord>,
    held: Vec<FeedbackBatch>,
}

/// What settling a feedback message did: the records to forget, if any.
pub type Forgotten = Vec<u64>;

impl FeedbackQueue {
    /// A queue of records read back from the store.
    pub fn from_records(mut records: Vec<FeedbackRecord>) -> Self {
        records.sort_by_key(|r| r.sequence);
        Self { waiting: records, held: Vec::new() }
    }

    /// Adds a record; returns the sequences of the oldest ones dropped to stay within `MAX_WAITING`.
    pub fn push(&mut self, record: FeedbackRecord) -> Forgotten {
        self.waiting.push(record);
        let excess = (self.waiting.len() + self.held_records()).saturating_sub(MAX_WAITING).min(self.waiting.len());
        self.waiting.drain(..excess).map(|r| r.sequence).collect()
    }

    fn held_records(&self) -> usize {
        self.held.iter().map(|b| b.records.len()).sum()
    }

    /// True when a reader would get something.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Records waiting or held.
    pub fn len(&self) -> usize {
        self.waiting.len() + self.held_records()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands a reader the waiting records (up to `MAX_BATCH`) as one message locked with `token`.
    pub fn take(&mut self, token: String, now: Timestamp) -> Option<&FeedbackBatch> {
        if self.waiting.is_empty() {
            return None;
        }
        let count = self.waiting.len().min(MAX_BATCH);
        let records: Vec<FeedbackRecord> = self.waiting.drain(..count).collect();
        self.held.push(FeedbackBatch { token, records, locked_until: later(now, LOCK) });
        self.held.last()
    }

    /// Completes (`accept`) or drops (`reject`) a held batch: its records are forgotten. `None` when no batch
    /// has that token.
    pub fn complete(&mut self, token: &str) -> Option<Forgotten> {
        let position = self.held.iter().position(|b| b.token == token)?;
        Some(self.held.remove(position).records.into_iter().map(|r| r.sequence).collect())
    }

    /// Gives a held batch back: its records wait again, first in line. False when no batch has that token.
    pub fn abandon(&mut self, token: &str) -> bool {
        let Some(position) = self.held.iter().position(|b| b.token == token) else { return false };
        self.give_back(position);
        true
    }

    fn give_back(&mut self, position: usize) {
        let mut records = self.held.remove(position).records;
        records.append(&mut self.waiting);
        self.waiting = records;
    }

    /// Gives back every batch whose lock ran out; true when any was.
    pub fn expire_locks(&mut self, now: Timestamp) -> bool {
        let mut any = false;
        while let Some(position) = self.held.iter().position(|b| b.locked_until <= now) {
            self.give_back(position);
            any = true;
        }
        any
    }

    /// When a held batch's lock runs out next.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.held.iter().map(|b| b.locked_until).min()
    }
}
