//! The device registry over real HTTPS, as the service SDKs drive it.

mod common;

use common::{API, expect_error, start};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn create_read_list_update_delete() {
    let hub = start().await;
    // Node's create body: empty keys mean "generate them".
    let created = hub
        .request(Method::PUT, "/devices/dev1")
        .json(&json!({"deviceId":"dev1","status":"enabled","authentication":{"symmetricKey":{"primaryKey":"","secondaryKey":""},"type":"sas"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), StatusCode::OK, "creation answers 200, not 201");
    assert_eq!(created.headers()["content-type"], "application/json; charset=utf-8");
    let created: Value = created.json().await.expect("json");
    let primary = created["authentication"]["symmetricKey"]["primaryKey"].as_str().expect("primary key");
    assert_eq!(primary.len(), 44);
    assert_eq!(created["status"], "enabled");
    assert_eq!(created["connectionState"], "Disconnected");
    assert_eq!(created["capabilities"]["iotEdge"], false);

    let fetched: Value = hub.get_json("/devices/dev1").await;
    assert_eq!(fetched, created);

    for path in ["/devices", "/devices/"] {
        let list: Vec<Value> = hub.get_json(path).await;
        assert_eq!(list.iter().map(|d| d["deviceId"].as_str()).collect::<Vec<_>>(), vec![Some("dev1")], "{path}");
    }

    let duplicate =
        hub.request(Method::PUT, "/devices/dev1").json(&json!({"deviceId":"dev1"})).send().await.expect("send");
    expect_error(duplicate, StatusCode::CONFLICT, "DeviceAlreadyExists").await;

    // Node's update: If-Match "*" with the wildcard quoted.
    let updated = hub
        .request(Method::PUT, "/devices/dev1")
        .header("If-Match", "\"*\"")
        .json(&json!({"deviceId":"dev1","status":"disabled","statusReason":"maintenance"}))
        .send()
        .await
        .expect("send");
    assert_eq!(updated.status(), StatusCode::OK);
    let updated: Value = updated.json().await.expect("json");
    assert_eq!(updated["status"], "disabled");
    assert_eq!(updated["statusReason"], "maintenance");
    assert_eq!(updated["authentication"]["symmetricKey"]["primaryKey"], primary, "empty keys on update keep the keys");
    assert_eq!(updated["generationId"], created["generationId"]);
    assert_ne!(updated["etag"], created["etag"]);
    assert_ne!(updated["statusUpdatedTime"], "0001-01-01T00:00:00Z");

    let stale_etag = format!("\"{}\"", created["etag"].as_str().expect("etag"));
    let stale = hub
        .request(Method::PUT, "/devices/dev1")
        .header("If-Match", &stale_etag)
        .json(&json!({"deviceId":"dev1"}))
        .send()
        .await
        .expect("send");
    expect_error(stale, StatusCode::PRECONDITION_FAILED, "PreconditionFailed").await;
    let stale =
        hub.request(Method::DELETE, "/devices/dev1").header("If-Match", &stale_etag).send().await.expect("send");
    expect_error(stale, StatusCode::PRECONDITION_FAILED, "PreconditionFailed").await;

    let current = format!("\"{}\"", updated["etag"].as_str().expect("etag"));
    let deleted = hub.request(Method::DELETE, "/devices/dev1").header("If-Match", current).send().await.expect("send");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(deleted.bytes().await.expect("body").is_empty());

    let gone = hub.request(Method::GET, "/devices/dev1").send().await.expect("send");
    let message = expect_error(gone, StatusCode::NOT_FOUND, "DeviceNotFound").await;
    assert!(message.contains("dev1"), "{message}");
    let again = hub.request(Method::DELETE, "/devices/dev1").header("If-Match", "\"*\"").send().await.expect("send");
    expect_error(again, StatusCode::NOT_FOUND, "DeviceNotFound").await;
    let twin = hub.request(Method::GET, "/twins/dev1").send().await.expect("send");
    expect_error(twin, StatusCode::NOT_FOUND, "DeviceNotFound").await;
}

#[tokio::test]
async fn update_with_if_match_of_a_missing_device_is_not_found() {
    let hub = start().await;
    let response = hub
        .request(Method::PUT, "/devices/ghost")
        .header("If-Match", "\"*\"")
        .json(&json!({"deviceId":"ghost"}))
        .send()
        .await
        .expect("send");
    expect_error(response, StatusCode::NOT_FOUND, "DeviceNotFound").await;
}

#[tokio::test]
async fn given_keys_and_ids_with_punctuation_are_kept() {
    let hub = start().await;
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let id = "plant:7.line-3+x_(a)";
    let encoded = "plant%3A7.line-3%2Bx_(a)";
    let response = hub
        .request(Method::PUT, &format!("/devices/{encoded}"))
        .json(&json!({"deviceId": id, "authentication": {"symmetricKey": {"primaryKey": key, "secondaryKey": key}}}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let device: Value = response.json().await.expect("json");
    assert_eq!(device["deviceId"], id);
    assert_eq!(device["authentication"]["symmetricKey"]["secondaryKey"], key);
    let fetched = hub.request(Method::GET, &format!("/devices/{encoded}")).send().await.expect("send");
    assert_eq!(fetched.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_bodies_and_ids_get_the_hubs_400s() {
    let hub = start().await;
    let long_id = format!("/devices/{}", "x".repeat(129));
    let cases: Vec<(&str, String, &str)> = vec![
        ("/devices/a", r#"{"deviceId":"b"}"#.into(), "ArgumentInvalid"),
        ("/devices/a", "{not json".into(), "IotHubFormatError"),
        ("/devices/a", "".into(), "ArgumentNull"),
        ("/devices/a", r#"{"deviceId":"a","status":"sleeping"}"#.into(), "ArgumentInvalid"),
        ("/devices/a", r#"{"deviceId":"a","status":7}"#.into(), "ArgumentInvalid"),
        ("/devices/a", r#"{"authentication":{"symmetricKey":{"primaryKey":"c2hvcnQ="}}}"#.into(), "ArgumentInvalid"),
        ("/devices/a", r#"{"authentication":{"type":"magic"}}"#.into(), "ArgumentInvalid"),
        ("/devices/a", format!(r#"{{"statusReason":"{}"}}"#, "r".repeat(129)), "ArgumentInvalid"),
        ("/devices/has%20space", "{}".into(), "ArgumentInvalid"),
        (&long_id, "{}".into(), "ArgumentInvalid"),
        ("/devices/a", format!("{}{}", "[".repeat(1000), "]".repeat(1000)), "ArgumentInvalid"),
    ];
    for (path, body, code) in cases {
        let response = hub
            .request(Method::PUT, path)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("send");
        let message = expect_error(response, StatusCode::BAD_REQUEST, code).await;
        assert!(message.len() > code.len() + 12, "the message explains the problem: {message} ({body:.40})");
    }
    let list: Vec<Value> = hub.get_json("/devices").await;
    assert!(list.is_empty(), "nothing was created by a refused request");

    let huge = vec![b' '; 300 * 1024];
    let response = hub.request(Method::PUT, "/devices/a").body(huge).send().await.expect("send");
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "MessageTooLarge").await;
}

#[tokio::test]
async fn every_path_requires_an_api_version() {
    let hub = start().await;
    hub.create_device("d").await;
    for (method, path) in [
        (Method::GET, "/devices/d"),
        (Method::PUT, "/devices/d"),
        (Method::DELETE, "/devices/d"),
        (Method::GET, "/devices"),
        (Method::GET, "/devices/"),
        (Method::GET, "/twins/d"),
        (Method::GET, "/statistics/devices"),
        (Method::GET, "/statistics/service"),
    ] {
        let response = hub
            .http
            .request(method.clone(), hub.url(path))
            .header("Authorization", hub.owner_token())
            .send()
            .await
            .expect("send");
        expect_error(response, StatusCode::BAD_REQUEST, "InvalidProtocolVersion").await;
        let response = hub
            .http
            .request(method.clone(), hub.url(&format!("{path}?api-version=")))
            .header("Authorization", hub.owner_token())
            .send()
            .await
            .expect("send");
        expect_error(response, StatusCode::BAD_REQUEST, "InvalidProtocolVersion").await;
    }
    // Any version value is accepted.
    let old = hub
        .http
        .get(hub.url("/devices/d?api-version=2018-06-30"))
        .header("Authorization", hub.owner_token())
        .send()
        .await
        .expect("send");
    assert_eq!(old.status(), StatusCode::OK);
    assert!(hub.emulator.hub().get_device("d").is_ok(), "the refused DELETE deleted nothing");
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_hubs_format() {
    let hub = start().await;
    let response = hub.request(Method::GET, "/nothing/here").send().await.expect("send");
    expect_error(response, StatusCode::NOT_FOUND, "NotFound").await;
    let response = hub.request(Method::POST, "/devices/d").send().await.expect("send");
    expect_error(response, StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed").await;
}

#[tokio::test]
async fn list_honours_top_and_statistics_count() {
    let hub = start().await;
    for i in 0..5 {
        hub.create_device(&format!("d{i}")).await;
    }
    hub.request(Method::PUT, "/devices/d4")
        .header("If-Match", "*")
        .json(&json!({"status":"disabled"}))
        .send()
        .await
        .expect("send");
    let two: Vec<Value> = hub.get_json("/devices?top=2").await;
    assert_eq!(two.iter().map(|d| d["deviceId"].as_str().expect("id")).collect::<Vec<_>>(), ["d0", "d1"]);
    for top in ["0", "5000", "-1"] {
        let all: Vec<Value> = hub.get_json(&format!("/devices?top={top}")).await;
        assert_eq!(all.len(), 5, "top={top} is treated as 1000");
    }
    let bad = hub.request(Method::GET, "/devices?top=many").send().await.expect("send");
    expect_error(bad, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;

    let stats: Value = hub.get_json("/statistics/devices").await;
    assert_eq!(stats, json!({"totalDeviceCount":5,"enabledDeviceCount":4,"disabledDeviceCount":1}));
    let service: Value = hub.get_json("/statistics/service").await;
    assert_eq!(service, json!({"connectedDeviceCount":0}));
}

#[tokio::test]
async fn wire_shapes_of_a_device_and_its_twin() {
    let hub = start().await;
    let device = hub.create_device("snap").await;
    insta::assert_json_snapshot!("device", device, {
        ".etag" => "[etag]",
        ".generationId" => "[generationId]",
        ".authentication.symmetricKey.primaryKey" => "[key]",
        ".authentication.symmetricKey.secondaryKey" => "[key]",
    });
    let twin: Value = hub.get_json("/twins/snap").await;
    assert_eq!(twin["deviceEtag"], device["etag"]);
    insta::assert_json_snapshot!("twin", twin, {
        ".deviceEtag" => "[etag]",
        ".**.$lastUpdated" => "[time]",
    });
}

#[tokio::test]
async fn tls_1_2_and_1_3_both_work_and_the_certificate_names_loopback() {
    let hub = start().await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let tls = common::client_tls(hub.emulator.ca_pem(), &[version]);
        let client = reqwest::Client::builder().tls_backend_preconfigured(tls).build().expect("client");
        // By IP (IP SAN) and, via resolve, by name.
        let by_ip = format!("https://127.0.0.1:{}/devices?{API}", hub.emulator.https_addr().port());
        let response = client.get(by_ip).header("Authorization", hub.owner_token()).send().await.expect("TLS by IP");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = hub.request(Method::GET, "/devices").send().await.expect("TLS by name");
    assert_eq!(response.status(), StatusCode::OK);
}
