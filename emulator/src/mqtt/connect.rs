//! The CONNECT stage of an MQTT connection: who is connecting, and whether they may (wire-spec B.2, A.4).
//!
//! Pure decisions over the decoded packet; the session does the I/O.

use iothub_proto::SasToken;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode};

use crate::hub::Hub;

/// A connection the hub accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub device_id: String,
    pub keep_alive_secs: u16,
    pub clean_session: bool,
    /// When the SAS token expires (seconds since the epoch): the hub closes the connection then (wire-spec A.5),
    /// and clients reconnect with a fresh token.
    pub token_expiry: u64,
}

/// The parts of an IoT Hub MQTT user name: `<host>/<client id>/?api-version=...&DeviceClientType=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName<'a> {
    pub host: &'a str,
    pub client_id: &'a str,
    /// Everything after `?` (unparsed; extra parameters are tolerated).
    pub params: &'a str,
}

/// Splits a user name at the first `/?`; older clients omit the `?`, so `/api-version=` also ends the identity.
pub fn parse_user_name(user_name: &str) -> Option<UserName<'_>> {
    let (identity, params) = match user_name.split_once("/?") {
        Some(split) => split,
        None => match user_name.find("/api-version=") {
            Some(at) => (&user_name[..at], &user_name[at + 1..]),
            None => (user_name.trim_end_matches('/'), ""),
        },
    };
    let (host, client_id) = identity.split_once('/')?;
    (!host.is_empty() && !client_id.is_empty()).then_some(UserName { host, client_id, params })
}

fn same_host(given: &str, hub_host: &str) -> bool {
    let given = match given.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => given,
    };
    given.eq_ignore_ascii_case(hub_host)
}

/// Decides a CONNECT: the client id names a registered device (`<deviceId>`) or module
/// (`<deviceId>/<moduleId>`), the user name names this hub and that identity, and the password is a valid SAS
/// token for it. Every credential problem is return code 5, as on the hub.
pub fn check(hub: &Hub, connect: &Connect) -> Result<Accepted, ConnectReturnCode> {
    let refuse = |why: &str| {
        tracing::debug!(client_id = %connect.client_id, why, "CONNECT refused");
        ConnectReturnCode::NotAuthorized
    };
    if connect.client_id.is_empty() {
        return Err(ConnectReturnCode::BadClientId);
    }
    let login = connect.login.as_ref().ok_or_else(|| refuse("no user name and password"))?;
    let user = parse_user_name(&login.username).ok_or_else(|| refuse("user name is not <host>/<device id>/?..."))?;
    if !same_host(user.host, hub.host_name()) {
        return Err(refuse("user name names another hub"));
    }
    if user.client_id != connect.client_id {
        return Err(refuse("user name names another client id"));
    }
    if login.password.is_empty() {
        return Err(refuse("empty password"));
    }
    hub.authorize_device(&connect.client_id, &login.password).map_err(|_| ConnectReturnCode::NotAuthorized)?;
    let token_expiry =
        SasToken::parse(&login.password).map(|t| t.expiry).map_err(|_| ConnectReturnCode::NotAuthorized)?;
    Ok(Accepted {
        device_id: connect.client_id.clone(),
        keep_alive_secs: connect.keep_alive,
        clean_session: connect.clean_session,
        token_expiry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_from_both_sdks_and_old_clients_parse() {
        let node = "localhost/selftest-device/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)";
        let parsed = parse_user_name(node).expect("node");
        assert_eq!((parsed.host, parsed.client_id), ("localhost", "selftest-device"));
        assert!(parsed.params.starts_with("api-version=2021-04-12"));
        let python = "localhost/d/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0";
        assert_eq!(parse_user_name(python).expect("python").client_id, "d");
        let old_c = "hub.azure-devices.net/d1/api-version=2016-11-14&DeviceClientType=c";
        let parsed = parse_user_name(old_c).expect("old C client");
        assert_eq!((parsed.client_id, parsed.params), ("d1", "api-version=2016-11-14&DeviceClientType=c"));
        let module = parse_user_name("h/d1/m1/?api-version=x").expect("module");
        assert_eq!(module.client_id, "d1/m1");
        assert_eq!(parse_user_name("justahost"), None);
        assert_eq!(parse_user_name("/d/?x"), None);
    }

    #[test]
    fn host_comparison_ignores_case_and_port() {
        assert!(same_host("LocalHost:8883", "localhost"));
        assert!(!same_host("otherhost", "localhost"));
    }
}
