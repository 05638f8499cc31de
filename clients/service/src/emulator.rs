//! **Emulator only.** The test-suite controls of iothub-emulator (`/emulator/...`): faults, recorded history,
//! health and reset. A real IoT Hub has none of these and answers 404; use them only in tests that run against
//! the emulator.

use std::time::Duration;

use iothub_proto::emulator::{FaultDocument, FaultRequest, Health, MethodCallRecord, ResetResult, TwinChangeDocument};
use reqwest::Method;

use crate::client::{Call, Safety, ServiceClient, segment};
use crate::error::Error;

/// **Emulator only**: faults, recorded calls and twin changes, health and reset. Needs a connection string of
/// a policy with every permission (`iothubowner`); health needs none.
#[derive(Clone)]
pub struct EmulatorControls {
    client: ServiceClient,
}

fn identity_path(device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(module_id) => format!("/emulator/devices/{}/modules/{}", segment(device_id), segment(module_id)),
        None => format!("/emulator/devices/{}", segment(device_id)),
    }
}

fn on_device(kind: &str, device_id: &str, duration: Duration) -> FaultRequest {
    FaultRequest {
        kind: kind.into(),
        device_id: Some(device_id.into()),
        duration_seconds: Some(duration.as_secs().max(1)),
        ..Default::default()
    }
}

fn millis(delay: Duration) -> Option<u64> {
    Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
}

impl EmulatorControls {
    pub(crate) fn new(client: ServiceClient) -> Self {
        Self { client }
    }

    /// The emulator's health (`healthy`, or `outage` while an outage fault is in force).
    pub async fn health(&self) -> Result<Health, Error> {
        self.client.send(Call::new(Method::GET, "/emulator/health".into(), Safety::Idempotent)).await?.json()
    }

    /// Empties the hub: devices, modules, jobs, messages, telemetry, faults and history go; keys stay.
    pub async fn reset(&self) -> Result<ResetResult, Error> {
        self.client.send(Call::new(Method::POST, "/emulator/reset".into(), Safety::Idempotent)).await?.json()
    }

    /// Puts any fault in force (see [`FaultRequest`] for the kinds).
    pub async fn inject_fault(&self, request: &FaultRequest) -> Result<FaultDocument, Error> {
        let body = serde_json::to_value(request).map_err(|e| Error::Config(e.to_string()))?;
        self.client.send(Call::new(Method::POST, "/emulator/faults".into(), Safety::Once).body(body)).await?.json()
    }

    /// Drops the device's connection now and refuses its reconnects (CONNACK 3) for `refuse_for`.
    pub async fn disconnect(&self, device_id: &str, refuse_for: Duration) -> Result<FaultDocument, Error> {
        self.inject_fault(&on_device("disconnect", device_id, refuse_for)).await
    }

    /// A hub outage for `duration`: every device connection closed, new ones refused, the service API 503.
    pub async fn outage(&self, duration: Duration) -> Result<FaultDocument, Error> {
        let request = FaultRequest {
            kind: "outage".into(),
            duration_seconds: Some(duration.as_secs().max(1)),
            ..Default::default()
        };
        self.inject_fault(&request).await
    }

    /// The device's method calls are not delivered for `duration`: callers get 504101 GatewayTimeout.
    pub async fn methods_undelivered(&self, device_id: &str, duration: Duration) -> Result<FaultDocument, Error> {
        self.inject_fault(&on_device("methodsUndelivered", device_id, duration)).await
    }

    /// The device's method calls reach it `delay` late, for `duration`.
    pub async fn methods_late(
        &self,
        device_id: &str,
        delay: Duration,
        duration: Duration,
    ) -> Result<FaultDocument, Error> {
        let request = FaultRequest { delay_ms: millis(delay), ..on_device("methodsLate", device_id, duration) };
        self.inject_fault(&request).await
    }

    /// The device's twin requests are answered with `status` (429 or 500), for `duration`.
    pub async fn twin_errors(&self, device_id: &str, status: u16, duration: Duration) -> Result<FaultDocument, Error> {
        let request = FaultRequest { status: Some(status), ..on_device("twinErrors", device_id, duration) };
        self.inject_fault(&request).await
    }

    /// The PUBACKs of the device's telemetry are held back for `duration` (the messages are kept).
    pub async fn withhold_telemetry_acks(&self, device_id: &str, duration: Duration) -> Result<FaultDocument, Error> {
        self.inject_fault(&on_device("withholdTelemetryAcks", device_id, duration)).await
    }

    /// Everything the hub sends the device goes out `delay` late, for `duration`.
    pub async fn latency(&self, device_id: &str, delay: Duration, duration: Duration) -> Result<FaultDocument, Error> {
        let request = FaultRequest { delay_ms: millis(delay), ..on_device("latency", device_id, duration) };
        self.inject_fault(&request).await
    }

    /// The faults in force.
    pub async fn faults(&self) -> Result<Vec<FaultDocument>, Error> {
        self.client.send(Call::new(Method::GET, "/emulator/faults".into(), Safety::Idempotent)).await?.json()
    }

    /// Ends one fault early.
    pub async fn remove_fault(&self, id: &str) -> Result<(), Error> {
        let path = format!("/emulator/faults/{}", segment(id));
        self.client.send(Call::new(Method::DELETE, path, Safety::Idempotent)).await.map(drop)
    }

    /// Ends every fault.
    pub async fn clear_faults(&self) -> Result<(), Error> {
        self.client.send(Call::new(Method::DELETE, "/emulator/faults".into(), Safety::Idempotent)).await.map(drop)
    }

    /// The direct methods called on a device (or one of its modules) lately, newest first.
    pub async fn method_calls(&self, device_id: &str, module_id: Option<&str>) -> Result<Vec<MethodCallRecord>, Error> {
        let path = format!("{}/methodCalls", identity_path(device_id, module_id));
        self.client.send(Call::new(Method::GET, path, Safety::Idempotent)).await?.json()
    }

    /// The changes to a device's (or module's) twin lately, newest first.
    pub async fn twin_changes(
        &self,
        device_id: &str,
        module_id: Option<&str>,
    ) -> Result<Vec<TwinChangeDocument>, Error> {
        let path = format!("{}/twinChanges", identity_path(device_id, module_id));
        self.client.send(Call::new(Method::GET, path, Safety::Idempotent)).await?.json()
    }
}
