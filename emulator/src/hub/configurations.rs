//! Automatic device management: configurations kept and served (`/configurations`), applied in the background
//! to the twins they target, and their metrics counted when read.
//!
//! Application follows the twins: every twin write marks its twin for a look (only while configurations exist),
//! and every configuration change marks them all. One background task takes the marked twins and, per twin under
//! the state lock, works out which configuration owns each desired path (`domain::configurations::plan`) and
//! writes the difference with the twin's `configurations` marks, as one durable record. The hub runs this
//! within moments of a change; the real hub takes up to five minutes, so clients already poll for it.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Map;

use super::{Change, Hub, State};
use crate::domain::configurations::{
    self, Configuration, ConfigurationSpec, Content, Contribution, Kind, MAX_CONFIGURATIONS, Selects,
};
use crate::domain::history::{TwinChangeRecord, TwinSection};
use crate::domain::query::eval::matches;
use crate::domain::query::twin_doc::{LivenessSource, TwinView};
use crate::domain::registry::{self, Device, DeviceSpec, IfMatch};
use crate::domain::twin::json::object_from_json;
use crate::domain::twin::{TwinWrite, WriteMode};
use crate::error::HubError;
use crate::store::{Pending, Write};

/// Twins waiting for a look: some, or all (after a configuration changed); and whether a pass is under way.
#[derive(Debug, Default)]
pub(super) struct Marked {
    all: bool,
    keys: HashSet<String>,
    busy: bool,
}

impl Marked {
    /// Takes the marks for a pass, which is under way until [`Marked::done`].
    fn take(&mut self) -> (bool, HashSet<String>) {
        self.busy = true;
        (std::mem::take(&mut self.all), std::mem::take(&mut self.keys))
    }

    fn done(&mut self) {
        self.busy = false;
    }
}

/// Twins looked at between yields to the runtime and waits for durability.
const RECONCILE_CHUNK: usize = 256;

/// A configuration's counts: the system metrics' (name, query, rows) and the custom ones' (name, rows), in the
/// order they are shown; a count of `None` is not evaluated yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigurationCounts {
    pub system: Vec<(String, String, Option<u64>)>,
    pub custom: Vec<(String, Option<u64>)>,
}

impl ConfigurationCounts {
    /// The metric names and system queries with nothing counted yet.
    pub fn uncounted(configuration: &Configuration) -> Self {
        let system = configuration
            .system_metric_queries()
            .into_iter()
            .map(|(name, text)| (name.to_owned(), text, None))
            .collect();
        let custom = configuration.metrics.iter().map(|metric| (metric.name.clone(), None)).collect();
        Self { system, custom }
    }
}

impl Hub {
    /// One configuration: 404 ConfigurationNotFound when there is none of that id.
    pub fn configuration(&self, id: &str) -> Result<Arc<Configuration>, HubError> {
        self.read().configurations.get(id).cloned().ok_or_else(|| HubError::ConfigurationNotFound(id.to_owned()))
    }

    /// Up to `top` configurations, oldest first (the order the hub lists them in).
    pub fn configurations(&self, top: usize) -> Vec<Arc<Configuration>> {
        let mut all: Vec<Arc<Configuration>> = self.read().configurations.values().cloned().collect();
        all.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        all.truncate(top);
        all
    }

    /// Creates a configuration (no `If-Match`) or updates one (`If-Match` given), answering once it is durable:
    /// 409 ConfigurationAlreadyExists for a create of an existing id, 404 ConfigurationNotFound for an update
    /// of a missing one, 412 for a stale etag, 413 past the hub's 100 configurations.
    pub async fn put_configuration(
        &self,
        id: &str,
        spec: ConfigurationSpec,
        if_match: Option<&IfMatch>,
    ) -> Result<Arc<Configuration>, HubError> {
        configurations::validate_id(id)?;
        let now = self.clock.now();
        let (configuration, previous, pending) = {
            let mut state = self.write();
            let previous = state.configurations.get(id).cloned();
            let configuration = match (&previous, if_match) {
                (None, None) => {
                    if state.configurations.len() >= MAX_CONFIGURATIONS {
                        return Err(HubError::ConfigurationCountLimitExceeded(format!(
                            "Number of deployments exceed the maximum quota {MAX_CONFIGURATIONS} for this IotHub."
                        )));
                    }
                    Configuration::create(id, spec, now)?
                }
                (None, Some(_)) => return Err(HubError::ConfigurationNotFound(id.to_owned())),
                (Some(_), None) => return Err(HubError::ConfigurationAlreadyExists(id.to_owned())),
                (Some(current), Some(condition)) => {
                    condition.check(&current.etag())?;
                    current.update(spec, now)?
                }
            };
            let configuration = Arc::new(configuration);
            let pending = self.store.submit(vec![Write::PutConfiguration(Arc::clone(&configuration))]);
            state.configurations.insert(id.to_owned(), Arc::clone(&configuration));
            (configuration, previous, pending)
        };
        self.settle_configuration(pending, id, previous, Some(&configuration)).await?;
        self.mark_all_for_configurations();
        Ok(configuration)
    }

    /// Deletes a configuration, answering once that is durable; the twins it applied to lose its content in the
    /// background (taken over by the next configuration that writes the same paths).
    pub async fn delete_configuration(&self, id: &str, if_match: Option<&IfMatch>) -> Result<(), HubError> {
        let (previous, pending) = {
            let mut state = self.write();
            let current = state.configurations.get(id).ok_or_else(|| HubError::ConfigurationNotFound(id.to_owned()))?;
            if let Some(condition) = if_match {
                condition.check(&current.etag())?;
            }
            let pending = self.store.submit(vec![Write::DeleteConfiguration { id: id.to_owned() }]);
            (state.configurations.remove(id), pending)
        };
        self.settle_configuration(pending, id, previous, None).await?;
        self.mark_all_for_configurations();
        Ok(())
    }

    /// Waits for a configuration change to be durable; undoes it in memory when it cannot be saved.
    async fn settle_configuration(
        &self,
        pending: Pending,
        id: &str,
        previous: Option<Arc<Configuration>>,
        written: Option<&Arc<Configuration>>,
    ) -> Result<(), HubError> {
        let Err(error) = pending.durable().await else { return Ok(()) };
        super::undo(&mut self.write().configurations, id.to_owned(), previous, written);
        Err(HubError::ServerError(format!("The change could not be saved: {error}")))
    }

    /// A configuration's metrics, counted now: each system and custom query's rows.
    pub fn configuration_counts(&self, configuration: &Configuration) -> ConfigurationCounts {
        let system = configuration
            .system_metric_queries()
            .into_iter()
            .map(|(name, text)| {
                let count = configurations::check_query(&text).map_or(0, |query| self.query_row_count(&query));
                (name.to_owned(), text, Some(count))
            })
            .collect();
        let custom = configuration
            .metrics
            .iter()
            .map(|metric| (metric.name.clone(), Some(metric.query.as_deref().map_or(0, |q| self.query_row_count(q)))))
            .collect();
        ConfigurationCounts { system, custom }
    }

    /// `POST /devices/{id}/applyConfigurationContent`: writes an IoT Edge device's modules content straight into
    /// its module twins (the whole desired section for `properties.desired`, merged paths below it), creating
    /// the module identities it names that do not exist yet, as `az iot edge set-modules` relies on.
    pub async fn apply_configuration_content(&self, device_id: &str, content: &Content) -> Result<(), HubError> {
        let device = self.get_device(device_id)?;
        if device.module.is_some() {
            return Err(HubError::DeviceNotFound(device_id.to_owned()));
        }
        let Some(modules) = &content.modules else {
            return Err(configurations::invalid_content("modulesContent is mandatory".into()));
        };
        if !device.iot_edge {
            return Err(HubError::ArgumentInvalid(format!(
                "Device {device_id} is not an IoT Edge device (capabilities.iotEdge is false)"
            )));
        }
        // Every module's content is checked before any twin changes.
        content.validate()?;
        for module_id in modules.keys() {
            let key = registry::identity_key(device_id, Some(module_id));
            if self.get_device(&key).is_err() {
                match self.put_module(device_id, module_id, &DeviceSpec::default(), None).await {
                    Ok(_) | Err(HubError::ModuleAlreadyExists(..)) => {}
                    Err(other) => return Err(other),
                }
            }
            let mut desired = Map::new();
            for leaf in content.leaves_for(Some(module_id)) {
                configurations::place_value(&mut desired, &leaf.path, leaf.value.clone());
            }
            let write = TwinWrite { tags: None, desired: Some(Some(object_from_json(&desired))) };
            let mode = if content.writes_whole_desired(module_id) { WriteMode::Replace } else { WriteMode::Merge };
            self.write_twin(&key, &write, mode, None).await?;
        }
        Ok(())
    }

    /// Marks twin `key` for a look by the configurations (a no-op while there are none). Called with the state
    /// lock held, by every twin write.
    pub(super) fn mark_for_configurations(&self, state: &State, key: &str) {
        if state.configurations.is_empty() {
            return;
        }
        let mut marked = self.configuration_marked.lock().unwrap_or_else(|p| p.into_inner());
        if !marked.all {
            marked.keys.insert(key.to_owned());
        }
        drop(marked);
        self.configurations_changed.notify_one();
    }

    /// Marks every twin for a look (a configuration was created, changed or deleted, or the hub started).
    fn mark_all_for_configurations(&self) {
        let mut marked = self.configuration_marked.lock().unwrap_or_else(|p| p.into_inner());
        marked.all = true;
        marked.keys.clear();
        drop(marked);
        self.configurations_changed.notify_one();
    }

    /// The background task that brings marked twins in line with the configurations, until the hub stops.
    pub(super) async fn run_configurations(self: Arc<Self>) {
        // At start, every twin is looked at if anything may need doing: configurations exist, or a twin still
        // carries marks (a configuration deleted just before a stop, whose content is still to be taken back).
        let pending = {
            let state = self.read();
            !state.configurations.is_empty() || state.devices.values().any(|d| d.twin.configurations.is_some())
        };
        if pending {
            self.mark_all_for_configurations();
        }
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = self.configurations_changed.notified() => {}
            }
            let (all, marked) = self.configuration_marked.lock().unwrap_or_else(|p| p.into_inner()).take();
            let keys: Vec<String> = if all {
                self.read().devices.keys().cloned().collect()
            } else {
                // An IoT Edge deployment targets a device but writes its modules' twins: they follow the device.
                let state = self.read();
                let deployments = state.configurations.values().any(|c| c.kind == Kind::Edge);
                let mut keys = std::collections::BTreeSet::new();
                for key in marked {
                    if deployments && !key.contains('/') {
                        keys.extend(state.module_keys(&key));
                    }
                    keys.insert(key);
                }
                keys.into_iter().collect()
            };
            for chunk in keys.chunks(RECONCILE_CHUNK) {
                if self.stop.is_cancelled() {
                    return;
                }
                let now = self.clock.now();
                let written: Vec<(Pending, Change)> = chunk.iter().filter_map(|key| self.reconcile(key, now)).collect();
                for (pending, change) in written {
                    let key = change.key.clone();
                    if let Err(error) = self.settle_all(pending, vec![change]).await {
                        tracing::warn!(%error, twin = key, "a configuration could not be applied; it is tried again on the next change");
                        self.configuration_marked.lock().unwrap_or_else(|p| p.into_inner()).keys.insert(key);
                    }
                }
                tokio::task::yield_now().await;
            }
            self.configuration_marked.lock().unwrap_or_else(|p| p.into_inner()).done();
        }
    }

    /// True while configurations are being applied: twins are marked for a look or a pass is under way. Once it
    /// is false, every twin shows what the configurations say (until the next change).
    pub fn configurations_pending(&self) -> bool {
        let marked = self.configuration_marked.lock().unwrap_or_else(|p| p.into_inner());
        marked.busy || marked.all || !marked.keys.is_empty()
    }

    /// Brings one twin in line with the configurations that target it, under the state lock: writes the desired
    /// paths whose owner changed, removes the released ones, and records the twin's marks. `None` when nothing
    /// changes (or the identity is gone).
    fn reconcile(&self, key: &str, now: Timestamp) -> Option<(Pending, Change)> {
        let mut state = self.write();
        let current = Arc::clone(state.devices.get(key)?);
        let targeting = targeting(&state, &current);
        let module_id = current.module_id();
        let contributions: Vec<Contribution<'_>> = targeting
            .iter()
            .map(|(configuration, may_claim)| Contribution {
                configuration,
                leaves: configuration.content.leaves_for(module_id),
                may_claim: *may_claim,
            })
            .collect();
        let plan = configurations::plan(&current.twin, &contributions)?;
        let patch = (!plan.patch.is_empty()).then(|| object_from_json(&plan.patch));
        let write = TwinWrite { tags: None, desired: patch.clone().map(Some) };
        let change = match current.twin.apply_service_write(&write, WriteMode::Merge, now) {
            Ok(change) => change,
            Err(error) => {
                tracing::warn!(%error, twin = key, "configuration content does not fit the twin; left as it is");
                return None;
            }
        };
        let mut twin = change.twin;
        twin.configurations = (!plan.marks.is_empty()).then(|| plan.marks.into_boxed_slice());
        if let Some(patch) = patch {
            let version = Some(twin.desired.version);
            let record = TwinChangeRecord { time: now, section: TwinSection::Desired, replaced: false, version, patch };
            self.record_twin_change(key, record);
        }
        let (written, pending) = self.store_device(&mut state, current.with_twin(twin));
        if let Some(notification) = change.desired_notification {
            Self::notify_desired(&state, key, notification);
        }
        Some((pending, Change { key: key.to_owned(), previous: Some(current), written: Some(written) }))
    }
}

/// The configurations that target `identity`, each with whether it may claim paths: device configurations by
/// its twin; for a module, module configurations by the module's twin and IoT Edge deployments by its device's
/// (only the highest base deployment claims; layered ones merge above it).
fn targeting(state: &State, identity: &Device) -> Vec<(Arc<Configuration>, bool)> {
    let liveness = |id: &str| Hub::liveness_in(state, id);
    let targets = |configuration: &Configuration, twin: &Device| match configuration.target.selects() {
        Selects::Every => true,
        Selects::Matching(condition) => {
            matches(condition, &TwinView { device: twin, liveness: LivenessSource::Lookup(&liveness) })
        }
        Selects::Nothing => false,
    };
    let mut found: Vec<(Arc<Configuration>, bool)> = Vec::new();
    let Some(module_id) = identity.module_id() else {
        for configuration in state.configurations.values().filter(|c| c.kind == Kind::Device) {
            if targets(configuration, identity) {
                found.push((Arc::clone(configuration), true));
            }
        }
        return found;
    };
    for configuration in state.configurations.values().filter(|c| c.kind == Kind::Module) {
        if targets(configuration, identity) {
            found.push((Arc::clone(configuration), true));
        }
    }
    let Some(device) = state.devices.get(&identity.device_id).filter(|d| d.iot_edge) else { return found };
    let deployments: Vec<&Arc<Configuration>> = state
        .configurations
        .values()
        .filter(|c| c.kind == Kind::Edge && targets(c, device))
        .filter(|c| c.content.modules.as_ref().is_some_and(|m| m.contains_key(module_id)))
        .collect();
    let top_base = deployments.iter().filter(|c| c.content.is_base_deployment()).map(|c| c.precedence()).max();
    for deployment in deployments {
        let may_claim = !deployment.content.is_base_deployment() || Some(deployment.precedence()) == top_base;
        found.push((Arc::clone(deployment), may_claim));
    }
    found
}
