//! Table-driven query tests: `fixtures/query/cases.json` (query text -> expected ids, rows or error) over the
//! twins and module twins of `fixtures/query/twins.json`, through the hub's query API.

use std::path::PathBuf;

use iothub_emulator::Emulator;
use iothub_emulator::domain::registry::{DeviceSpec, DeviceStatus};
use iothub_emulator::domain::twin::json::object_from_json;
use iothub_emulator::domain::twin::{TwinWrite, WriteMode};
use iothub_emulator::wire;
use serde_json::{Map, Value};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/query").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON")
}

fn object(value: &Value) -> Option<Map<String, Value>> {
    value.as_object().cloned()
}

#[tokio::test]
async fn every_fixture_case_gives_its_expected_result() {
    let emulator = Emulator::builder().start().await.expect("start");
    let hub = emulator.hub();
    for twin in fixture("twins.json")["twins"].as_array().expect("twins") {
        let id = twin["deviceId"].as_str().expect("deviceId");
        let status = (twin["status"] == "disabled").then_some(DeviceStatus::Disabled);
        hub.put_device(id, &DeviceSpec { status, ..Default::default() }, None).await.expect("device");
        let section = |name: &str| object(&twin[name]).map(|map| Some(object_from_json(&map)));
        let write = TwinWrite { tags: section("tags"), desired: section("desired") };
        hub.write_twin(id, &write, WriteMode::Merge, None).await.expect("tags and desired");
        if let Some(reported) = object(&twin["reported"]).filter(|r| !r.is_empty()) {
            hub.patch_reported(id, &object_from_json(&reported)).await.expect("reported");
        }
    }
    for module in fixture("twins.json")["modules"].as_array().expect("modules") {
        let (device_id, module_id) =
            (module["deviceId"].as_str().expect("id"), module["moduleId"].as_str().expect("id"));
        hub.put_module(device_id, module_id, &DeviceSpec::default(), None).await.expect("module");
        let key = format!("{device_id}/{module_id}");
        let section = |name: &str| object(&module[name]).map(|map| Some(object_from_json(&map)));
        let write = TwinWrite { tags: section("tags"), desired: section("desired") };
        hub.write_twin(&key, &write, WriteMode::Merge, None).await.expect("module tags and desired");
        if let Some(reported) = object(&module["reported"]).filter(|r| !r.is_empty()) {
            hub.patch_reported(&key, &object_from_json(&reported)).await.expect("module reported");
        }
    }
    let cases = fixture("cases.json");
    let mut failures = Vec::new();
    for case in cases["cases"].as_array().expect("cases") {
        let text = case["query"].as_str().expect("query");
        // Results rendered as the REST API renders them.
        let outcome = hub.query(text, 100, None).map(|page| {
            page.items
                .iter()
                .map(|item| serde_json::to_value(wire::query::Item(item)).expect("JSON"))
                .collect::<Vec<_>>()
        });
        let problem = match (outcome, case.get("ids"), case.get("rows"), case.get("error")) {
            (Ok(items), Some(ids), _, _) => {
                let got: Vec<Value> = items.iter().map(|i| i["deviceId"].clone()).collect();
                (&got != ids.as_array().expect("ids")).then(|| format!("ids {got:?}, expected {ids}"))
            }
            (Ok(items), None, Some(rows), _) => {
                (&items != rows.as_array().expect("rows")).then(|| format!("rows {items:?}, expected {rows}"))
            }
            (Err(error), _, _, Some(expected)) => {
                let text = error.to_string();
                (!text.contains(expected.as_str().expect("error text")))
                    .then(|| format!("error '{text}', expected '{expected}'"))
            }
            (Ok(items), _, _, Some(expected)) => Some(format!("succeeded with {items:?}, expected error '{expected}'")),
            (Err(error), _, _, None) => Some(format!("failed: {error}")),
            (Ok(_), None, None, None) => Some("the case expects nothing".into()),
        };
        if let Some(problem) = problem {
            failures.push(format!("{text}\n    {problem}"));
        }
    }
    assert!(failures.is_empty(), "{} fixture cases failed:\n{}", failures.len(), failures.join("\n"));
}
