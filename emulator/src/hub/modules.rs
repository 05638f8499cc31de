//! Module identities: created, updated, listed and deleted under their device. A module is filed beside the
//! devices under `<deviceId>/<moduleId>`, so its twin, connection, session and methods go through the same code
//! as a device's (`twins`, `presence`, `methods`) with that key.

use std::sync::Arc;

use super::Hub;
use crate::domain::registry::{self, Device, DeviceSpec, IfMatch};
use crate::error::HubError;
use crate::limits;
use crate::store::Write;

impl Hub {
    /// Creates a module (no `If-Match`) or updates one (`If-Match` given), answering once it is durable: 404
    /// DeviceNotFound without the device, 409 ModuleAlreadyExistsOnDevice for a create of an existing module,
    /// 404 ModuleNotFound for an update of a missing one, 403 past the device's 50 modules. The second value is
    /// true when the module was created.
    pub async fn put_module(
        &self,
        device_id: &str,
        module_id: &str,
        spec: &DeviceSpec,
        if_match: Option<&IfMatch>,
    ) -> Result<(Arc<Device>, bool), HubError> {
        registry::validate_device_id(device_id)?;
        registry::validate_module_id(module_id)?;
        let key = registry::identity_key(device_id, Some(module_id));
        let now = self.clock.now();
        let (module, previous, pending) = {
            let mut state = self.write();
            if state.devices.get(device_id).is_none_or(|d| d.module.is_some()) {
                return Err(HubError::DeviceNotFound(device_id.to_owned()));
            }
            let previous = state.devices.get(&key).cloned();
            let module = match (&previous, if_match) {
                (None, None) => {
                    let count = state.module_keys(device_id).len();
                    if count >= limits::MAX_MODULES_PER_DEVICE {
                        return Err(HubError::TooManyModules(format!(
                            "Device {device_id} already has {count} modules; a device may have at most {}",
                            limits::MAX_MODULES_PER_DEVICE
                        )));
                    }
                    registry::create_module(device_id, module_id, spec, now, state.next_version)?
                }
                (None, Some(_)) => return Err(state.not_found(&key)),
                (Some(_), None) => {
                    return Err(HubError::ModuleAlreadyExists(device_id.to_owned(), module_id.to_owned()));
                }
                (Some(current), Some(condition)) => {
                    condition.check(&current.etag())?;
                    registry::update_module(current, spec, state.next_version)?
                }
            };
            state.take_version();
            let (module, pending) = self.store_device(&mut state, module);
            (module, previous, pending)
        };
        let created = previous.is_none();
        self.settle(pending, &key, previous, Some(&module)).await?;
        Ok((module, created))
    }

    /// A device's modules in id order: 404 DeviceNotFound without the device.
    pub fn list_modules(&self, device_id: &str) -> Result<Vec<Arc<Device>>, HubError> {
        let state = self.read();
        if state.devices.get(device_id).is_none_or(|d| d.module.is_some()) {
            return Err(HubError::DeviceNotFound(device_id.to_owned()));
        }
        Ok(state.module_keys(device_id).iter().filter_map(|key| state.devices.get(key).cloned()).collect())
    }

    /// Deletes a module with its twin and session, answering once the deletion is durable.
    pub async fn delete_module(
        &self,
        device_id: &str,
        module_id: &str,
        if_match: Option<&IfMatch>,
    ) -> Result<(), HubError> {
        let key = registry::identity_key(device_id, Some(module_id));
        let (previous, pending) = {
            let mut state = self.write();
            let current = state.lookup(&key)?;
            if let Some(condition) = if_match {
                condition.check(&current.etag())?;
            }
            let pending = self.store.submit(vec![Write::DeleteDevice { id: key.clone() }]);
            let previous = state.forget_identity(&key);
            (previous, pending)
        };
        self.settle(pending, &key, previous, None).await?;
        self.forget_history(&key);
        Ok(())
    }
}
