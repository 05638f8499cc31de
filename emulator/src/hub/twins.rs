//! Twin reads and writes: the service's PATCH/PUT (and twin jobs), the device's reported patches and GET,
//! and the desired-change notification to the connected device.

use std::sync::Arc;

use super::presence::ToDevice;
use super::{DeviceSnapshot, Hub, State};
use crate::domain::history::{TwinChangeRecord, TwinSection};
use crate::domain::registry::{Device, IfMatch};
use crate::domain::twin::{DesiredNotification, Object, TwinWrite, WriteMode};
use crate::error::HubError;
use crate::store::{Pending, Write};

impl Hub {
    /// A device with its twin and connection facts: what the twin document shows (wire-spec D.1).
    pub fn twin(&self, id: &str) -> Result<DeviceSnapshot, HubError> {
        let state = self.read();
        let device = state.lookup(id)?;
        Ok(DeviceSnapshot { device: Arc::clone(device), liveness: Self::liveness_in(&state, id) })
    }

    /// A service write of the twin: checks `If-Match` against the twin etag, applies it, notifies the device
    /// of desired changes, and answers with the new twin once it is durable.
    pub async fn write_twin(
        &self,
        id: &str,
        write: &TwinWrite,
        mode: WriteMode,
        if_match: Option<&IfMatch>,
    ) -> Result<DeviceSnapshot, HubError> {
        let now = self.clock.now();
        let (device, previous, pending, liveness) = {
            let mut state = self.write();
            let (device, previous, pending) =
                self.apply_twin_write(&mut state, id, write, mode, if_match, now, Vec::new())?;
            (device, previous, pending, Self::liveness_in(&state, id))
        };
        self.settle(pending, id, Some(previous), Some(&device)).await?;
        Ok(DeviceSnapshot { device, liveness })
    }

    /// Applies a service write under the state lock: the `If-Match` check, the twin rules, the store write
    /// (with `also` in the same transaction, so a twin job's record of it lands atomically) and the desired
    /// notification. Returns the new device, the one it replaced, and the store write to wait for.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_twin_write(
        &self,
        state: &mut State,
        id: &str,
        write: &TwinWrite,
        mode: WriteMode,
        if_match: Option<&IfMatch>,
        now: jiff::Timestamp,
        also: Vec<Write>,
    ) -> Result<(Arc<Device>, Arc<Device>, Pending), HubError> {
        let current = state.lookup(id)?.clone();
        if let Some(condition) = if_match {
            condition.check(&current.twin.etag())?;
        }
        let change = current.twin.apply_service_write(write, mode, now)?;
        let replaced = mode == WriteMode::Replace;
        if let Some(tags) = &write.tags {
            let patch = tags.clone().unwrap_or_default();
            self.record_twin_change(
                id,
                TwinChangeRecord { time: now, section: TwinSection::Tags, replaced, version: None, patch },
            );
        }
        if let Some(desired) = &write.desired {
            let patch = desired.clone().unwrap_or_default();
            let version = Some(change.twin.desired.version);
            self.record_twin_change(
                id,
                TwinChangeRecord { time: now, section: TwinSection::Desired, replaced, version, patch },
            );
        }
        let (device, pending) = self.store_device_with(state, current.with_twin(change.twin), also);
        if let Some(notification) = change.desired_notification {
            // Sent under the lock so notifications reach the device in version order.
            Self::notify_desired(state, id, notification);
        }
        Ok((device, current, pending))
    }

    pub(super) fn notify_desired(state: &State, device_id: &str, notification: DesiredNotification) {
        let Some(presence) = state.connected.get(device_id) else { return };
        if !state.sessions.get(device_id).is_some_and(|s| s.desired) {
            return;
        }
        if presence.outbound.try_send(ToDevice::DesiredChanged(notification)).is_err() {
            tracing::warn!(device_id, "desired-property notification dropped: the device is not reading");
        }
    }

    /// A device's reported-properties patch; returns the new reported `$version` once it is durable.
    pub async fn patch_reported(&self, device_id: &str, patch: &Object) -> Result<u64, HubError> {
        let now = self.clock.now();
        let (device, previous, pending) = {
            let mut state = self.write();
            let current: Arc<Device> = state.lookup(device_id)?.clone();
            let twin = current.twin.apply_reported_patch(patch, now)?;
            let record = TwinChangeRecord {
                time: now,
                section: TwinSection::Reported,
                replaced: false,
                version: Some(twin.reported.version),
                patch: patch.clone(),
            };
            self.record_twin_change(device_id, record);
            let (device, pending) = self.store_device(&mut state, current.with_twin(twin));
            (device, Some(current), pending)
        };
        self.settle(pending, device_id, previous, Some(&device)).await?;
        Ok(device.twin.reported.version)
    }
}
