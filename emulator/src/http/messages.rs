//! Cloud-to-device endpoints of the service API: reading delivery feedback over HTTPS (the Python SDK's way:
//! `GET /messages/serviceBound/feedback`, complete `DELETE .../{lockToken}`, abandon
//! `POST .../{lockToken}/abandon`) and purging a device's queue (`DELETE /devices/{id}/commands`). Sending is
//! AMQP only, as on the hub.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::request::{PathId, authorization};
use super::response::{ApiError, ok_json};
use crate::auth::Rights;
use crate::hub::Hub;
use crate::wire;

type ApiResult = Result<Response, ApiError>;

/// A lock token from a path, with the quotes of an `ETag` it may have been copied from.
pub fn lock_token(raw: &str) -> &str {
    let raw = raw.trim();
    raw.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(raw)
}

fn authorize(hub: &Hub, headers: &HeaderMap) -> Result<(), ApiError> {
    hub.authorize_service(authorization(headers), "messages/servicebound/feedback", Rights::SERVICE_CONNECT)?;
    Ok(())
}

/// `GET /messages/serviceBound/feedback`: the waiting feedback records as one message, locked for a minute (its
/// lock token in `ETag`); 204 when none waits.
pub async fn receive_feedback(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> ApiResult {
    authorize(&hub, &headers)?;
    let Some(batch) = hub.receive_feedback() else { return Ok(StatusCode::NO_CONTENT.into_response()) };
    let mut response = (StatusCode::OK, wire::messages::feedback_body(&batch)).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(wire::messages::FEEDBACK_CONTENT_TYPE));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", batch.token)) {
        response_headers.insert(header::ETAG, etag);
    }
    Ok(response)
}

/// `DELETE /messages/serviceBound/feedback/{lockToken}`: completes a feedback message (204).
pub async fn complete_feedback(
    State(hub): State<Arc<Hub>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&hub, &headers)?;
    hub.complete_feedback(lock_token(&token)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /messages/serviceBound/feedback/{lockToken}/abandon`: gives a feedback message back (204).
pub async fn abandon_feedback(State(hub): State<Arc<Hub>>, Path(token): Path<String>, headers: HeaderMap) -> ApiResult {
    authorize(&hub, &headers)?;
    hub.abandon_feedback(lock_token(&token))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /devices/{id}/commands`: removes every message waiting for the device (200 with the count).
pub async fn purge(State(hub): State<Arc<Hub>>, PathId(id): PathId, headers: HeaderMap) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("devices/{id}/commands"), Rights::SERVICE_CONNECT)?;
    let total_messages_purged = hub.purge_messages(&id).await?;
    let answer = wire::messages::PurgeMessageQueueResult {
        total_messages_purged: u64::try_from(total_messages_purged).unwrap_or(u64::MAX),
        device_id: id,
        module_id: None,
    };
    Ok(ok_json(&answer))
}
