//! The hub's JSON: the only code that turns the hub's typed values into the documents the SDKs read (in the
//! hub's member order) and reads their requests back into typed values. The transports (`http`, `mqtt`) call
//! it; the hub and the domain never see JSON text.

pub mod bulk;
pub mod configurations;
pub mod controls;
pub mod errors;
pub mod jobs;
pub mod messages;
pub mod methods;
pub mod query;
pub mod registry;
pub mod telemetry;
pub mod twin;
#[cfg(test)]
mod twin_reference;
