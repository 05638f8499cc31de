//! Shared access policies and SAS authorization: who may do what.
//!
//! Policies mirror a new hub's (wire-spec A.4.6). Their keys are generated once per data dir and kept in
//! `policies.json` (mode 0600), so connection strings stay the same across restarts; a user can edit that file
//! to pin keys. Nothing here logs a key or a token: failures carry a reason for the logs, never the secret.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use iothub_proto::sas::{SasParseError, SasToken, resource_covers};
use serde::{Deserialize, Serialize};

use crate::domain::registry::{Device, DeviceStatus, generate_key};

/// File holding the policies inside the data dir.
pub const POLICIES_FILE: &str = "policies.json";

/// A set of permissions, as a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights(u8);

impl Rights {
    pub const REGISTRY_READ: Self = Self(1);
    pub const REGISTRY_WRITE: Self = Self(2);
    pub const SERVICE_CONNECT: Self = Self(4);
    pub const DEVICE_CONNECT: Self = Self(8);
    const NAMES: [(Self, &'static str); 4] = [
        (Self::REGISTRY_READ, "RegistryRead"),
        (Self::REGISTRY_WRITE, "RegistryWrite"),
        (Self::SERVICE_CONNECT, "ServiceConnect"),
        (Self::DEVICE_CONNECT, "DeviceConnect"),
    ];

    /// Every permission.
    pub const fn all() -> Self {
        Self(15)
    }

    /// Both sets together.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// True when every permission of `other` is in this set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when the two sets share a permission.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Parses Azure's comma-separated form, e.g. `"RegistryWrite, ServiceConnect"`. RegistryWrite implies
    /// RegistryRead, as on a real hub.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rights = Self::default();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let (right, _) = Self::NAMES
                .iter()
                .find(|(_, n)| n.eq_ignore_ascii_case(name))
                .ok_or_else(|| format!("unknown permission '{name}'"))?;
            rights = rights.union(*right);
        }
        if rights.intersects(Self::REGISTRY_WRITE) {
            rights = rights.union(Self::REGISTRY_READ);
        }
        Ok(rights)
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Self::NAMES.iter().filter(|(r, _)| self.intersects(*r)).map(|(_, n)| *n).collect();
        f.write_str(&names.join(", "))
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rights({self})")
    }
}

impl Serialize for Rights {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rights {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One shared access policy.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub key_name: String,
    pub primary_key: String,
    pub secondary_key: String,
    pub rights: Rights,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are secrets: never printed.
        f.debug_struct("Policy").field("key_name", &self.key_name).field("rights", &self.rights).finish_non_exhaustive()
    }
}

impl Policy {
    fn decoded_keys(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        [&self.primary_key, &self.secondary_key].into_iter().filter_map(|k| BASE64.decode(k.as_bytes()).ok())
    }

    /// The keys as HMAC keys in both conventions: base64-decoded (IoT Hub SDKs) and the key text's UTF-8 bytes
    /// (Event Hubs SDKs, which the built-in endpoint must accept with the hub's own policy keys).
    fn keys_either_convention(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.decoded_keys().chain([&self.primary_key, &self.secondary_key].map(|k| k.as_bytes().to_vec()))
    }
}

/// Problems reading the policies file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: String, source: std::io::Error },
    #[error("{path} is not a valid policies file ({detail}); fix it, or remove it to generate new keys")]
    Invalid { path: String, detail: String },
}

/// The hub's shared access policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    shared_access_policies: Vec<Policy>,
}

/// The policy whose connection string the emulator prints.
pub const OWNER_POLICY: &str = "iothubowner";

impl Policies {
    /// The five policies of a new hub, with fresh keys.
    pub fn generate() -> Self {
        let make = |name: &str, rights: Rights| Policy {
            key_name: name.to_owned(),
            primary_key: generate_key(),
            secondary_key: generate_key(),
            rights,
        };
        let all = Rights::REGISTRY_READ
            .union(Rights::REGISTRY_WRITE)
            .union(Rights::SERVICE_CONNECT)
            .union(Rights::DEVICE_CONNECT);
        Self {
            shared_access_policies: vec![
                make(OWNER_POLICY, all),
                make("service", Rights::SERVICE_CONNECT),
                make("device", Rights::DEVICE_CONNECT),
                make("registryRead", Rights::REGISTRY_READ),
                make("registryReadWrite", Rights::REGISTRY_READ.union(Rights::REGISTRY_WRITE)),
            ],
        }
    }

    /// Reads `policies.json` from `dir`, or generates the policies and writes them there.
    pub fn load_or_create(dir: &Path) -> Result<Self, PolicyError> {
        let path = dir.join(POLICIES_FILE);
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let policies: Self = serde_json::from_str(&text)
                    .map_err(|e| PolicyError::Invalid { path: shown.clone(), detail: e.to_string() })?;
                policies.validate().map_err(|detail| PolicyError::Invalid { path: shown, detail })?;
                Ok(policies)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let policies = Self::generate();
                let mut text = serde_json::to_string_pretty(&policies).unwrap_or_default();
                text.push('\n');
                crate::tls::write_private(&path, text.as_bytes(), true).map_err(|source| PolicyError::Io {
                    action: "write",
                    path: shown,
                    source,
                })?;
                Ok(policies)
            }
            Err(source) => Err(PolicyError::Io { action: "read", path: shown, source }),
        }
    }

    fn validate(&self) -> Result<(), String> {
        for policy in &self.shared_access_policies {
            for key in [&policy.primary_key, &policy.secondary_key] {
                if BASE64.decode(key.as_bytes()).map(|k| k.is_empty()).unwrap_or(true) {
                    return Err(format!("policy '{}' has a key that is not base64", policy.key_name));
                }
            }
        }
        if self.get(OWNER_POLICY).is_none() {
            return Err(format!("the '{OWNER_POLICY}' policy is missing"));
        }
        Ok(())
    }

    /// The policy named `name` (exact match, wire-spec H.2).
    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.shared_access_policies.iter().find(|p| p.key_name == name)
    }

    /// All policies.
    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.shared_access_policies.iter()
    }
}

/// Who a request was authorized as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A shared access policy.
    Policy { name: String, rights: Rights },
    /// A device, with a token signed by its own key.
    Device { device_id: String },
}

/// Why authorization failed. Every variant becomes the same 401 / CONNACK 5; the text is for logs only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no Authorization header")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(#[from] SasParseError),
    #[error("token expired")]
    Expired,
    #[error("unknown policy '{0}'")]
    UnknownPolicy(String),
    #[error("signature does not match")]
    BadSignature,
    #[error("token resource does not cover {0}")]
    WrongScope(String),
    #[error("policy '{policy}' lacks {needed}")]
    MissingPermission { policy: String, needed: Rights },
    #[error("device tokens cannot call service APIs")]
    DeviceTokenOnServiceApi,
    #[error("device is disabled")]
    DeviceDisabled,
}

/// Strips a `:port` from the host part of a token resource, so tokens made for `localhost:8443` (the Python
/// service SDK puts the port in `HostName`) cover `localhost/...`.
fn without_port(resource: &str) -> String {
    let (host, rest) = resource.split_once('/').map_or((resource, ""), |(h, r)| (h, r));
    let host = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    if rest.is_empty() { host.to_owned() } else { format!("{host}/{rest}") }
}

fn parse_live(token_text: &str, now: u64) -> Result<SasToken, AuthFailure> {
    let token = SasToken::parse(token_text)?;
    if token.is_expired_at(now) {
        return Err(AuthFailure::Expired);
    }
    Ok(token)
}

fn check_scope(token: &SasToken, target: &str) -> Result<(), AuthFailure> {
    if resource_covers(&without_port(&token.resource), target) {
        Ok(())
    } else {
        Err(AuthFailure::WrongScope(target.to_owned()))
    }
}

fn check_policy<'a>(
    policies: &'a Policies,
    token: &SasToken,
    name: &str,
    needed: Rights,
) -> Result<&'a Policy, AuthFailure> {
    let policy = policies.get(name).ok_or_else(|| AuthFailure::UnknownPolicy(name.to_owned()))?;
    if !policy.decoded_keys().any(|key| token.is_signed_with(&key)) {
        return Err(AuthFailure::BadSignature);
    }
    check_rights(policy, needed)
}

fn check_rights(policy: &Policy, needed: Rights) -> Result<&Policy, AuthFailure> {
    if !policy.rights.intersects(needed) {
        return Err(AuthFailure::MissingPermission { policy: policy.key_name.clone(), needed });
    }
    Ok(policy)
}

/// A resource without its scheme: Event Hubs clients sign `sb://<host>/<hub>/...`.
fn without_scheme(resource: &str) -> &str {
    resource.split_once("://").map_or(resource, |(_, rest)| rest)
}

/// Authorizes a service API call on `target` (`<host>/<path>`) that needs any one of `needed`.
pub fn authorize_service(
    policies: &Policies,
    token_text: &str,
    target: &str,
    needed: Rights,
    now: u64,
) -> Result<Principal, AuthFailure> {
    let token = parse_live(token_text, now)?;
    let name = token.key_name.clone().ok_or(AuthFailure::DeviceTokenOnServiceApi)?;
    check_scope(&token, target)?;
    let policy = check_policy(policies, &token, &name, needed)?;
    Ok(Principal::Policy { name: policy.key_name.clone(), rights: policy.rights })
}

/// What a token put on an AMQP connection grants (claims-based security): the token's resource, the rights of
/// its policy (or DeviceConnect for a device's or module's own token), until the token expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The token's resource without a port, e.g. `myhub.azure-devices.net`, `.../messages/devicebound` or
    /// `<host>/devices/<id>`.
    pub resource: String,
    /// The policy that signed it; empty for an identity's own token.
    pub policy: String,
    /// The identity (`<deviceId>` or `<deviceId>/<moduleId>`) whose own key signed it, if it is such a token.
    pub identity: Option<String>,
    pub rights: Rights,
    /// Seconds since the Unix epoch.
    pub expires: u64,
}

impl Claim {
    /// True when the claim covers `target` (`<host>/<path>`) with any of `needed`, at `now`. A device's own
    /// token does not reach into its modules (`.../devices/d/modules/m`): each module proves itself.
    pub fn allows(&self, target: &str, needed: Rights, now: u64) -> bool {
        let covers = iothub_proto::sas::resource_covers(&self.resource, target);
        let into_a_module = self.identity.as_deref().is_some_and(|key| !key.contains('/'))
            && target.get(self.resource.len()..).is_some_and(|rest| rest.starts_with("/modules/"));
        self.expires > now && self.rights.intersects(needed) && covers && !into_a_module
    }

    /// True when both claims come from the same signer for the same resource (a renewal replaces the older).
    pub fn same_grant(&self, other: &Claim) -> bool {
        self.resource.eq_ignore_ascii_case(&other.resource)
            && self.policy == other.policy
            && self.identity == other.identity
    }
}

/// Checks a policy token put on a connection for `audience` (the put-token `name`; a scheme and a port are
/// ignored): it must be live, signed by a known policy (its key base64-decoded as IoT Hub SDKs sign, or as text
/// as Event Hubs SDKs sign), and its resource must cover the audience.
pub fn verify_claim(
    policies: &Policies,
    host: &str,
    token_text: &str,
    audience: &str,
    now: u64,
) -> Result<Claim, AuthFailure> {
    let token = parse_live(token_text, now)?;
    let name = token.key_name.clone().ok_or(AuthFailure::DeviceTokenOnServiceApi)?;
    let audience = without_port(without_scheme(audience).trim_end_matches('/'));
    // Only this hub's own nodes: a well-signed token for another hub's name is no claim here.
    let audience_host = audience.split_once('/').map_or(audience.as_str(), |(h, _)| h);
    if !audience_host.eq_ignore_ascii_case(host) {
        return Err(AuthFailure::WrongScope(audience));
    }
    let resource = without_port(without_scheme(&token.resource));
    if !resource_covers(&resource, &audience) {
        return Err(AuthFailure::WrongScope(audience));
    }
    let policy = policies.get(&name).ok_or_else(|| AuthFailure::UnknownPolicy(name.clone()))?;
    if !policy.keys_either_convention().any(|key| token.is_signed_with(&key)) {
        return Err(AuthFailure::BadSignature);
    }
    Ok(Claim { resource, policy: name, identity: None, rights: policy.rights, expires: token.expiry })
}

/// The identity key a device or module token's resource names (`<host>/devices/<id>[/modules/<mid>]`), if it
/// names one on this hub (ids percent-decoded, as the SDKs encode them).
pub fn identity_of_resource(host: &str, resource: &str) -> Option<String> {
    let resource = without_port(without_scheme(resource).trim_end_matches('/'));
    let (resource_host, path) = resource.split_once('/')?;
    if !resource_host.eq_ignore_ascii_case(host) {
        return None;
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|d| d.into_owned());
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("devices"), Some(device), None, ..) if !device.is_empty() => decode(device),
        (Some("devices"), Some(device), Some("modules"), Some(module), None)
            if !device.is_empty() && !module.is_empty() =>
        {
            Some(format!("{}/{}", decode(device)?, decode(module)?))
        }
        _ => None,
    }
}

/// Checks a device's or module's own token put on a connection (`identity` is the record its resource names):
/// live, signed with one of the identity's keys, for a resource covering the audience, and the identity enabled.
pub fn verify_identity_claim(
    host: &str,
    token_text: &str,
    audience: &str,
    identity: &Device,
    now: u64,
) -> Result<Claim, AuthFailure> {
    let token = parse_live(token_text, now)?;
    if token.key_name.is_some() {
        return Err(AuthFailure::WrongScope(audience.to_owned()));
    }
    let resource = without_port(without_scheme(&token.resource).trim_end_matches('/'));
    let audience = without_port(without_scheme(audience).trim_end_matches('/'));
    let own = format!("{host}/{}", identity.resource());
    if !resource_covers(&own, &resource) || !resource_covers(&resource, &audience) {
        return Err(AuthFailure::WrongScope(audience));
    }
    if !identity.authentication.symmetric_keys().any(|key| token.is_signed_with(&key)) {
        return Err(AuthFailure::BadSignature);
    }
    if identity.status == DeviceStatus::Disabled {
        return Err(AuthFailure::DeviceDisabled);
    }
    Ok(Claim {
        resource,
        policy: String::new(),
        identity: Some(identity.key().into_owned()),
        rights: Rights::DEVICE_CONNECT,
        expires: token.expiry,
    })
}

/// Authorizes a device connection for `device`: a token signed with the device's key for `<host>/devices/<id>`,
/// or a policy token with DeviceConnect whose resource covers it. Disabled devices are refused.
pub fn authorize_device(
    policies: &Policies,
    host: &str,
    token_text: &str,
    device: &Device,
    now: u64,
) -> Result<Principal, AuthFailure> {
    let token = parse_live(token_text, now)?;
    check_scope(&token, &format!("{host}/{}", device.resource()))?;
    let principal = match &token.key_name {
        Some(name) => {
            let policy = check_policy(policies, &token, name, Rights::DEVICE_CONNECT)?;
            Principal::Policy { name: policy.key_name.clone(), rights: policy.rights }
        }
        None => {
            if !device.authentication.symmetric_keys().any(|key| token.is_signed_with(&key)) {
                return Err(AuthFailure::BadSignature);
            }
            Principal::Device { device_id: device.device_id.clone() }
        }
    };
    if device.status == DeviceStatus::Disabled {
        return Err(AuthFailure::DeviceDisabled);
    }
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::registry::{DeviceSpec, create_device};
    use iothub_proto::generate_token;

    const NOW: u64 = 1_800_000_000;

    fn owner(policies: &Policies) -> &Policy {
        policies.get(OWNER_POLICY).expect("owner")
    }

    #[test]
    fn service_tokens_need_a_known_policy_a_good_signature_and_the_right() {
        let policies = Policies::generate();
        let key = &owner(&policies).primary_key;
        let good = generate_token("localhost", key, Some(OWNER_POLICY), NOW + 60).expect("token");
        let target = "localhost/devices/d1";
        let read = Rights::REGISTRY_READ;
        assert!(matches!(authorize_service(&policies, &good, target, read, NOW), Ok(Principal::Policy { .. })));

        let expired = generate_token("localhost", key, Some(OWNER_POLICY), NOW).expect("token");
        assert_eq!(authorize_service(&policies, &expired, target, read, NOW), Err(AuthFailure::Expired));
        let unknown = generate_token("localhost", key, Some("nobody"), NOW + 60).expect("token");
        assert_eq!(
            authorize_service(&policies, &unknown, target, read, NOW),
            Err(AuthFailure::UnknownPolicy("nobody".into()))
        );
        let other_key = &policies.get("service").expect("service").primary_key;
        let forged = generate_token("localhost", other_key, Some(OWNER_POLICY), NOW + 60).expect("token");
        assert_eq!(authorize_service(&policies, &forged, target, read, NOW), Err(AuthFailure::BadSignature));
        let elsewhere = generate_token("otherhub", key, Some(OWNER_POLICY), NOW + 60).expect("token");
        assert!(matches!(authorize_service(&policies, &elsewhere, target, read, NOW), Err(AuthFailure::WrongScope(_))));
        let service = generate_token("localhost", other_key, Some("service"), NOW + 60).expect("token");
        assert!(matches!(
            authorize_service(&policies, &service, target, read, NOW),
            Err(AuthFailure::MissingPermission { .. })
        ));
        let device_token = generate_token("localhost/devices/d1", key, None, NOW + 60).expect("token");
        assert_eq!(
            authorize_service(&policies, &device_token, target, read, NOW),
            Err(AuthFailure::DeviceTokenOnServiceApi)
        );
    }

    #[test]
    fn a_port_in_the_token_host_is_ignored_and_scopes_narrow_by_segment() {
        let policies = Policies::generate();
        let key = &owner(&policies).primary_key;
        let with_port = generate_token("localhost:8443", key, Some(OWNER_POLICY), NOW + 60).expect("token");
        authorize_service(&policies, &with_port, "localhost/devices/d1", Rights::REGISTRY_READ, NOW)
            .expect("port ignored");
        let narrow = generate_token("localhost/devices/d1", key, Some(OWNER_POLICY), NOW + 60).expect("token");
        authorize_service(&policies, &narrow, "localhost/devices/d1", Rights::REGISTRY_READ, NOW).expect("own device");
        assert!(authorize_service(&policies, &narrow, "localhost/devices/d10", Rights::REGISTRY_READ, NOW).is_err());
    }

    #[test]
    fn device_connections_accept_the_device_key_or_a_device_connect_policy() {
        let policies = Policies::generate();
        let now = "2026-01-01T00:00:00Z".parse().expect("time");
        let mut device = create_device("d1", &DeviceSpec::default(), now, 1).expect("device");
        let device_key = device.authentication.secondary_key.clone().expect("key");
        let own = generate_token("localhost/devices/d1", &device_key, None, NOW + 60).expect("token");
        assert!(matches!(authorize_device(&policies, "localhost", &own, &device, NOW), Ok(Principal::Device { .. })));
        let other = generate_token("localhost/devices/d2", &device_key, None, NOW + 60).expect("token");
        assert!(matches!(
            authorize_device(&policies, "localhost", &other, &device, NOW),
            Err(AuthFailure::WrongScope(_))
        ));
        let device_policy = policies.get("device").expect("device policy");
        let via_policy =
            generate_token("localhost/devices", &device_policy.primary_key, Some("device"), NOW + 60).expect("token");
        authorize_device(&policies, "localhost", &via_policy, &device, NOW).expect("DeviceConnect policy");
        let registry = policies.get("registryRead").expect("policy");
        let no_right =
            generate_token("localhost", &registry.primary_key, Some("registryRead"), NOW + 60).expect("token");
        assert!(matches!(
            authorize_device(&policies, "localhost", &no_right, &device, NOW),
            Err(AuthFailure::MissingPermission { .. })
        ));
        device.status = DeviceStatus::Disabled;
        assert_eq!(authorize_device(&policies, "localhost", &own, &device, NOW), Err(AuthFailure::DeviceDisabled));
    }

    #[test]
    fn policies_are_generated_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Policies::load_or_create(dir.path()).expect("create");
        let second = Policies::load_or_create(dir.path()).expect("load");
        assert_eq!(first, second);
        assert_eq!(first.iter().count(), 5);
        std::fs::write(dir.path().join(POLICIES_FILE), "{").expect("write");
        assert!(matches!(Policies::load_or_create(dir.path()), Err(PolicyError::Invalid { .. })));
    }

    #[test]
    fn rights_parse_like_azure() {
        assert_eq!(Rights::parse("RegistryWrite").expect("parse"), Rights::REGISTRY_READ.union(Rights::REGISTRY_WRITE));
        assert!(Rights::parse("Everything").is_err());
        assert_eq!(Rights::SERVICE_CONNECT.union(Rights::DEVICE_CONNECT).to_string(), "ServiceConnect, DeviceConnect");
    }
}
