//! The JSON of the emulator-only test-suite controls under `/emulator/`: faults, recorded history, health and
//! reset. No real hub has these; the shapes follow the hub's conventions (camelCase, ISO 8601 times) and are
//! shared with the Rust service client through `iothub_proto::emulator`.

use std::time::Duration;

use iothub_proto::emulator::{FaultDocument, FaultRequest, Health, MethodCallRecord, ResetResult, TwinChangeDocument};

use crate::clock::format_time;
use crate::domain::faults::{Fault, FaultKind, FaultSpec};
use crate::domain::history::{MethodOutcome, MethodRecord, TwinChangeRecord, TwinSection};
use crate::domain::registry::{identity_key, split_key, validate_device_id};
use crate::domain::twin::json::object_to_json;
use crate::error::HubError;
use crate::hub::ResetSummary;

/// Reads a `POST /emulator/faults` body into a fault to put in force.
pub fn parse_fault(request: &FaultRequest) -> Result<FaultSpec, HubError> {
    let invalid = |what: String| HubError::ArgumentInvalid(what);
    let delay = || {
        request
            .delay_ms
            .map(Duration::from_millis)
            .ok_or_else(|| invalid(format!("a {} fault needs delayMs", request.kind)))
    };
    let kind = match request.kind.as_str() {
        "disconnect" => FaultKind::Disconnect,
        "outage" => FaultKind::Outage,
        "methodsUndelivered" => FaultKind::MethodsUndelivered,
        "methodsLate" => FaultKind::MethodsLate { delay: delay()? },
        "twinErrors" => FaultKind::TwinErrors { status: request.status.unwrap_or(500) },
        "withholdTelemetryAcks" => FaultKind::WithholdTelemetryAcks,
        "latency" => FaultKind::Latency { delay: delay()? },
        other => {
            return Err(invalid(format!(
                "unknown fault kind '{}'; one of disconnect, outage, methodsUndelivered, methodsLate, twinErrors, \
                 withholdTelemetryAcks, latency",
                other.escape_debug()
            )));
        }
    };
    let target = match (&request.device_id, &request.module_id) {
        (None, Some(_)) => return Err(invalid("moduleId needs a deviceId".into())),
        (None, None) => None,
        (Some(device_id), module_id) => {
            validate_device_id(device_id).map_err(|e| invalid(format!("deviceId: {e}")))?;
            if let Some(module_id) = module_id {
                validate_device_id(module_id).map_err(|e| invalid(format!("moduleId: {e}")))?;
            }
            Some(identity_key(device_id, module_id.as_deref()))
        }
    };
    let seconds = request.duration_seconds.ok_or_else(|| invalid("durationSeconds is required".into()))?;
    Ok(FaultSpec { kind, target, duration: Duration::from_secs(seconds) })
}

/// A fault as `/emulator/faults` lists it.
pub fn fault(fault: &Fault) -> FaultDocument {
    let (device_id, module_id) = match fault.target.as_deref().map(split_key) {
        Some((device_id, module_id)) => (Some(device_id.to_owned()), module_id.map(str::to_owned)),
        None => (None, None),
    };
    let (delay_ms, status) = match fault.kind {
        FaultKind::MethodsLate { delay } | FaultKind::Latency { delay } => {
            (Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)), None)
        }
        FaultKind::TwinErrors { status } => (None, Some(status)),
        _ => (None, None),
    };
    FaultDocument {
        id: fault.id.to_string(),
        kind: fault.kind.name().to_owned(),
        device_id,
        module_id,
        delay_ms,
        status,
        start_time: format_time(fault.started),
        end_time: format_time(fault.ends),
    }
}

/// A recorded method call: the request payload as JSON when it still is (it may have been cut), else as text.
pub fn method_call(record: &MethodRecord) -> MethodCallRecord {
    let payload =
        serde_json::from_str(&record.payload).unwrap_or_else(|_| serde_json::Value::String(record.payload.clone()));
    let (status, response, error_code, message) = match &record.outcome {
        MethodOutcome::Answered { status, payload } => (Some(*status), Some(payload.clone()), None, None),
        MethodOutcome::Failed { error_code, message } => {
            (None, None, Some((*error_code).to_owned()), Some(message.clone()))
        }
    };
    MethodCallRecord {
        time: format_time(record.time),
        method_name: record.name.clone(),
        payload,
        status,
        response,
        error_code,
        message,
        duration_ms: u64::try_from(record.duration.as_millis()).unwrap_or(u64::MAX),
    }
}

/// A recorded twin change.
pub fn twin_change(record: &TwinChangeRecord) -> TwinChangeDocument {
    let section = match record.section {
        TwinSection::Desired => "desired",
        TwinSection::Tags => "tags",
        TwinSection::Reported => "reported",
    };
    TwinChangeDocument {
        time: format_time(record.time),
        section: section.to_owned(),
        replaced: record.replaced,
        version: record.version,
        patch: serde_json::Value::Object(object_to_json(&record.patch)),
    }
}

/// `GET /emulator/health`.
pub fn health(host_name: &str, started: jiff::Timestamp, faults: usize, outage: bool) -> Health {
    Health {
        status: if outage { "outage" } else { "healthy" }.to_owned(),
        host_name: host_name.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        start_time: format_time(started),
        active_faults: faults,
    }
}

/// `POST /emulator/reset`.
pub fn reset(summary: ResetSummary) -> ResetResult {
    ResetResult { devices_deleted: summary.devices, modules_deleted: summary.modules, jobs_deleted: summary.jobs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> FaultRequest {
        serde_json::from_str(json).expect("request")
    }

    #[test]
    fn fault_requests_are_read_with_their_kind_specific_fields() {
        let spec =
            parse_fault(&request(r#"{"kind":"methodsLate","deviceId":"d1","delayMs":1500,"durationSeconds":30}"#))
                .expect("late");
        assert_eq!(spec.kind, FaultKind::MethodsLate { delay: Duration::from_millis(1500) });
        assert_eq!((spec.target.as_deref(), spec.duration), (Some("d1"), Duration::from_secs(30)));
        let module = parse_fault(&request(
            r#"{"kind":"twinErrors","deviceId":"d1","moduleId":"m","status":429,"durationSeconds":5}"#,
        ))
        .expect("module");
        assert_eq!((module.kind, module.target.as_deref()), (FaultKind::TwinErrors { status: 429 }, Some("d1/m")));
        let outage = parse_fault(&request(r#"{"kind":"outage","durationSeconds":30}"#)).expect("outage");
        assert_eq!((outage.kind, outage.target), (FaultKind::Outage, None));
    }

    #[test]
    fn bad_fault_requests_say_what_is_wrong() {
        let cases = [
            (r#"{"kind":"meteor","durationSeconds":1}"#, "unknown fault kind 'meteor'"),
            (r#"{"kind":"latency","deviceId":"d","durationSeconds":1}"#, "needs delayMs"),
            (r#"{"kind":"disconnect","deviceId":"d"}"#, "durationSeconds is required"),
            (r#"{"kind":"disconnect","moduleId":"m","durationSeconds":1}"#, "moduleId needs a deviceId"),
            (r#"{"kind":"disconnect","deviceId":"a b","durationSeconds":1}"#, "deviceId"),
        ];
        for (json, expected) in cases {
            let error = parse_fault(&request(json)).expect_err(json);
            assert!(error.to_string().contains(expected), "{json}: {error}");
        }
    }
}
