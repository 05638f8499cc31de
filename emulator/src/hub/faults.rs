//! Test-suite controls: faults in force (`domain::faults`) applied to the hub's connections and calls, the
//! recorded method calls and twin changes, and resetting the hub to empty.
//!
//! The transports ask the hub at their decision points ("may this device connect?", "answer this twin request
//! with an error?"); an atomic flag keeps those questions off the lock while no fault is in force, so the hot
//! paths (a PUBACK per telemetry message) pay one relaxed load.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;

use super::Hub;
use crate::domain::faults::{Fault, FaultKind, FaultSet, FaultSpec, MethodDelivery};
use crate::domain::history::{History, MethodRecord, TwinChangeRecord};
use crate::error::HubError;
use crate::store::Write;

/// What a reset removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResetSummary {
    pub devices: usize,
    pub modules: usize,
    pub jobs: usize,
}

impl Hub {
    fn fault_set(&self) -> MutexGuard<'_, FaultSet> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn history_log(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn any_faults(&self) -> bool {
        self.faults_on.load(Ordering::Relaxed)
    }

    /// Puts a fault in force: a disconnect or outage closes the connections it covers at once. It ends by
    /// itself at its end time (on the hub's clock), or when removed.
    pub fn inject_fault(self: &Arc<Self>, spec: FaultSpec) -> Result<Fault, HubError> {
        if let Some(key) = &spec.target {
            self.read().lookup(key)?;
        }
        let now = self.clock.now();
        let fault = self.fault_set().add(spec, now).map_err(|e| HubError::ArgumentInvalid(e.to_string()))?;
        self.faults_on.store(true, Ordering::Relaxed);
        tracing::info!(
            fault = fault.id,
            kind = fault.kind.name(),
            target = fault.target.as_deref().unwrap_or("the hub"),
            ends = %fault.ends,
            "fault injected"
        );
        match (&fault.kind, &fault.target) {
            (FaultKind::Disconnect, Some(key)) => {
                self.write().disconnect(key);
            }
            (FaultKind::Outage, _) => {
                let mut state = self.write();
                let keys: Vec<String> = state.connected.keys().cloned().collect();
                for key in keys {
                    state.disconnect(&key);
                }
            }
            _ => {}
        }
        let hub = Arc::clone(self);
        let ends = fault.ends;
        self.background.spawn(async move {
            tokio::select! {
                () = hub.stop.cancelled() => {}
                () = hub.clock.sleep_until(ends) => hub.expire_faults(),
            }
        });
        self.faults_changed.notify_waiters();
        Ok(fault)
    }

    /// The faults in force now, in the order they were added.
    pub fn faults(&self) -> Vec<Fault> {
        self.fault_set().active(self.clock.now()).cloned().collect()
    }

    /// Ends one fault before its time.
    pub fn remove_fault(&self, id: u64) -> Result<Fault, HubError> {
        let removed = {
            let mut set = self.fault_set();
            let removed = set.remove(id);
            self.faults_on.store(!set.is_empty(), Ordering::Relaxed);
            removed
        };
        let fault = removed.ok_or_else(|| HubError::NotFound(format!("No fault with id {id} is in force")))?;
        tracing::info!(fault = fault.id, kind = fault.kind.name(), "fault removed");
        self.faults_changed.notify_waiters();
        Ok(fault)
    }

    /// Ends every fault; returns how many were in force.
    pub fn clear_faults(&self) -> usize {
        let now = self.clock.now();
        let removed = {
            let mut set = self.fault_set();
            self.faults_on.store(false, Ordering::Relaxed);
            set.clear()
        };
        let count = removed.iter().filter(|f| f.ends > now).count();
        if count > 0 {
            tracing::info!(count, "faults removed");
        }
        self.faults_changed.notify_waiters();
        count
    }

    fn expire_faults(&self) {
        let ended = {
            let mut set = self.fault_set();
            let ended = set.expire(self.clock.now());
            self.faults_on.store(!set.is_empty(), Ordering::Relaxed);
            ended
        };
        for fault in &ended {
            tracing::info!(fault = fault.id, kind = fault.kind.name(), "fault ended");
        }
        if !ended.is_empty() {
            self.faults_changed.notify_waiters();
        }
    }

    /// The hub outage in force, if any: the service API answers 503 and devices cannot connect.
    pub fn outage(&self) -> Option<Fault> {
        if !self.any_faults() {
            return None;
        }
        self.fault_set().outage(self.clock.now()).cloned()
    }

    /// True when a new connection of identity `key` is refused (an outage, or a disconnect fault on it).
    pub fn connect_refused(&self, key: &str) -> bool {
        self.any_faults() && self.fault_set().connect_refused_until(key, self.clock.now()).is_some()
    }

    pub(super) fn method_delivery(&self, key: &str) -> MethodDelivery {
        if !self.any_faults() {
            return MethodDelivery::Normal;
        }
        self.fault_set().method_delivery(key, self.clock.now())
    }

    /// The error a twin request of identity `key` is answered with while a twin fault is in force.
    pub fn twin_fault(&self, key: &str) -> Option<HubError> {
        if !self.any_faults() {
            return None;
        }
        self.fault_set().twin_status(key, self.clock.now()).map(|status| match status {
            429 => HubError::Throttled("Twin request throttled (emulator fault)".into()),
            _ => HubError::ServerError("Twin request failed (emulator fault)".into()),
        })
    }

    /// Until when the PUBACKs of identity `key`'s telemetry are held back, if they are.
    pub fn telemetry_acks_withheld_until(&self, key: &str) -> Option<Timestamp> {
        if !self.any_faults() {
            return None;
        }
        self.fault_set().acks_withheld_until(key, self.clock.now())
    }

    /// The extra delay on what the hub sends identity `key`, if a latency fault is in force.
    pub fn send_latency(&self, key: &str) -> Option<Duration> {
        if !self.any_faults() {
            return None;
        }
        self.fault_set().latency(key, self.clock.now())
    }

    /// Waits until the faults change (added, removed or ended): for transports that hold something back.
    pub async fn faults_changed(&self) {
        self.faults_changed.notified().await;
    }

    /// How long the outage in force still lasts, in whole seconds rounded up (at least 1), if one is: what a client
    /// told to come back after it must wait not to be refused again.
    pub fn outage_seconds_left(&self) -> Option<i64> {
        let left = self.outage()?.ends.duration_since(self.clock.now());
        Some((left.as_secs() + i64::from(left.subsec_nanos() > 0)).max(1))
    }

    /// Returns once a hub outage is in force (at once when one is): for transports that end what an outage ends.
    pub async fn outage_begun(&self) {
        loop {
            let changed = self.faults_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.outage().is_some() {
                return;
            }
            changed.await;
        }
    }

    pub(super) fn record_method(&self, key: &str, record: MethodRecord) {
        self.history_log().record_method(key, record);
    }

    pub(super) fn record_twin_change(&self, key: &str, record: TwinChangeRecord) {
        self.history_log().record_twin_change(key, record);
    }

    /// The direct methods called on identity `key` lately, newest first.
    pub fn method_history(&self, key: &str) -> Result<Vec<MethodRecord>, HubError> {
        self.read().lookup(key)?;
        Ok(self.history_log().methods(key))
    }

    /// The changes to identity `key`'s twin lately, newest first.
    pub fn twin_history(&self, key: &str) -> Result<Vec<TwinChangeRecord>, HubError> {
        self.read().lookup(key)?;
        Ok(self.history_log().twin_changes(key))
    }

    pub(super) fn forget_history(&self, key: &str) {
        self.history_log().forget(key);
    }

    /// Empties the hub for the next test: every device, module, job, queued message, feedback record, stored
    /// session, fault and recorded history goes, and the telemetry kept so far is dropped (sequence numbers go
    /// on from where they were, so readers holding a checkpoint are not confused). The CA, the policies and
    /// their keys stay, so connection strings keep working. Answers once the store is empty too.
    pub async fn reset(&self) -> Result<ResetSummary, HubError> {
        let mut summary = ResetSummary::default();
        let pending = {
            let mut state = self.write();
            for device in state.devices.values() {
                if device.module.is_some() {
                    summary.modules += 1;
                } else {
                    summary.devices += 1;
                }
            }
            let keys: Vec<String> = state.connected.keys().cloned().collect();
            for key in keys {
                state.disconnect(&key);
            }
            state.devices.clear();
            state.sessions.clear();
            state.last_activity.clear();
            state.messages.clear();
            state.configurations.clear();
            summary.jobs = self.jobs.clear();
            let mut writes = vec![Write::Reset];
            writes.extend(self.drop_all_telemetry());
            self.store.submit(writes)
        };
        self.clear_faults();
        self.history_log().clear();
        self.presence_changed.notify_waiters();
        pending.durable().await.map_err(|e| HubError::ServerError(format!("The reset could not be saved: {e}")))?;
        tracing::info!(devices = summary.devices, modules = summary.modules, jobs = summary.jobs, "hub reset");
        Ok(summary)
    }
}
