//! The device side beyond methods and twins: telemetry and MQTT over WebSockets.

use iothub_device::{Message, MethodResponse, Transport};
use serde_json::json;

use super::lock_door;
use crate::run::Run;

pub(super) async fn telemetry(run: &Run) -> anyhow::Result<()> {
    let (_, cs) = run.create_device("tel").await?;
    let device = run.device(&cs)?.connect().await?;
    let mut acknowledged = 0;
    for i in 0..5 {
        let message =
            Message::json(&json!({"temperature": 20 + i}))?.property("alert", "false").message_id(format!("m{i}"));
        device.send_telemetry(message).await?;
        acknowledged += 1;
    }
    run.observe("messages acknowledged (PUBACK)", acknowledged);
    device.close().await;
    Ok(())
}

pub(super) async fn websocket(run: &Run) -> anyhow::Result<()> {
    let (id, cs) = run.create_device("ws").await?;
    let options = run.target.device_options().with_transport(Transport::WebSocket).with_port(run.target.https_port);
    let device = iothub_device::DeviceClient::builder(&cs)?
        .options(options)
        .on_method("lockDoor", |request| async move {
            MethodResponse::ok(json!({"via": "websocket", "echo": request.payload}))
        })
        .connect()
        .await?;
    let result = run.service().methods().invoke(&id, &lock_door(json!({"door": 1}), 10)).await?;
    run.observe("method over WebSockets", &result);
    run.observe("reported $version over WebSockets", device.update_reported(&json!({"via": "ws"})).await?);
    device.close().await;
    Ok(())
}
