//! The job runner: one task per job waits for its start time on the hub's clock, picks its targets with the
//! query engine, then works through them in a bounded window: a method call or a twin write per device, each
//! device's record and the job's statistics changed together under one lock. Every state change goes to the
//! store; a device's method call is marked `running` durably before it is made, so a restart never runs it twice
//! (such a device ends `failed` with `JobInterrupted`), while devices still `pending` are picked up again.

use std::sync::Arc;

use futures_util::StreamExt as _;
use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;

use super::RETENTION_SWEEP;
use crate::domain::jobs::{Action, DeviceJob, DeviceJobError, DeviceJobStatus, Job, JobStatus, Statistics};
use crate::domain::methods::MethodCall;
use crate::domain::registry::IfMatch;
use crate::domain::throttle::Operation;
use crate::domain::twin::{TwinWrite, WriteMode};
use crate::error::HubError;
use crate::hub::Hub;
use crate::store::{Pending, Write};

impl Hub {
    /// Resumes the jobs the store loaded and starts the retention sweep. Devices whose operation was in flight
    /// when the emulator stopped end `failed` (`JobInterrupted`); pending ones are run.
    pub(in crate::hub) fn start_jobs(self: &Arc<Self>) {
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
        let stop = self.stop.clone();
        self.background.spawn(async move {
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

    pub(super) fn spawn_runner(self: &Arc<Self>, job_id: String) {
        let hub = Arc::clone(self);
        let stop = self.stop.clone();
        self.background.spawn(async move {
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
        let targets = match job.condition.expr() {
            Ok(condition) => self.matching_device_ids(condition),
            Err(error) => {
                let reason = format!("The query condition could not be evaluated: {error}");
                self.update_job(job_id, |job, now| job.finish(JobStatus::Failed, now, Some(reason))).await;
                return false;
            }
        };
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
        let action = match &job.action {
            Action::Method(call) => DeviceAction::Method(call),
            Action::Twin(update) => match update.if_match() {
                Ok(if_match) => DeviceAction::Twin { write: &update.write, if_match },
                Err(error) => {
                    let reason = format!("The job's twin update cannot be applied: {error}");
                    self.update_job(job_id, |job, now| job.finish(JobStatus::Failed, now, Some(reason))).await;
                    return;
                }
            },
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

    async fn run_device(&self, job_id: &str, device_id: String, action: &DeviceAction<'_>) {
        match action {
            DeviceAction::Method(call) => self.run_method_on(job_id, &device_id, call).await,
            DeviceAction::Twin { write, if_match } => {
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

/// What a running job does on each device, borrowed from the job.
enum DeviceAction<'a> {
    Method(&'a MethodCall),
    Twin { write: &'a TwinWrite, if_match: Option<IfMatch> },
}
