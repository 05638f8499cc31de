//! Jobs v2 wire types (swagger `JobRequest`, `JobResponse`, `DeviceJobStatistics`; `devices.jobs` records).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::methods::{CloudToDeviceMethod, CloudToDeviceMethodResult};
use crate::twin::Twin;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobType {
    /// `scheduleDeviceMethod`: calls a direct method on each target device.
    ScheduleDeviceMethod,
    /// `scheduleUpdateTwin`: writes a twin update to each target device.
    ScheduleUpdateTwin,
    /// A type this client does not know (import/export jobs, newer types).
    #[serde(other)]
    Unknown,
}

impl JobType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScheduleDeviceMethod => "scheduleDeviceMethod",
            Self::ScheduleUpdateTwin => "scheduleUpdateTwin",
            Self::Unknown => "unknown",
        }
    }

    /// Reads a type name case-insensitively (C# sends enum names such as `ScheduleDeviceMethod`); the spelling
    /// `scheduleTwinUpdate` of the Node SDK's doc comments and older docs is read too. `None` for other types.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "scheduledevicemethod" => Some(Self::ScheduleDeviceMethod),
            "scheduleupdatetwin" | "scheduletwinupdate" => Some(Self::ScheduleUpdateTwin),
            _ => None,
        }
    }
}

/// A job's status (`cancelled` with two l's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobStatus {
    /// `queued`: accepted and not started yet.
    Queued,
    /// `scheduled`: waiting for its start time.
    Scheduled,
    /// `running`: working through its target devices.
    Running,
    /// `completed`: every target device is done, whatever each device's outcome.
    Completed,
    /// `failed`: the job ended early or ran out of time; `failureReason` says why.
    Failed,
    /// `cancelled`: the job was cancelled before it finished.
    Cancelled,
    /// `enqueued`: waiting to be processed (reported by other job types, such as import/export).
    Enqueued,
    /// A status this client does not know.
    #[serde(other)]
    Unknown,
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
            Self::Enqueued => "enqueued",
            Self::Unknown => "unknown",
        }
    }

    /// True for `completed`, `failed` and `cancelled`: the job will not change again.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Reads a status name case-insensitively (C# sends enum names); `canceled` is read as `cancelled`. `None`
    /// for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "queued" => Some(Self::Queued),
            "scheduled" => Some(Self::Scheduled),
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            "cancelled" | "canceled" => Some(Self::Cancelled),
            "enqueued" => Some(Self::Enqueued),
            _ => None,
        }
    }
}

/// The body of `PUT /jobs/v2/{jobId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    /// `jobId`: the job's id; must match the `{jobId}` in the path.
    pub job_id: String,
    /// `type`: what the job does.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// A WHERE condition over device twins, e.g. `deviceId IN ['a', 'b']`.
    pub query_condition: String,
    /// `cloudToDeviceMethod`: the method to call; set for `scheduleDeviceMethod` jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_to_device_method: Option<CloudToDeviceMethod>,
    /// `updateTwin`: the twin update to write; set for `scheduleUpdateTwin` jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_twin: Option<Twin>,
    /// ISO 8601 UTC; `None` starts now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// `maxExecutionTimeInSeconds`: how long the job may run before unfinished devices fail (`None`: hub default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_execution_time_in_seconds: Option<u64>,
}

/// Counts of a job's device records by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceJobStatistics {
    /// `deviceCount`: the devices the job targets.
    pub device_count: u64,
    /// `failedCount`: devices whose part failed.
    pub failed_count: u64,
    /// `succeededCount`: devices whose part completed.
    pub succeeded_count: u64,
    /// `runningCount`: devices whose part is in progress.
    pub running_count: u64,
    /// `pendingCount`: devices whose part has not started yet.
    pub pending_count: u64,
}

/// A job as the hub reports it, its members in the hub's order (wire-spec C.6.2). Members without a value are
/// left out, as the hub leaves out `endTime` until the job ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResponse {
    /// `jobId`: the job's id.
    pub job_id: String,
    /// `queryCondition`: the WHERE condition that picks the target devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_condition: Option<String>,
    /// `createdTime`: when the hub accepted the job (ISO 8601 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<String>,
    /// `startTime`: when the job starts or started (ISO 8601 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// `endTime`: when the job finished (ISO 8601 UTC); absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// `maxExecutionTimeInSeconds`: how long the job may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_execution_time_in_seconds: Option<u64>,
    /// `type`: what the job does.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// `cloudToDeviceMethod`: the method a `scheduleDeviceMethod` job calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_to_device_method: Option<CloudToDeviceMethod>,
    /// `updateTwin`: the twin update a `scheduleUpdateTwin` job writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_twin: Option<Twin>,
    /// `status`: where the job is in its life.
    pub status: JobStatus,
    /// `statusMessage`: free text about the job's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// `failureReason`: why the job failed; absent unless it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// `deviceJobStatistics`: counts of the job's device records by status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_job_statistics: Option<DeviceJobStatistics>,
}

/// The status of one device's part in a job (`canceled` with one l).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceJobStatus {
    /// `pending`: this device's part has not started yet.
    Pending,
    /// `scheduled`: this device's part waits for the job's start time.
    Scheduled,
    /// `running`: this device's part is in progress.
    Running,
    /// `completed`: this device's part is done; `outcome` holds what it produced.
    Completed,
    /// `failed`: this device's part failed; `error` says why.
    Failed,
    /// `canceled`: the job was cancelled before this device's part finished.
    Canceled,
    /// A status this client does not know.
    #[serde(other)]
    Unknown,
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
            Self::Unknown => "unknown",
        }
    }

    /// True once the device's part is over.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }
}

/// What a device's part produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceJobOutcome {
    /// `deviceMethodResponse`: the device's answer to a method job; `null` for twin jobs.
    pub device_method_response: Option<CloudToDeviceMethodResult>,
}

/// Why a device's part failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceJobError {
    /// `code`: a machine-readable error code, e.g. `JobExpired`.
    pub code: String,
    /// `description`: a human-readable account of the failure.
    pub description: String,
}

/// One record of `SELECT * FROM devices.jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJob {
    /// `deviceId`: the device the record belongs to.
    pub device_id: String,
    /// `jobId`: the job the record belongs to.
    pub job_id: String,
    /// `jobType`: what the job does.
    pub job_type: JobType,
    /// `status`: where this device's part stands.
    pub status: DeviceJobStatus,
    /// `startTimeUtc`: when this device's part started (`0001-01-01T00:00:00Z` until then).
    #[serde(default)]
    pub start_time_utc: Option<String>,
    /// `endTimeUtc`: when this device's part ended (`0001-01-01T00:00:00Z` until then).
    #[serde(default)]
    pub end_time_utc: Option<String>,
    /// `createdDateTimeUtc`: when the record was created.
    #[serde(default)]
    pub created_date_time_utc: Option<String>,
    /// `lastUpdatedDateTimeUtc`: when the record last changed.
    #[serde(default)]
    pub last_updated_date_time_utc: Option<String>,
    /// `outcome`: what this device's part produced.
    #[serde(default)]
    pub outcome: Option<DeviceJobOutcome>,
    /// `error`: why this device's part failed; absent unless it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeviceJobError>,
    /// Members this client does not know.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tutorials_job_request_serialises_as_node_sends_it() {
        let request = JobRequest {
            job_id: "j".into(),
            job_type: JobType::ScheduleDeviceMethod,
            query_condition: "deviceId IN ['myDeviceId']".into(),
            cloud_to_device_method: Some(CloudToDeviceMethod {
                method_name: "lockDoor".into(),
                payload: Value::Null,
                response_timeout_in_seconds: Some(15),
                connect_timeout_in_seconds: None,
            }),
            update_twin: None,
            start_time: None,
            max_execution_time_in_seconds: Some(300),
        };
        assert_eq!(
            serde_json::to_value(&request).expect("json"),
            serde_json::json!({"jobId":"j","type":"scheduleDeviceMethod","queryCondition":"deviceId IN ['myDeviceId']",
                "cloudToDeviceMethod":{"methodName":"lockDoor","payload":null,"responseTimeoutInSeconds":15},
                "maxExecutionTimeInSeconds":300})
        );
        let job: JobResponse =
            serde_json::from_str(r#"{"jobId":"j","type":"export","status":"enqueued"}"#).expect("parse");
        assert_eq!((job.job_type, job.status), (JobType::Unknown, JobStatus::Enqueued));
    }

    #[test]
    fn names_read_as_the_sdks_write_them() {
        assert_eq!(JobType::parse("ScheduleDeviceMethod"), Some(JobType::ScheduleDeviceMethod));
        assert_eq!(JobType::parse("scheduleTwinUpdate"), Some(JobType::ScheduleUpdateTwin));
        assert_eq!(JobType::parse("export"), None);
        assert_eq!(JobStatus::parse("Completed"), Some(JobStatus::Completed));
        assert_eq!(JobStatus::parse("canceled"), Some(JobStatus::Cancelled));
        assert_eq!(serde_json::to_value(JobType::ScheduleUpdateTwin).expect("json"), "scheduleUpdateTwin");
        assert_eq!(serde_json::to_value(DeviceJobStatus::Canceled).expect("json"), DeviceJobStatus::Canceled.as_str());
    }
}
