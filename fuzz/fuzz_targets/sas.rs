//! SAS tokens and connection strings from untrusted text: parsed or refused, never a panic; a parsed token's
//! checks run without panicking either.
#![no_main]

use iothub_proto::{DeviceConnectionString, SasToken, ServiceConnectionString};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(token) = SasToken::parse(text) {
        let _ = token.is_signed_with(b"0123456789abcdef");
        let _ = token.is_expired_at(1_700_000_000);
        let _ = token.covers("localhost/devices/d1");
    }
    let _ = text.parse::<ServiceConnectionString>();
    let _ = text.parse::<DeviceConnectionString>();
    iothub_emulator::fuzzing::authorize(text);
});
