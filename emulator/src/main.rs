//! The `iothub-emulator` command: starts a local IoT Hub with working defaults and prints how to reach it.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use iothub_emulator::clock::SystemClock;
use iothub_emulator::config::{self, Config};
use iothub_emulator::domain::eventlog;
use iothub_emulator::domain::throttle::Tier;
use iothub_emulator::hub::JobSettings;
use iothub_emulator::{Emulator, RunningEmulator};
use tracing_subscriber::EnvFilter;

/// A local Azure IoT Hub: MQTT device endpoint and HTTPS service API that the unmodified Azure SDKs accept.
///
/// Every option can also be set through the environment variable shown with it. Logs go to stderr and are
/// filtered with RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(name = "iothub-emulator", version)]
struct Cli {
    /// Address to listen on. Use 0.0.0.0 (or ::) to accept other machines too.
    #[arg(long, env = "IOTHUB_EMULATOR_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,

    /// Port of the HTTPS service API. The Node service SDK can only dial 443.
    #[arg(long, env = "IOTHUB_EMULATOR_HTTPS_PORT", default_value_t = config::DEFAULT_HTTPS_PORT)]
    https_port: u16,

    /// Port of the MQTT over TLS device endpoint. The Python device SDK can only dial 8883.
    #[arg(long, env = "IOTHUB_EMULATOR_MQTT_PORT", default_value_t = config::DEFAULT_MQTT_PORT)]
    mqtt_port: u16,

    /// Port of the AMQP over TLS endpoint (cloud-to-device messages and their feedback). The Python service SDK
    /// can only dial 5671.
    #[arg(long, env = "IOTHUB_EMULATOR_AMQP_PORT", default_value_t = config::DEFAULT_AMQP_PORT)]
    amqp_port: u16,

    /// The hub's host name: HostName in connection strings, and a name in the server certificate. Clients
    /// must resolve it to this machine.
    #[arg(long, env = "IOTHUB_EMULATOR_HOSTNAME", default_value = config::DEFAULT_HOST_NAME)]
    hostname: String,

    /// Where the CA, the policy keys and the registry are kept
    /// [default: $XDG_DATA_HOME/iothub-emulator or ~/.local/share/iothub-emulator].
    #[arg(long, env = "IOTHUB_EMULATOR_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Keep devices and twins in memory only: every start begins with an empty hub. The CA and policy keys
    /// are still kept in the data dir so clients keep trusting the emulator.
    #[arg(long, env = "IOTHUB_EMULATOR_IN_MEMORY")]
    in_memory: bool,

    /// JSON file of devices to create at start when missing: {"devices":[{"deviceId":"d1", ...}]}.
    #[arg(long, env = "IOTHUB_EMULATOR_SEED")]
    seed: Option<PathBuf>,

    /// Most jobs queued, scheduled or running at once; one more is refused with 429
    /// ThrottlingMaxActiveJobCountExceeded. Real hubs allow 1 (S1) to 10 (S3): set 1 to test against S1's rule.
    #[arg(long, env = "IOTHUB_EMULATOR_MAX_ACTIVE_JOBS", default_value_t = JobSettings::default().max_active_jobs as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_active_jobs: u64,

    /// Days a finished job and its device records are kept (the hub keeps them 30 days).
    #[arg(long, env = "IOTHUB_EMULATOR_JOB_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3650))]
    job_retention_days: u64,

    /// Most connections (MQTT and HTTPS) at once; past it devices get CONNACK 3 (server unavailable).
    /// [default: the open-file limit, raised to its hard limit at start, less a reserve]
    #[arg(long, env = "IOTHUB_EMULATOR_MAX_CONNECTIONS")]
    max_connections: Option<usize>,

    /// Throttle like one unit of a real hub tier (s1, s2 or s3): past its per-operation rates the service
    /// API answers 429 ThrottlingException, twin requests get status 429, connections CONNACK 3, and
    /// telemetry and job fan-out are slowed down. Off by default.
    #[arg(long, env = "IOTHUB_EMULATOR_THROTTLE", value_parser = parse_tier)]
    throttle: Option<Tier>,

    /// Partitions of the built-in Event Hubs-compatible endpoint. Fixed when the hub is created: a data dir
    /// keeps the count it was created with.
    #[arg(long, env = "IOTHUB_EMULATOR_PARTITIONS", default_value_t = eventlog::DEFAULT_PARTITIONS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(eventlog::MAX_PARTITIONS)))]
    partitions: u32,

    /// Hours device-to-cloud messages are kept on the built-in endpoint (a new hub keeps them 24, at most 168).
    #[arg(long, env = "IOTHUB_EMULATOR_RETENTION_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(1..=168))]
    retention_hours: u64,

    /// Most megabytes of device-to-cloud messages kept over all partitions; the oldest are dropped first.
    #[arg(long, env = "IOTHUB_EMULATOR_EVENTS_MAX_MB", default_value_t = eventlog::DEFAULT_MAX_BYTES / (1024 * 1024),
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    events_max_mb: u64,

    /// A consumer group of the built-in endpoint besides $Default (repeatable; comma-separated in the
    /// environment).
    #[arg(long = "consumer-group", env = "IOTHUB_EMULATOR_CONSUMER_GROUPS", value_delimiter = ',',
          value_parser = parse_consumer_group)]
    consumer_groups: Vec<String>,

    /// Serve plain AMQP (no TLS) on this loopback port for Event Hubs clients with `UseDevelopmentEmulator=true`
    /// in their connection string (they dial 5672). Off by default.
    #[arg(long, env = "IOTHUB_EMULATOR_EVENTHUBS_PLAIN_PORT")]
    eventhubs_plain_port: Option<u16>,
}

fn parse_consumer_group(text: &str) -> Result<String, String> {
    eventlog::LogSettings::check_consumer_group_name(text).map(|()| text.to_owned())
}

fn parse_tier(text: &str) -> Result<Tier, String> {
    Tier::parse(text).ok_or_else(|| format!("'{text}' is not a tier: use s1, s2 or s3"))
}

/// mimalloc rather than glibc's allocator: under load the hub allocates small JSON trees from every core, and
/// glibc's arenas spent a quarter of the CPU in malloc/free (perf, `PATCH /twins` at 16k/s) and fragmented memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();

    let stop = shutdown_signal();
    let started = Instant::now();
    let config = Config {
        bind: cli.bind,
        https_port: cli.https_port,
        mqtt_port: cli.mqtt_port,
        amqp_port: cli.amqp_port,
        host_name: cli.hostname.clone(),
        data_dir: Some(cli.data_dir.clone().unwrap_or_else(config::default_data_dir)),
        in_memory: cli.in_memory,
        seed: cli.seed.clone(),
        clock: Arc::new(SystemClock),
        jobs: JobSettings {
            max_active_jobs: usize::try_from(cli.max_active_jobs).unwrap_or(usize::MAX),
            retention: Duration::from_secs(cli.job_retention_days * 24 * 3600),
            ..JobSettings::default()
        },
        max_connections: cli.max_connections,
        throttle: cli.throttle,
        event_log: eventlog::LogSettings {
            partitions: cli.partitions,
            retention: Duration::from_secs(cli.retention_hours * 3600),
            max_bytes: cli.events_max_mb * 1024 * 1024,
            consumer_groups: cli.consumer_groups.clone(),
        },
        eventhubs_plain_port: cli.eventhubs_plain_port,
    };
    let emulator = match Emulator::builder().config(config).start().await {
        Ok(emulator) => emulator,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "iothub-emulator: {error}");
            return ExitCode::FAILURE;
        }
    };
    if !cli.bind.is_loopback() {
        tracing::warn!(bind = %cli.bind, "listening beyond loopback: other machines can reach this hub; keep its keys secret");
    }
    print_banner(&emulator, started.elapsed().as_secs_f64() * 1000.0);

    stop.await;
    let _ = writeln!(std::io::stderr(), "iothub-emulator: shutting down");
    emulator.shutdown().await;
    ExitCode::SUCCESS
}

/// Prints how to reach and trust the hub. Written in one piece and never panicking: a closed stdout (a
/// supervisor that stopped reading) must not bring the hub down.
fn print_banner(emulator: &RunningEmulator, startup_ms: f64) {
    let _ = std::io::stdout().write_all(banner(emulator, startup_ms).as_bytes());
    let _ = std::io::stdout().flush();
}

fn banner(emulator: &RunningEmulator, startup_ms: f64) -> String {
    let host = emulator.host_name();
    let https = emulator.https_addr();
    let mqtt = emulator.mqtt_addr();
    let amqp = emulator.amqp_addr();
    let ca = emulator.ca_path().map(|p| p.display().to_string()).unwrap_or_default();
    let storage = match (emulator.data_dir(), emulator.is_durable()) {
        (Some(dir), _) if emulator.is_read_only() => {
            format!("{} (READ-ONLY: its devices are served, every change fails)", dir.display())
        }
        (Some(dir), true) => format!("{} (devices kept across restarts)", dir.display()),
        (Some(dir), false) => format!("{} (CA and keys only; devices in memory)", dir.display()),
        (None, _) => "in memory".to_owned(),
    };
    let mut text = format!(
        "iothub-emulator listening ({startup_ms:.0} ms): hub '{host}'\n\
         \x20 service API  https://{host}:{} (bound to {https}); MQTT and AMQP over WebSockets at /$iothub/websocket\n\
         \x20 messages     amqps://{host}:{} (bound to {amqp}): cloud-to-device messages and their feedback, and\n\
         \x20              the Event Hubs-compatible endpoint ({} partitions; consumer groups {})\n\
         \x20 devices      mqtts://{host}:{} (bound to {mqtt})\n\
         \x20 data         {storage}\n\
         \x20 limits       up to {} connections at once (open-file limit {}); {}\n\
         \x20 connection string (iothubowner):\n\
         \x20   {}\n\
         \x20 Event Hub-compatible connection string (read telemetry with @azure/event-hubs, azure-eventhub):\n\
         \x20   {}\n\
         \x20 dashboard (sign-in link; it carries the owner's rights): {}\n\
         \x20 CA certificate: {ca}\n\
         \x20 trust it:  Node    NODE_EXTRA_CA_CERTS={ca}\n\
         \x20            Python  REQUESTS_CA_BUNDLE={ca} and SSL_CERT_FILE={ca} (service: AMQP reads the second); server_verification_cert=open('{ca}').read() or SSL_CERT_FILE={ca} (device)\n",
        https.port(),
        amqp.port(),
        emulator.hub().event_log().partition_count(),
        std::iter::once(eventlog::DEFAULT_CONSUMER_GROUP)
            .chain(emulator.hub().event_log().settings().consumer_groups.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", "),
        mqtt.port(),
        emulator.max_connections(),
        emulator.open_file_limit(),
        match emulator.hub().throttle_tier() {
            Some(tier) => format!("throttled like one {tier:?} unit"),
            None => "no throttling".to_owned(),
        },
        emulator.service_connection_string(),
        emulator.event_hub_connection_string(),
        emulator.dashboard_url(),
    );
    if let Some(plain) = emulator.eventhubs_plain_addr() {
        text.push_str(&format!(
            "  plain AMQP   amqp://{plain} for Event Hubs clients with UseDevelopmentEmulator=true (loopback only, no TLS)\n"
        ));
    }
    if !https.ip().is_loopback() {
        // Right under the first line, where nobody misses it.
        let warning = format!(
            "  WARNING: bound to {}: other machines can reach this hub. Anyone holding a key connects, so keep \
             policies.json and device keys secret; never expose a hub seeded with a published key such as \
             fixtures/tutorial-seed.json's\n",
            https.ip()
        );
        let after_first_line = text.find('\n').map_or(text.len(), |i| i + 1);
        text.insert_str(after_first_line, &warning);
    }
    if https.port() != config::DEFAULT_HTTPS_PORT
        || mqtt.port() != config::DEFAULT_MQTT_PORT
        || amqp.port() != config::DEFAULT_AMQP_PORT
    {
        text.push_str(&format!(
            "  note: unmodified SDKs dial 443, 8883 and 5671. Python service SDK: HostName={host}:{}; Node device SDK: GatewayHostName={host}:{}; Node service SDK: HostName={host}:{} for AMQP\n",
            https.port(),
            mqtt.port(),
            amqp.port()
        ));
    }
    text
}

/// Registers for SIGINT/SIGTERM now (so a signal that arrives right after the banner is not lost) and returns
/// a future that resolves when one arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
