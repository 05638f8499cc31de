//! Scheduled jobs (jobs v2): direct methods and twin updates over a query condition, polled to the end.

use std::time::Duration;

use iothub_proto::jobs::{JobRequest, JobResponse, JobStatus, JobType};
use iothub_proto::methods::CloudToDeviceMethod;
use iothub_proto::twin::Twin;
use reqwest::Method;

use crate::client::{Call, Safety, ServiceClient, segment};
use crate::error::Error;
use crate::query::{Pager, QueryClient};

/// Scheduled jobs.
#[derive(Clone)]
pub struct JobClient {
    client: ServiceClient,
}

/// When a job starts and how long it may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Schedule {
    /// `None`: now.
    pub start: Option<jiff::Timestamp>,
    /// `None`: the hub's default (an hour).
    pub max_execution_time: Option<Duration>,
}

impl Schedule {
    /// Starts now with the default maximum execution time.
    pub fn now() -> Self {
        Self::default()
    }

    /// Starts at `start`.
    pub fn at(start: jiff::Timestamp) -> Self {
        Self { start: Some(start), max_execution_time: None }
    }

    /// Fails the job's unfinished devices after `limit`.
    pub fn max_execution_time(mut self, limit: Duration) -> Self {
        self.max_execution_time = Some(limit);
        self
    }
}

impl JobClient {
    pub(crate) fn new(client: ServiceClient) -> Self {
        Self { client }
    }

    /// Creates a job from a whole request. Never retried except when throttled (a retry of a created job would
    /// be `JobAlreadyExists`).
    pub async fn create_job(&self, request: &JobRequest) -> Result<JobResponse, Error> {
        let body = serde_json::to_value(request).map_err(|e| Error::Config(e.to_string()))?;
        let call = Call::new(Method::PUT, format!("/jobs/v2/{}", segment(&request.job_id)), Safety::Once).body(body);
        self.client.send(call).await?.json()
    }

    fn request(job_id: &str, job_type: JobType, condition: &str, schedule: Schedule) -> JobRequest {
        JobRequest {
            job_id: job_id.to_owned(),
            job_type,
            query_condition: condition.to_owned(),
            cloud_to_device_method: None,
            update_twin: None,
            start_time: schedule.start.map(|t| t.to_string()),
            max_execution_time_in_seconds: schedule.max_execution_time.map(|d| d.as_secs().max(1)),
        }
    }

    /// Calls `method` on every device matching `condition` (a WHERE clause, e.g. `deviceId IN ['a','b']`).
    pub async fn schedule_device_method(
        &self,
        job_id: &str,
        condition: &str,
        method: &CloudToDeviceMethod,
        schedule: Schedule,
    ) -> Result<JobResponse, Error> {
        let mut request = Self::request(job_id, JobType::ScheduleDeviceMethod, condition, schedule);
        request.cloud_to_device_method = Some(method.clone());
        self.create_job(&request).await
    }

    /// Applies `patch` (tags and/or desired properties, with `etag` `*` or a per-device precondition) to every
    /// device matching `condition`.
    pub async fn schedule_twin_update(
        &self,
        job_id: &str,
        condition: &str,
        patch: &Twin,
        schedule: Schedule,
    ) -> Result<JobResponse, Error> {
        let mut request = Self::request(job_id, JobType::ScheduleUpdateTwin, condition, schedule);
        let mut patch = patch.clone();
        patch.etag.get_or_insert_with(|| "*".into());
        request.update_twin = Some(patch);
        self.create_job(&request).await
    }

    /// A job and its statistics.
    pub async fn get_job(&self, job_id: &str) -> Result<JobResponse, Error> {
        self.client
            .send(Call::new(Method::GET, format!("/jobs/v2/{}", segment(job_id)), Safety::Idempotent))
            .await?
            .json()
    }

    /// Cancels a job: devices not started yet are canceled. Cancelling a finished job changes nothing.
    pub async fn cancel_job(&self, job_id: &str) -> Result<JobResponse, Error> {
        let call = Call::new(Method::POST, format!("/jobs/v2/{}/cancel", segment(job_id)), Safety::Idempotent);
        self.client.send(call).await?.json()
    }

    /// Pages of jobs of a type and/or status.
    pub fn query_jobs(&self, job_type: Option<JobType>, status: Option<JobStatus>) -> Pager<JobResponse> {
        QueryClient::new(self.client.clone()).jobs(job_type, status)
    }

    /// Polls the job every `poll` until it is finished and returns it; `Error::Timeout` after `timeout`.
    pub async fn wait_for_job(&self, job_id: &str, poll: Duration, timeout: Duration) -> Result<JobResponse, Error> {
        let mut monitor = self.monitor_job(job_id, poll);
        let waited = tokio::time::timeout(timeout, async {
            let mut last = None;
            while let Some(job) = monitor.next().await {
                last = Some(job?);
            }
            last.ok_or_else(|| Error::Decode("no job state was read".into()))
        });
        waited.await.map_err(|_| Error::Timeout(timeout))?
    }

    /// Every state of the job, one per `poll`, up to and including the finished one.
    pub fn monitor_job(&self, job_id: &str, poll: Duration) -> JobMonitor {
        JobMonitor { jobs: self.clone(), job_id: job_id.to_owned(), poll, first: true, finished: false }
    }
}

/// The states of a job as it runs (see [`JobClient::monitor_job`]).
pub struct JobMonitor {
    jobs: JobClient,
    job_id: String,
    poll: Duration,
    first: bool,
    finished: bool,
}

impl JobMonitor {
    /// The job's next state (after waiting the poll interval), `None` once it was seen finished.
    pub async fn next(&mut self) -> Option<Result<JobResponse, Error>> {
        if self.finished {
            return None;
        }
        if !self.first {
            tokio::time::sleep(self.poll).await;
        }
        self.first = false;
        let job = self.jobs.get_job(&self.job_id).await;
        self.finished = job.as_ref().map_or(true, |j| j.status.is_finished());
        Some(job)
    }
}
