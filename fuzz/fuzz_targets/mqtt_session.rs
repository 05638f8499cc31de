//! The MQTT session state machine: a device connects with a valid CONNECT (so the input reaches the session
//! proper), then arbitrary bytes follow. The session must answer or close, never panic or hang.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use iothub_emulator::hub::Hub;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

struct Setup {
    runtime: tokio::runtime::Runtime,
    hub: Arc<Hub>,
    connect: Vec<u8>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let (hub, connect) = iothub_emulator::fuzzing::hub_with_connected_device("fuzz");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        Setup { runtime, hub, connect }
    })
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    setup.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let peer = "127.0.0.1:1".parse().expect("addr");
        let session = tokio::spawn(iothub_emulator::mqtt::serve_connection(
            server,
            setup.hub.clone(),
            CancellationToken::new(),
            peer,
        ));
        let _ = client.write_all(&setup.connect).await;
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut sink)).await;
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(2), session).await;
    });
});
