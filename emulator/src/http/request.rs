//! Reading requests: the `api-version` rule, `If-Match`, the `Authorization` header, path ids and JSON bodies,
//! each failing with the hub's own error rather than the framework's.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::response::ApiError;
use crate::domain::registry::IfMatch;
use crate::error::HubError;
use crate::limits;

/// Refuses any REST call without a non-empty `api-version` query parameter. Every value is accepted and
/// behaves the same (wire-spec C.0.1). Decision on wire-spec H.16 (the real code is unconfirmed): 400 with
/// `InvalidProtocolVersion` (400001), the code the hub uses for a version it does not know.
pub async fn require_api_version(request: Request, next: Next) -> Response {
    let has_version = request
        .uri()
        .query()
        .is_some_and(|q| form_pairs(q).any(|(k, v)| k.eq_ignore_ascii_case("api-version") && !v.is_empty()));
    if has_version {
        next.run(request).await
    } else {
        ApiError(HubError::InvalidProtocolVersion(
            "The api-version query parameter is required, e.g. ?api-version=2021-04-12".into(),
        ))
        .into_response()
    }
}

/// The `key=value` pairs of a query string, percent-decoded.
pub fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        (decode(k), decode(v))
    })
}

/// The `If-Match` precondition, if any: an optional `W/` and one pair of quotes are stripped; `*` matches all.
pub fn if_match(headers: &HeaderMap) -> Result<Option<IfMatch>, HubError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().map_err(|_| HubError::ArgumentInvalid("If-Match is not valid ASCII".into()))?.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    match text {
        "" => Err(HubError::ArgumentInvalid("If-Match is empty".into())),
        "*" => Ok(Some(IfMatch::Any)),
        etag => Ok(Some(IfMatch::Etag(etag.to_owned()))),
    }
}

/// The `top` query parameter of a list call: at most `max`, and `max` when it is absent, below 1 or above `max`
/// (the hub lowers such a `top` rather than refusing it); 400 when it is not a number.
pub fn top_param(query: Option<&str>, max: usize) -> Result<usize, HubError> {
    let Some((_, value)) = form_pairs(query.unwrap_or("")).find(|(k, _)| k.eq_ignore_ascii_case("top")) else {
        return Ok(max);
    };
    let n: i64 =
        value.trim().parse().map_err(|_| HubError::ArgumentInvalid(format!("top '{value}' is not a number")))?;
    Ok(usize::try_from(n).ok().filter(|n| (1..=max).contains(n)).unwrap_or(max))
}

/// The `Authorization` header text, when present, readable and of sane length.
pub fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).filter(|v| v.len() <= limits::MAX_AUTH_HEADER_LEN)
}

/// The `{id}` of a path, percent-decoded. An id with a `/` (sent as `%2F`) names nothing: device and module ids
/// cannot contain one, and the hub files modules under `<deviceId>/<moduleId>`, so such an id must not reach it.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await.map_err(path_error)?;
        Ok(Self(checked_id(id)?))
    }
}

/// The `{id}` and `{mid}` of a module path, checked like [`PathId`].
pub struct PathIds(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((device_id, module_id)) =
            Path::<(String, String)>::from_request_parts(parts, state).await.map_err(path_error)?;
        Ok(Self(checked_id(device_id)?, checked_id(module_id)?))
    }
}

fn path_error(error: PathRejection) -> ApiError {
    ApiError(HubError::ArgumentInvalid(format!("The id in the request path is invalid: {}", error.body_text())))
}

fn checked_id(id: String) -> Result<String, ApiError> {
    if id.contains('/') {
        return Err(ApiError(HubError::ArgumentInvalid(format!(
            "The id '{}' in the request path contains '/', which ids cannot contain",
            id.escape_debug()
        ))));
    }
    Ok(id)
}

/// A JSON request body parsed into `T`, with the hub's errors for empty, oversized or malformed bodies.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                HubError::MessageTooLarge(format!(
                    "The request body is larger than {} bytes",
                    limits::MAX_HTTP_BODY_BYTES
                ))
            } else {
                HubError::FormatError(format!("The request body could not be read: {}", e.body_text()))
            }
        })?;
        parse_json(&bytes).map(Self).map_err(ApiError)
    }
}

/// Parses a JSON body: syntax errors are `IotHubFormatError`, wrong shapes `ArgumentInvalid`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HubError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(HubError::ArgumentNull("The request body is empty".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => HubError::ArgumentInvalid(format!("The request body is invalid: {e}")),
        _ => HubError::FormatError(format!("The request body is not valid JSON: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::IF_MATCH, HeaderValue::from_str(value).expect("header"));
        map
    }

    #[test]
    fn if_match_strips_quotes_and_weak_prefix() {
        assert_eq!(if_match(&headers("\"*\"")).expect("ok"), Some(IfMatch::Any));
        assert_eq!(if_match(&headers("*")).expect("ok"), Some(IfMatch::Any));
        assert_eq!(if_match(&headers("W/\"AAAA\"")).expect("ok"), Some(IfMatch::Etag("AAAA".into())));
        assert_eq!(if_match(&headers("MjM=")).expect("ok"), Some(IfMatch::Etag("MjM=".into())));
        assert!(if_match(&headers("\"\"")).is_err());
        assert_eq!(if_match(&HeaderMap::new()).expect("ok"), None);
    }

    #[test]
    fn top_is_lowered_to_the_limit_and_must_be_a_number() {
        assert_eq!(top_param(None, 100).expect("ok"), 100);
        assert_eq!(top_param(Some("api-version=1&TOP=7"), 100).expect("ok"), 7);
        assert_eq!(top_param(Some("top=500"), 100).expect("ok"), 100);
        assert_eq!(top_param(Some("top=0"), 100).expect("ok"), 100);
        assert!(matches!(top_param(Some("top=x"), 100), Err(HubError::ArgumentInvalid(_))));
    }

    #[test]
    fn json_errors_are_classified() {
        assert!(matches!(parse_json::<serde_json::Value>(b"  "), Err(HubError::ArgumentNull(_))));
        assert!(matches!(parse_json::<serde_json::Value>(b"{"), Err(HubError::FormatError(_))));
        assert!(matches!(parse_json::<Vec<u8>>(b"{}"), Err(HubError::ArgumentInvalid(_))));
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(
            parse_json::<serde_json::Value>(deep.as_bytes()).is_err(),
            "deep nesting must be refused, not overflow"
        );
    }
}
