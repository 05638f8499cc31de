//! `iothub-device`: an Azure IoT Hub device client for Rust.
//!
//! It speaks MQTT 3.1.1 to the hub over TLS (port 8883) or secure WebSockets (443), authenticates with SAS
//! tokens made from the device key and renewed before they expire, answers direct methods, reads and patches
//! its twin, follows desired-property changes (re-reading the twin after every reconnect so none is missed) and
//! sends telemetry. Transient failures are retried with exponential back-off and jitter; permanent ones (bad
//! credentials, an untrusted certificate) end the client with a typed [`Error`]. It works against a real hub
//! and against `iothub-emulator` alike:
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

#![warn(missing_docs)]

mod client;
mod driver;
mod error;
mod link;
mod message;
mod methods;
mod options;
mod twin;

pub use client::{DesiredUpdates, DeviceClient, DeviceClientBuilder};
pub use driver::ConnectionStatus;
pub use error::Error;
pub use message::Message;
pub use methods::{MethodRequest, MethodResponse};
pub use options::{ClientOptions, RetryPolicy, Transport, Trust};
pub use twin::{DesiredUpdate, Twin};
