//! Telemetry: kept in a bounded buffer per device and fanned out to live subscribers (tests, tools).

use std::sync::Arc;

use tokio::sync::broadcast;

use super::Hub;
use crate::domain::telemetry::TelemetryMessage;

/// Messages a slow live subscriber may fall behind before it misses some.
pub(super) const FEED_CAPACITY: usize = 4096;

impl Hub {
    /// Records a device-to-cloud message.
    pub fn record_telemetry(&self, message: TelemetryMessage) {
        tracing::debug!(
            device_id = %message.device_id,
            bytes = message.body.len(),
            properties = ?message.properties,
            system_properties = ?message.system_properties,
            "telemetry"
        );
        let message = Arc::new(message);
        self.write().telemetry.entry(message.device_id.clone()).or_default().push(message.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.telemetry_feed.send(message);
    }

    /// A live stream of every device's telemetry from now on.
    pub fn telemetry_stream(&self) -> broadcast::Receiver<Arc<TelemetryMessage>> {
        self.telemetry_feed.subscribe()
    }

    /// The device's recent telemetry, oldest first.
    pub fn recent_telemetry(&self, device_id: &str) -> Vec<Arc<TelemetryMessage>> {
        self.read().telemetry.get(device_id).map(|b| b.messages()).unwrap_or_default()
    }
}
