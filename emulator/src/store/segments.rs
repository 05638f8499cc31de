//! The Event Hubs-compatible log on disk: append-only segment files of checksummed records, written and fsynced
//! once per commit group.
//!
//! Why not a redb table (as the first version of the log did): a B-tree insert per message rewrote a dozen pages
//! per commit, and telemetry answered only after that commit. Here a group's telemetry, whatever its partitions,
//! is one write and one `fdatasync`; a group of telemetry alone does not touch redb at all.
//!
//! Files are `<dir>/seg-<number, 10 digits>.log`, filled in turn; a record is `[length u32][crc32 u32]` (little
//! endian) over `[partition u32][sequence u64]` and the event's postcard record (`events::encode`). A partition's
//! events are appended in sequence order (the hub submits them under the partition's lock and the writer keeps
//! submission order). A torn tail (power cut mid-append) fails its checksum: reading stops there, and a writable
//! open cuts the file back to the last whole record. A trim moves a partition's trim point (kept in redb, written
//! before the files change); a segment is deleted once every partition in it is trimmed past its records, and the
//! load skips trimmed records of the segments that remain.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::domain::eventlog::Event;

use super::events;

/// A segment is closed and a new one started once it holds this many bytes.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Record header: length and checksum.
const HEADER: usize = 8;
/// Partition and sequence number, ahead of the event's record.
const POSITION: usize = 12;
/// The largest record a reader accepts (a 256 KB body plus properties, with room to spare).
const MAX_RECORD: usize = 4 * 1024 * 1024;

/// The segment files, the open tail, and what each segment holds.
pub(super) struct SegmentLog {
    dir: PathBuf,
    /// Each segment's number with the last sequence number of every partition in it, oldest first.
    segments: Vec<(u64, BTreeMap<u32, u64>)>,
    /// The segment being appended to, and its length.
    tail: Option<(File, u64)>,
    /// Each partition's trim point: its events at or below it are gone.
    trimmed: BTreeMap<u32, u64>,
}

/// Where the tail was before a group's appends: what `rollback` cuts back to.
#[derive(Debug)]
pub(super) struct Mark {
    length: u64,
    /// The tail's record of last sequences before the group.
    last: BTreeMap<u32, u64>,
}

impl SegmentLog {
    /// Reads every segment under `dir`, skipping events at or below their partition's trim point. A writable
    /// open creates the directory, cuts a torn tail back and deletes segments holding only trimmed events.
    pub(super) fn open(
        dir: &Path,
        trimmed: &BTreeMap<u32, u64>,
        writable: bool,
    ) -> Result<(Option<Self>, Vec<Arc<Event>>), String> {
        if writable {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut numbers = Vec::new();
        match fs::read_dir(dir) {
            Ok(entries) => numbers.extend(entries.flatten().filter_map(|entry| segment_number(&entry.path()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
        }
        numbers.sort_unstable();
        let mut log = Self { dir: dir.to_path_buf(), segments: Vec::new(), tail: None, trimmed: trimmed.clone() };
        let mut events = Vec::new();
        for number in numbers {
            let path = segment_path(dir, number);
            let (records, whole_length) = read_segment(&path)?;
            let mut last = BTreeMap::new();
            for event in &records {
                last.insert(event.partition, event.sequence);
            }
            if writable {
                cut_back(&path, whole_length)?;
                if log.all_trimmed(&last) {
                    let _ = fs::remove_file(&path);
                    continue;
                }
            }
            log.segments.push((number, last));
            events.extend(records.into_iter().filter(|e| !log.is_trimmed(e.partition, e.sequence)));
        }
        Ok((writable.then_some(log), events))
    }

    fn is_trimmed(&self, partition: u32, sequence: u64) -> bool {
        self.trimmed.get(&partition).is_some_and(|through| sequence <= *through)
    }

    fn all_trimmed(&self, last: &BTreeMap<u32, u64>) -> bool {
        last.iter().all(|(partition, sequence)| self.is_trimmed(*partition, *sequence))
    }

    /// Appends `events` and makes them durable. On failure the file is cut back to where it was, so no partial
    /// record is left in front of later ones.
    pub(super) fn append(&mut self, events: &[&Event]) -> io::Result<Mark> {
        let mut buffer = Vec::new();
        for event in events {
            let payload = events::encode(event);
            let length = u32::try_from(POSITION + payload.len()).unwrap_or(u32::MAX);
            let start = buffer.len();
            buffer.extend_from_slice(&length.to_le_bytes());
            buffer.extend_from_slice(&[0; 4]);
            buffer.extend_from_slice(&event.partition.to_le_bytes());
            buffer.extend_from_slice(&event.sequence.to_le_bytes());
            buffer.extend_from_slice(&payload);
            let crc = crc32fast::hash(&buffer[start + HEADER..]);
            buffer[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
        }
        if self.tail.as_ref().is_none_or(|(_, length)| *length >= SEGMENT_BYTES) {
            self.start_segment()?;
        }
        let last = self.segments.last().map(|(_, last)| last.clone()).unwrap_or_default();
        let Some((file, length)) = self.tail.as_mut() else { return Err(io::Error::other("no open segment")) };
        let mark = Mark { length: *length, last };
        let written = file.write_all(&buffer).and_then(|()| file.sync_data());
        *length += buffer.len() as u64;
        if let Err(error) = written {
            self.rollback(mark);
            return Err(error);
        }
        if let Some((_, last)) = self.segments.last_mut() {
            for event in events {
                last.insert(event.partition, event.sequence);
            }
        }
        Ok(mark)
    }

    /// Opens the next segment file (and makes its name durable).
    fn start_segment(&mut self) -> io::Result<()> {
        let number = self.segments.last().map_or(0, |(number, _)| number + 1);
        let path = segment_path(&self.dir, number);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let length = file.metadata()?.len();
        File::open(&self.dir)?.sync_all()?;
        self.segments.push((number, BTreeMap::new()));
        self.tail = Some((file, length));
        Ok(())
    }

    /// Cuts the tail back to `mark` (the group it belongs to failed). A file that cannot be cut is closed: the
    /// next append starts a new segment, and the load stops reading the old one at the bad record.
    pub(super) fn rollback(&mut self, mark: Mark) {
        let cut = self.tail.as_mut().is_some_and(|(file, length)| {
            *length = mark.length;
            file.set_len(mark.length).and_then(|()| file.sync_data()).is_ok()
        });
        if let Some((_, last)) = self.segments.last_mut() {
            *last = mark.last;
        }
        if !cut {
            self.tail = None;
        }
    }

    /// Moves `partition`'s trim point to `through` (already durable in redb) and deletes the segments that now
    /// hold only trimmed events; one that cannot be deleted now is skipped by the next load.
    pub(super) fn trim(&mut self, partition: u32, through: u64) {
        let point = self.trimmed.entry(partition).or_insert(through);
        *point = (*point).max(through);
        let tail = self.segments.last().map(|(number, _)| *number);
        let (gone, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.segments).into_iter().partition(|(_, last)| self.all_trimmed(last));
        self.segments = kept;
        for (number, _) in gone {
            if Some(number) == tail {
                // The tail itself: the next append starts a fresh segment (numbered after it).
                self.tail = None;
                self.segments.push((number, BTreeMap::new()));
            }
            let _ = fs::remove_file(segment_path(&self.dir, number));
        }
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("seg-{number:010}.log"))
}

/// The number a segment file's name gives.
fn segment_number(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()
}

/// The whole records of a segment, and the length they end at (a torn or damaged tail is left out).
fn read_segment(path: &Path) -> Result<(Vec<Arc<Event>>, u64), String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut events = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let record = bytes.get(at + HEADER..at + HEADER + length).filter(|_| (POSITION..=MAX_RECORD).contains(&length));
        let Some(record) = record.filter(|record| crc32fast::hash(record) == crc) else { break };
        let (position, payload) = record.split_at(POSITION);
        let partition = u32::from_le_bytes([position[0], position[1], position[2], position[3]]);
        let mut sequence = [0; 8];
        sequence.copy_from_slice(&position[4..]);
        let sequence = u64::from_le_bytes(sequence);
        match events::decode(partition, sequence, payload) {
            Ok(event) => events.push(Arc::new(event)),
            Err(error) => {
                tracing::warn!(path = %path.display(), sequence, %error, "an unreadable event ends the segment");
                break;
            }
        }
        at += HEADER + length;
    }
    if at < bytes.len() {
        tracing::warn!(path = %path.display(), kept = at, length = bytes.len(), "a torn record at the end of a segment is dropped");
    }
    Ok((events, at as u64))
}

/// Cuts a segment back to its whole records.
fn cut_back(path: &Path, length: u64) -> Result<(), String> {
    let file = OpenOptions::new().write(true).open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if file.metadata().map_err(|e| e.to_string())?.len() > length {
        file.set_len(length)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("cannot repair {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use crate::domain::telemetry::TelemetryMessage;

    fn event(partition: u32, sequence: u64, body: &str) -> Event {
        Event {
            partition,
            sequence,
            offset: sequence * 100,
            message: TelemetryMessage {
                device_id: "d".into(),
                module_id: None,
                generation_id: String::new(),
                enqueued_time: jiff::Timestamp::from_second(1_800_000_000).expect("time"),
                body: Bytes::copy_from_slice(body.as_bytes()),
                system_properties: BTreeMap::new(),
                properties: BTreeMap::new(),
            },
        }
    }

    /// (partition, sequence, body) of each event, in (partition, sequence) order.
    fn bodies(events: &[Arc<Event>]) -> Vec<(u32, u64, String)> {
        let mut found: Vec<_> = events
            .iter()
            .map(|e| (e.partition, e.sequence, String::from_utf8_lossy(&e.message.body).into_owned()))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn appended_events_come_back_in_order_per_partition() {
        let dir = tempfile::tempdir().expect("dir");
        let (log, events) = SegmentLog::open(dir.path(), &BTreeMap::new(), true).expect("open");
        assert!(events.is_empty());
        let mut log = log.expect("writable");
        let written = [event(0, 0, "a"), event(1, 0, "b"), event(0, 1, "c")];
        log.append(&written.iter().collect::<Vec<_>>()).expect("append");
        log.append(&[&event(1, 1, "d")]).expect("append");
        drop(log);
        let (_, events) = SegmentLog::open(dir.path(), &BTreeMap::new(), false).expect("reopen");
        assert_eq!(bodies(&events), [(0, 0, "a".into()), (0, 1, "c".into()), (1, 0, "b".into()), (1, 1, "d".into())]);
    }

    #[test]
    fn a_torn_tail_is_cut_back_and_appends_go_on_after_the_last_whole_record() {
        let dir = tempfile::tempdir().expect("dir");
        let mut log = SegmentLog::open(dir.path(), &BTreeMap::new(), true).expect("open").0.expect("writable");
        log.append(&[&event(0, 0, "kept"), &event(0, 1, "torn")]).expect("append");
        drop(log);
        let path = segment_path(dir.path(), 0);
        let length = fs::metadata(&path).expect("meta").len();
        OpenOptions::new().write(true).open(&path).expect("open").set_len(length - 3).expect("tear");

        let (log, events) = SegmentLog::open(dir.path(), &BTreeMap::new(), true).expect("reopen");
        assert_eq!(bodies(&events), [(0, 0, "kept".into())]);
        let mut log = log.expect("writable");
        log.append(&[&event(0, 1, "again")]).expect("append");
        drop(log);
        let (_, events) = SegmentLog::open(dir.path(), &BTreeMap::new(), false).expect("reopen");
        assert_eq!(bodies(&events), [(0, 0, "kept".into()), (0, 1, "again".into())]);
    }

    #[test]
    fn a_rolled_back_group_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("dir");
        let mut log = SegmentLog::open(dir.path(), &BTreeMap::new(), true).expect("open").0.expect("writable");
        log.append(&[&event(0, 0, "kept")]).expect("append");
        let mark = log.append(&[&event(0, 1, "undone"), &event(2, 0, "undone too")]).expect("append");
        log.rollback(mark);
        log.append(&[&event(0, 2, "after")]).expect("append");
        drop(log);
        let (_, events) = SegmentLog::open(dir.path(), &BTreeMap::new(), false).expect("reopen");
        assert_eq!(bodies(&events), [(0, 0, "kept".into()), (0, 2, "after".into())]);
    }

    #[test]
    fn trimming_deletes_whole_segments_and_the_trim_point_hides_the_rest() {
        let dir = tempfile::tempdir().expect("dir");
        let mut log = SegmentLog::open(dir.path(), &BTreeMap::new(), true).expect("open").0.expect("writable");
        let big = "x".repeat(usize::try_from(SEGMENT_BYTES).expect("size"));
        log.append(&[&event(0, 0, &big)]).expect("append");
        log.append(&[&event(0, 1, "second segment"), &event(0, 2, "kept")]).expect("append");
        log.trim(0, 1);
        assert!(!segment_path(dir.path(), 0).exists(), "the first segment held only trimmed events");
        assert!(segment_path(dir.path(), 1).exists(), "the second still holds a kept event");
        drop(log);
        let trimmed = BTreeMap::from([(0, 1)]);
        let (log, events) = SegmentLog::open(dir.path(), &trimmed, true).expect("reopen");
        assert_eq!(bodies(&events), [(0, 2, "kept".into())]);
        let mut log = log.expect("writable");
        log.trim(0, 2);
        log.append(&[&event(0, 3, "new tail")]).expect("append");
        drop(log);
        let trimmed = BTreeMap::from([(0, 2)]);
        let (_, events) = SegmentLog::open(dir.path(), &trimmed, false).expect("reopen");
        assert_eq!(bodies(&events), [(0, 3, "new tail".into())]);
    }

    #[test]
    fn a_segment_goes_only_once_every_partition_in_it_is_trimmed_past_it() {
        let dir = tempfile::tempdir().expect("dir");
        let mut log = SegmentLog::open(dir.path(), &BTreeMap::new(), true).expect("open").0.expect("writable");
        let big = "x".repeat(usize::try_from(SEGMENT_BYTES).expect("size"));
        log.append(&[&event(0, 0, "p0"), &event(1, 0, &big)]).expect("append");
        log.append(&[&event(0, 1, "next segment")]).expect("append");
        log.trim(0, 0);
        assert!(segment_path(dir.path(), 0).exists(), "partition 1 still has an event in the first segment");
        log.trim(1, 0);
        assert!(!segment_path(dir.path(), 0).exists());
        drop(log);
        let trimmed = BTreeMap::from([(0, 0), (1, 0)]);
        let (_, events) = SegmentLog::open(dir.path(), &trimmed, false).expect("reopen");
        assert_eq!(bodies(&events), [(0, 1, "next segment".into())]);
    }
}
