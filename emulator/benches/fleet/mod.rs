//! A fleet of small twins for the in-process benches, and the process's resident memory.

#![allow(dead_code)]

use iothub_emulator::domain::registry::{Device, DeviceSpec, create_device};
use iothub_emulator::domain::twin::json::object_from_json;
use iothub_emulator::domain::twin::{TwinWrite, WriteMode};
use serde_json::{Map, Value, json};

/// The `tags.location` values, spread evenly.
pub const LOCATIONS: [&str; 8] = ["x", "y", "z", "north", "south", "east", "west", "lab"];

pub fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `count` small twins: a location tag, a floor tag, and reported `temp` in 0..100.
pub fn devices(count: usize) -> Vec<Device> {
    let now = jiff::Timestamp::now();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut device =
                create_device(&format!("device-{i:07}"), &DeviceSpec::default(), now, i as u64 + 1).expect("device");
            let tags = object(json!({"location": LOCATIONS[(seed % 8) as usize], "floor": (seed >> 8) % 20}));
            let write = TwinWrite { tags: Some(Some(object_from_json(&tags))), desired: None };
            device.twin = device.twin.apply_service_write(&write, WriteMode::Merge, now).expect("tags").twin;
            let reported = object(json!({"temp": (seed >> 16) % 100}));
            device.twin = device.twin.apply_reported_patch(&object_from_json(&reported), now).expect("reported");
            device
        })
        .collect()
}
