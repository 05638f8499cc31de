//! The tutorial's scheduleJobService.js in Rust: schedules a job calling `lockDoor` and a job setting the
//! desired properties `building: '43'`, `floor: 3`, both over `deviceId IN ['myDeviceId']`, and follows each
//! until it is done. Exits with an error unless both complete.
//!
//! Against the emulator (see the README; `IOTHUB_HTTPS_PORT` only when it does not listen on 443):
//!
//! ```sh
//! IOTHUB_CONNECTION_STRING='HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=...' \
//! IOTHUB_CA_FILE=~/.local/share/iothub-emulator/ca.pem cargo run -p iothub-service --example schedule_job_service
//! ```
//!
//! Against a real hub, give its connection string (a policy with registry read and write) and leave
//! `IOTHUB_CA_FILE` unset. `DEVICE_ID` picks another device than `myDeviceId`.

use std::time::Duration;

use iothub_service::proto::jobs::{JobResponse, JobStatus};
use iothub_service::proto::methods::CloudToDeviceMethod;
use iothub_service::proto::twin::Twin;
use iothub_service::{JobClient, Schedule, ServiceClient, ServiceOptions};
use serde_json::json;

/// Follows a job as the tutorial's monitorJob does, printing each status.
async fn monitor_job(jobs: &JobClient, job_id: &str) -> Result<JobResponse, iothub_service::Error> {
    let mut monitor = jobs.monitor_job(job_id, Duration::from_secs(1));
    let mut last = None;
    while let Some(job) = monitor.next().await {
        let job = job?;
        println!("Job: {job_id} - status: {}", job.status.as_str());
        last = Some(job);
    }
    last.ok_or_else(|| iothub_service::Error::Decode("the job was never read".into()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connection_string = std::env::var("IOTHUB_CONNECTION_STRING")
        .map_err(|_| "set IOTHUB_CONNECTION_STRING to the hub's connection string")?;
    let mut options = ServiceOptions::default();
    if let Ok(path) = std::env::var("IOTHUB_CA_FILE") {
        options = options.with_ca_pem(std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?);
    }
    if let Ok(port) = std::env::var("IOTHUB_HTTPS_PORT") {
        options = options.with_port(port.parse().map_err(|_| "IOTHUB_HTTPS_PORT must be a port number")?);
    }
    let device_id = std::env::var("DEVICE_ID").unwrap_or_else(|_| "myDeviceId".into());
    let query_condition = format!("deviceId IN ['{device_id}']");
    let schedule = Schedule::now().max_execution_time(Duration::from_secs(300));
    let jobs = ServiceClient::from_connection_string(&connection_string, options)?.jobs();

    let method_job_id = format!("lock-{:016x}", rand::random::<u64>());
    let lock_door = CloudToDeviceMethod {
        method_name: "lockDoor".into(),
        payload: serde_json::Value::Null,
        // Time out after 15 seconds if the device is unable to process the method.
        response_timeout_in_seconds: Some(15),
        connect_timeout_in_seconds: None,
    };
    let twin_job_id = format!("twin-{:016x}", rand::random::<u64>());
    let mut twin_patch =
        Twin::desired_patch(json!({"building": "43", "floor": 3}).as_object().cloned().unwrap_or_default());
    twin_patch.etag = Some("*".into());

    println!("scheduling Device Method job with id: {method_job_id}");
    println!("scheduling Twin Update job with id: {twin_job_id}");
    let method_job = async {
        jobs.schedule_device_method(&method_job_id, &query_condition, &lock_door, schedule).await?;
        monitor_job(&jobs, &method_job_id).await
    };
    let twin_job = async {
        jobs.schedule_twin_update(&twin_job_id, &query_condition, &twin_patch, schedule).await?;
        monitor_job(&jobs, &twin_job_id).await
    };
    let (method_job, twin_job) = tokio::try_join!(method_job, twin_job)?;
    for job in [&method_job, &twin_job] {
        println!("{}", serde_json::to_string_pretty(job)?);
    }
    if method_job.status != JobStatus::Completed || twin_job.status != JobStatus::Completed {
        return Err("a job did not complete".into());
    }
    Ok(())
}
