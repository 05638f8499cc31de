//! Jobs v2 in the hub: create, read, cancel and list jobs, and the runner that carries each one out.
//!
//! One task per job waits for its start time on the hub's clock, picks its targets with the query engine,
//! then works through them in a bounded window: a method call or a twin write per device, each device's record
//! and the job's statistics changed together under one lock, so a poll always sees them agree. Every state
//! change goes to the store; a device's method call is marked `running` durably before it is made, so a
//! restart never runs it twice (such a device ends `failed` with `JobInterrupted`), while devices still
//! `pending` are picked up again.
//!
//! Lock order: the registry state before the jobs state, never the other way.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt as _;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Hub;
use crate::domain::jobs::document::job_document;
use crate::domain::jobs::{
    Action, DeviceJob, DeviceJobError, DeviceJobStatus, Job, JobStatus, JobType, Statistics, request,
};
use crate::domain::methods::MethodCall;
use crate::domain::query::parse_condition;
use crate::domain::registry::IfMatch;
use crate::domain::throttle::Operation;
use crate::domain::twin::{TwinWrite, WriteMode};
use crate::error::HubError;
use crate::store::{Pending, Write};

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
    fn document(&self) -> Value {
        job_document(&self.job, &self.stats)
    }
}

/// The jobs side of the hub.
pub(super) struct Jobs {
    settings: JobSettings,
    state: Mutex<BTreeMap<String, Entry>>,
    tasks: TaskTracker,
    stop: CancellationToken,
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
        Self {
            settings: JobSettings::default(),
            state: Mutex::new(entries),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    pub(super) fn set_settings(&mut self, settings: JobSettings) {
        self.settings = settings;
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every runner and waits for them (in-flight device calls are abandoned; see the module docs).
    pub(super) async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn not_found(id: &str) -> HubError {
    HubError::JobNotFound(id.to_owned())
}

impl Hub {
    /// Resumes the jobs the store loaded and starts the retention sweep. Devices whose operation was in flight
    /// when the emulator stopped end `failed` (`JobInterrupted`); pending ones are run.
    pub fn start_jobs(self: &Arc<Self>) {
        let now = self.clock.now();
        let (unfinished, writes) = {
            let mut jobs = self.jobs.lock();
            let mut writes = Vec::new();
            let mut unfinished = Vec::new();
            for entry in jobs.values_mut().filter(|e| !e.job.status.is_finished()) {
                for record in entry.records.values_mut().filter(|r| r.status == DeviceJobStatus::Running) {
                    record.fail(now, DeviceJobError::interrupted());
                    entry.stats.moved(DeviceJobStatus::Running, DeviceJobStatus::Failed);
                    writes.push(Write::put_device_job(record));
                }
                unfinished.push(entry.job.job_id.clone());
            }
            (unfinished, writes)
        };
        if !writes.is_empty() {
            tracing::warn!(devices = writes.len(), "device operations interrupted by the last shutdown marked failed");
            drop(self.store.submit(writes));
        }
        for job_id in unfinished {
            self.spawn_runner(job_id);
        }
        let hub = Arc::clone(self);
        let stop = self.jobs.stop.clone();
        self.jobs.tasks.spawn(async move {
            loop {
                hub.remove_expired_jobs().await;
                let next = hub.clock.now().checked_add(RETENTION_SWEEP).unwrap_or(Timestamp::MAX);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = hub.clock.sleep_until(next) => {}
                }
            }
        });
    }

    /// `PUT /jobs/v2/{jobId}`: checks the request, stores the job as `queued` and starts its runner.
    pub async fn create_job(self: &Arc<Self>, job_id: &str, body: &Value) -> Result<Value, HubError> {
        let job = request::parse_request(job_id, body, self.clock.now())?;
        let (document, pending) = {
            let mut jobs = self.jobs.lock();
            if jobs.contains_key(job_id) {
                return Err(HubError::JobAlreadyExists(job_id.to_owned()));
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
            let document = entry.document();
            jobs.insert(job_id.to_owned(), entry);
            (document, pending)
        };
        if let Err(error) = pending.durable().await {
            self.jobs.lock().remove(job_id);
            return Err(HubError::ServerError(format!("The job could not be saved: {error}")));
        }
        self.spawn_runner(job_id.to_owned());
        Ok(document)
    }

    /// `GET /jobs/v2/{jobId}`: the job with its live statistics.
    pub fn get_job(&self, job_id: &str) -> Result<Value, HubError> {
        self.jobs.lock().get(job_id).map(Entry::document).ok_or_else(|| not_found(job_id))
    }

    /// `POST /jobs/v2/{jobId}/cancel`: devices not started yet become `canceled`, operations in flight may
    /// finish, and the job is `cancelled` at once. A finished job is returned unchanged (wire-spec C.6.3).
    pub async fn cancel_job(&self, job_id: &str) -> Result<Value, HubError> {
        let now = self.clock.now();
        let (document, pending) = {
            let mut jobs = self.jobs.lock();
            let entry = jobs.get_mut(job_id).ok_or_else(|| not_found(job_id))?;
            if entry.job.status.is_finished() {
                return Ok(entry.document());
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
            (entry.document(), self.store.submit(writes))
        };
        pending
            .durable()
            .await
            .map_err(|e| HubError::ServerError(format!("The cancellation could not be saved: {e}")))?;
        Ok(document)
    }

    /// `GET /jobs/v2/query`: jobs of a type and/or status, in job-id order, one page after `continuation`.
    pub fn query_jobs(
        &self,
        job_type: Option<JobType>,
        status: Option<JobStatus>,
        page_size: usize,
        continuation: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), HubError> {
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
            .filter(|e| job_type.is_none_or(|t| e.job.job_type == t) && status.is_none_or(|s| e.job.status == s));
        let page: Vec<&Entry> = selected.by_ref().take(page_size).collect();
        let continuation = match (page.last(), selected.next()) {
            (Some(last), Some(_)) => Some(URL_SAFE_NO_PAD.encode(last.job.job_id.as_bytes())),
            _ => None,
        };
        Ok((page.into_iter().map(Entry::document).collect(), continuation))
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

    fn spawn_runner(self: &Arc<Self>, job_id: String) {
        let hub = Arc::clone(self);
        let stop = self.jobs.stop.clone();
        self.jobs.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = hub.run_job(&job_id) => {}
            }
        });
    }

    /// A copy of the job and its cancellation signal.
    fn job_snapshot(&self, job_id: &str) -> Option<(Job, CancellationToken)> {
        self.jobs.lock().get(job_id).map(|e| (e.job.clone(), e.cancelled.clone()))
    }

    /// Changes the job with `f` (which gets the time) and stores it; nothing happens to a finished job.
    async fn update_job(&self, job_id: &str, f: impl FnOnce(&mut Job, Timestamp)) {
        let now = self.clock.now();
        let pending = {
            let mut jobs = self.jobs.lock();
            let Some(entry) = jobs.get_mut(job_id).filter(|e| !e.job.status.is_finished()) else { return };
            f(&mut entry.job, now);
            self.store.submit(vec![Write::put_job(&entry.job)])
        };
        if let Err(error) = pending.durable().await {
            tracing::error!(job_id, %error, "a job change could not be saved");
        }
    }

    async fn run_job(&self, job_id: &str) {
        let Some((job, cancelled)) = self.job_snapshot(job_id) else { return };
        if matches!(job.status, JobStatus::Queued | JobStatus::Scheduled) {
            if job.start > self.clock.now() {
                if job.status == JobStatus::Queued {
                    self.update_job(job_id, |job, now| job.schedule(now)).await;
                }
                tokio::select! {
                    () = cancelled.cancelled() => return,
                    () = self.clock.sleep_until(job.start) => {}
                }
            }
            if !self.begin_job(job_id).await {
                return;
            }
        }
        self.work_through(job_id).await;
    }

    /// Picks the targets (the query condition evaluated now, wire-spec E.2), creates their `pending` records
    /// and marks the job `running`, in one store transaction. False when the job cannot go on.
    async fn begin_job(&self, job_id: &str) -> bool {
        let Some((job, _)) = self.job_snapshot(job_id) else { return false };
        let condition = match parse_condition(&job.query_condition) {
            Ok(condition) => condition,
            Err(error) => {
                let reason = format!("The query condition could not be evaluated: {error}");
                self.update_job(job_id, |job, now| job.finish(JobStatus::Failed, now, Some(reason))).await;
                return false;
            }
        };
        let targets = self.matching_device_ids(condition.as_ref());
        let now = self.clock.now();
        let pending = {
            let mut jobs = self.jobs.lock();
            let Some(entry) = jobs.get_mut(job_id).filter(|e| !e.job.status.is_finished()) else { return false };
            entry.job.begin(now);
            let job = &entry.job;
            entry.records = targets.iter().map(|id| (id.clone(), DeviceJob::pending(job, id, now))).collect();
            entry.stats = Statistics::of(entry.records.values());
            let mut writes = Vec::with_capacity(entry.records.len() + 1);
            writes.push(Write::put_job(&entry.job));
            writes.extend(entry.records.values().map(Write::put_device_job));
            self.store.submit(writes)
        };
        tracing::debug!(job_id, devices = targets.len(), "job started");
        if let Err(error) = pending.durable().await {
            let reason = format!("The job's targets could not be saved: {error}");
            self.update_job(job_id, |job, now| job.finish(JobStatus::Failed, now, Some(reason))).await;
            return false;
        }
        true
    }

    /// Runs every pending device of a running job within the window, until all are done or the job's maximum
    /// execution time is up, then ends the job.
    async fn work_through(&self, job_id: &str) {
        let Some((job, _)) = self.job_snapshot(job_id) else { return };
        if job.status != JobStatus::Running {
            return;
        }
        let action = match job.action() {
            Ok(action) => action,
            Err(error) => {
                let reason = format!("The job request could not be read back: {error}");
                self.update_job(job_id, |job, now| job.finish(JobStatus::Failed, now, Some(reason))).await;
                return;
            }
        };
        let targets: Vec<String> = {
            let jobs = self.jobs.lock();
            jobs.get(job_id)
                .map(|e| {
                    e.records
                        .values()
                        .filter(|r| r.status == DeviceJobStatus::Pending)
                        .map(|r| r.device_id.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        let deadline = job.deadline().unwrap_or_else(|| self.clock.now());
        let work = futures_util::stream::iter(targets)
            .map(|device_id| self.run_device(job_id, device_id, &action))
            .buffer_unordered(self.jobs.settings.device_window.max(1))
            .for_each(|()| async {});
        let expired = tokio::select! {
            () = work => false,
            () = self.clock.sleep_until(deadline) => true,
        };
        self.end_job(job_id, expired, job.max_execution_secs).await;
    }

    /// Ends a job: `completed` when every device is done (whatever each device's outcome, wire-spec H.48),
    /// `failed` when its time ran out, with every unfinished device failed `JobExpired`. A cancelled job keeps
    /// its status.
    async fn end_job(&self, job_id: &str, expired: bool, max_execution_secs: u64) {
        let now = self.clock.now();
        let pending = {
            let mut jobs = self.jobs.lock();
            let Some(entry) = jobs.get_mut(job_id) else { return };
            let mut writes = Vec::new();
            let mut unfinished = 0;
            if expired {
                for record in entry.records.values_mut().filter(|r| !r.status.is_finished()) {
                    let before = record.status;
                    record.fail(now, DeviceJobError::expired(max_execution_secs));
                    entry.stats.moved(before, DeviceJobStatus::Failed);
                    writes.push(Write::put_device_job(record));
                    unfinished += 1;
                }
            }
            if !entry.job.status.is_finished() {
                let (status, reason) = if expired {
                    let reason = format!(
                        "The job did not finish within its maximum execution time of {max_execution_secs} seconds; \
                         {unfinished} of {} devices were not done and are failed",
                        entry.stats.device_count
                    );
                    (JobStatus::Failed, Some(reason))
                } else {
                    (JobStatus::Completed, None)
                };
                entry.job.finish(status, now, reason);
                writes.push(Write::put_job(&entry.job));
            }
            if writes.is_empty() {
                return;
            }
            self.store.submit(writes)
        };
        if let Err(error) = pending.durable().await {
            tracing::error!(job_id, %error, "the end of a job could not be saved");
        }
        tracing::debug!(job_id, expired, "job ended");
    }

    async fn run_device(&self, job_id: &str, device_id: String, action: &Action) {
        match action {
            Action::Method(call) => self.run_method_on(job_id, &device_id, call).await,
            Action::Twin { write, if_match } => {
                self.run_twin_update_on(job_id, &device_id, write, if_match.as_ref()).await
            }
        }
    }

    /// Changes one device record with `f` (which returns false to leave it alone) and stores it, keeping the
    /// statistics in step.
    fn update_record(
        &self,
        job_id: &str,
        device_id: &str,
        f: impl FnOnce(&mut DeviceJob, Timestamp) -> bool,
    ) -> Option<Pending> {
        let now = self.clock.now();
        let mut jobs = self.jobs.lock();
        let entry = jobs.get_mut(job_id)?;
        let record = entry.records.get_mut(device_id)?;
        let before = record.status;
        if !f(record, now) {
            return None;
        }
        entry.stats.moved(before, record.status);
        Some(self.store.submit(vec![Write::put_device_job(record)]))
    }

    /// A method job's work on one device: `running` (durably, before the call), the call, then `completed`
    /// with the device's answer (any status) or `failed` with the hub's reason (offline, timeout, deleted).
    async fn run_method_on(&self, job_id: &str, device_id: &str, call: &MethodCall) {
        self.admit_wait(Operation::JobDeviceOperation, 1.0).await;
        let started = self.update_record(job_id, device_id, |record, now| {
            let pending = record.status == DeviceJobStatus::Pending;
            if pending {
                record.begin(now);
            }
            pending
        });
        let Some(started) = started else { return };
        if let Err(error) = started.durable().await {
            let error = HubError::ServerError(format!("The device's record could not be saved: {error}"));
            drop(self.update_record(job_id, device_id, |record, now| {
                record.fail(now, DeviceJobError::from_hub(&error));
                true
            }));
            return;
        }
        let result = self.invoke_method(device_id, call).await;
        let done = self.update_record(job_id, device_id, |record, now| {
            if record.status != DeviceJobStatus::Running {
                return false;
            }
            match result {
                Ok(response) => record.complete(now, Some(response.into())),
                Err(error) => record.fail(now, DeviceJobError::from_hub(&error)),
            }
            true
        });
        if let Some(done) = done
            && let Err(error) = done.durable().await
        {
            tracing::error!(job_id, device_id, %error, "a device's job record could not be saved");
        }
    }

    /// A twin job's work on one device: the patch goes through the same code as `PATCH /twins/{id}` (versions,
    /// `$metadata`, desired notifications), and the record's `completed` is committed with the twin.
    async fn run_twin_update_on(&self, job_id: &str, device_id: &str, write: &TwinWrite, if_match: Option<&IfMatch>) {
        self.admit_wait(Operation::JobDeviceOperation, 1.0).await;
        let now = self.clock.now();
        let (outcome, pending) = {
            let mut state = self.write();
            let mut jobs = self.jobs.lock();
            let Some(entry) = jobs.get_mut(job_id) else { return };
            let Some(record) = entry.records.get_mut(device_id).filter(|r| r.status == DeviceJobStatus::Pending) else {
                return;
            };
            let mut done = record.clone();
            done.begin(now);
            done.complete(now, None);
            let also = vec![Write::put_device_job(&done)];
            match self.apply_twin_write(&mut state, device_id, write, WriteMode::Merge, if_match, now, also) {
                Ok((device, previous, pending)) => {
                    *record = done;
                    entry.stats.moved(DeviceJobStatus::Pending, DeviceJobStatus::Completed);
                    (Some((device, previous)), pending)
                }
                Err(error) => {
                    record.begin(now);
                    record.fail(now, DeviceJobError::from_hub(&error));
                    entry.stats.moved(DeviceJobStatus::Pending, DeviceJobStatus::Failed);
                    (None, self.store.submit(vec![Write::put_device_job(record)]))
                }
            }
        };
        let saved = match outcome {
            Some((device, previous)) => self.settle(pending, device_id, Some(previous), Some(&device)).await,
            None => pending.durable().await.map_err(|e| HubError::ServerError(e.to_string())),
        };
        if let Err(error) = saved {
            tracing::error!(job_id, device_id, %error, "a twin job's device update could not be saved");
            drop(self.update_record(job_id, device_id, |record, now| {
                record.fail(now, DeviceJobError::from_hub(&error));
                true
            }));
        }
    }

    /// Deletes finished jobs (and their records) older than the retention period.
    async fn remove_expired_jobs(&self) {
        let now = self.clock.now();
        let retention = SignedDuration::try_from(self.jobs.settings.retention).unwrap_or(SignedDuration::MAX);
        let pending = {
            let mut jobs = self.jobs.lock();
            let expired: Vec<String> = jobs
                .values()
                .filter(|e| e.job.end.is_some_and(|end| end.checked_add(retention).is_ok_and(|until| until <= now)))
                .map(|e| e.job.job_id.clone())
                .collect();
            if expired.is_empty() {
                return;
            }
            for id in &expired {
                jobs.remove(id);
            }
            tracing::debug!(jobs = expired.len(), "finished jobs past their retention removed");
            self.store.submit(expired.into_iter().map(|id| Write::DeleteJob { id }).collect())
        };
        if let Err(error) = pending.durable().await {
            tracing::error!(%error, "removing expired jobs could not be saved");
        }
    }
}
