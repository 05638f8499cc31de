//! The hub: the one API the transports call. It owns the in-memory state, applies the domain rules, sends
//! every change to the store and answers only once the change is durable.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use jiff::Timestamp;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, AuthFailure, Policies, Principal, Rights};
use crate::clock::SharedClock;
use crate::domain::registry::{self, Device, DeviceSpec, DeviceStatus, IfMatch};
use crate::domain::twin;
use crate::error::HubError;
use crate::store::{Loaded, Pending, Store, Write};

/// Device counts for `GET /statistics/devices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryStatistics {
    pub total: usize,
    pub enabled: usize,
    pub disabled: usize,
}

struct State {
    devices: BTreeMap<String, Arc<Device>>,
    /// Next hub-wide change number for device identities (etags).
    next_version: u64,
    /// Devices with a live MQTT connection.
    connected: HashMap<String, Presence>,
    next_connection: u64,
}

/// A device's live connection.
struct Presence {
    connection: u64,
    since: Timestamp,
    closed: CancellationToken,
}

/// Handed to a transport when a device connects: its connection number, and a token the hub cancels when
/// the connection must end (a newer connection for the device, the device deleted or disabled).
#[derive(Debug, Clone)]
pub struct ConnectionLease {
    pub id: u64,
    pub closed: CancellationToken,
}

impl State {
    fn take_version(&mut self) -> u64 {
        let v = self.next_version;
        self.next_version += 1;
        v
    }
}

/// The emulated hub.
pub struct Hub {
    host_name: String,
    policies: Policies,
    clock: SharedClock,
    store: Store,
    state: RwLock<State>,
}

impl Hub {
    /// A hub named `host_name` over `store`, starting from what the store loaded.
    pub fn new(host_name: String, policies: Policies, clock: SharedClock, store: Store, loaded: Loaded) -> Self {
        let next_version = loaded.devices.iter().map(|d| d.identity_version).max().unwrap_or(0) + 1;
        let devices = loaded.devices.into_iter().map(|d| (d.device_id.clone(), Arc::new(d))).collect();
        Self {
            host_name,
            policies,
            clock,
            store,
            state: RwLock::new(State { devices, next_version, connected: HashMap::new(), next_connection: 1 }),
        }
    }

    /// The hub's host name, as in connection strings and token resources.
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// The shared access policies.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The hub's clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the `Authorization` header of a service call on `path` (e.g. `devices/d1`) that needs any of
    /// `needed`. Failures are logged with their reason and all become the same 401.
    pub fn authorize_service(&self, token: Option<&str>, path: &str, needed: Rights) -> Result<Principal, HubError> {
        let target = format!("{}/{}", self.host_name, path.trim_start_matches('/'));
        let result = match token {
            None => Err(AuthFailure::Missing),
            Some(token) => auth::authorize_service(&self.policies, token, &target, needed, self.clock.unix_seconds()),
        };
        result.map_err(|failure| {
            tracing::debug!(%failure, %target, "service request refused");
            HubError::Unauthorized
        })
    }

    /// Checks a device's connection credentials (MQTT CONNECT password).
    pub fn authorize_device(&self, device_id: &str, token: &str) -> Result<Arc<Device>, HubError> {
        let device = self.get_device(device_id).map_err(|_| {
            tracing::debug!(device_id, "connection refused: unknown device");
            HubError::Unauthorized
        })?;
        auth::authorize_device(&self.policies, &self.host_name, token, &device, self.clock.unix_seconds()).map_err(
            |failure| {
                tracing::debug!(%failure, device_id, "connection refused");
                HubError::Unauthorized
            },
        )?;
        Ok(device)
    }

    /// One device.
    pub fn get_device(&self, id: &str) -> Result<Arc<Device>, HubError> {
        self.read().devices.get(id).cloned().ok_or_else(|| HubError::DeviceNotFound(id.to_owned()))
    }

    /// Up to `limit` devices in id order, starting after `after` when given.
    pub fn list_devices(&self, after: Option<&str>, limit: usize) -> Vec<Arc<Device>> {
        let state = self.read();
        let lower = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        state.devices.range((lower, Bound::Unbounded)).take(limit).map(|(_, d)| d.clone()).collect()
    }

    /// True when the device has a live connection.
    pub fn is_connected(&self, id: &str) -> bool {
        self.read().connected.contains_key(id)
    }

    /// Since when the device has been connected, if it is.
    pub fn connected_since(&self, id: &str) -> Option<Timestamp> {
        self.read().connected.get(id).map(|p| p.since)
    }

    /// Records a new connection of `device_id`. An older connection of the same device is told to close, as the
    /// hub allows one connection per identity.
    pub fn device_connected(&self, device_id: &str) -> ConnectionLease {
        let now = self.clock.now();
        let mut state = self.write();
        let id = state.next_connection;
        state.next_connection += 1;
        let closed = CancellationToken::new();
        let presence = Presence { connection: id, since: now, closed: closed.clone() };
        if let Some(older) = state.connected.insert(device_id.to_owned(), presence) {
            tracing::info!(device_id, "a new connection replaces the older one");
            older.closed.cancel();
        }
        ConnectionLease { id, closed }
    }

    /// Records the end of connection `connection` of `device_id` (ignored if a newer one replaced it).
    pub fn device_disconnected(&self, device_id: &str, connection: u64) {
        let mut state = self.write();
        if state.connected.get(device_id).is_some_and(|p| p.connection == connection) {
            state.connected.remove(device_id);
        }
    }

    /// Creates a device (no `If-Match`) or updates one (`If-Match` given), answering once it is durable.
    /// An `If-Match` for a device that does not exist is 404 DeviceNotFound (wire-spec H.18); a create for one
    /// that does is 409 DeviceAlreadyExists.
    pub async fn put_device(
        &self,
        id: &str,
        spec: &DeviceSpec,
        if_match: Option<&IfMatch>,
    ) -> Result<Arc<Device>, HubError> {
        let now = self.clock.now();
        let (device, previous, pending) = {
            let mut state = self.write();
            let previous = state.devices.get(id).cloned();
            let device = match (&previous, if_match) {
                (None, None) => registry::create_device(id, spec, now, state.next_version)?,
                (None, Some(_)) => return Err(HubError::DeviceNotFound(id.to_owned())),
                (Some(_), None) => return Err(HubError::DeviceAlreadyExists(id.to_owned())),
                (Some(current), Some(condition)) => {
                    condition.check(&current.etag())?;
                    registry::update_device(current, spec, now, state.next_version)?
                }
            };
            state.take_version();
            if device.status == DeviceStatus::Disabled
                && let Some(presence) = state.connected.remove(id)
            {
                presence.closed.cancel();
            }
            let device = Arc::new(device);
            let pending = self.store.submit(vec![Write::put_device(&device)]);
            state.devices.insert(id.to_owned(), device.clone());
            (device, previous, pending)
        };
        self.settle(pending, id, previous, Some(device.identity_version)).await?;
        Ok(device)
    }

    /// Deletes a device (and its twin), answering once the deletion is durable.
    pub async fn delete_device(&self, id: &str, if_match: Option<&IfMatch>) -> Result<(), HubError> {
        let (previous, pending) = {
            let mut state = self.write();
            let current = state.devices.get(id).ok_or_else(|| HubError::DeviceNotFound(id.to_owned()))?;
            if let Some(condition) = if_match {
                condition.check(&current.etag())?;
            }
            let pending = self.store.submit(vec![Write::DeleteDevice { id: id.to_owned() }]);
            let previous = state.devices.remove(id);
            if let Some(presence) = state.connected.remove(id) {
                presence.closed.cancel();
            }
            (previous, pending)
        };
        self.settle(pending, id, previous, None).await
    }

    /// Waits for a change to be durable. If it cannot be saved, the in-memory change is undone (unless a
    /// later change has replaced it) and the caller gets a server error: memory never runs ahead of the disk.
    async fn settle(
        &self,
        pending: Pending,
        id: &str,
        previous: Option<Arc<Device>>,
        written_version: Option<u64>,
    ) -> Result<(), HubError> {
        let Err(error) = pending.durable().await else { return Ok(()) };
        let mut state = self.write();
        let still_ours = state.devices.get(id).map(|d| d.identity_version) == written_version;
        if still_ours {
            match previous {
                Some(device) => state.devices.insert(id.to_owned(), device),
                None => state.devices.remove(id),
            };
        }
        Err(HubError::ServerError(format!("The change could not be saved: {error}")))
    }

    /// Device counts.
    pub fn registry_statistics(&self) -> RegistryStatistics {
        let state = self.read();
        let enabled = state.devices.values().filter(|d| d.status == DeviceStatus::Enabled).count();
        RegistryStatistics { total: state.devices.len(), enabled, disabled: state.devices.len() - enabled }
    }

    /// How many devices are connected now.
    pub fn connected_device_count(&self) -> usize {
        self.read().connected.len()
    }

    /// The full twin document of a device.
    pub fn twin_document(&self, id: &str) -> Result<Value, HubError> {
        let state = self.read();
        let device = state.devices.get(id).ok_or_else(|| HubError::DeviceNotFound(id.to_owned()))?;
        Ok(twin::twin_document(device, state.connected.contains_key(id)))
    }

    /// Waits for every submitted change to be durable and stops the store.
    pub async fn close(&self) {
        self.store.close().await;
    }
}
