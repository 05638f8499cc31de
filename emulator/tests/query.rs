//! `POST /devices/query` over HTTPS: filters, projections, aggregates, paging and errors.

mod common;

use common::{TestHub, expect_error, start};
use iothub_emulator::domain::twin::json::object_from_json;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Page {
    items: Vec<Value>,
    item_type: String,
    continuation: Option<String>,
}

async fn query_page(hub: &TestHub, text: &str, page_size: Option<usize>, continuation: Option<&str>) -> Page {
    let mut request = hub.request(Method::POST, "/devices/query").json(&json!({ "query": text }));
    if let Some(size) = page_size {
        request = request.header("x-ms-max-item-count", size.to_string());
    }
    if let Some(token) = continuation {
        request = request.header("x-ms-continuation", token);
    }
    let response = request.send().await.expect("send");
    assert_eq!(response.status(), StatusCode::OK, "{text}");
    let item_type = response.headers()["x-ms-item-type"].to_str().expect("header").to_owned();
    let continuation = response.headers().get("x-ms-continuation").map(|v| v.to_str().expect("header").to_owned());
    assert!(continuation.as_deref() != Some(""), "never an empty continuation");
    Page { items: response.json().await.expect("json"), item_type, continuation }
}

/// Follows continuations to the end and returns every item.
async fn query_all(hub: &TestHub, text: &str, page_size: usize) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut continuation: Option<String> = None;
    loop {
        let page = query_page(hub, text, Some(page_size), continuation.as_deref()).await;
        pages += 1;
        assert!(page.items.len() <= page_size);
        items.extend(page.items);
        match page.continuation {
            Some(token) => continuation = Some(token),
            None => return (items, pages),
        }
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["deviceId"].as_str().expect("deviceId").to_owned()).collect()
}

/// Ten devices: d0..d9; even ones tagged `location: 'x'`, reported `temp` = 10 * i.
async fn fleet(hub: &TestHub) {
    for i in 0..10 {
        let id = format!("d{i}");
        hub.create_device(&id).await;
        let location = if i % 2 == 0 { "x" } else { "y" };
        let patch = json!({"tags": {"location": location, "floor": i}});
        let response = hub
            .request(Method::PATCH, &format!("/twins/{id}"))
            .header("If-Match", "*")
            .json(&patch)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        let device = hub.emulator.hub().clone();
        let reported = serde_json::Map::from_iter([("temp".to_owned(), json!(i * 10))]);
        device.patch_reported(&id, &object_from_json(&reported)).await.expect("reported");
    }
}

#[tokio::test]
async fn filters_select_the_right_twins() {
    let hub = start().await;
    fleet(&hub).await;
    for (condition, expected) in [
        ("", vec!["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"]),
        ("WHERE tags.location = 'x' AND properties.reported.temp >= 40", vec!["d4", "d6", "d8"]),
        ("WHERE deviceId IN ['d3', 'd1', 'nope']", vec!["d1", "d3"]),
        ("WHERE deviceId NIN ['d0', 'd1'] AND tags.floor < 4", vec!["d2", "d3"]),
        ("WHERE NOT (tags.location = 'x') AND properties.reported.temp > 60", vec!["d7", "d9"]),
        ("WHERE properties.reported.missing != 1", vec![]),
        ("WHERE is_defined(tags.floor) AND tags.floor % 3 = 0", vec!["d0", "d3", "d6", "d9"]),
        ("WHERE status = 'enabled' AND connectionState = 'Disconnected' AND deviceid = 'd5'", vec!["d5"]),
        ("WHERE properties.desired.$version = 1 AND properties.reported.$version = 2 AND tags.floor = 1", vec!["d1"]),
    ] {
        let text = format!("SELECT * FROM devices {condition}");
        let page = query_page(&hub, &text, None, None).await;
        assert_eq!(page.item_type, "Twin");
        assert_eq!(ids(&page.items), expected, "{text}");
    }
    let page = query_page(&hub, "select * from devices where deviceId = 'd2'", None, None).await;
    assert_eq!(page.items[0]["tags"]["location"], "x", "items are whole twins");
    assert_eq!(page.items[0]["properties"]["reported"]["temp"], 20);
}

#[tokio::test]
async fn paging_follows_continuations_without_repeats() {
    let hub = start().await;
    fleet(&hub).await;
    let (items, pages) = query_all(&hub, "SELECT * FROM devices", 3).await;
    assert_eq!(pages, 4);
    assert_eq!(ids(&items), (0..10).map(|i| format!("d{i}")).collect::<Vec<_>>());
    let (items, pages) = query_all(&hub, "SELECT TOP 5 * FROM devices WHERE tags.location = 'y'", 2).await;
    assert_eq!(ids(&items), ["d1", "d3", "d5", "d7", "d9"]);
    assert_eq!(pages, 3);
    let (items, _) = query_all(&hub, "SELECT TOP 3 * FROM devices", 2).await;
    assert_eq!(items.len(), 3);

    // A continuation is a cursor: devices added before the cursor do not shift the next page.
    let first = query_page(&hub, "SELECT * FROM devices", Some(5), None).await;
    hub.create_device("a-new-first").await;
    let second = query_page(&hub, "SELECT * FROM devices", Some(5), first.continuation.as_deref()).await;
    assert_eq!(ids(&second.items), ["d5", "d6", "d7", "d8", "d9"]);
    assert_eq!(second.continuation, None);

    // Page sizes above the hub's maximum are clamped to 100.
    let page = query_page(&hub, "SELECT * FROM devices", Some(5000), None).await;
    assert_eq!(page.items.len(), 11);

    let foreign = hub
        .request(Method::POST, "/devices/query")
        .header("x-ms-continuation", first.continuation.as_deref().expect("token"))
        .json(&json!({"query": "SELECT * FROM devices WHERE tags.floor > 1"}))
        .send()
        .await
        .expect("send");
    expect_error(foreign, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
}

#[tokio::test]
async fn projections_and_aggregates_are_raw_rows() {
    let hub = start().await;
    fleet(&hub).await;
    let page = query_page(
        &hub,
        "SELECT DeviceId, tags.location AS loc, properties.reported.nothing FROM devices WHERE tags.floor <= 1",
        None,
        None,
    )
    .await;
    assert_eq!(page.item_type, "Raw");
    assert_eq!(page.items, vec![json!({"deviceId":"d0","loc":"x"}), json!({"deviceId":"d1","loc":"y"})]);
    // Members come in SELECT order, not sorted.
    let page =
        query_page(&hub, "SELECT tags.location AS loc, deviceId FROM devices WHERE tags.floor = 0", None, None).await;
    assert_eq!(serde_json::to_string(&page.items).expect("json"), r#"[{"loc":"x","deviceId":"d0"}]"#);

    let page = query_page(&hub, "SELECT COUNT() AS total FROM devices", None, None).await;
    assert_eq!(page.items, vec![json!({"total": 10})]);
    let page =
        query_page(&hub, "SELECT COUNT() AS total FROM devices WHERE tags.location = 'nowhere'", None, None).await;
    assert_eq!(page.items, vec![json!({"total": 0})]);

    let page = query_page(
        &hub,
        "SELECT tags.location AS location, COUNT() AS n, AVG(properties.reported.temp) AS avgTemp, MAX(tags.floor) FROM devices GROUP BY tags.location",
        None,
        None,
    )
    .await;
    assert_eq!(page.item_type, "Raw");
    assert_eq!(
        serde_json::to_string(&page.items).expect("json"),
        r#"[{"location":"x","n":5,"avgTemp":40,"$1":8},{"location":"y","n":5,"avgTemp":50,"$1":9}]"#
    );
}

#[tokio::test]
async fn bad_queries_are_400_with_the_parse_error() {
    let hub = start().await;
    hub.create_device("d").await;
    let long = format!("SELECT * FROM devices WHERE deviceId IN [{}]", vec!["'x'"; 3000].join(","));
    for (text, expected) in [
        ("SELECT * FROM devices WHERE", "Line 1:28"),
        ("SELECT * FROM nowhere", "expected devices"),
        ("SELECT deviceId, COUNT() FROM devices", "must appear in GROUP BY"),
        ("SELECT deviceId FROM devices.jobs", "only SELECT *"),
        (long.as_str(), "longer than 8192"),
    ] {
        let response =
            hub.request(Method::POST, "/devices/query").json(&json!({ "query": text })).send().await.expect("send");
        let message = expect_error(response, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
        assert!(message.contains(expected), "{text}: {message}");
    }
    let response = hub.request(Method::POST, "/devices/query").json(&json!({})).send().await.expect("send");
    expect_error(response, StatusCode::BAD_REQUEST, "ArgumentNull").await;
    // Module twins and job records arrive with modules and jobs; the collections already answer.
    let page = query_page(&hub, "SELECT * FROM devices.modules", None, None).await;
    assert_eq!((page.items.len(), page.item_type.as_str()), (0, "Twin"));
    let page = query_page(&hub, "SELECT * FROM devices.jobs", None, None).await;
    assert_eq!((page.items.len(), page.item_type.as_str()), (0, "DeviceJob"));
    // A device named `query` stays readable.
    hub.create_device("query").await;
    let device: Value = hub.get_json("/devices/query").await;
    assert_eq!(device["deviceId"], "query");
}
