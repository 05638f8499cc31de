//! Module endpoints (wire-spec C.2): identities at `/devices/{id}/modules[/{mid}]`, module twins at
//! `/twins/{id}/modules/{mid}` and module methods at `/twins/{id}/modules/{mid}/methods`. The twin and method
//! handlers are the device ones, called with the module's identity key.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use iothub_proto::registry::Module as ModuleBody;
use serde_json::Value;

use super::request::{JsonBody, PathId, PathIds, authorization, if_match};
use super::response::{ApiError, json_response, ok_json};
use super::twins;
use crate::auth::Rights;
use crate::domain::registry::{Device, identity_key};
use crate::domain::throttle::Operation;
use crate::domain::twin::WriteMode;
use crate::hub::Hub;
use crate::wire;
use crate::wire::methods::MethodBody;

type ApiResult = Result<Response, ApiError>;

fn module_body(hub: &Hub, module: &Device) -> ModuleBody {
    wire::registry::module(module, &hub.liveness(&module.key()))
}

/// `GET /devices/{id}/modules/{mid}`.
pub async fn get_module(
    State(hub): State<Arc<Hub>>,
    PathIds(device_id, module_id): PathIds,
    headers: HeaderMap,
) -> ApiResult {
    let path = format!("devices/{device_id}/modules/{module_id}");
    hub.authorize_service(authorization(&headers), &path, Rights::REGISTRY_READ)?;
    hub.admit(Operation::Registry, 1.0)?;
    let module = hub.get_device(&identity_key(&device_id, Some(&module_id)))?;
    Ok(ok_json(&module_body(&hub, &module)))
}

/// `PUT /devices/{id}/modules/{mid}`: create (no `If-Match`: 201) or update (`If-Match`: 200).
pub async fn put_module(
    State(hub): State<Arc<Hub>>,
    PathIds(device_id, module_id): PathIds,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ModuleBody>,
) -> ApiResult {
    let path = format!("devices/{device_id}/modules/{module_id}");
    hub.authorize_service(authorization(&headers), &path, Rights::REGISTRY_WRITE)?;
    hub.admit(Operation::Registry, 1.0)?;
    let spec = wire::registry::module_spec(&device_id, &module_id, &body)?;
    let (module, created) = hub.put_module(&device_id, &module_id, &spec, if_match(&headers)?.as_ref()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json_response(status, &module_body(&hub, &module)))
}

/// `DELETE /devices/{id}/modules/{mid}`: 204; a missing `If-Match` deletes unconditionally.
pub async fn delete_module(
    State(hub): State<Arc<Hub>>,
    PathIds(device_id, module_id): PathIds,
    headers: HeaderMap,
) -> ApiResult {
    let path = format!("devices/{device_id}/modules/{module_id}");
    hub.authorize_service(authorization(&headers), &path, Rights::REGISTRY_WRITE)?;
    hub.admit(Operation::Registry, 1.0)?;
    hub.delete_module(&device_id, &module_id, if_match(&headers)?.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /devices/{id}/modules`: the device's modules in id order.
pub async fn list_modules(State(hub): State<Arc<Hub>>, PathId(device_id): PathId, headers: HeaderMap) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("devices/{device_id}/modules"), Rights::REGISTRY_READ)?;
    hub.admit(Operation::Registry, 1.0)?;
    let modules: Vec<ModuleBody> = hub.list_modules(&device_id)?.iter().map(|m| module_body(&hub, m)).collect();
    Ok(ok_json(&modules))
}

/// `GET /twins/{id}/modules/{mid}`: the module twin.
pub async fn get_twin(
    State(hub): State<Arc<Hub>>,
    PathIds(device_id, module_id): PathIds,
    headers: HeaderMap,
) -> ApiResult {
    twins::read(&hub, &identity_key(&device_id, Some(&module_id)), &headers)
}

/// `PATCH /twins/{id}/modules/{mid}`: merge tags and desired properties.
pub async fn patch_twin(
    State(hub): State<Arc<Hub>>,
    PathIds(device_id, module_id): PathIds,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    twins::write(&hub, &identity_key(&device_id, Some(&module_id)), &headers, &body, WriteMode::Merge).await
}

/// `PUT /twins/{id}/modules/{mid}`: replace tags and desired properties.
pub async fn replace_twin(
    State(hub): State<Arc<Hub>>,
    PathIds(device_id, module_id): PathIds,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    twins::write(&hub, &identity_key(&device_id, Some(&module_id)), &headers, &body, WriteMode::Replace).await
}

/// `POST /twins/{id}/modules/{mid}/methods`: a direct method on the module's own connection.
pub async fn invoke_method(
    State(hub): State<Arc<Hub>>,
    PathIds(device_id, module_id): PathIds,
    headers: HeaderMap,
    JsonBody(body): JsonBody<MethodBody>,
) -> ApiResult {
    twins::invoke(&hub, &identity_key(&device_id, Some(&module_id)), &headers, &body).await
}
