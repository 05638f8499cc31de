//! More of the registry: IoT Edge devices and the scopes that tie children to them, bulk identity operations
//! (`POST /devices`), and configurations (automatic device management) applied to the twins they target.

use std::time::Duration;

use iothub_service::Etag;
use iothub_service::proto::configurations::{Configuration, ConfigurationContent, ConfigurationMetrics};
use iothub_service::proto::registry::{BulkRegistryOperationResult, Device, DeviceCapabilities, ExportImportDevice};
use iothub_service::proto::twin::Twin;
use serde_json::{Map, Value, json};

use super::{background_patience, failure};
use crate::raw;
use crate::run::{Run, eventually, redact, replace_text};

fn map(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// `value` with the members of every object in name order: where the order depends on when the hub's background
/// work ran (the paths two configurations write, a twin's configuration marks), not on what it did.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(members.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
        }
        other => other.clone(),
    }
}

/// A member of a document as the hub sent it, `"<absent>"` when it left the member out.
fn member(doc: &Value, name: &str) -> Value {
    doc.get(name).cloned().unwrap_or_else(|| json!("<absent>"))
}

/// What a device or twin document says about its place in an IoT Edge hierarchy.
fn scopes(doc: &Value) -> Value {
    json!({
        "capabilities": member(doc, "capabilities"),
        "deviceScope": member(doc, "deviceScope"),
        "parentScopes": member(doc, "parentScopes"),
    })
}

pub(super) async fn edge_hierarchy(run: &Run) -> anyhow::Result<()> {
    let registry = run.service().registry();
    let edge_id = run.id("edge");
    run.adopt_device(&edge_id);
    let edge = registry
        .create_device(&Device {
            capabilities: Some(DeviceCapabilities { iot_edge: Some(true) }),
            ..Device::sas(&edge_id)
        })
        .await?;
    // The scope is `ms-azure-iot-edge://<deviceId>-<generationId>`: the generated part is hidden, so the snapshot
    // shows where it sits.
    let generation = edge.generation_id.clone().unwrap_or_default();
    let hide = |value: &Value| replace_text(value, &generation, "<generationId>");
    let scope =
        edge.device_scope.clone().ok_or_else(|| anyhow::anyhow!("the Edge device came back without a deviceScope"))?;
    run.observe("edge device as created", hide(&scopes(&serde_json::to_value(&edge)?)));
    run.observe(
        "edge device scope digits",
        scope.rsplit('-').next().is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())),
    );
    run.observe("edge device read", hide(&scopes(&raw::get_json(&run.target, &format!("/devices/{edge_id}")).await?)));
    let mut modules: Vec<Value> = run
        .service()
        .modules()
        .list_modules(&edge_id)
        .await?
        .into_iter()
        .map(|m| {
            json!({"moduleId": m.module_id, "managedBy": m.managed_by,
                "authentication": m.authentication.and_then(|a| a.kind)})
        })
        .collect();
    modules.sort_by_key(|m| m["moduleId"].as_str().unwrap_or_default().to_owned());
    run.observe("edge device modules", modules);

    let leaf_id = run.id("leaf");
    run.adopt_device(&leaf_id);
    let leaf = registry.create_device(&Device { device_scope: Some(scope.clone()), ..Device::sas(&leaf_id) }).await?;
    run.observe("leaf as created", hide(&scopes(&serde_json::to_value(&leaf)?)));
    let leaf_doc = raw::get_json(&run.target, &format!("/devices/{leaf_id}")).await?;
    run.observe("leaf read", hide(&scopes(&leaf_doc)));
    let leaf_twin = raw::get_json(&run.target, &format!("/twins/{leaf_id}")).await?;
    run.observe("leaf twin", hide(&scopes(&leaf_twin)));
    run.observe("leaf twin members", leaf_twin.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()));
    let edge_twin = raw::get_json(&run.target, &format!("/twins/{edge_id}")).await?;
    run.observe("edge twin", hide(&scopes(&edge_twin)));

    let stray_id = run.id("stray");
    run.adopt_device(&stray_id);
    let unowned = format!("ms-azure-iot-edge://{}-1", run.id("nobody"));
    run.observe(
        "leaf with a scope no Edge device owns",
        failure(registry.create_device(&Device { device_scope: Some(unowned), ..Device::sas(&stray_id) }).await),
    );

    registry.delete_device(&edge_id, Etag::Any).await?;
    let orphan = raw::get_json(&run.target, &format!("/devices/{leaf_id}")).await?;
    run.observe("leaf read after its parent is deleted", hide(&scopes(&orphan)));
    run.observe("leaf etag changed by the parent's delete", orphan.get("etag") != leaf_doc.get("etag"));
    let orphan_twin = raw::get_json(&run.target, &format!("/twins/{leaf_id}")).await?;
    run.observe("leaf twin after its parent is deleted", hide(&scopes(&orphan_twin)));
    Ok(())
}

/// A bulk answer as observed: the error messages are free text, so only their presence shows.
fn bulk_result(result: &BulkRegistryOperationResult) -> anyhow::Result<Value> {
    Ok(redact(&serde_json::to_value(result)?, &["errorStatus"], "<text>"))
}

pub(super) async fn bulk(run: &Run) -> anyhow::Result<()> {
    let registry = run.service().registry();
    let (existing, _) = run.create_device("existing").await?;
    let (first, second) = (run.id("first"), run.id("second"));
    run.adopt_device(&first);
    run.adopt_device(&second);
    let item = |id: &str, mode: &str| ExportImportDevice {
        id: id.to_owned(),
        import_mode: Some(mode.to_owned()),
        ..Default::default()
    };

    let created = registry.bulk(&[item(&first, "create"), item(&existing, "create"), item(&second, "create")]).await?;
    run.observe("create three, one already registered", bulk_result(&created)?);
    let mut made = Vec::new();
    for id in [&first, &second] {
        let device = registry.get_device(id).await?;
        let key = device.authentication.as_ref().and_then(|a| a.symmetric_key.as_ref());
        made.push(json!({"deviceId": id, "status": device.status,
            "primaryKeyLength": key.and_then(|k| k.primary_key.as_ref()).map(String::len)}));
    }
    run.observe("created by the bulk call", made);

    let current = registry.get_device(&first).await?;
    let old_etag = current.etag.clone();
    let update = |status: &str| ExportImportDevice {
        etag: old_etag.clone(),
        status: Some(status.to_owned()),
        authentication: current.authentication.clone(),
        ..item(&first, "updateIfMatchETag")
    };
    run.observe("update with the current etag", bulk_result(&registry.bulk(&[update("disabled")]).await?)?);
    let updated = registry.get_device(&first).await?;
    run.observe(
        "after the update",
        json!({"status": updated.status, "etagChanged": updated.etag != old_etag,
            "keysKept": updated.authentication == current.authentication}),
    );
    run.observe("update with a stale etag", bulk_result(&registry.bulk(&[update("enabled")]).await?)?);
    run.observe("after the stale update", registry.get_device(&first).await?.status);

    let deleted = registry.bulk(&[item(&first, "delete"), item(&existing, "delete"), item(&second, "delete")]).await?;
    run.observe("delete the three", bulk_result(&deleted)?);
    let mut gone = Vec::new();
    for id in [&first, &existing, &second] {
        gone.push(failure(registry.get_device(id).await));
    }
    run.observe("read after the bulk delete", gone);
    run.observe("delete again", bulk_result(&registry.bulk(&[item(&first, "delete")]).await?)?);
    Ok(())
}

/// The hub's times in a configuration, which differ on every run.
const CONFIGURATION_TIMES: &[&str] = &["createdTimeUtc", "lastUpdatedTimeUtc"];

const POLL: Duration = Duration::from_millis(200);

/// Waits until every device's desired `cfg` is `expected`, and returns it.
async fn cfg_everywhere(run: &Run, ids: &[&str], expected: &Value) -> anyhow::Result<Value> {
    let found = eventually(background_patience(run), POLL, || async {
        let mut seen = Vec::new();
        for id in ids {
            let twin = run.service().twins().get_twin(id).await?;
            seen.push(twin.desired().and_then(|d| d.get("cfg")).cloned().unwrap_or(Value::Null));
        }
        Ok(seen.iter().all(|cfg| cfg == expected).then_some(seen))
    })
    .await
    .map_err(|e| anyhow::anyhow!("desired cfg {expected}: {e}"))?;
    Ok(found.into_iter().next().unwrap_or(Value::Null))
}

/// Waits until the configuration's counts include `expected` (system and custom metrics by name).
async fn counts_reach(run: &Run, id: &str, expected: &[(&str, u64)]) -> anyhow::Result<()> {
    eventually(background_patience(run), POLL, || async {
        let configuration = run.service().configurations().get(id).await?;
        let reached = expected.iter().all(|(name, count)| {
            let result =
                configuration.system_metrics.results.get(*name).or_else(|| configuration.metrics.results.get(*name));
            result.and_then(Value::as_u64) == Some(*count)
        });
        Ok(reached.then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("the counts of {id} reaching {expected:?}: {e}"))
}

pub(super) async fn configurations(run: &Run) -> anyhow::Result<()> {
    let (a, _) = run.create_device("a").await?;
    let (b, _) = run.create_device("b").await?;
    let fleet = run.id("fleet");
    for id in [&a, &b] {
        let tags = Twin::tags_patch(map(json!({"conformance": fleet})));
        run.service().twins().update_twin(id, &tags, Etag::Any).await?;
    }
    let condition = format!("tags.conformance='{fleet}'");
    let configurations = run.service().configurations();
    let (low_id, high_id) = (run.id("low"), run.id("high"));
    run.adopt_configuration(&low_id);
    run.adopt_configuration(&high_id);

    let low = Configuration {
        id: low_id.clone(),
        labels: Some(map(json!({"suite": "conformance"}))),
        content: ConfigurationContent {
            device_content: Some(map(json!({"properties.desired.cfg": {"a": 1, "b": 1}}))),
            ..Default::default()
        },
        target_condition: condition.clone(),
        priority: 1,
        metrics: ConfigurationMetrics {
            queries: map(json!({
                "overridden": format!("SELECT deviceId FROM devices WHERE {condition} AND properties.desired.cfg.b = 2")
            })),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = configurations.create(&low).await?;
    // The hub answers a create before counting anything: `results` are empty.
    run.observe("priority 1 as created", redact(&serde_json::to_value(&created)?, CONFIGURATION_TIMES, "<time>"));
    run.observe("create again", failure(configurations.create(&low).await));
    let high = Configuration {
        id: high_id.clone(),
        content: ConfigurationContent {
            device_content: Some(map(json!({"properties.desired.cfg.b": 2}))),
            ..Default::default()
        },
        target_condition: condition.clone(),
        priority: 2,
        ..Default::default()
    };
    configurations.create(&high).await?;

    let devices = [a.as_str(), b.as_str()];
    run.observe("desired cfg with both", sorted(&cfg_everywhere(run, &devices, &json!({"a": 1, "b": 2})).await?));
    let twin = raw::get_json(&run.target, &format!("/twins/{a}")).await?;
    run.observe("twin configurations with both", sorted(&member(&twin, "configurations")));
    counts_reach(run, &low_id, &[("targetedCount", 2), ("appliedCount", 2), ("overridden", 2)]).await?;
    counts_reach(run, &high_id, &[("targetedCount", 2), ("appliedCount", 2)]).await?;
    for (label, id) in [("priority 1", &low_id), ("priority 2", &high_id)] {
        let doc = raw::get_json(&run.target, &format!("/configurations/{id}")).await?;
        run.observe(&format!("{label} read"), redact(&doc, CONFIGURATION_TIMES, "<time>"));
    }

    let current = configurations.get(&low_id).await?;
    let first_etag = current.etag.clone().unwrap_or_default();
    let relabelled =
        Configuration { labels: Some(map(json!({"suite": "conformance", "step": "relabelled"}))), ..current };
    let updated = configurations.update(&relabelled, Etag::Value(first_etag.clone())).await?;
    run.observe(
        "update with the current etag",
        json!({"etagBefore": first_etag, "etagAfter": updated.etag, "labels": updated.labels,
            "createdKept": updated.created_time_utc == relabelled.created_time_utc}),
    );
    run.observe("update with a stale etag", failure(configurations.update(&relabelled, Etag::Value(first_etag)).await));

    configurations.delete(&high_id, Etag::Any).await?;
    let after = cfg_everywhere(run, &devices, &json!({"a": 1, "b": 1})).await?;
    run.observe("desired cfg after priority 2 is deleted", sorted(&after));
    let twin = raw::get_json(&run.target, &format!("/twins/{a}")).await?;
    run.observe("twin configurations after priority 2 is deleted", sorted(&member(&twin, "configurations")));
    configurations.delete(&low_id, Etag::Any).await?;
    run.observe("read after delete", failure(configurations.get(&low_id).await));
    run.observe("delete again", failure(configurations.delete(&low_id, Etag::Any).await));
    Ok(())
}
