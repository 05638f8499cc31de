//! The HTTPS service API: the axum router over the hub, and the connection handling behind the TLS listener.

mod configurations;
mod device;
mod emulator;
mod jobs;
mod messages;
mod modules;
mod query;
mod registry;
mod request;
mod response;
mod twins;
mod websocket;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRef};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tower_http::trace::TraceLayer;

pub use request::form_pairs;
pub use response::{ApiError, ERROR_CODE_HEADER, JSON_CONTENT_TYPE, ok_json};

use crate::dashboard::Dashboard;
use crate::error::HubError;
use crate::hub::Hub;
use crate::limits;

/// What the handlers share: the hub, the dashboard's sessions, and the shutdown signal long-lived connections
/// (WebSockets, the dashboard's event stream) watch.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub dashboard: Arc<Dashboard>,
    pub shutdown: CancellationToken,
}

impl FromRef<AppState> for Arc<Hub> {
    fn from_ref(state: &AppState) -> Self {
        state.hub.clone()
    }
}

/// The service REST API over `hub`, plus MQTT over WebSockets at `/$iothub/websocket`.
pub fn router(hub: Arc<Hub>, dashboard: Arc<Dashboard>, shutdown: CancellationToken) -> Router {
    let state = AppState { hub, dashboard, shutdown };
    Router::new()
        .route("/devices", get(registry::list_devices).post(registry::bulk_devices))
        .route("/devices/", get(registry::list_devices).post(registry::bulk_devices))
        .route(
            "/devices/{id}",
            get(registry::get_device)
                .put(registry::put_device)
                .delete(registry::delete_device)
                .post(registry::post_device_path),
        )
        .route("/devices/{id}/modules", get(modules::list_modules))
        .route("/devices/{id}/applyConfigurationContent", post(configurations::apply_configuration_content))
        .route("/configurations", get(configurations::list_configurations))
        .route("/configurations/", get(configurations::list_configurations))
        .route("/configurations/testQueries", post(configurations::test_queries))
        .route(
            "/configurations/{id}",
            get(configurations::get_configuration)
                .put(configurations::put_configuration)
                .delete(configurations::delete_configuration),
        )
        .route(
            "/devices/{id}/modules/{mid}",
            get(modules::get_module).put(modules::put_module).delete(modules::delete_module),
        )
        .route("/devices/{id}/commands", delete(messages::purge))
        .route("/devices/{id}/messages/events", post(device::telemetry))
        .route("/devices/{id}/messages/devicebound", get(device::receive))
        .route("/devices/{id}/messages/deviceBound", get(device::receive))
        .route("/devices/{id}/messages/devicebound/{etag}", delete(device::complete))
        .route("/devices/{id}/messages/deviceBound/{etag}", delete(device::complete))
        .route("/devices/{id}/messages/devicebound/{etag}/abandon", post(device::abandon))
        .route("/devices/{id}/messages/deviceBound/{etag}/abandon", post(device::abandon))
        .route("/messages/serviceBound/feedback", get(messages::receive_feedback))
        .route("/messages/servicebound/feedback", get(messages::receive_feedback))
        .route("/messages/serviceBound/feedback/{lock}", delete(messages::complete_feedback))
        .route("/messages/servicebound/feedback/{lock}", delete(messages::complete_feedback))
        .route("/messages/serviceBound/feedback/{lock}/abandon", post(messages::abandon_feedback))
        .route("/messages/servicebound/feedback/{lock}/abandon", post(messages::abandon_feedback))
        .route("/twins/{id}", get(twins::get_twin).patch(twins::patch_twin).put(twins::replace_twin))
        .route("/twins/{id}/methods", post(twins::invoke_method))
        .route(
            "/twins/{id}/modules/{mid}",
            get(modules::get_twin).patch(modules::patch_twin).put(modules::replace_twin),
        )
        .route("/twins/{id}/modules/{mid}/methods", post(modules::invoke_method))
        .route("/jobs/v2/query", get(jobs::query_jobs))
        .route("/jobs/v2/{id}", get(jobs::get_job).put(jobs::create_job))
        .route("/jobs/v2/{id}/cancel", post(jobs::cancel_job))
        .route("/emulator/devices/{id}/messages/events", get(emulator::device_telemetry))
        .route("/statistics/devices", get(registry::registry_statistics))
        .route("/statistics/service", get(registry::service_statistics))
        .route_layer(axum::middleware::from_fn(request::require_api_version))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), emulator::refuse_during_outage))
        .merge(controls())
        .merge(crate::dashboard::routes())
        .route("/$iothub/websocket", get(websocket::upgrade))
        .route("/$servicebus/websocket", get(websocket::upgrade))
        .route("/$servicebus/websocket/", get(websocket::upgrade))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::dashboard::session_authorization))
        .layer(DefaultBodyLimit::max(limits::MAX_HTTP_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The emulator's test-suite controls: no `api-version` needed, and they answer during an outage fault.
fn controls() -> Router<AppState> {
    Router::new()
        .route("/emulator/health", get(emulator::health))
        .route("/emulator/reset", post(emulator::reset))
        .route("/emulator/faults", get(emulator::list_faults).post(emulator::add_fault).delete(emulator::clear_faults))
        .route("/emulator/faults/{fault}", delete(emulator::remove_fault))
        .route("/emulator/devices/{id}/methodCalls", get(emulator::device_method_calls))
        .route("/emulator/devices/{id}/modules/{mid}/methodCalls", get(emulator::module_method_calls))
        .route("/emulator/devices/{id}/twinChanges", get(emulator::device_twin_changes))
        .route("/emulator/devices/{id}/messages/devicebound", post(emulator::send_message))
        .route("/emulator/devices/{id}/modules/{mid}/twinChanges", get(emulator::module_twin_changes))
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    ApiError(HubError::NotFound(format!("{method} {} is not an IoT Hub API", uri.path()))).into_response()
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    ApiError(HubError::MethodNotAllowed(format!("{method} is not supported on {}", uri.path()))).into_response()
}

/// Serves HTTP/1.1 (with upgrades, for MQTT over WebSockets) and HTTP/2 on one TLS connection until it ends or
/// `shutdown` fires, in which case in-flight requests finish first.
pub async fn serve_connection(
    stream: TlsStream<TcpStream>,
    peer: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(limits::HTTP_HEADER_TIMEOUT_SECS));
    let app = app.map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "HTTP connection ended with an error");
    }
}
