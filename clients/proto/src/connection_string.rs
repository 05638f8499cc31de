//! IoT Hub connection strings: `Key=Value` pairs joined by `;` (wire-spec A.1).
//!
//! Parsing follows the stricter Python SDK (every element needs `=`, no duplicates) but tolerates a trailing
//! `;` like Node. Formatting never writes a trailing `;` or unknown keys, because the Python SDK refuses both.

use std::fmt;

/// Keys the SDKs know; anything else is refused so typos surface early.
const KNOWN_KEYS: [&str; 7] = [
    "HostName",
    "SharedAccessKeyName",
    "SharedAccessKey",
    "SharedAccessSignature",
    "DeviceId",
    "ModuleId",
    "GatewayHostName",
];

/// Why a connection string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// An element has no `=` or an empty key; holds the element.
    #[error("element '{0}' is not of the form Key=Value")]
    NotKeyValue(String),
    /// A key appears more than once; holds the key.
    #[error("key '{0}' appears more than once")]
    Duplicate(String),
    /// A key the SDKs do not know (often a typo); holds the key.
    #[error("unknown key '{0}'")]
    UnknownKey(String),
    /// A required key is absent or has an empty value; holds the key.
    #[error("required key '{0}' is missing")]
    Missing(&'static str),
}

/// A hub-level (service) connection string: `HostName=..;SharedAccessKeyName=..;SharedAccessKey=..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConnectionString {
    /// `HostName`: the hub's host name, e.g. `myhub.azure-devices.net`.
    pub host_name: String,
    /// `SharedAccessKeyName`: the shared access policy the key belongs to, e.g. `iothubowner`.
    pub key_name: String,
    /// `SharedAccessKey`: the policy's key (base64), which signs service SAS tokens.
    pub key: String,
}

/// A device or module connection string: `HostName=..;DeviceId=..[;ModuleId=..];SharedAccessKey=..
/// [;GatewayHostName=..]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConnectionString {
    /// `HostName`: the hub's host name, which device SAS tokens name in their resource.
    pub host_name: String,
    /// `DeviceId`: the device the string authenticates as (for a module: the module's device).
    pub device_id: String,
    /// `ModuleId`: the module the string authenticates as, for a module identity.
    pub module_id: Option<String>,
    /// `SharedAccessKey`: the device's or module's key (base64), which signs its SAS tokens.
    pub key: String,
    /// Where to open the connection when it differs from `host_name` (may carry `:port` for local use).
    pub gateway_host_name: Option<String>,
}

fn parse_pairs(text: &str) -> Result<Vec<(&str, &str)>, ConnectionStringError> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for element in text.trim().trim_end_matches(';').split(';') {
        let (key, value) = element
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| ConnectionStringError::NotKeyValue(element.to_owned()))?;
        if !KNOWN_KEYS.contains(&key) {
            return Err(ConnectionStringError::UnknownKey(key.to_owned()));
        }
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(ConnectionStringError::Duplicate(key.to_owned()));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn required(pairs: &[(&str, &str)], key: &'static str) -> Result<String, ConnectionStringError> {
    optional(pairs, key).ok_or(ConnectionStringError::Missing(key))
}

fn optional(pairs: &[(&str, &str)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, v)| *k == key && !v.is_empty()).map(|(_, v)| (*v).to_owned())
}

impl std::str::FromStr for ServiceConnectionString {
    type Err = ConnectionStringError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let pairs = parse_pairs(text)?;
        Ok(Self {
            host_name: required(&pairs, "HostName")?,
            key_name: required(&pairs, "SharedAccessKeyName")?,
            key: required(&pairs, "SharedAccessKey")?,
        })
    }
}

impl fmt::Display for ServiceConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName={};SharedAccessKeyName={};SharedAccessKey={}", self.host_name, self.key_name, self.key)
    }
}

impl std::str::FromStr for DeviceConnectionString {
    type Err = ConnectionStringError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let pairs = parse_pairs(text)?;
        Ok(Self {
            host_name: required(&pairs, "HostName")?,
            device_id: required(&pairs, "DeviceId")?,
            module_id: optional(&pairs, "ModuleId"),
            key: required(&pairs, "SharedAccessKey")?,
            gateway_host_name: optional(&pairs, "GatewayHostName"),
        })
    }
}

impl fmt::Display for DeviceConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName={};DeviceId={}", self.host_name, self.device_id)?;
        if let Some(module_id) = &self.module_id {
            write!(f, ";ModuleId={module_id}")?;
        }
        write!(f, ";SharedAccessKey={}", self.key)?;
        if let Some(gateway) = &self.gateway_host_name {
            write!(f, ";GatewayHostName={gateway}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_string_round_trips() {
        let text = "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=AAAA";
        let parsed: ServiceConnectionString = text.parse().expect("parse");
        assert_eq!(parsed.key_name, "iothubowner");
        assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn device_string_keeps_base64_padding_and_gateway() {
        let text = "HostName=h;DeviceId=d1;SharedAccessKey=ab+/cd==;GatewayHostName=127.0.0.1:8883;";
        let parsed: DeviceConnectionString = text.parse().expect("parse");
        assert_eq!(parsed.key, "ab+/cd==");
        assert_eq!(parsed.gateway_host_name.as_deref(), Some("127.0.0.1:8883"));
        assert_eq!(parsed.to_string(), text.trim_end_matches(';'));
    }

    #[test]
    fn bad_strings_say_why() {
        let bad = |s: &str| s.parse::<ServiceConnectionString>().expect_err(s);
        assert_eq!(bad("HostName=h;Oops"), ConnectionStringError::NotKeyValue("Oops".into()));
        assert_eq!(bad("HostName=h;HostName=i"), ConnectionStringError::Duplicate("HostName".into()));
        assert_eq!(bad("HostName=h;Foo=1"), ConnectionStringError::UnknownKey("Foo".into()));
        assert_eq!(bad("HostName=h;SharedAccessKey=k"), ConnectionStringError::Missing("SharedAccessKeyName"));
    }
}
