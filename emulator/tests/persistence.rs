//! Registry state, the CA and the policy keys survive restarts on the same data dir; `in_memory` keeps only
//! the CA and keys; seeds create missing devices.

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
    hub.emulator.shutdown().await;

    // Applying the same seed again changes nothing.
    let hub = start_with(Emulator::builder().data_dir(&data).seed_file(&seed)).await;
    let again = hub.emulator.hub().get_device("generated").expect("generated");
    assert_eq!(again.authentication.primary_key, generated_key);
}

#[tokio::test]
async fn a_bad_seed_file_stops_the_start_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed.json");
    for (content, expected) in [
        ("{\"devices\": [{\"status\": \"enabled\"}]}", "has no deviceId"),
        ("{\"devices\": [{\"deviceId\": \"bad id\"}]}", "bad id"),
        ("{\"gadgets\": []}", "not a valid seed file"),
    ] {
        std::fs::write(&seed, content).expect("write");
        let error = Emulator::builder().seed_file(&seed).start().await.err().expect("must fail");
        let text = error.to_string();
        assert!(text.contains(expected), "{text}");
    }
}
