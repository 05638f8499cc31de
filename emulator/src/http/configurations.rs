//! Automatic device management endpoints: `PUT/GET/DELETE /configurations/{id}`, `GET /configurations`,
//! `POST /configurations/testQueries` and `POST /devices/{id}/applyConfigurationContent`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::request::{JsonBody, PathId, authorization, if_match, top_param};
use super::response::{ApiError, ok_json};
use crate::auth::Rights;
use crate::domain::configurations::{Configuration, MAX_CONFIGURATIONS};
use crate::domain::registry::IfMatch;
use crate::domain::throttle::Operation;
use crate::error::HubError;
use crate::hub::{ConfigurationCounts, Hub};
use crate::wire;

type ApiResult = Result<Response, ApiError>;

/// A configuration and its etag (quoted) in the `ETag` header, as the hub answers: with its metrics counted now
/// (reads), or not yet counted (writes: the hub answers a `PUT` with empty `results`, and the content is still
/// being applied).
fn configuration_response(hub: &Hub, configuration: &Configuration, counted: bool) -> Response {
    let counts =
        if counted { hub.configuration_counts(configuration) } else { ConfigurationCounts::uncounted(configuration) };
    let mut response = ok_json(&wire::configurations::configuration(configuration, &counts));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", configuration.etag())) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// `If-Match` for configurations: an empty one (`""`, which one Azure SDK sends on create) counts as none.
fn configuration_if_match(headers: &HeaderMap) -> Result<Option<IfMatch>, HubError> {
    let empty = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().trim_start_matches("W/").trim_matches('"').is_empty());
    if empty { Ok(None) } else { if_match(headers) }
}

/// `GET /configurations/{id}`.
pub async fn get_configuration(State(hub): State<Arc<Hub>>, PathId(id): PathId, headers: HeaderMap) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("configurations/{id}"), Rights::REGISTRY_READ)?;
    hub.admit(Operation::Configuration, 1.0)?;
    let configuration = hub.configuration(&id)?;
    Ok(configuration_response(&hub, &configuration, true))
}

/// `PUT /configurations/{id}`: create (no `If-Match`) or update; 200 either way, as the hub answers.
pub async fn put_configuration(
    State(hub): State<Arc<Hub>>,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("configurations/{id}"), Rights::REGISTRY_WRITE)?;
    hub.admit(Operation::Configuration, 1.0)?;
    let spec = wire::configurations::spec(&id, &body)?;
    let configuration = hub.put_configuration(&id, spec, configuration_if_match(&headers)?.as_ref()).await?;
    Ok(configuration_response(&hub, &configuration, false))
}

/// `DELETE /configurations/{id}`: 204; no `If-Match` (the Node SDK sends none) deletes unconditionally.
pub async fn delete_configuration(State(hub): State<Arc<Hub>>, PathId(id): PathId, headers: HeaderMap) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("configurations/{id}"), Rights::REGISTRY_WRITE)?;
    hub.admit(Operation::Configuration, 1.0)?;
    hub.delete_configuration(&id, configuration_if_match(&headers)?.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /configurations[?top=n]` (and `/configurations/`, as the C# SDK writes it): oldest first; a `top`
/// above the hub's limit is lowered to it, not refused.
pub async fn list_configurations(
    State(hub): State<Arc<Hub>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    hub.authorize_service(authorization(&headers), "configurations", Rights::REGISTRY_READ)?;
    hub.admit(Operation::Configuration, 1.0)?;
    let top = top_param(query.as_deref(), MAX_CONFIGURATIONS)?;
    let configurations: Vec<_> = hub
        .configurations(top)
        .iter()
        .map(|c| wire::configurations::configuration(c, &hub.configuration_counts(c)))
        .collect();
    Ok(ok_json(&configurations))
}

/// `POST /configurations/testQueries`: 200 with each query's error (`""` when valid).
pub async fn test_queries(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult {
    hub.authorize_service(authorization(&headers), "configurations/testQueries", Rights::REGISTRY_READ)?;
    hub.admit(Operation::Configuration, 1.0)?;
    Ok(ok_json(&wire::configurations::test_queries(&body)?))
}

/// `POST /devices/{id}/applyConfigurationContent`: 204 once every module twin has its content.
pub async fn apply_configuration_content(
    State(hub): State<Arc<Hub>>,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("devices/{id}"), Rights::REGISTRY_WRITE)?;
    hub.admit(Operation::Configuration, 1.0)?;
    let content = wire::configurations::content(Some(&body))?;
    hub.apply_configuration_content(&id, &content).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
