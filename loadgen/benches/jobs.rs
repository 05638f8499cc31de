//! Jobs at fleet scale: a direct-method job and a twin-update job over N connected devices (default 10,000).
//!
//! The emulator runs in this process with a data dir (records durable in redb); the devices are
//! `iothub-loadgen`, a separate process of light MQTT/TLS clients over loopback that answers every method with
//! 200. Each job is timed from its creation until it reads `completed` with every device record written, and
//! until those writes are durable. Numbers are printed, never asserted.
//!
//! Run: `cargo bench -p iothub-loadgen --bench jobs [-- DEVICES [RUNS]]`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use iothub_emulator::Emulator;
use iothub_emulator::domain::registry::{Credentials, DeviceSpec, generate_key};
use iothub_emulator::hub::Hub;
use serde_json::{Value, json};

async fn create_devices(hub: &Arc<Hub>, count: usize) -> Vec<Value> {
    let devices: Vec<(String, String)> = (0..count).map(|i| (format!("sim-{i:06}"), generate_key())).collect();
    futures_util::stream::iter(devices.iter())
        .map(|(id, key)| {
            let spec = DeviceSpec { credentials: Credentials::sas(key.clone(), generate_key()), ..Default::default() };
            let hub = hub.clone();
            async move { hub.put_device(id, &spec, None).await.expect("device") }
        })
        .buffer_unordered(512)
        .for_each(|_| async {})
        .await;
    devices
        .iter()
        .map(|(id, key)| json!({"deviceId": id, "authentication": {"symmetricKey": {"primaryKey": key}}}))
        .collect()
}

/// Creates the job, polls it until it is finished, prints the times to `completed` and until durable, and
/// returns the latter.
async fn run_job(hub: &Arc<Hub>, job_id: &str, body: &Value, kind: &str) -> Duration {
    let started = Instant::now();
    let request = iothub_emulator::wire::jobs::parse_request(job_id, body, hub.clock().now()).expect("request");
    hub.create_job(request).await.expect("create job");
    let job = loop {
        let job = hub.get_job(job_id).expect("job");
        if job.job.status.is_finished() {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let completed = started.elapsed();
    hub.sync().await.expect("sync");
    let durable = started.elapsed();
    let stats = &job.stats;
    println!(
        "{kind:>6} job over {} devices: {} in {:.0} ms, durable in {:.0} ms (succeeded {}, failed {})",
        stats.device_count,
        job.job.status.as_str(),
        completed.as_secs_f64() * 1e3,
        durable.as_secs_f64() * 1e3,
        stats.succeeded,
        stats.failed
    );
    durable
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let devices = args.first().copied().unwrap_or(10_000);
    let runs = args.get(1).copied().unwrap_or(3).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let emulator = Emulator::builder().data_dir(dir.path()).start().await.expect("emulator");
    let hub = emulator.hub().clone();

    let created = Instant::now();
    let seed = create_devices(&hub, devices).await;
    println!("{devices} devices registered in {:.0} ms", created.elapsed().as_secs_f64() * 1e3);
    let seed_path = dir.path().join("devices.json");
    std::fs::write(&seed_path, serde_json::to_vec(&json!({"devices": seed})).expect("json")).expect("seed file");

    let mut fleet = Command::new(env!("CARGO_BIN_EXE_iothub-loadgen"))
        .args(["hold", "--mqtt", &emulator.mqtt_addr().to_string(), "--host", "localhost"])
        .arg("--ca")
        .arg(emulator.ca_path().expect("ca path"))
        .arg("--devices")
        .arg(&seed_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start iothub-loadgen");
    let mut lines = BufReader::new(fleet.stdout.take().expect("stdout")).lines();
    let connected = tokio::task::spawn_blocking(move || {
        let line = lines.next().expect("a line").expect("read");
        (line, lines)
    });
    let (line, mut lines) = connected.await.expect("join");
    println!("loadgen (separate process): {line}");
    while hub.connected_device_count() < devices {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut method_times = Vec::new();
    let mut twin_times = Vec::new();
    for run in 0..runs {
        let body = json!({
            "type": "scheduleDeviceMethod", "queryCondition": "*",
            "cloudToDeviceMethod": {"methodName": "bench", "payload": {"run": run}, "responseTimeoutInSeconds": 30},
        });
        method_times.push(run_job(&hub, &format!("method-{run}"), &body, "method").await);
        let body = json!({
            "type": "scheduleUpdateTwin", "queryCondition": "*",
            "updateTwin": {"etag": "*", "properties": {"desired": {"run": run, "building": "43"}}},
        });
        twin_times.push(run_job(&hub, &format!("twin-{run}"), &body, "twin").await);
    }
    println!(
        "median over {runs} runs: method job {:.0} ms, twin job {:.0} ms",
        median(method_times).as_secs_f64() * 1e3,
        median(twin_times).as_secs_f64() * 1e3
    );

    let records = hub.query("SELECT * FROM devices.jobs WHERE jobId = 'method-0'", 100, None).expect("query");
    assert!(!records.items.is_empty());
    drop(fleet.stdin.take());
    let summary =
        tokio::task::spawn_blocking(move || lines.next().and_then(Result::ok).unwrap_or_default()).await.expect("join");
    println!("loadgen {summary} (expected methods={} desired={})", devices * runs, devices * runs);
    let _ = fleet.wait();
    let _ = std::io::stdout().flush();
    emulator.shutdown().await;
}
