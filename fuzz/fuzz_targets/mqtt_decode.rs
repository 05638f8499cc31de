//! The MQTT 3.1.1 decoder the emulator frames connections with (rumqttc's v4 codec, at the emulator's size
//! limit): any bytes either decode into packets or fail cleanly, never panic or allocate without bound.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rumqttc::mqttbytes::v4::Codec;
use tokio_util::codec::Decoder as _;

fuzz_target!(|data: &[u8]| {
    let mut codec = Codec {
        max_incoming_size: iothub_emulator::limits::MAX_MQTT_PACKET_BYTES,
        max_outgoing_size: iothub_emulator::limits::MAX_MQTT_PACKET_BYTES,
    };
    let mut buffer = BytesMut::from(data);
    for _ in 0..64 {
        match codec.decode(&mut buffer) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
