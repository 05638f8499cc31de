//! The JSON shapes of jobs (`JobResponse`, wire-spec C.6.2) and of device records (`devices.jobs`, E.3), and
//! device records as query documents.
//!
//! Decision on C.6.2's key-name question: the job object carries the swagger's `JobResponse` members only
//! (`type`, `createdTime`, `startTime`, `endTime`), not the `jobType`/`...Utc` aliases; every target SDK reads
//! these, and a superset would make the emulator's answers differ from the documented shape.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use super::{DeviceJob, Job, Statistics};
use crate::clock::{format_optional_time, format_time};
use crate::domain::query::eval::{Document, Val};

/// The job object returned by create, get, cancel and the job query.
pub fn job_document(job: &Job, stats: &Statistics) -> Value {
    let mut doc = Map::new();
    doc.insert("jobId".into(), json!(job.job_id));
    doc.insert("queryCondition".into(), json!(job.query_condition));
    doc.insert("createdTime".into(), json!(format_time(job.created)));
    doc.insert("startTime".into(), json!(format_time(job.start)));
    if let Some(end) = job.end {
        doc.insert("endTime".into(), json!(format_time(end)));
    }
    doc.insert("maxExecutionTimeInSeconds".into(), json!(job.max_execution_secs));
    doc.insert("type".into(), json!(job.job_type.as_str()));
    if let Some(method) = &job.cloud_to_device_method {
        doc.insert("cloudToDeviceMethod".into(), method.clone());
    }
    if let Some(update) = &job.update_twin {
        doc.insert("updateTwin".into(), update.clone());
    }
    doc.insert("status".into(), json!(job.status.as_str()));
    if let Some(reason) = &job.failure_reason {
        doc.insert("failureReason".into(), json!(reason));
    }
    if let Some(message) = &job.status_message {
        doc.insert("statusMessage".into(), json!(message));
    }
    doc.insert(
        "deviceJobStatistics".into(),
        json!({
            "deviceCount": stats.device_count,
            "failedCount": stats.failed,
            "succeededCount": stats.succeeded,
            "runningCount": stats.running,
            "pendingCount": stats.pending,
        }),
    );
    Value::Object(doc)
}

/// A device record as `SELECT * FROM devices.jobs` returns it. Times not reached yet read as the hub's
/// "never" (`0001-01-01T00:00:00Z`); twin jobs have `outcome.deviceMethodResponse: null` (the docs' example).
pub fn device_job_document(record: &DeviceJob) -> Value {
    let mut doc = json!({
        "deviceId": record.device_id,
        "jobId": record.job_id,
        "jobType": record.job_type.as_str(),
        "status": record.status.as_str(),
        "startTimeUtc": format_optional_time(record.started),
        "endTimeUtc": format_optional_time(record.ended),
        "createdDateTimeUtc": format_time(record.created),
        "lastUpdatedDateTimeUtc": format_time(record.last_updated),
        "outcome": {"deviceMethodResponse": record.outcome.as_ref().map(|o| json!({"status": o.status, "payload": o.payload}))},
    });
    if let (Some(error), Value::Object(map)) = (&record.error, &mut doc) {
        map.insert("error".into(), json!({"code": error.code, "description": error.description}));
    }
    doc
}

/// A device record seen by the query engine. Root members match case-insensitively; `createdTimeUtc` is read
/// as `createdDateTimeUtc` because the docs' own example filters on it (wire-spec F.2, H.52).
pub struct DeviceJobView<'a>(pub &'a DeviceJob);

fn text(value: &str) -> Val<'_> {
    Val::Str(Cow::Borrowed(value))
}

fn leaf<'a>(value: Val<'a>, rest: &[String]) -> Val<'a> {
    if rest.is_empty() { value } else { Val::Undefined }
}

impl Document for DeviceJobView<'_> {
    fn resolve(&self, path: &[String]) -> Val<'_> {
        let record = self.0;
        let Some((first, rest)) = path.split_first() else { return Val::Undefined };
        let time = |t| Val::Str(Cow::Owned(format_optional_time(t)));
        match first.to_ascii_lowercase().as_str() {
            "deviceid" => leaf(text(&record.device_id), rest),
            "jobid" => leaf(text(&record.job_id), rest),
            "jobtype" => leaf(text(record.job_type.as_str()), rest),
            "status" => leaf(text(record.status.as_str()), rest),
            "starttimeutc" => leaf(time(record.started), rest),
            "endtimeutc" => leaf(time(record.ended), rest),
            "createddatetimeutc" | "createdtimeutc" => leaf(time(Some(record.created)), rest),
            "lastupdateddatetimeutc" => leaf(time(Some(record.last_updated)), rest),
            "outcome" => match rest.split_first() {
                Some((name, rest)) if name.eq_ignore_ascii_case("deviceMethodResponse") => match &record.outcome {
                    None => leaf(Val::Null, rest),
                    Some(outcome) => match rest.split_first() {
                        None => Val::Undefined,
                        Some((field, rest)) if field == "status" => leaf(Val::Num(outcome.status as f64), rest),
                        Some((field, rest)) if field == "payload" => Val::walk(&outcome.payload, rest),
                        Some(_) => Val::Undefined,
                    },
                },
                _ => Val::Undefined,
            },
            "error" => match (&record.error, rest) {
                (Some(error), [field]) if field == "code" => text(&error.code),
                (Some(error), [field]) if field == "description" => text(&error.description),
                _ => Val::Undefined,
            },
            _ => Val::Undefined,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::jobs::{DeviceJobError, MethodOutcome, request};
    use crate::domain::query::eval::matches;
    use crate::domain::query::parse_query;

    fn t(n: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + n).expect("time")
    }

    fn job() -> Job {
        let body = json!({
            "type": "scheduleDeviceMethod", "queryCondition": "*",
            "cloudToDeviceMethod": {"methodName": "lockDoor"},
        });
        request::parse_request("job-1", &body, t(0)).expect("valid")
    }

    #[test]
    fn a_new_job_reads_as_queued_with_the_request_echoed() {
        let doc = job_document(&job(), &Statistics::default());
        assert_eq!(doc["status"], "queued");
        assert_eq!(doc["type"], "scheduleDeviceMethod");
        assert_eq!(doc["cloudToDeviceMethod"]["responseTimeoutInSeconds"], 30);
        assert_eq!(doc["maxExecutionTimeInSeconds"], 3600);
        assert!(doc.get("endTime").is_none() && doc.get("failureReason").is_none());
        assert_eq!(
            doc["deviceJobStatistics"],
            json!({"deviceCount": 0, "failedCount": 0, "succeededCount": 0, "runningCount": 0, "pendingCount": 0})
        );
    }

    #[test]
    fn records_resolve_for_queries() {
        let job = job();
        let mut answered = DeviceJob::pending(&job, "d1", t(1));
        answered.begin(t(2));
        answered.complete(t(3), Some(MethodOutcome { status: 200, payload: json!({"locked": true}) }));
        let mut offline = DeviceJob::pending(&job, "d2", t(1));
        offline.fail(t(2), DeviceJobError { code: "DeviceNotOnline".into(), description: "offline".into() });
        let select = |text: &str, record: &DeviceJob| {
            let query = parse_query(text).expect("parse");
            matches(query.condition.as_ref().expect("where"), &DeviceJobView(record))
        };
        let base = "SELECT * FROM devices.jobs WHERE ";
        assert!(select(&format!("{base}devices.jobs.status = 'completed'"), &answered));
        assert!(select(&format!("{base}outcome.deviceMethodResponse.payload.locked = true"), &answered));
        assert!(select(&format!("{base}devices.jobs.jobType = 'scheduleDeviceMethod' AND deviceId = 'd1'"), &answered));
        assert!(select(&format!("{base}devices.jobs.createdTimeUtc > '2016-09-01'"), &answered));
        assert!(select(&format!("{base}error.code = 'DeviceNotOnline'"), &offline));
        assert!(!select(&format!("{base}error.code = 'DeviceNotOnline'"), &answered));
        let doc = device_job_document(&offline);
        assert_eq!(doc["outcome"], json!({"deviceMethodResponse": null}));
        assert_eq!(doc["error"]["code"], "DeviceNotOnline");
        assert_eq!(device_job_document(&answered)["outcome"]["deviceMethodResponse"]["status"], 200);
        assert_eq!(device_job_document(&DeviceJob::pending(&job, "d3", t(1)))["endTimeUtc"], "0001-01-01T00:00:00Z");
    }
}
