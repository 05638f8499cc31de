//! The AMQP 1.0 endpoint: the first byte picks how far a well-behaved client gets (nothing, the header, an Open,
//! a session, `$cbs` links, SASL ANONYMOUS or PLAIN with links to `/messages/devicebound` and feedback), the rest
//! of the input follows. The connection must answer or close once the client leaves, never panic or leave a task
//! behind, write only well-formed frames, and leave the hub serving (see `fuzzing::AmqpTarget::session`).
#![no_main]

use std::sync::OnceLock;

use iothub_emulator::fuzzing::AmqpTarget;
use libfuzzer_sys::fuzz_target;

struct Setup {
    runtime: tokio::runtime::Runtime,
    target: AmqpTarget,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        // Paused time: the endpoint's time-outs (and the session's own limits) pass as soon as everything waits.
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
        Setup { runtime, target: AmqpTarget::new() }
    })
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    setup.target.run(&setup.runtime, data);
});
