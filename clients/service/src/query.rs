//! Paged results: `POST /devices/query` (the IoT Hub query language) and `GET /jobs/v2/query`, followed page by
//! page with `x-ms-continuation`.

use iothub_proto::jobs::{DeviceJob, JobResponse, JobStatus, JobType};
use iothub_proto::twin::Twin;
use reqwest::Method;
use reqwest::header::HeaderName;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::client::{Call, Safety, ServiceClient};
use crate::error::Error;

/// The most items the hub returns per page.
pub const MAX_PAGE_SIZE: usize = 100;

const MAX_ITEM_COUNT: HeaderName = HeaderName::from_static("x-ms-max-item-count");
const CONTINUATION: HeaderName = HeaderName::from_static("x-ms-continuation");

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The page's items, in the hub's order.
    pub items: Vec<T>,
    /// `x-ms-item-type`: `Twin`, `DeviceJob`, `JobResponse` or `Raw`.
    pub item_type: Option<String>,
}

#[derive(Debug, Clone)]
enum Source {
    Query(String),
    Jobs { job_type: Option<JobType>, status: Option<JobStatus> },
}

/// Walks the pages of a query, each fetched when asked for (a continuation is a cursor on the hub, so pages
/// are cheap). `T` is what each item is read as: [`Twin`], [`DeviceJob`], [`JobResponse`] or raw JSON.
pub struct Pager<T> {
    client: ServiceClient,
    source: Source,
    page_size: usize,
    continuation: Option<String>,
    done: bool,
    _items: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Pager<T> {
    fn new(client: ServiceClient, source: Source) -> Self {
        Self {
            client,
            source,
            page_size: MAX_PAGE_SIZE,
            continuation: None,
            done: false,
            _items: std::marker::PhantomData,
        }
    }

    /// Asks for pages of `size` items (1 to 100).
    pub fn page_size(mut self, size: usize) -> Self {
        self.page_size = size.clamp(1, MAX_PAGE_SIZE);
        self
    }

    /// True until the last page has been read.
    pub fn has_more(&self) -> bool {
        !self.done
    }

    /// The next page, `None` after the last one.
    pub async fn next_page(&mut self) -> Result<Option<Page<T>>, Error> {
        if self.done {
            return Ok(None);
        }
        let mut call = match &self.source {
            Source::Query(text) => {
                Call::new(Method::POST, "/devices/query".into(), Safety::Idempotent).body(json!({"query": text}))
            }
            Source::Jobs { job_type, status } => {
                let mut call = Call::new(Method::GET, "/jobs/v2/query".into(), Safety::Idempotent);
                if let Some(job_type) = job_type {
                    call = call.query("jobType", job_type.as_str());
                }
                if let Some(status) = status {
                    call = call.query("jobStatus", status.as_str());
                }
                call
            }
        };
        call = call.header(MAX_ITEM_COUNT, self.page_size.to_string());
        if let Some(token) = &self.continuation {
            call = call.header(CONTINUATION, token.clone());
        }
        let answer = self.client.send(call).await?;
        let items: Vec<Value> = answer.json()?;
        let items = items
            .into_iter()
            .map(|item| serde_json::from_value(item).map_err(|e| Error::Decode(format!("a result item: {e}"))))
            .collect::<Result<Vec<T>, Error>>()?;
        self.continuation = answer.header("x-ms-continuation").filter(|t| !t.is_empty());
        self.done = self.continuation.is_none();
        Ok(Some(Page { items, item_type: answer.header("x-ms-item-type") }))
    }

    /// Every remaining item, following continuations to the end.
    pub async fn collect_all(mut self) -> Result<Vec<T>, Error> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page.items);
        }
        Ok(all)
    }
}

/// Queries in the IoT Hub query language.
#[derive(Clone)]
pub struct QueryClient {
    client: ServiceClient,
}

impl QueryClient {
    pub(crate) fn new(client: ServiceClient) -> Self {
        Self { client }
    }

    /// Pages of `text` (e.g. `SELECT * FROM devices WHERE tags.location = 'x'`) as raw JSON items, for
    /// projections and aggregates.
    pub fn raw(&self, text: &str) -> Pager<Value> {
        Pager::new(self.client.clone(), Source::Query(text.to_owned()))
    }

    /// Pages of twins of a `SELECT * FROM devices ...` query.
    pub fn twins(&self, text: &str) -> Pager<Twin> {
        Pager::new(self.client.clone(), Source::Query(text.to_owned()))
    }

    /// Pages of device job records of a `SELECT * FROM devices.jobs ...` query.
    pub fn device_jobs(&self, text: &str) -> Pager<DeviceJob> {
        Pager::new(self.client.clone(), Source::Query(text.to_owned()))
    }

    /// Pages of jobs of a type and/or status.
    pub(crate) fn jobs(&self, job_type: Option<JobType>, status: Option<JobStatus>) -> Pager<JobResponse> {
        Pager::new(self.client.clone(), Source::Jobs { job_type, status })
    }
}
