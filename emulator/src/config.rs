//! What an emulator instance is started with, and the defaults the binary uses.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::{SharedClock, SystemClock};
use crate::domain::eventlog::LogSettings;
use crate::domain::throttle::Tier;
use crate::hub::JobSettings;

/// Default HTTPS port: the Node service SDK can dial no other.
pub const DEFAULT_HTTPS_PORT: u16 = 443;
/// Default MQTT/TLS port: the Python device SDK can dial no other.
pub const DEFAULT_MQTT_PORT: u16 = 8883;
/// Default AMQPS port: the Python service SDK can dial no other for cloud-to-device messages.
pub const DEFAULT_AMQP_PORT: u16 = 5671;
/// Default host name, as it appears in connection strings and certificates.
pub const DEFAULT_HOST_NAME: &str = "localhost";
/// The registry file inside the data dir.
pub const STORE_FILE: &str = "hub.redb";

/// Settings of one emulator instance.
#[derive(Clone)]
pub struct Config {
    /// Address the listeners bind to.
    pub bind: IpAddr,
    /// HTTPS (service API) port; 0 picks a free one.
    pub https_port: u16,
    /// MQTT over TLS port; 0 picks a free one.
    pub mqtt_port: u16,
    /// AMQP over TLS port; 0 picks a free one.
    pub amqp_port: u16,
    /// The hub's host name: the `HostName` of connection strings, the SAS audience and a certificate SAN.
    pub host_name: String,
    /// Where the CA, the policy keys and (unless `in_memory`) the registry live. `None`: nothing touches the
    /// disk; the CA and keys are made afresh (in-process tests).
    pub data_dir: Option<PathBuf>,
    /// Keep hub state (devices, twins) in memory only, even when a data dir is given.
    pub in_memory: bool,
    /// A JSON file of devices to create at start when they do not exist yet.
    pub seed: Option<PathBuf>,
    /// The hub's clock.
    pub clock: SharedClock,
    /// How jobs run: the active-job limit, retention, fan-out window.
    pub jobs: JobSettings,
    /// Most connections at once; `None`: as many as the open-file limit allows.
    pub max_connections: Option<usize>,
    /// The real hub's operation rates for one unit of this tier (429 ThrottlingException past them);
    /// `None`: no throttling.
    pub throttle: Option<Tier>,
    /// The built-in Event Hubs-compatible endpoint: partitions, retention, size cap, consumer groups.
    pub event_log: LogSettings,
    /// Port of plain (no TLS) AMQP on loopback for Event Hubs clients' `UseDevelopmentEmulator=true`; `None`: off.
    pub eventhubs_plain_port: Option<u16>,
}

impl Default for Config {
    /// The library default: loopback, ephemeral ports, nothing on disk.
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            https_port: 0,
            mqtt_port: 0,
            amqp_port: 0,
            host_name: DEFAULT_HOST_NAME.to_owned(),
            data_dir: None,
            in_memory: true,
            seed: None,
            clock: Arc::new(SystemClock),
            jobs: JobSettings::default(),
            max_connections: None,
            throttle: None,
            event_log: LogSettings::default(),
            eventhubs_plain_port: None,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("https_port", &self.https_port)
            .field("mqtt_port", &self.mqtt_port)
            .field("amqp_port", &self.amqp_port)
            .field("host_name", &self.host_name)
            .field("data_dir", &self.data_dir)
            .field("in_memory", &self.in_memory)
            .field("seed", &self.seed)
            .field("jobs", &self.jobs)
            .field("max_connections", &self.max_connections)
            .field("throttle", &self.throttle)
            .field("event_log", &self.event_log)
            .field("eventhubs_plain_port", &self.eventhubs_plain_port)
            .finish_non_exhaustive()
    }
}

/// The binary's default data dir: `$XDG_DATA_HOME/iothub-emulator`, else `~/.local/share/iothub-emulator`,
/// else `./.iothub-emulator`.
pub fn default_data_dir() -> PathBuf {
    let from_env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(xdg) = from_env("XDG_DATA_HOME") {
        return xdg.join("iothub-emulator");
    }
    if let Some(home) = from_env("HOME") {
        return home.join(".local").join("share").join("iothub-emulator");
    }
    PathBuf::from(".iothub-emulator")
}
