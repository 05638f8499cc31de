//! `POST /devices/query`: the IoT Hub query language over twins, paged with `x-ms-max-item-count` and
//! `x-ms-continuation` (wire-spec C.5).

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use super::request::authorization;
use super::response::{ApiError, ok_json};
use crate::auth::Rights;
use crate::error::HubError;
use crate::hub::{Hub, MAX_PAGE_SIZE};
use crate::wire;

/// Runs the query in `body` (`{"query": "SELECT ..."}`) and answers one page (see `page_response`).
pub async fn run(hub: &Hub, headers: &HeaderMap, body: &Value) -> Result<Response, ApiError> {
    hub.authorize_service(
        authorization(headers),
        "devices/query",
        Rights::SERVICE_CONNECT.union(Rights::REGISTRY_READ),
    )?;
    hub.admit(crate::domain::throttle::Operation::Query, 1.0)?;
    let text = wire::query::query_text(body)?;
    let page_size = page_size(headers.get(MAX_ITEM_COUNT).map(|v| v.to_str().unwrap_or("")), MAX_PAGE_SIZE)?;
    let continuation = headers.get(CONTINUATION).and_then(|v| v.to_str().ok());
    let page = hub.query(text, page_size, continuation)?;
    Ok(page_response(&wire::query::items(&page.items), page.item_type.as_str(), page.continuation))
}

/// Paging headers of query answers (wire-spec F.6).
pub const MAX_ITEM_COUNT: &str = "x-ms-max-item-count";
pub const CONTINUATION: &str = "x-ms-continuation";

/// A requested page size (`x-ms-max-item-count`, or the job query's `pageSize`): `max` when not given, and
/// clamped to `1..=max` as the hub does.
pub fn page_size(given: Option<&str>, max: usize) -> Result<usize, HubError> {
    match given.map(str::trim) {
        None | Some("") => Ok(max),
        Some(text) => Ok(text
            .parse::<i64>()
            .map_err(|_| HubError::ArgumentInvalid(format!("The page size '{text}' is not a number")))?
            .clamp(1, max as i64) as usize),
    }
}

/// One page as the hub answers it: a JSON array, `x-ms-item-type`, and `x-ms-continuation` only when more
/// results exist (an empty one would make the Node SDK loop forever).
pub fn page_response<T: Serialize>(items: &[T], item_type: &'static str, continuation: Option<String>) -> Response {
    let mut response = ok_json(items);
    let headers = response.headers_mut();
    headers.insert("x-ms-item-type", HeaderValue::from_static(item_type));
    if let Some(token) = continuation
        && let Ok(value) = HeaderValue::from_str(&token)
    {
        headers.insert(CONTINUATION, value);
    }
    response
}
