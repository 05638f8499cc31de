//! Endpoints only the emulator has, under `/emulator/`: what a real hub would route elsewhere (Event Hubs)
//! made visible, and the test-suite controls (health, reset, faults, recorded history). Every control but
//! health needs the owner's rights (a policy with every permission).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::request::{JsonBody, PathId, PathIds, authorization};
use super::response::{ApiError, json_response, ok_json};
use crate::auth::Rights;
use crate::domain::registry::identity_key;
use crate::error::HubError;
use crate::hub::Hub;
use crate::wire;
use iothub_proto::emulator::FaultRequest;

/// `GET /emulator/devices/{id}/messages/events`: the device's recent telemetry, oldest first, as
/// `[{deviceId, enqueuedTime, body (text, or null if not UTF-8), bodyBase64, properties, systemProperties}]`.
/// Needs ServiceConnect, like reading the hub's event stream.
pub async fn device_telemetry(
    State(hub): State<Arc<Hub>>,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    hub.authorize_service(authorization(&headers), &format!("devices/{id}"), Rights::SERVICE_CONNECT)?;
    hub.get_device(&id)?;
    let recent = hub.recent_telemetry(&id);
    let messages: Vec<_> = recent.iter().map(|m| wire::telemetry::message(m)).collect();
    Ok(ok_json(&messages))
}

/// While an outage fault is in force the service API answers 503 ServiceUnavailable (with `Retry-After`), as a
/// hub that is away would; the controls under `/emulator/` still answer, so a test can end it.
pub async fn refuse_during_outage(State(hub): State<Arc<Hub>>, request: Request, next: Next) -> Response {
    let Some(seconds) = hub.outage_seconds_left() else { return next.run(request).await };
    let error = HubError::ServiceUnavailable(format!("The hub is unavailable (emulator outage fault) for {seconds} s"));
    let mut response = ApiError(error).into_response();
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// `GET /emulator/health`: no credentials needed (wait loops, container health checks).
pub async fn health(State(hub): State<Arc<Hub>>) -> Response {
    let faults = hub.faults();
    let outage = hub.outage().is_some();
    ok_json(&wire::controls::health(hub.host_name(), hub.started_at(), faults.len(), outage))
}

/// `POST /emulator/reset`: the hub emptied for the next test (CA, policies and keys kept).
pub async fn reset(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Response, ApiError> {
    hub.authorize_owner(authorization(&headers), "emulator/reset")?;
    let summary = hub.reset().await?;
    Ok(ok_json(&wire::controls::reset(summary)))
}

/// `GET /emulator/faults`: the faults in force.
pub async fn list_faults(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Response, ApiError> {
    hub.authorize_owner(authorization(&headers), "emulator/faults")?;
    let faults: Vec<_> = hub.faults().iter().map(wire::controls::fault).collect();
    Ok(ok_json(&faults))
}

/// `POST /emulator/faults`: puts a fault in force; 201 with the fault.
pub async fn add_fault(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<FaultRequest>,
) -> Result<Response, ApiError> {
    hub.authorize_owner(authorization(&headers), "emulator/faults")?;
    let spec = wire::controls::parse_fault(&request)?;
    let fault = hub.inject_fault(spec)?;
    Ok(json_response(StatusCode::CREATED, &wire::controls::fault(&fault)))
}

/// `DELETE /emulator/faults`: ends every fault.
pub async fn clear_faults(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Response, ApiError> {
    hub.authorize_owner(authorization(&headers), "emulator/faults")?;
    hub.clear_faults();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /emulator/faults/{id}`: ends one fault.
pub async fn remove_fault(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    hub.authorize_owner(authorization(&headers), "emulator/faults")?;
    let id =
        id.parse().map_err(|_| HubError::NotFound(format!("No fault with id {} is in force", id.escape_debug())))?;
    hub.remove_fault(id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn method_calls(hub: &Hub, headers: &HeaderMap, key: &str) -> Result<Response, ApiError> {
    hub.authorize_owner(authorization(headers), "emulator/devices")?;
    let records: Vec<_> = hub.method_history(key)?.iter().map(wire::controls::method_call).collect();
    Ok(ok_json(&records))
}

fn twin_changes(hub: &Hub, headers: &HeaderMap, key: &str) -> Result<Response, ApiError> {
    hub.authorize_owner(authorization(headers), "emulator/devices")?;
    let records: Vec<_> = hub.twin_history(key)?.iter().map(wire::controls::twin_change).collect();
    Ok(ok_json(&records))
}

/// `GET /emulator/devices/{id}/methodCalls`: the device's recent method calls, newest first.
pub async fn device_method_calls(
    State(hub): State<Arc<Hub>>,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    method_calls(&hub, &headers, &id)
}

/// `GET /emulator/devices/{id}/modules/{mid}/methodCalls`.
pub async fn module_method_calls(
    State(hub): State<Arc<Hub>>,
    PathIds(id, mid): PathIds,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    method_calls(&hub, &headers, &identity_key(&id, Some(&mid)))
}

/// `GET /emulator/devices/{id}/twinChanges`: the device's recent twin changes, newest first.
pub async fn device_twin_changes(
    State(hub): State<Arc<Hub>>,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    twin_changes(&hub, &headers, &id)
}

/// `GET /emulator/devices/{id}/modules/{mid}/twinChanges`.
pub async fn module_twin_changes(
    State(hub): State<Arc<Hub>>,
    PathIds(id, mid): PathIds,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    twin_changes(&hub, &headers, &identity_key(&id, Some(&mid)))
}

/// A cloud-to-device message from the dashboard (the SDKs send them over AMQP, which a browser cannot).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessage {
    body: String,
    #[serde(default)]
    properties: serde_json::Map<String, serde_json::Value>,
    message_id: Option<String>,
    ack: Option<String>,
}

/// `POST /emulator/devices/{id}/messages/devicebound`: queues a cloud-to-device message (owner rights); 204
/// once it is durable, with the hub's errors (`DeviceNotFound`, `DeviceMaximumQueueDepthExceeded`, ...).
pub async fn send_message(
    State(hub): State<Arc<Hub>>,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SendMessage>,
) -> Result<Response, ApiError> {
    hub.authorize_owner(authorization(&headers), "emulator/devices")?;
    let ack = match request.ack.as_deref() {
        None => iothub_proto::messages::Ack::None,
        Some(text) => iothub_proto::messages::Ack::parse(text).ok_or_else(|| {
            HubError::ArgumentInvalid(format!(
                "ack must be none, positive, negative or full, not '{}'",
                text.escape_debug()
            ))
        })?,
    };
    let properties = request
        .properties
        .into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(text) => (key, text),
            other => (key, other.to_string()),
        })
        .collect();
    let message = crate::domain::c2d::Message {
        message_id: request.message_id.filter(|id| !id.is_empty()),
        correlation_id: None,
        user_id: None,
        content_type: None,
        content_encoding: None,
        expiry: None,
        ack,
        properties,
        body: request.body.into_bytes(),
    };
    hub.send_message(&id, message).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
