//! Twin writes from untrusted JSON: a service PATCH/PUT body, a twin-job request and a device's reported patch
//! are validated and merged, or refused with the hub's error; never a panic, and a twin that took a write still
//! keeps the hub's limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    iothub_emulator::fuzzing::twin_writes(data);
});
