//! Emulator-only test-suite controls under `/emulator/` (no real hub has them): faults to put in force, the
//! recorded method calls and twin changes of a device, health and reset. One definition, rendered by the
//! emulator and read by the Rust service client's `emulator()` extension.

use serde::{Deserialize, Serialize};

/// `POST /emulator/faults`: a fault to put in force for `durationSeconds`.
///
/// `kind` is one of `disconnect`, `outage` (hub-wide, no `deviceId`), `methodsUndelivered`, `methodsLate`
/// (with `delayMs`), `twinErrors` (with `status` 429 or 500), `withholdTelemetryAcks`, `latency` (with `delayMs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRequest {
    /// What the fault does.
    pub kind: String,
    /// The device it targets (all but `outage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The module of that device it targets, if the target is a module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The delay of `methodsLate` and `latency`, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The status of `twinErrors` answers: 429 or 500 (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How long the fault lasts; it ends by itself then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u64>,
}

/// A fault in force, as `/emulator/faults` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultDocument {
    /// The id to remove it by (`DELETE /emulator/faults/{id}`).
    pub id: String,
    /// What it does (as in [`FaultRequest::kind`]).
    pub kind: String,
    /// The device it targets, if not hub-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The module it targets, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The added delay, for `methodsLate` and `latency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The answered status, for `twinErrors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// When it was put in force (ISO 8601).
    pub start_time: String,
    /// When it ends by itself (ISO 8601).
    pub end_time: String,
}

/// One direct method call on a device, as the hub recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodCallRecord {
    /// When the call came in (ISO 8601).
    pub time: String,
    /// The method's name.
    pub method_name: String,
    /// The request payload (as sent; a string when it was cut for being long).
    pub payload: serde_json::Value,
    /// The device's status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    /// The device's answer payload, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
    /// The hub's error code when it did not (`GatewayTimeout`, `DeviceNotOnline`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The error's message, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How long the call took.
    pub duration_ms: u64,
}

/// One change to a twin, as the hub recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TwinChangeDocument {
    /// When it was made (ISO 8601).
    pub time: String,
    /// `desired` or `tags` (by the service) or `reported` (by the device).
    pub section: String,
    /// True when the section was replaced (PUT), not merged into.
    pub replaced: bool,
    /// The section's `$version` after the change (none for tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The patch as written (the whole section, for a replace).
    pub patch: serde_json::Value,
}

/// `GET /emulator/health`: answered without credentials, for wait loops and container health checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `healthy`, or `outage` while an outage fault is in force.
    pub status: String,
    /// The hub's host name.
    pub host_name: String,
    /// The emulator's version.
    pub version: String,
    /// When this run started (ISO 8601).
    pub start_time: String,
    /// Faults in force.
    pub active_faults: usize,
}

/// `POST /emulator/reset`: what was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetResult {
    /// Devices removed.
    pub devices_deleted: usize,
    /// Modules removed.
    pub modules_deleted: usize,
    /// Jobs removed.
    pub jobs_deleted: usize,
}
