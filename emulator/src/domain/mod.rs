//! Pure hub logic: no sockets, no HTTP or MQTT details. The transports translate to and from these types.

pub mod registry;
pub mod twin;
