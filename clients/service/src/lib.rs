//! `iothub-service`: an Azure IoT Hub service client for Rust, over the hub's HTTPS REST API.
//!
//! From a hub connection string (a shared access policy), a [`ServiceClient`] signs every request with a fresh
//! SAS token and hands out the clients of each area: [`RegistryClient`] (device identities, with etags),
//! [`TwinClient`] (get, patch, replace with etags), [`MethodClient`] (direct methods with response and connect
//! timeouts), [`JobClient`] (scheduled method and twin jobs, their progress and cancellation) and
//! [`QueryClient`] (the query language, paged). Requests and answers are the wire types of
//! [`iothub_proto`]; the hub's error bodies become [`Error::Hub`] with the status, `ErrorCode` and message.
//! Throttled requests (429) are retried with back-off; 5xx answers only for requests that are safe to repeat.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iothub_service::Error> {
//! use std::time::Duration;
//! use iothub_service::{Schedule, ServiceClient, ServiceOptions};
//! use iothub_service::proto::methods::CloudToDeviceMethod;
//! let hub = ServiceClient::from_connection_string("HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=...", ServiceOptions::default())?;
//! let lock = CloudToDeviceMethod { method_name: "lockDoor".into(), payload: serde_json::Value::Null, response_timeout_in_seconds: Some(15), connect_timeout_in_seconds: None };
//! hub.jobs().schedule_device_method("job-1", "deviceId IN ['myDeviceId']", &lock, Schedule::now()).await?;
//! let job = hub.jobs().wait_for_job("job-1", Duration::from_secs(1), Duration::from_secs(60)).await?;
//! println!("{:?}", job.status);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod client;
mod error;
mod jobs;
mod methods;
mod query;
mod registry;
mod twins;

pub use client::{API_VERSION, RetryPolicy, ServiceClient, ServiceOptions, Trust};
pub use error::Error;
pub use iothub_proto as proto;
pub use jobs::{JobClient, JobMonitor, Schedule};
pub use methods::MethodClient;
pub use query::{MAX_PAGE_SIZE, Page, Pager, QueryClient};
pub use registry::{Etag, RegistryClient};
pub use twins::TwinClient;
