//! The hub: the one API the transports call. It owns the in-memory state, applies the domain rules, sends
//! every change to the store and answers only once the change is durable.
//!
//! Split by concern: this file holds the state and the registry; `presence` the live connections,
//! `twins`, `methods` and `telemetry` the device features.

mod bulk;
mod configurations;
mod edge;
mod faults;
mod jobs;
mod messages;
mod methods;
mod modules;
mod presence;
mod query;
mod telemetry;
mod twins;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use jiff::Timestamp;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use configurations::ConfigurationCounts;
pub use faults::ResetSummary;
pub use jobs::{JobSettings, JobSnapshot, MAX_JOBS_PAGE};
pub use messages::Delivery;
pub use presence::{Connected, ConnectionLease, PresenceChange, Subscriptions, ToDevice};
pub use query::{MAX_PAGE_SIZE, QueryItem, QueryPage};
pub use telemetry::{EventLog, MAX_READERS_PER_PARTITION, ReaderLease, ReaderRefused};

use crate::auth::{self, AuthFailure, Claim, Policies, Principal, Rights};
use crate::clock::SharedClock;
use crate::domain::configurations::Configuration;
use crate::domain::eventlog::{Event, LogSettings};
use crate::domain::methods::PendingCalls;
use crate::domain::registry::{self, Device, DeviceSpec, DeviceStatus, IfMatch, Liveness};
use crate::domain::throttle::{Operation, Throttle, Tier};
use crate::error::HubError;
use crate::store::{Loaded, Pending, Store, Write};

/// A device as it is now, with its connection facts: what device and twin documents show.
#[derive(Debug, Clone)]
pub struct DeviceSnapshot {
    pub device: Arc<Device>,
    pub liveness: Liveness,
}

/// Device counts for `GET /statistics/devices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryStatistics {
    pub total: usize,
    pub enabled: usize,
    pub disabled: usize,
}

/// One record a change replaced in memory (`written`; none for a deletion) and what it replaced (`previous`; none
/// for a creation), so a change the store could not save can be undone.
struct Change {
    key: String,
    previous: Option<Arc<Device>>,
    written: Option<Arc<Device>>,
}

struct State {
    /// Devices and their modules, by identity key (`registry::identity_key`): a device's modules follow it.
    devices: BTreeMap<String, Arc<Device>>,
    /// Next hub-wide change number for device identities (etags).
    next_version: u64,
    /// Devices with a live connection.
    connected: HashMap<String, presence::Presence>,
    next_connection: u64,
    /// Subscriptions of clean-session-0 clients, kept across reconnects (the Node SDK never re-subscribes).
    sessions: HashMap<String, Subscriptions>,
    /// Last activity of devices that are not connected now (kept in memory only).
    last_activity: HashMap<String, Timestamp>,
    /// Cloud-to-device queues and feedback.
    messages: messages::Messages,
    /// Configurations (automatic device management), by id.
    configurations: BTreeMap<String, Arc<Configuration>>,
}

impl State {
    fn take_version(&mut self) -> u64 {
        let v = self.next_version;
        self.next_version += 1;
        v
    }

    /// The identity filed under `key`, or the hub's not-found error for it.
    fn lookup(&self, key: &str) -> Result<&Arc<Device>, HubError> {
        self.devices.get(key).ok_or_else(|| self.not_found(key))
    }

    /// 404 for a key that names nothing: DeviceNotFound, or ModuleNotFound when only the module is missing.
    fn not_found(&self, key: &str) -> HubError {
        match registry::split_key(key) {
            (device_id, Some(module_id)) if self.devices.contains_key(device_id) => {
                HubError::ModuleNotFound(device_id.to_owned(), module_id.to_owned())
            }
            (device_id, _) => HubError::DeviceNotFound(device_id.to_owned()),
        }
    }

    /// The keys of a device's modules, in id order.
    fn module_keys(&self, device_id: &str) -> Vec<String> {
        self.devices.range(registry::keys_under(device_id)).map(|(key, _)| key.clone()).collect()
    }

    /// Removes a deleted identity from memory with its connection and session; returns its record.
    fn forget_identity(&mut self, key: &str) -> Option<Arc<Device>> {
        self.disconnect(key);
        self.sessions.remove(key);
        self.devices.remove(key)
    }

    /// Ends the device's connection, if any (deleted or disabled devices).
    fn disconnect(&mut self, device_id: &str) {
        if let Some(presence) = self.connected.remove(device_id) {
            presence.closed.cancel();
        }
    }
}

/// Puts back what a change the store could not save replaced at `key` (`previous`; none: the change created it),
/// unless a later change has replaced `written` since (`written` none: the change deleted it).
fn undo<T>(records: &mut BTreeMap<String, Arc<T>>, key: String, previous: Option<Arc<T>>, written: Option<&Arc<T>>) {
    let still_ours = match (records.get(&key), written) {
        (Some(current), Some(written)) => Arc::ptr_eq(current, written),
        (None, None) => true,
        _ => false,
    };
    if still_ours {
        match previous {
            Some(record) => records.insert(key, record),
            None => records.remove(&key),
        };
    }
}

/// The emulated hub.
pub struct Hub {
    host_name: String,
    policies: Policies,
    clock: SharedClock,
    store: Store,
    state: RwLock<State>,
    /// Woken whenever a device connects or changes its subscriptions (direct methods wait on it).
    presence_changed: Notify,
    pending_calls: PendingCalls,
    telemetry_feed: broadcast::Sender<Arc<Event>>,
    /// The Event Hubs-compatible log of device-to-cloud messages.
    events: EventLog,
    jobs: jobs::Jobs,
    /// Woken whenever feedback records wait for the service (AMQP feedback readers wait on it).
    feedback_changed: Notify,
    /// The hub's own tasks (job runners, retention, message expiry), stopped together by `close`.
    background: TaskTracker,
    stop: CancellationToken,
    /// The throttling profile, when one is on.
    throttle: Option<Throttle>,
    /// The AMQPS port the hub listens on, once bound: where the built-in endpoint's redirect points.
    amqp_port: std::sync::OnceLock<u16>,
    /// Faults a test put in force, and whether there are any (read without the lock on hot paths).
    faults: std::sync::Mutex<crate::domain::faults::FaultSet>,
    faults_on: std::sync::atomic::AtomicBool,
    faults_changed: Notify,
    /// Recent method calls and twin changes per identity, for tests and the dashboard.
    history: std::sync::Mutex<crate::domain::history::History>,
    /// When this hub started (the health endpoint's uptime).
    started_at: Timestamp,
    /// MQTT CONNECTs received, accepted or not (how hard devices knock: back-off shows here).
    connect_attempts: std::sync::atomic::AtomicU64,
    /// Device-to-cloud messages recorded since the start (the dashboard's messages per second).
    telemetry_count: std::sync::atomic::AtomicU64,
    /// Connections and disconnections as they happen (the dashboard's live connection states).
    presence_feed: broadcast::Sender<PresenceChange>,
    /// Twins waiting for the configurations to be applied to them, and the wake-up of the task that does it.
    configuration_marked: std::sync::Mutex<configurations::Marked>,
    configurations_changed: Notify,
}

impl Hub {
    /// A hub named `host_name` over `store`, starting from what the store loaded.
    pub fn new(host_name: String, policies: Policies, clock: SharedClock, store: Store, loaded: Loaded) -> Self {
        let next_version = loaded.devices.iter().map(|d| d.identity_version).max().unwrap_or(0) + 1;
        let jobs = jobs::Jobs::new(loaded.jobs, loaded.device_jobs);
        let devices: BTreeMap<String, Arc<Device>> =
            loaded.devices.into_iter().map(|d| (d.key().into_owned(), Arc::new(d))).collect();
        let messages = loaded.messages.into_iter().filter(|(id, _)| devices.contains_key(id)).collect();
        let sessions = loaded.sessions.into_iter().filter(|(id, _)| devices.contains_key(id)).collect();
        let started_at = clock.now();
        let events =
            EventLog::new(LogSettings::default(), loaded.event_hub, loaded.events, &loaded.continuations, clock.now());
        Self {
            host_name,
            policies,
            clock,
            store,
            state: RwLock::new(State {
                devices,
                next_version,
                connected: HashMap::new(),
                next_connection: 1,
                sessions,
                last_activity: HashMap::new(),
                messages: messages::Messages::new(messages, loaded.feedback),
                configurations: loaded.configurations.into_iter().map(|c| (c.id.clone(), Arc::new(c))).collect(),
            }),
            presence_changed: Notify::new(),
            pending_calls: PendingCalls::default(),
            telemetry_feed: broadcast::channel(telemetry::FEED_CAPACITY).0,
            events,
            jobs,
            feedback_changed: Notify::new(),
            background: TaskTracker::new(),
            stop: CancellationToken::new(),
            throttle: None,
            amqp_port: std::sync::OnceLock::new(),
            faults: std::sync::Mutex::default(),
            faults_on: std::sync::atomic::AtomicBool::new(false),
            faults_changed: Notify::new(),
            history: std::sync::Mutex::default(),
            started_at,
            connect_attempts: std::sync::atomic::AtomicU64::new(0),
            telemetry_count: std::sync::atomic::AtomicU64::new(0),
            presence_feed: broadcast::channel(presence::FEED_CAPACITY).0,
            configuration_marked: std::sync::Mutex::default(),
            configurations_changed: Notify::new(),
        }
    }

    /// Records the AMQPS port once it is bound.
    pub fn set_amqp_port(&self, port: u16) {
        let _ = self.amqp_port.set(port);
    }

    /// The AMQPS port (5671 until one is bound).
    pub fn amqp_port(&self) -> u16 {
        self.amqp_port.get().copied().unwrap_or(crate::config::DEFAULT_AMQP_PORT)
    }

    /// Starts the hub's own work: resumes the jobs the store loaded, and sweeps for finished job retention and
    /// for message expiries and locks that ran out.
    pub fn start(self: &Arc<Self>) {
        self.start_jobs();
        self.background.spawn(Arc::clone(self).run_configurations());
        self.background.spawn(Arc::clone(self).run_event_retention());
        let hub = Arc::clone(self);
        let stop = self.stop.clone();
        self.background.spawn(async move {
            loop {
                let pending = hub.sweep_messages();
                if let Err(error) = pending.durable().await {
                    tracing::error!(%error, "expired messages could not be saved");
                }
                let next = hub.clock.now().checked_add(messages::SWEEP).unwrap_or(Timestamp::MAX);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = hub.clock.sleep_until(next) => {}
                }
            }
        });
    }

    /// The same hub with the real hub's operation rates for one unit of `tier` (`--throttle`).
    pub fn with_throttle(mut self, tier: Option<Tier>) -> Self {
        self.throttle = tier.map(Throttle::new);
        self
    }

    /// The tier whose rates are applied, if any.
    pub fn throttle_tier(&self) -> Option<Tier> {
        self.throttle.as_ref().map(Throttle::tier)
    }

    /// Lets one operation of `cost` units through the throttling profile, or refuses it with 429
    /// ThrottlingException, as the hub does past its rates. Always admits when no profile is on.
    pub fn admit(&self, operation: Operation, cost: f64) -> Result<(), HubError> {
        let Some(throttle) = &self.throttle else { return Ok(()) };
        throttle.try_take(operation, cost, self.clock.now()).map_err(|wait| {
            HubError::Throttled(format!(
                "The hub's {} rate for one {:?} unit is exceeded; retry in {} ms",
                operation.name(),
                throttle.tier(),
                wait.as_millis().max(1)
            ))
        })
    }

    /// Waits until one operation is let through the throttling profile: device-to-cloud messages and jobs'
    /// device operations are slowed down, not refused.
    pub async fn admit_wait(&self, operation: Operation, cost: f64) {
        let Some(throttle) = &self.throttle else { return };
        while let Err(wait) = throttle.try_take(operation, cost, self.clock.now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// The same hub with other job settings (limits, retention, fan-out window).
    pub fn with_job_settings(mut self, settings: JobSettings) -> Self {
        self.jobs.set_settings(settings);
        self
    }

    /// The hub's host name, as in connection strings and token resources.
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// The hub's name, the first label of its host name: the `EntityPath` of the built-in Event Hubs-compatible
    /// endpoint and the `user-id` of feedback messages.
    pub fn event_hub_name(&self) -> &str {
        self.host_name.split('.').next().unwrap_or(&self.host_name)
    }

    /// The shared access policies.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// When this hub started.
    pub fn started_at(&self) -> Timestamp {
        self.started_at
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

    /// Checks the `Authorization` of an emulator-only control (`/emulator/...`, the dashboard): a policy token
    /// with every permission, as the hub's owner policy has.
    pub fn authorize_owner(&self, token: Option<&str>, path: &str) -> Result<Principal, HubError> {
        let principal = self.authorize_service(token, path, Rights::all())?;
        match &principal {
            Principal::Policy { rights, .. } if rights.contains(Rights::all()) => Ok(principal),
            _ => {
                tracing::debug!(path, "emulator control refused: the policy lacks some permission");
                Err(HubError::Unauthorized)
            }
        }
    }

    /// Checks a token a client puts on an AMQP connection for `audience` (claims-based security): a policy's, or
    /// a device's or module's own (signed with its key, for `<host>/devices/<id>[/modules/<mid>]`). A module's
    /// device must be enabled too. Failures are logged with their reason and all become the same 401.
    pub fn verify_claim(&self, token: &str, audience: &str) -> Result<Claim, HubError> {
        let now = self.clock.unix_seconds();
        let result = match iothub_proto::SasToken::parse(token) {
            Ok(parsed) if parsed.key_name.is_none() => {
                match auth::identity_of_resource(&self.host_name, &parsed.resource) {
                    Some(key) => match self.get_device(&key) {
                        Ok(identity) if identity.module.is_some() && self.parent_disabled(&identity) => {
                            Err(AuthFailure::DeviceDisabled)
                        }
                        Ok(identity) => auth::verify_identity_claim(&self.host_name, token, audience, &identity, now),
                        Err(_) => Err(AuthFailure::WrongScope(format!("no identity {key}"))),
                    },
                    None => Err(AuthFailure::WrongScope(parsed.resource.clone())),
                }
            }
            _ => auth::verify_claim(&self.policies, &self.host_name, token, audience, now),
        };
        result.map_err(|failure| {
            tracing::debug!(%failure, audience, "token refused");
            HubError::Unauthorized
        })
    }

    /// Whether identity `key` may have a connection now: it exists (`DeviceNotFound`/`ModuleNotFound`) and it
    /// and, for a module, its device are enabled (`DeviceDisabled`). For links a gateway's policy token opens.
    pub fn may_connect(&self, key: &str) -> Result<(), HubError> {
        let identity = self.get_device(key)?;
        if identity.status == DeviceStatus::Disabled || (identity.module.is_some() && self.parent_disabled(&identity)) {
            return Err(HubError::DeviceDisabled(identity.device_id.clone()));
        }
        Ok(())
    }

    /// True when `module`'s device is disabled (a module connects only while its device is enabled).
    fn parent_disabled(&self, module: &Device) -> bool {
        self.get_device(&module.device_id).is_ok_and(|parent| parent.status == DeviceStatus::Disabled)
    }

    /// Checks a device's or module's connection credentials (MQTT CONNECT password); `key` is the identity key
    /// (the MQTT client id: `<deviceId>` or `<deviceId>/<moduleId>`).
    pub fn authorize_device(&self, key: &str, token: &str) -> Result<Arc<Device>, HubError> {
        let device = self.get_device(key).map_err(|_| {
            tracing::debug!(identity = key, "connection refused: unknown device or module");
            HubError::Unauthorized
        })?;
        auth::authorize_device(&self.policies, &self.host_name, token, &device, self.clock.unix_seconds()).map_err(
            |failure| {
                tracing::debug!(%failure, identity = key, "connection refused");
                HubError::Unauthorized
            },
        )?;
        // A module connects only while its device is enabled.
        if device.module.is_some()
            && self.get_device(&device.device_id).is_ok_and(|parent| parent.status == DeviceStatus::Disabled)
        {
            tracing::debug!(identity = key, "connection refused: the module's device is disabled");
            return Err(HubError::Unauthorized);
        }
        Ok(device)
    }

    /// One device, or one module by its identity key.
    pub fn get_device(&self, key: &str) -> Result<Arc<Device>, HubError> {
        self.read().lookup(key).cloned()
    }

    /// Up to `limit` devices (not modules) in id order, starting after `after` when given.
    pub fn list_devices(&self, after: Option<&str>, limit: usize) -> Vec<Arc<Device>> {
        let state = self.read();
        let lower = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        let devices = state.devices.range((lower, Bound::Unbounded)).map(|(_, d)| d).filter(|d| d.module.is_none());
        devices.take(limit).cloned().collect()
    }

    /// Creates a device (no `If-Match`) or updates one (`If-Match` given), answering once it is durable.
    /// An `If-Match` for a device that does not exist is 404 DeviceNotFound (wire-spec H.18); a create for one
    /// that does is 409 DeviceAlreadyExists. Disabling a device ends its connection (wire-spec H.20).
    pub async fn put_device(
        &self,
        id: &str,
        spec: &DeviceSpec,
        if_match: Option<&IfMatch>,
    ) -> Result<Arc<Device>, HubError> {
        // An id that can never exist is a 400 whatever else the request says.
        registry::validate_device_id(id)?;
        let now = self.clock.now();
        let (device, changes, pending) = {
            let mut state = self.write();
            let previous = state.devices.get(id).cloned();
            let mut device = match (&previous, if_match) {
                (None, None) => registry::create_device(id, spec, now, state.next_version)?,
                (None, Some(_)) => return Err(HubError::DeviceNotFound(id.to_owned())),
                (Some(_), None) => return Err(HubError::DeviceAlreadyExists(id.to_owned())),
                (Some(current), Some(condition)) => {
                    condition.check(&current.etag())?;
                    registry::update_device(current, spec, now, state.next_version)?
                }
            };
            state.place_in_hierarchy(&mut device)?;
            state.take_version();
            // An Edge device that stops being one leaves its children without a parent.
            let lost_scope =
                previous.as_ref().filter(|p| p.iot_edge && !device.iot_edge).and_then(|p| p.device_scope.clone());
            let mut dependents = lost_scope.map(|scope| state.orphans_of(&scope)).unwrap_or_default();
            if device.iot_edge {
                dependents.extend(state.missing_system_modules(id, now)?);
            }
            if device.status == DeviceStatus::Disabled {
                for key in std::iter::once(id.to_owned()).chain(state.module_keys(id)) {
                    state.disconnect(&key);
                }
            }
            self.store_with_dependents(&mut state, device, previous, dependents)
        };
        self.settle_all(pending, changes).await?;
        Ok(device)
    }

    /// Puts `dependents` (records a change touches beside the one it names) in memory, adds their writes to
    /// `writes`, marks them for the configurations as every twin write is, and says what each replaced.
    fn put_dependents(
        &self,
        state: &mut State,
        dependents: Vec<edge::Dependent>,
        writes: &mut Vec<Write>,
    ) -> Vec<Change> {
        let mut changes = Vec::with_capacity(1 + dependents.len());
        for dependent in dependents {
            let written = Arc::new(dependent.written);
            writes.push(Write::put_device(&written));
            let key = written.key().into_owned();
            state.devices.insert(key.clone(), Arc::clone(&written));
            self.mark_for_configurations(state, &key);
            changes.push(Change { key, previous: dependent.previous, written: Some(written) });
        }
        changes
    }

    /// Stores `device` and its dependents (records the same change touches: orphaned children, system modules) in
    /// one transaction, and says what each replaced, for [`Hub::settle_all`].
    fn store_with_dependents(
        &self,
        state: &mut State,
        device: Device,
        previous: Option<Arc<Device>>,
        dependents: Vec<edge::Dependent>,
    ) -> (Arc<Device>, Vec<Change>, Pending) {
        let mut also = Vec::with_capacity(dependents.len());
        let mut changes = self.put_dependents(state, dependents, &mut also);
        let (device, pending) = self.store_device_with(state, device, also);
        changes.insert(0, Change { key: device.key().into_owned(), previous, written: Some(Arc::clone(&device)) });
        (device, changes, pending)
    }

    /// Replaces the device record in memory and queues it for the store (call with the state lock held, so
    /// the store sees changes in the order memory does).
    fn store_device(&self, state: &mut State, device: Device) -> (Arc<Device>, Pending) {
        self.store_device_with(state, device, Vec::new())
    }

    /// `store_device`, with `also` committed in the same transaction.
    fn store_device_with(&self, state: &mut State, device: Device, also: Vec<Write>) -> (Arc<Device>, Pending) {
        let device = Arc::new(device);
        let mut writes = Vec::with_capacity(1 + also.len());
        writes.push(Write::put_device(&device));
        writes.extend(also);
        let pending = self.store.submit(writes);
        state.devices.insert(device.key().into_owned(), device.clone());
        self.mark_for_configurations(state, &device.key());
        (device, pending)
    }

    /// Deletes a device with its twin, its modules (their twins and sessions) and its queued messages,
    /// answering once the deletion is durable.
    pub async fn delete_device(&self, id: &str, if_match: Option<&IfMatch>) -> Result<(), HubError> {
        registry::validate_device_id(id).map_err(|_| HubError::DeviceNotFound(id.to_owned()))?;
        let (changes, modules, pending) = {
            let mut state = self.write();
            let current = Arc::clone(state.lookup(id)?);
            if let Some(condition) = if_match {
                condition.check(&current.etag())?;
            }
            let module_keys = state.module_keys(id);
            // An Edge device's children are left without a parent, in the same transaction.
            let scope = current.iot_edge.then(|| current.device_scope.clone()).flatten();
            let orphans = scope.map(|scope| state.orphans_of(&scope)).unwrap_or_default();
            let mut writes: Vec<Write> = std::iter::once(id.to_owned())
                .chain(module_keys.iter().cloned())
                .map(|key| Write::DeleteDevice { id: key })
                .collect();
            let mut changes = self.put_dependents(&mut state, orphans, &mut writes);
            let pending = self.store.submit(writes);
            let previous = state.forget_identity(id);
            changes.insert(0, Change { key: id.to_owned(), previous, written: None });
            let modules: Vec<_> = module_keys.iter().filter_map(|key| state.forget_identity(key)).collect();
            state.messages.queues.remove(id);
            (changes, modules, pending)
        };
        let result = self.settle_all(pending, changes).await;
        if result.is_ok() {
            self.forget_history(id);
            for module in &modules {
                self.forget_history(&module.key());
            }
        } else {
            // Not saved: the modules come back with their device.
            let mut state = self.write();
            for module in modules {
                state.devices.entry(module.key().into_owned()).or_insert(module);
            }
        }
        result
    }

    /// Waits for a change to be durable. If it cannot be saved, the in-memory change is undone (unless a
    /// later change has replaced it) and the caller gets a server error, so memory does not run ahead of disk.
    async fn settle(
        &self,
        pending: Pending,
        id: &str,
        previous: Option<Arc<Device>>,
        written: Option<&Arc<Device>>,
    ) -> Result<(), HubError> {
        let change = Change { key: id.to_owned(), previous, written: written.cloned() };
        self.settle_all(pending, vec![change]).await
    }

    /// [`Hub::settle`] for a change of several records committed together: undone record by record.
    async fn settle_all(&self, pending: Pending, changes: Vec<Change>) -> Result<(), HubError> {
        let Err(error) = pending.durable().await else { return Ok(()) };
        let mut state = self.write();
        for Change { key, previous, written } in changes {
            undo(&mut state.devices, key, previous, written.as_ref());
        }
        Err(HubError::ServerError(format!("The change could not be saved: {error}")))
    }

    /// Device counts (modules are not devices).
    pub fn registry_statistics(&self) -> RegistryStatistics {
        let state = self.read();
        let (mut total, mut enabled) = (0, 0);
        for device in state.devices.values().filter(|d| d.module.is_none()) {
            total += 1;
            enabled += usize::from(device.status == DeviceStatus::Enabled);
        }
        RegistryStatistics { total, enabled, disabled: total - enabled }
    }

    /// Connection facts of a device, for the device and twin documents.
    pub fn liveness(&self, id: &str) -> Liveness {
        Self::liveness_in(&self.read(), id)
    }

    fn liveness_in(state: &State, id: &str) -> Liveness {
        let queued_messages = state.messages.count(id);
        match state.connected.get(id) {
            Some(presence) => Liveness {
                connected_since: Some(presence.since),
                last_activity: Some(presence.last_activity()),
                queued_messages,
            },
            None => {
                Liveness { connected_since: None, last_activity: state.last_activity.get(id).copied(), queued_messages }
            }
        }
    }

    /// Waits until every change submitted so far is durable (the store commits in order).
    pub async fn sync(&self) -> Result<(), HubError> {
        self.store.submit(Vec::new()).durable().await.map_err(|e| HubError::ServerError(e.to_string()))
    }

    /// Stops the hub's own tasks (in-flight job device calls are abandoned), waits for every submitted change to
    /// be durable and stops the store.
    pub async fn close(&self) {
        self.stop.cancel();
        self.background.close();
        self.background.wait().await;
        self.store.close().await;
    }
}
