//! Jobs driven through the hub API under paused tokio time: every state transition, per-device outcomes,
//! statistics at every poll, cancel at each stage, maximum execution time, limits, retention and restart
//! recovery. Simulated devices sit where a transport would (presence + outbound channel), so minutes of job
//! time run in milliseconds.

use std::sync::Arc;
use std::time::Duration;

use iothub_emulator::HubError;
use iothub_emulator::auth::Policies;
use iothub_emulator::clock::{SharedClock, TokioClock};
use iothub_emulator::domain::methods::MethodResponse;
use iothub_emulator::domain::registry::DeviceSpec;
use iothub_emulator::hub::{Hub, JobSettings, JobSnapshot, Subscriptions, ToDevice};
use iothub_emulator::store::{Loaded, Store};
use iothub_emulator::wire;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn epoch() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().expect("time")
}

fn hub_with(settings: JobSettings, loaded: Loaded) -> Arc<Hub> {
    let clock: SharedClock = Arc::new(TokioClock::starting_at(epoch()));
    let hub = Arc::new(
        Hub::new("localhost".into(), Policies::generate(), clock, Store::memory(), loaded).with_job_settings(settings),
    );
    hub.start();
    hub
}

async fn hub_with_devices(ids: &[&str]) -> Arc<Hub> {
    hub_with_settings(JobSettings::default(), ids).await
}

async fn hub_with_settings(settings: JobSettings, ids: &[&str]) -> Arc<Hub> {
    let hub = hub_with(settings, Loaded::default());
    for id in ids {
        hub.put_device(id, &DeviceSpec::default(), None).await.expect("device");
    }
    hub
}

/// How a simulated device answers method calls.
#[derive(Clone, Copy)]
enum Answer {
    /// With this status after this delay.
    After(Duration, i64),
    /// Never.
    Silent,
}

/// Connects a simulated device subscribed to methods and desired changes. Desired notifications are sent to
/// the returned receiver.
fn connect(hub: &Arc<Hub>, id: &str, answer: Answer) -> mpsc::UnboundedReceiver<Value> {
    let mut connected = hub.device_connected(id, false);
    let subscriptions = Subscriptions { methods: true, desired: true, twin_responses: true, ..Default::default() };
    // An in-memory hub stores nothing, so the returned future has nothing to wait for.
    drop(hub.set_subscriptions(id, connected.lease.id, subscriptions, false));
    let (desired_tx, desired_rx) = mpsc::unbounded_channel();
    let (hub, id) = (hub.clone(), id.to_owned());
    tokio::spawn(async move {
        while let Some(message) = connected.outbound.recv().await {
            match message {
                ToDevice::MethodRequest { rid, name, payload } => {
                    let Answer::After(delay, status) = answer else { continue };
                    let (hub, id) = (hub.clone(), id.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let payload = json!({"method": name, "got": serde_json::from_str::<Value>(&payload).ok()});
                        hub.complete_method(&id, rid, MethodResponse { status, payload });
                    });
                }
                ToDevice::DesiredChanged(notification) => {
                    let body = wire::twin::desired_notification(&notification);
                    let _ = desired_tx.send(serde_json::from_str(&body).expect("JSON"));
                }
                ToDevice::Message(_) => {}
            }
        }
    });
    desired_rx
}

/// `PUT /jobs/v2/{id}` as the endpoint does it: the request read by the wire layer, the job document answered.
async fn create_job(hub: &Arc<Hub>, id: &str, body: &Value) -> Result<Value, HubError> {
    let job = wire::jobs::parse_request(id, body, hub.clock().now())?;
    hub.create_job(job).await.map(|job| document(&job))
}

/// `GET /jobs/v2/{id}`.
fn get_job(hub: &Hub, id: &str) -> Result<Value, HubError> {
    hub.get_job(id).map(|job| document(&job))
}

/// `POST /jobs/v2/{id}/cancel`.
async fn cancel_job(hub: &Hub, id: &str) -> Result<Value, HubError> {
    hub.cancel_job(id).await.map(|job| document(&job))
}

/// `GET /twins/{id}`.
fn twin_of(hub: &Hub, id: &str) -> Result<Value, HubError> {
    hub.twin(id).map(|twin| serde_json::to_value(wire::twin::TwinDocument::of(&twin)).expect("JSON"))
}

fn document(job: &JobSnapshot) -> Value {
    serde_json::to_value(wire::jobs::document(job)).expect("JSON")
}

fn method_job(condition: &str, timeout: u64) -> Value {
    json!({
        "type": "scheduleDeviceMethod",
        "queryCondition": condition,
        "cloudToDeviceMethod": {"methodName": "lockDoor", "payload": {"force": true}, "responseTimeoutInSeconds": timeout},
        "maxExecutionTimeInSeconds": 3600,
    })
}

fn at(offset_secs: i64) -> String {
    epoch().checked_add(jiff::SignedDuration::from_secs(offset_secs)).expect("time").to_string()
}

/// The device records of `job_id`, by device id, read the way users read them.
fn records(hub: &Hub, job_id: &str) -> Vec<Value> {
    let text = format!("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{job_id}'");
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = hub.query(&text, 100, token.as_deref()).expect("query");
        items.extend(page.items.iter().map(|item| serde_json::to_value(wire::query::Item(item)).expect("JSON")));
        match page.continuation {
            Some(next) => token = Some(next),
            None => return items,
        }
    }
}

/// Checks that the job's statistics are exactly the counts of its records.
fn assert_statistics_agree(hub: &Hub, job_id: &str) -> Value {
    let job = get_job(hub, job_id).expect("job");
    let records = records(hub, job_id);
    let count = |status: &str| records.iter().filter(|r| r["status"] == status).count() as u64;
    let stats = &job["deviceJobStatistics"];
    assert_eq!(stats["deviceCount"], records.len() as u64, "{job}");
    assert_eq!(stats["pendingCount"], count("pending") + count("scheduled"), "{job}");
    assert_eq!(stats["runningCount"], count("running"), "{job}");
    assert_eq!(stats["succeededCount"], count("completed"), "{job}");
    assert_eq!(stats["failedCount"], count("failed"), "{job}");
    job
}

/// Polls every `step` until the job is finished, checking the statistics at every poll.
async fn wait_finished(hub: &Hub, job_id: &str, step: Duration) -> Value {
    for _ in 0..100_000 {
        let job = assert_statistics_agree(hub, job_id);
        if matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
            return job;
        }
        tokio::time::sleep(step).await;
    }
    panic!("job {job_id} never finished");
}

fn record_of<'a>(records: &'a [Value], device: &str) -> &'a Value {
    records.iter().find(|r| r["deviceId"] == device).expect("record")
}

#[tokio::test(start_paused = true)]
async fn a_method_job_records_every_devices_own_outcome() {
    let hub = hub_with_devices(&["answers", "errs", "offline", "silent", "untargeted"]).await;
    connect(&hub, "answers", Answer::After(Duration::from_millis(200), 200));
    connect(&hub, "errs", Answer::After(Duration::from_secs(1), 500));
    connect(&hub, "silent", Answer::Silent);
    connect(&hub, "untargeted", Answer::After(Duration::ZERO, 200));
    let created =
        create_job(&hub, "job-1", &method_job("deviceId IN ['answers', 'errs', 'offline', 'silent', 'gone']", 5))
            .await
            .expect("create");
    assert_eq!(created["status"], "queued");
    assert_eq!(created["deviceJobStatistics"]["deviceCount"], 0);

    let job = wait_finished(&hub, "job-1", Duration::from_millis(100)).await;
    assert_eq!(job["status"], "completed", "a job whose devices failed still completes: {job}");
    assert_eq!(job["deviceJobStatistics"]["deviceCount"], 4, "'gone' is not registered and not a target");
    assert_eq!(job["deviceJobStatistics"]["succeededCount"], 2);
    assert_eq!(job["deviceJobStatistics"]["failedCount"], 2);
    let started: Timestamp = job["startTime"].as_str().expect("start").parse().expect("time");
    let ended: Timestamp = job["endTime"].as_str().expect("end").parse().expect("time");
    let took = ended.duration_since(started).as_secs_f64();
    assert!((5.0..5.5).contains(&took), "the devices ran side by side, bounded by the 5 s timeout: {took}");

    let records = records(&hub, "job-1");
    let answered = record_of(&records, "answers");
    assert_eq!(answered["status"], "completed");
    assert_eq!(answered["jobType"], "scheduleDeviceMethod");
    assert_eq!(answered["outcome"]["deviceMethodResponse"]["status"], 200);
    assert_eq!(answered["outcome"]["deviceMethodResponse"]["payload"]["got"], json!({"force": true}));
    assert!(answered.get("error").is_none());
    let errs = record_of(&records, "errs");
    assert_eq!(errs["status"], "completed", "a device that answers with an error status still completes");
    assert_eq!(errs["outcome"]["deviceMethodResponse"]["status"], 500);
    assert_eq!(record_of(&records, "offline")["error"]["code"], "DeviceNotOnline");
    assert_eq!(record_of(&records, "silent")["error"]["code"], "GatewayTimeout");
    assert_eq!(record_of(&records, "silent")["status"], "failed");
    assert!(records.iter().all(|r| r["endTimeUtc"] != "0001-01-01T00:00:00Z"));
}

#[tokio::test(start_paused = true)]
async fn a_device_deleted_before_its_turn_fails_with_its_own_reason() {
    // One device at a time, and 'a' answers after 2 s: 'b' is deleted while it waits for its turn.
    let hub = hub_with_settings(JobSettings { device_window: 1, ..JobSettings::default() }, &["a", "b"]).await;
    connect(&hub, "a", Answer::After(Duration::from_secs(2), 200));
    connect(&hub, "b", Answer::After(Duration::ZERO, 200));
    create_job(&hub, "del", &method_job("*", 10)).await.expect("create");
    tokio::time::sleep(Duration::from_secs(1)).await;
    hub.delete_device("b", None).await.expect("delete");
    let job = wait_finished(&hub, "del", Duration::from_millis(250)).await;
    assert_eq!(job["status"], "completed");
    let records = records(&hub, "del");
    assert_eq!(record_of(&records, "a")["status"], "completed");
    assert_eq!(record_of(&records, "b")["error"]["code"], "DeviceNotFound");
}

#[tokio::test(start_paused = true)]
async fn a_future_job_is_scheduled_then_runs_at_its_start_time() {
    let hub = hub_with_devices(&["d1"]).await;
    connect(&hub, "d1", Answer::After(Duration::ZERO, 200));
    let mut body = method_job("deviceId = 'd1'", 30);
    body["startTime"] = json!(at(3600));
    let created = create_job(&hub, "later", &body).await.expect("create");
    assert_eq!(created["status"], "queued", "the PUT answers queued even for a future start");
    assert_eq!(created["startTime"], "2030-01-01T01:00:00.0000000Z");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = get_job(&hub, "later").expect("job");
    assert_eq!(waiting["status"], "scheduled");
    assert!(records(&hub, "later").is_empty(), "targets are picked when the job starts");
    tokio::time::sleep(Duration::from_secs(3598)).await;
    assert_eq!(get_job(&hub, "later").expect("job")["status"], "scheduled");
    let job = wait_finished(&hub, "later", Duration::from_millis(100)).await;
    assert_eq!(job["status"], "completed");
    let ended: Timestamp = job["endTime"].as_str().expect("end").parse().expect("time");
    assert!(ended >= epoch().checked_add(jiff::SignedDuration::from_secs(3600)).expect("t"));
}

#[tokio::test(start_paused = true)]
async fn a_start_time_in_the_past_runs_now() {
    let hub = hub_with_devices(&["d1"]).await;
    connect(&hub, "d1", Answer::After(Duration::ZERO, 200));
    let mut body = method_job("*", 30);
    body["startTime"] = json!("2001-01-01T00:00:00Z");
    create_job(&hub, "past", &body).await.expect("create");
    let job = wait_finished(&hub, "past", Duration::from_millis(10)).await;
    assert_eq!(
        (job["status"].as_str(), job["deviceJobStatistics"]["succeededCount"].as_u64()),
        (Some("completed"), Some(1))
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_works_at_every_stage() {
    let hub = hub_with_devices(&["slow1", "slow2", "slow3"]).await;
    for id in ["slow1", "slow2", "slow3"] {
        connect(&hub, id, Answer::After(Duration::from_secs(3), 200));
    }
    // Queued: cancelled before its runner even looked at it.
    let queued = create_job(&hub, "queued", &method_job("*", 30)).await.expect("create");
    assert_eq!(queued["status"], "queued");
    assert_eq!(cancel_job(&hub, "queued").await.expect("cancel")["status"], "cancelled");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(get_job(&hub, "queued").expect("job")["status"], "cancelled");
    assert!(records(&hub, "queued").is_empty(), "a job cancelled while queued never picks targets");

    // Scheduled: nothing ran, nothing will.
    let mut future = method_job("*", 30);
    future["startTime"] = json!(at(600));
    create_job(&hub, "scheduled", &future).await.expect("create");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cancelled = cancel_job(&hub, "scheduled").await.expect("cancel");
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["endTime"].is_string());
    tokio::time::sleep(Duration::from_secs(700)).await;
    assert_eq!(get_job(&hub, "scheduled").expect("job")["status"], "cancelled");
    assert!(records(&hub, "scheduled").is_empty(), "a job cancelled before its start never picks targets");

    // Running with a window of one device: the one in flight finishes, the others are canceled.
    let hub =
        hub_with_settings(JobSettings { device_window: 1, ..JobSettings::default() }, &["slow1", "slow2", "slow3"])
            .await;
    for id in ["slow1", "slow2", "slow3"] {
        connect(&hub, id, Answer::After(Duration::from_secs(3), 200));
    }
    create_job(&hub, "running", &method_job("*", 30)).await.expect("create");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let running = assert_statistics_agree(&hub, "running");
    assert_eq!(running["status"], "running");
    assert_eq!(running["deviceJobStatistics"]["runningCount"], 1);
    let cancelled = cancel_job(&hub, "running").await.expect("cancel");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["deviceJobStatistics"]["runningCount"], 1, "the call in flight may finish");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let job = assert_statistics_agree(&hub, "running");
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["deviceJobStatistics"]["succeededCount"], 1);
    let records = records(&hub, "running");
    assert_eq!(record_of(&records, "slow1")["status"], "completed");
    assert_eq!(record_of(&records, "slow2")["status"], "canceled");
    assert_eq!(record_of(&records, "slow3")["status"], "canceled");

    // Finished: cancelling again changes nothing.
    let again = cancel_job(&hub, "running").await.expect("cancel again");
    assert_eq!(again, job);
    assert!(matches!(cancel_job(&hub, "nope").await, Err(HubError::JobNotFound(_))));
}

#[tokio::test(start_paused = true)]
async fn the_maximum_execution_time_fails_the_devices_not_done() {
    let hub =
        hub_with_settings(JobSettings { device_window: 2, ..JobSettings::default() }, &["s1", "s2", "s3", "s4"]).await;
    for id in ["s1", "s2", "s3", "s4"] {
        connect(&hub, id, Answer::Silent);
    }
    let mut body = method_job("*", 300);
    body["maxExecutionTimeInSeconds"] = json!(10);
    create_job(&hub, "short", &body).await.expect("create");
    let job = wait_finished(&hub, "short", Duration::from_millis(500)).await;
    assert_eq!(job["status"], "failed");
    let reason = job["failureReason"].as_str().expect("reason");
    assert!(reason.contains("maximum execution time of 10 seconds") && reason.contains("4 of 4"), "{reason}");
    let started: Timestamp = job["startTime"].as_str().expect("start").parse().expect("time");
    let ended: Timestamp = job["endTime"].as_str().expect("end").parse().expect("time");
    assert_eq!(ended.duration_since(started).as_secs(), 10, "ended at its deadline, not at the 300 s timeouts");
    for record in records(&hub, "short") {
        assert_eq!(record["status"], "failed");
        assert_eq!(record["error"]["code"], "JobExpired", "{record}");
    }
}

#[tokio::test(start_paused = true)]
async fn devices_run_within_the_window_and_do_not_wait_for_each_other() {
    let ids: Vec<String> = (0..40).map(|i| format!("d{i:02}")).collect();
    for (window, expected_secs) in [(4096, 2), (10, 8)] {
        let hub = hub_with(JobSettings { device_window: window, ..JobSettings::default() }, Loaded::default());
        for id in &ids {
            hub.put_device(id, &DeviceSpec::default(), None).await.expect("device");
            connect(&hub, id, Answer::After(Duration::from_secs(2), 200));
        }
        create_job(&hub, "fan", &method_job("*", 30)).await.expect("create");
        let job = wait_finished(&hub, "fan", Duration::from_millis(100)).await;
        assert_eq!(job["deviceJobStatistics"]["succeededCount"], 40);
        let started: Timestamp = job["startTime"].as_str().expect("start").parse().expect("time");
        let ended: Timestamp = job["endTime"].as_str().expect("end").parse().expect("time");
        assert_eq!(ended.duration_since(started).as_secs(), expected_secs, "window {window}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_twin_job_updates_every_target_like_a_twin_patch() {
    let hub = hub_with_devices(&["t1", "t2", "t3"]).await;
    let mut desired = connect(&hub, "t1", Answer::Silent);
    let before = twin_of(&hub, "t1").expect("twin");
    let body = json!({
        "type": "scheduleUpdateTwin",
        "queryCondition": "deviceId IN ['t1', 't2']",
        "updateTwin": {"etag": "*", "tags": {"site": "lab"}, "properties": {"desired": {"building": "43", "floor": 3}}},
        "startTime": null,
    });
    assert_eq!(create_job(&hub, "twin", &body).await.expect("create")["updateTwin"], body["updateTwin"]);
    let job = wait_finished(&hub, "twin", Duration::from_millis(10)).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["deviceJobStatistics"]["succeededCount"], 2);
    let twin = twin_of(&hub, "t1").expect("twin");
    assert_eq!(twin["properties"]["desired"]["building"], "43");
    assert_eq!(twin["properties"]["desired"]["floor"], 3);
    assert_eq!(twin["tags"]["site"], "lab");
    assert_eq!(twin["version"], before["version"].as_u64().expect("v") + 1);
    assert_eq!(twin["properties"]["desired"]["$version"], 2);
    assert!(twin["properties"]["desired"]["$metadata"]["building"]["$lastUpdated"].is_string());
    let notification = desired.recv().await.expect("desired notification");
    assert_eq!(notification, json!({"building": "43", "floor": 3, "$version": 2}));
    assert!(twin_of(&hub, "t3").expect("twin")["properties"]["desired"].get("building").is_none());
    let record = &records(&hub, "twin")[0];
    assert_eq!(record["jobType"], "scheduleUpdateTwin");
    assert_eq!(record["outcome"], json!({"deviceMethodResponse": null}));

    // A concrete etag is a per-device precondition: t1's twin moved on, t3's did not.
    let t3_etag = twin_of(&hub, "t3").expect("twin")["etag"].as_str().expect("etag").to_owned();
    let body = json!({
        "type": "scheduleUpdateTwin", "queryCondition": "deviceId IN ['t1', 't3']",
        "updateTwin": {"etag": t3_etag, "tags": {"checked": true}},
    });
    create_job(&hub, "etag", &body).await.expect("create");
    wait_finished(&hub, "etag", Duration::from_millis(10)).await;
    let records = records(&hub, "etag");
    assert_eq!(record_of(&records, "t1")["error"]["code"], "PreconditionFailed");
    assert_eq!(record_of(&records, "t3")["status"], "completed");
    assert_eq!(twin_of(&hub, "t3").expect("twin")["tags"]["checked"], true);
}

#[tokio::test(start_paused = true)]
async fn limits_duplicates_and_retention() {
    let hub = hub_with_settings(JobSettings { max_active_jobs: 1, ..JobSettings::default() }, &["d1"]).await;
    let mut future = method_job("*", 30);
    future["startTime"] = json!(at(60));
    create_job(&hub, "first", &future).await.expect("create");
    let err = create_job(&hub, "second", &method_job("*", 30)).await.expect_err("over the limit");
    assert_eq!(err.wire().number, 429004, "{err}");
    let err = create_job(&hub, "first", &method_job("*", 30)).await.expect_err("duplicate");
    assert_eq!(err.wire().number, 409104, "{err}");
    let err = create_job(&hub, "bad", &json!({"type": "scheduleDeviceMethod"})).await.expect_err("bad body");
    assert_eq!(err.wire().status, 400);
    assert!(matches!(get_job(&hub, "bad"), Err(HubError::JobNotFound(_))), "a refused job leaves nothing behind");

    let job = wait_finished(&hub, "first", Duration::from_secs(1)).await;
    assert_eq!(job["status"], "completed");
    create_job(&hub, "second", &method_job("*", 30)).await.expect("a slot is free again");
    wait_finished(&hub, "second", Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_secs(29 * 24 * 3600)).await;
    assert!(get_job(&hub, "first").is_ok(), "kept for 30 days");
    tokio::time::sleep(Duration::from_secs(2 * 24 * 3600)).await;
    assert!(matches!(get_job(&hub, "first"), Err(HubError::JobNotFound(_))), "gone after 30 days");
    assert!(records(&hub, "first").is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_job_query_filters_and_pages() {
    let hub = hub_with_devices(&["d1"]).await;
    for i in 0..5 {
        let mut body = method_job("*", 30);
        body["startTime"] = json!(at(3600));
        create_job(&hub, &format!("m{i}"), &body).await.expect("create");
    }
    let twin = json!({"type": "scheduleUpdateTwin", "queryCondition": "*", "updateTwin": {"tags": {"a": 1}}});
    create_job(&hub, "t0", &twin).await.expect("create");
    wait_finished(&hub, "t0", Duration::from_millis(10)).await;

    let (page, token) = hub
        .query_jobs(Some(iothub_emulator::domain::jobs::JobType::ScheduleDeviceMethod), None, 2, None)
        .expect("query");
    assert_eq!(page.iter().map(|j| json!(j.job.job_id)).collect::<Vec<_>>(), vec![json!("m0"), json!("m1")]);
    let (page, token) = hub
        .query_jobs(Some(iothub_emulator::domain::jobs::JobType::ScheduleDeviceMethod), None, 2, token.as_deref())
        .expect("page 2");
    assert_eq!(page.iter().map(|j| json!(j.job.job_id)).collect::<Vec<_>>(), vec![json!("m2"), json!("m3")]);
    let (page, token) = hub
        .query_jobs(Some(iothub_emulator::domain::jobs::JobType::ScheduleDeviceMethod), None, 2, token.as_deref())
        .expect("page 3");
    assert_eq!((page.len(), token), (1, None), "no continuation on the last page");
    let (completed, _) =
        hub.query_jobs(None, Some(iothub_emulator::domain::jobs::JobStatus::Completed), 100, None).expect("query");
    assert_eq!(completed.iter().map(|j| json!(j.job.job_id)).collect::<Vec<_>>(), vec![json!("t0")]);
    assert!(hub.query_jobs(None, None, 100, Some("not a token!")).is_err());
}

/// A hub on the real wall clock over the data file at `path`, with its jobs resumed.
fn open(path: &std::path::Path, settings: JobSettings) -> Arc<Hub> {
    let (store, loaded) = Store::open(path).expect("store");
    let clock: SharedClock = Arc::new(iothub_emulator::clock::SystemClock);
    let hub =
        Arc::new(Hub::new("localhost".into(), Policies::generate(), clock, store, loaded).with_job_settings(settings));
    hub.start();
    hub
}

/// A hub restarted on the data file an earlier one left while a job was running, with one device call in flight
/// and one device not started yet. Real time and a real file: the store's writer is a thread, which paused time
/// would not wait for.
#[tokio::test]
async fn after_a_restart_in_flight_devices_fail_and_pending_ones_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hub.redb");
    let open = |path: &std::path::Path, settings: JobSettings| {
        let (store, loaded) = Store::open(path).expect("store");
        let clock: SharedClock = Arc::new(iothub_emulator::clock::SystemClock);
        let hub = Arc::new(
            Hub::new("localhost".into(), Policies::generate(), clock, store, loaded).with_job_settings(settings),
        );
        hub.start();
        hub
    };
    let hub = open(&path, JobSettings { device_window: 1, ..JobSettings::default() });
    for id in ["done", "inflight", "waiting"] {
        hub.put_device(id, &DeviceSpec::default(), None).await.expect("device");
    }
    connect(&hub, "done", Answer::After(Duration::ZERO, 200));
    connect(&hub, "inflight", Answer::Silent);
    create_job(&hub, "resume", &method_job("*", 60)).await.expect("create");
    let mut before = Vec::new();
    for _ in 0..200 {
        before = records(&hub, "resume");
        if before.iter().any(|r| r["status"] == "running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(record_of(&before, "done")["status"], "completed");
    assert_eq!(record_of(&before, "inflight")["status"], "running");
    assert_eq!(record_of(&before, "waiting")["status"], "pending");
    hub.close().await;
    drop(hub);

    let restarted = open(&path, JobSettings::default());
    connect(&restarted, "waiting", Answer::After(Duration::ZERO, 201));
    connect(&restarted, "inflight", Answer::After(Duration::ZERO, 200));
    let job = wait_finished(&restarted, "resume", Duration::from_millis(20)).await;
    assert_eq!(job["status"], "completed");
    let after = records(&restarted, "resume");
    assert_eq!(record_of(&after, "done"), record_of(&before, "done"), "finished records read the same");
    assert_eq!(record_of(&after, "inflight")["error"]["code"], "JobInterrupted", "never run twice");
    assert_eq!(record_of(&after, "waiting")["outcome"]["deviceMethodResponse"]["status"], 201, "pending ones resume");
    restarted.close().await;
    drop(restarted);

    // Finished jobs read the same after another restart.
    let again = open(&path, JobSettings::default());
    assert_eq!(get_job(&again, "resume").expect("job"), job);
    assert_eq!(records(&again, "resume"), after);
}

/// A job scheduled for later survives a restart and runs at its time.
#[tokio::test]
async fn a_scheduled_job_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hub.redb");
    let hub = open(&path, JobSettings::default());
    hub.put_device("d1", &DeviceSpec::default(), None).await.expect("device");
    let mut body = method_job("*", 30);
    let start = Timestamp::now().checked_add(jiff::SignedDuration::from_millis(800)).expect("time");
    body["startTime"] = json!(start.to_string());
    create_job(&hub, "later", &body).await.expect("create");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get_job(&hub, "later").expect("job")["status"], "scheduled");
    hub.close().await;
    drop(hub);
    let hub = open(&path, JobSettings::default());
    connect(&hub, "d1", Answer::After(Duration::ZERO, 200));
    assert_eq!(get_job(&hub, "later").expect("job")["status"], "scheduled");
    let job = wait_finished(&hub, "later", Duration::from_millis(20)).await;
    assert_eq!(
        (job["status"].as_str(), job["deviceJobStatistics"]["succeededCount"].as_u64()),
        (Some("completed"), Some(1))
    );
}
