//! The conformance suite: scenarios that say how Azure IoT Hub behaves, each written once and run against two
//! targets: the in-process emulator (always, offline, in `cargo test`) and a real hub (when
//! `IOTHUB_CONNECTION_STRING` is set). Each scenario's observations are compared with its committed snapshot
//! (`conformance/snapshots`, taken on the emulator); against a real hub every difference is a failure with a
//! readable diff, so one run shows exactly where the emulator is wrong.

pub mod coverage;
pub mod raw;
pub mod run;
pub mod scenarios;
pub mod target;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use scenarios::{ALL, Scenario};
pub use target::{AZURE_CONNECTION_STRING, Target, TargetKind};

/// How one scenario went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub name: &'static str,
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub detail: String,
    pub took: Duration,
}

/// Compares `observed` with the scenario's committed snapshot (insta prints the diff on a difference).
fn check_snapshot(scenario: &Scenario, observed: &serde_json::Value) -> Result<(), String> {
    let compared = std::panic::catch_unwind(|| {
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => scenario.about,
        }, {
            insta::assert_json_snapshot!(scenario.name, observed);
        });
    });
    compared.map_err(|_| format!("observations differ from conformance/snapshots/{}.snap (diff above)", scenario.name))
}

/// Runs one scenario on `target`, cleans up what it made, and checks its observations.
pub async fn run_scenario(target: Arc<Target>, scenario: &Scenario) -> Report {
    let started = Instant::now();
    let run = run::Run::new(target, scenario.name);
    let result = (scenario.body)(&run).await;
    run.clean_up().await;
    let result = result.map_err(|e| format!("{e:#}")).and_then(|()| check_snapshot(scenario, &run.observations()));
    Report {
        name: scenario.name,
        passed: result.is_ok(),
        detail: result.err().unwrap_or_default(),
        took: started.elapsed(),
    }
}
