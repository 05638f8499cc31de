//! Pure hub logic: no sockets, no HTTP or MQTT details. The transports translate to and from these types.

pub mod bulk;
pub mod c2d;
pub mod configurations;
pub mod eventlog;
pub mod faults;
pub mod history;
pub mod jobs;
pub mod methods;
pub mod query;
pub mod registry;
pub mod sessions;
pub mod telemetry;
pub mod throttle;
pub mod twin;
