//! Query speed at registry scale, in-process (no network): 100k and 1M twins.
//!
//! Run: `cargo bench -p iothub-emulator --bench query_scale [-- SMALL LARGE]` (defaults 100000 1000000).
//! Prints timings (median of repeated runs) and the resident memory the twins take; asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iothub_emulator::auth::Policies;
use iothub_emulator::clock::SystemClock;
use iothub_emulator::domain::registry::{Device, DeviceSpec, create_device};
use iothub_emulator::domain::twin::json::object_from_json;
use iothub_emulator::domain::twin::{TwinWrite, WriteMode};
use iothub_emulator::hub::Hub;
use iothub_emulator::store::{Loaded, Store};
use serde_json::{Map, Value, json};

const LOCATIONS: [&str; 8] = ["x", "y", "z", "north", "south", "east", "west", "lab"];

fn rss_mib() -> f64 {
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
fn devices(count: usize) -> Vec<Device> {
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

fn hub_with(count: usize) -> (Hub, f64) {
    let before = rss_mib();
    let loaded = Loaded { devices: devices(count), ..Loaded::default() };
    let hub = Hub::new("localhost".into(), Policies::generate(), Arc::new(SystemClock), Store::memory(), loaded);
    (hub, rss_mib() - before)
}

/// Median and worst of `runs` timings of `query`.
fn time(hub: &Hub, query: &str, runs: usize) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut items = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let page = hub.query(query, 100, None).expect("query");
        times.push(started.elapsed());
        items = page.items.len();
    }
    times.sort();
    (times[times.len() / 2], times[times.len() - 1], items)
}

fn report(label: &str, (median, worst, items): (Duration, Duration, usize)) {
    println!(
        "{label}: median {:.3} ms, worst {:.3} ms ({items} items on the page)",
        median.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    );
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let small = sizes.first().copied().unwrap_or(100_000);
    let large = sizes.get(1).copied().unwrap_or(1_000_000);

    let (hub, mib) = hub_with(small);
    println!("{small} twins: {mib:.0} MiB resident");
    report(
        &format!("{small} twins, first page of `tags.location = 'x' AND properties.reported.temp >= 60`"),
        time(&hub, "SELECT * FROM devices WHERE tags.location = 'x' AND properties.reported.temp >= 60", 51),
    );
    drop(hub);

    let (hub, mib) = hub_with(large);
    println!("{large} twins: {mib:.0} MiB resident ({:.0} bytes per twin)", mib * 1024.0 * 1024.0 / large as f64);
    report(
        &format!("{large} twins, full scan matching nothing (`tags.location = 'nowhere'`)"),
        time(&hub, "SELECT * FROM devices WHERE tags.location = 'nowhere' AND properties.reported.temp >= 0", 11),
    );
    report(
        &format!("{large} twins, `SELECT COUNT() AS n FROM devices GROUP BY tags.location`"),
        time(&hub, "SELECT tags.location AS location, COUNT() AS n FROM devices GROUP BY tags.location", 11),
    );
    let ids: Vec<String> = (0..10).map(|i| format!("'device-{:07}'", i * (large / 10).max(1))).collect();
    report(
        &format!("{large} twins, `deviceId IN [10 ids]`"),
        time(&hub, &format!("SELECT * FROM devices WHERE deviceId IN [{}]", ids.join(", ")), 101),
    );
}
