//! Jobs v2 (wire-spec C.6, E): scheduled direct-method and twin-update jobs over a query condition, the
//! per-device records they leave (`devices.jobs`), and the statistics that summarise those records.
//!
//! Pure state: what a job is, which transitions it may take and what each leaves behind. Running a job (timers,
//! fan-out, device calls, persistence) is the hub's business.

pub mod document;
pub mod request;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::methods::{self, MethodCall, MethodResponse};
use super::registry::IfMatch;
use super::twin::{self, TwinWrite};
use crate::error::HubError;

/// What a job does on each device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobType {
    ScheduleDeviceMethod,
    ScheduleUpdateTwin,
}

impl JobType {
    /// The wire name (`type` of a job, `jobType` of a device record).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScheduleDeviceMethod => "scheduleDeviceMethod",
            Self::ScheduleUpdateTwin => "scheduleUpdateTwin",
        }
    }

    /// Reads a type name, case-insensitively (C# sends enum names such as `ScheduleDeviceMethod`). The Node
    /// SDK's doc comments and older docs say `scheduleTwinUpdate`, so that spelling is read too.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "scheduledevicemethod" => Some(Self::ScheduleDeviceMethod),
            "scheduleupdatetwin" | "scheduletwinupdate" => Some(Self::ScheduleUpdateTwin),
            _ => None,
        }
    }
}

/// A job's status. `cancelled` has two l's here, unlike a device record's `canceled` (wire-spec C.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobStatus {
    Queued,
    Scheduled,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Reads a status name case-insensitively (C# sends enum names); `canceled` is read as `cancelled`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "queued" => Some(Self::Queued),
            "scheduled" => Some(Self::Scheduled),
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            "cancelled" | "canceled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// True for the three end states; a finished job never changes again.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// The status of one device's part in a job (wire-spec E.3; `canceled` with one l).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceJobStatus {
    Pending,
    Scheduled,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl DeviceJobStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// True once the device's part is over.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }
}

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

/// Default `maxExecutionTimeInSeconds` when a request leaves it out: the Node SDK's default (wire-spec H.46).
pub const DEFAULT_MAX_EXECUTION_SECS: u64 = 3600;
/// Longest `maxExecutionTimeInSeconds` accepted. The hub documents none; this bound (the retention period) is the
/// emulator's, so a job always ends while it can still be read.
pub const MAX_EXECUTION_SECS: u64 = 30 * 24 * 3600;

/// A scheduled job as the hub keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub job_type: JobType,
    /// The WHERE condition as given (validated at creation).
    pub query_condition: String,
    /// Method jobs: `cloudToDeviceMethod` with the hub's defaults filled in.
    pub cloud_to_device_method: Option<Value>,
    /// Twin jobs: `updateTwin` as given.
    pub update_twin: Option<Value>,
    pub created: Timestamp,
    /// The requested start (`startTime`); creation time when none was given.
    pub start: Timestamp,
    pub max_execution_secs: u64,
    pub status: JobStatus,
    /// When the job began running: its maximum execution time counts from here.
    pub running_since: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub last_updated: Timestamp,
    pub status_message: Option<String>,
    pub failure_reason: Option<String>,
}

/// What a job does to each target, derived from its stored request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Method(MethodCall),
    Twin { write: TwinWrite, if_match: Option<IfMatch> },
}

impl Job {
    /// The per-device action. The request was validated at creation, so this fails only on a damaged record.
    pub fn action(&self) -> Result<Action, HubError> {
        let missing = |what: &str| HubError::ServerError(format!("the stored job has no {what}"));
        match self.job_type {
            JobType::ScheduleDeviceMethod => {
                let method = self.cloud_to_device_method.as_ref().ok_or_else(|| missing("cloudToDeviceMethod"))?;
                Ok(Action::Method(methods::parse_call(method)?))
            }
            JobType::ScheduleUpdateTwin => {
                let update = self.update_twin.as_ref().ok_or_else(|| missing("updateTwin"))?;
                Ok(Action::Twin { write: twin::parse_twin_write(update)?, if_match: request::job_etag(update)? })
            }
        }
    }

    /// When a running job must stop: its start of running plus its maximum execution time.
    pub fn deadline(&self) -> Option<Timestamp> {
        let since = self.running_since?;
        let secs = i64::try_from(self.max_execution_secs).unwrap_or(i64::MAX);
        Some(since.checked_add(SignedDuration::from_secs(secs)).unwrap_or(Timestamp::MAX))
    }

    /// A queued job waiting for a start time in the future.
    pub fn schedule(&mut self, now: Timestamp) {
        if self.status == JobStatus::Queued {
            self.status = JobStatus::Scheduled;
            self.last_updated = now;
        }
    }

    /// The job starts working on its targets.
    pub fn begin(&mut self, now: Timestamp) {
        if matches!(self.status, JobStatus::Queued | JobStatus::Scheduled) {
            self.status = JobStatus::Running;
            self.running_since = Some(now);
            self.last_updated = now;
        }
    }

    /// The job ends in `status` (completed, failed or cancelled); a finished job stays as it is.
    pub fn finish(&mut self, status: JobStatus, now: Timestamp, failure_reason: Option<String>) {
        if self.status.is_finished() || !status.is_finished() {
            return;
        }
        self.status = status;
        self.end = Some(now);
        self.last_updated = now;
        self.failure_reason = failure_reason;
    }
}

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
            job_type: job.job_type,
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
            DeviceJobStatus::Pending | DeviceJobStatus::Scheduled => &mut self.pending,
            DeviceJobStatus::Running => &mut self.running,
            DeviceJobStatus::Completed => &mut self.succeeded,
            DeviceJobStatus::Failed => &mut self.failed,
            DeviceJobStatus::Canceled => &mut self.canceled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + n).expect("time")
    }

    fn job() -> Job {
        let body = serde_json::json!({
            "type": "scheduleDeviceMethod",
            "queryCondition": "deviceId IN ['a']",
            "cloudToDeviceMethod": {"methodName": "lockDoor", "payload": null, "responseTimeoutInSeconds": 15},
            "maxExecutionTimeInSeconds": 300,
        });
        request::parse_request("j1", &body, t(0)).expect("valid")
    }

    #[test]
    fn a_job_moves_forward_only() {
        let mut job = job();
        assert_eq!(job.status, JobStatus::Queued);
        job.schedule(t(1));
        assert_eq!(job.status, JobStatus::Scheduled);
        job.begin(t(2));
        assert_eq!((job.status, job.running_since), (JobStatus::Running, Some(t(2))));
        assert_eq!(job.deadline(), Some(t(302)));
        job.schedule(t(3));
        assert_eq!(job.status, JobStatus::Running, "a running job is not scheduled again");
        job.finish(JobStatus::Completed, t(4), None);
        job.finish(JobStatus::Failed, t(5), Some("late".into()));
        assert_eq!((job.status, job.end, job.failure_reason.clone()), (JobStatus::Completed, Some(t(4)), None));
    }

    #[test]
    fn statistics_follow_record_moves() {
        let job = job();
        let mut records: Vec<DeviceJob> = ["a", "b", "c"].iter().map(|d| DeviceJob::pending(&job, d, t(0))).collect();
        let mut stats = Statistics::of(&records);
        assert_eq!((stats.device_count, stats.pending), (3, 3));
        records[0].begin(t(1));
        stats.moved(DeviceJobStatus::Pending, DeviceJobStatus::Running);
        records[0].complete(t(2), Some(MethodOutcome { status: 200, payload: Value::Null }));
        stats.moved(DeviceJobStatus::Running, DeviceJobStatus::Completed);
        records[1].fail(t(2), DeviceJobError::expired(300));
        stats.moved(DeviceJobStatus::Pending, DeviceJobStatus::Failed);
        records[2].cancel(t(3));
        stats.moved(DeviceJobStatus::Pending, DeviceJobStatus::Canceled);
        assert_eq!(stats, Statistics::of(&records));
        assert_eq!((stats.succeeded, stats.failed, stats.canceled, stats.pending), (1, 1, 1, 0));
        assert_eq!(records[2].started, Some(t(3)), "a canceled record still shows when its part ended");
    }

    #[test]
    fn names_read_as_the_sdks_write_them() {
        assert_eq!(JobType::parse("ScheduleDeviceMethod"), Some(JobType::ScheduleDeviceMethod));
        assert_eq!(JobType::parse("scheduleTwinUpdate"), Some(JobType::ScheduleUpdateTwin));
        assert_eq!(JobType::parse("export"), None);
        assert_eq!(JobStatus::parse("Completed"), Some(JobStatus::Completed));
        assert_eq!(JobStatus::parse("canceled"), Some(JobStatus::Cancelled));
        assert_eq!(
            serde_json::to_value(JobType::ScheduleUpdateTwin).expect("json"),
            serde_json::json!("scheduleUpdateTwin")
        );
    }
}
