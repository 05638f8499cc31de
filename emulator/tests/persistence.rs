//! Registry state, the CA and the policy keys survive restarts on the same data dir; `in_memory` keeps only
//! the CA and keys; seeds create missing devices and modules.

mod common;

use common::start_with;
use iothub_emulator::Emulator;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn devices_ca_and_keys_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
    assert!(hub.emulator.is_durable());
    let created = hub.create_device("keeper").await;
    let connection_string = hub.emulator.service_connection_string();
    let ca = hub.emulator.ca_pem().to_owned();
    assert_eq!(hub.emulator.ca_path(), Some(dir.path().join("ca.pem").as_path()));
    hub.emulator.shutdown().await;

    let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
    assert_eq!(hub.emulator.ca_pem(), ca, "the CA is made once per data dir");
    assert_eq!(hub.emulator.service_connection_string(), connection_string, "policy keys are stable");
    let fetched: Value = hub.get_json("/devices/keeper").await;
    assert_eq!(fetched, created, "the device reads back exactly as it was acknowledged");
    let second = hub.create_device("newcomer").await;
    assert_ne!(second["etag"], created["etag"], "etags keep moving forward after a restart");
    let stats: Value = hub.get_json("/statistics/devices").await;
    assert_eq!(stats["totalDeviceCount"], 2);
}

#[tokio::test]
async fn deletions_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
    hub.create_device("brief").await;
    let deleted = hub.request(Method::DELETE, "/devices/brief").header("If-Match", "\"*\"").send().await.expect("send");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    hub.emulator.shutdown().await;
    let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
    assert!(hub.emulator.hub().get_device("brief").is_err());
}

#[tokio::test]
async fn in_memory_keeps_the_ca_and_keys_but_no_devices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = start_with(Emulator::builder().data_dir(dir.path()).in_memory(true)).await;
    assert!(!hub.emulator.is_durable());
    hub.create_device("fleeting").await;
    let ca = hub.emulator.ca_pem().to_owned();
    let connection_string = hub.emulator.service_connection_string();
    hub.emulator.shutdown().await;
    assert!(!dir.path().join("hub.redb").exists(), "in-memory mode writes no registry file");

    let hub = start_with(Emulator::builder().data_dir(dir.path()).in_memory(true)).await;
    assert_eq!(hub.emulator.ca_pem(), ca);
    assert_eq!(hub.emulator.service_connection_string(), connection_string);
    let response = hub.request(Method::GET, "/devices/fleeting").send().await.expect("send");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn seed_devices_are_created_once_with_their_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        json!({"devices": [
            {"deviceId": "seeded", "authentication": {"symmetricKey": {"primaryKey": key, "secondaryKey": key}}},
            {"deviceId": "generated", "status": "disabled"}
        ], "modules": [
            {"deviceId": "seeded", "moduleId": "filter", "authentication": {"symmetricKey": {"primaryKey": key, "secondaryKey": key}}},
            {"deviceId": "seeded", "moduleId": "generated"}
        ]})
        .to_string(),
    )
    .expect("write seed");
    let data = dir.path().join("data");
    let hub = start_with(Emulator::builder().data_dir(&data).seed_file(&seed)).await;
    let device = hub.emulator.hub().get_device("seeded").expect("seeded");
    assert_eq!(device.authentication.primary_key.as_deref(), Some(key));
    let generated_key =
        hub.emulator.hub().get_device("generated").expect("generated").authentication.primary_key.clone();
    assert!(hub.emulator.device_connection_string("seeded").expect("cs").ends_with(&format!("SharedAccessKey={key}")));
    let module = hub.emulator.module_connection_string("seeded", "filter").expect("seeded module");
    assert!(module.ends_with(&format!("DeviceId=seeded;ModuleId=filter;SharedAccessKey={key}")), "{module}");
    let generated_module_key =
        hub.emulator.hub().get_device("seeded/generated").expect("module").authentication.primary_key.clone();
    hub.emulator.shutdown().await;

    // Applying the same seed again changes nothing.
    let hub = start_with(Emulator::builder().data_dir(&data).seed_file(&seed)).await;
    let again = hub.emulator.hub().get_device("generated").expect("generated");
    assert_eq!(again.authentication.primary_key, generated_key);
    let module_again = hub.emulator.hub().get_device("seeded/generated").expect("module");
    assert_eq!(module_again.authentication.primary_key, generated_module_key);
}

#[tokio::test]
async fn a_bad_seed_file_stops_the_start_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed.json");
    for (content, expected) in [
        ("{\"devices\": [{\"status\": \"enabled\"}]}", "has no deviceId"),
        ("{\"devices\": [{\"deviceId\": \"bad id\"}]}", "bad id"),
        ("{\"gadgets\": []}", "not a valid seed file"),
        ("{\"modules\": [{\"moduleId\": \"m\"}]}", "needs its deviceId and moduleId"),
        ("{\"modules\": [{\"deviceId\": \"nobody\", \"moduleId\": \"m\"}]}", "nobody"),
    ] {
        std::fs::write(&seed, content).expect("write");
        let error = Emulator::builder().seed_file(&seed).start().await.err().expect("must fail");
        let text = error.to_string();
        assert!(text.contains(expected), "{text}");
    }
}

/// Makes `dir` read-only for this process until dropped: a read-only bind mount when running as root (where
/// file modes do not stop writes), file modes otherwise. `None` when neither works here.
struct ReadOnly {
    dir: std::path::PathBuf,
    mounted: bool,
}

impl ReadOnly {
    fn make(dir: &std::path::Path) -> Option<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let set_mode = |mode| {
            for entry in std::fs::read_dir(dir).expect("dir").flatten() {
                let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode));
            }
        };
        set_mode(0o444);
        let probe = std::fs::OpenOptions::new().write(true).open(dir.join("hub.redb"));
        if probe.is_err() {
            return Some(Self { dir: dir.to_owned(), mounted: false });
        }
        set_mode(0o600);
        let run = |args: &[&str]| {
            std::process::Command::new("mount").args(args).status().map(|s| s.success()).unwrap_or(false)
        };
        let path = dir.to_str()?;
        if run(&["--bind", path, path]) {
            if run(&["-o", "remount,ro,bind", path]) {
                return Some(Self { dir: dir.to_owned(), mounted: true });
            }
            let _ = std::process::Command::new("umount").arg(path).status();
        }
        None
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount").arg(&self.dir).status();
        } else {
            use std::os::unix::fs::PermissionsExt as _;
            for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600));
            }
        }
    }
}

#[tokio::test]
async fn a_read_only_data_dir_serves_its_devices_and_refuses_changes() {
    use common::mqtt::{connect_device, next_publish, publish, subscribe};
    use rumqttc::mqttbytes::QoS;

    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("data");
    let hub = start_with(Emulator::builder().data_dir(&dir)).await;
    let created = hub.create_device("kept").await;
    let patch = json!({"properties": {"desired": {"mode": "eco"}}});
    let answer = hub.request(Method::PATCH, "/twins/kept").json(&patch).send().await.expect("send");
    assert_eq!(answer.status(), StatusCode::OK);
    hub.emulator.shutdown().await;

    let Some(_read_only) = ReadOnly::make(&dir) else {
        eprintln!("skipped: this machine can make the data dir read-only neither by file modes nor by a mount");
        return;
    };
    let hub = start_with(Emulator::builder().data_dir(&dir)).await;
    assert!(hub.emulator.is_read_only(), "opened read-only rather than refusing to start");
    let fetched: Value = hub.get_json("/devices/kept").await;
    assert_eq!(fetched, created, "what the file holds is served");
    let twin: Value = hub.get_json("/twins/kept").await;
    assert_eq!(twin["properties"]["desired"]["mode"], "eco");

    let refused = hub.request(Method::PATCH, "/twins/kept").json(&patch).send().await.expect("send");
    let message = common::expect_error(refused, StatusCode::INTERNAL_SERVER_ERROR, "ServerError").await;
    assert!(message.contains("read-only"), "the error says why: {message}");
    let refused = hub.request(Method::PUT, "/devices/new").json(&json!({"deviceId": "new"})).send().await;
    assert_eq!(refused.expect("send").status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(hub.emulator.hub().get_device("new").is_err(), "a refused create leaves nothing behind");

    let mut device = connect_device(&hub, "kept").await;
    subscribe(&mut device, &["$iothub/twin/res/#"], QoS::AtMostOnce).await;
    publish(&mut device, "$iothub/twin/PATCH/properties/reported/?$rid=1", QoS::AtMostOnce, b"{\"r\":1}").await;
    let answer = next_publish(&mut device).await;
    assert!(answer.topic.starts_with("$iothub/twin/res/500/"), "a device's reported patch too: {}", answer.topic);
    let twin: Value = hub.get_json("/twins/kept").await;
    assert_eq!(twin["properties"]["reported"]["$version"], 1, "and nothing of it was kept");
    hub.emulator.shutdown().await;
}

/// The SDKs connect with clean session 0 and never subscribe again after a reconnect: the hub keeps their
/// subscriptions, across its own restarts too. A clean-session connect ends the stored session.
#[tokio::test]
async fn a_devices_session_survives_a_restart_until_it_connects_clean() {
    use common::mqtt::{connect_with, device_token, next_publish, subscribe, user_name};
    use common::unix_now;
    use rumqttc::mqttbytes::QoS;

    let dir = tempfile::tempdir().expect("tempdir");
    let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
    hub.create_device("lasting").await;
    let token = device_token(&hub, "lasting", "lasting", unix_now() + 600);
    let (mut device, ack) = connect_with(&hub, "lasting", &user_name("lasting"), &token, false).await;
    assert!(!ack.session_present, "a first connection has no session");
    subscribe(&mut device, &["$iothub/methods/POST/#"], QoS::AtMostOnce).await;
    hub.emulator.shutdown().await;

    let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
    let (mut device, ack) = connect_with(&hub, "lasting", &user_name("lasting"), &token, false).await;
    assert!(ack.session_present, "the stored session is resumed after the restart");
    let call = json!({"methodName": "ping", "payload": {}, "responseTimeoutInSeconds": 5});
    let invoke = tokio::spawn(hub.request(Method::POST, "/twins/lasting/methods").json(&call).send());
    let request = next_publish(&mut device).await;
    assert!(request.topic.starts_with("$iothub/methods/POST/ping/"), "reached without subscribing: {}", request.topic);
    invoke.abort();
    drop(device);

    let (_device, ack) = connect_with(&hub, "lasting", &user_name("lasting"), &token, true).await;
    assert!(!ack.session_present, "a clean session starts empty");
    hub.emulator.shutdown().await;
    let hub = start_with(Emulator::builder().data_dir(dir.path())).await;
    let (_device, ack) = connect_with(&hub, "lasting", &user_name("lasting"), &token, false).await;
    assert!(!ack.session_present, "and the stored one is gone, after a restart too");
}
