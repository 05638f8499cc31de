//! Seed files: devices and modules to create at start-up, so a CI job or a demo starts with known identities.
//!
//! Format: `{"devices": [<Device JSON as PUT /devices/{id} takes it>, ...], "modules": [<Module JSON as
//! PUT /devices/{id}/modules/{mid} takes it, with its deviceId and moduleId>, ...]}`. Identities that already
//! exist are left as they are, so a seed can be applied on every start of a persistent hub.

use std::path::Path;

use futures_util::{StreamExt as _, TryStreamExt as _};
use iothub_proto::registry as wire;
use serde::Deserialize;

use crate::domain::registry::identity_key;
use crate::hub::Hub;
use crate::wire::registry::{device_spec, module_spec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    #[serde(default)]
    devices: Vec<wire::Device>,
    #[serde(default)]
    modules: Vec<wire::Module>,
}

/// Seed devices created at once: their commits share transactions (group commit), so a seed of thousands of
/// devices takes about as many fsyncs as batches, not as devices.
const CONCURRENT_CREATES: usize = 256;

/// Creates every device of the seed file at `path` that does not exist yet.
pub async fn apply(hub: &Hub, path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let seed: SeedFile = serde_json::from_str(&text).map_err(|e| format!("not a valid seed file: {e}"))?;
    let mut missing = Vec::new();
    for (index, entry) in seed.devices.iter().enumerate() {
        let id = entry
            .device_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| format!("devices[{index}] has no deviceId"))?;
        if hub.get_device(id).is_ok() {
            continue;
        }
        let spec = device_spec(id, entry).map_err(|e| format!("device '{id}': {e}"))?;
        missing.push((id, spec));
    }
    let created = missing.len();
    futures_util::stream::iter(missing)
        .map(|(id, spec)| async move {
            match hub.put_device(id, &spec, None).await {
                Ok(_) | Err(crate::HubError::DeviceAlreadyExists(_)) => Ok(()),
                Err(error) => Err(format!("device '{id}': {error}")),
            }
        })
        .buffer_unordered(CONCURRENT_CREATES)
        .try_collect::<Vec<()>>()
        .await?;
    let mut modules_created = 0;
    for (index, entry) in seed.modules.iter().enumerate() {
        let ids =
            entry.device_id.as_deref().zip(entry.module_id.as_deref()).filter(|(d, m)| !d.is_empty() && !m.is_empty());
        let (device_id, module_id) = ids.ok_or_else(|| format!("modules[{index}] needs its deviceId and moduleId"))?;
        if hub.get_device(&identity_key(device_id, Some(module_id))).is_ok() {
            continue;
        }
        let what = || format!("module '{device_id}/{module_id}'");
        let spec = module_spec(device_id, module_id, entry).map_err(|e| format!("{}: {e}", what()))?;
        hub.put_module(device_id, module_id, &spec, None).await.map_err(|e| format!("{}: {e}", what()))?;
        modules_created += 1;
    }
    tracing::info!(created, modules_created, listed = seed.devices.len(), "seed applied");
    Ok(())
}
