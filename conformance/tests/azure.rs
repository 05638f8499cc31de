//! Every scenario against a real Azure IoT Hub when `IOTHUB_CONNECTION_STRING` is set (one at a time, to respect
//! the hub's limits: one job at a time on S1). Without it each scenario is reported as ignored, with the reason.

use std::sync::Arc;

use conformance::{ALL, AZURE_CONNECTION_STRING, Target};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let mut args = Arguments::from_args();
    let target = match Target::azure_from_env() {
        Ok(Some(target)) => Some(Arc::new(target)),
        Ok(None) => {
            eprintln!(
                "azure conformance skipped: {AZURE_CONNECTION_STRING} is not set (see the README's Conformance section)"
            );
            None
        }
        Err(error) => {
            eprintln!("azure conformance cannot start: {error:#}");
            std::process::exit(1);
        }
    };
    args.test_threads = Some(1);
    let runtime = Arc::new(tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime"));
    let trials = ALL
        .iter()
        .map(|scenario| {
            let (runtime, target) = (runtime.clone(), target.clone());
            let skipped = target.is_none();
            Trial::test(format!("azure::{}", scenario.name), move || {
                let Some(target) = target else {
                    return Err(Failed::from(format!("{AZURE_CONNECTION_STRING} is not set")));
                };
                let report = runtime.block_on(conformance::run_scenario(target, scenario));
                if report.passed { Ok(()) } else { Err(Failed::from(report.detail)) }
            })
            .with_ignored_flag(skipped)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
