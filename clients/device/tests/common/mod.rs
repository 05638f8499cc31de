//! What the device client's test files share: an in-process emulator with devices, and client options that
//! trust it and reconnect quickly.

use std::time::Duration;

use iothub_device::{ClientOptions, RetryPolicy};
use iothub_emulator::domain::registry::DeviceSpec;
use iothub_emulator::{Emulator, RunningEmulator};

/// How long a test waits for something the client or the hub does promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// An emulator (in memory, ephemeral ports) with devices `ids` registered.
pub async fn emulator_with(ids: &[&str]) -> RunningEmulator {
    let emulator = Emulator::builder().start().await.expect("emulator");
    for id in ids {
        emulator.hub().put_device(id, &DeviceSpec::default(), None).await.expect("device");
    }
    emulator
}

/// Options that trust the emulator's CA, dial its MQTT port and retry within a fraction of a second.
pub fn options(emulator: &RunningEmulator) -> ClientOptions {
    let fast = RetryPolicy {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        max_attempts: None,
    };
    ClientOptions::default().with_ca_pem(emulator.ca_pem()).with_port(emulator.mqtt_addr().port()).with_retry(fast)
}
