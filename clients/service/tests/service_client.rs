//! The service client against the in-process emulator over real TLS, with a real `iothub-device` client
//! answering methods: registry, twins, methods, jobs, queries and configurations, and the hub's errors as typed
//! errors.

use std::time::Duration;

use iothub_device::{ClientOptions, DeviceClient, MethodResponse};
use iothub_emulator::{Emulator, RunningEmulator};
use iothub_service::proto::configurations::{Configuration, ConfigurationContent, ConfigurationQueriesTestInput};
use iothub_service::proto::jobs::{DeviceJob, DeviceJobStatus, JobStatus, JobType};
use iothub_service::proto::methods::CloudToDeviceMethod;
use iothub_service::proto::twin::Twin;
use iothub_service::{Error, Etag, Schedule, ServiceClient, ServiceOptions};
use serde_json::{Map, Value, json};

async fn start() -> (RunningEmulator, ServiceClient) {
    let emulator = Emulator::builder().start().await.expect("emulator");
    let service = service_for(&emulator, &emulator.service_connection_string());
    (emulator, service)
}

fn service_for(emulator: &RunningEmulator, connection_string: &str) -> ServiceClient {
    let options = ServiceOptions::default().with_ca_pem(emulator.ca_pem()).with_port(emulator.https_addr().port());
    ServiceClient::from_connection_string(connection_string, options).expect("client")
}

async fn device(emulator: &RunningEmulator, service: &ServiceClient, id: &str) -> DeviceClient {
    let created = service.registry().create_sas_device(id).await.expect("create");
    let cs = service.registry().device_connection_string(&created).expect("connection string");
    let options = ClientOptions::default().with_ca_pem(emulator.ca_pem()).with_port(emulator.mqtt_addr().port());
    DeviceClient::builder(&cs)
        .expect("builder")
        .options(options)
        .on_method(
            "lockDoor",
            |request| async move { MethodResponse::ok(json!({"locked": true, "got": request.payload})) },
        )
        .on_method("slow", |_| async {
            tokio::time::sleep(Duration::from_secs(8)).await;
            MethodResponse::ok(Value::Null)
        })
        .connect()
        .await
        .expect("device connects")
}

fn map(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("object")
}

fn method(name: &str, timeout: u64) -> CloudToDeviceMethod {
    CloudToDeviceMethod {
        method_name: name.into(),
        payload: json!({"pin": 1}),
        response_timeout_in_seconds: Some(timeout),
        connect_timeout_in_seconds: None,
    }
}

#[tokio::test]
async fn bulk_registry_operations_report_each_item() {
    use iothub_service::proto::registry::ExportImportDevice;
    let (_emulator, service) = start().await;
    let registry = service.registry();
    registry.create_sas_device("bulk-taken").await.expect("create");
    let item = |id: &str, mode: &str| ExportImportDevice {
        id: id.into(),
        import_mode: Some(mode.into()),
        ..ExportImportDevice::default()
    };
    let mut with_twin = item("bulk-1", "create");
    with_twin.tags = Some(serde_json::json!({"site": "x"}));
    let result =
        registry.bulk(&[with_twin, item("bulk-taken", "create"), item("bulk-2", "create")]).await.expect("bulk");
    assert!(!result.is_successful);
    assert_eq!(result.errors.len(), 1);
    assert_eq!(
        (result.errors[0].device_id.as_deref(), result.errors[0].error_code),
        (Some("bulk-taken"), Some(409001))
    );
    assert!(registry.get_device("bulk-2").await.is_ok(), "the other items went through");
    let result = registry.bulk(&[item("bulk-1", "delete"), item("bulk-2", "delete")]).await.expect("bulk delete");
    assert!(result.is_successful && result.errors.is_empty());
    let too_many: Vec<ExportImportDevice> = (0..101).map(|i| item(&format!("many-{i}"), "create")).collect();
    let err = registry.bulk(&too_many).await.expect_err("over 100");
    assert_eq!((err.status(), err.code()), (Some(413), Some("TooManyDevices")));
}

#[tokio::test]
async fn registry_crud_with_etags_and_typed_errors() {
    let (_emulator, service) = start().await;
    let registry = service.registry();
    let created = registry.create_sas_device("reg-1").await.expect("create");
    let key =
        created.authentication.as_ref().and_then(|a| a.symmetric_key.as_ref()).and_then(|k| k.primary_key.clone());
    assert_eq!(key.map(|k| k.len()), Some(44), "the hub generated keys");
    let err = registry.create_sas_device("reg-1").await.expect_err("duplicate");
    assert_eq!((err.status(), err.code()), (Some(409), Some("DeviceAlreadyExists")));

    let mut device = registry.get_device("reg-1").await.expect("get");
    let etag = device.etag.clone().expect("etag");
    device.status = Some("disabled".into());
    let err = registry.update_device(&device, Etag::Value("stale".into())).await.expect_err("stale etag");
    assert_eq!((err.status(), err.code()), (Some(412), Some("PreconditionFailed")));
    let updated = registry.update_device(&device, Etag::Value(etag)).await.expect("update");
    assert_eq!(updated.status.as_deref(), Some("disabled"));
    registry.create_sas_device("reg#2?x").await.expect("an id that needs encoding");
    assert_eq!(registry.get_device("reg#2?x").await.expect("get").device_id.as_deref(), Some("reg#2?x"));
    let listed = registry.list_devices(100).await.expect("list");
    assert_eq!(listed.len(), 2);
    let stats = registry.statistics().await.expect("statistics");
    assert_eq!((stats.total_device_count, stats.disabled_device_count), (2, 1));
    registry.delete_device("reg-1", Etag::Any).await.expect("delete");
    let err = registry.get_device("reg-1").await.expect_err("gone");
    assert!(
        matches!(&err, Error::Hub { status: 404, code, message, .. } if code == "DeviceNotFound" && message.contains("reg-1")),
        "{err}"
    );
}

#[tokio::test]
async fn twins_get_patch_and_replace_with_etags() {
    let (_emulator, service) = start().await;
    service.registry().create_sas_device("tw").await.expect("create");
    let twins = service.twins();
    let twin = twins.get_twin("tw").await.expect("twin");
    assert_eq!(twin.device_id.as_deref(), Some("tw"));
    let etag = twin.etag.clone().expect("etag");
    let patched = twins
        .update_twin("tw", &Twin::desired_patch(map(json!({"building": "43", "floor": 3}))), Etag::Value(etag.clone()))
        .await
        .expect("patch");
    assert_eq!(patched.desired().and_then(|d| d.get("floor")), Some(&json!(3)));
    let err =
        twins.update_twin("tw", &Twin::tags_patch(map(json!({"a": 1}))), Etag::Value(etag)).await.expect_err("stale");
    assert_eq!(err.code(), Some("PreconditionFailed"));
    let tagged =
        twins.update_twin("tw", &Twin::tags_patch(map(json!({"site": "lab"}))), Etag::Any).await.expect("tags");
    assert_eq!(tagged.tags.as_ref().and_then(|t| t.get("site")), Some(&json!("lab")));
    let replaced =
        twins.replace_twin("tw", &Twin::desired_patch(map(json!({"only": true}))), Etag::Any).await.expect("replace");
    let desired = replaced.desired().expect("desired");
    assert!(desired.get("building").is_none() && desired.get("only") == Some(&json!(true)));
    let err = twins.get_twin("nobody").await.expect_err("unknown");
    assert_eq!(err.code(), Some("DeviceNotFound"));
}

#[tokio::test]
async fn methods_reach_a_rust_device_and_failures_keep_the_hubs_codes() {
    let (emulator, service) = start().await;
    let _device = device(&emulator, &service, "m1").await;
    let result = service.methods().invoke("m1", &method("lockDoor", 5)).await.expect("invoke");
    assert_eq!((result.status, result.payload), (200, json!({"locked": true, "got": {"pin": 1}})));
    let unknown = service.methods().invoke("m1", &method("reboot", 5)).await.expect("answered");
    assert_eq!(unknown.status, 501);
    service.registry().create_sas_device("offline").await.expect("create");
    let err = service.methods().invoke("offline", &method("lockDoor", 5)).await.expect_err("offline");
    assert!(
        matches!(&err, Error::Hub { status: 404, number: Some(404103), code, .. } if code == "DeviceNotOnline"),
        "{err}"
    );
    let err = service.methods().invoke("m1", &method("slow", 5)).await.expect_err("too slow");
    assert!(matches!(&err, Error::Hub { status: 504, number: Some(504101), .. }), "{err}");
}

#[tokio::test]
async fn jobs_schedule_wait_cancel_and_query() {
    let (emulator, service) = start().await;
    let device = device(&emulator, &service, "job-dev").await;
    let mut desired = device.desired_updates();
    let jobs = service.jobs();
    let created = jobs
        .schedule_device_method("lock-1", "deviceId IN ['job-dev']", &method("lockDoor", 15), Schedule::now())
        .await
        .expect("schedule");
    assert_eq!((created.status, created.job_type), (JobStatus::Queued, JobType::ScheduleDeviceMethod));
    let job = jobs.wait_for_job("lock-1", Duration::from_millis(20), Duration::from_secs(10)).await.expect("wait");
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.device_job_statistics.map(|s| s.succeeded_count), Some(1));

    let patch = Twin::desired_patch(map(json!({"building": "43", "floor": 3})));
    jobs.schedule_twin_update(
        "twin-1",
        "deviceId IN ['job-dev']",
        &patch,
        Schedule::now().max_execution_time(Duration::from_secs(60)),
    )
    .await
    .expect("schedule");
    let mut states = Vec::new();
    let mut monitor = jobs.monitor_job("twin-1", Duration::from_millis(20));
    while let Some(state) = monitor.next().await {
        states.push(state.expect("state").status);
    }
    assert_eq!(states.last(), Some(&JobStatus::Completed), "{states:?}");
    let update = tokio::time::timeout(Duration::from_secs(5), desired.next()).await.expect("in time").expect("update");
    assert_eq!(update.version(), 2);
    let twin = service.twins().get_twin("job-dev").await.expect("twin");
    assert_eq!(twin.desired().and_then(|d| d.get("building")), Some(&json!("43")));

    let later = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_secs(3600)).expect("time");
    jobs.schedule_device_method("later-1", "*", &method("lockDoor", 15), Schedule::at(later)).await.expect("schedule");
    let cancelled = jobs.cancel_job("later-1").await.expect("cancel");
    assert_eq!(cancelled.status, JobStatus::Cancelled);

    let records: Vec<DeviceJob> = service
        .query()
        .device_jobs("SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'job-dev'")
        .collect_all()
        .await
        .expect("records");
    assert_eq!(records.len(), 2);
    let lock = records.iter().find(|r| r.job_id == "lock-1").expect("lock record");
    assert_eq!(lock.status, DeviceJobStatus::Completed);
    assert_eq!(lock.outcome.as_ref().and_then(|o| o.device_method_response.as_ref()).map(|r| r.status), Some(200));

    let mut pager = jobs.query_jobs(Some(JobType::ScheduleDeviceMethod), None).page_size(1);
    let mut ids = Vec::new();
    while let Some(page) = pager.next_page().await.expect("page") {
        assert!(page.items.len() <= 1);
        assert_eq!(page.item_type.as_deref(), Some("JobResponse"));
        ids.extend(page.items.into_iter().map(|j| j.job_id));
    }
    assert_eq!(ids, ["later-1", "lock-1"]);
    let err = jobs.get_job("missing").await.expect_err("unknown job");
    assert_eq!((err.status(), err.code()), (Some(404), Some("JobNotFound")));
    let err = jobs
        .schedule_device_method("bad", "deviceId IN [", &method("lockDoor", 15), Schedule::now())
        .await
        .expect_err("bad condition");
    assert_eq!((err.status(), err.code()), (Some(400), Some("ArgumentInvalid")));
    device.close().await;
}

#[tokio::test]
async fn queries_follow_continuations_across_pages() {
    let (_emulator, service) = start().await;
    for i in 0..5 {
        let id = format!("q{i}");
        service.registry().create_sas_device(&id).await.expect("create");
        let tags = Twin::tags_patch(map(json!({"group": if i % 2 == 0 { "even" } else { "odd" }})));
        service.twins().update_twin(&id, &tags, Etag::Any).await.expect("tags");
    }
    let query = service.query();
    let mut pager = query.twins("SELECT * FROM devices").page_size(2);
    let mut pages = 0;
    let mut ids = Vec::new();
    while let Some(page) = pager.next_page().await.expect("page") {
        pages += 1;
        assert_eq!(page.item_type.as_deref(), Some("Twin"));
        ids.extend(page.items.into_iter().filter_map(|t| t.device_id));
    }
    assert_eq!((pages, ids), (3, vec!["q0".to_owned(), "q1".into(), "q2".into(), "q3".into(), "q4".into()]));
    let rows = query
        .raw("SELECT tags.[[group]] AS g, COUNT() AS n FROM devices GROUP BY tags.[[group]]")
        .collect_all()
        .await
        .expect("rows");
    assert_eq!(rows, vec![json!({"g": "even", "n": 3}), json!({"g": "odd", "n": 2})]);
    let err = query.raw("SELECT * FROM devices WHERE").collect_all().await.expect_err("syntax");
    assert!(matches!(&err, Error::Hub { status: 400, message, .. } if message.contains("Line 1:")), "{err}");
}

#[tokio::test]
async fn credentials_and_trust_failures_are_typed() {
    let (emulator, _service) = start().await;
    let wrong = emulator
        .service_connection_string()
        .rsplit_once("SharedAccessKey=")
        .map(|(head, _)| format!("{head}SharedAccessKey={}", iothub_emulator::domain::registry::generate_key()))
        .expect("connection string");
    let err = service_for(&emulator, &wrong).registry().get_device("x").await.expect_err("bad key");
    assert_eq!((err.status(), err.code()), (Some(401), Some("IotHubUnauthorizedAccess")));
    let read_only = emulator.policy_connection_string("registryRead").expect("policy");
    let err =
        service_for(&emulator, &read_only).registry().create_sas_device("x").await.expect_err("no write permission");
    assert_eq!(err.status(), Some(401));
    let other_ca = iothub_emulator::tls::LocalCa::generate().expect("ca").cert_pem().to_owned();
    let options = ServiceOptions::default().with_ca_pem(other_ca).with_port(emulator.https_addr().port());
    let untrusted =
        ServiceClient::from_connection_string(&emulator.service_connection_string(), options).expect("client");
    let err = untrusted.registry().get_device("x").await.expect_err("untrusted");
    assert!(matches!(&err, Error::Transport(text) if text.contains("certificate")), "{err}");
    assert!(matches!(
        ServiceClient::from_connection_string("HostName=h", ServiceOptions::default()),
        Err(Error::ConnectionString(_))
    ));
}

#[tokio::test]
async fn the_emulator_controls_inject_faults_record_history_and_reset() {
    let (emulator, service) = start().await;
    let controls = service.emulator();
    let health = controls.health().await.expect("health");
    assert_eq!((health.status.as_str(), health.active_faults), ("healthy", 0));
    let _device = device(&emulator, &service, "c1").await;
    service.methods().invoke("c1", &method("lockDoor", 5)).await.expect("answered");

    let held = controls.methods_undelivered("c1", Duration::from_secs(60)).await.expect("fault");
    assert_eq!((held.kind.as_str(), held.device_id.as_deref()), ("methodsUndelivered", Some("c1")));
    let err = service.methods().invoke("c1", &method("lockDoor", 5)).await.expect_err("held back");
    assert!(matches!(&err, Error::Hub { status: 504, number: Some(504101), .. }), "{err}");
    let twin_fault = controls.twin_errors("c1", 429, Duration::from_secs(60)).await.expect("fault");
    assert_eq!(twin_fault.status, Some(429));
    assert_eq!(controls.faults().await.expect("list").len(), 2);
    controls.remove_fault(&held.id).await.expect("removed");
    assert_eq!(controls.faults().await.expect("list"), vec![twin_fault]);
    controls.clear_faults().await.expect("cleared");
    assert!(controls.faults().await.expect("list").is_empty());

    let calls = controls.method_calls("c1", None).await.expect("calls");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].error_code.as_deref(), Some("GatewayTimeout"), "newest first");
    assert_eq!((calls[1].status, &calls[1].payload), (Some(200), &json!({"pin": 1})));
    let patch = Twin { tags: Some(map(json!({"site": "lab"}))), ..Default::default() };
    service.twins().update_twin("c1", &patch, Etag::Any).await.expect("patch");
    let changes = controls.twin_changes("c1", None).await.expect("changes");
    assert_eq!((changes[0].section.as_str(), &changes[0].patch), ("tags", &json!({"site": "lab"})));
    let missing = controls.method_calls("ghost", None).await.expect_err("unknown device");
    assert!(matches!(&missing, Error::Hub { status: 404, code, .. } if code == "DeviceNotFound"), "{missing}");

    let outage = controls.outage(Duration::from_secs(600)).await.expect("outage");
    assert_eq!(controls.health().await.expect("health").status, "outage");
    let refused = service.registry().get_device("c1").await.expect_err("503 during the outage");
    assert!(matches!(&refused, Error::Hub { status: 503, .. }), "{refused}");
    controls.remove_fault(&outage.id).await.expect("ended");

    let reset = controls.reset().await.expect("reset");
    assert_eq!((reset.devices_deleted, reset.jobs_deleted), (1, 0));
    assert!(service.registry().list_devices(10).await.expect("list").is_empty());

    let reader = emulator.policy_connection_string("registryRead").expect("policy");
    let refused = service_for(&emulator, &reader).emulator().faults().await.expect_err("not the owner");
    assert!(matches!(&refused, Error::Hub { status: 401, .. }), "{refused}");
}

/// Polls `device_id`'s desired `cfg` (every 100 ms, up to 10 s) until it is `expected`; the last value otherwise.
async fn wait_for_desired_cfg(service: &ServiceClient, device_id: &str, expected: &Value) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let twin = service.twins().get_twin(device_id).await.expect("twin");
        let cfg = twin.desired().and_then(|d| d.get("cfg")).cloned();
        if cfg.as_ref() == Some(expected) || tokio::time::Instant::now() >= deadline {
            return cfg;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn device_configuration(id: &str, priority: i32, content: Value) -> Configuration {
    Configuration {
        id: id.into(),
        target_condition: "tags.fleet='cfg'".into(),
        priority,
        content: ConfigurationContent { device_content: Some(map(content)), ..Default::default() },
        ..Default::default()
    }
}

#[tokio::test]
async fn configurations_apply_by_priority_and_report_metrics() {
    let (_emulator, service) = start().await;
    for id in ["cfg-d1", "cfg-d2", "cfg-other"] {
        service.registry().create_sas_device(id).await.expect("create");
    }
    for id in ["cfg-d1", "cfg-d2"] {
        service.twins().update_twin(id, &Twin::tags_patch(map(json!({"fleet": "cfg"}))), Etag::Any).await.expect("tag");
    }
    let configurations = service.configurations();
    let low = device_configuration("cfg-low", 1, json!({"properties.desired.cfg": {"a": 1, "b": 1}}));
    let created = configurations.create(&low).await.expect("create low");
    assert_eq!((created.id.as_str(), created.priority, created.etag.as_deref()), ("cfg-low", 1, Some("MQ==")));
    assert_eq!(created.content, low.content);
    assert!(created.created_time_utc.is_some());
    let err = configurations.create(&low).await.expect_err("duplicate");
    assert_eq!((err.status(), err.code()), (Some(409), Some("ConfigurationAlreadyExists")));
    let high = configurations
        .create(&device_configuration("cfg-high", 2, json!({"properties.desired.cfg.b": 2})))
        .await
        .expect("create high");

    for id in ["cfg-d1", "cfg-d2"] {
        let cfg = wait_for_desired_cfg(&service, id, &json!({"a": 1, "b": 2})).await;
        assert_eq!(cfg, Some(json!({"a": 1, "b": 2})), "{id}: the higher priority wins b");
    }
    let untargeted = service.twins().get_twin("cfg-other").await.expect("twin");
    assert_eq!(untargeted.desired().and_then(|d| d.get("cfg")), None, "not targeted");
    let got = configurations.get("cfg-low").await.expect("get");
    assert_eq!(
        (got.system_metrics.results.get("targetedCount"), got.system_metrics.results.get("appliedCount")),
        (Some(&json!(2)), Some(&json!(2))),
        "{:?}",
        got.system_metrics
    );
    assert_eq!(
        got.system_metrics.queries.get("appliedCount"),
        Some(&json!("select deviceId from devices where configurations.[[cfg-low]].status = 'Applied'"))
    );

    let mut relabelled = got.clone();
    relabelled.labels = Some(map(json!({"team": "ops"})));
    let updated =
        configurations.update(&relabelled, Etag::Value(got.etag.clone().expect("etag"))).await.expect("update");
    assert_eq!(updated.labels, relabelled.labels);
    assert_eq!(updated.created_time_utc, got.created_time_utc);
    assert_ne!(updated.etag, got.etag);
    let err =
        configurations.update(&relabelled, Etag::Value(got.etag.clone().expect("etag"))).await.expect_err("stale");
    assert!(matches!(&err, Error::Hub { status: 412, code, .. } if code == "PreconditionFailed"), "{err}");

    configurations.delete("cfg-high", Etag::Value(high.etag.clone().expect("etag"))).await.expect("delete");
    let err = configurations.get("cfg-high").await.expect_err("deleted");
    assert_eq!((err.status(), err.code()), (Some(404), Some("ConfigurationNotFound")));
    for id in ["cfg-d1", "cfg-d2"] {
        let cfg = wait_for_desired_cfg(&service, id, &json!({"a": 1, "b": 1})).await;
        assert_eq!(cfg, Some(json!({"a": 1, "b": 1})), "{id}: b falls back to the lower priority");
    }

    let checked = configurations
        .test_queries(&ConfigurationQueriesTestInput {
            target_condition: "tags.fleet='cfg'".into(),
            custom_metric_queries: map(json!({
                "good": "SELECT deviceId FROM devices WHERE properties.reported.cfg.a = 1",
                "bad": "SELECT deviceId FROM devices WHERE",
            })),
        })
        .await
        .expect("test queries");
    assert_eq!(checked.target_condition_error, "");
    assert_eq!(checked.custom_metric_query_errors.get("good"), Some(&json!("")), "{checked:?}");
    assert!(
        checked.custom_metric_query_errors.get("bad").and_then(Value::as_str).is_some_and(|e| !e.is_empty()),
        "{checked:?}"
    );

    let listed = configurations.list(None).await.expect("list");
    assert_eq!(listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["cfg-low"]);
    assert_eq!(listed[0].labels, relabelled.labels);
}

#[tokio::test]
async fn configurations_edge_content_reaches_module_twins() {
    use iothub_service::proto::registry::{Device, DeviceCapabilities};
    let (_emulator, service) = start().await;
    let edge = Device {
        device_id: Some("cfg-edge".into()),
        capabilities: Some(DeviceCapabilities { iot_edge: Some(true) }),
        ..Default::default()
    };
    service.registry().create_device(&edge).await.expect("create edge device");
    let content = ConfigurationContent {
        modules_content: Some(map(json!({
            "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {}}},
            "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}},
            "sensor": {"properties.desired": {"interval": 5}},
        }))),
        ..Default::default()
    };
    let configurations = service.configurations();
    configurations.apply_on_edge_device("cfg-edge", &content).await.expect("apply");
    let agent = service.modules().get_twin("cfg-edge", "$edgeAgent").await.expect("agent twin");
    assert_eq!(agent.desired().and_then(|d| d.get("schemaVersion")), Some(&json!("1.1")));
    let sensor = service.modules().get_twin("cfg-edge", "sensor").await.expect("created module's twin");
    assert_eq!(sensor.desired().and_then(|d| d.get("interval")), Some(&json!(5)));

    let device_only =
        ConfigurationContent { device_content: Some(map(json!({"properties.desired.x": 1}))), ..Default::default() };
    let err = configurations.apply_on_edge_device("cfg-edge", &device_only).await.expect_err("no modulesContent");
    assert_eq!((err.status(), err.code()), (Some(400), Some("InvalidConfigurationContent")));
    let err = configurations.apply_on_edge_device("ghost", &content).await.expect_err("unknown device");
    assert_eq!((err.status(), err.code()), (Some(404), Some("DeviceNotFound")));
}
