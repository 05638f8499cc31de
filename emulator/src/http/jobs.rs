//! Jobs v2 endpoints (wire-spec C.6): `PUT /jobs/v2/{id}`, `GET /jobs/v2/{id}`, `POST /jobs/v2/{id}/cancel`
//! and `GET /jobs/v2/query`.
//!
//! Permissions: the tutorial runs jobs with the `registryReadWrite` policy ("your service needs the registry
//! read and registry write permissions"), so creating and cancelling need RegistryWrite and reading needs
//! RegistryRead.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;

use super::query::{CONTINUATION, MAX_ITEM_COUNT, page_response, page_size};
use super::request::{JsonBody, PathId, authorization, form_pairs};
use super::response::{ApiError, ok_json};
use crate::auth::Rights;
use crate::domain::jobs::{JobStatus, JobType};
use crate::domain::throttle::Operation;
use crate::error::HubError;
use crate::hub::{Hub, MAX_JOBS_PAGE};
use crate::wire;

type ApiResult = Result<Response, ApiError>;

/// `PUT /jobs/v2/{jobId}`: schedules a method or twin job; answers the job, `queued`.
pub async fn create_job(
    State(hub): State<Arc<Hub>>,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("jobs/v2/{id}"), Rights::REGISTRY_WRITE)?;
    hub.admit(Operation::JobOperation, 1.0)?;
    let job = wire::jobs::parse_request(&id, &body, hub.clock().now())?;
    Ok(ok_json(&wire::jobs::document(&hub.create_job(job).await?)))
}

/// `GET /jobs/v2/{jobId}`: the job and its live statistics.
pub async fn get_job(State(hub): State<Arc<Hub>>, PathId(id): PathId, headers: HeaderMap) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("jobs/v2/{id}"), Rights::REGISTRY_READ)?;
    hub.admit(Operation::JobOperation, 1.0)?;
    Ok(ok_json(&wire::jobs::document(&hub.get_job(&id)?)))
}

/// `POST /jobs/v2/{jobId}/cancel` (no body; the Node SDK sends no Content-Type).
pub async fn cancel_job(State(hub): State<Arc<Hub>>, PathId(id): PathId, headers: HeaderMap) -> ApiResult {
    hub.authorize_service(authorization(&headers), &format!("jobs/v2/{id}/cancel"), Rights::REGISTRY_WRITE)?;
    hub.admit(Operation::JobOperation, 1.0)?;
    Ok(ok_json(&wire::jobs::document(&hub.cancel_job(&id).await?)))
}

/// `GET /jobs/v2/query[?jobType=..][&jobStatus=..]`: a page of jobs, paged with `x-ms-max-item-count` and
/// `x-ms-continuation` (or the `pageSize` / `continuationToken` parameters the docs mention). Filters match
/// case-insensitively, since C# sends enum names (`ScheduleDeviceMethod`, `Completed`).
pub async fn query_jobs(State(hub): State<Arc<Hub>>, headers: HeaderMap, RawQuery(query): RawQuery) -> ApiResult {
    hub.authorize_service(authorization(&headers), "jobs/v2/query", Rights::REGISTRY_READ)?;
    hub.admit(Operation::JobOperation, 1.0)?;
    let (mut job_type, mut status, mut size, mut token) = (None, None, None, None);
    for (key, value) in form_pairs(query.as_deref().unwrap_or("")) {
        let value = value.trim().to_owned();
        match key.to_ascii_lowercase().as_str() {
            "jobtype" if !value.is_empty() => {
                job_type = Some(JobType::parse(&value).ok_or_else(|| {
                    HubError::ArgumentInvalid(format!(
                        "jobType '{value}' is not a job type: use scheduleDeviceMethod or scheduleUpdateTwin"
                    ))
                })?);
            }
            "jobstatus" if !value.is_empty() => {
                status = Some(JobStatus::parse(&value).ok_or_else(|| {
                    HubError::ArgumentInvalid(format!(
                        "jobStatus '{value}' is not a job status: use queued, scheduled, running, completed, failed or cancelled"
                    ))
                })?);
            }
            "pagesize" => size = Some(value),
            "continuationtoken" => token = Some(value),
            _ => {}
        }
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let size = page_size(header(MAX_ITEM_COUNT).or(size).as_deref(), MAX_JOBS_PAGE)?;
    let token = header(CONTINUATION).or(token);
    let (jobs, continuation) = hub.query_jobs(job_type, status, size, token.as_deref())?;
    let items: Vec<_> = jobs.iter().map(wire::jobs::document).collect();
    Ok(page_response(&items, "JobResponse", continuation))
}
