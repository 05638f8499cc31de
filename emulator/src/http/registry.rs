//! Device registry endpoints: `PUT/GET/DELETE /devices/{id}`, `GET /devices`, bulk `POST /devices`,
//! `GET /statistics/*`.

use std::sync::Arc;

use axum::extract::{FromRequest as _, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use iothub_proto::registry::{Device as DeviceBody, RegistryStatistics, ServiceStatistics};

use super::request::{JsonBody, PathId, authorization, if_match, top_param};
use super::response::{ApiError, ok_json};
use crate::auth::Rights;
use crate::domain::registry::Device;
use crate::domain::throttle::Operation;
use crate::error::HubError;
use crate::hub::Hub;
use crate::limits;
use crate::wire;

type ApiResult = Result<Response, ApiError>;

fn device_response(hub: &Hub, device: &Device) -> Response {
    ok_json(&wire::registry::device(device, &hub.liveness(&device.device_id)))
}

/// `GET /devices/{id}`.
pub async fn get_device(State(hub): State<Arc<Hub>>, PathId(id): PathId, headers: HeaderMap) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("devices/{id}"), Rights::REGISTRY_READ)?;
    hub.admit(Operation::Registry, 1.0)?;
    let device = hub.get_device(&id)?;
    Ok(device_response(&hub, &device))
}

/// `PUT /devices/{id}`: create (no `If-Match`) or update. Answers 200 in both cases, as the hub does.
pub async fn put_device(
    State(hub): State<Arc<Hub>>,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DeviceBody>,
) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("devices/{id}"), Rights::REGISTRY_WRITE)?;
    hub.admit(Operation::Registry, 1.0)?;
    let spec = wire::registry::device_spec(&id, &body)?;
    let device = hub.put_device(&id, &spec, if_match(&headers)?.as_ref()).await?;
    Ok(device_response(&hub, &device))
}

/// `POST /devices` (and `/devices/`, as the C# SDK writes it): up to 100 identities created, updated or deleted,
/// each on its own; 200 with `isSuccessful` and an error per failed item.
pub async fn bulk_devices(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult {
    hub.authorize_service(authorization(&headers), "devices", Rights::REGISTRY_WRITE)?;
    hub.admit(Operation::Registry, 1.0)?;
    let items = wire::bulk::parse_items(&body)?;
    let failures = hub.bulk_registry(&items).await;
    Ok(ok_json(&wire::bulk::result(&failures)))
}

/// `DELETE /devices/{id}`: 204; a missing `If-Match` deletes unconditionally.
pub async fn delete_device(State(hub): State<Arc<Hub>>, PathId(id): PathId, headers: HeaderMap) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("devices/{id}"), Rights::REGISTRY_WRITE)?;
    hub.admit(Operation::Registry, 1.0)?;
    hub.delete_device(&id, if_match(&headers)?.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /devices[?top=n]`: up to `top` devices (1..=1000, otherwise 1000), in id order.
pub async fn list_devices(State(hub): State<Arc<Hub>>, RawQuery(query): RawQuery, headers: HeaderMap) -> ApiResult {
    hub.authorize_service(authorization(&headers), "devices", Rights::REGISTRY_READ)?;
    hub.admit(Operation::Registry, 1.0)?;
    let top = top_param(query.as_deref(), limits::MAX_DEVICES_LIST)?;
    let devices: Vec<DeviceBody> =
        hub.list_devices(None, top).iter().map(|d| wire::registry::device(d, &hub.liveness(&d.device_id))).collect();
    Ok(ok_json(&devices))
}

/// `POST /devices/{id}`: only `POST /devices/query` exists (routed here so a device named `query` stays
/// readable with `GET /devices/query`); any other id is 405 before its body is read.
pub async fn post_device_path(State(hub): State<Arc<Hub>>, PathId(id): PathId, request: Request) -> ApiResult {
    if id != "query" {
        return Err(HubError::MethodNotAllowed(format!("POST is not supported on /devices/{id}")).into());
    }
    let headers = request.headers().clone();
    let JsonBody(body) = JsonBody::<serde_json::Value>::from_request(request, &()).await?;
    super::query::run(&hub, &headers, &body).await
}

/// `GET /statistics/devices`.
pub async fn registry_statistics(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> ApiResult {
    hub.authorize_service(authorization(&headers), "statistics/devices", Rights::REGISTRY_READ)?;
    let stats = hub.registry_statistics();
    Ok(ok_json(&RegistryStatistics {
        total_device_count: stats.total as u64,
        enabled_device_count: stats.enabled as u64,
        disabled_device_count: stats.disabled as u64,
    }))
}

/// `GET /statistics/service`.
pub async fn service_statistics(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> ApiResult {
    let needed = Rights::SERVICE_CONNECT.union(Rights::REGISTRY_READ);
    hub.authorize_service(authorization(&headers), "statistics/service", needed)?;
    Ok(ok_json(&ServiceStatistics { connected_device_count: hub.connected_device_count() as u64 }))
}
