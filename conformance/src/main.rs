//! `cargo run -p conformance -- --target emulator|azure`: runs the scenarios and prints a table, so a user can
//! check their own hub (or a new emulator build). `--coverage` prints the README's coverage table.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use conformance::{AZURE_CONNECTION_STRING, Target};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Which {
    /// A fresh in-process emulator (offline).
    Emulator,
    /// The real hub in IOTHUB_CONNECTION_STRING (its policy needs registry read/write and service connect).
    Azure,
}

/// Runs the conformance scenarios against the emulator or a real Azure IoT Hub.
#[derive(Debug, Parser)]
#[command(name = "conformance")]
struct Cli {
    /// Where to run.
    #[arg(long, value_enum, default_value = "emulator")]
    target: Which,
    /// Run only these scenarios (by name).
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Print the coverage table (Markdown) and exit.
    #[arg(long)]
    coverage: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.coverage {
        print!("{}", conformance::coverage::markdown());
        return ExitCode::SUCCESS;
    }
    let target = match cli.target {
        Which::Emulator => Target::emulator().await.map(Some),
        Which::Azure => Target::azure_from_env(),
    };
    let target = match target {
        Ok(Some(target)) => Arc::new(target),
        Ok(None) => {
            eprintln!(
                "{AZURE_CONNECTION_STRING} is not set: give a hub connection string whose policy can read and write the registry and connect as a service"
            );
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("cannot reach the target: {error:#}");
            return ExitCode::from(2);
        }
    };
    let selected: Vec<_> = conformance::ALL
        .iter()
        .filter(|s| cli.scenarios.is_empty() || cli.scenarios.iter().any(|n| n == s.name))
        .collect();
    if selected.is_empty() {
        eprintln!(
            "no scenario matches; the scenarios are: {}",
            conformance::ALL.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        );
        return ExitCode::from(2);
    }
    let mut reports = Vec::new();
    for (index, scenario) in selected.iter().enumerate() {
        eprint!("\r\x1b[2K[{}/{}] {} ...", index + 1, selected.len(), scenario.name);
        let _ = std::io::stderr().flush();
        reports.push(conformance::run_scenario(target.clone(), scenario).await);
    }
    eprintln!("\r\x1b[2K");
    println!("conformance against the {}", target.kind.name());
    for report in &reports {
        let verdict = if report.passed { "PASS" } else { "FAIL" };
        let detail = if report.passed { String::new() } else { format!(": {}", report.detail) };
        println!("{verdict} {} ({:.1} s){detail}", report.name, report.took.as_secs_f64());
    }
    let passed = reports.iter().filter(|r| r.passed).count();
    println!("{passed} passed, {} failed", reports.len() - passed);
    if let Some(emulator) = Arc::into_inner(target).and_then(|t| t.emulator) {
        emulator.shutdown().await;
    }
    if passed == reports.len() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
