use serde_json::json;

use super::*;
use crate::domain::jobs::{DeviceJobError, MethodOutcome};

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
    assert_eq!(job.job_type(), JobType::ScheduleDeviceMethod);
    assert_eq!(job.start, "2026-11-22T10:36:33.590Z".parse::<Timestamp>().expect("time"));
    assert!(matches!(&job.action, Action::Method(call) if call.name == "lockDoor" && call.payload == "null"));
    assert_eq!(
        serde_json::to_value(job_document(&job, &Statistics::default()).cloud_to_device_method).expect("json"),
        json!({"methodName": "lockDoor", "payload": null, "responseTimeoutInSeconds": 15, "connectTimeoutInSeconds": 0})
    );

    let twin = json!({
        "jobId": "j2", "type": "scheduleUpdateTwin",
        "updateTwin": {"etag": "*", "properties": {"desired": {"building": "43", "floor": 3}}},
        "startTime": null, "queryCondition": "deviceId IN ['myDeviceId']",
    });
    let job = parse_request("j2", &twin, now()).expect("twin job");
    assert_eq!((job.start, job.max_execution_secs), (now(), crate::domain::jobs::DEFAULT_MAX_EXECUTION_SECS));
    match &job.action {
        Action::Twin(update) => {
            assert_eq!(update.if_match().expect("etag"), None);
            assert!(update.write.desired.is_some() && update.write.tags.is_none());
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
    assert_eq!(job.condition.expr(), Ok(None));
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
fn jobs_render_in_the_hubs_member_order() {
    let body =
        method_job(json!({"cloudToDeviceMethod": {"methodName": "lockDoor", "payload": {"zulu": 1, "alpha": 2}}}));
    let job = parse_request("j1", &body, now()).expect("job");
    let text = serde_json::to_string(&job_document(&job, &Statistics::default())).expect("json");
    assert_eq!(
        text,
        r#"{"jobId":"j1","queryCondition":"deviceId IN ['myDeviceId']","createdTime":"2026-11-22T10:00:00.0000000Z","startTime":"2026-11-22T10:36:33.5900000Z","maxExecutionTimeInSeconds":300,"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"zulu":1,"alpha":2},"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0},"status":"queued","deviceJobStatistics":{"deviceCount":0,"failedCount":0,"succeededCount":0,"runningCount":0,"pendingCount":0}}"#
    );
}

#[test]
fn device_records_render_as_the_docs_show_them() {
    let job = parse_request("j1", &method_job(json!({})), now()).expect("job");
    let mut answered = DeviceJob::pending(&job, "d1", now());
    answered.begin(now());
    answered.complete(now(), Some(MethodOutcome { status: 200, payload: json!({"locked": true, "at": 1}) }));
    let doc = serde_json::to_value(device_job_document(&answered)).expect("json");
    assert_eq!(doc["outcome"], json!({"deviceMethodResponse": {"status": 200, "payload": {"locked": true, "at": 1}}}));
    assert!(doc.get("error").is_none());
    let mut offline = DeviceJob::pending(&job, "d2", now());
    offline.fail(now(), DeviceJobError { code: "DeviceNotOnline".into(), description: "offline".into() });
    let doc = serde_json::to_value(device_job_document(&offline)).expect("json");
    assert_eq!(doc["outcome"], json!({"deviceMethodResponse": null}));
    assert_eq!(doc["error"]["code"], "DeviceNotOnline");
    let pending = serde_json::to_value(device_job_document(&DeviceJob::pending(&job, "d3", now()))).expect("json");
    assert_eq!(pending["endTimeUtc"], "0001-01-01T00:00:00Z");
    let keys: Vec<&String> = pending.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "deviceId",
            "jobId",
            "jobType",
            "status",
            "startTimeUtc",
            "endTimeUtc",
            "createdDateTimeUtc",
            "lastUpdatedDateTimeUtc",
            "outcome"
        ]
    );
}
