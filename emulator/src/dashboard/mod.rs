//! The web dashboard on the HTTPS port: `https://localhost/` shows the hub (devices, twins, live telemetry,
//! jobs, queries) and steers it (methods, twin edits, C2D messages, faults, reset).
//!
//! Why this shape: the page is a small hand-written JavaScript module (no framework, no bundler) that calls
//! the same REST API the SDKs call, plus one server-sent-events stream for what changes live. The assets are
//! plain files in `emulator/assets/dashboard/`, embedded with `include_str!`, so there is no build step and
//! nothing is fetched from the internet; a framework or htmx would add a vendored dependency without saving
//! much, since the data already comes as JSON from the REST API.
//!
//! Who gets in: the banner prints a sign-in link with a per-start token (`/?token=...`); the sign-in page also
//! takes the owner connection string. Signing in sets an HttpOnly, Secure, SameSite=Strict session cookie and
//! redirects to a URL without the token. The page's requests carry the cookie and an `X-IotHub-Dashboard`
//! header; `session_authorization` turns such a request into one signed with the session's policy (a SAS token
//! minted here), so every action goes through the REST API's own authorization. Cross-site requests are
//! refused: the cookie is SameSite=Strict, the custom header forces a CORS preflight nobody answers, and
//! `Sec-Fetch-Site` / `Origin` must say same-origin.

mod live;
pub mod session;

use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use iothub_proto::ServiceConnectionString;
use serde::{Deserialize, Serialize};

use crate::auth::{Principal, Rights};
use crate::http::AppState;
use crate::hub::Hub;
use session::{COOKIE, Sessions, random_secret, same_secret};

const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");
const SIGN_IN_HTML: &str = include_str!("../../assets/dashboard/signin.html");
const APP_JS: &str = include_str!("../../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../../assets/dashboard/app.css");
const ICON_SVG: &str = include_str!("../../assets/dashboard/icon.svg");

/// The header the page puts on its REST calls (a custom header: cross-site pages cannot send it unasked).
pub const DASHBOARD_HEADER: &str = "x-iothub-dashboard";

/// Lifetime of the SAS tokens minted for signed-in sessions.
const MINTED_TOKEN_SECS: u64 = 3600;

/// Where the hub listens and how to reach it: what the overview page shows. Set once the ports are bound.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    pub host_name: String,
    pub https_port: u16,
    pub mqtt_port: u16,
    pub amqp_port: u16,
    pub eventhubs_plain_port: Option<u16>,
    pub connection_string: String,
    pub event_hub_connection_string: String,
    pub ca_path: Option<String>,
    #[serde(skip)]
    pub ca_pem: String,
}

/// The dashboard's state: the sign-in token, the open sessions, and the hub's endpoints.
pub struct Dashboard {
    hub: Arc<Hub>,
    sign_in_token: String,
    sessions: Sessions,
    endpoints: OnceLock<Endpoints>,
    /// The last minted token per policy, reused until it is near its expiry.
    minted: Mutex<Option<(String, String, u64)>>,
}

impl Dashboard {
    /// A dashboard over `hub` with a fresh sign-in token.
    pub fn new(hub: Arc<Hub>) -> Self {
        Self {
            hub,
            sign_in_token: random_secret(),
            sessions: Sessions::default(),
            endpoints: OnceLock::new(),
            minted: Mutex::new(None),
        }
    }

    /// The per-start token of the sign-in link.
    pub fn sign_in_token(&self) -> &str {
        &self.sign_in_token
    }

    /// Records where the hub listens (once, after binding).
    pub fn set_endpoints(&self, endpoints: Endpoints) {
        let _ = self.endpoints.set(endpoints);
    }

    /// The sign-in link the banner prints.
    pub fn sign_in_url(&self, host: &str, https_port: u16) -> String {
        let authority = if https_port == 443 { host.to_owned() } else { format!("{host}:{https_port}") };
        format!("https://{authority}/?token={}", self.sign_in_token)
    }

    /// The policy a credential signs in as: the sign-in token (the first policy with every permission), the
    /// connection string of such a policy, or a SAS token of one. Device credentials never sign in.
    fn sign_in_policy(&self, credential: &str) -> Option<String> {
        let credential = credential.trim();
        if same_secret(credential, &self.sign_in_token) {
            return self.owner_policy();
        }
        if credential.starts_with("SharedAccessSignature ") {
            return match self.hub.authorize_owner(Some(credential), "") {
                Ok(Principal::Policy { name, .. }) => Some(name),
                _ => None,
            };
        }
        let parsed: ServiceConnectionString = credential.parse().ok()?;
        if !parsed.host_name.eq_ignore_ascii_case(self.hub.host_name()) {
            return None;
        }
        let policy = self.hub.policies().get(&parsed.key_name)?;
        let key_matches =
            same_secret(&parsed.key, &policy.primary_key) || same_secret(&parsed.key, &policy.secondary_key);
        (key_matches && policy.rights.contains(Rights::all())).then(|| policy.key_name.clone())
    }

    /// The policy the sign-in token acts as: the first with every permission (`iothubowner` by default).
    fn owner_policy(&self) -> Option<String> {
        self.hub.policies().iter().find(|p| p.rights.contains(Rights::all())).map(|p| p.key_name.clone())
    }

    /// A SAS token of `policy` for the whole hub, minted for a signed-in session.
    fn token_for(&self, policy: &str) -> Option<String> {
        let now = self.hub.clock().unix_seconds();
        let mut minted = self.minted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((name, token, expiry)) = minted.as_ref()
            && name == policy
            && *expiry > now + MINTED_TOKEN_SECS / 2
        {
            return Some(token.clone());
        }
        let key = &self.hub.policies().get(policy)?.primary_key;
        let expiry = now + MINTED_TOKEN_SECS;
        let token = iothub_proto::generate_token(self.hub.host_name(), key, Some(policy), expiry).ok()?;
        *minted = Some((policy.to_owned(), token.clone(), expiry));
        Some(token)
    }

    /// The policy of the request's session, if its cookie names a live one and it comes from the page itself.
    fn session_policy(&self, headers: &HeaderMap) -> Option<String> {
        if !same_origin(headers) {
            return None;
        }
        let id = cookie(headers, COOKIE)?;
        self.sessions.policy(id)
    }
}

/// The dashboard's pages and its own endpoints.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/signin", post(sign_in))
        .route("/dashboard/signout", post(sign_out))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/dashboard/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/dashboard/icon.svg", get(|| async { asset("image/svg+xml", ICON_SVG) }))
        .route("/favicon.ico", get(|| async { asset("image/svg+xml", ICON_SVG) }))
        .route("/dashboard/info", get(info))
        .route("/dashboard/ca.pem", get(ca_pem))
        .route("/dashboard/events", get(live::events))
}

/// Turns a REST call from a signed-in page (session cookie + `X-IotHub-Dashboard`, same origin, no
/// `Authorization` of its own) into one signed with the session's policy. Anything else passes untouched and
/// meets the REST API's own checks.
pub async fn session_authorization(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    if !headers.contains_key(header::AUTHORIZATION)
        && headers.get(DASHBOARD_HEADER).is_some()
        && let Some(policy) = state.dashboard.session_policy(headers)
        && let Some(token) = state.dashboard.token_for(&policy)
        && let Ok(value) = HeaderValue::from_str(&token)
    {
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    next.run(request).await
}

/// True unless the browser says the request comes from another site: `Sec-Fetch-Site` (when sent) is
/// `same-origin` or `none` (typed or bookmarked), and `Origin` (when sent) is this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        // Browsers send `Origin: null` where they hide the origin; then only fetch metadata can vouch for it.
        (Some("null"), _) => headers.get("sec-fetch-site").is_some_and(|v| v == "same-origin"),
        (Some(origin), Some(host)) => origin.eq_ignore_ascii_case(&format!("https://{host}")),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// A cookie's value from the `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn with_page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Same-origin only (never the sign-in token to another site); `no-referrer` would make Chromium send
    // `Origin: null` on the page's own form posts.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    with_page_headers(response)
}

fn html(status: StatusCode, body: String) -> Response {
    with_page_headers((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

fn sign_in_page(status: StatusCode, message: &str) -> Response {
    let escaped = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    html(status, SIGN_IN_HTML.replace("{{message}}", &escaped))
}

/// Signed in: the session cookie, then a redirect to the page without any secret in its URL.
fn signed_in(dashboard: &Dashboard, policy: &str) -> Response {
    let id = dashboard.sessions.open(policy);
    tracing::info!(policy, "dashboard sign-in");
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict");
    let mut response = with_page_headers((StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response());
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `GET /`: with `?token=` signs in; with a live session the dashboard; otherwise the sign-in page.
async fn index(State(state): State<AppState>, Query(query): Query<TokenQuery>, headers: HeaderMap) -> Response {
    let dashboard = &state.dashboard;
    if let Some(token) = query.token {
        let policy = same_secret(token.trim(), &dashboard.sign_in_token).then(|| dashboard.owner_policy()).flatten();
        return match policy {
            Some(policy) => signed_in(dashboard, &policy),
            None => {
                tracing::info!("dashboard sign-in refused: wrong token");
                sign_in_page(
                    StatusCode::UNAUTHORIZED,
                    "That sign-in link is not this run's: use the link the emulator printed at start.",
                )
            }
        };
    }
    if cookie(&headers, COOKIE).and_then(|id| dashboard.sessions.policy(id)).is_some() {
        return html(StatusCode::OK, INDEX_HTML.to_owned());
    }
    sign_in_page(StatusCode::OK, "")
}

/// `POST /dashboard/signin` (a form): the sign-in token, the owner connection string, or an owner SAS token.
async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&headers) {
        return sign_in_page(StatusCode::FORBIDDEN, "Sign-in from another site is refused.");
    }
    let credential = crate::http::form_pairs(std::str::from_utf8(&body).unwrap_or(""))
        .find(|(key, _)| key == "credential")
        .map(|(_, value)| value)
        .unwrap_or_default();
    match state.dashboard.sign_in_policy(&credential) {
        Some(policy) => signed_in(&state.dashboard, &policy),
        None => {
            tracing::info!("dashboard sign-in refused");
            sign_in_page(
                StatusCode::UNAUTHORIZED,
                "Not signed in: give the sign-in token from the emulator's banner, or the connection string of a \
                 policy with every permission (iothubowner). Device credentials cannot sign in.",
            )
        }
    }
}

/// `POST /dashboard/signout`: ends the session and clears the cookie.
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if same_origin(&headers)
        && let Some(id) = cookie(&headers, COOKIE)
    {
        state.dashboard.sessions.close(id);
    }
    let mut response = with_page_headers((StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response());
    let expired = format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn unauthorized() -> Response {
    crate::http::ApiError(crate::error::HubError::Unauthorized).into_response()
}

/// `GET /dashboard/info`: where the hub listens and its connection strings (signed-in pages only).
async fn info(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.dashboard.session_policy(&headers).is_none() || headers.get(DASHBOARD_HEADER).is_none() {
        return unauthorized();
    }
    match state.dashboard.endpoints.get() {
        Some(endpoints) => crate::http::ok_json(endpoints),
        None => crate::http::ApiError(crate::error::HubError::ServiceUnavailable("starting".into())).into_response(),
    }
}

/// `GET /dashboard/ca.pem`: the local CA certificate to download and trust.
async fn ca_pem(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.dashboard.session_policy(&headers).is_none() {
        return unauthorized();
    }
    let pem = state.dashboard.endpoints.get().map(|e| e.ca_pem.clone()).unwrap_or_default();
    let mut response = ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response();
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"iothub-emulator-ca.pem\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn same_origin_follows_fetch_metadata_and_origin() {
        assert!(same_origin(&headers(&[("host", "localhost")])));
        assert!(same_origin(&headers(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://localhost"),
            ("host", "localhost")
        ])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site"), ("host", "localhost")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site"), ("host", "localhost")])));
        assert!(!same_origin(&headers(&[("origin", "https://evil.example"), ("host", "localhost")])));
        assert!(!same_origin(&headers(&[("origin", "http://localhost"), ("host", "localhost")])), "not TLS");
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "localhost")])), "a hidden origin alone");
        assert!(same_origin(&headers(&[("origin", "null"), ("sec-fetch-site", "same-origin"), ("host", "localhost")])));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let map = headers(&[("cookie", "a=1; iothub-dashboard=abc; b=2")]);
        assert_eq!(cookie(&map, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers(&[("cookie", "iothub-dashboardx=1")]), COOKIE), None);
    }
}
