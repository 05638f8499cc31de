//! Device records of jobs (`devices.jobs`, wire-spec E.3) as query documents.

use std::borrow::Cow;

use super::DeviceJob;
use crate::clock::format_optional_time;
use crate::domain::query::eval::{Document, Val};

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
    use crate::domain::jobs::tests::{lock_door_job, t};
    use crate::domain::jobs::{DeviceJobError, MethodOutcome};
    use crate::domain::query::eval::matches;
    use crate::domain::query::parse_query;
    use serde_json::json;

    #[test]
    fn records_resolve_for_queries() {
        let job = lock_door_job("job-1", "*");
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
        assert!(select(&format!("{base}endTimeUtc = '0001-01-01T00:00:00Z'"), &DeviceJob::pending(&job, "d3", t(1))));
    }
}
