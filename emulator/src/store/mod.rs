//! Where hub state is kept: in memory only (`--in-memory`, tests), or in a redb file in the data dir.
//!
//! The hub keeps its working state in memory and sends every change here; a caller is answered only after
//! `commit` returns, i.e. after the change is durable. The disk store commits on one writer thread that
//! gathers whatever changes are waiting into one transaction (group commit), so many concurrent writers share
//! one fsync.

mod disk;
pub mod events;
mod legacy;
mod segments;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::domain::c2d::{FeedbackRecord, Queued};
use crate::domain::configurations::Configuration;
use crate::domain::eventlog::{Continuation, Event};
use crate::domain::jobs::{DeviceJob, Job};
use crate::domain::registry::Device;
use crate::domain::sessions::Subscriptions;

/// One change to persist. Records travel as values and are encoded by the store's writer thread, so the
/// hub's state lock is never held while a record is serialised (and an in-memory hub never serialises).
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or replace a device (identity and twin).
    PutDevice(Arc<Device>),
    /// Remove a device.
    DeleteDevice { id: String },
    /// Insert or replace a job.
    PutJob(Box<Job>),
    /// Insert or replace one device's record of a job.
    PutDeviceJob(Box<DeviceJob>),
    /// Remove a job and all its device records (retention).
    DeleteJob { id: String },
    /// Insert or replace the stored MQTT session (clean session 0) of a device.
    PutSession { device_id: String, subscriptions: Subscriptions },
    /// Remove a device's stored session (it connected with clean session 1).
    DeleteSession { device_id: String },
    /// Queue a cloud-to-device message for a device.
    PutMessage { device_id: String, message: Box<Queued> },
    /// Remove one message from a device's queue (settled, expired, dead-lettered).
    DeleteMessage { device_id: String, sequence: u64 },
    /// Remove every message of a device's queue (a purge).
    PurgeMessages { device_id: String },
    /// Keep a feedback record for the service.
    PutFeedback(Box<FeedbackRecord>),
    /// Forget feedback records (read and completed, or dropped beyond the limit).
    DeleteFeedback(Vec<u64>),
    /// Record the built-in endpoint's partition count and creation time (once, when the hub is created).
    PutEventHub(events::EventHubRecord),
    /// Append a telemetry message to the Event Hubs-compatible log.
    AppendEvent(Arc<Event>),
    /// Drop a partition's events up to and including `through` (retention, size cap), remembering where the
    /// partition continues.
    TrimEvents { partition: u32, through: u64, continuation: Continuation },
    /// Insert or replace a configuration (automatic device management).
    PutConfiguration(Arc<Configuration>),
    /// Remove a configuration.
    DeleteConfiguration { id: String },
    /// Remove every device, module, job, configuration, session, queued message and feedback record (a reset). The log is
    /// trimmed by `TrimEvents` beside it.
    Reset,
}

impl Write {
    /// A write that stores `device`.
    pub fn put_device(device: &Arc<Device>) -> Self {
        Self::PutDevice(Arc::clone(device))
    }

    /// A write that stores `job`.
    pub fn put_job(job: &Job) -> Self {
        Self::PutJob(Box::new(job.clone()))
    }

    /// A write that stores a device record of a job.
    pub fn put_device_job(record: &DeviceJob) -> Self {
        Self::PutDeviceJob(Box::new(record.clone()))
    }
}

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the data file {path}: {detail}")]
    Open { path: String, detail: String },
    #[error("{0}")]
    Corrupt(String),
    #[error("writing to the data file failed: {0}")]
    Write(String),
    #[error("the store has shut down")]
    Closed,
    /// The data file could not be opened for writing (read-only mount, no permission): the hub serves what it
    /// holds and refuses changes.
    #[error("the data file {path} is read-only, so changes cannot be saved")]
    ReadOnly { path: String },
}

/// Everything read back at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    pub devices: Vec<Device>,
    pub jobs: Vec<Job>,
    pub device_jobs: Vec<DeviceJob>,
    /// Configurations (automatic device management), in no particular order.
    pub configurations: Vec<Configuration>,
    /// Stored MQTT sessions, by device id.
    pub sessions: Vec<(String, Subscriptions)>,
    /// Queued cloud-to-device messages, by device id.
    pub messages: Vec<(String, Queued)>,
    /// Feedback records not read yet.
    pub feedback: Vec<FeedbackRecord>,
    /// The built-in endpoint, once the hub recorded it.
    pub event_hub: Option<events::EventHubRecord>,
    /// The Event Hubs-compatible log, each partition's events in sequence order. Each event is put in its `Arc`
    /// as it is read, so loading never holds a second copy of the log (the allocator keeps what a load's copies
    /// took).
    pub events: Vec<Arc<Event>>,
    /// Where trimmed partitions continue.
    pub continuations: Vec<(u32, Continuation)>,
}

/// The hub's persistence.
pub struct Store {
    kind: Kind,
}

enum Kind {
    Memory,
    Disk(disk::DiskStore),
    /// A data file opened read-only: every write is refused with the reason.
    ReadOnly(StoreError),
}

impl Store {
    /// A store that keeps nothing.
    pub fn memory() -> Self {
        Self { kind: Kind::Memory }
    }

    /// Opens (or creates) the data file at `path` and reads everything in it.
    /// A file that cannot be written (a read-only mount) is read, and the store then refuses every write.
    pub fn open(path: &Path) -> Result<(Self, Loaded), StoreError> {
        match disk::DiskStore::open(path) {
            Ok((disk, loaded)) => Ok((Self { kind: Kind::Disk(disk) }, loaded)),
            Err(read_only @ StoreError::ReadOnly { .. }) => {
                let loaded = disk::load_read_only(path)?;
                Ok((Self { kind: Kind::ReadOnly(read_only) }, loaded))
            }
            Err(other) => Err(other),
        }
    }

    /// A durable store over a custom redb backend, opened (and after an I/O error reopened) by `opener`: how
    /// tests put a full or failing disk under the hub.
    #[doc(hidden)]
    pub fn open_with_backend(
        opener: impl Fn() -> Result<redb::Database, redb::DatabaseError> + Send + 'static,
    ) -> Result<(Self, Loaded), StoreError> {
        let (disk, loaded) = disk::DiskStore::open_with(Box::new(opener))?;
        Ok((Self { kind: Kind::Disk(disk) }, loaded))
    }

    /// True when changes survive a restart.
    pub fn is_durable(&self) -> bool {
        matches!(self.kind, Kind::Disk(_))
    }

    /// True when the data file was opened read-only: reads are served, writes fail.
    pub fn is_read_only(&self) -> bool {
        matches!(self.kind, Kind::ReadOnly(_))
    }

    /// Queues `writes` as one atomic unit and returns a future that resolves once they are durable.
    ///
    /// Queueing is synchronous so the caller can do it while holding the hub's state lock: changes then reach
    /// the file in the same order they were applied in memory.
    pub fn submit(&self, writes: Vec<Write>) -> Pending {
        match &self.kind {
            Kind::Memory => Pending(None),
            Kind::Disk(disk) => Pending(Some(disk.submit(writes))),
            Kind::ReadOnly(reason) => {
                let (done, rx) = oneshot::channel();
                let _ = done.send(Err(reason.clone()));
                Pending(Some(rx))
            }
        }
    }

    /// Waits until every write submitted so far is on disk, then stops the writer.
    pub async fn close(&self) {
        if let Kind::Disk(disk) = &self.kind {
            disk.close().await;
        }
    }
}

/// A submitted change that is not known to be durable yet.
#[must_use = "a write is only durable once its Pending resolves"]
pub struct Pending(Option<oneshot::Receiver<Result<(), StoreError>>>);

impl Pending {
    /// Resolves once the change is durable.
    pub async fn durable(self) -> Result<(), StoreError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
        }
    }
}

/// The stored form of a record: JSON of the domain type (the file's schema version guards changes).
pub fn encode<T: serde::Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

/// Reads a stored record; `what` names it in the error (e.g. "device 'd1'").
fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("the stored record of {what} is unreadable: {e}")))
}
