//! Micro-benchmarks of the query language (divan): parsing, and evaluating a condition against one twin.
//!
//! Run: `cargo bench -p iothub-emulator --bench query_eval`.

use std::hint::black_box;

use iothub_emulator::domain::query::eval::matches;
use iothub_emulator::domain::query::parse_query;
use iothub_emulator::domain::query::twin_doc::{LivenessSource, TwinView};
use iothub_emulator::domain::registry::{DeviceSpec, Liveness, create_device};
use iothub_emulator::domain::twin::json::object_from_json;
use iothub_emulator::domain::twin::{TwinWrite, WriteMode};
use serde_json::json;

const TYPICAL: &str = "SELECT * FROM devices WHERE tags.location = 'x' AND properties.reported.temp >= 60";

fn main() {
    divan::main();
}

#[divan::bench]
fn parse_typical_query() -> usize {
    parse_query(black_box(TYPICAL)).map(|q| q.group_by.len()).unwrap_or(0)
}

#[divan::bench]
fn parse_in_list_of_100_ids() -> usize {
    let ids: Vec<String> = (0..100).map(|i| format!("'device-{i}'")).collect();
    let text = format!("SELECT * FROM devices WHERE deviceId IN [{}]", ids.join(","));
    parse_query(black_box(&text)).map(|q| q.group_by.len()).unwrap_or(0)
}

#[divan::bench]
fn evaluate_typical_condition_on_one_twin(bencher: divan::Bencher) {
    let now = jiff::Timestamp::now();
    let mut device = create_device("d1", &DeviceSpec::default(), now, 1).expect("device");
    let tags = json!({"location": "x", "floor": 3}).as_object().cloned().expect("object");
    let write = TwinWrite { tags: Some(Some(object_from_json(&tags))), desired: None };
    device.twin = device.twin.apply_service_write(&write, WriteMode::Merge, now).expect("tags").twin;
    let reported = json!({"temp": 72}).as_object().cloned().expect("object");
    device.twin = device.twin.apply_reported_patch(&object_from_json(&reported), now).expect("reported");
    let condition = parse_query(TYPICAL).expect("parse").condition.expect("where");
    bencher.bench_local(|| {
        matches(
            black_box(&condition),
            &TwinView { device: &device, liveness: LivenessSource::Known(Liveness::default()) },
        )
    });
}
