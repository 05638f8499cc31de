//! What happened to each identity lately: the direct methods called on it and the changes to its twin, with
//! times, so a test (or the dashboard) can ask "did the hub call lockDoor, and what did the device answer?".
//!
//! Kept in memory only, a bounded ring per identity: history is for looking at, not for the store.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;

use super::twin::Object;

/// Entries kept per identity and kind; older ones are dropped.
pub const HISTORY_PER_IDENTITY: usize = 50;

/// Identities with a history at most: a load test over a million twins does not keep a million rings.
pub const MAX_IDENTITIES: usize = 100_000;

/// Method payloads and answers longer than this are cut (the record is for reading, not replaying).
pub const MAX_RECORDED_PAYLOAD: usize = 4096;

/// How a recorded method call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodOutcome {
    /// The device answered with this status and payload.
    Answered { status: i64, payload: serde_json::Value },
    /// The hub answered the caller with this error (its symbolic code and message).
    Failed { error_code: &'static str, message: String },
}

/// One direct method call.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodRecord {
    pub time: Timestamp,
    pub name: String,
    /// The request payload as the caller sent it (JSON text, possibly cut).
    pub payload: String,
    pub outcome: MethodOutcome,
    pub duration: Duration,
}

/// Which part of the twin changed, and who changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwinSection {
    /// Desired properties, written by the service (REST or a job).
    Desired,
    /// Tags, written by the service.
    Tags,
    /// Reported properties, written by the device.
    Reported,
}

/// One change to a twin section: the patch as written (or the whole section, for a replace).
#[derive(Debug, Clone, PartialEq)]
pub struct TwinChangeRecord {
    pub time: Timestamp,
    pub section: TwinSection,
    /// True when the write replaced the section rather than merging into it.
    pub replaced: bool,
    /// The section's `$version` after the change (tags have none).
    pub version: Option<u64>,
    pub patch: Object,
}

#[derive(Debug, Default)]
struct Entries {
    methods: VecDeque<MethodRecord>,
    twin: VecDeque<TwinChangeRecord>,
}

fn push<T>(ring: &mut VecDeque<T>, item: T) {
    if ring.len() == HISTORY_PER_IDENTITY {
        ring.pop_front();
    }
    ring.push_back(item);
}

/// Every identity's recent history, by identity key.
#[derive(Debug, Default)]
pub struct History {
    by_identity: HashMap<String, Entries>,
}

impl History {
    /// Records a method call on `key`; the payload is cut to `MAX_RECORDED_PAYLOAD` bytes.
    pub fn record_method(&mut self, key: &str, mut record: MethodRecord) {
        if record.payload.len() > MAX_RECORDED_PAYLOAD {
            let mut end = MAX_RECORDED_PAYLOAD;
            while !record.payload.is_char_boundary(end) {
                end -= 1;
            }
            record.payload.truncate(end);
        }
        if let Some(entries) = self.entry(key) {
            push(&mut entries.methods, record);
        }
    }

    /// Records a change to `key`'s twin.
    pub fn record_twin_change(&mut self, key: &str, record: TwinChangeRecord) {
        if let Some(entries) = self.entry(key) {
            push(&mut entries.twin, record);
        }
    }

    /// `key`'s entries; `None` when the history already covers its most identities and `key` is not one.
    fn entry(&mut self, key: &str) -> Option<&mut Entries> {
        if !self.by_identity.contains_key(key) && self.by_identity.len() >= MAX_IDENTITIES {
            return None;
        }
        Some(self.by_identity.entry(key.to_owned()).or_default())
    }

    /// `key`'s method calls, newest first.
    pub fn methods(&self, key: &str) -> Vec<MethodRecord> {
        self.by_identity.get(key).map(|e| e.methods.iter().rev().cloned().collect()).unwrap_or_default()
    }

    /// `key`'s twin changes, newest first.
    pub fn twin_changes(&self, key: &str) -> Vec<TwinChangeRecord> {
        self.by_identity.get(key).map(|e| e.twin.iter().rev().cloned().collect()).unwrap_or_default()
    }

    /// Forgets a deleted identity.
    pub fn forget(&mut self, key: &str) {
        self.by_identity.remove(key);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.by_identity.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: usize, payload: String) -> MethodRecord {
        MethodRecord {
            time: Timestamp::from_second(1_900_000_000).expect("time"),
            name: format!("m{n}"),
            payload,
            outcome: MethodOutcome::Answered { status: 200, payload: serde_json::Value::Null },
            duration: Duration::from_millis(3),
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_entries_newest_first() {
        let mut history = History::default();
        for n in 0..HISTORY_PER_IDENTITY + 5 {
            history.record_method("d", call(n, "null".into()));
        }
        let methods = history.methods("d");
        assert_eq!(methods.len(), HISTORY_PER_IDENTITY);
        assert_eq!(methods[0].name, format!("m{}", HISTORY_PER_IDENTITY + 4));
        assert_eq!(methods.last().map(|m| m.name.as_str()), Some("m5"));
        assert!(history.methods("other").is_empty());
        history.forget("d");
        assert!(history.methods("d").is_empty());
    }

    #[test]
    fn long_payloads_are_cut_on_a_character_boundary() {
        let mut history = History::default();
        history.record_method("d", call(0, "é".repeat(MAX_RECORDED_PAYLOAD)));
        let kept = &history.methods("d")[0].payload;
        assert!(kept.len() <= MAX_RECORDED_PAYLOAD && kept.len() > MAX_RECORDED_PAYLOAD - 2);
    }
}
