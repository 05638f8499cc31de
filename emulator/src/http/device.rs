//! The device side of HTTPS (the Node SDK's `azure-iot-device-http` transport): pulling cloud-to-device messages
//! (`GET /devices/{id}/messages/deviceBound`, 204 when none waits), settling them by their lock token
//! (complete `DELETE .../{etag}`, reject `DELETE .../{etag}?reject`, abandon `POST .../{etag}/abandon`) and
//! sending telemetry (`POST /devices/{id}/messages/events`, properties in `iothub-*` headers). Only the device's
//! own token (or a policy with DeviceConnect) opens its paths.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::messages::lock_token;
use super::request::{authorization, form_pairs};
use super::response::ApiError;
use crate::domain::c2d::Settlement;
use crate::domain::telemetry::{self, TelemetryMessage};
use crate::domain::throttle::Operation;
use crate::error::HubError;
use crate::hub::Hub;
use crate::wire;

type ApiResult = Result<Response, ApiError>;

/// Checks the device's own token on one of its paths, and notes its activity.
fn authorize(hub: &Hub, device_id: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = authorization(headers).ok_or(HubError::Unauthorized)?;
    hub.authorize_device(device_id, token)?;
    hub.touch(device_id);
    Ok(())
}

/// `GET /devices/{id}/messages/deviceBound`: the next message, locked for a minute.
pub async fn receive(State(hub): State<Arc<Hub>>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    authorize(&hub, &id, &headers)?;
    hub.admit(Operation::CloudToDeviceReceive, 1.0)?;
    let Some(delivery) = hub.receive_message(&id)? else { return Ok(StatusCode::NO_CONTENT.into_response()) };
    let message_headers = wire::messages::http_headers(&id, &delivery.message, &delivery.token);
    let mut response = (StatusCode::OK, delivery.message.message.body).into_response();
    for (name, value) in message_headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(&value)) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// `DELETE /devices/{id}/messages/deviceBound/{etag}[?reject]`: completes (or rejects) a message (204).
pub async fn complete(
    State(hub): State<Arc<Hub>>,
    Path((id, etag)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&hub, &id, &headers)?;
    let reject = form_pairs(query.as_deref().unwrap_or("")).any(|(key, _)| key.eq_ignore_ascii_case("reject"));
    let how = if reject { Settlement::Reject } else { Settlement::Complete };
    hub.settle_message(&id, lock_token(&etag), how).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /devices/{id}/messages/deviceBound/{etag}/abandon`: gives a message back to the queue (204).
pub async fn abandon(
    State(hub): State<Arc<Hub>>,
    Path((id, etag)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&hub, &id, &headers)?;
    hub.settle_message(&id, lock_token(&etag), Settlement::Abandon).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// System properties sent as headers, by header name and the property's full name.
const SYSTEM_HEADERS: [(&str, &str); 7] = [
    ("iothub-messageid", "messageId"),
    ("iothub-correlationid", "correlationId"),
    ("iothub-userid", "userId"),
    ("iothub-contenttype", "contentType"),
    ("iothub-contentencoding", "contentEncoding"),
    ("iothub-expiry", "absoluteExpiryTime"),
    ("iothub-to", "to"),
];

/// `POST /devices/{id}/messages/events`: a device-to-cloud message (204), recorded like one sent over MQTT.
pub async fn telemetry(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize(&hub, &id, &headers)?;
    if body.len() > telemetry::MAX_BODY_BYTES {
        return Err(HubError::MessageTooLarge(format!(
            "The message is {} bytes; the limit is {}",
            body.len(),
            telemetry::MAX_BODY_BYTES
        ))
        .into());
    }
    hub.admit_wait(Operation::DeviceToCloud, 1.0).await;
    let mut system_properties = BTreeMap::new();
    let mut properties = BTreeMap::new();
    for (name, value) in &headers {
        let Ok(value) = value.to_str() else { continue };
        let name = name.as_str();
        if let Some(property) = name.strip_prefix("iothub-app-") {
            properties.insert(property.to_owned(), value.to_owned());
        } else if let Some((_, full)) = SYSTEM_HEADERS.iter().find(|(header, _)| *header == name) {
            system_properties.insert((*full).to_owned(), value.to_owned());
        }
    }
    hub.record_telemetry(TelemetryMessage {
        device_id: id,
        module_id: None,
        generation_id: String::new(),
        enqueued_time: hub.clock().now(),
        body,
        system_properties,
        properties,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
