//! Checking a `PUT /jobs/v2/{jobId}` body (`JobRequest`, wire-spec C.6.1) so that everything a job will need
//! is known good at creation: a bad request is a 400 now, never a job that fails later.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::{DEFAULT_MAX_EXECUTION_SECS, Job, JobStatus, JobType, MAX_EXECUTION_SECS};
use crate::domain::methods;
use crate::domain::properties::{self, SectionKind};
use crate::domain::query::parse_condition;
use crate::domain::registry::IfMatch;
use crate::domain::twin;
use crate::error::HubError;

/// Longest job id (wire-spec C.6.1: the jobs devguide).
pub const MAX_JOB_ID_LEN: usize = 64;

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

/// The per-device precondition of a twin job (wire-spec D.6): `"*"` or no etag applies to every twin; a
/// concrete etag only to twins that still have it.
pub fn job_etag(update_twin: &Value) -> Result<Option<IfMatch>, HubError> {
    match update_twin.get("etag") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(etag)) => {
            let etag = etag.trim();
            let etag = etag.strip_prefix('"').and_then(|e| e.strip_suffix('"')).unwrap_or(etag);
            match etag {
                "*" => Ok(None),
                "" => Err(invalid("updateTwin.etag must not be empty; use \"*\" to update every twin")),
                etag => Ok(Some(IfMatch::Etag(etag.to_owned()))),
            }
        }
        Some(other) => Err(invalid(format!("updateTwin.etag must be a string, not {other}"))),
    }
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

/// Normalises `cloudToDeviceMethod`: checked as a direct-method call, with the hub's defaults filled in.
fn method_request(value: &Value) -> Result<Value, HubError> {
    let call = methods::parse_call(value).map_err(|e| match e {
        HubError::ArgumentInvalid(text) => invalid(format!("cloudToDeviceMethod: {text}")),
        HubError::ArgumentNull(text) => HubError::ArgumentNull(format!("cloudToDeviceMethod: {text}")),
        other => other,
    })?;
    Ok(json!({
        "methodName": call.name,
        "payload": value.get("payload").cloned().unwrap_or(Value::Null),
        "responseTimeoutInSeconds": call.response_timeout.as_secs(),
        "connectTimeoutInSeconds": call.connect_timeout.as_secs(),
    }))
}

/// Checks `updateTwin`: a twin patch of tags and/or desired properties that the twin rules accept.
fn twin_request(value: &Value) -> Result<(), HubError> {
    let write = twin::parse_twin_write(value).map_err(|e| match e {
        HubError::ArgumentInvalid(text) => invalid(format!("updateTwin: {text}")),
        other => other,
    })?;
    if write.tags.is_none() && write.desired.is_none() {
        return Err(invalid("updateTwin must set tags and/or properties.desired"));
    }
    for (kind, section) in [(SectionKind::Tags, &write.tags), (SectionKind::Desired, &write.desired)] {
        if let Some(Some(patch)) = section {
            let patch = properties::without_section_markers(patch.clone());
            properties::validate(kind, &patch, true)?;
            properties::check_size(kind, &patch)?;
        }
    }
    job_etag(value)?;
    Ok(())
}

/// Reads and checks a job request for the job at `path_id`, created `now`. Decisions on the unconfirmed points
/// (wire-spec C.6.1, E.2, H.44-46): a condition that does not parse is refused here rather than failing the job
/// later (the issue asks for a 400 at create time); a missing or `null` `startTime` means now; a missing
/// `maxExecutionTimeInSeconds` means 3600.
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
    let query_condition = match given(body, "queryCondition") {
        Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
        None | Some(Value::String(_)) => {
            return Err(HubError::ArgumentNull(
                "queryCondition is required, e.g. \"deviceId IN ['device1']\" (or \"*\" for every device)".into(),
            ));
        }
        Some(other) => return Err(invalid(format!("queryCondition must be a string, not {other}"))),
    };
    parse_condition(&query_condition).map_err(|e| invalid(format!("queryCondition: {e}")))?;

    let (method, twin) = (given(body, "cloudToDeviceMethod"), given(body, "updateTwin"));
    let (cloud_to_device_method, update_twin) = match job_type {
        JobType::ScheduleDeviceMethod => {
            if twin.is_some() {
                return Err(invalid("updateTwin is only for scheduleUpdateTwin jobs"));
            }
            let method = method
                .ok_or_else(|| HubError::ArgumentNull("cloudToDeviceMethod is required for method jobs".into()))?;
            (Some(method_request(method)?), None)
        }
        JobType::ScheduleUpdateTwin => {
            if method.is_some() {
                return Err(invalid("cloudToDeviceMethod is only for scheduleDeviceMethod jobs"));
            }
            let twin = twin.ok_or_else(|| HubError::ArgumentNull("updateTwin is required for twin jobs".into()))?;
            twin_request(twin)?;
            (None, Some(twin.clone()))
        }
    };

    let start = match given(body, "startTime") {
        None => now,
        Some(Value::String(text)) => parse_time("startTime", text)?,
        Some(other) => return Err(invalid(format!("startTime must be a date and time string, not {other}"))),
    };
    let max_execution_secs = match given(body, "maxExecutionTimeInSeconds") {
        None => DEFAULT_MAX_EXECUTION_SECS,
        Some(value) => value.as_u64().filter(|s| (1..=MAX_EXECUTION_SECS).contains(s)).ok_or_else(|| {
            invalid(format!(
                "maxExecutionTimeInSeconds must be a whole number of seconds from 1 to {MAX_EXECUTION_SECS}, not {value}"
            ))
        })?,
    };
    Ok(Job {
        job_id: path_id.to_owned(),
        job_type,
        query_condition,
        cloud_to_device_method,
        update_twin,
        created: now,
        start,
        max_execution_secs,
        status: JobStatus::Queued,
        running_since: None,
        end: None,
        last_updated: now,
        status_message: None,
        failure_reason: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::jobs::Action;

    fn now() -> Timestamp {
        "2026-11-22T10:00:00Z".parse().expect("time")
    }

    fn method_job(extra: Value) -> Value {
        let mut body = json!({
            "jobId": "j1",
            "type": "scheduleDeviceMethod",
            "cloudToDeviceMethod": {"methodName": "lockDoor", "payload": null, "responseTimeoutInSeconds": 15},
            "startTime": "2026-11-22T10:36:33.590Z",
            "maxExecutionTimeInSeconds": 300,
            "queryCondition": "deviceId IN ['myDeviceId']",
        });
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        body
    }

    #[test]
    fn the_tutorials_requests_are_accepted() {
        let job = parse_request("j1", &method_job(json!({})), now()).expect("method job");
        assert_eq!(job.job_type, JobType::ScheduleDeviceMethod);
        assert_eq!(job.start, "2026-11-22T10:36:33.590Z".parse::<Timestamp>().expect("time"));
        assert_eq!(
            job.cloud_to_device_method,
            Some(
                json!({"methodName": "lockDoor", "payload": null, "responseTimeoutInSeconds": 15, "connectTimeoutInSeconds": 0})
            )
        );
        assert!(matches!(job.action(), Ok(Action::Method(call)) if call.name == "lockDoor"));

        let twin = json!({
            "jobId": "j2", "type": "scheduleUpdateTwin",
            "updateTwin": {"etag": "*", "properties": {"desired": {"building": "43", "floor": 3}}},
            "startTime": null, "queryCondition": "deviceId IN ['myDeviceId']",
        });
        let job = parse_request("j2", &twin, now()).expect("twin job");
        assert_eq!((job.start, job.max_execution_secs), (now(), DEFAULT_MAX_EXECUTION_SECS));
        match job.action().expect("action") {
            Action::Twin { write, if_match } => {
                assert_eq!(if_match, None);
                assert!(write.desired.is_some() && write.tags.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn python_times_and_star_conditions_are_read() {
        let job = parse_request(
            "j1",
            &method_job(json!({"startTime": "2026-11-22T11:00:00.123456Z", "queryCondition": "*"})),
            now(),
        )
        .expect("valid");
        assert_eq!(job.start.to_string(), "2026-11-22T11:00:00.123456Z");
        let naive = parse_request("j1", &method_job(json!({"startTime": "2026-11-22T11:00:00"})), now()).expect("ok");
        assert_eq!(naive.start.to_string(), "2026-11-22T11:00:00Z");
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("j1", json!({"type": "export"}), "not supported"),
            ("j1", json!({"type": null}), "type is required"),
            ("j1", json!({"jobId": "other"}), "does not match"),
            ("j1", json!({"queryCondition": "deviceId IN ["}), "queryCondition: SQL query parse failed"),
            ("j1", json!({"queryCondition": "SELECT * FROM devices"}), "queryCondition"),
            ("j1", json!({"queryCondition": ""}), "queryCondition is required"),
            ("j1", json!({"queryCondition": 3}), "must be a string"),
            ("j1", json!({"cloudToDeviceMethod": null}), "cloudToDeviceMethod is required"),
            ("j1", json!({"cloudToDeviceMethod": {"methodName": ""}}), "methodName"),
            (
                "j1",
                json!({"cloudToDeviceMethod": {"methodName": "m", "responseTimeoutInSeconds": 1}}),
                "responseTimeoutInSeconds",
            ),
            (
                "j1",
                json!({"cloudToDeviceMethod": {"methodName": "m", "connectTimeoutInSeconds": 301}}),
                "connectTimeoutInSeconds",
            ),
            ("j1", json!({"updateTwin": {"tags": {}}}), "only for scheduleUpdateTwin"),
            ("j1", json!({"startTime": "tomorrow"}), "not an ISO 8601"),
            ("j1", json!({"startTime": 5}), "startTime must be"),
            ("j1", json!({"maxExecutionTimeInSeconds": 0}), "maxExecutionTimeInSeconds"),
            ("j1", json!({"maxExecutionTimeInSeconds": "60"}), "maxExecutionTimeInSeconds"),
            ("job_1", json!({"jobId": "job_1"}), "ASCII letters, digits and '-'"),
        ];
        for (id, extra, expected) in cases {
            let err = parse_request(id, &method_job(extra.clone()), now()).expect_err(&extra.to_string());
            assert!(err.to_string().contains(expected), "{extra}: {err}");
            assert_eq!(err.wire().status, 400, "{extra}");
        }
        let long = "a".repeat(65);
        assert!(parse_request(&long, &method_job(json!({"jobId": long.clone()})), now()).is_err());
        let twin = |update: Value| json!({"type": "scheduleUpdateTwin", "queryCondition": "*", "updateTwin": update});
        for (update, expected) in [
            (json!(null), "updateTwin is required"),
            (json!({"etag": "*"}), "must set tags"),
            (json!({"etag": 5, "tags": {"a": 1}}), "etag must be a string"),
            (json!({"tags": {"bad key": 1}}), "must not contain"),
            (json!({"properties": {"reported": {"x": 1}}}), "Reported properties"),
            (json!({"tags": "x"}), "tags must be a JSON object"),
        ] {
            let err = parse_request("j", &twin(update.clone()), now()).expect_err(&update.to_string());
            assert!(err.to_string().contains(expected), "{update}: {err}");
        }
    }

    #[test]
    fn a_concrete_etag_is_a_per_device_precondition() {
        assert_eq!(
            job_etag(&json!({"etag": "\"AAAAAAAAAAI=\""})).expect("ok"),
            Some(IfMatch::Etag("AAAAAAAAAAI=".into()))
        );
        assert_eq!(job_etag(&json!({"etag": "*"})).expect("ok"), None);
        assert_eq!(job_etag(&json!({})).expect("ok"), None);
    }
}
