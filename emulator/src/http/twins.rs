//! Twin endpoints: `GET /twins/{id}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::request::{PathId, authorization};
use super::response::{ApiError, ok_json};
use crate::auth::Rights;
use crate::hub::Hub;

/// `GET /twins/{id}`: the full twin document. Readable with ServiceConnect (the docs' permission for twin
/// access) or RegistryRead (the twin repeats registry data, and registryRead callers query twins too).
pub async fn get_twin(
    State(hub): State<Arc<Hub>>,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let needed = Rights::SERVICE_CONNECT.union(Rights::REGISTRY_READ);
    hub.authorize_service(authorization(&headers), &format!("twins/{id}"), needed)?;
    Ok(ok_json(&hub.twin_document(&id)?))
}
