//! The scenarios, each written once and run against any target. A scenario records what it observes with
//! `Run::observe`; the runner compares those observations with the committed snapshot (the emulator's).

mod device;
mod errors;
mod jobs;
mod messages;
mod methods;
mod modules;
mod queries;
mod registry;
mod registry_more;
mod tutorial;
mod twins;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use iothub_service::proto::methods::CloudToDeviceMethod;
use serde_json::{Value, json};

use crate::run::Run;
use crate::target::TargetKind;

/// What a scenario's body returns.
pub type Outcome<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// One scenario.
pub struct Scenario {
    /// Its name: the test name and the snapshot name.
    pub name: &'static str,
    /// What it checks, in a line.
    pub about: &'static str,
    /// Its body.
    pub body: for<'a> fn(&'a Run) -> Outcome<'a>,
}

macro_rules! scenario {
    ($name:literal, $about:literal, $body:path) => {
        Scenario { name: $name, about: $about, body: |run| Box::pin($body(run)) }
    };
}

/// Every scenario, in the order the table shows them.
pub const ALL: &[Scenario] = &[
    scenario!(
        "tutorial",
        "the seed tutorial: lockDoor job and desired building/floor job over deviceId IN, polled to completed, records in devices.jobs",
        tutorial::tutorial
    ),
    scenario!(
        "registry-crud",
        "devices created with generated keys, read, listed, updated with etags, deleted",
        registry::crud
    ),
    scenario!(
        "edge-hierarchy",
        "an IoT Edge device's generated scope, a leaf child by deviceScope (device and twin), a scope no Edge device owns refused, the child freed when its parent is deleted",
        registry_more::edge_hierarchy
    ),
    scenario!(
        "bulk-registry",
        "POST /devices: three creates with one already registered (409001), updates by etag (412001 when stale), deletes",
        registry_more::bulk
    ),
    scenario!(
        "configurations",
        "two configurations on tagged twins, the higher priority winning one path and giving it back when deleted; metrics, etags, 404 after delete",
        registry_more::configurations
    ),
    scenario!("method-round-trip", "a direct method with payloads both ways", methods::round_trip),
    scenario!("method-offline", "a method on a device that is not connected: 404103", methods::offline),
    scenario!("method-timeout", "a device too slow to answer: 504101", methods::timeout),
    scenario!(
        "telemetry",
        "device-to-cloud messages with properties, acknowledged at QoS 1 and read back from the Event Hubs-compatible endpoint",
        device::telemetry
    ),
    scenario!("websocket", "MQTT over WebSockets: a method and a reported patch", device::websocket),
    scenario!(
        "c2d-round-trip",
        "a cloud-to-device message over AMQP with properties reaches its MQTT device; full ack gives Success feedback",
        messages::round_trip
    ),
    scenario!(
        "c2d-refusals",
        "cloud-to-device sends the hub refuses (unknown device, 51st message, over 64 KiB) and a purge",
        messages::refusals
    ),
    scenario!(
        "twin-reported",
        "reported properties from the device, read by the service, with versions",
        twins::reported
    ),
    scenario!("twin-desired", "a desired patch reaches the connected device with its $version", twins::desired),
    scenario!("twin-etag", "twin writes with a stale etag fail 412, with * or the current etag succeed", twins::etag),
    scenario!(
        "twin-tags-and-nulls",
        "tags and desired properties set, merged and removed with null",
        twins::tags_and_nulls
    ),
    scenario!(
        "modules",
        "a module beside its device: its own methods, desired and reported properties, FROM devices.modules",
        modules::modules
    ),
    scenario!("query-filters", "queries on tags, reported properties and IN", queries::filters),
    scenario!("query-paging", "a query over several pages with continuations", queries::paging),
    scenario!("query-group-by", "SELECT COUNT() ... GROUP BY", queries::group_by),
    scenario!("query-syntax-error", "a query that does not parse: 400 with where", queries::syntax_error),
    scenario!("job-future-start", "a job with a future start: queued, scheduled, then it runs", jobs::future_start),
    scenario!("job-cancel", "a scheduled job cancelled never runs", jobs::cancel),
    scenario!("job-offline-devices", "a method job over an answering and an offline device", jobs::offline_devices),
    scenario!(
        "job-max-execution-time",
        "a job whose devices cannot finish in its maximum execution time",
        jobs::max_execution_time
    ),
    scenario!("job-query", "the job query filtered by type and status", jobs::query),
    scenario!(
        "bad-credentials",
        "a wrong key and an expired token, on the service API and on MQTT",
        errors::bad_credentials
    ),
    scenario!("unknown-device", "reads, writes and methods on a device that does not exist", errors::unknown_device),
    scenario!("invalid-job-bodies", "job requests the hub must refuse", errors::invalid_job_bodies),
];

/// The scenario named `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// The `lockDoor` call of the tutorial.
pub(crate) fn lock_door(payload: Value, response_timeout: u64) -> CloudToDeviceMethod {
    CloudToDeviceMethod {
        method_name: "lockDoor".into(),
        payload,
        response_timeout_in_seconds: Some(response_timeout),
        connect_timeout_in_seconds: None,
    }
}

/// Registers and connects a device that answers lockDoor with 200 and `answer`; returns its id, its client and
/// the count of its calls.
pub(crate) async fn lock_door_device(
    run: &Run,
    label: &str,
    answer: Value,
) -> anyhow::Result<(String, iothub_device::DeviceClient, Arc<AtomicUsize>)> {
    let (id, cs) = run.create_device(label).await?;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let device = run
        .device(&cs)?
        .on_method("lockDoor", move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            async move { iothub_device::MethodResponse::ok(answer) }
        })
        .connect()
        .await?;
    Ok((id, device, calls))
}

/// What a failed call shows: the status, the hub's code and its number when it gives one.
pub(crate) fn failure<T>(result: Result<T, iothub_service::Error>) -> Value {
    match result {
        Ok(_) => json!("succeeded"),
        Err(iothub_service::Error::Hub { status, code, number, .. }) => {
            json!({"status": status, "code": code, "number": number})
        }
        Err(other) => json!({"error": other.to_string()}),
    }
}

/// How long scenarios wait for something a real hub does eventually (queries lag twin writes there).
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);

/// How long scenarios wait for what the hub does on its own schedule: applying configurations to twins and
/// counting their metrics. The emulator does it within moments; a real hub runs configurations shortly after a
/// change and then every five minutes, so allow ten there.
pub(crate) fn background_patience(run: &Run) -> Duration {
    match run.target.kind {
        TargetKind::Emulator => Duration::from_secs(60),
        TargetKind::Azure => Duration::from_secs(600),
    }
}
