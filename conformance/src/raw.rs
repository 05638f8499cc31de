//! Requests the Rust clients would never make (a wrong or expired SAS token, a malformed body), sent by hand so
//! the bad-input scenarios can see the hub's exact answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use rumqttc::mqttbytes::v4::{Codec, Connect, ConnectReturnCode, Packet};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::target::Target;

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The status and `iothub-errorcode` of a REST call sent with `token` as its Authorization.
pub async fn service_call(
    target: &Target,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Option<String>)> {
    let client = reqwest::Client::builder().tls_backend_preconfigured((*target.tls).clone()).build()?;
    let url = format!("https://{}:{}{path}", target.host_name, target.https_port);
    let mut request =
        client.request(method, url).query(&[("api-version", "2021-04-12")]).header("Authorization", token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await?;
    let code = response.headers().get("iothub-errorcode").and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok((response.status().as_u16(), code))
}

/// The JSON body of a GET with the target policy's own token: the wire document as the hub sends it (the
/// typed clients would re-serialise their own view of it).
pub async fn get_json(target: &Target, path: &str) -> anyhow::Result<Value> {
    let token = policy_token(target, &policy_key(target)?, unix_now() + 600)?;
    let client = reqwest::Client::builder().tls_backend_preconfigured((*target.tls).clone()).build()?;
    let url = format!("https://{}:{}{path}", target.host_name, target.https_port);
    let response =
        client.get(url).query(&[("api-version", "2021-04-12")]).header("Authorization", token).send().await?;
    anyhow::ensure!(response.status().is_success(), "GET {path} answered {}", response.status());
    Ok(response.json().await?)
}

/// A policy token for the target's hub, signed with `key`, expiring at `expiry`.
pub fn policy_token(target: &Target, key: &str, expiry: u64) -> anyhow::Result<String> {
    let cs: iothub_proto::ServiceConnectionString = target.connection_string.parse()?;
    Ok(iothub_proto::generate_token(&target.host_name, key, Some(&cs.key_name), expiry)?)
}

/// The target policy's own key.
pub fn policy_key(target: &Target) -> anyhow::Result<String> {
    let cs: iothub_proto::ServiceConnectionString = target.connection_string.parse()?;
    Ok(cs.key)
}

/// The CONNACK return code the hub answers a CONNECT of `device_id` with `password`.
pub async fn mqtt_connack(target: &Target, device_id: &str, password: &str) -> anyhow::Result<u8> {
    let tcp = TcpStream::connect((target.host_name.as_str(), target.mqtt_port)).await?;
    let name = rustls_pki_types::ServerName::try_from(target.host_name.clone())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&target.tls)).connect(name, tcp).await?;
    let mut mqtt = Framed::new(tls, Codec { max_incoming_size: 1 << 16, max_outgoing_size: 1 << 16 });
    let mut connect = Connect::new(device_id);
    connect.keep_alive = 60;
    connect.clean_session = false;
    connect.set_login(format!("{}/{device_id}/?api-version=2021-04-12", target.host_name), password);
    mqtt.send(Packet::Connect(connect)).await?;
    match tokio::time::timeout(Duration::from_secs(30), mqtt.next()).await {
        Ok(Some(Ok(Packet::ConnAck(ack)))) => Ok(match ack.code {
            ConnectReturnCode::Success => 0,
            ConnectReturnCode::RefusedProtocolVersion => 1,
            ConnectReturnCode::BadClientId => 2,
            ConnectReturnCode::ServiceUnavailable => 3,
            ConnectReturnCode::BadUserNamePassword => 4,
            ConnectReturnCode::NotAuthorized => 5,
        }),
        Ok(other) => anyhow::bail!("expected CONNACK, got {other:?}"),
        Err(_) => anyhow::bail!("no CONNACK within 30 s"),
    }
}

/// A device token for `device_id`, signed with `key`, expiring at `expiry`.
pub fn device_token(target: &Target, device_id: &str, key: &str, expiry: u64) -> anyhow::Result<String> {
    Ok(iothub_proto::generate_token(&format!("{}/devices/{device_id}", target.host_name), key, None, expiry)?)
}
