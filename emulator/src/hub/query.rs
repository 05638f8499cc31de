//! `POST /devices/query`: runs a query over the registry, one page at a time.
//!
//! Results come in device-id order, so a continuation is a cursor (the last id returned, plus how many items
//! went out for `TOP`), never a rescan of earlier pages, and it stays valid while devices come and go.
//! `deviceId = '..'` and `deviceId IN [..]` conditions are served from the registry index instead of a scan.

use std::collections::BTreeSet;
use std::hash::{Hash as _, Hasher as _};
use std::ops::Bound;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

use super::{DeviceSnapshot, Hub};
use crate::domain::jobs::DeviceJob;
use crate::domain::jobs::view::DeviceJobView;
use crate::domain::query::ast::{CmpOp, Collection, Expr, Literal, Select};
use crate::domain::query::eval::matches;
use crate::domain::query::run::{self, Groups, ItemType};
use crate::domain::query::twin_doc::{LivenessSource, TwinView};
use crate::domain::query::{Query, parse_query};
use crate::domain::registry::{self, Device, Liveness};
use crate::error::HubError;

/// Items per page: the default and the most the hub returns (wire-spec F.6, H.27).
pub const MAX_PAGE_SIZE: usize = 100;

/// One result: a twin (`SELECT *`), a device's record of a job (`FROM devices.jobs`), or a row of selected values.
#[derive(Debug, Clone)]
pub enum QueryItem {
    Twin(DeviceSnapshot),
    DeviceJob(DeviceJob),
    Row(Value),
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct QueryPage {
    pub items: Vec<QueryItem>,
    pub item_type: ItemType,
    /// Present only when more results exist.
    pub continuation: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    /// Hash of the query text: a token only continues the query it came from.
    q: u64,
    /// Last device id returned (document queries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
    /// Job of the last device record returned (`devices.jobs` queries, ordered by job id, then device id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job: Option<String>,
    /// Items returned so far (for TOP, and the row offset of aggregate results).
    n: u64,
}

fn query_hash(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

fn encode(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

fn decode(token: &str, text: &str) -> Result<Cursor, HubError> {
    let invalid = || HubError::ArgumentInvalid("The continuation token is not valid for this query".into());
    let bytes = URL_SAFE_NO_PAD.decode(token.trim().as_bytes()).map_err(|_| invalid())?;
    let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if cursor.q != query_hash(text) {
        return Err(invalid());
    }
    Ok(cursor)
}

/// The device ids a condition can only match, when it says so with `deviceId = 'x'` or `deviceId IN [..]`
/// (possibly inside `AND`s and `OR`s); `None` when any device may match.
fn id_candidates(expr: &Expr) -> Option<BTreeSet<String>> {
    let is_device_id = |e: &Expr| matches!(e, Expr::Path(p) if p.segments().len() == 1 && p.segments()[0].eq_ignore_ascii_case("deviceId"));
    let strings = |list: &[Literal]| {
        list.iter()
            .filter_map(|l| if let Literal::String(s) = l { Some(s.clone()) } else { None })
            .collect::<BTreeSet<_>>()
    };
    match expr {
        Expr::Compare(CmpOp::Eq, a, b) => match (a.as_ref(), b.as_ref()) {
            (path, Expr::Literal(literal)) | (Expr::Literal(literal), path) if is_device_id(path) => {
                Some(strings(std::slice::from_ref(literal)))
            }
            _ => None,
        },
        Expr::In { value, list, negated: false } if is_device_id(value) => Some(strings(list)),
        Expr::And(a, b) => match (id_candidates(a), id_candidates(b)) {
            (Some(x), Some(y)) => Some(x.intersection(&y).cloned().collect()),
            (Some(x), None) | (None, Some(x)) => Some(x),
            (None, None) => None,
        },
        Expr::Or(a, b) => match (id_candidates(a), id_candidates(b)) {
            (Some(x), Some(y)) => Some(x.union(&y).cloned().collect()),
            _ => None,
        },
        _ => None,
    }
}

impl Hub {
    /// Runs `text`, returning up to `page_size` (at most 100) items after `continuation`.
    pub fn query(&self, text: &str, page_size: usize, continuation: Option<&str>) -> Result<QueryPage, HubError> {
        let query = parse_query(text).map_err(|e| HubError::ArgumentInvalid(e.to_string()))?;
        run::validate(&query).map_err(HubError::ArgumentInvalid)?;
        let cursor = match continuation.filter(|c| !c.trim().is_empty()) {
            Some(token) => decode(token, text)?,
            None => Cursor { q: query_hash(text), after: None, job: None, n: 0 },
        };
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let item_type = run::item_type(&query);
        match query.from {
            Collection::Devices => Ok(self.query_twins(&query, cursor, page_size, item_type, false)),
            Collection::DevicesModules => Ok(self.query_twins(&query, cursor, page_size, item_type, true)),
            Collection::DevicesJobs => Ok(self.query_device_jobs(&query, cursor, page_size, item_type)),
        }
    }

    /// `FROM devices` (`modules` false) or `FROM devices.modules`: twins in identity-key order (a module's key
    /// is `<deviceId>/<moduleId>`, so modules come by device, then module id).
    fn query_twins(
        &self,
        query: &Query,
        cursor: Cursor,
        page_size: usize,
        item_type: ItemType,
        modules: bool,
    ) -> QueryPage {
        let state = self.read();
        let state = &*state;
        let liveness = |id: &str| Self::liveness_in(state, id);
        let condition = query.condition.as_ref();
        let selected = |device: &Device| -> bool { condition.is_none_or(|c| matches(c, &view(device, &liveness))) };
        let kind = |device: &&Arc<Device>| device.module.is_some() == modules;

        if run::is_aggregate(query) {
            let devices: Vec<&Arc<Device>> = state.devices.values().filter(kind).collect();
            let rows = aggregate(query, &devices, &selected, &liveness);
            let total = query.top.map_or(rows.len(), |top| rows.len().min(top as usize));
            let start = (cursor.n as usize).min(total);
            let end = (start + page_size).min(total);
            let continuation =
                (end < total).then(|| encode(&Cursor { q: cursor.q, after: None, job: None, n: end as u64 }));
            let items = rows[start..end].iter().cloned().map(QueryItem::Row).collect();
            return QueryPage { items, item_type, continuation };
        }

        let remaining = query.top.map_or(usize::MAX, |top| (top.saturating_sub(cursor.n)) as usize);
        let limit = page_size.min(remaining);
        let lower = cursor.after.clone().map_or(Bound::Unbounded, Bound::Excluded);
        let candidates = condition.and_then(id_candidates);
        let devices: Box<dyn Iterator<Item = &Arc<Device>>> = match &candidates {
            // `deviceId IN [..]` over modules: each listed device's modules, a key range each.
            Some(ids) if modules => Box::new(
                ids.iter()
                    .flat_map(|id| state.devices.range(registry::keys_under(id)))
                    .filter(move |(key, _)| match &lower {
                        Bound::Excluded(after) => key.as_str() > after.as_str(),
                        _ => true,
                    })
                    .map(|(_, d)| d),
            ),
            Some(ids) => Box::new(
                ids.range::<String, _>((lower.clone(), Bound::Unbounded)).filter_map(|id| state.devices.get(id)),
            ),
            None => Box::new(state.devices.range::<String, _>((lower.clone(), Bound::Unbounded)).map(|(_, d)| d)),
        };
        let mut devices = devices.filter(kind);
        // Batches grow so a first page found early costs little, and large scans run on every core.
        let mut matched = Vec::with_capacity(limit + 1);
        let mut batch_size = FIRST_BATCH;
        'scan: loop {
            let batch: Vec<&Arc<Device>> = devices.by_ref().take(batch_size).collect();
            if batch.is_empty() {
                break;
            }
            for (device, hit) in batch.iter().zip(select_batch(&batch, &selected)) {
                if hit {
                    matched.push(Arc::clone(device));
                    if matched.len() > limit {
                        break 'scan;
                    }
                }
            }
            batch_size = (batch_size * 2).min(MAX_BATCH);
        }
        let more = matched.len() > limit;
        matched.truncate(limit);
        let items: Vec<QueryItem> = matched
            .iter()
            .map(|device| match &query.select {
                Select::All => {
                    QueryItem::Twin(DeviceSnapshot { device: Arc::clone(device), liveness: liveness(&device.key()) })
                }
                Select::Items(items) => QueryItem::Row(run::project(items, &view(device, &liveness))),
            })
            .collect();
        let continuation = (more && limit > 0).then(|| {
            encode(&Cursor {
                q: cursor.q,
                after: matched.last().map(|d| d.key().into_owned()),
                job: None,
                n: cursor.n + items.len() as u64,
            })
        });
        QueryPage { items, item_type, continuation }
    }
}

impl Hub {
    /// `SELECT * FROM devices.jobs [WHERE ..]`: device records of every job, by job id then device id.
    fn query_device_jobs(&self, query: &Query, cursor: Cursor, page_size: usize, item_type: ItemType) -> QueryPage {
        let remaining = query.top.map_or(usize::MAX, |top| (top.saturating_sub(cursor.n)) as usize);
        let limit = page_size.min(remaining);
        let condition = query.condition.as_ref();
        let after = cursor.job.as_deref().zip(cursor.after.as_deref());
        let mut matched: Vec<DeviceJob> = Vec::with_capacity(limit + 1);
        if limit > 0 {
            self.visit_device_jobs(after, |record| {
                if condition.is_none_or(|c| matches(c, &DeviceJobView(record))) {
                    matched.push(record.clone());
                }
                matched.len() <= limit
            });
        }
        let more = matched.len() > limit;
        matched.truncate(limit);
        let continuation = more.then(|| {
            let last = matched.last();
            encode(&Cursor {
                q: cursor.q,
                after: last.map(|r| r.device_id.clone()),
                job: last.map(|r| r.job_id.clone()),
                n: cursor.n + matched.len() as u64,
            })
        });
        QueryPage { items: matched.into_iter().map(QueryItem::DeviceJob).collect(), item_type, continuation }
    }

    /// How many rows `query` returns now, `TOP` applied: what a configuration's metric counts.
    pub(super) fn query_row_count(&self, query: &Query) -> u64 {
        let condition = query.condition.as_ref();
        let count = match query.from {
            Collection::DevicesJobs => {
                let mut count = 0u64;
                self.visit_device_jobs(None, |record| {
                    count += u64::from(condition.is_none_or(|c| matches(c, &DeviceJobView(record))));
                    true
                });
                count
            }
            from => {
                let modules = from == Collection::DevicesModules;
                let state = self.read();
                let state = &*state;
                let liveness = |id: &str| Self::liveness_in(state, id);
                let selected =
                    |device: &Device| -> bool { condition.is_none_or(|c| matches(c, &view(device, &liveness))) };
                let devices: Vec<&Arc<Device>> =
                    state.devices.values().filter(|d| d.module.is_some() == modules).collect();
                if run::is_aggregate(query) {
                    aggregate(query, &devices, &selected, &liveness).len() as u64
                } else {
                    select_batch(&devices, &selected).into_iter().filter(|hit| *hit).count() as u64
                }
            }
        };
        query.top.map_or(count, |top| count.min(top))
    }

    /// The ids of every device `condition` selects (all devices for `None`), in id order: a job's targets.
    pub(super) fn matching_device_ids(&self, condition: Option<&Expr>) -> Vec<String> {
        let state = self.read();
        let state = &*state;
        let liveness = |id: &str| Self::liveness_in(state, id);
        let selected = |device: &Device| -> bool { condition.is_none_or(|c| matches(c, &view(device, &liveness))) };
        let devices: Vec<&Arc<Device>> = match condition.and_then(id_candidates) {
            Some(ids) => ids.iter().filter_map(|id| state.devices.get(id)).filter(|d| d.module.is_none()).collect(),
            None => state.devices.values().filter(|d| d.module.is_none()).collect(),
        };
        devices
            .iter()
            .zip(select_batch(&devices, &selected))
            .filter(|(_, hit)| *hit)
            .map(|(device, _)| device.device_id.clone())
            .collect()
    }
}

/// Devices examined in the first scan batch, and the most in one batch.
const FIRST_BATCH: usize = 1024;
const MAX_BATCH: usize = 32 * 1024;
/// Below this many devices a batch is evaluated on the calling thread.
const PARALLEL_FROM: usize = 4096;

fn workers(len: usize) -> usize {
    if len < PARALLEL_FROM { 1 } else { std::thread::available_parallelism().map_or(1, |n| n.get()).min(8) }
}

/// Which of `devices` match, in order, evaluated across the cores.
fn select_batch(devices: &[&Arc<Device>], selected: &(dyn Fn(&Device) -> bool + Sync)) -> Vec<bool> {
    let workers = workers(devices.len());
    if workers < 2 {
        return devices.iter().map(|d| selected(d)).collect();
    }
    let chunk = devices.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|d| selected(d)).collect::<Vec<bool>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// The aggregate rows of `query` over `devices`, each core taking a contiguous share (so first-appearance order
/// of the groups is kept when the shares are merged in order).
fn aggregate(
    query: &Query,
    devices: &[&Arc<Device>],
    selected: &(dyn Fn(&Device) -> bool + Sync),
    liveness: &(dyn Fn(&str) -> Liveness + Sync),
) -> Vec<Value> {
    let share = |part: &[&Arc<Device>]| {
        let mut groups = Groups::new(query);
        for device in part.iter().filter(|d| selected(d)) {
            groups.add(&view(device, liveness));
        }
        groups
    };
    let workers = workers(devices.len());
    let mut parts = if workers < 2 {
        vec![share(devices)]
    } else {
        let chunk = devices.len().div_ceil(workers);
        std::thread::scope(|scope| {
            let handles: Vec<_> = devices.chunks(chunk).map(|part| scope.spawn(move || share(part))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        })
    }
    .into_iter();
    let mut total = parts.next().unwrap_or_else(|| Groups::new(query));
    for part in parts {
        total.merge(part);
    }
    total.rows()
}

/// A device's twin as the query engine sees it.
fn view<'a>(device: &'a Device, liveness: &'a dyn Fn(&str) -> Liveness) -> TwinView<'a> {
    TwinView { device, liveness: LivenessSource::Lookup(liveness) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::query::parse_condition;

    fn ids(condition: &str) -> Option<Vec<String>> {
        let expr = parse_condition(condition).expect("parse").expect("condition");
        id_candidates(&expr).map(|set| set.into_iter().collect())
    }

    /// A hub over `count` devices whose `tags.n` is their index, large enough for the parallel paths.
    fn big_hub(count: usize) -> Hub {
        use crate::domain::registry::{DeviceSpec, create_device};
        use crate::domain::twin::{TwinWrite, WriteMode};
        let now = jiff::Timestamp::from_second(1_800_000_000).expect("time");
        let devices = (0..count)
            .map(|i| {
                let mut device =
                    create_device(&format!("d{i:06}"), &DeviceSpec::default(), now, i as u64 + 1).expect("device");
                let tags = serde_json::json!({"n": i, "parity": i % 2}).as_object().cloned().expect("object");
                let tags = crate::domain::twin::json::object_from_json(&tags);
                let write = TwinWrite { tags: Some(Some(tags)), desired: None };
                device.twin = device.twin.apply_service_write(&write, WriteMode::Merge, now).expect("tags").twin;
                device
            })
            .collect();
        let clock: crate::clock::SharedClock = std::sync::Arc::new(crate::clock::SystemClock);
        Hub::new(
            "h".into(),
            crate::auth::Policies::generate(),
            clock,
            crate::store::Store::memory(),
            crate::store::Loaded { devices, ..Default::default() },
        )
    }

    #[test]
    fn parallel_scans_and_aggregates_agree_with_the_sequential_answer() {
        let hub = big_hub(20_000);
        // Every third device, paged across several batches and cores.
        let text = "SELECT deviceId FROM devices WHERE tags.n % 3 = 0";
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = hub.query(text, 100, token.as_deref()).expect("query");
            seen.extend(page.items.iter().map(|item| match item {
                QueryItem::Row(row) => row["deviceId"].as_str().expect("id").to_owned(),
                other => panic!("{other:?}"),
            }));
            match page.continuation {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let expected: Vec<String> = (0..20_000).filter(|i| i % 3 == 0).map(|i| format!("d{i:06}")).collect();
        assert_eq!(seen, expected);
        // A match only near the end is found past many batches.
        let page = hub.query("SELECT * FROM devices WHERE tags.n = 19999", 100, None).expect("query");
        assert_eq!(page.items.len(), 1);
        let rows: Vec<Value> = hub
            .query("SELECT tags.parity AS p, COUNT() AS n, SUM(tags.n) AS s, MIN(tags.n) AS lo, MAX(tags.n) AS hi FROM devices GROUP BY tags.parity", 100, None)
            .expect("query")
            .items
            .into_iter()
            .map(|item| match item {
                QueryItem::Row(row) => row,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                serde_json::json!({"p": 0, "n": 10_000, "s": 99_990_000, "lo": 0, "hi": 19_998}),
                serde_json::json!({"p": 1, "n": 10_000, "s": 100_000_000, "lo": 1, "hi": 19_999}),
            ]
        );
    }

    #[test]
    fn id_conditions_use_the_index() {
        assert_eq!(ids("deviceId = 'a'"), Some(vec!["a".into()]));
        assert_eq!(ids("DeviceId IN ['b', 'a', 3]"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(ids("deviceId IN ['a','b'] AND tags.x = 1"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(ids("deviceId IN ['a','b'] AND deviceId = 'b'"), Some(vec!["b".into()]));
        assert_eq!(ids("deviceId = 'a' OR deviceId = 'c'"), Some(vec!["a".into(), "c".into()]));
        assert_eq!(ids("deviceId = 'a' OR tags.x = 1"), None);
        assert_eq!(ids("deviceId NIN ['a']"), None);
        assert_eq!(ids("NOT deviceId = 'a'"), None);
    }
}
