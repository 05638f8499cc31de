//! Rendering of answers: JSON bodies with the content type the SDKs require, and the hub's error envelope.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::HubError;
use crate::wire;

/// `Content-Type` of every JSON answer. The Node service SDK parses a body only when this says JSON.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// Header naming the error code, which the hub sends beside every error body.
pub const ERROR_CODE_HEADER: &str = "iothub-errorcode";

/// A hub error on its way to an HTTP client.
#[derive(Debug)]
pub struct ApiError(pub HubError);

impl From<HubError> for ApiError {
    fn from(error: HubError) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    /// The hub's error body (wire-spec C.0.6) in the envelope the error calls for, with `iothub-errorcode`.
    fn into_response(self) -> Response {
        let mapped = self.0.wire();
        let status = StatusCode::from_u16(mapped.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(error = %self.0, "request failed");
        }
        let body = wire::errors::body(&self.0, jiff::Timestamp::now());
        let mut response = json_response(status, &body);
        response.headers_mut().insert(ERROR_CODE_HEADER, HeaderValue::from_static(mapped.code));
        response
    }
}

/// A JSON answer with `status`.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE))], body).into_response()
        }
        Err(e) => ApiError(HubError::ServerError(format!("could not render the answer: {e}"))).into_response(),
    }
}

/// A 200 JSON answer.
pub fn ok_json<T: Serialize + ?Sized>(value: &T) -> Response {
    json_response(StatusCode::OK, value)
}
