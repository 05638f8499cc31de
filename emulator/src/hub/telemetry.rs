//! Telemetry: every device-to-cloud message is appended to the Event Hubs-compatible log, durably before the
//! device is answered, and read from there by the endpoint's consumers, the emulator-only REST read and the
//! in-process stream.
//!
//! Each partition has its own lock (senders to different partitions never wait on each other, nor on the hub's
//! state lock) and a watch of how far it is durable, which readers wait on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::domain::eventlog::{self, Continuation, Event, LogSettings, Partition, PartitionInfo, StartAt};
use crate::domain::registry;
use crate::domain::telemetry::{RECENT_MESSAGES, TelemetryMessage};
use crate::error::HubError;
use crate::store::Write;
use crate::store::events::EventHubRecord;

/// Messages a slow live subscriber may fall behind before it misses some.
pub(super) const FEED_CAPACITY: usize = 4096;
/// How often retention is applied when nothing is about to expire sooner.
const RETENTION_SWEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// The built-in endpoint's log: settings, creation time and partitions.
pub struct EventLog {
    settings: LogSettings,
    created_at: Timestamp,
    /// False until the endpoint's record (partition count, creation time) is in the store.
    recorded: bool,
    partitions: Vec<PartitionCell>,
    readers: SharedReaders,
    next_reader: std::sync::atomic::AtomicU64,
}

/// Most receivers of one partition in one consumer group (Event Hubs' limit).
pub const MAX_READERS_PER_PARTITION: usize = 5;

/// The receivers of each (consumer group, partition).
type SharedReaders = Arc<Mutex<HashMap<(String, u32), Vec<Reader>>>>;

struct Reader {
    id: u64,
    epoch: Option<i64>,
    stolen: CancellationToken,
}

/// Why a receiver may not read a partition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReaderRefused {
    #[error("At most {MAX_READERS_PER_PARTITION} receivers may read a partition in one consumer group")]
    TooMany,
    #[error("A receiver with epoch {held} reads this partition; a receiver with a lower or no epoch may not")]
    EpochHeld { held: i64 },
}

/// A receiver's place among a partition's readers; dropping it leaves. `stolen` fires when a receiver with a
/// higher epoch takes the partition over.
pub struct ReaderLease {
    readers: SharedReaders,
    key: (String, u32),
    id: u64,
    pub stolen: CancellationToken,
}

impl Drop for ReaderLease {
    fn drop(&mut self) {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = readers.get_mut(&self.key) {
            list.retain(|r| r.id != self.id);
            if list.is_empty() {
                readers.remove(&self.key);
            }
        }
    }
}

struct PartitionCell {
    log: Mutex<Partition>,
    /// The partition's visible end (see `Partition::visible_end`), for readers waiting on new events.
    visible: watch::Sender<u64>,
}

impl PartitionCell {
    fn lock(&self) -> MutexGuard<'_, Partition> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl EventLog {
    /// The log as the store loaded it. A recorded partition count wins over `settings`: a hub's partitions are
    /// fixed when it is created.
    pub(super) fn new(
        mut settings: LogSettings,
        record: Option<EventHubRecord>,
        events: Vec<Arc<Event>>,
        continuations: &[(u32, Continuation)],
        now: Timestamp,
    ) -> Self {
        if let Some(record) = record
            && record.partitions != settings.partitions
        {
            tracing::warn!(
                stored = record.partitions,
                asked = settings.partitions,
                "the data dir's hub was created with another partition count; keeping it (start with an empty data dir to change it)"
            );
            settings.partitions = record.partitions;
        }
        let count = settings.partitions.max(1);
        let mut by_partition: Vec<Vec<Arc<Event>>> = (0..count).map(|_| Vec::new()).collect();
        for event in events {
            match by_partition.get_mut(event.partition as usize) {
                Some(list) => list.push(event),
                None => {
                    tracing::warn!(partition = event.partition, "a stored event's partition does not exist; dropped")
                }
            }
        }
        let partitions = by_partition
            .into_iter()
            .zip(0..)
            .map(|(events, id)| {
                let continuation = continuations.iter().find(|(p, _)| *p == id).map(|(_, c)| *c).unwrap_or_default();
                let log = Partition::new(id, events, continuation);
                let visible = watch::Sender::new(log.visible_end());
                PartitionCell { log: Mutex::new(log), visible }
            })
            .collect();
        let created_at = record.and_then(|r| Timestamp::from_millisecond(r.created_at_ms).ok()).unwrap_or(now);
        Self {
            settings,
            created_at,
            recorded: record.is_some(),
            partitions,
            readers: Arc::default(),
            next_reader: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Joins the readers of `partition` in `group` (a declared group, any spelling), as Event Hubs admits
    /// receivers: an epoch receiver takes the partition from every receiver with a lower or no epoch (their
    /// `stolen` fires); one with a lower or no epoch is refused while a higher epoch holds it; at most
    /// `MAX_READERS_PER_PARTITION` at once.
    pub fn join_readers(&self, group: &str, partition: u32, epoch: Option<i64>) -> Result<ReaderLease, ReaderRefused> {
        let key = (group.to_ascii_lowercase(), partition);
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        let list = readers.entry(key.clone()).or_default();
        if let Some(held) = list.iter().filter_map(|r| r.epoch).max()
            && epoch.is_none_or(|e| e < held)
        {
            return Err(ReaderRefused::EpochHeld { held });
        }
        if let Some(epoch) = epoch {
            list.retain(|r| {
                let keeps = r.epoch.is_some_and(|e| e >= epoch);
                if !keeps {
                    r.stolen.cancel();
                }
                keeps
            });
        }
        if list.len() >= MAX_READERS_PER_PARTITION {
            return Err(ReaderRefused::TooMany);
        }
        let id = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stolen = CancellationToken::new();
        list.push(Reader { id, epoch, stolen: stolen.clone() });
        Ok(ReaderLease { readers: Arc::clone(&self.readers), key, id, stolen })
    }

    /// The same log under other settings (the partition count only if none was recorded).
    pub(super) fn reconfigured(self, settings: LogSettings) -> Self {
        let record = self.recorded.then(|| self.record());
        let mut events = Vec::new();
        let mut continuations = Vec::new();
        for (cell, id) in self.partitions.into_iter().zip(0..) {
            let partition = cell.log.into_inner().unwrap_or_else(|p| p.into_inner());
            continuations.push((id, partition.continuation()));
            events.extend(partition.read(0, usize::MAX));
        }
        Self::new(settings, record, events, &continuations, self.created_at)
    }

    fn record(&self) -> EventHubRecord {
        EventHubRecord { partitions: self.partition_count(), created_at_ms: self.created_at.as_millisecond() }
    }

    /// The settings in force.
    pub fn settings(&self) -> &LogSettings {
        &self.settings
    }

    /// When the endpoint was created (`created_at` of `$management`).
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// How many partitions there are (ids `0..count`).
    pub fn partition_count(&self) -> u32 {
        u32::try_from(self.partitions.len()).unwrap_or(u32::MAX)
    }

    fn cell(&self, partition: u32) -> Option<&PartitionCell> {
        self.partitions.get(partition as usize)
    }

    /// What `$management` reports of a partition; `None` for an unknown one.
    pub fn partition_info(&self, partition: u32) -> Option<PartitionInfo> {
        Some(self.cell(partition)?.lock().info())
    }

    /// The first sequence number a reader starting at `start` gets.
    pub fn first_sequence(&self, partition: u32, start: StartAt) -> Option<u64> {
        Some(self.cell(partition)?.lock().first_sequence(start))
    }

    /// Up to `max` events of `partition` from sequence `from` on.
    pub fn read(&self, partition: u32, from: u64, max: usize) -> Vec<Arc<Event>> {
        self.cell(partition).map(|cell| cell.lock().read(from, max)).unwrap_or_default()
    }

    /// A watch of how far `partition` is readable: a reader waits on it for events at or past its position.
    pub fn watch(&self, partition: u32) -> Option<watch::Receiver<u64>> {
        Some(self.cell(partition)?.visible.subscribe())
    }
}

impl Hub {
    /// The Event Hubs-compatible log.
    pub fn event_log(&self) -> &EventLog {
        &self.events
    }

    /// The same hub with the built-in endpoint set up as `settings` says (partitions, retention, size cap,
    /// consumer groups).
    pub fn with_event_log(mut self, settings: LogSettings) -> Self {
        let log = std::mem::replace(
            &mut self.events,
            EventLog::new(LogSettings::default(), None, Vec::new(), &[], Timestamp::UNIX_EPOCH),
        );
        self.events = log.reconfigured(settings);
        self
    }

    /// Appends a device-to-cloud message to the log and returns once it is durable (a device is answered only
    /// then: PUBACK, HTTP 204). The device's generation id is stamped here.
    pub async fn record_telemetry(&self, mut message: TelemetryMessage) -> Result<Arc<Event>, HubError> {
        tracing::debug!(device_id = %message.device_id, bytes = message.body.len(), "telemetry");
        {
            let state = self.read();
            let identity = match &message.module_id {
                Some(module_id) => state.devices.get(&registry::identity_key(&message.device_id, Some(module_id))),
                None => state.devices.get(&message.device_id),
            };
            if let Some(identity) = identity {
                message.generation_id.clone_from(&identity.generation_id);
            }
        }
        let partition = eventlog::partition_for(&message.device_id, self.events.partition_count());
        let Some(cell) = self.events.cell(partition) else {
            return Err(HubError::ServerError("The telemetry partition does not exist".into()));
        };
        let (event, pending) = {
            let mut log = cell.lock();
            let event = log.append(message);
            let mut writes = vec![Write::AppendEvent(Arc::clone(&event))];
            // Past the cap, trimmed down to 7/8 of it in one go: one trim record per many appends, not one each.
            let per_partition_cap = self.events.settings.max_bytes / u64::from(self.events.partition_count().max(1));
            if log.bytes() > per_partition_cap
                && let Some(through) = log.trim(per_partition_cap - per_partition_cap / 8, Timestamp::MIN)
            {
                writes.push(Write::TrimEvents { partition, through, continuation: log.continuation() });
            }
            // Submitted under the partition's lock, so the store commits the partition's events in order.
            (event, self.store.submit(writes))
        };
        match pending.durable().await {
            Ok(()) => {
                let visible_end = {
                    let mut log = cell.lock();
                    log.mark_durable(event.sequence);
                    log.visible_end()
                };
                cell.visible.send_if_modified(|end| {
                    let moved = visible_end > *end;
                    *end = (*end).max(visible_end);
                    moved
                });
                self.telemetry_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // No receivers is fine: nobody is watching.
                let _ = self.telemetry_feed.send(Arc::clone(&event));
                Ok(event)
            }
            Err(error) => {
                cell.lock().remove_failed(event.sequence);
                Err(HubError::ServerError(format!("The message could not be saved: {error}")))
            }
        }
    }

    /// Drops every durable event from the log (a reset) and returns the trims to store; positions go on.
    pub(super) fn drop_all_telemetry(&self) -> Vec<Write> {
        let mut writes = Vec::new();
        for (cell, partition) in self.events.partitions.iter().zip(0..) {
            let mut log = cell.lock();
            if let Some(through) = log.trim(0, Timestamp::MAX) {
                writes.push(Write::TrimEvents { partition, through, continuation: log.continuation() });
            }
        }
        writes
    }

    /// A live stream of every device's telemetry from now on, as it becomes durable in the log.
    pub fn telemetry_stream(&self) -> broadcast::Receiver<Arc<Event>> {
        self.telemetry_feed.subscribe()
    }

    /// The device's recent telemetry, oldest first (at most `RECENT_MESSAGES`).
    pub fn recent_telemetry(&self, device_id: &str) -> Vec<Arc<Event>> {
        let partition = eventlog::partition_for(device_id, self.events.partition_count());
        self.events
            .cell(partition)
            .map(|cell| cell.lock().recent(RECENT_MESSAGES, |e| e.message.device_id == device_id))
            .unwrap_or_default()
    }

    /// Records the endpoint in the store if it is new, then applies retention for as long as the hub runs:
    /// events older than the retention period are dropped, in memory and on disk.
    pub(super) async fn run_event_retention(self: Arc<Self>) {
        if !self.events.recorded {
            let pending = self.store.submit(vec![Write::PutEventHub(self.events.record())]);
            if let Err(error) = pending.durable().await {
                tracing::error!(%error, "the event hub's record could not be saved");
            }
        }
        let retention = self.events.settings.retention;
        loop {
            let now = self.clock.now();
            let expired_before = now.checked_sub(retention).unwrap_or(Timestamp::MIN);
            let mut writes = Vec::new();
            let mut next = now.checked_add(RETENTION_SWEEP).unwrap_or(Timestamp::MAX);
            for (cell, partition) in self.events.partitions.iter().zip(0..) {
                let mut log = cell.lock();
                if let Some(through) = log.trim(u64::MAX, expired_before) {
                    writes.push(Write::TrimEvents { partition, through, continuation: log.continuation() });
                }
                if let Some(expires) = log.oldest_enqueued().and_then(|t| t.checked_add(retention).ok()) {
                    // Not sooner than a second from now: an event kept because it is not durable yet must not spin.
                    next = next.min(expires.max(now.checked_add(std::time::Duration::from_secs(1)).unwrap_or(now)));
                }
            }
            if !writes.is_empty()
                && let Err(error) = self.store.submit(writes).durable().await
            {
                tracing::error!(%error, "expired telemetry could not be dropped from the data file");
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = self.clock.sleep_until(next) => {}
            }
        }
    }
}
