//! Jobs beyond the tutorial: a future start, cancel, offline devices, the maximum execution time, and the job
//! query. Jobs target only this run's devices (`deviceId IN [..]`), and run one at a time on a real hub.

use std::sync::atomic::Ordering;
use std::time::Duration;

use iothub_service::Schedule;
use iothub_service::proto::jobs::{JobStatus, JobType};
use iothub_service::proto::methods::CloudToDeviceMethod;
use iothub_service::proto::twin::Twin;
use serde_json::{Value, json};

use super::{PATIENCE, lock_door, lock_door_device};
use crate::run::Run;

const POLL: Duration = Duration::from_millis(250);

fn later(secs: i64) -> jiff::Timestamp {
    jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_secs(secs)).unwrap_or(jiff::Timestamp::MAX)
}

async fn records(run: &Run, job_id: &str) -> anyhow::Result<Vec<Value>> {
    let records = run
        .service()
        .query()
        .device_jobs(&format!("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{job_id}'"))
        .collect_all()
        .await?;
    let mut summary: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({"deviceId": r.device_id, "status": r.status, "errorCode": r.error.as_ref().map(|e| e.code.clone()),
                "methodStatus": r.outcome.as_ref().and_then(|o| o.device_method_response.as_ref()).map(|m| m.status)})
        })
        .collect();
    summary.sort_by_key(|r| r["deviceId"].as_str().unwrap_or_default().to_owned());
    Ok(summary)
}

pub(super) async fn future_start(run: &Run) -> anyhow::Result<()> {
    let (id, device, calls) = lock_door_device(run, "f", json!({"locked": true})).await?;
    let job_id = run.id("future");
    let jobs = run.service().jobs();
    let start = later(8);
    let created = jobs
        .schedule_device_method(
            &job_id,
            &format!("deviceId IN ['{id}']"),
            &lock_door(Value::Null, 15),
            Schedule::at(start),
        )
        .await?;
    run.observe("as created", created.status);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = jobs.get_job(&job_id).await?;
    run.observe(
        "before its start time",
        json!({"status": waiting.status, "lockDoor calls": calls.load(Ordering::SeqCst)}),
    );
    let done = jobs.wait_for_job(&job_id, POLL, PATIENCE).await?;
    let ended: jiff::Timestamp = done.end_time.as_deref().unwrap_or_default().parse()?;
    run.observe("finished", json!({"status": done.status, "endedAfterStart": ended >= start, "lockDoor calls": calls.load(Ordering::SeqCst)}));
    device.close().await;
    Ok(())
}

pub(super) async fn cancel(run: &Run) -> anyhow::Result<()> {
    let (id, device, calls) = lock_door_device(run, "c", json!({"locked": true})).await?;
    let job_id = run.id("cancel");
    let jobs = run.service().jobs();
    jobs.schedule_device_method(
        &job_id,
        &format!("deviceId IN ['{id}']"),
        &lock_door(Value::Null, 15),
        Schedule::at(later(3600)),
    )
    .await?;
    let cancelled = jobs.cancel_job(&job_id).await?;
    run.observe("cancel answer", cancelled.status);
    let after = jobs.wait_for_job(&job_id, POLL, PATIENCE).await?;
    run.observe("after cancel", json!({"status": after.status, "hasEndTime": after.end_time.is_some()}));
    let again = jobs.cancel_job(&job_id).await?;
    run.observe("cancel of a finished job", again.status);
    run.observe("lockDoor calls", calls.load(Ordering::SeqCst));
    run.observe("records", records(run, &job_id).await?);
    device.close().await;
    Ok(())
}

pub(super) async fn offline_devices(run: &Run) -> anyhow::Result<()> {
    let (online, device, _) = lock_door_device(run, "on", json!({"locked": true})).await?;
    let (offline, _) = run.create_device("off").await?;
    let job_id = run.id("mixed");
    let jobs = run.service().jobs();
    jobs.schedule_device_method(
        &job_id,
        &format!("deviceId IN ['{online}', '{offline}']"),
        &lock_door(json!({"all": true}), 10),
        Schedule::now(),
    )
    .await?;
    let done = jobs.wait_for_job(&job_id, POLL, PATIENCE).await?;
    run.observe("job", json!({"status": done.status, "statistics": done.device_job_statistics}));
    run.observe("records", records(run, &job_id).await?);
    device.close().await;
    Ok(())
}

pub(super) async fn max_execution_time(run: &Run) -> anyhow::Result<()> {
    let (offline, _) = run.create_device("away").await?;
    let job_id = run.id("expire");
    let jobs = run.service().jobs();
    // The device never connects; the call would wait 120 s for it, past the job's 10 s.
    let method = CloudToDeviceMethod { connect_timeout_in_seconds: Some(120), ..lock_door(Value::Null, 30) };
    let schedule = Schedule::now().max_execution_time(Duration::from_secs(10));
    jobs.schedule_device_method(&job_id, &format!("deviceId IN ['{offline}']"), &method, schedule).await?;
    let done = jobs.wait_for_job(&job_id, POLL, PATIENCE).await?;
    run.observe("job", json!({"status": done.status, "hasFailureReason": done.failure_reason.is_some(), "statistics": done.device_job_statistics}));
    run.observe("records", records(run, &job_id).await?);
    Ok(())
}

pub(super) async fn query(run: &Run) -> anyhow::Result<()> {
    let (id, device, _) = lock_door_device(run, "jq", json!({"locked": true})).await?;
    let jobs = run.service().jobs();
    let condition = format!("deviceId IN ['{id}']");
    let twin_job = run.id("twin");
    let patch = Twin::tags_patch(json!({"queried": true}).as_object().cloned().unwrap_or_default());
    jobs.schedule_twin_update(&twin_job, &condition, &patch, Schedule::now()).await?;
    jobs.wait_for_job(&twin_job, POLL, PATIENCE).await?;
    let method_job = run.id("method");
    jobs.schedule_device_method(&method_job, &condition, &lock_door(Value::Null, 15), Schedule::at(later(3600)))
        .await?;
    // A job is answered `queued` and becomes `scheduled` moments later: the query waits for that, or what it sees
    // depends on timing.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while jobs.get_job(&method_job).await?.status == JobStatus::Queued && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let mine = |all: Vec<iothub_service::proto::jobs::JobResponse>| -> Vec<Value> {
        let mut ids: Vec<Value> = all
            .into_iter()
            .filter(|j| j.job_id == twin_job || j.job_id == method_job)
            .map(|j| json!([j.job_id, j.status]))
            .collect();
        ids.sort_by_key(|v| v.to_string());
        ids
    };
    for (label, job_type, status) in [
        ("completed twin jobs", Some(JobType::ScheduleUpdateTwin), Some(JobStatus::Completed)),
        ("method jobs", Some(JobType::ScheduleDeviceMethod), None),
        ("all jobs", None, None),
    ] {
        let all = jobs.query_jobs(job_type, status).collect_all().await?;
        run.observe(label, mine(all));
    }
    jobs.cancel_job(&method_job).await?;
    device.close().await;
    Ok(())
}
