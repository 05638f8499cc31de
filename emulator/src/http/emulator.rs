//! Endpoints only the emulator has, under `/emulator/`: what a real hub would route elsewhere (Event Hubs)
//! made visible for tests and debugging.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::request::{PathId, authorization};
use super::response::{ApiError, ok_json};
use crate::auth::Rights;
use crate::hub::Hub;
use crate::wire;

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
