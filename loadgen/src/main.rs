//! `iothub-loadgen`: simulated devices and back-end callers in their own process, for load tests and the
//! benchmarks in `scripts/bench.sh`.
//!
//! Devices come from a seed file (the emulator's `--seed` format, with keys) and connect over MQTT/TLS; they
//! answer direct methods with 200 and count desired patches. Each subcommand measures one thing, prints a line
//! for people and a `RESULT key=value ...` line for scripts, with latencies from HDR histograms. One process
//! holds at most as many connections as it may open files; `--source-ip` spreads connections over several
//! loopback addresses when ephemeral ports run short.

mod amqp_device;
mod c2d;
mod callers;
mod device;
mod echo;
mod events;
mod fleet;
mod stats;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use device::{Identity, Target, Work};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::json;
use tokio::io::AsyncReadExt as _;

/// Simulated IoT Hub devices and back-end callers.
#[derive(Debug, Parser)]
#[command(name = "iothub-loadgen", version)]
struct Cli {
    /// MQTT/TLS address of the hub (or of the broker, for `echo`).
    #[arg(long, global = true, default_value = "127.0.0.1:8883")]
    mqtt: SocketAddr,
    /// AMQP/TLS address of the hub (cloud-to-device messages).
    #[arg(long, global = true, default_value = "127.0.0.1:5671")]
    amqp: SocketAddr,
    /// HTTPS address of the hub's service API.
    #[arg(long, global = true, default_value = "127.0.0.1:443")]
    https: SocketAddr,
    /// The hub's host name: the SAS audience, the user-name prefix and the TLS server name.
    #[arg(long, global = true, default_value = "localhost")]
    host: String,
    /// CA certificate (PEM) to trust, e.g. the emulator's ca.pem.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Seed file listing the devices: {"devices":[{"deviceId":..,"authentication":{"symmetricKey":{"primaryKey":..}}}]}.
    #[arg(long, global = true)]
    devices: Option<PathBuf>,
    /// Use only the first N devices of the seed file.
    #[arg(long, global = true)]
    count: Option<usize>,
    /// The hub connection string, for the commands that call the service API.
    #[arg(long, global = true, env = "IOTHUB_CONNECTION_STRING")]
    service: Option<String>,
    /// Local addresses to connect from, in turn (e.g. 127.0.0.2,127.0.0.3).
    #[arg(long, global = true, value_delimiter = ',')]
    source_ip: Vec<IpAddr>,
    /// How the devices connect: MQTT (the default) or AMQP (the .NET SDK's default; `telemetry` and `methods`).
    #[arg(long, global = true, value_enum, default_value_t = device::Transport::Mqtt)]
    transport: device::Transport,
    /// Connection attempts in flight at once.
    #[arg(long, global = true, default_value_t = 256)]
    connect_concurrency: usize,
    #[command(subcommand)]
    command: Command,
}

/// Load from back-end callers over HTTPS.
#[derive(Debug, clap::Args)]
struct CallerLoad {
    #[arg(long, default_value_t = 64)]
    callers: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests per second in all (default: each caller back to back).
    #[arg(long)]
    rate: Option<f64>,
}

/// Load from every connected device, one request in flight per device.
#[derive(Debug, clap::Args)]
struct DeviceLoad {
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests per second per device (default: back to back).
    #[arg(long)]
    rate_per_device: Option<f64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connects the devices and serves them until stdin closes, then prints what they received.
    Hold,
    /// Connects the devices (TLS + CONNECT + SAS + SUBSCRIBE), reports the rate, and holds them for a while.
    Connect {
        /// Seconds to hold the connections after the last one.
        #[arg(long, default_value_t = 5)]
        hold: u64,
    },
    /// Direct-method round trips from keep-alive HTTPS callers to the connected devices.
    Methods(CallerLoad),
    /// Reported-property patches from every device, one in flight per device.
    Reported(DeviceLoad),
    /// QoS 1 telemetry from every device, one in flight per device.
    Telemetry(DeviceLoad),
    /// `PATCH /twins/{id}` (desired) from keep-alive HTTPS callers; the devices are not connected.
    TwinPatch(CallerLoad),
    /// A method job and a twin job over every connected device, `runs` times each.
    Jobs {
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The jobs' query condition (`*`: every device of the hub).
        #[arg(long, default_value = "*")]
        condition: String,
    },
    /// Cloud-to-device messages sent over AMQP to the connected devices (round robin), received over MQTT.
    C2d {
        /// Sender links, each with one message in flight.
        #[arg(long, default_value_t = 64)]
        senders: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Messages per second in all (default: each sender back to back).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// QoS 1 telemetry from every device (one in flight per device) read back by one consumer per partition of
    /// the Event Hubs-compatible endpoint: ingest and send-to-read latency.
    Events {
        #[command(flatten)]
        load: DeviceLoad,
        /// The Event Hub-compatible connection string (the emulator's banner prints it).
        #[arg(long, env = "IOTHUB_EVENTHUB_CONNECTION_STRING")]
        event_hub: String,
    },
    /// The Mosquitto anchor: request/response echo through a plain MQTT broker at `--mqtt`.
    Echo {
        #[arg(long, default_value_t = 1000)]
        responders: usize,
        #[arg(long, default_value_t = 64)]
        callers: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Round trips per second in all (default: each caller back to back).
        #[arg(long)]
        rate: Option<f64>,
    },
}

fn identities(path: Option<&PathBuf>, count: Option<usize>) -> anyhow::Result<Vec<Identity>> {
    let path = path.context("--devices (a seed file) is required")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let seed: serde_json::Value = serde_json::from_str(&text).context("the seed file is not JSON")?;
    let devices = seed["devices"].as_array().context("the seed file has no devices array")?;
    devices
        .iter()
        .take(count.unwrap_or(usize::MAX))
        .map(|d| {
            let device_id = d["deviceId"].as_str().context("a device without deviceId")?.to_owned();
            let key = d["authentication"]["symmetricKey"]["primaryKey"]
                .as_str()
                .with_context(|| format!("device {device_id} has no primaryKey"))?
                .to_owned();
            Ok(Identity { device_id, key })
        })
        .collect()
}

fn tls(ca: Option<&PathBuf>) -> anyhow::Result<rustls::ClientConfig> {
    let ca = ca.context("--ca (the CA certificate to trust) is required")?;
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.context("CA PEM")?)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn process_cpu_seconds() -> f64 {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs `load.callers` HTTPS callers making `call`s on `ids` and reports their latencies as scenario `name`.
async fn caller_load(
    service: Arc<callers::Service>,
    ids: Vec<String>,
    call: callers::Call,
    name: &str,
    load: &CallerLoad,
) -> anyhow::Result<()> {
    let seconds = Duration::from_secs(load.seconds);
    let (latencies, failures, took) =
        callers::run(service, Arc::new(ids), call, load.callers, seconds, load.rate).await?;
    latencies.report(name, took, &[("callers", load.callers.to_string()), ("failures", failures.to_string())]);
    Ok(())
}

/// Has every device of `fleet` do `work` and reports the latencies as scenario `name`.
async fn device_load(mut fleet: fleet::Fleet, work: Work, name: &str, load: &DeviceLoad) {
    let every = load.rate_per_device.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(1.0 / r));
    let (latencies, took) = fleet.run(work, Duration::from_secs(load.seconds), every).await;
    latencies.report(name, took, &[("devices", fleet.connected.to_string())]);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let tls_config = tls(cli.ca.as_ref())?;
    let target = Arc::new(Target {
        addr: cli.mqtt,
        amqp_addr: cli.amqp,
        transport: cli.transport,
        host: cli.host.clone(),
        tls: tokio_rustls::TlsConnector::from(Arc::new(tls_config.clone())),
        token_ttl_secs: 4 * 3600,
        sources: cli.source_ip.clone(),
    });
    let service = || -> anyhow::Result<Arc<callers::Service>> {
        let cs = cli.service.as_deref().context("--service (or IOTHUB_CONNECTION_STRING) is required")?;
        Ok(Arc::new(callers::Service::new(cli.https, cs, tls_config.clone())?))
    };
    let connect_fleet = || async {
        let identities = identities(cli.devices.as_ref(), cli.count)?;
        let fleet = fleet::connect(target.clone(), identities, cli.connect_concurrency).await;
        let mut line =
            format!("connected {} in {} ms ({} failed)", fleet.connected, fleet.connect_time.as_millis(), fleet.failed);
        if let Some(at) = fleet.time_to_10k {
            line.push_str(&format!("; 10000 after {} ms", at.as_millis()));
        }
        println!("{line}");
        let _ = std::io::stdout().flush();
        anyhow::Ok(fleet)
    };

    match cli.command {
        Command::Hold => {
            let fleet = connect_fleet().await?;
            let mut sink = Vec::new();
            let _ = tokio::io::stdin().read_to_end(&mut sink).await;
            let received = &fleet.counters;
            println!(
                "received methods={} desired={}",
                received.methods.load(std::sync::atomic::Ordering::Relaxed),
                received.desired.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        Command::Connect { hold } => {
            let fleet = connect_fleet().await?;
            let rate = fleet.connected as f64 / fleet.connect_time.as_secs_f64().max(1e-9);
            tokio::time::sleep(Duration::from_secs(hold)).await;
            println!(
                "RESULT scenario=connect connected={} failed={} seconds={:.3} rate={rate:.0} to10k_seconds={} held={}",
                fleet.connected,
                fleet.failed,
                fleet.connect_time.as_secs_f64(),
                fleet.time_to_10k.map_or("-".to_owned(), |d| format!("{:.3}", d.as_secs_f64())),
                fleet.connected
            );
        }
        Command::Methods(load) => {
            // The fleet stays connected (and answering) while the callers run.
            let fleet = connect_fleet().await?;
            caller_load(service()?, fleet.ids.clone(), callers::Call::Method, "methods", &load).await?;
        }
        Command::TwinPatch(load) => {
            // Twin patches need no connected devices.
            let ids = identities(cli.devices.as_ref(), cli.count)?.into_iter().map(|i| i.device_id).collect();
            caller_load(service()?, ids, callers::Call::TwinPatch, "twin-patch", &load).await?;
        }
        Command::Reported(load) => device_load(connect_fleet().await?, Work::Reported, "reported", &load).await,
        Command::Telemetry(load) => device_load(connect_fleet().await?, Work::Telemetry, "telemetry", &load).await,
        Command::Events { load, event_hub } => {
            let ca = cli.ca.as_ref().context("--ca is required")?;
            let pem = std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
            let consumer = iothub_service::EventHubConsumer::from_connection_string(
                &event_hub,
                "$Default",
                iothub_service::Trust::CaPem(pem),
            )?;
            let fleet = connect_fleet().await?;
            let devices = fleet.connected;
            let readers = events::start(&consumer).await?;
            let started = std::time::Instant::now();
            device_load(fleet, Work::Telemetry, "eventhubs-ingest", &load).await;
            readers.finish(started, devices).await;
        }
        Command::Jobs { runs, condition } => {
            let fleet = connect_fleet().await?;
            let service = service()?;
            for run in 0..runs {
                let method = json!({"type": "scheduleDeviceMethod", "queryCondition": condition,
                    "cloudToDeviceMethod": {"methodName": "bench", "payload": {"run": run}, "responseTimeoutInSeconds": 30}});
                let (took, job) =
                    callers::job(&service, &format!("loadgen-method-{run}-{}", rand::random::<u32>()), method).await?;
                let stats = &job["deviceJobStatistics"];
                println!(
                    "RESULT scenario=method-job devices={} seconds={:.3} status={} succeeded={} failed={}",
                    fleet.connected,
                    took.as_secs_f64(),
                    job["status"],
                    stats["succeededCount"],
                    stats["failedCount"]
                );
                let twin = json!({"type": "scheduleUpdateTwin", "queryCondition": condition,
                    "updateTwin": {"etag": "*", "properties": {"desired": {"run": run, "building": "43"}}}});
                let (took, job) =
                    callers::job(&service, &format!("loadgen-twin-{run}-{}", rand::random::<u32>()), twin).await?;
                let stats = &job["deviceJobStatistics"];
                println!(
                    "RESULT scenario=twin-job devices={} seconds={:.3} status={} succeeded={} failed={}",
                    fleet.connected,
                    took.as_secs_f64(),
                    job["status"],
                    stats["succeededCount"],
                    stats["failedCount"]
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let received = &fleet.counters;
            println!(
                "received methods={} desired={} (expected {} each)",
                received.methods.load(std::sync::atomic::Ordering::Relaxed),
                received.desired.load(std::sync::atomic::Ordering::Relaxed),
                fleet.connected * runs
            );
        }
        Command::C2d { senders, seconds, rate } => {
            let fleet = connect_fleet().await?;
            let cs = cli.service.as_deref().context("--service (or IOTHUB_CONNECTION_STRING) is required")?;
            let started = std::time::Instant::now();
            let ids = Arc::new(fleet.ids.clone());
            let sent =
                c2d::send(target.clone(), cli.amqp, cs, ids, senders, Duration::from_secs(seconds), rate).await?;
            let took = started.elapsed();
            // Let the last messages arrive.
            for _ in 0..50 {
                if fleet.counters.messages.load(std::sync::atomic::Ordering::Relaxed) >= sent.accepted {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let received = fleet.counters.messages.load(std::sync::atomic::Ordering::Relaxed);
            sent.latencies.report(
                "c2d-send",
                took,
                &[("senders", senders.to_string()), ("refused", sent.refused.to_string())],
            );
            let delivered =
                std::mem::take(&mut *fleet.counters.message_latencies.lock().unwrap_or_else(|p| p.into_inner()));
            delivered.report(
                "c2d-deliver",
                took,
                &[
                    ("devices", fleet.connected.to_string()),
                    ("received", received.to_string()),
                    ("accepted", sent.accepted.to_string()),
                ],
            );
        }
        Command::Echo { responders, callers, seconds, rate } => {
            let (latencies, took) =
                echo::run(target.clone(), responders, callers, Duration::from_secs(seconds), rate).await?;
            latencies.report("echo", took, &[("responders", responders.to_string()), ("callers", callers.to_string())]);
        }
    }
    println!(
        "RESULT scenario=loadgen-process cpu_seconds={:.2} peak_rss_kib={}",
        process_cpu_seconds(),
        peak_rss_kib()
    );
    Ok(())
}
