//! Jobs v2 on the wire (wire-spec C.6, E.3): reading a `PUT /jobs/v2/{jobId}` body into a typed job, so a bad
//! request is a 400 at once and never a job that fails later, and rendering jobs (`JobResponse`) and device
//! records (`devices.jobs`) with the definitions in `iothub_proto::jobs` that the Rust clients read.
//!
//! Decision on C.6.2's key-name question: the job object carries the swagger's `JobResponse` members only
//! (`type`, `createdTime`, `startTime`, `endTime`), not the `jobType`/`...Utc` aliases; every target SDK reads
//! these, and a superset would make the emulator's answers differ from the documented shape.

use iothub_proto::jobs as proto;
use iothub_proto::methods::{CloudToDeviceMethod, CloudToDeviceMethodResult};
use iothub_proto::twin::{Twin, TwinProperties};
use jiff::Timestamp;
use serde_json::{Map, Value};

use super::{methods, twin};
use crate::clock::{format_optional_time, format_time};
use crate::domain::jobs::{
    Action, Condition, DeviceJob, Job, JobType, NewJob, Statistics, TwinUpdate, validate_job_id,
};
use crate::domain::methods::MethodCall;
use crate::domain::twin::Object;
use crate::domain::twin::json::object_to_json;
use crate::error::HubError;
use crate::hub::JobSnapshot;

fn invalid(text: impl Into<String>) -> HubError {
    HubError::ArgumentInvalid(text.into())
}

/// A member that may be absent or `null`.
fn given<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|v| !v.is_null())
}

/// A time as the SDKs send it: RFC 3339 (`2026-11-22T10:36:33.590Z`, Python's `...33.590000Z`), or without an
/// offset, then read as UTC.
fn parse_time(name: &str, text: &str) -> Result<Timestamp, HubError> {
    let text = text.trim();
    text.parse::<Timestamp>()
        .or_else(|_| {
            text.parse::<jiff::civil::DateTime>()
                .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
                .map(|z| z.timestamp())
        })
        .map_err(|_| invalid(format!("{name} '{text}' is not an ISO 8601 date and time, e.g. 2026-01-01T00:00:00Z")))
}

/// `cloudToDeviceMethod`: checked as a direct-method call, its errors named after the member.
fn method_request(value: &Value) -> Result<MethodCall, HubError> {
    methods::parse_call_value(value).map_err(|e| match e {
        HubError::ArgumentInvalid(text) => invalid(format!("cloudToDeviceMethod: {text}")),
        HubError::ArgumentNull(text) => HubError::ArgumentNull(format!("cloudToDeviceMethod: {text}")),
        other => other,
    })
}

/// `updateTwin`: a twin patch of tags and/or desired properties, and its etag.
fn twin_request(value: &Value) -> Result<TwinUpdate, HubError> {
    let write = twin::parse_write(value).map_err(|e| match e {
        HubError::ArgumentInvalid(text) => invalid(format!("updateTwin: {text}")),
        other => other,
    })?;
    let etag = match value.get("etag") {
        None | Some(Value::Null) => None,
        Some(Value::String(etag)) => Some(etag.clone()),
        Some(other) => return Err(invalid(format!("updateTwin.etag must be a string, not {other}"))),
    };
    TwinUpdate::new(write, etag)
}

/// Reads and checks a job request for the job at `path_id`, created `now`.
pub fn parse_request(path_id: &str, body: &Value, now: Timestamp) -> Result<Job, HubError> {
    validate_job_id(path_id)?;
    let Value::Object(body) = body else { return Err(invalid("The job request must be a JSON object")) };
    match given(body, "jobId") {
        None => {}
        Some(Value::String(id)) if id == path_id => {}
        Some(other) => {
            return Err(invalid(format!(
                "jobId {other} in the body does not match the job id '{path_id}' in the path"
            )));
        }
    }
    let job_type = match given(body, "type") {
        None => {
            return Err(HubError::ArgumentNull("type is required: scheduleDeviceMethod or scheduleUpdateTwin".into()));
        }
        Some(Value::String(text)) => JobType::parse(text).ok_or_else(|| {
            invalid(format!("Job type '{text}' is not supported: use scheduleDeviceMethod or scheduleUpdateTwin"))
        })?,
        Some(other) => return Err(invalid(format!("type must be a string, not {other}"))),
    };
    let condition = match given(body, "queryCondition") {
        Some(Value::String(text)) if !text.trim().is_empty() => Condition::parse(text)?,
        None | Some(Value::String(_)) => {
            return Err(HubError::ArgumentNull(
                "queryCondition is required, e.g. \"deviceId IN ['device1']\" (or \"*\" for every device)".into(),
            ));
        }
        Some(other) => return Err(invalid(format!("queryCondition must be a string, not {other}"))),
    };
    let (method, update) = (given(body, "cloudToDeviceMethod"), given(body, "updateTwin"));
    let action = match job_type {
        JobType::ScheduleDeviceMethod => {
            if update.is_some() {
                return Err(invalid("updateTwin is only for scheduleUpdateTwin jobs"));
            }
            let method = method
                .ok_or_else(|| HubError::ArgumentNull("cloudToDeviceMethod is required for method jobs".into()))?;
            Action::Method(method_request(method)?)
        }
        _ => {
            if method.is_some() {
                return Err(invalid("cloudToDeviceMethod is only for scheduleDeviceMethod jobs"));
            }
            let update = update.ok_or_else(|| HubError::ArgumentNull("updateTwin is required for twin jobs".into()))?;
            Action::Twin(twin_request(update)?)
        }
    };
    let start = match given(body, "startTime") {
        None => None,
        Some(Value::String(text)) => Some(parse_time("startTime", text)?),
        Some(other) => return Err(invalid(format!("startTime must be a date and time string, not {other}"))),
    };
    let max_execution_secs = match given(body, "maxExecutionTimeInSeconds") {
        None => None,
        Some(value) => Some(value.as_u64().ok_or_else(|| {
            invalid(format!("maxExecutionTimeInSeconds must be a whole number of seconds, not {value}"))
        })?),
    };
    Job::create(path_id, NewJob { condition, action, start, max_execution_secs }, now)
}

/// The payload of a call as JSON (it was JSON text when the call was read).
fn payload_json(call: &MethodCall) -> Value {
    serde_json::from_str(&call.payload).unwrap_or(Value::Null)
}

/// `cloudToDeviceMethod` of a method job, with the hub's defaults filled in.
fn method_document(call: &MethodCall) -> CloudToDeviceMethod {
    CloudToDeviceMethod {
        method_name: call.name.clone(),
        payload: payload_json(call),
        response_timeout_in_seconds: Some(call.response_timeout.as_secs()),
        connect_timeout_in_seconds: Some(call.connect_timeout.as_secs()),
    }
}

/// A section of a twin update as JSON (a cleared section shows as `{}`).
fn section_json(section: &Option<Option<Object>>) -> Option<Map<String, Value>> {
    section.as_ref().map(|patch| patch.as_ref().map(object_to_json).unwrap_or_default())
}

/// `updateTwin` of a twin job: its etag, tags and desired properties.
fn twin_update_document(update: &TwinUpdate) -> Twin {
    Twin {
        etag: update.etag.clone(),
        tags: section_json(&update.write.tags),
        properties: section_json(&update.write.desired)
            .map(|desired| TwinProperties { desired: Some(desired), reported: None }),
        ..Twin::default()
    }
}

/// The job object of a job as it is now.
pub fn document(snapshot: &JobSnapshot) -> proto::JobResponse {
    job_document(&snapshot.job, &snapshot.stats)
}

/// The job object returned by create, get, cancel and the job query.
pub fn job_document(job: &Job, stats: &Statistics) -> proto::JobResponse {
    let (cloud_to_device_method, update_twin) = match &job.action {
        Action::Method(call) => (Some(method_document(call)), None),
        Action::Twin(update) => (None, Some(twin_update_document(update))),
    };
    proto::JobResponse {
        job_id: job.job_id.clone(),
        query_condition: Some(job.condition.text().to_owned()),
        created_time: Some(format_time(job.created)),
        start_time: Some(format_time(job.start)),
        end_time: job.end.map(format_time),
        max_execution_time_in_seconds: Some(job.max_execution_secs),
        job_type: job.job_type(),
        cloud_to_device_method,
        update_twin,
        status: job.status,
        status_message: job.status_message.clone(),
        failure_reason: job.failure_reason.clone(),
        device_job_statistics: Some(proto::DeviceJobStatistics {
            device_count: stats.device_count,
            failed_count: stats.failed,
            succeeded_count: stats.succeeded,
            running_count: stats.running,
            pending_count: stats.pending,
        }),
    }
}

/// A device record as `SELECT * FROM devices.jobs` returns it. Times not reached yet read as the hub's
/// "never" (`0001-01-01T00:00:00Z`); twin jobs have `outcome.deviceMethodResponse: null` (the docs' example).
pub fn device_job_document(record: &DeviceJob) -> proto::DeviceJob {
    proto::DeviceJob {
        device_id: record.device_id.clone(),
        job_id: record.job_id.clone(),
        job_type: record.job_type,
        status: record.status,
        start_time_utc: Some(format_optional_time(record.started)),
        end_time_utc: Some(format_optional_time(record.ended)),
        created_date_time_utc: Some(format_time(record.created)),
        last_updated_date_time_utc: Some(format_time(record.last_updated)),
        outcome: Some(proto::DeviceJobOutcome {
            device_method_response: record
                .outcome
                .as_ref()
                .map(|o| CloudToDeviceMethodResult { status: o.status, payload: o.payload.clone() }),
        }),
        error: record
            .error
            .as_ref()
            .map(|e| proto::DeviceJobError { code: e.code.clone(), description: e.description.clone() }),
        other: Map::new(),
    }
}

#[cfg(test)]
mod tests;
