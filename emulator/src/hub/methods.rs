//! Direct methods: wait for the device (up to the connect timeout), hand it the request, wait for its answer
//! (up to the response timeout), on the hub's clock like every other timer.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc::error::TrySendError;

use super::Hub;
use super::presence::{OUTBOUND_CAPACITY, ToDevice};
use crate::domain::faults::MethodDelivery;
use crate::domain::history::{MethodOutcome, MethodRecord};
use crate::domain::methods::{MethodCall, MethodResponse, PendingCalls};
use crate::error::HubError;

/// `now` plus a timeout, saturating.
fn after(now: Timestamp, timeout: std::time::Duration) -> Timestamp {
    SignedDuration::try_from(timeout).ok().and_then(|d| now.checked_add(d).ok()).unwrap_or(Timestamp::MAX)
}

impl Hub {
    /// Invokes a direct method on a device and returns its answer, or 404103 / 504101 as the hub does. A device
    /// with a full queue (it stopped reading) is 429, not a device that is offline. The call and its outcome
    /// are kept in the device's method history.
    pub async fn invoke_method(&self, device_id: &str, call: &MethodCall) -> Result<MethodResponse, HubError> {
        self.get_device(device_id)?;
        let started = self.clock.now();
        let result = self.deliver_method(device_id, call).await;
        let outcome = match &result {
            Ok(response) => MethodOutcome::Answered { status: response.status, payload: response.payload.clone() },
            Err(error) => MethodOutcome::Failed { error_code: error.wire().code, message: error.to_string() },
        };
        let duration = Duration::try_from(self.clock.now().duration_since(started)).unwrap_or_default();
        let record =
            MethodRecord { time: started, name: call.name.clone(), payload: call.payload.clone(), outcome, duration };
        self.record_method(device_id, record);
        result
    }

    /// Hands the call to the device (unless a fault holds it back or delays it) and waits for its answer.
    async fn deliver_method(&self, device_id: &str, call: &MethodCall) -> Result<MethodResponse, HubError> {
        let delivery = self.method_delivery(device_id);
        if delivery == MethodDelivery::Undelivered {
            tracing::info!(device_id, method = %call.name, "method call held back by a fault");
            self.clock.sleep_until(after(self.clock.now(), call.response_timeout)).await;
            return Err(HubError::GatewayTimeout);
        }
        let connect_deadline = after(self.clock.now(), call.connect_timeout);
        let (rid, answer) = self.pending_calls.register(device_id);
        // Forgets the call however this ends, including when the caller stops waiting (a job past its deadline).
        let _forget = ForgetOnDrop { calls: &self.pending_calls, rid };
        let mut request = Some(ToDevice::MethodRequest { rid, name: call.name.clone(), payload: call.payload.clone() });
        loop {
            let changed = self.presence_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let connected = match self.route(device_id, |s| s.methods) {
                // A late call waits with the request in hand; it is sent after the delay.
                Ok(_) if matches!(delivery, MethodDelivery::Late(_)) => break,
                Ok(sender) => {
                    let Some(unsent) = request.take() else { break };
                    match sender.try_send(unsent) {
                        Ok(()) => break,
                        Err(TrySendError::Full(_)) => return Err(device_busy()),
                        // It went away between the lookup and the send: wait for it like any offline device.
                        Err(TrySendError::Closed(unsent)) => {
                            request = Some(unsent);
                            false
                        }
                    }
                }
                Err(connected) => connected,
            };
            if self.clock.now() >= connect_deadline {
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
            tokio::select! {
                () = changed => {}
                () = self.clock.sleep_until(connect_deadline) => {}
            }
        }
        let response_deadline = after(self.clock.now(), call.response_timeout);
        if let (MethodDelivery::Late(delay), Some(request)) = (delivery, request) {
            self.deliver_late(device_id, request, after(self.clock.now(), delay), response_deadline).await?;
        }
        tracing::debug!(device_id, method = %call.name, rid, "method request handed to the device");
        tokio::select! {
            answer = answer => answer.map_err(|_| HubError::GatewayTimeout),
            () = self.clock.sleep_until(response_deadline) => Err(HubError::GatewayTimeout),
        }
    }

    /// Hands a held-back request to the device at `deliver_at`, unless the caller's deadline comes first or the
    /// device has gone by then (both end as 504101, as a request lost on the way would).
    async fn deliver_late(
        &self,
        device_id: &str,
        request: ToDevice,
        deliver_at: Timestamp,
        response_deadline: Timestamp,
    ) -> Result<(), HubError> {
        tracing::info!(device_id, %deliver_at, "method call delayed by a fault");
        if deliver_at >= response_deadline {
            self.clock.sleep_until(response_deadline).await;
            return Err(HubError::GatewayTimeout);
        }
        self.clock.sleep_until(deliver_at).await;
        let sent = match self.route(device_id, |s| s.methods) {
            Ok(sender) => match sender.try_send(request) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => return Err(device_busy()),
                Err(TrySendError::Closed(_)) => false,
            },
            Err(_) => false,
        };
        if !sent {
            self.clock.sleep_until(response_deadline).await;
            return Err(HubError::GatewayTimeout);
        }
        Ok(())
    }

    /// Delivers a device's answer to request `rid`; answers to unknown, expired or other devices' requests
    /// are dropped.
    pub fn complete_method(&self, device_id: &str, rid: u64, response: MethodResponse) {
        if !self.pending_calls.complete(device_id, rid, response) {
            tracing::debug!(device_id, rid, "method response for no waiting request dropped");
        }
    }
}

fn device_busy() -> HubError {
    HubError::DeviceBusy(format!(
        "The device has {OUTBOUND_CAPACITY} messages waiting and is not reading them; retry later"
    ))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::TokioClock;
    use crate::domain::registry::DeviceSpec;
    use crate::hub::Subscriptions;

    async fn hub_with_device() -> Arc<Hub> {
        let epoch = "2030-01-01T00:00:00Z".parse().expect("time");
        let hub = Arc::new(Hub::new(
            "localhost".into(),
            crate::auth::Policies::generate(),
            Arc::new(TokioClock::starting_at(epoch)),
            crate::store::Store::memory(),
            crate::store::Loaded::default(),
        ));
        hub.put_device("d", &DeviceSpec::default(), None).await.expect("device");
        hub
    }

    fn call(response_secs: u64, connect_secs: u64) -> MethodCall {
        MethodCall {
            name: "m".into(),
            payload: "null".into(),
            response_timeout: Duration::from_secs(response_secs),
            connect_timeout: Duration::from_secs(connect_secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_that_stops_reading_is_busy_not_offline() {
        let hub = hub_with_device().await;
        let connected = hub.device_connected("d", true);
        let subscriptions = Subscriptions { methods: true, ..Default::default() };
        hub.set_subscriptions("d", connected.lease.id, subscriptions, false).await.expect("subscribed");
        let waiting: Vec<_> = (0..OUTBOUND_CAPACITY)
            .map(|_| {
                let hub = Arc::clone(&hub);
                tokio::spawn(async move { hub.invoke_method("d", &call(30, 0)).await })
            })
            .collect();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        let busy = hub.invoke_method("d", &call(30, 0)).await.expect_err("the queue is full");
        assert!(matches!(busy, HubError::DeviceBusy(_)), "{busy:?}");
        assert_eq!(busy.wire().status, 429);
        // The calls the device never read time out on the hub's clock, as any unanswered call does.
        for call in waiting {
            assert_eq!(call.await.expect("task"), Err(HubError::GatewayTimeout));
        }
        assert!(hub.pending_calls.is_empty(), "every call is forgotten once it ends");
        drop(connected);
    }

    #[tokio::test(start_paused = true)]
    async fn the_connect_timeout_waits_on_the_hubs_clock_for_a_device_to_come() {
        let hub = hub_with_device().await;
        let started = hub.clock.now();
        let offline = hub.invoke_method("d", &call(5, 20)).await.expect_err("nobody connects");
        assert!(matches!(offline, HubError::DeviceNotOnline { connect_timeout_secs: Some(20), .. }));
        assert_eq!(hub.clock.now().duration_since(started).as_secs(), 20);

        let late = {
            let hub = Arc::clone(&hub);
            tokio::spawn(async move { hub.invoke_method("d", &call(5, 20)).await })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut connected = hub.device_connected("d", true);
        let subscriptions = Subscriptions { methods: true, ..Default::default() };
        hub.set_subscriptions("d", connected.lease.id, subscriptions, false).await.expect("subscribed");
        let Some(ToDevice::MethodRequest { rid, .. }) = connected.outbound.recv().await else {
            panic!("the waiting call reaches the device once it subscribes")
        };
        hub.complete_method("d", rid, MethodResponse { status: 200, payload: serde_json::Value::Null });
        assert_eq!(late.await.expect("task").expect("answered").status, 200);
    }
}
