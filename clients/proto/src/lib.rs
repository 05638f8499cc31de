//! The Azure IoT Hub wire vocabulary shared by the emulator and the Rust clients.
//!
//! Kept free of I/O so both sides of the wire use one definition of each rule.

#![warn(missing_docs)]

pub mod configurations;
pub mod connection_string;
pub mod emulator;
pub mod jobs;
pub mod messages;
pub mod methods;
pub mod property_bag;
pub mod registry;
pub mod sas;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topics;
pub mod twin;

pub use connection_string::{ConnectionStringError, DeviceConnectionString, ServiceConnectionString};
pub use sas::{SasParseError, SasSignError, SasToken, generate_event_hubs_token, generate_token};
