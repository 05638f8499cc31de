//! The MQTT session state machine: a device connects with a valid CONNECT (so the input reaches the session
//! proper), then arbitrary bytes follow. The session must answer or close, never panic or hang.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use iothub_emulator::auth::Policies;
use iothub_emulator::clock::SystemClock;
use iothub_emulator::domain::registry::{DeviceSpec, create_device};
use iothub_emulator::hub::Hub;
use iothub_emulator::store::{Loaded, Store};
use libfuzzer_sys::fuzz_target;
use rumqttc::mqttbytes::v4::{Connect, Packet};
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
        let now = jiff::Timestamp::now();
        let device = create_device("fuzz", &DeviceSpec::default(), now, 1).expect("device");
        let key = device.authentication.primary_key.clone().expect("key");
        let loaded = Loaded { devices: vec![device], ..Loaded::default() };
        let hub = Arc::new(Hub::new(
            "localhost".into(),
            Policies::generate(),
            Arc::new(SystemClock),
            Store::memory(),
            loaded,
        ));
        let expiry = u64::try_from(now.as_second()).unwrap_or(0) + 365 * 24 * 3600;
        let token = iothub_proto::generate_token("localhost/devices/fuzz", &key, None, expiry).expect("token");
        let mut packet = Connect::new("fuzz");
        packet.keep_alive = 60;
        packet.set_login("localhost/fuzz/?api-version=2021-04-12", token);
        let mut connect = bytes::BytesMut::new();
        Packet::Connect(packet).write(&mut connect, 1 << 20).expect("encode");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        Setup { runtime, hub, connect: connect.to_vec() }
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
