//! Telemetry: every device-to-cloud message is appended to the Event Hubs-compatible log, durably before the
//! device is answered, and read from there by the endpoint's consumers, the emulator-only REST read and the
//! in-process stream.
//!
//! Each partition has its own lock (senders to different partitions never wait on each other, nor on the hub's
//! state lock) and a watch of how far it is durable, which readers wait on.

use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use tokio::sync::{broadcast, watch};

use super::Hub;
use crate::domain::eventlog::{self, Continuation, Event, LogSettings, Partition, PartitionInfo, StartAt};
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
        events: Vec<Event>,
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
        let mut by_partition: Vec<Vec<Event>> = (0..count).map(|_| Vec::new()).collect();
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
        Self { settings, created_at, recorded: record.is_some(), partitions }
    }

    /// The same log under other settings (the partition count only if none was recorded).
    pub(super) fn reconfigured(self, settings: LogSettings) -> Self {
        let record = self.recorded.then(|| self.record());
        let mut events = Vec::new();
        let mut continuations = Vec::new();
        for (cell, id) in self.partitions.into_iter().zip(0..) {
            let partition = cell.log.into_inner().unwrap_or_else(|p| p.into_inner());
            continuations.push((id, partition.continuation()));
            events.extend(partition.read(0, usize::MAX).into_iter().map(|e| (*e).clone()));
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
        if let Some(device) = self.read().devices.get(&message.device_id) {
            message.generation_id.clone_from(&device.generation_id);
        }
        let partition = eventlog::partition_for(&message.device_id, self.events.partition_count());
        let Some(cell) = self.events.cell(partition) else {
            return Err(HubError::ServerError("The telemetry partition does not exist".into()));
        };
        let (event, pending) = {
            let mut log = cell.lock();
            let event = log.append(message);
            let mut writes = vec![Write::AppendEvent(Arc::clone(&event))];
            let per_partition_cap = self.events.settings.max_bytes / u64::from(self.events.partition_count().max(1));
            if let Some(through) = log.trim(per_partition_cap, Timestamp::MIN) {
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
