//! How fast configurations reach a fleet, in-process (no network, memory store): a configuration targeting an
//! eighth of the twins, a second over all of them with a higher priority, then both taken back. Each step is
//! timed from the `PUT`/`DELETE` until the hub has nothing left to apply, then checked with the metrics.
//!
//! Run: `cargo bench -p iothub-emulator --bench configuration_apply [-- TWINS]` (default 100000). Prints timings;
//! asserts nothing.

mod fleet;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet::{devices, rss_mib};
use iothub_emulator::auth::Policies;
use iothub_emulator::clock::SystemClock;
use iothub_emulator::domain::configurations::{ConfigurationSpec, Content};
use iothub_emulator::hub::{Hub, QueryItem};
use iothub_emulator::store::{Loaded, Store};
use serde_json::{Value, json};

fn spec(target: &str, priority: i32, content: Value) -> ConfigurationSpec {
    ConfigurationSpec {
        content: Content::new(content.as_object().cloned(), None, None),
        target_condition: target.into(),
        priority,
        ..ConfigurationSpec::default()
    }
}

/// Waits until the hub has applied every change (cheap to ask, so the wait does not slow the work down), then
/// reads the configuration's metrics once and checks them with `done` (targeted, applied).
async fn settled(hub: &Hub, id: Option<&str>, started: Instant, done: impl Fn(u64, u64) -> bool) -> Duration {
    tokio::time::sleep(Duration::from_millis(20)).await;
    while hub.configurations_pending() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let (targeted, applied) = match id {
        Some(id) => {
            let counts = hub.configuration(id).map(|c| hub.configuration_counts(&c)).ok();
            let count = |name: &str| {
                let found = counts.as_ref().and_then(|c| c.system.iter().find(|(n, ..)| n == name));
                found.and_then(|(.., n)| *n).unwrap_or(0)
            };
            (count("targetedCount"), count("appliedCount"))
        }
        None => (0, twins_with_configurations(hub)),
    };
    assert!(done(targeted, applied), "not applied: targeted {targeted}, applied {applied}");
    took
}

/// How many twins carry a configuration.
fn twins_with_configurations(hub: &Hub) -> u64 {
    let page = hub.query("SELECT COUNT() AS n FROM devices WHERE is_defined(configurations)", 1, None);
    let row = page.ok().and_then(|p| p.items.into_iter().next());
    row.and_then(|item| if let QueryItem::Row(row) = item { row["n"].as_u64() } else { None }).unwrap_or(u64::MAX)
}

#[tokio::main]
async fn main() {
    let twins: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let before = rss_mib();
    let loaded = Loaded { devices: devices(twins), ..Loaded::default() };
    let hub =
        Arc::new(Hub::new("localhost".into(), Policies::generate(), Arc::new(SystemClock), Store::memory(), loaded));
    hub.start();
    println!("{twins} twins: {:.0} MiB resident", rss_mib() - before);

    let started = Instant::now();
    let site = spec("tags.location = 'x'", 1, json!({"properties.desired.telemetry": {"interval": 30, "mode": "eco"}}));
    hub.put_configuration("site-x", site, None).await.expect("site-x");
    let took = settled(&hub, Some("site-x"), started, |targeted, applied| targeted > 0 && applied == targeted).await;
    println!("`tags.location = 'x'` (an eighth of the twins): applied everywhere in {:.2} s", took.as_secs_f64());

    let started = Instant::now();
    let fleet = spec("*", 2, json!({"properties.desired.telemetry.interval": 60}));
    hub.put_configuration("fleet", fleet, None).await.expect("fleet");
    let took = settled(&hub, Some("fleet"), started, |_, applied| applied == twins as u64).await;
    println!("`*` at a higher priority (every twin, merged per path): applied in {:.2} s", took.as_secs_f64());

    let started = Instant::now();
    hub.delete_configuration("fleet", None).await.expect("delete fleet");
    hub.delete_configuration("site-x", None).await.expect("delete site-x");
    let took = settled(&hub, None, started, |_, carrying| carrying == 0).await;
    println!("both deleted: content taken back from every twin in {:.2} s", took.as_secs_f64());
    println!("resident after: {:.0} MiB", rss_mib() - before);
    hub.close().await;
}
