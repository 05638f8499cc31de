//! The tutorial's simDevice.js in Rust: a device that answers the `lockDoor` direct method and shows the
//! desired properties a job sets, until Ctrl-C.
//!
//! Against the emulator (started with `--seed fixtures/tutorial-seed.json`, see the README):
//!
//! ```sh
//! IOTHUB_DEVICE_CONNECTION_STRING='HostName=localhost;DeviceId=myDeviceId;SharedAccessKey=...' \
//! IOTHUB_CA_FILE=~/.local/share/iothub-emulator/ca.pem cargo run -p iothub-device --example sim_device
//! ```
//!
//! Against a real hub, give the device's connection string and leave `IOTHUB_CA_FILE` unset.

use iothub_device::{ClientOptions, ConnectionStatus, DesiredUpdate, DeviceClient, MethodResponse};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connection_string = std::env::var("IOTHUB_DEVICE_CONNECTION_STRING")
        .map_err(|_| "set IOTHUB_DEVICE_CONNECTION_STRING to the device's connection string")?;
    let mut options = ClientOptions::default();
    if let Ok(path) = std::env::var("IOTHUB_CA_FILE") {
        options = options.with_ca_pem(std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?);
    }
    let client = DeviceClient::builder(&connection_string)?
        .options(options)
        .on_method("lockDoor", |request| async move {
            println!("Locking Door! (method '{}' called with {})", request.name, request.payload);
            MethodResponse::ok(serde_json::Value::Null)
        })
        .connect()
        .await?;
    println!(
        "Client connected to IoT Hub as '{}'. Waiting for lockDoor and desired changes (Ctrl-C to stop).",
        client.device_id()
    );

    let mut desired = client.desired_updates();
    let mut status = client.watch_status();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            Some(update) = desired.next() => match update {
                DesiredUpdate::Patch { version, patch } => println!("Desired properties changed (version {version}): {}", serde_json::Value::Object(patch)),
                DesiredUpdate::Full { version, desired } => println!("Desired properties after reconnecting (version {version}): {}", serde_json::Value::Object(desired)),
            },
            Ok(()) = status.changed() => {
                let now = status.borrow_and_update().clone();
                match now {
                    ConnectionStatus::Failed(error) => return Err(error.into()),
                    other => println!("connection: {other:?}"),
                }
            }
        }
    }
    client.close().await;
    Ok(())
}
