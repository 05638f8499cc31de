//! `POST /devices/query`: the IoT Hub query language over twins, paged with `x-ms-max-item-count` and
//! `x-ms-continuation` (wire-spec C.5).

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use serde_json::Value;

use super::request::authorization;
use super::response::{ApiError, ok_json};
use crate::auth::Rights;
use crate::error::HubError;
use crate::hub::{Hub, MAX_PAGE_SIZE};

/// Runs the query in `body` (`{"query": "SELECT ..."}`) and answers one page: a JSON array, `x-ms-item-type`,
/// and `x-ms-continuation` only when more results exist (an empty one would make the Node SDK loop forever).
pub async fn run(hub: &Hub, headers: &HeaderMap, body: &Value) -> Result<Response, ApiError> {
    hub.authorize_service(
        authorization(headers),
        "devices/query",
        Rights::SERVICE_CONNECT.union(Rights::REGISTRY_READ),
    )?;
    let text = match body.get("query") {
        Some(Value::String(text)) if !text.trim().is_empty() => text,
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(
                HubError::ArgumentNull("The query text is missing: send {\"query\": \"SELECT ...\"}".into()).into()
            );
        }
        Some(other) => return Err(HubError::ArgumentInvalid(format!("query must be a string, not {other}")).into()),
    };
    let page_size = match headers.get("x-ms-max-item-count").map(|v| v.to_str().unwrap_or("").trim()) {
        None | Some("") => MAX_PAGE_SIZE,
        Some(text) => text
            .parse::<i64>()
            .map_err(|_| HubError::ArgumentInvalid(format!("x-ms-max-item-count '{text}' is not a number")))?
            .clamp(1, MAX_PAGE_SIZE as i64) as usize,
    };
    let continuation = headers.get("x-ms-continuation").and_then(|v| v.to_str().ok());
    let page = hub.query(text, page_size, continuation)?;
    let mut response = ok_json(&page.items);
    let response_headers = response.headers_mut();
    response_headers.insert("x-ms-item-type", HeaderValue::from_static(page.item_type.as_str()));
    if let Some(token) = page.continuation
        && let Ok(value) = HeaderValue::from_str(&token)
    {
        response_headers.insert("x-ms-continuation", value);
    }
    Ok(response)
}
