//! `iothub-crashtest`: runs a write workload against the emulator, kills it with SIGKILL at a random moment,
//! restarts it on the same data dir, and checks the acknowledgements:
//! - every write that was acknowledged is there: an HTTP 2xx for a device or module twin patch, a device create or
//!   delete, a bulk identity call (`POST /devices`, 3 creates or 3 deletes, `isSuccessful`), a configuration create
//!   or delete, and a job; `res/204` for a reported patch;
//! - versions only move forward;
//! - every acknowledged job is still known and comes to an end;
//! - every telemetry message the hub acknowledged (PUBACK) is read back from the Event Hubs-compatible endpoint
//!   by a consumer that resumes from its checkpoints (the last sequence number read per partition): nothing
//!   acknowledged is lost, nothing is read twice, sequence numbers only grow;
//! - what the hub applies of its configurations converges after the restart: within 10 s each targeted twin
//!   (`cfg-0`..`cfg-3`) has the desired content of the highest-priority configuration present (none when none is)
//!   and its `configurations` member names exactly the configurations present.
//!
//! Repeats for many iterations and reports the anomalies (there must be none).
//!
//! Usage: `iothub-crashtest --emulator target/release/iothub-emulator [--iterations 50]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use iothub_device::{ClientOptions, DeviceClient, Message, RetryPolicy};
use iothub_service::proto::configurations::{Configuration, ConfigurationContent};
use iothub_service::proto::jobs::JobStatus;
use iothub_service::proto::registry::ExportImportDevice;
use iothub_service::proto::twin::Twin;
use iothub_service::{Etag, EventHubConsumer, EventPosition, Schedule, ServiceClient, ServiceOptions};
use serde_json::{Value, json};

/// Kills the emulator under load, again and again, and checks nothing acknowledged was lost.
#[derive(Debug, Parser)]
struct Cli {
    /// The emulator binary.
    #[arg(long, default_value = "target/release/iothub-emulator")]
    emulator: PathBuf,
    /// Kill-and-restart rounds.
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// HTTPS port for the emulator (kept across restarts so clients find it again).
    #[arg(long, default_value_t = 19443)]
    https_port: u16,
    /// MQTT port for the emulator.
    #[arg(long, default_value_t = 19883)]
    mqtt_port: u16,
    /// AMQP port for the emulator (the Event Hubs-compatible endpoint).
    #[arg(long, default_value_t = 19671)]
    amqp_port: u16,
}

/// Devices whose twins the service patches.
const SERVICE_DEVICES: usize = 16;
/// The module of each service device whose twin the service patches too.
const MODULE: &str = "mod";
/// Devices connected, each patching its reported properties.
const REPORTING_DEVICES: usize = 4;
/// Devices connected, each sending numbered telemetry.
const TELEMETRY_DEVICES: usize = 2;
/// Devices each bulk identity call creates or deletes.
const BULK_SIZE: usize = 3;
/// Devices the configurations target (`cfg-0`..), none of them written by anything else.
const CONFIGURATION_DEVICES: usize = 4;
/// Configurations of the current round kept alive: iteration n deletes the one of iteration n - this.
const CONFIGURATIONS_ALIVE: usize = 3;
/// How long the twins the configurations target may take to show what the configurations present say.
const CONVERGENCE: Duration = Duration::from_secs(10);

/// What the emulator acknowledged, and so must still hold after any crash.
#[derive(Default)]
struct Ledger {
    /// Device -> (desired counter, twin version) of the last acknowledged service patch.
    desired: BTreeMap<String, (u64, u64)>,
    /// Device -> (reported counter, reported $version) of the last acknowledged reported patch.
    reported: BTreeMap<String, (u64, u64)>,
    /// Devices whose creation was acknowledged (one by one, or by a bulk call) and whose deletion was not sent.
    created: BTreeSet<String>,
    /// Devices whose deletion was acknowledged (one by one, or by a bulk call).
    deleted: BTreeSet<String>,
    /// Items of acknowledged bulk calls (creates and deletes).
    bulk_items: usize,
    /// Configurations whose creation was acknowledged and whose deletion was not sent.
    configurations_created: BTreeSet<String>,
    /// Configurations whose deletion was acknowledged.
    configurations_deleted: BTreeSet<String>,
    /// Acknowledged configuration creates and deletes.
    configuration_writes: usize,
    /// Jobs whose creation was acknowledged.
    jobs: BTreeSet<String>,
    /// Device -> the highest twin version ever seen (versions only move forward).
    versions: BTreeMap<String, u64>,
    /// Device -> the numbers of its acknowledged telemetry messages.
    telemetry: BTreeMap<String, BTreeSet<u64>>,
    /// Device -> the numbers read back from the endpoint.
    telemetry_read: BTreeMap<String, BTreeSet<u64>>,
    /// Partition -> the last sequence number read (the consumer's checkpoint).
    checkpoints: BTreeMap<String, i64>,
}

/// How to reach a running emulator.
#[derive(Clone)]
struct Info {
    connection_string: String,
    event_hub_connection_string: String,
    ca_pem: String,
}

struct Emulator {
    child: Child,
    info: Info,
}

fn start(cli: &Cli, data: &Path) -> anyhow::Result<Emulator> {
    // Each run's stderr goes beside the data dir, so a start that fails can say why (a port still taken, say).
    let log_path = data.with_extension("stderr.log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = Command::new(&cli.emulator)
        .args(["--https-port", &cli.https_port.to_string(), "--mqtt-port", &cli.mqtt_port.to_string()])
        .args(["--amqp-port", &cli.amqp_port.to_string()])
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", cli.emulator.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut connection_string = None;
    let mut event_hub_connection_string = String::new();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(at) = line.find("HostName=") {
            connection_string = Some(line[at..].trim().to_owned());
        }
        if let Some(at) = line.find("Endpoint=sb://") {
            line[at..].trim().clone_into(&mut event_hub_connection_string);
        }
        if line.contains("Python") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let Some(connection_string) = connection_string else {
        let _ = child.wait();
        let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
        anyhow::bail!("the emulator printed no connection string; its stderr:\n{}", stderr.trim_end());
    };
    let ca_pem = std::fs::read_to_string(data.join("ca.pem"))?;
    Ok(Emulator { child, info: Info { connection_string, event_hub_connection_string, ca_pem } })
}

fn service(cli: &Cli, emulator: &Info) -> anyhow::Result<ServiceClient> {
    let retry = iothub_service::RetryPolicy { max_attempts: 1, ..Default::default() };
    let options =
        ServiceOptions::default().with_ca_pem(emulator.ca_pem.clone()).with_port(cli.https_port).with_retry(retry);
    Ok(ServiceClient::from_connection_string(&emulator.connection_string, options)?)
}

fn counter(section: Option<&serde_json::Map<String, Value>>, key: &str) -> u64 {
    section.and_then(|s| s.get(key)).and_then(Value::as_u64).unwrap_or(0)
}

/// How a load device connects: its connection string from the registry, no reconnects (a crash ends it).
async fn device_connector(
    cli: &Cli,
    emulator: &Info,
    hub: &ServiceClient,
    device_id: &str,
) -> anyhow::Result<impl Future<Output = Result<DeviceClient, iothub_device::Error>> + Send + 'static> {
    let key = hub
        .registry()
        .get_device(device_id)
        .await?
        .authentication
        .and_then(|a| a.symmetric_key)
        .and_then(|k| k.primary_key)
        .context("key")?;
    let cs = format!("HostName=localhost;DeviceId={device_id};SharedAccessKey={key}");
    let options = ClientOptions::default()
        .with_ca_pem(emulator.ca_pem.clone())
        .with_port(cli.mqtt_port)
        .with_retry(RetryPolicy { max_attempts: Some(0), ..RetryPolicy::default() });
    Ok(async move { DeviceClient::from_connection_string(&cs, options).await })
}

/// One round of load until `stop`: service twin patches, device reported patches, creates and deletes (one by
/// one and in bulk), configuration creates and deletes, jobs.
async fn load(
    cli: &Cli,
    emulator: &Info,
    ledger: Arc<Mutex<Ledger>>,
    round: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let hub = service(cli, emulator)?;
    let mut tasks = tokio::task::JoinSet::new();
    // Module twins: the module `mod` of each service device, patched by its own writer (ledger key `<device>/mod`).
    {
        let (hub, ledger, stop) = (hub.clone(), ledger.clone(), stop.clone());
        tasks.spawn(async move {
            let modules = hub.modules();
            let mut n = 0usize;
            while !*stop.borrow() {
                let device = format!("svc-{:02}", n % SERVICE_DEVICES);
                let key = format!("{device}/{MODULE}");
                n += 1;
                let next = ledger.lock().map(|l| l.desired.get(&key).map_or(0, |(c, _)| *c)).unwrap_or(0) + 1;
                let patch = Twin::desired_patch(json!({"c": next}).as_object().cloned().unwrap_or_default());
                if let Ok(twin) = modules.update_twin(&device, MODULE, &patch, Etag::Any).await
                    && let Ok(mut ledger) = ledger.lock()
                {
                    let version = twin.version.unwrap_or(0);
                    let known = ledger.desired.entry(key).or_insert((0, 0));
                    *known = (next.max(known.0), version.max(known.1));
                }
            }
        });
    }
    for writer in 0..4 {
        let (hub, ledger, stop) = (hub.clone(), ledger.clone(), stop.clone());
        tasks.spawn(async move {
            let twins = hub.twins();
            let mut n = 0usize;
            while !*stop.borrow() {
                let device = format!("svc-{:02}", (writer + 4 * n) % SERVICE_DEVICES);
                n += 1;
                let next = ledger.lock().map(|l| l.desired.get(&device).map_or(0, |(c, _)| *c)).unwrap_or(0) + 1;
                let patch = Twin::desired_patch(json!({"c": next}).as_object().cloned().unwrap_or_default());
                if let Ok(twin) = twins.update_twin(&device, &patch, Etag::Any).await
                    && let Ok(mut ledger) = ledger.lock()
                {
                    let version = twin.version.unwrap_or(0);
                    let known = ledger.desired.entry(device).or_insert((0, 0));
                    *known = (next.max(known.0), version.max(known.1));
                }
            }
        });
    }
    for index in 0..REPORTING_DEVICES {
        let (ledger, mut stop) = (ledger.clone(), stop.clone());
        let device_id = format!("dev-{index}");
        let connect = device_connector(cli, emulator, &hub, &device_id).await?;
        tasks.spawn(async move {
            let Ok(client) = connect.await else { return };
            loop {
                let next = ledger.lock().map(|l| l.reported.get(&device_id).map_or(0, |(r, _)| *r)).unwrap_or(0) + 1;
                let patch = json!({"r": next});
                let patched = tokio::select! {
                    patched = client.update_reported(&patch) => patched,
                    _ = stop.changed() => break,
                };
                match patched {
                    Ok(version) => {
                        if let Ok(mut ledger) = ledger.lock() {
                            let known = ledger.reported.entry(device_id.clone()).or_insert((0, 0));
                            *known = (next.max(known.0), version.max(known.1));
                        }
                    }
                    Err(_) => break,
                }
            }
        });
    }
    for index in 0..TELEMETRY_DEVICES {
        let (ledger, mut stop) = (ledger.clone(), stop.clone());
        let device_id = format!("tel-{index}");
        let connect = device_connector(cli, emulator, &hub, &device_id).await?;
        tasks.spawn(async move {
            let Ok(client) = connect.await else { return };
            // Every number is sent once: each round numbers its messages from round * 1,000,000.
            let mut next = 1_000_000 * round as u64;
            loop {
                next += 1;
                let message = Message::new(format!("{{\"device\":\"{device_id}\",\"n\":{next}}}"));
                let sent = tokio::select! {
                    sent = client.send_telemetry(message) => sent,
                    _ = stop.changed() => break,
                };
                match sent {
                    Ok(()) => {
                        if let Ok(mut ledger) = ledger.lock() {
                            ledger.telemetry.entry(device_id.clone()).or_default().insert(next);
                        }
                    }
                    Err(_) => break,
                }
            }
        });
    }
    {
        let (hub, ledger, stop) = (hub.clone(), ledger.clone(), stop.clone());
        tasks.spawn(async move {
            let registry = hub.registry();
            let mut n = 0;
            while !*stop.borrow() {
                n += 1;
                let id = format!("tmp-{round}-{n}");
                if registry.create_sas_device(&id).await.is_ok()
                    && let Ok(mut ledger) = ledger.lock()
                {
                    ledger.created.insert(id.clone());
                }
                if n % 3 == 0 {
                    let victim = format!("tmp-{round}-{}", n - 1);
                    // From the moment the delete is sent, the device may or may not exist after a crash: an
                    // unacknowledged delete can still have been committed. Only an acknowledged one is a promise.
                    if let Ok(mut ledger) = ledger.lock() {
                        ledger.created.remove(&victim);
                    }
                    if registry.delete_device(&victim, Etag::Any).await.is_ok()
                        && let Ok(mut ledger) = ledger.lock()
                    {
                        ledger.deleted.insert(victim);
                    }
                }
            }
        });
    }
    // Bulk identity calls: iteration n creates `blk-<round>-<n>-0..2` in one call; every second one also deletes
    // the previous iteration's three in one call.
    {
        let (hub, ledger, stop) = (hub.clone(), ledger.clone(), stop.clone());
        tasks.spawn(async move {
            let registry = hub.registry();
            let batch = |n: usize| (0..BULK_SIZE).map(|i| format!("blk-{round}-{n}-{i}")).collect::<Vec<_>>();
            let items = |ids: &[String], mode: &str| {
                ids.iter()
                    .map(|id| ExportImportDevice {
                        id: id.clone(),
                        import_mode: Some(mode.to_owned()),
                        ..ExportImportDevice::default()
                    })
                    .collect::<Vec<_>>()
            };
            let mut n = 0;
            while !*stop.borrow() {
                n += 1;
                let ids = batch(n);
                if let Ok(result) = registry.bulk(&items(&ids, "create")).await
                    && result.is_successful
                    && result.errors.is_empty()
                    && let Ok(mut ledger) = ledger.lock()
                {
                    ledger.bulk_items += ids.len();
                    ledger.created.extend(ids);
                }
                if n % 2 == 0 {
                    let victims = batch(n - 1);
                    // As for single deletes: once sent, the devices may or may not exist after a crash.
                    if let Ok(mut ledger) = ledger.lock() {
                        for victim in &victims {
                            ledger.created.remove(victim);
                        }
                    }
                    if let Ok(result) = registry.bulk(&items(&victims, "delete")).await
                        && result.is_successful
                        && result.errors.is_empty()
                        && let Ok(mut ledger) = ledger.lock()
                    {
                        ledger.bulk_items += victims.len();
                        ledger.deleted.extend(victims);
                    }
                }
            }
        });
    }
    // Configurations: first the leftovers of earlier rounds go, then iteration n creates `c-<round>-<n>` (the
    // later, the higher its priority) and deletes `c-<round>-<n-3>`, so a few are alive at any time (the hub
    // allows 100).
    {
        let (hub, ledger, stop) = (hub.clone(), ledger.clone(), stop.clone());
        tasks.spawn(async move {
            let configurations = hub.configurations();
            let delete = async |id: String| {
                // As for devices: once the delete is sent, the configuration may or may not exist after a crash.
                if let Ok(mut ledger) = ledger.lock() {
                    ledger.configurations_created.remove(&id);
                }
                if configurations.delete(&id, Etag::Any).await.is_ok()
                    && let Ok(mut ledger) = ledger.lock()
                {
                    ledger.configuration_writes += 1;
                    ledger.configurations_deleted.insert(id);
                }
            };
            let Ok(leftovers) = configurations.list(None).await else { return };
            for leftover in leftovers {
                if *stop.borrow() {
                    return;
                }
                delete(leftover.id).await;
            }
            let mut n = 0;
            while !*stop.borrow() {
                n += 1;
                let configuration = round_configuration(round, n);
                if configurations.create(&configuration).await.is_ok()
                    && let Ok(mut ledger) = ledger.lock()
                {
                    ledger.configuration_writes += 1;
                    ledger.configurations_created.insert(configuration.id);
                }
                if n > CONFIGURATIONS_ALIVE {
                    delete(format!("c-{round}-{}", n - CONFIGURATIONS_ALIVE)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    {
        let (hub, ledger, stop) = (hub.clone(), ledger.clone(), stop.clone());
        tasks.spawn(async move {
            let jobs = hub.jobs();
            let mut n = 0;
            while !*stop.borrow() {
                n += 1;
                let id = format!("job-{round}-{n}");
                let patch = Twin::tags_patch(json!({"job": id}).as_object().cloned().unwrap_or_default());
                if jobs
                    .schedule_twin_update(&id, "deviceId IN ['svc-00', 'svc-01', 'dev-0']", &patch, Schedule::now())
                    .await
                    .is_ok()
                    && let Ok(mut ledger) = ledger.lock()
                {
                    ledger.jobs.insert(id);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The configuration iteration `n` of `round` creates: it targets the `cfg-*` devices, and a later one has a
/// higher priority, so the latest present wins.
fn round_configuration(round: usize, n: usize) -> Configuration {
    let mut content = serde_json::Map::new();
    content.insert("properties.desired.cfg".into(), json!({"round": round, "n": n}));
    let targets: Vec<String> = (0..CONFIGURATION_DEVICES).map(|k| format!("'cfg-{k}'")).collect();
    Configuration {
        id: format!("c-{round}-{n}"),
        target_condition: format!("deviceId IN [{}]", targets.join(",")),
        priority: i32::try_from(round * 1000 + n).unwrap_or(i32::MAX),
        content: ConfigurationContent { device_content: Some(content), ..ConfigurationContent::default() },
        ..Configuration::default()
    }
}

/// Checks the restarted hub against the ledger; returns the anomalies.
async fn verify(hub: &ServiceClient, info: &Info, ledger: &Mutex<Ledger>) -> anyhow::Result<Vec<String>> {
    let (desired, reported, created, deleted, jobs, versions) = {
        let l = ledger.lock().map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
        (
            l.desired.clone(),
            l.reported.clone(),
            l.created.clone(),
            l.deleted.clone(),
            l.jobs.clone(),
            l.versions.clone(),
        )
    };
    let mut anomalies = Vec::new();
    let mut seen_versions = BTreeMap::new();
    for device in desired.keys().chain(reported.keys()).collect::<BTreeSet<_>>() {
        let twin = match device.split_once('/') {
            Some((device_id, module_id)) => hub.modules().get_twin(device_id, module_id).await?,
            None => hub.twins().get_twin(device).await?,
        };
        let version = twin.version.unwrap_or(0);
        seen_versions.insert(device.clone(), version);
        if let Some((c, v)) = desired.get(device) {
            let stored = counter(twin.desired(), "c");
            if stored < *c {
                anomalies.push(format!("{device}: acknowledged desired c={c}, found {stored}"));
            }
            if version < *v {
                anomalies.push(format!("{device}: acknowledged twin version {v}, found {version}"));
            }
        }
        if let Some((r, v)) = reported.get(device) {
            let stored = counter(twin.reported(), "r");
            let stored_version = counter(twin.reported(), "$version");
            if stored < *r || stored_version < *v {
                anomalies.push(format!(
                    "{device}: acknowledged reported r={r} at $version {v}, found r={stored} at {stored_version}"
                ));
            }
        }
        if let Some(before) = versions.get(device)
            && version < *before
        {
            anomalies.push(format!("{device}: twin version went back from {before} to {version}"));
        }
    }
    for id in &created {
        if let Err(error) = hub.registry().get_device(id).await {
            anomalies.push(format!("acknowledged device {id} is missing: {error}"));
        }
    }
    for id in &deleted {
        if hub.registry().get_device(id).await.is_ok() {
            anomalies.push(format!("device {id} was deleted (acknowledged) but is back"));
        }
    }
    for id in &jobs {
        match hub.jobs().wait_for_job(id, Duration::from_millis(50), Duration::from_secs(30)).await {
            Ok(job) if matches!(job.status, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled) => {}
            Ok(job) => anomalies.push(format!("job {id} is {:?}", job.status)),
            Err(error) => anomalies.push(format!("acknowledged job {id}: {error}")),
        }
    }
    if let Ok(mut l) = ledger.lock() {
        for (device, version) in seen_versions {
            l.versions.insert(device, version);
        }
    }
    anomalies.extend(verify_configurations(hub, ledger).await?);
    anomalies.extend(verify_telemetry(info, ledger).await?);
    Ok(anomalies)
}

/// Checks the acknowledged configuration creates and deletes, then that the twins the configurations target come
/// to show what the configurations present now say: the desired `cfg` of the highest-priority one (none when
/// there is none), and a `configurations` member naming each of them.
async fn verify_configurations(hub: &ServiceClient, ledger: &Mutex<Ledger>) -> anyhow::Result<Vec<String>> {
    let (created, deleted) = {
        let l = ledger.lock().map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
        (l.configurations_created.clone(), l.configurations_deleted.clone())
    };
    let configurations = hub.configurations();
    let mut anomalies = Vec::new();
    for id in &created {
        if let Err(error) = configurations.get(id).await {
            anomalies.push(format!("acknowledged configuration {id} is missing: {error}"));
        }
    }
    for id in &deleted {
        match configurations.get(id).await {
            Ok(_) => anomalies.push(format!("configuration {id} was deleted (acknowledged) but is back")),
            Err(error) if error.status() == Some(404) => {}
            Err(error) => anomalies.push(format!("configuration {id} was deleted (acknowledged); reading it: {error}")),
        }
    }
    let present = configurations.list(None).await.context("listing the configurations")?;
    let present_ids: BTreeSet<String> = present.iter().map(|c| c.id.clone()).collect();
    let winner = present.iter().max_by_key(|c| c.priority);
    let expected = winner
        .and_then(|c| c.content.device_content.as_ref())
        .and_then(|content| content.get("properties.desired.cfg"))
        .cloned();
    let winner = winner.map_or_else(|| "none present".to_owned(), |c| format!("{} (priority {})", c.id, c.priority));
    for k in 0..CONFIGURATION_DEVICES {
        let device = format!("cfg-{k}");
        let deadline = Instant::now() + CONVERGENCE;
        loop {
            let desired = match hub.twins().get_twin(&device).await {
                Ok(twin) => Ok(twin.desired().and_then(|d| d.get("cfg")).cloned()),
                Err(error) => Err(format!("reading the twin: {error}")),
            };
            let marks = twin_configurations(hub, &device).await;
            if desired.as_ref().is_ok_and(|d| *d == expected) && marks.as_ref().is_ok_and(|m| *m == present_ids) {
                break;
            }
            if Instant::now() >= deadline {
                anomalies.push(format!(
                    "{device}: not converged after {} s: desired cfg {}, configurations {}; expected desired cfg {} \
                     from {winner}, configurations {present_ids:?}",
                    CONVERGENCE.as_secs(),
                    match &desired {
                        Ok(Some(value)) => value.to_string(),
                        Ok(None) => "absent".to_owned(),
                        Err(error) => error.clone(),
                    },
                    match &marks {
                        Ok(marks) => format!("{marks:?}"),
                        Err(error) => error.clone(),
                    },
                    expected.as_ref().map_or_else(|| "absent".to_owned(), Value::to_string),
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(anomalies)
}

/// The ids in a twin's `configurations` member, read from the raw twin document of a query (the `Twin` type does
/// not carry that member); none when the twin has no such member.
async fn twin_configurations(hub: &ServiceClient, device: &str) -> Result<BTreeSet<String>, String> {
    let rows = hub
        .query()
        .raw(&format!("SELECT * FROM devices WHERE deviceId = '{device}'"))
        .collect_all()
        .await
        .map_err(|error| format!("querying the twin: {error}"))?;
    let [twin] = rows.as_slice() else { return Err(format!("the query found {} twins", rows.len())) };
    Ok(twin
        .get("configurations")
        .and_then(Value::as_object)
        .map(|marks| marks.keys().cloned().collect())
        .unwrap_or_default())
}

/// Reads every partition from its checkpoint to the end and checks the acknowledged telemetry against it.
async fn verify_telemetry(info: &Info, ledger: &Mutex<Ledger>) -> anyhow::Result<Vec<String>> {
    let trust = iothub_service::Trust::CaPem(info.ca_pem.clone());
    let consumer = EventHubConsumer::from_connection_string(&info.event_hub_connection_string, "$Default", trust)?;
    let mut anomalies = Vec::new();
    for partition in consumer.partition_ids().await? {
        let checkpoint = ledger.lock().ok().and_then(|l| l.checkpoints.get(&partition).copied());
        let start = checkpoint.map_or(EventPosition::Earliest, EventPosition::AfterSequenceNumber);
        let mut receiver = consumer.receive(&partition, start).await?;
        // The hub is local and idle: half a second without an event is the end of the partition.
        while let Ok(event) = tokio::time::timeout(Duration::from_millis(500), receiver.next()).await {
            let event = event?;
            let body: Value = serde_json::from_slice(&event.body).unwrap_or_default();
            let (Some(device), Some(n)) = (body["device"].as_str(), body["n"].as_u64()) else { continue };
            let Ok(mut l) = ledger.lock() else { break };
            let last = l.checkpoints.insert(partition.clone(), event.sequence_number);
            if last.is_some_and(|last| event.sequence_number <= last) {
                anomalies
                    .push(format!("partition {partition}: sequence number {} after {last:?}", event.sequence_number));
            }
            if !l.telemetry_read.entry(device.to_owned()).or_default().insert(n) {
                anomalies.push(format!("{device}: telemetry message {n} was read twice"));
            }
        }
        receiver.close().await;
    }
    let Ok(l) = ledger.lock() else { anyhow::bail!("ledger poisoned") };
    for (device, acked) in &l.telemetry {
        let read = l.telemetry_read.get(device);
        let lost: Vec<_> = acked.iter().filter(|n| !read.is_some_and(|r| r.contains(n))).take(5).collect();
        if !lost.is_empty() {
            anomalies.push(format!("{device}: acknowledged telemetry not in the log, e.g. {lost:?}"));
        }
    }
    Ok(anomalies)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    {
        let mut emulator = start(&cli, &data)?;
        let hub = service(&cli, &emulator.info)?;
        for i in 0..SERVICE_DEVICES {
            hub.registry().create_sas_device(&format!("svc-{i:02}")).await?;
            hub.modules().create_sas_module(&format!("svc-{i:02}"), MODULE).await?;
        }
        for i in 0..REPORTING_DEVICES {
            hub.registry().create_sas_device(&format!("dev-{i}")).await?;
        }
        for i in 0..TELEMETRY_DEVICES {
            hub.registry().create_sas_device(&format!("tel-{i}")).await?;
        }
        for i in 0..CONFIGURATION_DEVICES {
            hub.registry().create_sas_device(&format!("cfg-{i}")).await?;
        }
        emulator.child.kill()?;
        emulator.child.wait()?;
    }
    // A lost write stays lost in later rounds; each is counted once, in the round that found it.
    let mut total_anomalies = BTreeSet::new();
    for round in 1..=cli.iterations {
        let mut emulator = start(&cli, &data)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let kill_after = Duration::from_millis(rand::random_range(300..2500));
        let info = emulator.info.clone();
        let loaded = load(&cli, &info, ledger.clone(), round, stop_rx);
        let killer = async {
            tokio::time::sleep(kill_after).await;
            let _ = emulator.child.kill();
            let _ = emulator.child.wait();
            let _ = stop_tx.send(true);
        };
        // The load ends on its own once the emulator is gone; the kill is SIGKILL, with writes in flight.
        let (load_result, ()) = tokio::join!(loaded, killer);
        load_result?;
        let mut restarted = start(&cli, &data)?;
        let mut anomalies = verify(&service(&cli, &restarted.info)?, &restarted.info, &ledger).await?;
        anomalies.retain(|anomaly| !total_anomalies.contains(anomaly));
        let (desired, reported, devices, bulk, configurations, jobs, telemetry) = {
            let l = ledger.lock().map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
            let single = |ids: &BTreeSet<String>| ids.iter().filter(|id| id.starts_with("tmp-")).count();
            (
                l.desired.values().map(|(c, _)| c).sum::<u64>(),
                l.reported.values().map(|(r, _)| r).sum::<u64>(),
                single(&l.created) + 2 * single(&l.deleted),
                l.bulk_items,
                l.configuration_writes,
                l.jobs.len(),
                l.telemetry.values().map(BTreeSet::len).sum::<usize>(),
            )
        };
        println!(
            "round {round}: killed after {} ms; acknowledged so far: {desired} desired patches, {reported} reported patches, {devices} creates and deletes, {bulk} bulk items, {configurations} configuration creates and deletes, {jobs} jobs, {telemetry} telemetry messages; {} anomalies",
            kill_after.as_millis(),
            anomalies.len()
        );
        for anomaly in &anomalies {
            println!("  ANOMALY {anomaly}");
        }
        total_anomalies.extend(anomalies);
        restarted.child.kill()?;
        restarted.child.wait()?;
    }
    println!("RESULT scenario=crash-test iterations={} anomalies={}", cli.iterations, total_anomalies.len());
    if total_anomalies.is_empty() { Ok(()) } else { anyhow::bail!("{} anomalies", total_anomalies.len()) }
}
