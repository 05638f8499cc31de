//! Seed files: devices to create at start-up, so a CI job or a demo starts with known identities.
//!
//! Format: `{"devices": [<Device JSON as PUT /devices/{id} takes it>, ...]}`. Devices that already exist are
//! left as they are, so a seed can be applied on every start of a persistent hub.

use std::path::Path;

use iothub_proto::registry as wire;
use serde::Deserialize;

use crate::http::spec_from_wire;
use crate::hub::Hub;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    #[serde(default)]
    devices: Vec<wire::Device>,
}

/// Creates every device of the seed file at `path` that does not exist yet.
pub async fn apply(hub: &Hub, path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let seed: SeedFile = serde_json::from_str(&text).map_err(|e| format!("not a valid seed file: {e}"))?;
    let mut created = 0usize;
    for (index, entry) in seed.devices.iter().enumerate() {
        let id = entry
            .device_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| format!("devices[{index}] has no deviceId"))?;
        if hub.get_device(id).is_ok() {
            continue;
        }
        let spec = spec_from_wire(id, entry).map_err(|e| format!("device '{id}': {e}"))?;
        hub.put_device(id, &spec, None).await.map_err(|e| format!("device '{id}': {e}"))?;
        created += 1;
    }
    tracing::info!(created, listed = seed.devices.len(), "seed applied");
    Ok(())
}
