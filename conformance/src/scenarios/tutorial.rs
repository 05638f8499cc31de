//! The tutorial in `shared/seeds`, step by step: simDevice answering lockDoor, scheduleJobService scheduling a
//! method job and a twin job over `deviceId IN [...]` and polling them until they finish.

use std::sync::atomic::Ordering;
use std::time::Duration;

use iothub_device::DesiredUpdate;
use iothub_service::Schedule;
use iothub_service::proto::twin::Twin;
use serde_json::{Value, json};

use super::{PATIENCE, lock_door, lock_door_device};
use crate::raw;
use crate::run::{Run, skeleton};

/// Polls the job as the tutorial's monitorJob does until it is finished, and records it and its wire shape.
async fn observe_finished(run: &Run, label: &str, job_id: &str) -> anyhow::Result<()> {
    let job = run.service().jobs().wait_for_job(job_id, Duration::from_millis(500), PATIENCE).await?;
    run.observe(label, json!({"status": job.status, "statistics": job.device_job_statistics}));
    run.observe(&format!("{label} shape"), skeleton(&raw::get_json(&run.target, &format!("/jobs/v2/{job_id}")).await?));
    Ok(())
}

pub(super) async fn tutorial(run: &Run) -> anyhow::Result<()> {
    // simDevice answers lockDoor with 200 and no payload.
    let (device_id, device, calls) = lock_door_device(run, "myDeviceId", Value::Null).await?;
    let mut desired = device.desired_updates();
    let condition = format!("deviceId IN ['{device_id}']");
    let schedule = Schedule::at(jiff::Timestamp::now()).max_execution_time(Duration::from_secs(300));
    let jobs = run.service().jobs();
    let (method_job, twin_job) = (run.id("lock"), run.id("twin"));

    // The tutorial schedules both jobs back to back; here the second waits for the first, because an S1 hub
    // runs one job at a time (the emulator would take both at once).
    let created = jobs.schedule_device_method(&method_job, &condition, &lock_door(Value::Null, 15), schedule).await?;
    run.observe("method job as created", json!({"status": created.status, "type": created.job_type}));
    observe_finished(run, "method job", &method_job).await?;
    let mut patch = Twin::desired_patch(json!({"building": "43", "floor": 3}).as_object().cloned().unwrap_or_default());
    patch.etag = Some("*".into());
    let created = jobs.schedule_twin_update(&twin_job, &condition, &patch, schedule).await?;
    run.observe("twin job as created", json!({"status": created.status, "type": created.job_type}));
    observe_finished(run, "twin job", &twin_job).await?;
    run.observe("lockDoor calls", calls.load(Ordering::SeqCst));

    let seen = tokio::time::timeout(PATIENCE, async {
        while let Some(update) = desired.next().await {
            let (DesiredUpdate::Patch { patch: props, .. } | DesiredUpdate::Full { desired: props, .. }) = update;
            if props.get("building") == Some(&json!("43")) {
                return Some(props);
            }
        }
        None
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("the device never saw building 43"))?;
    run.observe("device sees", json!({"building": seen.get("building"), "floor": seen.get("floor")}));
    let twin = run.service().twins().get_twin(&device_id).await?;
    let desired = twin.desired().cloned().unwrap_or_default();
    run.observe("service twin desired", json!({"building": desired.get("building"), "floor": desired.get("floor")}));

    let mut records = run
        .service()
        .query()
        .device_jobs(&format!("SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = '{device_id}'"))
        .collect_all()
        .await?;
    records.sort_by_key(|r| r.job_type.as_str());
    let summary: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({"jobType": r.job_type, "status": r.status, "jobId": r.job_id,
                "methodStatus": r.outcome.as_ref().and_then(|o| o.device_method_response.as_ref()).map(|m| m.status)})
        })
        .collect();
    run.observe("device job records", summary);
    let text = format!("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{method_job}'");
    let wire = run.service().query().raw(&text).collect_all().await?;
    run.observe("device job record shape", wire.first().map(skeleton));
    device.close().await;
    Ok(())
}
