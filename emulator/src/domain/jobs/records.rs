//! What jobs leave behind on each device: the `devices.jobs` record (wire-spec E.3) with its outcome or error,
//! and the statistics that summarise a job's records.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DeviceJobStatus, Job, JobType};
use crate::domain::methods::MethodResponse;
use crate::error::HubError;

/// Why a device's part failed: `error.code` and `error.description` of its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceJobError {
    pub code: String,
    pub description: String,
}

impl DeviceJobError {
    /// The record error for a hub error: its symbolic code (`DeviceNotOnline`, `GatewayTimeout`, ...) and text.
    /// Decision on wire-spec H.47: codes are the hub's symbolic names, as in its other error bodies.
    pub fn from_hub(error: &HubError) -> Self {
        Self { code: error.wire().code.to_owned(), description: error.to_string() }
    }

    /// The error given to devices a job did not get to before its maximum execution time.
    pub fn expired(max_execution_secs: u64) -> Self {
        Self {
            code: EXPIRED_CODE.to_owned(),
            description: format!("The job's maximum execution time of {max_execution_secs} seconds was exceeded"),
        }
    }

    /// The error given to a device whose method call was in flight when the emulator stopped: its outcome is
    /// unknown, and running it again could run it twice, so it is not retried.
    pub fn interrupted() -> Self {
        Self {
            code: INTERRUPTED_CODE.to_owned(),
            description: "The emulator stopped while this device's operation was in flight; its outcome is unknown \
                          and it was not run again"
                .to_owned(),
        }
    }
}

/// `error.code` of devices not reached within the job's maximum execution time (wire-spec H.46).
pub const EXPIRED_CODE: &str = "JobExpired";
/// `error.code` of devices whose operation was cut short by an emulator restart (the emulator's own code).
pub const INTERRUPTED_CODE: &str = "JobInterrupted";

/// What a device answered to a method job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodOutcome {
    pub status: i64,
    pub payload: Value,
}

impl From<MethodResponse> for MethodOutcome {
    fn from(response: MethodResponse) -> Self {
        Self { status: response.status, payload: response.payload }
    }
}

/// One device's part in a job (a `devices.jobs` record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceJob {
    pub device_id: String,
    pub job_id: String,
    pub job_type: JobType,
    pub status: DeviceJobStatus,
    pub created: Timestamp,
    pub started: Option<Timestamp>,
    pub ended: Option<Timestamp>,
    pub last_updated: Timestamp,
    /// Method jobs: what the device answered.
    pub outcome: Option<MethodOutcome>,
    pub error: Option<DeviceJobError>,
}

impl DeviceJob {
    /// A target waiting for its turn.
    pub fn pending(job: &Job, device_id: &str, now: Timestamp) -> Self {
        Self {
            device_id: device_id.to_owned(),
            job_id: job.job_id.clone(),
            job_type: job.job_type(),
            status: DeviceJobStatus::Pending,
            created: now,
            started: None,
            ended: None,
            last_updated: now,
            outcome: None,
            error: None,
        }
    }

    /// The device's operation starts.
    pub fn begin(&mut self, now: Timestamp) {
        self.status = DeviceJobStatus::Running;
        self.started = Some(now);
        self.last_updated = now;
    }

    /// The operation succeeded (for method jobs: the device answered, whatever status it chose).
    pub fn complete(&mut self, now: Timestamp, outcome: Option<MethodOutcome>) {
        self.end(DeviceJobStatus::Completed, now);
        self.outcome = outcome;
    }

    /// The operation failed with `error`.
    pub fn fail(&mut self, now: Timestamp, error: DeviceJobError) {
        self.end(DeviceJobStatus::Failed, now);
        self.error = Some(error);
    }

    /// The job was cancelled before this device's turn.
    pub fn cancel(&mut self, now: Timestamp) {
        self.end(DeviceJobStatus::Canceled, now);
    }

    fn end(&mut self, status: DeviceJobStatus, now: Timestamp) {
        self.status = status;
        self.started.get_or_insert(now);
        self.ended = Some(now);
        self.last_updated = now;
    }
}

/// Counts of a job's device records by status: `deviceJobStatistics`, kept in step with every record change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statistics {
    pub device_count: u64,
    pub pending: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub canceled: u64,
}

impl Statistics {
    /// The statistics of `records`.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a DeviceJob>) -> Self {
        let mut stats = Self::default();
        for record in records {
            stats.device_count += 1;
            *stats.slot(record.status) += 1;
        }
        stats
    }

    /// Accounts for a record that went from `from` to `to`.
    pub fn moved(&mut self, from: DeviceJobStatus, to: DeviceJobStatus) {
        let slot = self.slot(from);
        *slot = slot.saturating_sub(1);
        *self.slot(to) += 1;
    }

    /// Decision on wire-spec E.3: `pendingCount` holds `pending` and `scheduled` records; canceled records count in
    /// `deviceCount` only, since the wire has no member for them.
    fn slot(&mut self, status: DeviceJobStatus) -> &mut u64 {
        match status {
            DeviceJobStatus::Pending | DeviceJobStatus::Scheduled | DeviceJobStatus::Unknown => &mut self.pending,
            DeviceJobStatus::Running => &mut self.running,
            DeviceJobStatus::Completed => &mut self.succeeded,
            DeviceJobStatus::Failed => &mut self.failed,
            DeviceJobStatus::Canceled => &mut self.canceled,
        }
    }
}
