//! iothub-emulator: a local Azure IoT Hub that real SDKs can talk to.
//!
//! The same hub the binary runs can be started in-process, which is how tests use it:
//!
//! ```no_run
//! # async fn demo() -> Result<(), iothub_emulator::StartError> {
//! let emulator = iothub_emulator::Emulator::builder().start().await?;
//! println!("{} trusts {}", emulator.service_connection_string(), emulator.ca_pem().len());
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```

pub mod amqp;
pub mod auth;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod domain;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod limits;
mod listener;
pub mod mqtt;
mod seed;
pub mod store;
pub mod tls;
pub mod wire;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use iothub_proto::{DeviceConnectionString, ServiceConnectionString};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use error::HubError;
pub use hub::Hub;

use auth::{OWNER_POLICY, Policies, PolicyError};
use clock::SharedClock;
use store::{Loaded, Store, StoreError};
use tls::{LocalCa, TlsError};

/// Why the emulator could not start. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use the data dir {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Policies(#[from] PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("seed file {path}: {detail}")]
    Seed { path: PathBuf, detail: String },
    #[error("{0}")]
    Bind(String),
}

/// Entry point for starting an emulator.
pub struct Emulator;

impl Emulator {
    /// A builder with the library defaults: loopback, ephemeral ports, host `localhost`, nothing on disk.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder { config: Config::default() }
    }
}

/// Configures and starts an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    config: Config,
}

impl EmulatorBuilder {
    /// Starts from a whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Address to listen on.
    pub fn bind(mut self, ip: std::net::IpAddr) -> Self {
        self.config.bind = ip;
        self
    }

    /// HTTPS port (0: any free port).
    pub fn https_port(mut self, port: u16) -> Self {
        self.config.https_port = port;
        self
    }

    /// MQTT/TLS port (0: any free port).
    pub fn mqtt_port(mut self, port: u16) -> Self {
        self.config.mqtt_port = port;
        self
    }

    /// AMQP/TLS port (0: any free port).
    pub fn amqp_port(mut self, port: u16) -> Self {
        self.config.amqp_port = port;
        self
    }

    /// The hub's host name.
    pub fn host_name(mut self, name: impl Into<String>) -> Self {
        self.config.host_name = name.into();
        self
    }

    /// Keep the CA, keys and registry in `dir` (registry persisted unless `in_memory(true)`).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = Some(dir.into());
        self.config.in_memory = false;
        self
    }

    /// Keep hub state in memory only.
    pub fn in_memory(mut self, in_memory: bool) -> Self {
        self.config.in_memory = in_memory;
        self
    }

    /// How the built-in Event Hubs-compatible endpoint is set up (partitions, retention, size cap, consumer groups).
    pub fn event_log(mut self, settings: domain::eventlog::LogSettings) -> Self {
        self.config.event_log = settings;
        self
    }

    /// Serve plain AMQP on this loopback port for Event Hubs clients' `UseDevelopmentEmulator=true` (0: any
    /// free port).
    pub fn eventhubs_plain_port(mut self, port: u16) -> Self {
        self.config.eventhubs_plain_port = Some(port);
        self
    }

    /// Devices to create at start.
    pub fn seed_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.seed = Some(path.into());
        self
    }

    /// Serves at most `max` connections at once (the open-file limit may lower it further).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = Some(max);
        self
    }

    /// Throttles operations at the real hub's rates for one unit of `tier`, to exercise clients' back-off.
    pub fn throttle(mut self, tier: domain::throttle::Tier) -> Self {
        self.config.throttle = Some(tier);
        self
    }

    /// How jobs run (active-job limit, retention, fan-out window).
    pub fn job_settings(mut self, settings: hub::JobSettings) -> Self {
        self.config.jobs = settings;
        self
    }

    /// The clock the hub uses (tests pass a `TokioClock`).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.config.clock = clock;
        self
    }

    /// Starts the hub: loads or makes the CA, keys and registry, binds both listeners and serves.
    pub async fn start(self) -> Result<RunningEmulator, StartError> {
        start(self.config).await
    }
}

/// A running emulator: where it listens, how to trust and reach it, and how to stop it.
pub struct RunningEmulator {
    hub: Arc<Hub>,
    dashboard: Arc<dashboard::Dashboard>,
    https_addr: SocketAddr,
    mqtt_addr: SocketAddr,
    amqp_addr: SocketAddr,
    eventhubs_plain_addr: Option<SocketAddr>,
    ca_pem: String,
    ca_path: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    durable: bool,
    read_only: bool,
    open_file_limit: u64,
    max_connections: usize,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

async fn start(config: Config) -> Result<RunningEmulator, StartError> {
    let (ca, policies, store, loaded) = match &config.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir { path: dir.clone(), source })?;
            let ca = LocalCa::load_or_create(dir)?;
            let policies = Policies::load_or_create(dir)?;
            let (store, loaded) = if config.in_memory {
                (Store::memory(), Loaded::default())
            } else {
                Store::open(&dir.join(config::STORE_FILE))?
            };
            (ca, policies, store, loaded)
        }
        None => (LocalCa::generate()?, Policies::generate(), Store::memory(), Loaded::default()),
    };
    let durable = store.is_durable();
    let read_only = store.is_read_only();
    if read_only {
        tracing::warn!("the data file is read-only: the hub serves what it holds and refuses every change");
    }
    let hub = Arc::new(
        Hub::new(config.host_name.clone(), policies, config.clock.clone(), store, loaded)
            .with_job_settings(config.jobs)
            .with_throttle(config.throttle)
            .with_event_log(config.event_log.clone()),
    );
    hub.start();
    if let Some(path) = &config.seed {
        seed::apply(&hub, path).await.map_err(|detail| StartError::Seed { path: path.clone(), detail })?;
    }

    let host_names = vec![config.host_name.clone(), config.bind.to_string()];
    let https_tls = ca.server_config(&host_names, &[b"http/1.1"])?;
    let mqtt_tls = ca.server_config(&host_names, &[])?;
    let amqp_tls = ca.server_config(&host_names, &[])?;
    let https_listener =
        bind(config.bind, config.https_port, "HTTPS", "--https-port / IOTHUB_EMULATOR_HTTPS_PORT").await?;
    let mqtt_listener = bind(config.bind, config.mqtt_port, "MQTT", "--mqtt-port / IOTHUB_EMULATOR_MQTT_PORT").await?;
    let amqp_listener = bind(config.bind, config.amqp_port, "AMQP", "--amqp-port / IOTHUB_EMULATOR_AMQP_PORT").await?;
    let https_addr = local_addr(&https_listener)?;
    let mqtt_addr = local_addr(&mqtt_listener)?;
    let amqp_addr = local_addr(&amqp_listener)?;
    hub.set_amqp_port(amqp_addr.port());

    let open_file_limit = listener::raise_open_file_limit();
    let by_files =
        usize::try_from(open_file_limit).unwrap_or(usize::MAX).saturating_sub(listener::RESERVED_FILES).max(1);
    let gate = listener::ConnectionGate::new(config.max_connections.map_or(by_files, |max| max.min(by_files)));
    tracing::info!(open_file_limit, max_connections = gate.ceiling(), "connection ceiling");

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let dashboard = Arc::new(dashboard::Dashboard::new(hub.clone()));
    let app = http::router(hub.clone(), dashboard.clone(), shutdown.clone());
    {
        let shutdown_for_conns = shutdown.clone();
        tracker.spawn(listener::accept_tls(
            https_listener,
            TlsAcceptor::from(https_tls),
            shutdown.clone(),
            tracker.clone(),
            gate.clone(),
            move |stream, peer| http::serve_connection(stream, peer, app.clone(), shutdown_for_conns.clone()),
            // No room: the TLS session is closed at once (clients see a connection error and retry).
            |stream, _peer| async move { drop(stream) },
        ));
    }
    tracker.spawn(listener::accept_tls(
        mqtt_listener,
        TlsAcceptor::from(mqtt_tls),
        shutdown.clone(),
        tracker.clone(),
        gate.clone(),
        {
            let hub = hub.clone();
            let shutdown = shutdown.clone();
            move |stream, peer| mqtt::serve_connection(stream, hub.clone(), shutdown.clone(), peer)
        },
        mqtt::refuse_busy,
    ));
    tracker.spawn(listener::accept_tls(
        amqp_listener,
        TlsAcceptor::from(amqp_tls),
        shutdown.clone(),
        tracker.clone(),
        gate.clone(),
        {
            let hub = hub.clone();
            let shutdown = shutdown.clone();
            move |stream, peer| amqp::serve_connection(stream, hub.clone(), shutdown.clone(), peer)
        },
        // No room: the TLS session is closed at once (clients see a connection error and retry).
        |stream, _peer| async move { drop(stream) },
    ));
    let eventhubs_plain_addr = match config.eventhubs_plain_port {
        None => None,
        Some(port) => {
            // Loopback only, whatever --bind says: this port has no TLS.
            let loopback =
                if config.bind.is_ipv6() { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
            let listener =
                bind(loopback, port, "plain AMQP", "--eventhubs-plain-port / IOTHUB_EMULATOR_EVENTHUBS_PLAIN_PORT")
                    .await?;
            let addr = local_addr(&listener)?;
            let hub = hub.clone();
            let stop = shutdown.clone();
            tracker.spawn(listener::accept_plain(
                listener,
                shutdown.clone(),
                tracker.clone(),
                gate.clone(),
                move |stream, peer| amqp::serve_connection(stream, hub.clone(), stop.clone(), peer),
            ));
            Some(addr)
        }
    };
    tracing::info!(%https_addr, %mqtt_addr, %amqp_addr, ?eventhubs_plain_addr, host = %config.host_name, "listening");
    let running = RunningEmulator {
        hub,
        dashboard,
        https_addr,
        mqtt_addr,
        amqp_addr,
        eventhubs_plain_addr,
        ca_pem: ca.cert_pem().to_owned(),
        ca_path: ca.cert_path().map(Path::to_path_buf),
        data_dir: config.data_dir.clone(),
        durable,
        read_only,
        open_file_limit,
        max_connections: gate.ceiling(),
        shutdown,
        tracker,
    };
    running.dashboard.set_endpoints(dashboard::Endpoints {
        host_name: running.host_name().to_owned(),
        https_port: https_addr.port(),
        mqtt_port: mqtt_addr.port(),
        amqp_port: amqp_addr.port(),
        eventhubs_plain_port: eventhubs_plain_addr.map(|a| a.port()),
        connection_string: running.service_connection_string(),
        event_hub_connection_string: running.event_hub_connection_string(),
        ca_path: running.ca_path.as_ref().map(|p| p.display().to_string()),
        ca_pem: running.ca_pem.clone(),
    });
    Ok(running)
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|e| StartError::Bind(format!("cannot read the listening address: {e}")))
}

/// Binds a listener, turning the common failures into advice.
async fn bind(ip: std::net::IpAddr, port: u16, what: &str, flag: &str) -> Result<TcpListener, StartError> {
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr).await.map_err(|error| bind_error(what, flag, addr, &error))
}

/// Says what went wrong binding `addr` and what the user can do about it.
fn bind_error(what: &str, flag: &str, addr: SocketAddr, error: &io::Error) -> StartError {
    let advice = match error.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "permission denied: ports below 1024 need root or the CAP_NET_BIND_SERVICE capability. Either pick \
             another port ({flag}), or allow low ports, e.g. `sudo setcap cap_net_bind_service=+ep <path to \
             iothub-emulator>` or `sudo sysctl net.ipv4.ip_unprivileged_port_start=443`. (Unmodified Azure SDKs \
             dial 443 and 8883; see the README for clients on other ports.)"
        ),
        io::ErrorKind::AddrInUse => format!(
            "port {} is already in use (another emulator?). Stop that process or pick another port ({flag})",
            addr.port()
        ),
        io::ErrorKind::AddrNotAvailable => format!("{} is not an address of this machine (--bind)", addr.ip()),
        _ => error.to_string(),
    };
    StartError::Bind(format!("cannot listen for {what} on {addr}: {advice}"))
}

impl RunningEmulator {
    /// The hub itself, for in-process inspection.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Where the HTTPS service API listens.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// Where the MQTT/TLS device endpoint listens.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// Where the AMQP/TLS endpoint listens.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addr
    }

    /// Where plain AMQP for Event Hubs clients' `UseDevelopmentEmulator=true` is served, when it is on.
    pub fn eventhubs_plain_addr(&self) -> Option<SocketAddr> {
        self.eventhubs_plain_addr
    }

    /// The CA certificate (PEM) that clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Where the CA certificate file is, when a data dir is used.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// The data dir, if any.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// The process's open-file limit, raised to the hard limit at start.
    pub fn open_file_limit(&self) -> u64 {
        self.open_file_limit
    }

    /// The most connections (MQTT and HTTPS together) served at once; more are refused.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// True when the registry survives a restart.
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// True when the data file could only be opened read-only: reads are served, every change fails.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The dashboard's sign-in link for this run (`https://<host>[:port]/?token=...`): whoever opens it is
    /// signed in with the owner's rights, so treat it as a secret like the owner connection string.
    pub fn dashboard_url(&self) -> String {
        self.dashboard.sign_in_url(self.host_name(), self.https_addr.port())
    }

    /// The hub's host name.
    pub fn host_name(&self) -> &str {
        self.hub.host_name()
    }

    /// The connection string of the `iothubowner` policy.
    pub fn service_connection_string(&self) -> String {
        self.policy_connection_string(OWNER_POLICY).unwrap_or_default()
    }

    /// The connection string of the named policy, if it exists.
    pub fn policy_connection_string(&self, policy: &str) -> Option<String> {
        let policy = self.hub.policies().get(policy)?;
        Some(
            ServiceConnectionString {
                host_name: self.hub.host_name().to_owned(),
                key_name: policy.key_name.clone(),
                key: policy.primary_key.clone(),
            }
            .to_string(),
        )
    }

    /// The Event Hub-compatible connection string of the built-in endpoint (as the portal shows it under
    /// Built-in endpoints), for the `iothubowner` policy. The port appears only when it is not 5671.
    pub fn event_hub_connection_string(&self) -> String {
        let Some(policy) = self.hub.policies().get(OWNER_POLICY) else { return String::new() };
        let host = self.hub.host_name();
        let endpoint = match self.amqp_addr.port() {
            config::DEFAULT_AMQP_PORT => host.to_owned(),
            port => format!("{host}:{port}"),
        };
        format!(
            "Endpoint=sb://{endpoint}/;SharedAccessKeyName={};SharedAccessKey={};EntityPath={}",
            policy.key_name,
            policy.primary_key,
            self.hub.event_hub_name()
        )
    }

    /// The connection string of a registered SAS device.
    pub fn device_connection_string(&self, device_id: &str) -> Result<String, HubError> {
        self.identity_connection_string(device_id, None)
    }

    /// The connection string (`...;ModuleId=..`) of a registered SAS module.
    pub fn module_connection_string(&self, device_id: &str, module_id: &str) -> Result<String, HubError> {
        self.identity_connection_string(device_id, Some(module_id))
    }

    fn identity_connection_string(&self, device_id: &str, module_id: Option<&str>) -> Result<String, HubError> {
        let identity = self.hub.get_device(&domain::registry::identity_key(device_id, module_id))?;
        let key = identity.authentication.primary_key.clone().ok_or_else(|| {
            HubError::ArgumentInvalid(format!("'{}' does not use SAS authentication", identity.key()))
        })?;
        Ok(DeviceConnectionString {
            host_name: self.hub.host_name().to_owned(),
            device_id: device_id.to_owned(),
            module_id: module_id.map(str::to_owned),
            key,
            gateway_host_name: None,
        }
        .to_string())
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), and waits for pending writes.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await.is_err() {
            tracing::warn!("some connections did not close within 5 s");
        }
        self.hub.close().await;
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_failures_come_with_advice() {
        let addr: SocketAddr = "127.0.0.1:443".parse().expect("addr");
        let denied = bind_error("HTTPS", "--https-port", addr, &io::Error::from(io::ErrorKind::PermissionDenied));
        let text = denied.to_string();
        assert!(
            text.contains("127.0.0.1:443") && text.contains("--https-port") && text.contains("CAP_NET_BIND_SERVICE"),
            "{text}"
        );
        let taken = bind_error("MQTT", "--mqtt-port", addr, &io::Error::from(io::ErrorKind::AddrInUse));
        assert!(taken.to_string().contains("port 443 is already in use"), "{taken}");
    }
}
