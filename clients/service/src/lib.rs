//! `iothub-service`: an Azure IoT Hub service client for Rust, over the hub's HTTPS REST API and, for
//! cloud-to-device messages, AMQP 1.0.
//!
//! From a hub connection string (a shared access policy), a [`ServiceClient`] signs every request with a fresh
//! SAS token and hands out the clients of each area: [`RegistryClient`] (device identities, with etags),
//! [`TwinClient`] (get, patch, replace with etags), [`MethodClient`] (direct methods with response and connect
//! timeouts), [`JobClient`] (scheduled method and twin jobs, their progress and cancellation),
//! [`QueryClient`] (the query language, paged), [`ConfigurationClient`] (automatic device management:
//! configurations and IoT Edge deployments applied by priority to the twins they target, their metrics, query
//! checks, Edge content put on one device) and [`MessageClient`] (cloud-to-device messages). Requests and
//! answers are the wire types of [`iothub_proto`]; the hub's error bodies become [`Error::Hub`] with the
//! status, `ErrorCode` and message. Throttled requests (429) are retried with back-off; 5xx answers only for
//! requests that are safe to repeat.
//!
//! Cloud-to-device messages ([`CloudToDeviceMessage`]) go over one AMQPS connection (port 5671), opened on the
//! first send and kept: TLS with the same trust as HTTPS, a SAS token put on `$cbs` and renewed before it
//! expires, and a sender to `/messages/devicebound`. A message the hub refuses is an [`Error::Hub`] with the
//! code the Azure SDKs report (`DeviceNotFound`, `DeviceMaximumQueueDepthExceeded`, `MessageTooLarge`, ...).
//! Delivery feedback ([`FeedbackBatch`]) and queue purges go over HTTPS; [`ServiceClient::close`] closes the
//! AMQP connection.
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
//!
//! Sending a message and reading what became of it:
//!
//! ```no_run
//! # async fn demo(hub: iothub_service::ServiceClient) -> Result<(), iothub_service::Error> {
//! use iothub_service::CloudToDeviceMessage;
//! use iothub_service::proto::messages::Ack;
//! let message = CloudToDeviceMessage::new(r#"{"lock":true}"#)
//!     .with_message_id("lock-1")
//!     .with_content_type("application/json")
//!     .with_ack(Ack::Full)
//!     .with_property("priority", "high");
//! hub.messages().send("myDeviceId", &message).await?;
//! if let Some(batch) = hub.messages().receive_feedback().await? {
//!     for record in &batch.records {
//!         println!("{} for {}: {}", record.original_message_id, record.device_id, record.status_code);
//!     }
//!     hub.messages().complete_feedback(&batch.lock_token).await?;
//! }
//! hub.close().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod amqp;
mod client;
mod configurations;
mod emulator;
mod error;
mod events;
mod jobs;
mod message;
mod messages;
mod methods;
mod modules;
mod query;
mod registry;
mod twins;

pub use client::{API_VERSION, RetryPolicy, ServiceClient, ServiceOptions, Trust};
pub use configurations::ConfigurationClient;
pub use emulator::EmulatorControls;
pub use error::Error;
pub use events::{EventHubConsumer, EventPosition, PartitionReceiver, ReceivedEvent};
pub use iothub_proto as proto;
pub use jobs::{JobClient, JobMonitor, Schedule};
pub use message::CloudToDeviceMessage;
pub use messages::{FeedbackBatch, MessageClient};
pub use methods::MethodClient;
pub use modules::ModuleClient;
pub use query::{MAX_PAGE_SIZE, Page, Pager, QueryClient};
pub use registry::{Etag, RegistryClient};
pub use twins::TwinClient;
