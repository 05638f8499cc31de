//! `iothub-loadgen`: a fleet of simulated devices in its own process, for benchmarks and load tests.
//!
//! It connects every device of a seed file (the emulator's `--seed` format, with keys) over MQTT/TLS, with a
//! progress line on stderr, then prints `connected <n> in <ms> ms` on stdout and serves: each device answers
//! direct methods with 200 and counts desired-property patches. When stdin closes it prints
//! `received methods=<n> desired=<m>` and exits. One process holds at most as many devices as it may open files.

mod device;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use device::{Counters, Identity, Target};
use futures_util::StreamExt as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::io::AsyncReadExt as _;

/// Simulated IoT Hub devices over MQTT/TLS.
#[derive(Debug, Parser)]
#[command(name = "iothub-loadgen", version)]
struct Cli {
    /// MQTT/TLS address of the hub.
    #[arg(long, default_value = "127.0.0.1:8883")]
    mqtt: SocketAddr,
    /// The hub's host name: the SAS audience, the user name prefix and the TLS server name.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// CA certificate (PEM) to trust, e.g. the emulator's ca.pem.
    #[arg(long)]
    ca: PathBuf,
    /// Seed file listing the devices: {"devices":[{"deviceId":..,"authentication":{"symmetricKey":{"primaryKey":..}}}]}.
    #[arg(long)]
    devices: PathBuf,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
}

fn identities(path: &PathBuf) -> anyhow::Result<Vec<Identity>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let seed: serde_json::Value = serde_json::from_str(&text).context("the seed file is not JSON")?;
    let devices = seed["devices"].as_array().context("the seed file has no devices array")?;
    devices
        .iter()
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

fn tls(ca: &PathBuf) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.context("CA PEM")?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let identities = identities(&cli.devices)?;
    let total = identities.len();
    let target = Arc::new(Target { addr: cli.mqtt, host: cli.host.clone(), tls: tls(&cli.ca)?, token_ttl_secs: 3600 });
    let counters = Arc::new(Counters::default());
    let connected = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let progress = {
        let connected = connected.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprintln!("connecting: {}/{total}", connected.load(Ordering::Relaxed));
            }
        })
    };
    let mut connections = futures_util::stream::iter(identities)
        .map(|identity| {
            let target = target.clone();
            async move { (device::connect(&target, &identity).await, identity) }
        })
        .buffer_unordered(cli.connect_concurrency.max(1));
    let mut failed = 0usize;
    while let Some((result, identity)) = connections.next().await {
        match result {
            Ok(mqtt) => {
                connected.fetch_add(1, Ordering::Relaxed);
                let counters = counters.clone();
                tokio::spawn(async move {
                    if let Err(error) = device::serve(mqtt, counters).await {
                        eprintln!("{}: {error:#}", identity.device_id);
                    }
                });
            }
            Err(error) => {
                failed += 1;
                eprintln!("{} did not connect: {error:#}", identity.device_id);
            }
        }
    }
    progress.abort();
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "connected {} in {} ms ({failed} failed)",
        connected.load(Ordering::Relaxed),
        started.elapsed().as_millis()
    )?;
    stdout.flush()?;

    // Serve until whoever started us closes stdin.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    writeln!(
        stdout,
        "received methods={} desired={}",
        counters.methods.load(Ordering::Relaxed),
        counters.desired.load(Ordering::Relaxed)
    )?;
    stdout.flush()?;
    Ok(())
}
