//! Endpoints only the emulator has, under `/emulator/`: what a real hub would route elsewhere (Event Hubs)
//! made visible for tests and debugging.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;

use super::request::{PathId, authorization};
use super::response::{ApiError, ok_json};
use crate::auth::Rights;
use crate::clock::format_time;
use crate::hub::Hub;

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
    let messages: Vec<_> = hub
        .recent_telemetry(&id)
        .iter()
        .map(|m| {
            json!({
                "deviceId": m.device_id,
                "enqueuedTime": format_time(m.enqueued_time),
                "body": std::str::from_utf8(&m.body).ok(),
                "bodyBase64": BASE64.encode(&m.body),
                "properties": m.properties,
                "systemProperties": m.system_properties,
            })
        })
        .collect();
    Ok(ok_json(&messages))
}
