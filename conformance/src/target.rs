//! Where scenarios run: the in-process emulator (always, offline) or a real Azure IoT Hub (when
//! `IOTHUB_CONNECTION_STRING` is set), reached the same way through the Rust clients.

use std::sync::Arc;

use iothub_device::{ClientOptions, Trust};
use iothub_emulator::{Emulator, RunningEmulator};
use iothub_service::{EventHubConsumer, ServiceClient, ServiceOptions};

/// The environment variable with a real hub's connection string. Its policy needs registry read and write
/// and service connect (e.g. `iothubowner`).
pub const AZURE_CONNECTION_STRING: &str = "IOTHUB_CONNECTION_STRING";
/// The environment variable with that hub's Event Hub-compatible connection string (the portal's Built-in
/// endpoints); without it, scenarios against Azure skip reading telemetry back.
pub const AZURE_EVENT_HUB_CONNECTION_STRING: &str = "IOTHUB_EVENTHUB_CONNECTION_STRING";

/// Which hub a run talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Emulator,
    Azure,
}

impl TargetKind {
    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Emulator => "emulator",
            Self::Azure => "azure",
        }
    }
}

/// A hub to run scenarios against, with clients configured for it.
pub struct Target {
    pub kind: TargetKind,
    /// The service client (the connection string's policy).
    pub service: ServiceClient,
    /// Options for device clients: trust and ports.
    pub device_options: ClientOptions,
    /// The hub's host name.
    pub host_name: String,
    /// The policy connection string.
    pub connection_string: String,
    /// HTTPS port of the service API.
    pub https_port: u16,
    /// MQTT/TLS port of the device endpoint.
    pub mqtt_port: u16,
    /// TLS settings for the raw requests of the bad-input scenarios.
    pub tls: Arc<rustls::ClientConfig>,
    /// A reader of the hub's built-in Event Hubs-compatible endpoint (`$Default`), when it is known.
    pub event_hub: Option<EventHubConsumer>,
    /// The in-process emulator, kept running while the target lives.
    pub emulator: Option<RunningEmulator>,
}

impl Target {
    /// A fresh in-process emulator on loopback (ephemeral ports, nothing on disk).
    pub async fn emulator() -> anyhow::Result<Self> {
        let emulator = Emulator::builder().start().await?;
        let ca = emulator.ca_pem().to_owned();
        let (https_port, mqtt_port) = (emulator.https_addr().port(), emulator.mqtt_addr().port());
        let connection_string = emulator.service_connection_string();
        let service = ServiceClient::from_connection_string(
            &connection_string,
            ServiceOptions::default()
                .with_ca_pem(ca.clone())
                .with_port(https_port)
                .with_amqp_port(emulator.amqp_addr().port()),
        )?;
        Ok(Self {
            kind: TargetKind::Emulator,
            service,
            device_options: ClientOptions::default().with_ca_pem(ca.clone()).with_port(mqtt_port),
            host_name: emulator.host_name().to_owned(),
            connection_string,
            https_port,
            mqtt_port,
            tls: Arc::new(Trust::CaPem(ca.clone()).client_config(&[])?),
            event_hub: Some(EventHubConsumer::from_connection_string(
                &emulator.event_hub_connection_string(),
                "$Default",
                Trust::CaPem(ca.clone()),
            )?),
            emulator: Some(emulator),
        })
    }

    /// The real hub named by `IOTHUB_CONNECTION_STRING`, or `None` when it is not set.
    pub fn azure_from_env() -> anyhow::Result<Option<Self>> {
        let Ok(connection_string) = std::env::var(AZURE_CONNECTION_STRING) else { return Ok(None) };
        let parsed: iothub_proto::ServiceConnectionString = connection_string.parse()?;
        let service = ServiceClient::from_connection_string(&connection_string, ServiceOptions::default())?;
        Ok(Some(Self {
            kind: TargetKind::Azure,
            service,
            device_options: ClientOptions::default(),
            host_name: parsed.host_name,
            connection_string,
            https_port: 443,
            mqtt_port: 8883,
            tls: Arc::new(Trust::PlatformRoots.client_config(&[])?),
            event_hub: std::env::var(AZURE_EVENT_HUB_CONNECTION_STRING)
                .ok()
                .map(|cs| EventHubConsumer::from_connection_string(&cs, "$Default", Trust::PlatformRoots))
                .transpose()?,
            emulator: None,
        }))
    }

    /// How to connect a device on this target.
    pub fn device_options(&self) -> ClientOptions {
        self.device_options.clone()
    }
}
