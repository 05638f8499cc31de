//! Direct methods: wait for the device (up to the connect timeout), hand it the request, wait for its answer
//! (up to the response timeout), with real tokio timers.

use tokio::time::Instant;

use super::Hub;
use super::presence::ToDevice;
use crate::domain::methods::{MethodCall, MethodResponse, PendingCalls};
use crate::error::HubError;

impl Hub {
    /// Invokes a direct method on a device and returns its answer, or 404103 / 504101 as the hub does.
    pub async fn invoke_method(&self, device_id: &str, call: &MethodCall) -> Result<MethodResponse, HubError> {
        self.get_device(device_id)?;
        let connect_deadline = Instant::now() + call.connect_timeout;
        let sender = loop {
            let changed = self.presence_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.route(device_id, |s| s.methods) {
                Ok(sender) => break sender,
                Err(connected) => {
                    if Instant::now() >= connect_deadline {
                        let message = if connected {
                            "Timed out waiting for device to subscribe."
                        } else {
                            "Timed out waiting for device to connect."
                        };
                        return Err(HubError::DeviceNotOnline {
                            message: message.into(),
                            connect_timeout_secs: Some(call.connect_timeout.as_secs()),
                        });
                    }
                }
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(connect_deadline) => {}
            }
        };

        let (rid, answer) = self.pending_calls.register(device_id);
        // Forgets the call however this ends, including when the caller stops waiting (a job past its deadline).
        let _forget = ForgetOnDrop { calls: &self.pending_calls, rid };
        let request = ToDevice::MethodRequest { rid, name: call.name.clone(), payload: call.payload.clone() };
        if sender.try_send(request).is_err() {
            return Err(HubError::DeviceNotOnline {
                message: "Timed out waiting for device to connect.".into(),
                connect_timeout_secs: Some(call.connect_timeout.as_secs()),
            });
        }
        tracing::debug!(device_id, method = %call.name, rid, "method request handed to the device");
        match tokio::time::timeout(call.response_timeout, answer).await {
            Ok(Ok(response)) => Ok(response),
            _ => Err(HubError::GatewayTimeout),
        }
    }

    /// Delivers a device's answer to request `rid`; answers to unknown, expired or other devices' requests
    /// are dropped.
    pub fn complete_method(&self, device_id: &str, rid: u64, response: MethodResponse) {
        if !self.pending_calls.complete(device_id, rid, response) {
            tracing::debug!(device_id, rid, "method response for no waiting request dropped");
        }
    }
}

/// Removes a waiting call from the table when dropped.
struct ForgetOnDrop<'a> {
    calls: &'a PendingCalls,
    rid: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.calls.forget(self.rid);
    }
}
