//! Modules: an identity under a device, connected beside it with its own twin, methods and telemetry, and
//! queried with `FROM devices.modules`.

use iothub_device::{DesiredUpdate, MethodResponse};
use iothub_service::Etag;
use iothub_service::proto::methods::CloudToDeviceMethod;
use iothub_service::proto::twin::Twin;
use serde_json::{Map, Value, json};

use super::{PATIENCE, failure};
use crate::run::{Run, eventually, skeleton};

fn whoami() -> CloudToDeviceMethod {
    CloudToDeviceMethod {
        method_name: "whoami".into(),
        payload: json!({"asked": true}),
        response_timeout_in_seconds: Some(10),
        connect_timeout_in_seconds: Some(5),
    }
}

pub(super) async fn modules(run: &Run) -> anyhow::Result<()> {
    let (device_id, device_cs) = run.create_device("edge").await?;
    let modules = run.service().modules();
    let created = modules.create_sas_module(&device_id, "filter").await?;
    run.observe("module shape", skeleton(&serde_json::to_value(&created)?));
    run.observe("duplicate module", failure(modules.create_sas_module(&device_id, "filter").await));
    run.observe("missing module", failure(modules.get_module(&device_id, "nosuchmodule").await));
    let key = created
        .authentication
        .as_ref()
        .and_then(|a| a.symmetric_key.as_ref())
        .and_then(|k| k.primary_key.clone())
        .ok_or_else(|| anyhow::anyhow!("the module came back without a key"))?;
    let host = device_cs.split(';').find_map(|part| part.strip_prefix("HostName=")).unwrap_or_default();
    let module_cs = format!("HostName={host};DeviceId={device_id};ModuleId=filter;SharedAccessKey={key}");

    let device = run
        .device(&device_cs)?
        .on_method("whoami", |_| async { MethodResponse::ok(json!({"who": "device"})) })
        .connect()
        .await?;
    let module = run
        .device(&module_cs)?
        .on_method("whoami", |_| async { MethodResponse::ok(json!({"who": "module"})) })
        .connect()
        .await?;
    let mut module_updates = module.desired_updates();
    let mut device_updates = device.desired_updates();

    let to_module = modules.invoke_method(&device_id, "filter", &whoami()).await?;
    let to_device = run.service().methods().invoke(&device_id, &whoami()).await?;
    run.observe("method answers", json!({"module": to_module.payload, "device": to_device.payload}));

    let patch = Twin::desired_patch(Map::from_iter([("threshold".to_owned(), json!(42))]));
    modules.update_twin(&device_id, "filter", &patch, Etag::Any).await?;
    let update = tokio::time::timeout(PATIENCE, module_updates.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the module got no desired update"))?;
    match update {
        DesiredUpdate::Patch { patch, .. } => run.observe("module notification", patch),
        DesiredUpdate::Full { .. } => anyhow::bail!("expected a patch, got a full re-read"),
    }
    let device_saw = tokio::time::timeout(std::time::Duration::from_millis(500), device_updates.next()).await;
    run.observe("device notified of the module's change", device_saw.is_ok());

    module.update_reported(&json!({"state": "running"})).await?;
    let twin = modules.get_twin(&device_id, "filter").await?;
    let reported = twin.reported().and_then(|r| r.get("state")).cloned();
    run.observe("module twin ids", json!({"deviceId": twin.device_id, "moduleId": twin.module_id}));
    run.observe("module reported state", reported);
    run.observe(
        "module twin shape",
        skeleton(&crate::raw::get_json(&run.target, &format!("/twins/{device_id}/modules/filter")).await?),
    );

    modules.create_sas_module(&device_id, "second").await?;
    let query = format!("SELECT deviceId, moduleId FROM devices.modules WHERE deviceId = '{device_id}'");
    // A real hub's query index lags its writes: poll until both modules show.
    let rows = eventually(PATIENCE, std::time::Duration::from_secs(2), || {
        let query = query.clone();
        async move {
            let rows: Vec<Value> = run.service().query().raw(&query).collect_all().await?;
            Ok((rows.len() == 2).then_some(rows))
        }
    })
    .await?;
    run.observe("devices.modules rows", rows);
    let listed: Vec<Option<String>> =
        modules.list_modules(&device_id).await?.into_iter().map(|m| m.module_id).collect();
    run.observe("modules listed", listed);

    module.close().await;
    device.close().await;
    Ok(())
}
