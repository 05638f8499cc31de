//! Jobs v2 over the wire: the tutorial's two jobs exactly as the Node SDK sends them, a device answering over
//! MQTT/TLS, `getJob` polling, `devices.jobs` records, the job query, and the hub's errors and permissions.

mod common;

use std::time::Duration;

use common::mqtt::{Mqtt, connect_device, next_publish, publish, subscribe, topic_param};
use common::{TestHub, expect_error, start};
use reqwest::{Method, StatusCode};
use rumqttc::mqttbytes::QoS;
use serde_json::{Value, json};

fn tutorial_method_job(job_id: &str) -> Value {
    json!({
        "jobId": job_id,
        "type": "scheduleDeviceMethod",
        "cloudToDeviceMethod": {"methodName": "lockDoor", "payload": null, "responseTimeoutInSeconds": 15},
        "startTime": jiff::Timestamp::now().to_string(),
        "maxExecutionTimeInSeconds": 300,
        "queryCondition": "deviceId IN ['myDeviceId']",
    })
}

fn tutorial_twin_job(job_id: &str) -> Value {
    json!({
        "jobId": job_id,
        "type": "scheduleUpdateTwin",
        "updateTwin": {"etag": "*", "properties": {"desired": {"building": "43", "floor": 3}}},
        "startTime": jiff::Timestamp::now().to_string(),
        "maxExecutionTimeInSeconds": 300,
        "queryCondition": "deviceId IN ['myDeviceId']",
    })
}

async fn put_job(hub: &TestHub, token: &str, job_id: &str, body: &Value) -> reqwest::Response {
    hub.request_as(token, Method::PUT, &format!("/jobs/v2/{job_id}")).json(body).send().await.expect("send")
}

/// Polls `GET /jobs/v2/{id}` as the tutorial's monitorJob does, until the job is finished.
async fn monitor(hub: &TestHub, job_id: &str) -> Value {
    for _ in 0..500 {
        let job: Value = hub.get_json(&format!("/jobs/v2/{job_id}")).await;
        if matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {job_id} did not finish");
}

async fn query(hub: &TestHub, text: &str) -> reqwest::Response {
    hub.request(Method::POST, "/devices/query").json(&json!({"query": text})).send().await.expect("send")
}

/// Answers the next method request with 200 and `null`, as the tutorial's `response.send(200, cb)` does.
async fn answer_lock_door(mqtt: &mut Mqtt) -> Value {
    let request = next_publish(mqtt).await;
    assert!(request.topic.starts_with("$iothub/methods/POST/lockDoor/?$rid="), "{}", request.topic);
    let rid = topic_param(&request.topic, "$rid").expect("rid").to_owned();
    publish(mqtt, &format!("$iothub/methods/res/200/?$rid={rid}"), QoS::AtMostOnce, b"null").await;
    serde_json::from_slice(&request.payload).expect("JSON payload")
}

#[tokio::test]
async fn the_tutorial_runs_end_to_end() {
    let hub = start().await;
    hub.create_device("myDeviceId").await;
    let mut device = connect_device(&hub, "myDeviceId").await;
    subscribe(&mut device, &["$iothub/methods/POST/#", "$iothub/twin/PATCH/properties/desired/#"], QoS::AtMostOnce)
        .await;
    let token = hub.policy_token("registryReadWrite");

    let method_job = "b20f3ae8-92cd-45e7-a60a-a1a592f10ddf";
    let response = put_job(&hub, &token, method_job, &tutorial_method_job(method_job)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json; charset=utf-8", "Node parses only JSON");
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["status"], "queued");
    assert_eq!(created["type"], "scheduleDeviceMethod");
    assert_eq!(answer_lock_door(&mut device).await, Value::Null, "payload null reaches the device as `null`");
    let job = monitor(&hub, method_job).await;
    assert_eq!(job["status"], "completed", "{job}");
    insta::assert_json_snapshot!("method_job", job, {
        ".startTime" => "[time]", ".createdTime" => "[time]", ".endTime" => "[time]",
    });

    let twin_job = "691131ed-436e-41ab-a859-81aea4941dcf";
    let response = put_job(&hub, &token, twin_job, &tutorial_twin_job(twin_job)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let notification = next_publish(&mut device).await;
    assert!(
        notification.topic.starts_with("$iothub/twin/PATCH/properties/desired/?$version="),
        "{}",
        notification.topic
    );
    let desired: Value = serde_json::from_slice(&notification.payload).expect("json");
    assert_eq!((&desired["building"], &desired["floor"]), (&json!("43"), &json!(3)));
    let job = monitor(&hub, twin_job).await;
    assert_eq!(job["status"], "completed", "{job}");
    insta::assert_json_snapshot!("twin_job", job, {
        ".startTime" => "[time]", ".createdTime" => "[time]", ".endTime" => "[time]",
    });
    let twin: Value = hub.get_json("/twins/myDeviceId").await;
    assert_eq!(twin["properties"]["desired"]["building"], "43");
    assert_eq!(twin["properties"]["desired"]["floor"], 3);

    // The per-device records, as a user reads them.
    let response = query(&hub, "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'myDeviceId'").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-ms-item-type"], "DeviceJob");
    let records: Vec<Value> = response.json().await.expect("json");
    assert_eq!(records.len(), 2);
    let method_record = records.iter().find(|r| r["jobId"] == method_job).expect("method record");
    insta::assert_json_snapshot!("method_device_job", method_record, {
        ".startTimeUtc" => "[time]", ".endTimeUtc" => "[time]",
        ".createdDateTimeUtc" => "[time]", ".lastUpdatedDateTimeUtc" => "[time]",
    });
    let twin_record = records.iter().find(|r| r["jobId"] == twin_job).expect("twin record");
    assert_eq!(twin_record["jobType"], "scheduleUpdateTwin");
    assert_eq!(twin_record["status"], "completed");

    // devices.jobs takes only SELECT *; FROM devices never shows job records.
    let response = query(&hub, "SELECT deviceId FROM devices.jobs").await;
    expect_error(response, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    let twins: Vec<Value> = query(&hub, "SELECT * FROM devices").await.json().await.expect("json");
    assert!(twins[0].get("jobs").is_none());
}

#[tokio::test]
async fn job_errors_use_the_hubs_codes() {
    let hub = start().await;
    hub.create_device("d1").await;
    let owner = hub.owner_token();
    let body = tutorial_method_job("dup");
    assert_eq!(put_job(&hub, &owner, "dup", &body).await.status(), StatusCode::OK);
    expect_error(put_job(&hub, &owner, "dup", &body).await, StatusCode::CONFLICT, "JobAlreadyExists").await;

    let mut bad = tutorial_method_job("bad1");
    bad["queryCondition"] = json!("deviceId IN [");
    let message =
        expect_error(put_job(&hub, &owner, "bad1", &bad).await, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    assert!(message.contains("SQL query parse failed") && message.contains("Line 1:"), "{message}");
    let mut bad = tutorial_method_job("bad2");
    bad["type"] = json!("firmwareUpdate");
    expect_error(put_job(&hub, &owner, "bad2", &bad).await, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
    expect_error(
        put_job(&hub, &owner, "bad_id", &tutorial_method_job("bad_id")).await,
        StatusCode::BAD_REQUEST,
        "ArgumentInvalid",
    )
    .await;
    let response = hub
        .request(Method::PUT, "/jobs/v2/nobody")
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("send");
    expect_error(response, StatusCode::BAD_REQUEST, "IotHubFormatError").await;

    let response = hub.request(Method::GET, "/jobs/v2/missing").send().await.expect("send");
    expect_error(response, StatusCode::NOT_FOUND, "JobNotFound").await;
    let response = hub.request(Method::POST, "/jobs/v2/missing/cancel").send().await.expect("send");
    expect_error(response, StatusCode::NOT_FOUND, "JobNotFound").await;

    // registryRead may read jobs but not create or cancel them; the service policy (ServiceConnect) neither.
    let read = hub.policy_token("registryRead");
    expect_error(
        put_job(&hub, &read, "ro", &tutorial_method_job("ro")).await,
        StatusCode::UNAUTHORIZED,
        "IotHubUnauthorizedAccess",
    )
    .await;
    let response = hub.request_as(&read, Method::POST, "/jobs/v2/dup/cancel").send().await.expect("send");
    expect_error(response, StatusCode::UNAUTHORIZED, "IotHubUnauthorizedAccess").await;
    assert_eq!(hub.request_as(&read, Method::GET, "/jobs/v2/dup").send().await.expect("send").status(), StatusCode::OK);
    let service = hub.policy_token("service");
    expect_error(
        put_job(&hub, &service, "svc", &tutorial_method_job("svc")).await,
        StatusCode::UNAUTHORIZED,
        "IotHubUnauthorizedAccess",
    )
    .await;
    let response = hub.http.get(hub.url("/jobs/v2/dup")).header("Authorization", &owner).send().await.expect("send");
    expect_error(response, StatusCode::BAD_REQUEST, "InvalidProtocolVersion").await;
}

#[tokio::test]
async fn too_many_active_jobs_is_refused_with_429() {
    let settings = iothub_emulator::hub::JobSettings { max_active_jobs: 1, ..Default::default() };
    let hub = common::start_with(iothub_emulator::Emulator::builder().job_settings(settings)).await;
    let owner = hub.owner_token();
    let mut later = tutorial_method_job("later");
    later["startTime"] = json!("2099-01-01T00:00:00Z");
    assert_eq!(put_job(&hub, &owner, "later", &later).await.status(), StatusCode::OK);
    let response = put_job(&hub, &owner, "second", &tutorial_method_job("second")).await;
    expect_error(response, StatusCode::TOO_MANY_REQUESTS, "ThrottlingMaxActiveJobCountExceeded").await;
    // Cancelling frees the slot. Node sends the cancel with no body and no Content-Type.
    let response =
        hub.request(Method::POST, "/jobs/v2/later/cancel").header("content-length", "0").send().await.expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.expect("json")["status"], "cancelled");
    assert_eq!(put_job(&hub, &owner, "second", &tutorial_method_job("second")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_job_query_pages_with_continuations_and_filters() {
    let hub = start().await;
    let owner = hub.owner_token();
    for i in 0..3 {
        let mut body = tutorial_method_job(&format!("m{i}"));
        body["startTime"] = json!("2099-01-01T00:00:00Z");
        assert_eq!(put_job(&hub, &owner, &format!("m{i}"), &body).await.status(), StatusCode::OK);
    }
    assert_eq!(put_job(&hub, &owner, "t0", &tutorial_twin_job("t0")).await.status(), StatusCode::OK);
    monitor(&hub, "t0").await;

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request =
            hub.request(Method::GET, "/jobs/v2/query?jobType=scheduleDeviceMethod").header("x-ms-max-item-count", "2");
        if let Some(token) = &token {
            request = request.header("x-ms-continuation", token);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-ms-item-type"], "JobResponse");
        token = response.headers().get("x-ms-continuation").map(|v| v.to_str().expect("ascii").to_owned());
        let page: Vec<Value> = response.json().await.expect("json");
        seen.extend(page.into_iter().map(|j| j["jobId"].as_str().expect("id").to_owned()));
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["m0", "m1", "m2"]);
    let completed: Vec<Value> = hub.get_json("/jobs/v2/query?jobStatus=Completed&jobType=ScheduleUpdateTwin").await;
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["jobId"], "t0");
    let response = hub.request(Method::GET, "/jobs/v2/query?jobStatus=sleeping").send().await.expect("send");
    expect_error(response, StatusCode::BAD_REQUEST, "ArgumentInvalid").await;
}
