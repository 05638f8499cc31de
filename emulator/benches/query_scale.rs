//! Query speed at registry scale, in-process (no network): 100k and 1M twins.
//!
//! Run: `cargo bench -p iothub-emulator --bench query_scale [-- SMALL LARGE]` (defaults 100000 1000000).
//! Prints timings (median of repeated runs) and the resident memory the twins take; asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod fleet;

use fleet::{devices, rss_mib};
use iothub_emulator::auth::Policies;
use iothub_emulator::clock::SystemClock;
use iothub_emulator::hub::Hub;
use iothub_emulator::store::{Loaded, Store};

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
