//! Direct methods: a round trip with payloads, a device that is offline, a device that is too slow.

use std::time::Duration;

use iothub_device::MethodResponse;
use serde_json::json;

use super::{failure, lock_door};
use crate::run::Run;

pub(super) async fn round_trip(run: &Run) -> anyhow::Result<()> {
    let (id, cs) = run.create_device("m").await?;
    let device = run
        .device(&cs)?
        .on_method("lockDoor", |request| async move {
            MethodResponse::new(201, json!({"locked": true, "echo": request.payload}))
        })
        .connect()
        .await?;
    let payload = json!({"door": "front", "pin": 1234, "list": [1, "two", null], "nested": {"ok": true}});
    let result = run.service().methods().invoke(&id, &lock_door(payload, 10)).await?;
    run.observe("result", &result);
    let null = run.service().methods().invoke(&id, &lock_door(serde_json::Value::Null, 10)).await?;
    run.observe("null payload", &null);
    device.close().await;
    Ok(())
}

pub(super) async fn offline(run: &Run) -> anyhow::Result<()> {
    let (id, _) = run.create_device("never-connected").await?;
    run.observe("invoke", failure(run.service().methods().invoke(&id, &lock_door(json!({}), 5)).await));
    Ok(())
}

pub(super) async fn timeout(run: &Run) -> anyhow::Result<()> {
    let (id, cs) = run.create_device("slow").await?;
    let device = run
        .device(&cs)?
        .on_method("lockDoor", |_| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            MethodResponse::ok(json!("too late"))
        })
        .connect()
        .await?;
    run.observe("invoke", failure(run.service().methods().invoke(&id, &lock_door(json!({}), 5)).await));
    device.close().await;
    Ok(())
}
