//! A data file written by the release before typed twins (schema 3, `fixtures/schema3`) is upgraded in place:
//! every twin, `$metadata` stamp, job, device record and session answers as that release answered it.

use std::path::PathBuf;
use std::sync::Arc;

use iothub_emulator::auth::Policies;
use iothub_emulator::clock::SystemClock;
use iothub_emulator::hub::{Hub, QueryItem};
use iothub_emulator::store::Store;
use iothub_emulator::wire;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/schema3").join(name)
}

fn hub(path: &std::path::Path) -> Hub {
    let (store, loaded) = Store::open(path).expect("the schema 3 file opens");
    Hub::new("localhost".into(), Policies::generate(), Arc::new(SystemClock), store, loaded)
}

fn json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("JSON")
}

/// The answers of `hub` in the shape of `expected.json`.
fn answers(hub: &Hub) -> Value {
    let twin = |id: &str| json(wire::twin::TwinDocument::of(&hub.twin(id).expect("twin")));
    let job = |id: &str| json(wire::jobs::document(&hub.get_job(id).expect("job")));
    let records: Vec<Value> = hub
        .query("SELECT * FROM devices.jobs", 100, None)
        .expect("query")
        .items
        .iter()
        .map(|item| json(wire::query::Item(item)))
        .collect();
    serde_json::json!({
        "twins": {"dev-a": twin("dev-a"), "dev-b": twin("dev-b")},
        "jobs": {"job-method": job("job-method"), "job-twin": job("job-twin")},
        "deviceJobs": records,
    })
}

#[tokio::test]
async fn a_schema_3_file_is_upgraded_in_place_and_answers_as_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hub.redb");
    std::fs::copy(fixture("hub.redb"), &path).expect("copy");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).expect("read")).expect("JSON");

    let upgraded = hub(&path);
    let upgraded_answers = answers(&upgraded);
    // serde_json's maps compare without regard to order: the values, versions and every `$metadata` stamp match.
    assert_eq!(upgraded_answers, expected);
    let desired = &upgraded_answers["twins"]["dev-a"]["properties"]["desired"];
    assert_eq!(desired["$metadata"]["cfg"]["fan"]["$lastUpdatedVersion"], 3);
    assert_eq!(desired["$metadata"]["building"]["$lastUpdated"], "2027-01-15T08:00:10.0000000Z");
    let sections: Vec<&String> = desired.as_object().expect("object").keys().collect();
    assert_eq!(sections.last().map(|k| k.as_str()), Some("$version"), "$metadata and $version come last");
    let twin = upgraded.twin("dev-a").expect("twin");
    assert!(twin.device.twin.reported.properties.get("battery").is_some());
    upgraded.close().await;
    drop(upgraded);

    // Opened again: the file now is schema 4 and reads the same, sessions included.
    let reopened = hub(&path);
    assert_eq!(answers(&reopened), expected);
    let connected = reopened.device_connected("dev-a", false);
    assert!(connected.session_present, "the stored MQTT session survived the upgrade");
    assert!(connected.subscriptions.methods && connected.subscriptions.desired);
    let page = reopened.query("SELECT deviceId FROM devices WHERE tags.bravo.y = 1", 10, None).expect("query");
    assert!(matches!(page.items.as_slice(), [QueryItem::Row(row)] if row["deviceId"] == "dev-a"));
    reopened.close().await;
}
