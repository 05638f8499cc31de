//! The `iothub-emulator` binary: flags, start-up output, clear errors, clean stop.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command as AssertCommand;
use futures_util::{SinkExt as _, StreamExt as _};

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
    let stderr = failed_start(&["--https-port", &port, "--mqtt-port", "0", "--amqp-port", "0"], dir.path());
    assert!(stderr.contains(&format!("port {port} is already in use")), "{stderr}");
    assert!(stderr.contains("--https-port"), "says which flag to change: {stderr}");
}

#[test]
fn a_corrupt_data_file_is_a_clear_error_and_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = b"definitely not a redb file, someone put a note here";
    std::fs::write(dir.path().join("hub.redb"), garbage).expect("write");
    let stderr = failed_start(&["--https-port", "0", "--mqtt-port", "0", "--amqp-port", "0"], dir.path());
    assert!(stderr.contains("not an iothub-emulator data file"), "{stderr}");
    assert_eq!(std::fs::read(dir.path().join("hub.redb")).expect("read"), garbage, "never a silent reset");
}

/// Starts the binary, reads its banner up to the trust hints, and returns the child and the banner.
fn start_and_read_banner(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .env("RUST_LOG", "warn")
        .env("IOTHUB_EMULATOR_HTTPS_PORT", "0")
        .env("IOTHUB_EMULATOR_MQTT_PORT", "0")
        // Ephemeral AMQP too: tests run side by side, and two emulators on 5671 would collide.
        .env("IOTHUB_EMULATOR_AMQP_PORT", "0")
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

/// The binary started with `extra` args and `RUST_LOG=log_level`, its stderr kept in `log`; returns the
/// child, its banner, and the HTTPS and MQTT ports it bound.
fn start_logged(
    data_dir: &std::path::Path,
    extra: &[&str],
    log_level: &str,
    log: &std::path::Path,
) -> (Child, String, u16, u16) {
    let mut child = Command::new(BIN)
        .env("RUST_LOG", log_level)
        .args(["--https-port", "0", "--mqtt-port", "0", "--amqp-port", "0"])
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Python") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let port = |label: &str| -> u16 {
        let line = banner.lines().find(|l| l.contains(label)).expect("address line");
        let bound = line.split("bound to ").nth(1).expect("bound to").split(')').next().expect("addr");
        bound.rsplit(':').next().expect("port").parse().expect("port number")
    };
    let (https, mqtt) = (port("service API"), port("devices "));
    (child, banner, https, mqtt)
}

mod wire {
    //! Just enough HTTPS and MQTT to drive the binary from the outside.
    use std::sync::Arc;

    use futures_util::{SinkExt as _, StreamExt as _};
    use rumqttc::mqttbytes::v4::{Codec, Connect, Packet};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    use tokio_util::codec::Framed;

    pub fn tls(ca_pem: &str) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.expect("pem")).expect("root");
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    pub fn http(ca_pem: &str, port: u16) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls(ca_pem))
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .build()
            .expect("client")
    }

    pub type Mqtt = Framed<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Codec>;

    /// Connects `device_id` with `password` and returns the stream and the CONNACK code (0 = accepted).
    /// Creates `device_id` over the service API on `https` and returns the device the hub answered.
    pub async fn create_device(http: &reqwest::Client, https: u16, token: &str, device_id: &str) -> serde_json::Value {
        http.put(format!("https://localhost:{https}/devices/{device_id}?api-version=2021-04-12"))
            .header("Authorization", token)
            .json(&serde_json::json!({"deviceId": device_id}))
            .send()
            .await
            .expect("put")
            .json()
            .await
            .expect("json")
    }

    /// A device SAS token for `device_id`, valid for ten minutes.
    pub fn device_token(device_id: &str, key: &str) -> String {
        let expiry = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 600;
        iothub_proto::generate_token(&format!("localhost/devices/{device_id}"), key, None, expiry).expect("token")
    }

    pub async fn connect(ca_pem: &str, port: u16, device_id: &str, password: &str) -> (Mqtt, u8) {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls(ca_pem))).connect(name, tcp).await.expect("tls");
        let mut mqtt = Framed::new(stream, Codec { max_incoming_size: 1 << 20, max_outgoing_size: 1 << 20 });
        let mut connect = Connect::new(device_id);
        connect.keep_alive = 60;
        connect.set_login(format!("localhost/{device_id}/?api-version=2021-04-12"), password);
        mqtt.send(Packet::Connect(connect)).await.expect("connect");
        match mqtt.next().await {
            Some(Ok(Packet::ConnAck(ack))) => (mqtt, ack.code as u8),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

fn owner(data_dir: &std::path::Path) -> (String, String) {
    let policies: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir.join("policies.json")).expect("policies"))
            .expect("json");
    let owner = policies["sharedAccessPolicies"]
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["keyName"] == "iothubowner")
        .expect("owner")
        .clone();
    let key = owner["primaryKey"].as_str().expect("key").to_owned();
    let expiry = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 600;
    (iothub_proto::generate_token("localhost", &key, Some("iothubowner"), expiry).expect("token"), key)
}

#[tokio::test]
async fn sigterm_commits_acknowledged_writes_and_closes_devices_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log.txt");
    let (child, _, https, mqtt_port) = start_logged(dir.path(), &[], "warn", &log);
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca");
    let (token, _) = owner(dir.path());
    let http = wire::http(&ca, https);
    let url = |path: &str| format!("https://localhost:{https}{path}?api-version=2021-04-12");
    let created = wire::create_device(&http, https, &token, "keep").await;
    let key = created["authentication"]["symmetricKey"]["primaryKey"].as_str().expect("key").to_owned();
    let patch = serde_json::json!({"properties": {"desired": {"kept": true}}});
    let answer = http
        .patch(url("/twins/keep"))
        .header("Authorization", &token)
        .header("If-Match", "*")
        .json(&patch)
        .send()
        .await
        .expect("patch");
    assert_eq!(answer.status(), 200);
    let device_token = wire::device_token("keep", &key);
    let (mut device, code) = wire::connect(&ca, mqtt_port, "keep", &device_token).await;
    assert_eq!(code, 0);

    stop(child);
    // The device sees the connection end cleanly: a TLS close, not a reset.
    let end = tokio::time::timeout(Duration::from_secs(5), device.next()).await.expect("closed in time");
    assert!(end.is_none(), "a clean end of stream, got {end:?}");

    let (child, _, https, _) = start_logged(dir.path(), &[], "warn", &log);
    let http = wire::http(&ca, https);
    let url = format!("https://localhost:{https}/twins/keep?api-version=2021-04-12");
    let twin: serde_json::Value =
        http.get(url).header("Authorization", &token).send().await.expect("get").json().await.expect("json");
    assert_eq!(twin["properties"]["desired"]["kept"], true, "what was acknowledged before SIGTERM is kept");
    stop(child);
}

#[tokio::test]
async fn keys_and_tokens_never_reach_the_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log.txt");
    let (child, _, https, mqtt_port) = start_logged(dir.path(), &[], "trace", &log);
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca");
    let (token, _) = owner(dir.path());
    let http = wire::http(&ca, https);
    let url = |path: &str| format!("https://localhost:{https}{path}?api-version=2021-04-12");
    let created = wire::create_device(&http, https, &token, "secret").await;
    let key = created["authentication"]["symmetricKey"]["primaryKey"].as_str().expect("key").to_owned();
    let secondary = created["authentication"]["symmetricKey"]["secondaryKey"].as_str().expect("key").to_owned();
    let bad = token.replace("sig=", "sig=AAAA");
    assert_eq!(http.get(url("/devices/secret")).header("Authorization", &bad).send().await.expect("get").status(), 401);
    let device_token = wire::device_token("secret", &key);
    let (mut device, code) = wire::connect(&ca, mqtt_port, "secret", &device_token).await;
    assert_eq!(code, 0);
    device.close().await.ok();
    let (_, refused) = wire::connect(&ca, mqtt_port, "secret", &bad).await;
    assert_eq!(refused, 5);
    stop(child);

    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(logs.lines().count() > 20, "trace logging was on: {} lines", logs.lines().count());
    let policies = std::fs::read_to_string(dir.path().join("policies.json")).expect("policies");
    let policies: serde_json::Value = serde_json::from_str(&policies).expect("json");
    let mut secrets: Vec<String> = policies["sharedAccessPolicies"]
        .as_array()
        .expect("list")
        .iter()
        .flat_map(|p| {
            [
                p["primaryKey"].as_str().unwrap_or_default().to_owned(),
                p["secondaryKey"].as_str().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    secrets.extend([key, secondary, token.clone(), device_token.clone(), bad.clone()]);
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a key or token is in the logs");
    }
    let signature = |t: &str| t.split("sig=").nth(1).and_then(|s| s.split('&').next()).unwrap_or_default().to_owned();
    for sig in [signature(&token), signature(&device_token)] {
        assert!(!logs.contains(&sig), "a signature is in the logs");
    }
    assert!(!logs.contains("SharedAccessSignature sr="), "a token is in the logs");
}

#[test]
fn binding_beyond_loopback_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log.txt");
    let (child, banner, _, _) = start_logged(dir.path(), &["--bind", "0.0.0.0"], "warn", &log);
    stop(child);
    assert!(banner.contains("WARNING: bound to 0.0.0.0"), "{banner}");
    assert!(std::fs::read_to_string(&log).expect("log").contains("listening beyond loopback"));
}
