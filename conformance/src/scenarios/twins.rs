//! Twins: reported properties from the device, desired notifications to it, etags, tags and `null` removal,
//! and the versions each write moves.

use iothub_device::DesiredUpdate;
use iothub_service::Etag;
use iothub_service::proto::twin::Twin;
use serde_json::{Map, Value, json};

use super::{PATIENCE, failure};
use crate::run::{Run, skeleton};

fn map(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// The properties of a section without the hub's `$metadata` and `$version`.
fn plain(section: Option<&Map<String, Value>>) -> Value {
    let mut map = section.cloned().unwrap_or_default();
    map.remove("$metadata");
    map.remove("$version");
    Value::Object(map)
}

fn version(section: Option<&Map<String, Value>>) -> Value {
    section.and_then(|s| s.get("$version")).cloned().unwrap_or(Value::Null)
}

pub(super) async fn reported(run: &Run) -> anyhow::Result<()> {
    let (id, cs) = run.create_device("r").await?;
    let device = run.device(&cs)?.connect().await?;
    let before = device.get_twin().await?;
    run.observe(
        "device twin before",
        json!({"desiredVersion": before.desired_version, "reportedVersion": before.reported_version}),
    );
    let v1 = device.update_reported(&json!({"battery": 87, "firmware": {"version": "1.2.3"}})).await?;
    let v2 = device.update_reported(&json!({"firmware": {"channel": "beta"}, "battery": null})).await?;
    run.observe("reported versions", json!([v1, v2]));
    let twin = run.service().twins().get_twin(&id).await?;
    run.observe("service sees reported", plain(twin.reported()));
    run.observe("reported $version", version(twin.reported()));
    run.observe("twin version", twin.version);
    run.observe("twin shape", skeleton(&crate::raw::get_json(&run.target, &format!("/twins/{id}")).await?));
    let device_view = device.get_twin().await?;
    run.observe("device sees reported", Value::Object(device_view.reported));
    device.close().await;
    Ok(())
}

pub(super) async fn desired(run: &Run) -> anyhow::Result<()> {
    let (id, cs) = run.create_device("d").await?;
    let device = run.device(&cs)?.connect().await?;
    let mut updates = device.desired_updates();
    let patch = Twin::desired_patch(map(json!({"building": "43", "floor": 3, "config": {"mode": "eco"}})));
    let written = run.service().twins().update_twin(&id, &patch, Etag::Any).await?;
    run.observe("service write answer desired", plain(written.desired()));
    let update = tokio::time::timeout(PATIENCE, updates.next()).await?.ok_or_else(|| anyhow::anyhow!("no update"))?;
    match update {
        DesiredUpdate::Patch { version, patch } => {
            run.observe("device notification", json!({"version": version, "patch": patch}));
        }
        DesiredUpdate::Full { .. } => anyhow::bail!("expected a patch, got a full re-read"),
    }
    let twin = device.get_twin().await?;
    run.observe("device twin desired", json!({"version": twin.desired_version, "desired": twin.desired}));
    device.close().await;
    Ok(())
}

pub(super) async fn etag(run: &Run) -> anyhow::Result<()> {
    let (id, _) = run.create_device("e").await?;
    let twins = run.service().twins();
    let twin = twins.get_twin(&id).await?;
    let first = twin.etag.clone().unwrap_or_default();
    let patch = |v: i64| Twin::desired_patch(map(json!({"n": v})));
    let ok = twins.update_twin(&id, &patch(1), Etag::Value(first.clone())).await?;
    run.observe(
        "with the current etag",
        json!({"version": ok.version, "etagChanged": ok.etag.as_deref() != Some(first.as_str())}),
    );
    run.observe("with a stale etag", failure(twins.update_twin(&id, &patch(2), Etag::Value(first)).await));
    let any = twins.update_twin(&id, &patch(3), Etag::Any).await?;
    run.observe("with *", json!({"version": any.version, "n": any.desired().and_then(|d| d.get("n"))}));
    let device = run.service().registry().get_device(&id).await?;
    let stale_device = iothub_service::proto::registry::Device { status_reason: Some("x".into()), ..device.clone() };
    run.observe(
        "device update with a stale etag",
        failure(run.service().registry().update_device(&stale_device, Etag::Value("AAAAAAAAAAA=".into())).await),
    );
    Ok(())
}

pub(super) async fn tags_and_nulls(run: &Run) -> anyhow::Result<()> {
    let (id, _) = run.create_device("t").await?;
    let twins = run.service().twins();
    let tagged = twins
        .update_twin(
            &id,
            &Twin::tags_patch(map(json!({"location": {"region": "eu", "building": "43"}, "owner": "ops"}))),
            Etag::Any,
        )
        .await?;
    run.observe("tags set", &tagged.tags);
    let merged = twins
        .update_twin(
            &id,
            &Twin::tags_patch(map(json!({"location": {"building": null}, "owner": null, "rack": 7}))),
            Etag::Any,
        )
        .await?;
    run.observe("tags merged with nulls", &merged.tags);
    let desired = twins.update_twin(&id, &Twin::desired_patch(map(json!({"a": 1, "b": {"c": 2}}))), Etag::Any).await?;
    let removed = twins.update_twin(&id, &Twin::desired_patch(map(json!({"b": null}))), Etag::Any).await?;
    run.observe("desired after null", plain(removed.desired()));
    run.observe("versions", json!({"afterTags": tagged.version, "afterMerge": merged.version, "afterDesired": desired.version, "afterNull": removed.version,
        "desired$version": version(removed.desired())}));
    let replaced = twins.replace_twin(&id, &Twin::tags_patch(map(json!({"only": true}))), Etag::Any).await?;
    run.observe("tags replaced", &replaced.tags);
    run.observe(
        "bad key",
        failure(twins.update_twin(&id, &Twin::tags_patch(map(json!({"bad key": 1}))), Etag::Any).await),
    );
    Ok(())
}
