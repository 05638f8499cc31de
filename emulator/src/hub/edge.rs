//! IoT Edge hierarchies in the registry (facts and sources: docs/research/edge-scopes.md): an Edge device's own
//! scope, the parent a device names by scope (a leaf by `deviceScope`, an Edge device by `parentScopes`), the
//! limit of Edge layers, the devices left without a parent when theirs is deleted or stops being an Edge device,
//! and the system modules (`$edgeAgent`, `$edgeHub`) every Edge device gets.
//!
//! Children are found by a scan of the registry: only writes that move or remove an Edge device pay for it.

use std::sync::Arc;

use jiff::Timestamp;

use super::State;
use crate::domain::registry::{self, Credentials, Device, DeviceSpec, MAX_EDGE_LAYERS};
use crate::error::HubError;

/// A record replaced (or added, `previous` none) beside the one a request names, in the same transaction.
pub(super) struct Dependent {
    pub previous: Option<Arc<Device>>,
    pub written: Device,
}

fn not_an_edge_scope(member: &str, scope: &str) -> HubError {
    HubError::ArgumentInvalid(format!("{member} '{scope}' is not the scope of an IoT Edge device in this hub"))
}

impl State {
    /// The Edge device that owns `scope`.
    fn scope_owner(&self, scope: &str) -> Option<&Arc<Device>> {
        let id = registry::scope_device_id(scope)?;
        self.devices.get(id).filter(|d| d.module.is_none() && d.iot_edge && d.device_scope.as_deref() == Some(scope))
    }

    /// The devices whose parent owns `scope`: leaf children and nested Edge devices.
    fn children_of(&self, scope: &str) -> Vec<Arc<Device>> {
        let children =
            self.devices.values().filter(|d| d.module.is_none() && d.parent_scopes.iter().any(|p| p == scope));
        children.cloned().collect()
    }

    /// The Edge parent of `device`, if it names one that exists.
    fn parent_of(&self, device: &Device) -> Option<&Arc<Device>> {
        device.parent_scopes.first().and_then(|scope| self.scope_owner(scope))
    }

    /// The Edge layers below the Edge device that owns `scope`, itself included (1 with no Edge children).
    fn layers_down(&self, scope: &str, limit: usize) -> usize {
        if limit == 0 {
            return 1;
        }
        let edge_children = self.children_of(scope);
        let below = edge_children.iter().filter(|c| c.iot_edge).filter_map(|c| c.device_scope.as_deref());
        1 + below.map(|s| self.layers_down(s, limit - 1)).max().unwrap_or(0)
    }

    /// Puts `device`, as a create or update request left it, in its place in the hierarchy. An Edge device gets
    /// its own scope and keeps at most one Edge parent from `parentScopes`; a leaf's `deviceScope` must be an
    /// Edge device's scope, copied into `parentScopes`, and an empty one means no parent. Refused (400) for a
    /// scope no Edge device owns, a cycle, or more than [`MAX_EDGE_LAYERS`] layers of Edge devices.
    pub(super) fn place_in_hierarchy(&self, device: &mut Device) -> Result<(), HubError> {
        if !device.iot_edge {
            let scope = device.device_scope.take().filter(|s| !s.is_empty());
            device.parent_scopes = match scope {
                Some(scope) => {
                    if self.scope_owner(&scope).is_none() {
                        return Err(not_an_edge_scope("deviceScope", &scope));
                    }
                    device.device_scope = Some(scope.clone());
                    vec![scope]
                }
                None => Vec::new(),
            };
            return Ok(());
        }
        let own = registry::edge_scope(&device.device_id, &device.generation_id);
        device.device_scope = Some(own.clone());
        device.parent_scopes.retain(|s| !s.is_empty());
        let parent = match device.parent_scopes.as_slice() {
            [] => return Ok(()),
            [scope] => self.scope_owner(scope).ok_or_else(|| not_an_edge_scope("parentScopes", scope))?,
            many => {
                return Err(HubError::ArgumentInvalid(format!(
                    "An IoT Edge device has one parent at most; parentScopes lists {}",
                    many.len()
                )));
            }
        };
        let mut ancestors = 1;
        let mut ancestor = Some(parent);
        while let Some(above) = ancestor {
            if above.device_id == device.device_id {
                return Err(HubError::ArgumentInvalid(format!(
                    "{} cannot be the parent of one of its own ancestors",
                    device.device_id
                )));
            }
            ancestor = self.parent_of(above);
            ancestors += 1;
            if ancestors > MAX_EDGE_LAYERS + 1 {
                break;
            }
        }
        let layers = (ancestors - 1) + self.layers_down(&own, MAX_EDGE_LAYERS);
        if layers > MAX_EDGE_LAYERS {
            return Err(HubError::ArgumentInvalid(format!(
                "This parent would make {layers} layers of IoT Edge devices; a hierarchy has {MAX_EDGE_LAYERS} at most"
            )));
        }
        Ok(())
    }

    /// The devices left without a parent when the Edge device that owned `scope` is gone (deleted, or no longer
    /// an Edge device): a leaf loses its `deviceScope`, a nested Edge device its `parentScopes`. Each takes a new
    /// change number.
    pub(super) fn orphans_of(&mut self, scope: &str) -> Vec<Dependent> {
        let children = self.children_of(scope);
        children
            .into_iter()
            .map(|child| {
                let mut orphan = (*child).clone();
                orphan.parent_scopes.clear();
                if !orphan.iot_edge {
                    orphan.device_scope = None;
                }
                orphan.identity_version = self.take_version();
                Dependent { previous: Some(child), written: orphan }
            })
            .collect()
    }

    /// The system modules Edge device `device_id` lacks, made as the hub makes them: managed by `IotEdge`, and
    /// without credentials until IoT Edge's agent sets them.
    pub(super) fn missing_system_modules(
        &mut self,
        device_id: &str,
        now: Timestamp,
    ) -> Result<Vec<Dependent>, HubError> {
        let spec = DeviceSpec {
            managed_by: Some(registry::EDGE_MANAGED_BY.to_owned()),
            credentials: Credentials::None,
            ..DeviceSpec::default()
        };
        let mut made = Vec::new();
        for module_id in registry::EDGE_SYSTEM_MODULES {
            if self.devices.contains_key(&registry::identity_key(device_id, Some(module_id))) {
                continue;
            }
            let version = self.take_version();
            let written = registry::create_module(device_id, module_id, &spec, now, version)?;
            made.push(Dependent { previous: None, written });
        }
        Ok(made)
    }
}
