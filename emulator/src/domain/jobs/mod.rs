//! Jobs v2 (wire-spec C.6, E): scheduled direct-method and twin-update jobs over a query condition, the
//! per-device records they leave (`devices.jobs`), and the statistics that summarise those records.
//!
//! Pure state: what a job is, which transitions it may take and what each leaves behind. A job holds its action
//! and its condition typed and parsed from creation on, so the runner never reads the request again. Running a
//! job (timers, fan-out, device calls, persistence) is the hub's business; reading and rendering job JSON is the
//! wire layer's.

mod records;
pub mod view;

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use iothub_proto::jobs::{DeviceJobStatus, JobStatus, JobType};
pub use records::{DeviceJob, DeviceJobError, EXPIRED_CODE, INTERRUPTED_CODE, MethodOutcome, Statistics};

use super::methods::MethodCall;
use super::query::{Expr, parse_condition};
use super::registry::IfMatch;
use super::twin::{SectionKind, TwinWrite, rules};
use crate::error::HubError;

/// Longest job id (wire-spec C.6.1: the jobs devguide).
pub const MAX_JOB_ID_LEN: usize = 64;
/// Default `maxExecutionTimeInSeconds` when a request leaves it out: the Node SDK's default (wire-spec H.46).
pub const DEFAULT_MAX_EXECUTION_SECS: u64 = 3600;
/// Longest `maxExecutionTimeInSeconds` accepted. The hub documents none; this bound (the retention period) is the
/// emulator's, so a job always ends while it can still be read.
pub const MAX_EXECUTION_SECS: u64 = 30 * 24 * 3600;

fn invalid(text: impl Into<String>) -> HubError {
    HubError::ArgumentInvalid(text.into())
}

/// Checks a job id: 1 to 64 US-ASCII letters, digits and `-` (the jobs devguide's rule; UUIDs pass).
pub fn validate_job_id(id: &str) -> Result<(), HubError> {
    if id.is_empty() {
        return Err(HubError::ArgumentNull("The job id must not be empty".into()));
    }
    if id.len() > MAX_JOB_ID_LEN || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(invalid(format!(
            "Job id '{}' is invalid: it must be at most {MAX_JOB_ID_LEN} characters of ASCII letters, digits and '-'",
            id.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// The WHERE condition that picks a job's targets: the text as given, parsed once.
#[derive(Debug, Clone)]
pub struct Condition {
    text: String,
    /// `Ok(None)` for `*`; an error only for a stored condition a later parser no longer reads.
    parsed: Result<Option<Arc<Expr>>, String>,
}

impl Condition {
    /// Parses a condition for a new job; a condition that does not parse is refused (a 400 now, never a job that
    /// fails later).
    pub fn parse(text: &str) -> Result<Self, HubError> {
        let parsed = parse_condition(text).map_err(|e| invalid(format!("queryCondition: {e}")))?;
        Ok(Self { text: text.to_owned(), parsed: Ok(parsed.map(Arc::new)) })
    }

    /// The condition as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The parsed condition (`None` for `*`), or why a stored one cannot be read.
    pub fn expr(&self) -> Result<Option<&Expr>, &str> {
        match &self.parsed {
            Ok(expr) => Ok(expr.as_deref()),
            Err(error) => Err(error),
        }
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed = parse_condition(&text).map(|expr| expr.map(Arc::new)).map_err(|e| e.to_string());
        Ok(Self { text, parsed })
    }
}

/// A twin job's update: the patch, and the etag it was given (`*` or none: every twin; a concrete etag: only
/// twins that still have it, wire-spec D.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinUpdate {
    pub write: TwinWrite,
    pub etag: Option<String>,
}

impl TwinUpdate {
    /// Checks a twin job's update: it sets tags and/or desired properties that the twin rules accept.
    pub fn new(write: TwinWrite, etag: Option<String>) -> Result<Self, HubError> {
        if write.is_empty() {
            return Err(invalid("updateTwin must set tags and/or properties.desired"));
        }
        for (kind, section) in [(SectionKind::Tags, &write.tags), (SectionKind::Desired, &write.desired)] {
            if let Some(Some(patch)) = section {
                rules::validate(kind, patch, true)?;
                rules::check_size(kind, patch)?;
            }
        }
        let update = Self { write, etag };
        update.if_match()?;
        Ok(update)
    }

    /// The per-device precondition: none for `*` or no etag, else the etag without quotes.
    pub fn if_match(&self) -> Result<Option<IfMatch>, HubError> {
        let Some(etag) = &self.etag else { return Ok(None) };
        let etag = etag.trim();
        let etag = etag.strip_prefix('"').and_then(|e| e.strip_suffix('"')).unwrap_or(etag);
        match etag {
            "*" => Ok(None),
            "" => Err(invalid("updateTwin.etag must not be empty; use \"*\" to update every twin")),
            etag => Ok(Some(IfMatch::Etag(etag.to_owned()))),
        }
    }
}

/// What a job does on each device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Method(MethodCall),
    Twin(TwinUpdate),
}

/// A scheduled job as the hub keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub condition: Condition,
    pub action: Action,
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

/// What a job request asks for, read off the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub condition: Condition,
    pub action: Action,
    /// `None`: start now.
    pub start: Option<Timestamp>,
    /// `None`: the default.
    pub max_execution_secs: Option<u64>,
}

impl Job {
    /// A new job `job_id`, `queued`, created `now`. Decisions on the unconfirmed points (wire-spec C.6.1, E.2,
    /// H.44-46): no start time means now; no maximum execution time means 3600 s.
    pub fn create(job_id: &str, request: NewJob, now: Timestamp) -> Result<Self, HubError> {
        validate_job_id(job_id)?;
        let max_execution_secs = request.max_execution_secs.unwrap_or(DEFAULT_MAX_EXECUTION_SECS);
        if !(1..=MAX_EXECUTION_SECS).contains(&max_execution_secs) {
            return Err(invalid(format!(
                "maxExecutionTimeInSeconds must be a whole number of seconds from 1 to {MAX_EXECUTION_SECS}, not \
                 {max_execution_secs}"
            )));
        }
        Ok(Self {
            job_id: job_id.to_owned(),
            condition: request.condition,
            action: request.action,
            created: now,
            start: request.start.unwrap_or(now),
            max_execution_secs,
            status: JobStatus::Queued,
            running_since: None,
            end: None,
            last_updated: now,
            status_message: None,
            failure_reason: None,
        })
    }

    /// What the job does, as its type.
    pub fn job_type(&self) -> JobType {
        match self.action {
            Action::Method(_) => JobType::ScheduleDeviceMethod,
            Action::Twin(_) => JobType::ScheduleUpdateTwin,
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

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    pub(crate) fn t(n: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + n).expect("time")
    }

    /// The tutorial's lockDoor job over `devices`, created at `t(0)`.
    pub(crate) fn lock_door_job(id: &str, condition: &str) -> Job {
        let call = MethodCall {
            name: "lockDoor".into(),
            payload: "null".into(),
            response_timeout: Duration::from_secs(15),
            connect_timeout: Duration::ZERO,
        };
        let request = NewJob {
            condition: Condition::parse(condition).expect("condition"),
            action: Action::Method(call),
            start: None,
            max_execution_secs: Some(300),
        };
        Job::create(id, request, t(0)).expect("valid")
    }

    #[test]
    fn a_job_moves_forward_only() {
        let mut job = lock_door_job("j1", "deviceId IN ['a']");
        assert_eq!((job.status, job.job_type()), (JobStatus::Queued, JobType::ScheduleDeviceMethod));
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
        let job = lock_door_job("j1", "*");
        let mut records: Vec<DeviceJob> = ["a", "b", "c"].iter().map(|d| DeviceJob::pending(&job, d, t(0))).collect();
        let mut stats = Statistics::of(&records);
        assert_eq!((stats.device_count, stats.pending), (3, 3));
        records[0].begin(t(1));
        stats.moved(DeviceJobStatus::Pending, DeviceJobStatus::Running);
        records[0].complete(t(2), Some(MethodOutcome { status: 200, payload: serde_json::Value::Null }));
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
    fn a_stored_job_keeps_its_parsed_condition_and_typed_action() {
        let job = lock_door_job("j1", "deviceId IN ['a', 'b']");
        let text = serde_json::to_string(&job).expect("encode");
        let back: Job = serde_json::from_str(&text).expect("decode");
        assert_eq!(back, job);
        assert!(matches!(back.condition.expr(), Ok(Some(Expr::In { .. }))));
        assert!(matches!(back.action, Action::Method(ref call) if call.name == "lockDoor"));
    }

    #[test]
    fn limits_are_checked_at_creation() {
        let request = |max| NewJob {
            condition: Condition::parse("*").expect("condition"),
            action: lock_door_job("x", "*").action,
            start: None,
            max_execution_secs: max,
        };
        assert_eq!(Job::create("j", request(None), t(0)).expect("ok").max_execution_secs, DEFAULT_MAX_EXECUTION_SECS);
        assert!(Job::create("j", request(Some(0)), t(0)).is_err());
        assert!(Job::create("job_1", request(None), t(0)).is_err(), "underscore");
        assert!(Job::create(&"a".repeat(65), request(None), t(0)).is_err());
        assert!(matches!(Condition::parse("deviceId IN ["), Err(HubError::ArgumentInvalid(_))));
    }

    #[test]
    fn a_concrete_etag_is_a_per_device_precondition() {
        let update = |etag: Option<&str>| TwinUpdate { write: TwinWrite::default(), etag: etag.map(str::to_owned) };
        assert_eq!(
            update(Some("\"AAAAAAAAAAI=\"")).if_match().expect("ok"),
            Some(IfMatch::Etag("AAAAAAAAAAI=".into()))
        );
        assert_eq!(update(Some("*")).if_match().expect("ok"), None);
        assert_eq!(update(None).if_match().expect("ok"), None);
        assert!(update(Some(" ")).if_match().is_err());
        assert!(TwinUpdate::new(TwinWrite::default(), None).is_err(), "an update must set something");
    }
}
