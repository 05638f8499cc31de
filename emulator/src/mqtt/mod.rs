//! The MQTT 3.1.1 device endpoint.
//!
//! Written here rather than taken from a broker crate: IoT Hub's MQTT is not pub/sub. Each connection talks
//! only to the hub, about its own device, over fixed `$iothub/...` and `devices/<id>/...` topics, and the hub
//! must answer CONNACK 5 for bad SAS tokens and share port 443 with the REST API for WebSockets (see
//! docs/architecture.md). Framing uses rumqttc's public v4 codec, whose size checks run before any buffering.

pub mod connect;
mod session;
pub mod topics;

pub use session::{refuse_busy, serve_connection};
