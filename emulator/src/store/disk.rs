//! The redb-backed store: one file, ACID transactions, fsync on commit, and one writer thread doing group commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::{Database, DatabaseError, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::segments::SegmentLog;
use super::{Loaded, StoreError, Write, decode, encode, events, legacy};
use crate::domain::eventlog::Event;
use crate::domain::registry::keys_under;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// Device records of jobs, keyed `<jobId>/<deviceId>` (job ids cannot contain `/`), so one job's records are a
/// key range.
const DEVICE_JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("device_jobs");
/// Stored MQTT sessions (clean session 0), by device id.
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// Cloud-to-device messages, keyed `<deviceId>/<sequence, 20 digits>` (device ids cannot contain `/`), so a
/// device's queue is a key range in order.
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("c2d_messages");
/// Feedback records, keyed by their sequence (20 digits, so keys sort as numbers).
const FEEDBACK: TableDefinition<&str, &[u8]> = TableDefinition::new("c2d_feedback");
/// The Event Hubs-compatible log, keyed (partition, sequence) (`events::encode`), where a store has no directory
/// for segment files (`open_with`). A data dir keeps the log in segment files (`segments`) and moves records an
/// earlier build left here into them on open.
/// Configurations by id (automatic device management); absent in files written before they existed.
const CONFIGURATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("configurations");
const EVENTS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("events");
/// The endpoint's record, each trimmed partition's continuation and trim point (JSON), under `hub`,
/// `continue/<n>` and `trimmed/<n>`.
const EVENT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("event_meta");
const EVENT_HUB_KEY: &str = "hub";
/// The directory of the log's segment files, beside the data file.
const SEGMENTS_DIR: &str = "eventlog";

/// The file format this build writes and reads. Version 2 added the job tables, version 3 the MQTT sessions,
/// version 4 typed twins and typed jobs (`legacy`) and the cloud-to-device queues and feedback. An older file is upgraded in place, in one transaction: the
/// tables it lacks are created and its device and job records rewritten.
const SCHEMA_VERSION: &[u8] = b"4";
const UPGRADABLE_VERSIONS: [&[u8]; 3] = [b"1", b"2", b"3"];
const SCHEMA_KEY: &str = "schema_version";

/// Most batches folded into one transaction.
const MAX_GROUP: usize = 4096;

struct Batch {
    writes: Vec<Write>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

pub(super) struct DiskStore {
    tx: Mutex<Option<mpsc::UnboundedSender<Batch>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Opens the database again (after an I/O error, redb refuses further writes until it is reopened).
type Opener = Box<dyn Fn() -> Result<Database, DatabaseError> + Send>;

impl DiskStore {
    pub(super) fn open(path: &Path) -> Result<(Self, Loaded), StoreError> {
        let shown = path.display().to_string();
        let open_error = |detail: String| StoreError::Open { path: shown.clone(), detail };
        let db = if path.exists() {
            match Database::open(path) {
                Ok(db) => db,
                Err(e) if is_not_writable(&e) => return Err(StoreError::ReadOnly { path: shown }),
                Err(e) => return Err(open_error(describe_open_error(e))),
            }
        } else {
            let db = Database::create(path).map_err(|e| open_error(describe_open_error(e)))?;
            initialise(&db).map_err(|e| open_error(e.to_string()))?;
            db
        };
        let reopen_path = path.to_path_buf();
        Self::start(db, &shown, Box::new(move || Database::open(&reopen_path)), Some(segments_dir(path)))
    }

    /// A store over any redb backend (tests inject failing disks with it); `opener` opens it again.
    pub(super) fn open_with(opener: Opener) -> Result<(Self, Loaded), StoreError> {
        let shown = "the data file".to_owned();
        let db = opener().map_err(|e| StoreError::Open { path: shown.clone(), detail: describe_open_error(e) })?;
        if db.begin_read().map_err(|e| StoreError::Corrupt(e.to_string()))?.open_table(META).is_err() {
            initialise(&db).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        }
        Self::start(db, &shown, opener, None)
    }

    /// Opens the log's segment files in `segments` (none: the log stays in redb) and starts the writer.
    fn start(
        db: Database,
        shown: &str,
        opener: Opener,
        segments: Option<PathBuf>,
    ) -> Result<(Self, Loaded), StoreError> {
        let open_error = |detail: String| StoreError::Open { path: shown.to_owned(), detail };
        upgrade(&db).map_err(|e| open_error(format!("cannot upgrade it to this release's format: {e}")))?;
        let mut loaded = load(&db, shown)?;
        let segments = match segments {
            Some(dir) => {
                let (log, events) = SegmentLog::open(&dir, &trim_points(&db, shown)?, true).map_err(open_error)?;
                let mut log = log.ok_or_else(|| open_error("the event log is not writable".into()))?;
                move_events_to_segments(&db, &mut log, &loaded.events).map_err(open_error)?;
                loaded.events = merge_events(std::mem::take(&mut loaded.events), events);
                Some(log)
            }
            None => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run_writer(db, segments, &opener, rx))
            .map_err(|e| open_error(format!("cannot start the writer thread: {e}")))?;
        Ok((Self { tx: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)) }, loaded))
    }

    pub(super) fn submit(&self, writes: Vec<Write>) -> oneshot::Receiver<Result<(), StoreError>> {
        let (done, rx) = oneshot::channel();
        let guard = self.tx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(tx) = guard.as_ref() {
            // A send error means the writer is gone; dropping `done` then reports Closed to the waiter.
            let _ = tx.send(Batch { writes, done });
        }
        rx
    }

    pub(super) async fn close(&self) {
        // Dropping the sender lets the writer drain what is queued and exit.
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// True when opening failed only because this process may not write the file: a read-only mount or missing
/// write permission. Such a file can still be read.
fn is_not_writable(error: &DatabaseError) -> bool {
    matches!(
        error,
        DatabaseError::Storage(redb::StorageError::Io(e))
            if matches!(e.kind(), std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied)
    )
}

/// Reads everything in a data file this process cannot write, so a read-only data dir still serves its hub.
pub(super) fn load_read_only(path: &Path) -> Result<Loaded, StoreError> {
    let shown = path.display().to_string();
    let db = redb::ReadOnlyDatabase::open(path).map_err(|e| StoreError::Open {
        path: shown.clone(),
        detail: match e {
            DatabaseError::RepairAborted => {
                "it is read-only and needs a repair after an unclean stop; start once with it writable".into()
            }
            other => describe_open_error(other),
        },
    })?;
    let mut loaded = load(&db, &shown)?;
    let trimmed = trim_points(&db, &shown)?;
    let (_, events) = SegmentLog::open(&segments_dir(path), &trimmed, false)
        .map_err(|detail| StoreError::Open { path: shown.clone(), detail })?;
    loaded.events = merge_events(std::mem::take(&mut loaded.events), events);
    Ok(loaded)
}

/// Where the log's segment files of the data file at `path` live.
fn segments_dir(path: &Path) -> PathBuf {
    path.parent().unwrap_or(Path::new(".")).join(SEGMENTS_DIR)
}

/// Each trimmed partition's trim point: events at or below it are gone.
fn trim_points(db: &impl redb::ReadableDatabase, shown: &str) -> Result<BTreeMap<u32, u64>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt(format!("{shown}: {detail}"));
    let read = db.begin_read().map_err(|e| corrupt(e.to_string()))?;
    let mut points = BTreeMap::new();
    let Ok(meta) = read.open_table(EVENT_META) else { return Ok(points) };
    for entry in meta.iter().map_err(|e| corrupt(e.to_string()))? {
        let (key, value) = entry.map_err(|e| corrupt(e.to_string()))?;
        if let Some(partition) = key.value().strip_prefix("trimmed/").and_then(|n| n.parse().ok()) {
            points.insert(partition, decode("a partition's trim point", value.value())?);
        }
    }
    Ok(points)
}

/// Moves events an earlier build kept in the redb table into the segment files, then empties the table (a crash
/// in between leaves them in both: `merge_events` keeps one of each).
fn move_events_to_segments(db: &Database, log: &mut SegmentLog, events: &[Arc<Event>]) -> Result<(), String> {
    if events.is_empty() {
        return Ok(());
    }
    log.append(&events.iter().map(|event| &**event).collect::<Vec<_>>())
        .map_err(|e| format!("cannot move the event log to its files: {e}"))?;
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.open_table(EVENTS).map_err(|e| e.to_string())?.retain(|_, _| false).map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())
}

/// Events from the redb table and from the segment files, each once and each partition's in sequence order. Segments
/// are read in the order they were appended, which is each partition's sequence order, so without table events (any
/// data dir but one an earlier build wrote) they are the answer as they are.
fn merge_events(table: Vec<Arc<Event>>, segments: Vec<Arc<Event>>) -> Vec<Arc<Event>> {
    if table.is_empty() {
        return segments;
    }
    let mut events: BTreeMap<(u32, u64), Arc<Event>> = BTreeMap::new();
    for event in table.into_iter().chain(segments) {
        events.insert((event.partition, event.sequence), event);
    }
    events.into_values().collect()
}

fn describe_open_error(error: DatabaseError) -> String {
    match error {
        DatabaseError::DatabaseAlreadyOpen => {
            "it is already open in another process (is another emulator using this data dir?)".into()
        }
        DatabaseError::UpgradeRequired(v) => format!("it was written in an older redb format ({v})"),
        other => format!(
            "{other}; it is not an iothub-emulator data file or it is damaged. Move it away to start with an empty hub"
        ),
    }
}

fn initialise(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
        txn.open_table(DEVICES)?;
        txn.open_table(JOBS)?;
        txn.open_table(DEVICE_JOBS)?;
        txn.open_table(SESSIONS)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(FEEDBACK)?;
    }
    txn.commit()?;
    Ok(())
}

/// The schema version a file records, if any.
fn schema_version(db: &impl redb::ReadableDatabase) -> Result<Option<Vec<u8>>, redb::Error> {
    let read = db.begin_read()?;
    let Ok(meta) = read.open_table(META) else { return Ok(None) };
    Ok(meta.get(SCHEMA_KEY)?.map(|v| v.value().to_vec()))
}

/// Brings a file of an older, upgradable format to this one. Files of other versions are left for `load` to
/// refuse with an explanation.
fn upgrade(db: &Database) -> Result<(), String> {
    let version = schema_version(db).map_err(|e| e.to_string())?;
    if !version.as_deref().is_some_and(|v| UPGRADABLE_VERSIONS.contains(&v)) {
        return Ok(());
    }
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        for table in [DEVICE_JOBS, SESSIONS, MESSAGES, FEEDBACK] {
            txn.open_table(table).map_err(|e| e.to_string())?;
        }
        rewrite(&txn, DEVICES, "device", |bytes| legacy::device(bytes).map(|d| encode(&d)))?;
        rewrite(&txn, JOBS, "job", |bytes| legacy::job(bytes).map(|j| encode(&j)))?;
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        meta.insert(SCHEMA_KEY, SCHEMA_VERSION).map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())
}

/// Replaces every record of `table` with what `convert` makes of it.
fn rewrite(
    txn: &redb::WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    what: &str,
    convert: impl Fn(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<(), String> {
    let mut table = txn.open_table(table).map_err(|e| e.to_string())?;
    let mut converted = Vec::new();
    for entry in table.iter().map_err(|e| e.to_string())? {
        let (key, value) = entry.map_err(|e| e.to_string())?;
        let key = key.value().to_owned();
        let record = convert(value.value()).map_err(|e| format!("{what} '{key}': {e}"))?;
        converted.push((key, record));
    }
    for (key, record) in converted {
        table.insert(key.as_str(), record.as_slice()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The key of a device record of a job.
fn device_job_key(job_id: &str, device_id: &str) -> String {
    format!("{job_id}/{device_id}")
}

/// The key of a device's cloud-to-device message.
fn message_key(device_id: &str, sequence: u64) -> String {
    format!("{device_id}/{sequence:020}")
}

/// The key of a feedback record.
fn feedback_key(sequence: u64) -> String {
    format!("{sequence:020}")
}

fn load(db: &impl redb::ReadableDatabase, shown: &str) -> Result<Loaded, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt(format!("{shown}: {detail}"));
    let read = db.begin_read().map_err(|e| corrupt(e.to_string()))?;
    let meta = read
        .open_table(META)
        .map_err(|_| corrupt("not an iothub-emulator data file (no meta table); move it away to start fresh".into()))?;
    let version = meta.get(SCHEMA_KEY).map_err(|e| corrupt(e.to_string()))?.map(|v| v.value().to_vec());
    match version.as_deref() {
        Some(SCHEMA_VERSION) => {}
        // Only a file this process cannot write is still in an older format here: it is read as it is.
        Some(older) if UPGRADABLE_VERSIONS.contains(&older) => return load_legacy(&read, shown),
        Some(other) => {
            return Err(corrupt(format!(
                "written with data format version {} but this emulator reads version {}; use a matching emulator release",
                String::from_utf8_lossy(other),
                String::from_utf8_lossy(SCHEMA_VERSION)
            )));
        }
        None => return Err(corrupt("not an iothub-emulator data file (no schema version)".into())),
    }
    Ok(Loaded {
        devices: read_all(&read, DEVICES, "device", shown)?,
        jobs: read_all(&read, JOBS, "job", shown)?,
        device_jobs: read_all(&read, DEVICE_JOBS, "device job", shown)?,
        configurations: match read.open_table(CONFIGURATIONS) {
            Ok(_) => read_all(&read, CONFIGURATIONS, "configuration", shown)?,
            Err(_) => Vec::new(),
        },
        sessions: read_keyed(&read, SESSIONS, "session", shown)?,
        messages: read_keyed(&read, MESSAGES, "cloud-to-device message", shown)?
            .into_iter()
            .map(|(key, message)| (key.rsplit_once('/').map_or(key.clone(), |(device, _)| device.to_owned()), message))
            .collect(),
        feedback: read_all(&read, FEEDBACK, "feedback record", shown)?,
        ..load_events(&read, shown)?
    })
}

/// The Event Hubs-compatible log and its records (empty in files written before it existed).
fn load_events(read: &redb::ReadTransaction, shown: &str) -> Result<Loaded, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt(format!("{shown}: {detail}"));
    let mut loaded = Loaded::default();
    if let Ok(meta) = read.open_table(EVENT_META) {
        for entry in meta.iter().map_err(|e| corrupt(e.to_string()))? {
            let (key, value) = entry.map_err(|e| corrupt(e.to_string()))?;
            match key.value() {
                EVENT_HUB_KEY => loaded.event_hub = Some(decode("the event hub", value.value())?),
                // Read by `trim_points`.
                other if other.starts_with("trimmed/") => {}
                other => {
                    let partition = other.strip_prefix("continue/").and_then(|n| n.parse().ok());
                    let partition = partition.ok_or_else(|| corrupt(format!("unknown event record '{other}'")))?;
                    loaded.continuations.push((partition, decode("a partition's continuation", value.value())?));
                }
            }
        }
    }
    if let Ok(table) = read.open_table(EVENTS) {
        for entry in table.iter().map_err(|e| corrupt(e.to_string()))? {
            let (key, value) = entry.map_err(|e| corrupt(e.to_string()))?;
            let (partition, sequence) = key.value();
            let event = events::decode(partition, sequence, value.value())
                .map_err(|e| corrupt(format!("event {sequence} of partition {partition} is unreadable: {e}")))?;
            loaded.events.push(Arc::new(event));
        }
    }
    Ok(loaded)
}

/// Reads a file of an older format without changing it (a read-only data dir).
fn load_legacy(read: &redb::ReadTransaction, shown: &str) -> Result<Loaded, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt(format!("{shown}: {detail}"));
    let records = |table: TableDefinition<&str, &[u8]>| -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let Ok(table) = read.open_table(table) else { return Ok(Vec::new()) };
        let entries = table.iter().map_err(|e| corrupt(e.to_string()))?;
        entries
            .map(|entry| {
                let (key, value) = entry.map_err(|e| corrupt(e.to_string()))?;
                Ok((key.value().to_owned(), value.value().to_vec()))
            })
            .collect()
    };
    let devices = records(DEVICES)?
        .into_iter()
        .map(|(key, bytes)| legacy::device(&bytes).map_err(|e| corrupt(format!("device '{key}': {e}"))))
        .collect::<Result<_, _>>()?;
    let jobs = records(JOBS)?
        .into_iter()
        .map(|(key, bytes)| legacy::job(&bytes).map_err(|e| corrupt(format!("job '{key}': {e}"))))
        .collect::<Result<_, _>>()?;
    let device_jobs = match read.open_table(DEVICE_JOBS) {
        Ok(_) => read_all(read, DEVICE_JOBS, "device job", shown)?,
        Err(_) => Vec::new(),
    };
    let sessions = match read.open_table(SESSIONS) {
        Ok(_) => read_keyed(read, SESSIONS, "session", shown)?,
        Err(_) => Vec::new(),
    };
    Ok(Loaded { devices, jobs, device_jobs, sessions, ..Loaded::default() })
}

/// Every record of `table` with its key; `what` names one in errors.
fn read_keyed<T: serde::de::DeserializeOwned>(
    read: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    what: &str,
    shown: &str,
) -> Result<Vec<(String, T)>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt(format!("{shown}: {detail}"));
    let table = read.open_table(table).map_err(|e| corrupt(e.to_string()))?;
    let mut records = Vec::new();
    for entry in table.iter().map_err(|e| corrupt(e.to_string()))? {
        let (key, value) = entry.map_err(|e| corrupt(e.to_string()))?;
        let key = key.value().to_owned();
        let record = decode(&format!("{what} '{key}'"), value.value())?;
        records.push((key, record));
    }
    Ok(records)
}

/// Every record of `table`; `what` names one in errors.
fn read_all<T: serde::de::DeserializeOwned>(
    read: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    what: &str,
    shown: &str,
) -> Result<Vec<T>, StoreError> {
    Ok(read_keyed(read, table, what, shown)?.into_iter().map(|(_, record)| record).collect())
}

/// Commits what is waiting, in groups. A group that cannot be committed (disk full, read-only file, I/O error)
/// is rolled back as a whole and its writers get the error. redb then needs the file opened again; that is tried
/// when the next group arrives (and that group fails too if the disk is still not back), so writes succeed
/// from the first one after the disk recovers: nothing half-written, no restart, no polling while idle.
fn run_writer(db: Database, mut segments: Option<SegmentLog>, opener: &Opener, mut rx: mpsc::UnboundedReceiver<Batch>) {
    let mut db = Some(db);
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(batch) => group.push(batch),
                Err(_) => break,
            }
        }
        if db.is_none() {
            match opener() {
                Ok(reopened) => db = Some(reopened),
                Err(error) => {
                    tracing::error!(%error, "cannot reopen the data file; the affected requests get a server error");
                    let detail = format!("the data file is unavailable: {error}");
                    for batch in group {
                        let _ = batch.done.send(Err(StoreError::Write(detail.clone())));
                    }
                    continue;
                }
            }
        }
        let Some(open) = &db else { continue };
        let result = commit_group(open, segments.as_mut(), &group).map_err(StoreError::Write);
        if let Err(error) = &result {
            tracing::error!(%error, "commit failed; the affected requests get a server error");
            db = None;
        }
        for batch in group {
            let _ = batch.done.send(result.clone());
        }
    }
}

/// Commits a group: its telemetry appended to the segment files, the rest in one redb transaction (none when
/// the group is telemetry alone). If the transaction fails, the appends are cut back, so the group fails whole.
fn commit_group(db: &Database, mut segments: Option<&mut SegmentLog>, group: &[Batch]) -> Result<(), String> {
    let writes = || group.iter().flat_map(|b| &b.writes);
    let mut marks = None;
    if let Some(log) = segments.as_deref_mut() {
        let appended: Vec<&Event> =
            writes().filter_map(|w| if let Write::AppendEvent(event) = w { Some(&**event) } else { None }).collect();
        if !appended.is_empty() {
            marks = Some(log.append(&appended).map_err(|e| format!("appending to the event log failed: {e}"))?);
        }
    }
    let in_segments = segments.is_some();
    if writes().any(|w| !(in_segments && matches!(w, Write::AppendEvent(_))))
        && let Err(error) = commit_transaction(db, in_segments, group)
    {
        if let (Some(log), Some(marks)) = (segments.as_deref_mut(), marks) {
            log.rollback(marks);
        }
        return Err(error.to_string());
    }
    if let Some(log) = segments {
        for write in writes() {
            if let Write::TrimEvents { partition, through, .. } = write {
                log.trim(*partition, *through);
            }
        }
    }
    Ok(())
}

/// Everything of a group but the telemetry the segment files took (`in_segments`), in one redb transaction.
fn commit_transaction(db: &Database, in_segments: bool, group: &[Batch]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut devices = txn.open_table(DEVICES)?;
        let mut jobs = txn.open_table(JOBS)?;
        let mut device_jobs = txn.open_table(DEVICE_JOBS)?;
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut messages = txn.open_table(MESSAGES)?;
        let mut feedback = txn.open_table(FEEDBACK)?;
        let mut events = txn.open_table(EVENTS)?;
        let mut event_meta = txn.open_table(EVENT_META)?;
        let mut configurations = txn.open_table(CONFIGURATIONS)?;
        for write in group.iter().flat_map(|b| &b.writes) {
            match write {
                Write::PutDevice(device) => {
                    devices.insert(&*device.key(), encode(&**device).as_slice())?;
                }
                Write::DeleteDevice { id } => {
                    devices.remove(id.as_str())?;
                    sessions.remove(id.as_str())?;
                    let range = keys_under(id);
                    messages.retain_in(range.start.as_str()..range.end.as_str(), |_, _| false)?;
                }
                Write::PutMessage { device_id, message } => {
                    let key = message_key(device_id, message.sequence);
                    messages.insert(key.as_str(), encode(&**message).as_slice())?;
                }
                Write::DeleteMessage { device_id, sequence } => {
                    messages.remove(message_key(device_id, *sequence).as_str())?;
                }
                Write::PurgeMessages { device_id } => {
                    let range = keys_under(device_id);
                    messages.retain_in(range.start.as_str()..range.end.as_str(), |_, _| false)?;
                }
                Write::PutFeedback(record) => {
                    feedback.insert(feedback_key(record.sequence).as_str(), encode(&**record).as_slice())?;
                }
                Write::DeleteFeedback(sequences) => {
                    for sequence in sequences {
                        feedback.remove(feedback_key(*sequence).as_str())?;
                    }
                }
                Write::PutSession { device_id, subscriptions } => {
                    sessions.insert(device_id.as_str(), encode(subscriptions).as_slice())?;
                }
                Write::DeleteSession { device_id } => {
                    sessions.remove(device_id.as_str())?;
                }
                Write::PutJob(job) => {
                    jobs.insert(job.job_id.as_str(), encode(&**job).as_slice())?;
                }
                Write::PutDeviceJob(record) => {
                    let key = device_job_key(&record.job_id, &record.device_id);
                    device_jobs.insert(key.as_str(), encode(&**record).as_slice())?;
                }
                Write::DeleteJob { id } => {
                    jobs.remove(id.as_str())?;
                    let range = keys_under(id);
                    device_jobs.retain_in(range.start.as_str()..range.end.as_str(), |_, _| false)?;
                }
                Write::PutConfiguration(configuration) => {
                    configurations.insert(configuration.id.as_str(), encode(&**configuration).as_slice())?;
                }
                Write::DeleteConfiguration { id } => {
                    configurations.remove(id.as_str())?;
                }
                Write::PutEventHub(record) => {
                    event_meta.insert(EVENT_HUB_KEY, encode(record).as_slice())?;
                }
                Write::AppendEvent(_) if in_segments => {}
                Write::AppendEvent(event) => {
                    events.insert((event.partition, event.sequence), events::encode(event).as_slice())?;
                }
                Write::Reset => {
                    devices.retain(|_, _| false)?;
                    jobs.retain(|_, _| false)?;
                    device_jobs.retain(|_, _| false)?;
                    sessions.retain(|_, _| false)?;
                    messages.retain(|_, _| false)?;
                    feedback.retain(|_, _| false)?;
                    configurations.retain(|_, _| false)?;
                }
                Write::TrimEvents { partition, through, continuation } => {
                    if !in_segments {
                        events.retain_in((*partition, 0)..=(*partition, *through), |_, _| false)?;
                    }
                    event_meta.insert(format!("continue/{partition}").as_str(), encode(continuation).as_slice())?;
                    event_meta.insert(format!("trimmed/{partition}").as_str(), encode(through).as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::registry::{DeviceSpec, create_device};
    use crate::store::Store;

    #[tokio::test]
    async fn writes_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.redb");
        let now = "2026-01-01T00:00:00Z".parse().expect("time");
        let device = std::sync::Arc::new(create_device("d1", &DeviceSpec::default(), now, 1).expect("device"));
        {
            let (store, loaded) = Store::open(&path).expect("create");
            assert!(loaded.devices.is_empty());
            store.submit(vec![Write::put_device(&device)]).durable().await.expect("commit");
            let gone = std::sync::Arc::new(create_device("d2", &DeviceSpec::default(), now, 2).expect("device"));
            store.submit(vec![Write::put_device(&gone)]).durable().await.expect("commit");
            store.submit(vec![Write::DeleteDevice { id: "d2".into() }]).durable().await.expect("commit");
            store.close().await;
        }
        let (_store, loaded) = Store::open(&path).expect("reopen");
        assert_eq!(loaded.devices, vec![(*device).clone()]);
    }

    #[tokio::test]
    async fn a_version_1_file_is_upgraded_in_place_and_keeps_its_devices() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.redb");
        let now = "2026-01-01T00:00:00Z".parse().expect("time");
        let device = create_device("old", &DeviceSpec::default(), now, 1).expect("device");
        {
            // What a release before jobs wrote: schema 1, a meta and a devices table only, the twin as JSON maps.
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META).expect("meta").insert(SCHEMA_KEY, b"1".as_slice()).expect("version");
            let mut record = serde_json::to_value(&device).expect("json");
            let stamp = serde_json::json!({"$lastUpdated": "2026-01-01T00:00:00.0000000Z", "$lastUpdatedVersion": 1});
            record["twin"] = serde_json::json!({
                "version": 1, "tags": {},
                "desired": {"properties": {}, "version": 1, "metadata": stamp},
                "reported": {"properties": {}, "version": 1, "metadata": {"$lastUpdated": "2026-01-01T00:00:00.0000000Z"}},
            });
            let record = serde_json::to_vec(&record).expect("json");
            txn.open_table(DEVICES).expect("devices").insert("old", record.as_slice()).expect("device");
            txn.commit().expect("commit");
        }
        let (store, loaded) = Store::open(&path).expect("upgraded");
        assert_eq!(loaded.devices, vec![device]);
        assert!(loaded.jobs.is_empty() && loaded.device_jobs.is_empty());
        store.submit(vec![Write::DeleteJob { id: "none".into() }]).durable().await.expect("job tables exist");
        let session = Write::PutSession { device_id: "old".into(), subscriptions: Default::default() };
        store.submit(vec![session]).durable().await.expect("the sessions table exists");
        store.close().await;
        drop(store);
        let db = Database::open(&path).expect("open");
        let read = db.begin_read().expect("read");
        let version = read.open_table(META).expect("meta").get(SCHEMA_KEY).expect("get").map(|v| v.value().to_vec());
        assert_eq!(version.as_deref(), Some(SCHEMA_VERSION));
    }

    #[tokio::test]
    async fn deleting_a_job_removes_exactly_its_device_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.redb");
        let now = "2026-01-01T00:00:00Z".parse().expect("time");
        let record = |job_id: &str, device: &str| {
            let job = crate::domain::jobs::tests::lock_door_job(job_id, "*");
            Write::put_device_job(&crate::domain::jobs::DeviceJob::pending(&job, device, now))
        };
        {
            let (store, _) = Store::open(&path).expect("create");
            let writes = vec![record("a", "d1"), record("a", "d2"), record("a-b", "d1"), record("ab", "d1")];
            store.submit(writes).durable().await.expect("commit");
            store.submit(vec![Write::DeleteJob { id: "a".into() }]).durable().await.expect("commit");
            store.close().await;
        }
        let db = Database::open(&path).expect("open");
        let read = db.begin_read().expect("read");
        let table = read.open_table(DEVICE_JOBS).expect("table");
        let keys: Vec<String> = table.iter().expect("iter").map(|e| e.expect("entry").0.value().to_owned()).collect();
        assert_eq!(keys, ["a-b/d1", "ab/d1"]);
    }

    #[test]
    fn a_foreign_file_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.redb");
        std::fs::write(&path, b"this is not a database at all, just some text").expect("write");
        let err = Store::open(&path).err().expect("must refuse");
        assert!(err.to_string().contains("not an iothub-emulator data file"), "{err}");
    }

    #[test]
    fn a_newer_format_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.redb");
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META).expect("meta").insert(SCHEMA_KEY, b"99".as_slice()).expect("insert");
            txn.commit().expect("commit");
        }
        let err = Store::open(&path).err().expect("must refuse");
        assert!(err.to_string().contains("version 99"), "{err}");
    }

    #[tokio::test]
    async fn telemetry_an_earlier_build_kept_in_the_data_file_moves_to_the_segment_files_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.redb");
        Store::open(&path).expect("create").0.close().await;
        let event = Event {
            partition: 1,
            sequence: 4,
            offset: 400,
            message: crate::domain::telemetry::TelemetryMessage {
                device_id: "d1".into(),
                module_id: None,
                generation_id: "g".into(),
                enqueued_time: "2026-12-05T00:00:00Z".parse().expect("time"),
                body: bytes::Bytes::from_static(b"{\"n\":1}"),
                system_properties: Default::default(),
                properties: Default::default(),
            },
        };
        {
            let db = Database::open(&path).expect("open");
            let txn = db.begin_write().expect("txn");
            txn.open_table(EVENTS).expect("table").insert((1, 4), events::encode(&event).as_slice()).expect("insert");
            txn.commit().expect("commit");
        }
        for _ in 0..2 {
            let (store, loaded) = Store::open(&path).expect("open");
            assert_eq!(loaded.events, vec![Arc::new(event.clone())], "read back once, from the segment files");
            store.close().await;
        }
        let db = Database::open(&path).expect("open");
        let read = db.begin_read().expect("read");
        assert!(read.open_table(EVENTS).expect("table").iter().expect("iter").next().is_none(), "the table is emptied");
        assert!(segments_dir(&path).join("seg-0000000000.log").exists());
    }
}
