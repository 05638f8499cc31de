//! `iothub-device`: an Azure IoT Hub device client for Rust.
//!
//! It speaks MQTT 3.1.1 to the hub over TLS (port 8883) or secure WebSockets (443), authenticates with SAS
//! tokens made from the device key and renewed before they expire, answers direct methods, reads and patches
//! its twin, follows desired-property changes (re-reading the twin after every reconnect so none is missed),
//! sends telemetry and receives cloud-to-device messages. Transient failures are retried with exponential
//! back-off and jitter; permanent ones (bad credentials, an untrusted certificate) end the client with a typed
//! [`Error`]. It works against a real hub and against `iothub-emulator` alike:
//!
//! ```no_run
//! # async fn demo() -> Result<(), iothub_device::Error> {
//! use iothub_device::{ClientOptions, DeviceClient, MethodResponse};
//! let client = DeviceClient::builder("HostName=localhost;DeviceId=myDeviceId;SharedAccessKey=...")?
//!     .options(ClientOptions::default().with_ca_pem(std::fs::read_to_string("ca.pem").unwrap_or_default()))
//!     .on_method("lockDoor", |_request| async { MethodResponse::ok(serde_json::Value::Null) })
//!     .connect()
//!     .await?;
//! let version = client.update_reported(&serde_json::json!({"locked": true})).await?;
//! client.close().await;
//! # let _ = version; Ok(()) }
//! ```
//!
//! Cloud-to-device messages come from [`DeviceClient::messages`], a stream of [`CloudToDeviceMessage`]s
//! (body, system properties such as the message id, and the application properties in the sender's order).
//! The hub is told a message was received, which completes it and sends its sender positive feedback, only
//! when the application takes it from the stream: a message the application never got is delivered again, at
//! least once.
//!
//! ```no_run
//! # async fn demo(client: iothub_device::DeviceClient) {
//! let mut messages = client.messages();
//! while let Some(message) = messages.recv().await {
//!     println!(
//!         "message {:?} with {} bytes, priority {:?}",
//!         message.message_id,
//!         message.body.len(),
//!         message.property("priority")
//!     );
//! }
//! // `None`: the client was closed.
//! # }
//! ```
//!
//! [`CloudToDeviceMessages`] is also a [`Stream`](futures_util::Stream), for `StreamExt` combinators.

#![warn(missing_docs)]

mod c2d;
mod client;
mod driver;
mod error;
mod link;
mod message;
mod methods;
mod options;
mod shared;
mod twin;

pub use c2d::{CloudToDeviceMessage, CloudToDeviceMessages};
pub use client::{DesiredUpdates, DeviceClient, DeviceClientBuilder};
pub use error::Error;
pub use iothub_proto::messages::Ack;
pub use message::Message;
pub use methods::{MethodRequest, MethodResponse};
pub use options::{ClientOptions, RetryPolicy, Transport, Trust};
pub use shared::ConnectionStatus;
pub use twin::{DesiredUpdate, Twin};
