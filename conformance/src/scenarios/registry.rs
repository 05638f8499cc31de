//! The device registry: create, read, list, update with etags, statistics, delete.

use iothub_service::Etag;
use serde_json::json;

use super::failure;
use crate::run::{Run, skeleton};

pub(super) async fn crud(run: &Run) -> anyhow::Result<()> {
    let registry = run.service().registry();
    let id = run.id("reg");
    let created = registry.create_sas_device(&id).await?;
    let keys = created.authentication.as_ref().and_then(|a| a.symmetric_key.as_ref());
    run.observe(
        "generated key lengths",
        json!([
            keys.and_then(|k| k.primary_key.as_ref()).map(String::len),
            keys.and_then(|k| k.secondary_key.as_ref()).map(String::len)
        ]),
    );
    run.observe("device shape", skeleton(&crate::raw::get_json(&run.target, &format!("/devices/{id}")).await?));
    run.observe("create again", failure(registry.create_sas_device(&id).await));
    let mut device = registry.get_device(&id).await?;
    run.observe("read", json!({"status": device.status, "connectionState": device.connection_state}));
    let listed = registry.list_devices(1000).await?;
    run.observe("listed", listed.iter().any(|d| d.device_id.as_deref() == Some(id.as_str())));
    let etag = device.etag.clone().unwrap_or_default();
    device.status = Some("disabled".into());
    device.status_reason = Some("conformance".into());
    let updated = registry.update_device(&device, Etag::Value(etag)).await?;
    run.observe("updated", json!({"status": updated.status, "statusReason": updated.status_reason, "etagChanged": updated.etag != device.etag}));
    registry.statistics().await?;
    run.observe("statistics shape", skeleton(&crate::raw::get_json(&run.target, "/statistics/devices").await?));
    registry.delete_device(&id, Etag::Any).await?;
    run.observe("read after delete", failure(registry.get_device(&id).await));
    Ok(())
}
