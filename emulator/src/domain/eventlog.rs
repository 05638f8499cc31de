//! The built-in Event Hubs-compatible endpoint's log: device-to-cloud messages kept in partitions, each an ordered
//! sequence with Event Hubs' positions (sequence number, offset, enqueued time), trimmed by age and by size.
//!
//! A device's messages always land in the same partition (a stable hash of its id), so they are read in the
//! order they were sent. The log knows nothing of AMQP: the endpoint asks it for positions and events.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::telemetry::TelemetryMessage;

/// Partitions of a new hub's built-in endpoint (the portal's default).
pub const DEFAULT_PARTITIONS: u32 = 4;
/// Most partitions (a real hub allows up to 128 on dedicated tiers; 32 on standard ones).
pub const MAX_PARTITIONS: u32 = 32;
/// How long messages are kept (a new hub keeps them 1 day).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Most bytes the log keeps over all partitions before the oldest messages are dropped: the emulator keeps the
/// log in memory as well as on disk, so it needs a bound the real service (retention only) does not.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The consumer group every hub has.
pub const DEFAULT_CONSUMER_GROUP: &str = "$Default";
/// Most consumer groups (a standard hub allows 20 on its built-in endpoint).
pub const MAX_CONSUMER_GROUPS: usize = 20;
/// Bytes counted per event beyond its body and properties (what the stored record adds).
const EVENT_OVERHEAD: u64 = 64;

/// How the built-in endpoint is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub partitions: u32,
    pub retention: Duration,
    pub max_bytes: u64,
    /// Consumer groups besides `$Default`, as the user named them.
    pub consumer_groups: Vec<String>,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            partitions: DEFAULT_PARTITIONS,
            retention: DEFAULT_RETENTION,
            max_bytes: DEFAULT_MAX_BYTES,
            consumer_groups: Vec::new(),
        }
    }
}

impl LogSettings {
    /// The consumer group named `name` (case-insensitively, as Event Hubs compares them), in its declared spelling.
    pub fn consumer_group(&self, name: &str) -> Option<&str> {
        std::iter::once(DEFAULT_CONSUMER_GROUP)
            .chain(self.consumer_groups.iter().map(String::as_str))
            .find(|group| group.eq_ignore_ascii_case(name))
    }

    /// Checks a consumer group name as Event Hubs does: 1 to 50 letters, digits, `.`, `_` and `-`, starting and
    /// ending with a letter or digit.
    pub fn check_consumer_group_name(name: &str) -> Result<(), String> {
        let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let ends_ok = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
        if (1..=50).contains(&name.len()) && valid_chars && ends_ok {
            Ok(())
        } else {
            Err(format!(
                "'{name}' is not a consumer group name: use 1 to 50 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
            ))
        }
    }
}

/// One message in the log, with the positions the endpoint reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub partition: u32,
    pub sequence: u64,
    /// Bytes before this event in its partition, over the partition's whole history.
    pub offset: u64,
    pub message: TelemetryMessage,
}

impl Event {
    /// Bytes this event counts for in the size cap and in offsets.
    pub fn size(&self) -> u64 {
        message_size(&self.message)
    }
}

fn message_size(message: &TelemetryMessage) -> u64 {
    let properties: usize =
        message.properties.iter().chain(&message.system_properties).map(|(k, v)| k.len() + v.len()).sum();
    (message.body.len() + properties + message.device_id.len()) as u64 + EVENT_OVERHEAD
}

/// The partition a device's messages go to: FNV-1a of its id, so the choice is the same in every build and
/// after every restart.
pub fn partition_for(device_id: &str, partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in device_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
}

/// Where a reader starts, as the selector filters say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest message kept (`x-opt-offset > '-1'`).
    Start,
    /// Only messages that arrive from now on (`@latest`).
    Latest,
    Offset {
        offset: u64,
        inclusive: bool,
    },
    Sequence {
        sequence: i64,
        inclusive: bool,
    },
    /// Milliseconds since the Unix epoch.
    EnqueuedTime {
        millis: i64,
        inclusive: bool,
    },
}

/// What `$management` reports of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub begin_sequence: i64,
    /// -1 when nothing was ever enqueued.
    pub last_sequence: i64,
    pub last_offset: i64,
    pub last_enqueued: Option<Timestamp>,
    pub is_empty: bool,
}

/// Where a partition continues after a restart when retention emptied it: stored with every trim so sequence
/// numbers and offsets never go back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Continuation {
    pub next_sequence: u64,
    pub next_offset: u64,
}

/// One partition: its kept events in order and the next positions.
#[derive(Debug, Default)]
pub struct Partition {
    id: u32,
    events: VecDeque<Arc<Event>>,
    next_sequence: u64,
    next_offset: u64,
    bytes: u64,
    /// Events with a sequence below this are durable; readers see only those.
    visible_end: u64,
}

impl Partition {
    /// A partition holding `events` (in sequence order, all durable), continuing at least from `continuation`.
    pub fn new(id: u32, events: Vec<Arc<Event>>, continuation: Continuation) -> Self {
        let mut partition = Self {
            id,
            next_sequence: continuation.next_sequence,
            next_offset: continuation.next_offset,
            ..Self::default()
        };
        for event in events {
            partition.next_sequence = partition.next_sequence.max(event.sequence + 1);
            partition.next_offset = partition.next_offset.max(event.offset + event.size());
            partition.bytes += event.size();
            partition.events.push_back(event);
        }
        partition.visible_end = partition.next_sequence;
        partition
    }

    /// Appends a message as the next event (not visible to readers until `mark_durable`). Its enqueued time
    /// never goes back from the previous event's, so time positions stay ordered even if the clock does not.
    pub fn append(&mut self, mut message: TelemetryMessage) -> Arc<Event> {
        if let Some(last) = self.events.back() {
            message.enqueued_time = message.enqueued_time.max(last.message.enqueued_time);
        }
        let event =
            Arc::new(Event { partition: self.id, sequence: self.next_sequence, offset: self.next_offset, message });
        self.next_sequence += 1;
        self.next_offset += event.size();
        self.bytes += event.size();
        self.events.push_back(Arc::clone(&event));
        event
    }

    /// Makes every event up to `sequence` visible (the store commits in order, so all earlier ones are durable).
    pub fn mark_durable(&mut self, sequence: u64) {
        self.visible_end = self.visible_end.max(sequence + 1);
    }

    /// Forgets an event whose write failed: it was never acknowledged.
    pub fn remove_failed(&mut self, sequence: u64) {
        let index = self.events.partition_point(|e| e.sequence < sequence);
        if self.events.get(index).is_some_and(|e| e.sequence == sequence)
            && let Some(event) = self.events.remove(index)
        {
            self.bytes -= event.size();
        }
    }

    /// Drops the oldest events while the partition holds more than `max_bytes` (keeping the newest one) or
    /// while they were enqueued before `expired_before`. Returns the last dropped sequence number, if any.
    pub fn trim(&mut self, max_bytes: u64, expired_before: Timestamp) -> Option<u64> {
        let mut dropped = None;
        while let Some(front) = self.events.front() {
            let over_size = self.bytes > max_bytes && self.events.len() > 1;
            let expired = front.message.enqueued_time < expired_before && front.sequence < self.visible_end;
            if !(over_size || expired) {
                break;
            }
            dropped = Some(front.sequence);
            self.bytes -= front.size();
            self.events.pop_front();
        }
        dropped
    }

    /// Bytes the kept events count for (the size cap's measure).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// When the oldest kept event was enqueued.
    pub fn oldest_enqueued(&self) -> Option<Timestamp> {
        self.events.front().map(|e| e.message.enqueued_time)
    }

    /// Where the partition continues: stored when it is trimmed.
    pub fn continuation(&self) -> Continuation {
        Continuation { next_sequence: self.next_sequence, next_offset: self.next_offset }
    }

    /// The sequence number a reader starting at `start` receives first (the next one to arrive when nothing
    /// kept matches).
    pub fn first_sequence(&self, start: StartAt) -> u64 {
        let visible = || self.events.iter().take_while(|e| e.sequence < self.visible_end);
        let first_matching =
            |matches: &dyn Fn(&Event) -> bool| visible().find(|e| matches(e)).map_or(self.visible_end, |e| e.sequence);
        match start {
            StartAt::Start => self.events.front().map_or(self.visible_end, |e| e.sequence.min(self.visible_end)),
            StartAt::Latest => self.visible_end,
            StartAt::Offset { offset, inclusive } => {
                let index =
                    self.events.partition_point(|e| if inclusive { e.offset < offset } else { e.offset <= offset });
                self.events.get(index).map_or(self.visible_end, |e| e.sequence.min(self.visible_end))
            }
            StartAt::Sequence { sequence, inclusive } => {
                let wanted = if inclusive { sequence } else { sequence.saturating_add(1) };
                let wanted = u64::try_from(wanted).unwrap_or(0);
                let oldest = self.events.front().map_or(self.visible_end, |e| e.sequence);
                wanted.max(oldest).min(self.visible_end)
            }
            StartAt::EnqueuedTime { millis, inclusive } => first_matching(&|e: &Event| {
                let at = e.message.enqueued_time.as_millisecond();
                if inclusive { at >= millis } else { at > millis }
            }),
        }
    }

    /// Up to `max` visible events from sequence `from` on (from the oldest kept one if `from` was trimmed).
    pub fn read(&self, from: u64, max: usize) -> Vec<Arc<Event>> {
        let index = self.events.partition_point(|e| e.sequence < from);
        self.events.iter().skip(index).take_while(|e| e.sequence < self.visible_end).take(max).cloned().collect()
    }

    /// The sequence number after the last visible event: a reader at it waits for new events.
    pub fn visible_end(&self) -> u64 {
        self.visible_end
    }

    /// The last `max` visible events for which `keep` holds, oldest first.
    pub fn recent(&self, max: usize, keep: impl Fn(&Event) -> bool) -> Vec<Arc<Event>> {
        let visible = self.events.iter().rev().skip_while(|e| e.sequence >= self.visible_end);
        let mut found: Vec<_> = visible.filter(|e| keep(e)).take(max).cloned().collect();
        found.reverse();
        found
    }

    /// What `$management` reports.
    pub fn info(&self) -> PartitionInfo {
        let visible: Vec<&Arc<Event>> = self.events.iter().take_while(|e| e.sequence < self.visible_end).collect();
        let last = visible.last();
        let as_long = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        PartitionInfo {
            begin_sequence: visible.first().map_or(as_long(self.visible_end), |e| as_long(e.sequence)),
            last_sequence: as_long(self.visible_end) - 1,
            last_offset: last.map_or(-1, |e| as_long(e.offset)),
            last_enqueued: last.map(|e| e.message.enqueued_time),
            is_empty: visible.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn message(device: &str, at_ms: i64, body: &str) -> TelemetryMessage {
        TelemetryMessage {
            device_id: device.into(),
            module_id: None,
            generation_id: String::new(),
            enqueued_time: Timestamp::from_millisecond(at_ms).expect("time"),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            system_properties: BTreeMap::new(),
            properties: BTreeMap::new(),
        }
    }

    fn filled(count: i64) -> Partition {
        let mut partition = Partition::new(0, Vec::new(), Continuation::default());
        for i in 0..count {
            let event = partition.append(message("d", 1_000 * (i + 1), &format!("m{i}")));
            partition.mark_durable(event.sequence);
        }
        partition
    }

    fn bodies(events: &[Arc<Event>]) -> Vec<String> {
        events.iter().map(|e| String::from_utf8_lossy(&e.message.body).into_owned()).collect()
    }

    #[test]
    fn a_device_always_lands_in_the_same_partition() {
        assert_eq!(partition_for("myDeviceId", 4), partition_for("myDeviceId", 4));
        let spread: std::collections::BTreeSet<u32> = (0..100).map(|i| partition_for(&format!("d{i}"), 4)).collect();
        assert_eq!(spread.len(), 4, "100 devices use every partition");
        assert_eq!(partition_for("anything", 1), 0);
    }

    #[test]
    fn readers_see_only_durable_events_in_order() {
        let mut partition = Partition::new(0, Vec::new(), Continuation::default());
        let first = partition.append(message("d", 1_000, "a"));
        let second = partition.append(message("d", 2_000, "b"));
        assert!(partition.read(0, 10).is_empty(), "nothing is durable yet");
        assert!(partition.info().is_empty);
        partition.mark_durable(first.sequence);
        assert_eq!(bodies(&partition.read(0, 10)), ["a"]);
        partition.mark_durable(second.sequence);
        assert_eq!(bodies(&partition.read(0, 10)), ["a", "b"]);
        assert_eq!(second.offset, first.size(), "offsets count bytes before the event");
    }

    #[test]
    fn start_positions_follow_the_selector_semantics() {
        let partition = filled(5); // sequences 0..5 enqueued at 1 s .. 5 s
        let offset_of = |seq: usize| partition.read(0, 10)[seq].offset;
        assert_eq!(partition.first_sequence(StartAt::Start), 0);
        assert_eq!(partition.first_sequence(StartAt::Latest), 5);
        assert_eq!(partition.first_sequence(StartAt::Sequence { sequence: 2, inclusive: false }), 3);
        assert_eq!(partition.first_sequence(StartAt::Sequence { sequence: 2, inclusive: true }), 2);
        assert_eq!(partition.first_sequence(StartAt::Sequence { sequence: -1, inclusive: false }), 0);
        assert_eq!(partition.first_sequence(StartAt::Offset { offset: offset_of(1), inclusive: false }), 2);
        assert_eq!(partition.first_sequence(StartAt::Offset { offset: offset_of(1), inclusive: true }), 1);
        assert_eq!(partition.first_sequence(StartAt::EnqueuedTime { millis: 3_000, inclusive: false }), 3);
        assert_eq!(partition.first_sequence(StartAt::EnqueuedTime { millis: 3_000, inclusive: true }), 2);
        assert_eq!(partition.first_sequence(StartAt::EnqueuedTime { millis: 9_000, inclusive: false }), 5);
        assert_eq!(bodies(&partition.read(3, 1)), ["m3"], "reads honour the count");
    }

    #[test]
    fn retention_and_the_size_cap_drop_the_oldest_first_and_positions_go_on() {
        let mut partition = filled(5);
        let expired = partition.trim(u64::MAX, Timestamp::from_millisecond(2_500).expect("time"));
        assert_eq!(expired, Some(1), "events enqueued at 1 s and 2 s are past retention");
        assert_eq!(partition.info().begin_sequence, 2);
        assert_eq!(bodies(&partition.read(0, 10)), ["m2", "m3", "m4"], "a trimmed start reads from the oldest kept");
        let one = partition.read(0, 1)[0].size();
        assert_eq!(partition.trim(one, Timestamp::UNIX_EPOCH), Some(3), "the cap keeps the newest");
        assert_eq!(bodies(&partition.read(0, 10)), ["m4"]);

        let continued = Partition::new(0, Vec::new(), partition.continuation());
        let info = continued.info();
        assert_eq!((info.begin_sequence, info.last_sequence, info.is_empty), (5, 4, true));
    }

    #[test]
    fn a_failed_write_is_forgotten() {
        let mut partition = Partition::new(0, Vec::new(), Continuation::default());
        let lost = partition.append(message("d", 1_000, "lost"));
        partition.remove_failed(lost.sequence);
        let kept = partition.append(message("d", 2_000, "kept"));
        partition.mark_durable(kept.sequence);
        assert_eq!(bodies(&partition.read(0, 10)), ["kept"]);
    }

    #[test]
    fn enqueued_times_never_go_back() {
        let mut partition = Partition::new(0, Vec::new(), Continuation::default());
        partition.append(message("d", 5_000, "a"));
        let second = partition.append(message("d", 4_000, "b"));
        assert_eq!(second.message.enqueued_time.as_millisecond(), 5_000);
    }

    #[test]
    fn consumer_groups_are_found_case_insensitively_and_names_are_checked() {
        let settings = LogSettings { consumer_groups: vec!["analytics".into()], ..LogSettings::default() };
        assert_eq!(settings.consumer_group("$default"), Some("$Default"));
        assert_eq!(settings.consumer_group("Analytics"), Some("analytics"));
        assert_eq!(settings.consumer_group("other"), None);
        assert!(LogSettings::check_consumer_group_name("my-group.1").is_ok());
        assert!(LogSettings::check_consumer_group_name("-bad").is_err());
        assert!(LogSettings::check_consumer_group_name("").is_err());
        assert!(LogSettings::check_consumer_group_name(&"x".repeat(51)).is_err());
    }
}
