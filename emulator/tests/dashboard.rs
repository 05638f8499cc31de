//! The dashboard's doors over real HTTPS: who may sign in, what the session cookie is like, and which requests
//! a session turns into signed REST calls. (The browser test in conformance/node/dashboard.js drives the pages.)

mod common;

use common::mqtt::device_token;
use common::{TestHub, client_tls, start, unix_now};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A client that does not follow redirects (the sign-in answers 303 with its cookie).
fn browser(hub: &TestHub) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(hub.emulator.ca_pem(), rustls::DEFAULT_VERSIONS))
        .resolve("localhost", hub.emulator.https_addr())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn token_of(hub: &TestHub) -> String {
    let url = hub.emulator.dashboard_url();
    url.split_once("?token=").map(|(_, t)| t.to_owned()).expect("the link carries a token")
}

/// Signs in with the link and returns the session cookie (`name=value`).
async fn sign_in(hub: &TestHub, client: &reqwest::Client) -> String {
    let answer = client.get(hub.url(&format!("/?token={}", token_of(hub)))).send().await.expect("send");
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(answer.headers()["location"], "/", "no secret in the address after sign-in");
    let cookie = answer.headers()["set-cookie"].to_str().expect("ascii").to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    cookie.split(';').next().expect("name=value").to_owned()
}

fn form(credential: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(credential, percent_encoding::NON_ALPHANUMERIC);
    format!("credential={encoded}")
}

fn page_headers(cookie: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("cookie", HeaderValue::from_str(cookie).expect("cookie"));
    headers.insert("x-iothub-dashboard", HeaderValue::from_static("1"));
    headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    headers
}

async fn status(client: &reqwest::Client, hub: &TestHub, method: Method, path: &str, headers: HeaderMap) -> StatusCode {
    client.request(method, hub.url(path)).headers(headers).send().await.expect("send").status()
}

async fn post_sign_in(hub: &TestHub, client: &reqwest::Client, credential: &str) -> reqwest::Response {
    client
        .post(hub.url("/dashboard/signin"))
        .header("origin", format!("https://localhost:{}", hub.emulator.https_addr().port()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(credential))
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn the_banner_link_signs_in_and_the_session_acts_through_the_rest_api() {
    let hub = start().await;
    let client = browser(&hub);
    let first = client.get(hub.url("/")).send().await.expect("send");
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("set-cookie").is_none(), "no session without signing in");
    let csp = first.headers()["content-security-policy"].to_str().expect("csp").to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(first.text().await.expect("body").contains("name=\"credential\""), "the sign-in page");

    let cookie = sign_in(&hub, &client).await;
    let page = client.get(hub.url("/")).header("cookie", &cookie).send().await.expect("send");
    assert!(page.text().await.expect("body").contains("/dashboard/app.js"), "the dashboard itself");
    let info: Value = client
        .get(hub.url("/dashboard/info"))
        .headers(page_headers(&cookie))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(info["connectionString"], hub.emulator.service_connection_string());
    let put = client
        .put(hub.url("/devices/from-the-page?api-version=2021-04-12"))
        .headers(page_headers(&cookie))
        .json(&serde_json::json!({"deviceId": "from-the-page"}))
        .send()
        .await
        .expect("send");
    assert_eq!(put.status(), StatusCode::OK, "the page creates devices through the REST API");
    assert_eq!(status(&client, &hub, Method::GET, "/emulator/faults", page_headers(&cookie)).await, StatusCode::OK);

    let out = client.post(hub.url("/dashboard/signout")).headers(page_headers(&cookie)).send().await.expect("send");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = status(&client, &hub, Method::GET, "/devices?api-version=2021-04-12", page_headers(&cookie)).await;
    assert_eq!(after, StatusCode::UNAUTHORIZED, "signed out");
}

#[tokio::test]
async fn without_the_token_with_a_forged_cookie_or_cross_site_nothing_gets_in() {
    let hub = start().await;
    hub.create_device("d1").await;
    let client = browser(&hub);
    let wrong = client.get(hub.url(&format!("/?token={}", "0".repeat(64)))).send().await.expect("send");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get("set-cookie").is_none());

    let forged = format!("iothub-dashboard={}", "f".repeat(64));
    for path in ["/devices?api-version=2021-04-12", "/dashboard/info", "/dashboard/events", "/emulator/faults"] {
        assert_eq!(
            status(&client, &hub, Method::GET, path, page_headers(&forged)).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            status(&client, &hub, Method::GET, path, HeaderMap::new()).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }

    let cookie = sign_in(&hub, &client).await;
    let mut cross_site = page_headers(&cookie);
    cross_site.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
    let mut other_origin = page_headers(&cookie);
    other_origin.remove("sec-fetch-site");
    other_origin.insert("origin", HeaderValue::from_static("https://evil.example"));
    let mut no_header = page_headers(&cookie);
    no_header.remove("x-iothub-dashboard");
    for (what, headers) in [("cross-site", cross_site), ("another origin", other_origin), ("no page header", no_header)]
    {
        for (method, path) in [
            (Method::GET, "/devices?api-version=2021-04-12"),
            (Method::POST, "/emulator/reset"),
            (Method::DELETE, "/devices/d1?api-version=2021-04-12"),
        ] {
            let got = status(&client, &hub, method.clone(), path, headers.clone()).await;
            assert_eq!(got, StatusCode::UNAUTHORIZED, "{what}: {method} {path}");
        }
    }
    assert!(hub.emulator.hub().get_device("d1").is_ok(), "nothing was deleted or reset");
    let mut sign_in_elsewhere = HeaderMap::new();
    sign_in_elsewhere.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
    let answer = client
        .post(hub.url("/dashboard/signin"))
        .headers(sign_in_elsewhere)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&token_of(&hub)))
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), StatusCode::FORBIDDEN, "a sign-in posted from another site");
}

#[tokio::test]
async fn device_credentials_never_sign_in_only_the_owners_do() {
    let hub = start().await;
    let device = hub.create_device("d1").await;
    let client = browser(&hub);
    let key = device["authentication"]["symmetricKey"]["primaryKey"].as_str().expect("key");
    let device_string = format!("HostName=localhost;DeviceId=d1;SharedAccessKey={key}");
    let device_sas = device_token(&hub, "d1", "d1", unix_now() + 600);
    let reader = hub.emulator.policy_connection_string("registryRead").expect("policy");
    for refused in [device_string.as_str(), device_sas.as_str(), reader.as_str(), "nonsense"] {
        let answer = post_sign_in(&hub, &client, refused).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{refused}");
        assert!(answer.headers().get("set-cookie").is_none());
    }
    let owner = hub.emulator.service_connection_string();
    let owner_sas = hub.owner_token();
    for accepted in [owner.as_str(), owner_sas.as_str(), token_of(&hub).as_str()] {
        let answer = post_sign_in(&hub, &client, accepted).await;
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "owner credentials sign in");
        assert!(answer.headers()["set-cookie"].to_str().expect("cookie").contains("HttpOnly"));
    }
    let device_on_controls = hub.request_as(&device_sas, Method::GET, "/emulator/faults").send().await.expect("send");
    assert_eq!(device_on_controls.status(), StatusCode::UNAUTHORIZED, "a device token on the controls");
}

#[tokio::test]
async fn the_live_feed_streams_stats_and_presence() {
    let hub = start().await;
    hub.create_device("d1").await;
    let client = browser(&hub);
    let cookie = sign_in(&hub, &client).await;
    let mut response =
        client.get(hub.url("/dashboard/events?device=d1")).headers(page_headers(&cookie)).send().await.expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    let _device = common::mqtt::connect_device(&hub, "d1").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(seen.contains("event: stats") && seen.contains("event: presence") && seen.contains("\"Connected\"")) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await.expect("events in time").expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("stream open")));
    }
    assert!(seen.contains("\"connectedDevices\""), "{seen}");
}
