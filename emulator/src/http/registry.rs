//! Device registry endpoints: `PUT/GET/DELETE /devices/{id}`, `GET /devices`, `GET /statistics/*`.

use std::sync::Arc;

use axum::extract::{FromRequest as _, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use iothub_proto::registry as wire;

use super::request::{JsonBody, PathId, authorization, form_pairs, if_match};
use super::response::{ApiError, ok_json};
use crate::auth::Rights;
use crate::clock::format_optional_time;
use crate::domain::registry::{AuthType, Device, DeviceSpec, DeviceStatus, Liveness};
use crate::domain::throttle::Operation;
use crate::error::HubError;
use crate::hub::Hub;
use crate::limits;

type ApiResult = Result<Response, ApiError>;

/// Renders a device identity as the hub does (wire-spec C.1).
pub fn device_to_wire(device: &Device, liveness: &Liveness) -> wire::Device {
    let connected = liveness.connected_since.is_some();
    let auth = &device.authentication;
    wire::Device {
        device_id: Some(device.device_id.clone()),
        generation_id: Some(device.generation_id.clone()),
        etag: Some(device.etag()),
        connection_state: Some(if connected { "Connected" } else { "Disconnected" }.into()),
        status: Some(device.status.as_str().into()),
        status_reason: device.status_reason.clone(),
        connection_state_updated_time: Some(format_optional_time(liveness.connected_since)),
        status_updated_time: Some(format_optional_time(device.status_updated)),
        last_activity_time: Some(format_optional_time(liveness.last_activity.or(device.last_activity))),
        cloud_to_device_message_count: Some(u64::from(device.cloud_to_device_message_count)),
        authentication: Some(wire::AuthenticationMechanism {
            symmetric_key: Some(wire::SymmetricKey {
                primary_key: auth.primary_key.clone(),
                secondary_key: auth.secondary_key.clone(),
            }),
            x509_thumbprint: Some(wire::X509Thumbprint {
                primary_thumbprint: auth.primary_thumbprint.clone(),
                secondary_thumbprint: auth.secondary_thumbprint.clone(),
            }),
            kind: Some(auth.kind.as_str().into()),
        }),
        capabilities: Some(wire::DeviceCapabilities { iot_edge: Some(device.iot_edge) }),
        device_scope: device.device_scope.clone(),
        parent_scopes: device.device_scope.as_ref().map(|_| device.parent_scopes.clone()),
    }
}

/// Reads a create/update body into a spec, checking it names the same device as the path.
pub fn spec_from_wire(path_id: &str, body: &wire::Device) -> Result<DeviceSpec, HubError> {
    if let Some(body_id) = body.device_id.as_deref().filter(|id| !id.is_empty())
        && body_id != path_id
    {
        return Err(HubError::ArgumentInvalid(format!(
            "The deviceId in the body ('{body_id}') does not match the one in the path ('{path_id}')"
        )));
    }
    let auth = body.authentication.clone().unwrap_or_default();
    let keys = auth.symmetric_key.unwrap_or_default();
    let thumbprints = auth.x509_thumbprint.unwrap_or_default();
    Ok(DeviceSpec {
        status: body.status.as_deref().map(DeviceStatus::parse).transpose()?,
        status_reason: body.status_reason.clone(),
        auth_type: auth.kind.as_deref().map(AuthType::parse).transpose()?,
        primary_key: keys.primary_key,
        secondary_key: keys.secondary_key,
        primary_thumbprint: thumbprints.primary_thumbprint,
        secondary_thumbprint: thumbprints.secondary_thumbprint,
        iot_edge: body.capabilities.as_ref().and_then(|c| c.iot_edge),
        device_scope: body.device_scope.clone(),
        parent_scopes: body.parent_scopes.clone(),
    })
}

fn device_response(hub: &Hub, device: &Device) -> Response {
    ok_json(&device_to_wire(device, &hub.liveness(&device.device_id)))
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
    JsonBody(body): JsonBody<wire::Device>,
) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("devices/{id}"), Rights::REGISTRY_WRITE)?;
    hub.admit(Operation::Registry, 1.0)?;
    let spec = spec_from_wire(&id, &body)?;
    let device = hub.put_device(&id, &spec, if_match(&headers)?.as_ref()).await?;
    Ok(device_response(&hub, &device))
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
    let top = match form_pairs(query.as_deref().unwrap_or("")).find(|(k, _)| k.eq_ignore_ascii_case("top")) {
        None => limits::MAX_DEVICES_LIST,
        Some((_, v)) => {
            let n: i64 =
                v.trim().parse().map_err(|_| HubError::ArgumentInvalid(format!("top '{v}' is not a number")))?;
            usize::try_from(n)
                .ok()
                .filter(|n| (1..=limits::MAX_DEVICES_LIST).contains(n))
                .unwrap_or(limits::MAX_DEVICES_LIST)
        }
    };
    let devices: Vec<wire::Device> =
        hub.list_devices(None, top).iter().map(|d| device_to_wire(d, &hub.liveness(&d.device_id))).collect();
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
    Ok(ok_json(&wire::RegistryStatistics {
        total_device_count: stats.total as u64,
        enabled_device_count: stats.enabled as u64,
        disabled_device_count: stats.disabled as u64,
    }))
}

/// `GET /statistics/service`.
pub async fn service_statistics(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> ApiResult {
    let needed = Rights::SERVICE_CONNECT.union(Rights::REGISTRY_READ);
    hub.authorize_service(authorization(&headers), "statistics/service", needed)?;
    Ok(ok_json(&wire::ServiceStatistics { connected_device_count: hub.connected_device_count() as u64 }))
}
