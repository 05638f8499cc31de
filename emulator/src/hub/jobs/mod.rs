//! Jobs v2 in the hub: create, read, cancel and list jobs; `runner` carries each one out.
//!
//! Every job and its device records live here, with live statistics kept in step with the records under one
//! lock, so a poll always sees them agree. Lock order: the registry state before the jobs state, never the other
//! way.

mod runner;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::domain::jobs::{DeviceJob, DeviceJobStatus, Job, JobStatus, JobType, Statistics};
use crate::error::HubError;
use crate::store::Write;

/// How the hub runs jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSettings {
    /// Most jobs queued, scheduled or running at once; creating one more is refused with 429004. Real hubs
    /// allow 1 (S1) to 10 (S3); the default is generous so tests never trip over it.
    pub max_active_jobs: usize,
    /// How long a finished job and its device records are kept (the hub keeps them 30 days).
    pub retention: Duration,
    /// Devices of one job worked on at the same time, so slow or offline devices do not hold up the rest.
    pub device_window: usize,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self { max_active_jobs: 100, retention: Duration::from_secs(30 * 24 * 3600), device_window: 4096 }
    }
}

/// How often finished jobs past their retention are looked for.
const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

/// Items per page of `GET /jobs/v2/query`: the default and the most.
pub const MAX_JOBS_PAGE: usize = 100;

struct Entry {
    job: Job,
    records: BTreeMap<String, DeviceJob>,
    stats: Statistics,
    /// Fires when the job is cancelled, so a runner waiting for the start time stops waiting.
    cancelled: CancellationToken,
}

impl Entry {
    fn snapshot(&self) -> JobSnapshot {
        JobSnapshot { job: self.job.clone(), stats: self.stats }
    }
}

/// A job as it is now, with its live statistics: what the job object shows.
#[derive(Debug, Clone)]
pub struct JobSnapshot {
    pub job: Job,
    pub stats: Statistics,
}

/// The jobs side of the hub.
pub(super) struct Jobs {
    settings: JobSettings,
    state: Mutex<BTreeMap<String, Entry>>,
}

impl Jobs {
    /// The jobs and records the store loaded; statistics are counted from the records, never stored.
    pub(super) fn new(jobs: Vec<Job>, device_jobs: Vec<DeviceJob>) -> Self {
        let mut entries: BTreeMap<String, Entry> = jobs
            .into_iter()
            .map(|job| {
                let entry = Entry {
                    job,
                    records: BTreeMap::new(),
                    stats: Statistics::default(),
                    cancelled: CancellationToken::new(),
                };
                (entry.job.job_id.clone(), entry)
            })
            .collect();
        for record in device_jobs {
            if let Some(entry) = entries.get_mut(&record.job_id) {
                entry.records.insert(record.device_id.clone(), record);
            }
        }
        for entry in entries.values_mut() {
            entry.stats = Statistics::of(entry.records.values());
        }
        Self { settings: JobSettings::default(), state: Mutex::new(entries) }
    }

    pub(super) fn set_settings(&mut self, settings: JobSettings) {
        self.settings = settings;
    }

    /// Stops and forgets every job (a reset); returns how many there were.
    pub(super) fn clear(&self) -> usize {
        let mut jobs = self.lock();
        for entry in jobs.values() {
            entry.cancelled.cancel();
        }
        let count = jobs.len();
        jobs.clear();
        count
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn not_found(id: &str) -> HubError {
    HubError::JobNotFound(id.to_owned())
}

impl Hub {
    /// `PUT /jobs/v2/{jobId}`: stores a new job as `queued` and starts its runner.
    pub async fn create_job(self: &Arc<Self>, job: Job) -> Result<JobSnapshot, HubError> {
        let job_id = job.job_id.clone();
        let (snapshot, pending) = {
            let mut jobs = self.jobs.lock();
            if jobs.contains_key(&job_id) {
                return Err(HubError::JobAlreadyExists(job_id));
            }
            let active = jobs.values().filter(|e| !e.job.status.is_finished()).count();
            let limit = self.jobs.settings.max_active_jobs;
            if active >= limit {
                return Err(HubError::TooManyActiveJobs(format!(
                    "The hub already has {active} active jobs, its limit (--max-active-jobs); wait for one to finish"
                )));
            }
            let pending = self.store.submit(vec![Write::put_job(&job)]);
            let entry = Entry {
                job,
                records: BTreeMap::new(),
                stats: Statistics::default(),
                cancelled: CancellationToken::new(),
            };
            let snapshot = entry.snapshot();
            jobs.insert(job_id.clone(), entry);
            (snapshot, pending)
        };
        if let Err(error) = pending.durable().await {
            self.jobs.lock().remove(&job_id);
            return Err(HubError::ServerError(format!("The job could not be saved: {error}")));
        }
        self.spawn_runner(job_id);
        Ok(snapshot)
    }

    /// `GET /jobs/v2/{jobId}`: the job with its live statistics.
    pub fn get_job(&self, job_id: &str) -> Result<JobSnapshot, HubError> {
        self.jobs.lock().get(job_id).map(Entry::snapshot).ok_or_else(|| not_found(job_id))
    }

    /// `POST /jobs/v2/{jobId}/cancel`: devices not started yet become `canceled`, operations in flight may
    /// finish, and the job is `cancelled` at once. A finished job is returned unchanged (wire-spec C.6.3).
    pub async fn cancel_job(&self, job_id: &str) -> Result<JobSnapshot, HubError> {
        let now = self.clock.now();
        let (snapshot, pending) = {
            let mut jobs = self.jobs.lock();
            let entry = jobs.get_mut(job_id).ok_or_else(|| not_found(job_id))?;
            if entry.job.status.is_finished() {
                return Ok(entry.snapshot());
            }
            let mut writes = Vec::new();
            for record in
                entry.records.values_mut().filter(|r| !r.status.is_finished() && r.status != DeviceJobStatus::Running)
            {
                let before = record.status;
                record.cancel(now);
                entry.stats.moved(before, DeviceJobStatus::Canceled);
                writes.push(Write::put_device_job(record));
            }
            entry.job.finish(JobStatus::Cancelled, now, None);
            writes.push(Write::put_job(&entry.job));
            entry.cancelled.cancel();
            (entry.snapshot(), self.store.submit(writes))
        };
        pending
            .durable()
            .await
            .map_err(|e| HubError::ServerError(format!("The cancellation could not be saved: {e}")))?;
        Ok(snapshot)
    }

    /// `GET /jobs/v2/query`: jobs of a type and/or status, in job-id order, one page after `continuation`.
    pub fn query_jobs(
        &self,
        job_type: Option<JobType>,
        status: Option<JobStatus>,
        page_size: usize,
        continuation: Option<&str>,
    ) -> Result<(Vec<JobSnapshot>, Option<String>), HubError> {
        let after = match continuation.map(str::trim).filter(|c| !c.is_empty()) {
            None => None,
            Some(token) => Some(
                URL_SAFE_NO_PAD
                    .decode(token)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| HubError::ArgumentInvalid("The continuation token is not valid".into()))?,
            ),
        };
        let page_size = page_size.clamp(1, MAX_JOBS_PAGE);
        let jobs = self.jobs.lock();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut selected = jobs
            .range::<String, _>((lower, Bound::Unbounded))
            .map(|(_, entry)| entry)
            .filter(|e| job_type.is_none_or(|t| e.job.job_type() == t) && status.is_none_or(|s| e.job.status == s));
        let page: Vec<&Entry> = selected.by_ref().take(page_size).collect();
        let continuation = match (page.last(), selected.next()) {
            (Some(last), Some(_)) => Some(URL_SAFE_NO_PAD.encode(last.job.job_id.as_bytes())),
            _ => None,
        };
        Ok((page.into_iter().map(Entry::snapshot).collect(), continuation))
    }

    /// Calls `f` on every device record in (job id, device id) order after `after`, until it returns false.
    pub(super) fn visit_device_jobs(&self, after: Option<(&str, &str)>, mut f: impl FnMut(&DeviceJob) -> bool) {
        let jobs = self.jobs.lock();
        let lower = after.map_or(Bound::Unbounded, |(job, _)| Bound::Included(job.to_owned()));
        for (job_id, entry) in jobs.range::<String, _>((lower, Bound::Unbounded)) {
            let from = match after {
                Some((after_job, after_device)) if after_job == job_id => Bound::Excluded(after_device.to_owned()),
                _ => Bound::Unbounded,
            };
            for (_, record) in entry.records.range::<String, _>((from, Bound::Unbounded)) {
                if !f(record) {
                    return;
                }
            }
        }
    }
}
