//! Twin and direct-method endpoints: `GET/PATCH/PUT /twins/{id}`, `POST /twins/{id}/methods`. Module twins
//! and methods (`http::modules`) come through the same functions with the module's identity key.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;

use super::request::{JsonBody, PathId, authorization, if_match};
use super::response::{ApiError, ok_json};
use crate::auth::Rights;
use crate::domain::registry::split_key;
use crate::domain::throttle::Operation;
use crate::domain::twin::WriteMode;
use crate::hub::Hub;
use crate::wire;
use crate::wire::methods::MethodBody;
use crate::wire::twin::TwinDocument;

type ApiResult = Result<Response, ApiError>;

/// Twin reads need ServiceConnect (the docs' permission for twins) or RegistryRead (the twin repeats registry
/// data, and registryRead callers query twins too); writes need ServiceConnect or RegistryWrite.
const TWIN_READ: Rights = Rights::SERVICE_CONNECT.union(Rights::REGISTRY_READ);
const TWIN_WRITE: Rights = Rights::SERVICE_CONNECT.union(Rights::REGISTRY_WRITE);

/// `twins/<id>` or `twins/<id>/modules/<mid>`: the resource a token must cover for the twin of `key`.
fn twin_path(key: &str) -> String {
    match split_key(key) {
        (device_id, Some(module_id)) => format!("twins/{device_id}/modules/{module_id}"),
        (device_id, None) => format!("twins/{device_id}"),
    }
}

/// `GET /twins/{id}`: the full twin document.
pub async fn get_twin(State(hub): State<Arc<Hub>>, PathId(id): PathId, headers: HeaderMap) -> ApiResult {
    read(&hub, &id, &headers)
}

/// Reads the twin of a device or module (`key`).
pub(super) fn read(hub: &Hub, key: &str, headers: &HeaderMap) -> ApiResult {
    hub.authorize_service(authorization(headers), &twin_path(key), TWIN_READ)?;
    hub.admit(Operation::TwinRead, 1.0)?;
    Ok(ok_json(&TwinDocument::of(&hub.twin(key)?)))
}

/// `PATCH /twins/{id}`: merge tags and desired properties.
pub async fn patch_twin(
    State(hub): State<Arc<Hub>>,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    write(&hub, &id, &headers, &body, WriteMode::Merge).await
}

/// `PUT /twins/{id}`: replace tags and desired properties (sections left out stay as they are).
pub async fn replace_twin(
    State(hub): State<Arc<Hub>>,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    write(&hub, &id, &headers, &body, WriteMode::Replace).await
}

/// A service write of the twin of a device or module (`key`).
pub(super) async fn write(hub: &Hub, key: &str, headers: &HeaderMap, body: &Value, mode: WriteMode) -> ApiResult {
    hub.authorize_service(authorization(headers), &twin_path(key), TWIN_WRITE)?;
    hub.admit(Operation::TwinUpdate, 1.0)?;
    let twin_write = wire::twin::parse_write(body)?;
    let written = hub.write_twin(key, &twin_write, mode, if_match(headers)?.as_ref()).await?;
    Ok(ok_json(&TwinDocument::of(&written)))
}

/// `POST /twins/{id}/methods`: invoke a direct method and answer `{status, payload}` with HTTP 200 whatever
/// status the device chose; 404103 when it is not online, 504101 when it does not answer in time.
pub async fn invoke_method(
    State(hub): State<Arc<Hub>>,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(body): JsonBody<MethodBody>,
) -> ApiResult {
    invoke(&hub, &id, &headers, &body).await
}

/// Invokes a direct method on a device or module (`key`).
pub(super) async fn invoke(hub: &Hub, key: &str, headers: &HeaderMap, body: &MethodBody) -> ApiResult {
    hub.authorize_service(authorization(headers), &format!("{}/methods", twin_path(key)), Rights::SERVICE_CONNECT)?;
    let call = wire::methods::parse_call(body)?;
    // Metered in 4 KB units of payload, as the hub meters direct methods.
    hub.admit(Operation::DirectMethod, (call.payload.len() as f64 / 4096.0).ceil().max(1.0))?;
    let response = hub.invoke_method(key, &call).await?;
    Ok(ok_json(&wire::methods::result(response)))
}
