//! Every scenario against a fresh in-process emulator, offline: part of `cargo test`. One emulator serves all
//! scenarios, which run side by side (each names its own devices and jobs).

use std::sync::Arc;

use conformance::{ALL, Target};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let runtime = Arc::new(tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime"));
    let target = Arc::new(runtime.block_on(Target::emulator()).expect("the emulator starts"));
    let trials = ALL
        .iter()
        .map(|scenario| {
            let (runtime, target) = (runtime.clone(), target.clone());
            Trial::test(format!("emulator::{}", scenario.name), move || {
                let report = runtime.block_on(conformance::run_scenario(target, scenario));
                if report.passed { Ok(()) } else { Err(Failed::from(report.detail)) }
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
