//! `GET /dashboard/events`: the page's live feed, as server-sent events.
//!
//! - `stats` every second: counts, messages per second, connection attempts, the faults in force.
//! - `presence` as identities connect and disconnect (`resync` when the page fell behind).
//! - `jobs` when any job's status or statistics changed (the first page of jobs, as the REST API shows them).
//! - with `?device=<id>` (and `&module=<id>`): `telemetry` as the identity's messages arrive, and `device`
//!   when its twin, connection or recorded history changed (the page then reads what it shows through REST).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::clock::format_time;
use crate::domain::registry::{identity_key, split_key};
use crate::http::AppState;
use crate::hub::Hub;
use crate::wire;

/// Telemetry events sent per second at most for the watched identity; the rest are counted as skipped.
const MAX_TELEMETRY_PER_SECOND: usize = 50;

/// Jobs the feed shows (the REST API's page size).
const JOBS_SHOWN: usize = 100;

#[derive(Deserialize)]
pub(super) struct Watch {
    device: Option<String>,
    module: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    time: String,
    devices: usize,
    connected_devices: usize,
    jobs_active: usize,
    messages_total: u64,
    messages_per_second: u64,
    connect_attempts: u64,
    faults: Vec<iothub_proto::emulator::FaultDocument>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Presence<'a> {
    device_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    module_id: Option<&'a str>,
    connection_state: &'static str,
    time: String,
}

fn event(name: &str, data: &impl Serialize) -> Option<Event> {
    Event::default().event(name).json_data(data).ok()
}

pub(super) async fn events(State(state): State<AppState>, Query(watch): Query<Watch>, headers: HeaderMap) -> Response {
    if state.dashboard.session_policy(&headers).is_none() {
        return super::unauthorized();
    }
    let watched = watch.device.map(|device| identity_key(&device, watch.module.as_deref()));
    let (sender, receiver) = mpsc::channel::<Event>(256);
    let hub = state.hub.clone();
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = feed(&hub, watched, &sender) => {}
            () = shutdown.cancelled() => {}
            () = sender.closed() => {}
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

/// What a watched identity looks like now, compactly: when it differs from the last, the page reloads it.
fn fingerprint(hub: &Hub, key: &str) -> String {
    let twin = hub.twin(key).map(|s| {
        let twin = &s.device.twin;
        format!("{}/{}/{}/{:?}", twin.version, twin.desired.version, twin.reported.version, s.liveness)
    });
    let methods = hub.method_history(key).map(|m| m.first().map(|r| (m.len(), r.time)));
    let changes = hub.twin_history(key).map(|c| c.first().map(|r| (c.len(), r.time)));
    format!("{twin:?}|{methods:?}|{changes:?}")
}

async fn feed(hub: &Hub, watched: Option<String>, sender: &mpsc::Sender<Event>) {
    let mut presence = hub.presence_stream();
    let mut telemetry = watched.as_ref().map(|_| hub.telemetry_stream());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_total = hub.telemetry_count();
    let (mut last_jobs, mut last_device) = (String::new(), String::new());
    let mut sent_this_second = 0usize;
    let mut skipped = 0u64;
    loop {
        let next = tokio::select! {
            _ = tick.tick() => {
                sent_this_second = 0;
                let total = hub.telemetry_count();
                let (jobs, jobs_event) = jobs(hub, &mut last_jobs);
                let stats = Stats {
                    time: format_time(hub.clock().now()),
                    devices: hub.registry_statistics().total,
                    connected_devices: hub.connected_device_count(),
                    jobs_active: jobs,
                    messages_total: total,
                    messages_per_second: total.saturating_sub(last_total),
                    connect_attempts: hub.connect_attempts(),
                    faults: hub.faults().iter().map(wire::controls::fault).collect(),
                };
                last_total = total;
                let mut events: Vec<Event> = event("stats", &stats).into_iter().chain(jobs_event).collect();
                if skipped > 0 {
                    events.extend(event("skipped", &serde_json::json!({"telemetry": skipped})));
                    skipped = 0;
                }
                if let Some(key) = &watched {
                    let now = fingerprint(hub, key);
                    if now != last_device {
                        events.extend(event("device", &serde_json::json!({"changed": true})));
                        last_device = now;
                    }
                }
                events
            }
            change = presence.recv() => match change {
                Ok(change) => {
                    let (device_id, module_id) = split_key(&change.key);
                    let state = if change.connected { "Connected" } else { "Disconnected" };
                    let body = Presence { device_id, module_id, connection_state: state, time: format_time(change.time) };
                    event("presence", &body).into_iter().collect()
                }
                Err(broadcast::error::RecvError::Lagged(_)) => event("resync", &serde_json::json!({})).into_iter().collect(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            message = async { match telemetry.as_mut() { Some(stream) => stream.recv().await, None => std::future::pending().await } } => {
                match message {
                    Ok(message) if watched.as_deref().is_some_and(|key| {
                        let (device_id, module_id) = split_key(key);
                        message.message.device_id == device_id && message.message.module_id.as_deref() == module_id
                    }) => {
                        if sent_this_second < MAX_TELEMETRY_PER_SECOND {
                            sent_this_second += 1;
                            event("telemetry", &wire::telemetry::message(&message)).into_iter().collect()
                        } else {
                            skipped += 1;
                            Vec::new()
                        }
                    }
                    Ok(_) => Vec::new(),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        skipped += missed;
                        Vec::new()
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        };
        for item in next {
            if sender.send(item).await.is_err() {
                return;
            }
        }
    }
}

/// How many jobs are not finished, and a `jobs` event when the first page of jobs changed since `last`.
fn jobs(hub: &Hub, last: &mut String) -> (usize, Option<Event>) {
    let Ok((page, _)) = hub.query_jobs(None, None, JOBS_SHOWN, None) else { return (0, None) };
    let active = page.iter().filter(|job| !job.job.status.is_finished()).count();
    let documents: Vec<_> = page.iter().map(wire::jobs::document).collect();
    let text = serde_json::to_string(&documents).unwrap_or_default();
    if text == *last {
        return (active, None);
    }
    *last = text;
    (active, Event::default().event("jobs").data(last.clone()).into())
}
