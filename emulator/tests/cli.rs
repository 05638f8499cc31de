//! The `iothub-emulator` binary: flags, start-up output, clear errors, clean stop.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command as AssertCommand;

const BIN: &str = env!("CARGO_BIN_EXE_iothub-emulator");

fn emulator() -> AssertCommand {
    let mut command = AssertCommand::new(BIN);
    command.env("RUST_LOG", "warn").timeout(Duration::from_secs(30));
    for var in
        ["IOTHUB_EMULATOR_BIND", "IOTHUB_EMULATOR_HTTPS_PORT", "IOTHUB_EMULATOR_MQTT_PORT", "IOTHUB_EMULATOR_DATA_DIR"]
    {
        command.env_remove(var);
    }
    command
}

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let output = emulator().arg("--help").assert().success().get_output().stdout.clone();
    let help = String::from_utf8(output).expect("utf-8");
    for (flag, env) in [
        ("--bind", "IOTHUB_EMULATOR_BIND"),
        ("--https-port", "IOTHUB_EMULATOR_HTTPS_PORT"),
        ("--mqtt-port", "IOTHUB_EMULATOR_MQTT_PORT"),
        ("--hostname", "IOTHUB_EMULATOR_HOSTNAME"),
        ("--data-dir", "IOTHUB_EMULATOR_DATA_DIR"),
        ("--in-memory", "IOTHUB_EMULATOR_IN_MEMORY"),
        ("--seed", "IOTHUB_EMULATOR_SEED"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        assert!(help.contains(env), "{env} missing from --help");
    }
    assert!(help.contains("443") && help.contains("8883"), "defaults are shown");
}

#[test]
fn bad_flags_are_usage_errors() {
    let unknown = emulator().arg("--no-such-flag").assert().code(2).get_output().stderr.clone();
    assert!(String::from_utf8_lossy(&unknown).contains("--no-such-flag"));
    let bad_port = emulator().args(["--https-port", "70000"]).assert().code(2).get_output().stderr.clone();
    assert!(String::from_utf8_lossy(&bad_port).contains("70000"));
    let bad_bind = emulator().args(["--bind", "not-an-ip"]).assert().code(2).get_output().stderr.clone();
    assert!(String::from_utf8_lossy(&bad_bind).contains("not-an-ip"));
}

/// Runs the emulator with `args` on `data_dir`, expects it to fail to start (exit 1) and returns its stderr.
fn failed_start(args: &[&str], data_dir: &std::path::Path) -> String {
    let output = emulator().args(args).arg("--data-dir").arg(data_dir).assert().code(1).get_output().stderr.clone();
    let stderr = String::from_utf8_lossy(&output).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let stderr = failed_start(&["--https-port", &port, "--mqtt-port", "0"], dir.path());
    assert!(stderr.contains(&format!("port {port} is already in use")), "{stderr}");
    assert!(stderr.contains("--https-port"), "says which flag to change: {stderr}");
}

#[test]
fn a_corrupt_data_file_is_a_clear_error_and_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = b"definitely not a redb file, someone put a note here";
    std::fs::write(dir.path().join("hub.redb"), garbage).expect("write");
    let stderr = failed_start(&["--https-port", "0", "--mqtt-port", "0"], dir.path());
    assert!(stderr.contains("not an iothub-emulator data file"), "{stderr}");
    assert_eq!(std::fs::read(dir.path().join("hub.redb")).expect("read"), garbage, "never a silent reset");
}

/// Starts the binary, reads its banner up to the trust hints, and returns the child and the banner.
fn start_and_read_banner(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .env("RUST_LOG", "warn")
        .env("IOTHUB_EMULATOR_HTTPS_PORT", "0")
        .env("IOTHUB_EMULATOR_MQTT_PORT", "0")
        .env("IOTHUB_EMULATOR_DATA_DIR", data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in lines.by_ref() {
        let line = line.expect("line");
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Python") || Instant::now() > deadline {
            break;
        }
    }
    // Keep draining, as a supervisor would; the emulator must not depend on it either way.
    std::thread::spawn(move || lines.for_each(drop));
    (child, banner)
}

fn stop(mut child: Child) {
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "SIGTERM is a clean stop: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "did not stop within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn start_prints_how_to_connect_and_restarts_with_the_same_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, banner) = start_and_read_banner(dir.path());
    stop(child);
    let ca = dir.path().join("ca.pem").display().to_string();
    for expected in [
        "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=",
        &format!("CA certificate: {ca}"),
        &format!("NODE_EXTRA_CA_CERTS={ca}"),
        &format!("REQUESTS_CA_BUNDLE={ca}"),
        "server_verification_cert",
    ] {
        assert!(banner.contains(expected), "banner lacks {expected:?}:\n{banner}");
    }
    let connection_string = |banner: &str| {
        banner.lines().find(|l| l.contains("HostName=")).map(|l| l.trim().to_owned()).expect("connection string")
    };
    let (child, second) = start_and_read_banner(dir.path());
    stop(child);
    assert_eq!(connection_string(&banner), connection_string(&second), "keys are stable across restarts");
}
