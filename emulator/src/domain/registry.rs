//! Device identities: the record the hub keeps per device, and the rules for creating and updating it.
//!
//! Pure logic: no I/O, no wire formats. The transports turn requests into a [`DeviceSpec`] and render a
//! [`Device`] back; the hub decides when to call these functions and persists the result.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::twin::Twin;
use crate::error::HubError;
use crate::limits;

/// Whether a device may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceStatus {
    Enabled,
    Disabled,
}

impl DeviceStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
        }
    }

    /// Parses the wire spelling (case-insensitive, as the hub is).
    pub fn parse(text: &str) -> Result<Self, HubError> {
        match text.to_ascii_lowercase().as_str() {
            "enabled" => Ok(Self::Enabled),
            "disabled" => Ok(Self::Disabled),
            _ => Err(HubError::ArgumentInvalid(format!(
                "Invalid device status '{text}'; expected 'enabled' or 'disabled'"
            ))),
        }
    }
}

/// How a device proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthType {
    Sas,
    SelfSigned,
    CertificateAuthority,
    None,
}

impl AuthType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sas => "sas",
            Self::SelfSigned => "selfSigned",
            Self::CertificateAuthority => "certificateAuthority",
            Self::None => "none",
        }
    }

    /// Parses the wire spelling (case-insensitive).
    pub fn parse(text: &str) -> Result<Self, HubError> {
        match text.to_ascii_lowercase().as_str() {
            "sas" => Ok(Self::Sas),
            "selfsigned" => Ok(Self::SelfSigned),
            "certificateauthority" => Ok(Self::CertificateAuthority),
            "none" => Ok(Self::None),
            _ => Err(HubError::ArgumentInvalid(format!(
                "Invalid authentication type '{text}'; expected 'sas', 'selfSigned', 'certificateAuthority' or 'none'"
            ))),
        }
    }
}

/// The credentials of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authentication {
    pub kind: AuthType,
    /// Base64 symmetric keys (for `sas`).
    pub primary_key: Option<String>,
    pub secondary_key: Option<String>,
    /// X.509 thumbprints (for `selfSigned`).
    pub primary_thumbprint: Option<String>,
    pub secondary_thumbprint: Option<String>,
}

impl Authentication {
    /// The decoded symmetric keys, primary first, for SAS verification.
    pub fn symmetric_keys(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        [&self.primary_key, &self.secondary_key]
            .into_iter()
            .flatten()
            .filter(|_| self.kind == AuthType::Sas)
            .filter_map(|k| BASE64.decode(k.as_bytes()).ok())
    }
}

/// What sets a module identity apart from a device: its id and who manages it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub module_id: String,
    /// Free text naming what manages the module (IoT Edge writes `IotEdge`).
    pub managed_by: Option<String>,
}

/// A registered identity with its twin: a device, or a module of a device (`module` set).
///
/// Modules live beside devices, keyed `<deviceId>/<moduleId>` ([`identity_key`]; ids cannot contain `/`), so
/// twins, connections, sessions and methods work for both on the same code paths. Only a device has a status,
/// IoT Edge capability and scopes; a module's are always enabled, false and none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The device's id (for a module: the id of the device it belongs to).
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<Box<ModuleInfo>>,
    /// Distinguishes devices re-created with the same id.
    pub generation_id: String,
    /// Hub-wide change number of the identity; the device `etag` is derived from it.
    pub identity_version: u64,
    pub status: DeviceStatus,
    pub status_reason: Option<String>,
    pub status_updated: Option<Timestamp>,
    pub authentication: Authentication,
    pub iot_edge: bool,
    pub device_scope: Option<String>,
    #[serde(default)]
    pub parent_scopes: Vec<String>,
    pub last_activity: Option<Timestamp>,
    pub twin: Twin,
}

impl Device {
    /// The same identity with a new twin, cloning everything but the old twin (which the caller replaces).
    pub fn with_twin(&self, twin: Twin) -> Self {
        Self {
            device_id: self.device_id.clone(),
            module: self.module.clone(),
            generation_id: self.generation_id.clone(),
            identity_version: self.identity_version,
            status: self.status,
            status_reason: self.status_reason.clone(),
            status_updated: self.status_updated,
            authentication: self.authentication.clone(),
            iot_edge: self.iot_edge,
            device_scope: self.device_scope.clone(),
            parent_scopes: self.parent_scopes.clone(),
            last_activity: self.last_activity,
            twin,
        }
    }

    /// The module's id, for a module identity.
    pub fn module_id(&self) -> Option<&str> {
        self.module.as_deref().map(|m| m.module_id.as_str())
    }

    /// The key the hub files this identity under: the device id, or `<deviceId>/<moduleId>`.
    pub fn key(&self) -> std::borrow::Cow<'_, str> {
        match self.module_id() {
            Some(module_id) => std::borrow::Cow::Owned(identity_key(&self.device_id, Some(module_id))),
            None => std::borrow::Cow::Borrowed(&self.device_id),
        }
    }

    /// The resource a SAS token for this identity names after the host: `devices/<id>[/modules/<mid>]`.
    pub fn resource(&self) -> String {
        match self.module_id() {
            Some(module_id) => format!("devices/{}/modules/{module_id}", self.device_id),
            None => format!("devices/{}", self.device_id),
        }
    }

    /// The identity's etag: base64 of the decimal change number, as real hubs print it.
    pub fn etag(&self) -> String {
        BASE64.encode(self.identity_version.to_string())
    }
}

/// What the hub tracks live beside the stored record: the device's connection, and its message queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Liveness {
    /// When the current connection started; `None` when disconnected.
    pub connected_since: Option<Timestamp>,
    /// When the device last sent something.
    pub last_activity: Option<Timestamp>,
    /// Cloud-to-device messages waiting for the device or held by it (`cloudToDeviceMessageCount`).
    pub queued_messages: usize,
}

/// The key of a device (`module_id` none) or of one of its modules: `<deviceId>/<moduleId>`.
pub fn identity_key(device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(module_id) => format!("{device_id}/{module_id}"),
        None => device_id.to_owned(),
    }
}

/// The keys `<prefix>/<anything>` in key order: a device's module keys, and any store table keyed
/// `<owner>/<item>` ('0' is the character after '/').
pub fn keys_under(prefix: &str) -> std::ops::Range<String> {
    format!("{prefix}/")..format!("{prefix}0")
}

/// The device id and module id (if any) an identity key names.
pub fn split_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once('/') {
        Some((device_id, module_id)) => (device_id, Some(module_id)),
        None => (key, None),
    }
}

/// What a create or update request asks for; `None` means "not given". Modules read only the credentials and
/// `managed_by`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSpec {
    pub managed_by: Option<String>,
    pub status: Option<DeviceStatus>,
    pub status_reason: Option<String>,
    pub credentials: Credentials,
    pub iot_edge: Option<bool>,
    pub device_scope: Option<String>,
    pub parent_scopes: Option<Vec<String>>,
}

/// The credentials a create or update request gives, by authentication type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `sas` (the default): keys left out or empty are generated on create and kept on update.
    Sas {
        primary_key: Option<String>,
        secondary_key: Option<String>,
    },
    /// `selfSigned`: X.509 thumbprints; a primary one is required.
    SelfSigned {
        primary_thumbprint: Option<String>,
        secondary_thumbprint: Option<String>,
    },
    CertificateAuthority,
    None,
}

impl Default for Credentials {
    fn default() -> Self {
        Self::Sas { primary_key: None, secondary_key: None }
    }
}

impl Credentials {
    /// SAS credentials with the given keys.
    pub fn sas(primary_key: impl Into<String>, secondary_key: impl Into<String>) -> Self {
        Self::Sas { primary_key: Some(primary_key.into()), secondary_key: Some(secondary_key.into()) }
    }
}

/// A precondition from `If-Match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any existing resource.
    Any,
    /// A concrete etag, without quotes.
    Etag(String),
}

impl IfMatch {
    /// Fails with 412 unless `current` satisfies the precondition.
    pub fn check(&self, current: &str) -> Result<(), HubError> {
        match self {
            Self::Any => Ok(()),
            Self::Etag(etag) if etag == current => Ok(()),
            Self::Etag(_) => Err(HubError::PreconditionFailed(
                "Precondition failed: the ETag given in If-Match does not match the resource's current ETag".into(),
            )),
        }
    }
}

/// Characters allowed in device ids besides ASCII letters and digits (swagger `Twin.deviceId`).
const ID_PUNCTUATION: &str = "-:.+%_#*?!(),=@;$'";

/// Checks a device id against the hub's rules.
pub fn validate_device_id(id: &str) -> Result<(), HubError> {
    validate_id("device", id)
}

/// Checks a module id against the hub's rules (the same as for device ids).
pub fn validate_module_id(id: &str) -> Result<(), HubError> {
    validate_id("module", id)
}

fn validate_id(what: &str, id: &str) -> Result<(), HubError> {
    if id.is_empty() {
        return Err(HubError::ArgumentNull(format!("The {what} id must not be empty")));
    }
    if id.len() > limits::MAX_DEVICE_ID_LEN {
        return Err(HubError::ArgumentInvalid(format!(
            "The {what} id is {} characters long; the limit is {}",
            id.chars().count(),
            limits::MAX_DEVICE_ID_LEN
        )));
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || ID_PUNCTUATION.contains(*c))) {
        return Err(HubError::ArgumentInvalid(format!(
            "The {what} id '{}' contains the character {bad:?}; ids may use ASCII letters, digits and {ID_PUNCTUATION}",
            id.escape_debug()
        )));
    }
    Ok(())
}

/// A fresh random key: base64 of 32 random bytes.
pub fn generate_key() -> String {
    let mut bytes = [0u8; limits::GENERATED_KEY_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    BASE64.encode(bytes)
}

fn validate_key(which: &str, key: &str) -> Result<(), HubError> {
    let len = BASE64
        .decode(key.as_bytes())
        .map(|b| b.len())
        .map_err(|_| HubError::ArgumentInvalid(format!("The {which} key is not valid base64")))?;
    if !(limits::MIN_KEY_BYTES..=limits::MAX_KEY_BYTES).contains(&len) {
        return Err(HubError::ArgumentInvalid(format!(
            "The {which} key decodes to {len} bytes; keys must be between {} and {} bytes",
            limits::MIN_KEY_BYTES,
            limits::MAX_KEY_BYTES
        )));
    }
    Ok(())
}

fn validate_thumbprint(which: &str, thumbprint: &str) -> Result<(), HubError> {
    let ok = matches!(thumbprint.len(), 40 | 64) && thumbprint.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(HubError::ArgumentInvalid(format!(
            "The {which} thumbprint must be 40 (SHA-1) or 64 (SHA-256) hexadecimal characters"
        )))
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Builds the authentication of a device from a request, generating missing SAS keys. `existing` are the
/// current credentials on update: SAS keys left empty in an update are kept rather than rotated.
fn resolve_authentication(spec: &DeviceSpec, existing: Option<&Authentication>) -> Result<Authentication, HubError> {
    let mut auth = Authentication {
        kind: AuthType::Sas,
        primary_key: None,
        secondary_key: None,
        primary_thumbprint: None,
        secondary_thumbprint: None,
    };
    match &spec.credentials {
        Credentials::Sas { primary_key, secondary_key } => {
            let kept = existing.filter(|a| a.kind == AuthType::Sas);
            let pick = |given: &Option<String>, old: Option<&Option<String>>| -> String {
                non_empty(given).map(str::to_owned).or_else(|| old.and_then(|o| o.clone())).unwrap_or_else(generate_key)
            };
            let primary = pick(primary_key, kept.map(|a| &a.primary_key));
            let secondary = pick(secondary_key, kept.map(|a| &a.secondary_key));
            validate_key("primary", &primary)?;
            validate_key("secondary", &secondary)?;
            auth.primary_key = Some(primary);
            auth.secondary_key = Some(secondary);
        }
        Credentials::SelfSigned { primary_thumbprint, secondary_thumbprint } => {
            let primary = non_empty(primary_thumbprint).ok_or_else(|| {
                HubError::ArgumentNull("A selfSigned device needs x509Thumbprint.primaryThumbprint".into())
            })?;
            validate_thumbprint("primary", primary)?;
            if let Some(secondary) = non_empty(secondary_thumbprint) {
                validate_thumbprint("secondary", secondary)?;
            }
            auth.kind = AuthType::SelfSigned;
            auth.primary_thumbprint = Some(primary.to_ascii_uppercase());
            auth.secondary_thumbprint = non_empty(secondary_thumbprint).map(str::to_ascii_uppercase);
        }
        Credentials::CertificateAuthority => auth.kind = AuthType::CertificateAuthority,
        Credentials::None => auth.kind = AuthType::None,
    }
    Ok(auth)
}

fn validate_status_reason(reason: &Option<String>) -> Result<(), HubError> {
    match reason {
        Some(r) if r.chars().count() > limits::MAX_STATUS_REASON_LEN => Err(HubError::ArgumentInvalid(format!(
            "statusReason is longer than {} characters",
            limits::MAX_STATUS_REASON_LEN
        ))),
        _ => Ok(()),
    }
}

/// What every IoT Edge device scope starts with (docs/research/edge-scopes.md §1).
pub const EDGE_SCOPE_PREFIX: &str = "ms-azure-iot-edge://";
/// Most layers of IoT Edge devices in one hierarchy (a top layer and four nested below it).
pub const MAX_EDGE_LAYERS: usize = 5;
/// The system modules the hub gives every IoT Edge device, and who it says manages them.
pub const EDGE_SYSTEM_MODULES: [&str; 2] = ["$edgeAgent", "$edgeHub"];
pub const EDGE_MANAGED_BY: &str = "IotEdge";

/// An IoT Edge device's own scope: `ms-azure-iot-edge://<deviceId>-<generationId>`, as the hub generates it.
pub fn edge_scope(device_id: &str, generation_id: &str) -> String {
    format!("{EDGE_SCOPE_PREFIX}{device_id}-{generation_id}")
}

/// The device id a scope names (the part before its last `-`, as the Azure CLI reads it), if it is an Edge scope.
pub fn scope_device_id(scope: &str) -> Option<&str> {
    scope.strip_prefix(EDGE_SCOPE_PREFIX)?.rsplit_once('-').map(|(id, _)| id)
}

/// Makes a new device from a create request. `identity_version` is the hub's next change number.
pub fn create_device(id: &str, spec: &DeviceSpec, now: Timestamp, identity_version: u64) -> Result<Device, HubError> {
    validate_device_id(id)?;
    validate_status_reason(&spec.status_reason)?;
    let authentication = resolve_authentication(spec, None)?;
    Ok(Device {
        device_id: id.to_owned(),
        module: None,
        generation_id: generation_id(now, identity_version),
        identity_version,
        status: spec.status.unwrap_or(DeviceStatus::Enabled),
        status_reason: spec.status_reason.clone(),
        status_updated: None,
        authentication,
        iot_edge: spec.iot_edge.unwrap_or(false),
        device_scope: spec.device_scope.clone(),
        parent_scopes: spec.parent_scopes.clone().unwrap_or_default(),
        last_activity: None,
        twin: Twin::new(now),
    })
}

/// Applies an update request to an existing device. Members the request omits are reset to their defaults,
/// as the hub documents for `PUT`, except SAS keys, which are kept when left empty: the Node SDK's
/// `Registry.update({deviceId, status})` fills in empty keys itself (`_normalizeAuthentication`), and rotating
/// keys there would cut off every device of a user who only meant to disable one.
pub fn update_device(
    current: &Device,
    spec: &DeviceSpec,
    now: Timestamp,
    identity_version: u64,
) -> Result<Device, HubError> {
    validate_status_reason(&spec.status_reason)?;
    let authentication = resolve_authentication(spec, Some(&current.authentication))?;
    let status = spec.status.unwrap_or(DeviceStatus::Enabled);
    let status_updated = if status != current.status { Some(now) } else { current.status_updated };
    Ok(Device {
        identity_version,
        status,
        status_reason: spec.status_reason.clone(),
        status_updated,
        authentication,
        iot_edge: spec.iot_edge.unwrap_or(false),
        device_scope: spec.device_scope.clone(),
        parent_scopes: spec.parent_scopes.clone().unwrap_or_default(),
        ..current.clone()
    })
}

/// Makes a new module of device `device_id` from a create request: SAS keys generated when not given, like a
/// device's. `identity_version` is the hub's next change number.
pub fn create_module(
    device_id: &str,
    module_id: &str,
    spec: &DeviceSpec,
    now: Timestamp,
    identity_version: u64,
) -> Result<Device, HubError> {
    validate_module_id(module_id)?;
    validate_managed_by(&spec.managed_by)?;
    let authentication = resolve_authentication(spec, None)?;
    Ok(Device {
        device_id: device_id.to_owned(),
        module: Some(Box::new(ModuleInfo { module_id: module_id.to_owned(), managed_by: spec.managed_by.clone() })),
        generation_id: generation_id(now, identity_version),
        identity_version,
        status: DeviceStatus::Enabled,
        status_reason: None,
        status_updated: None,
        authentication,
        iot_edge: false,
        device_scope: None,
        parent_scopes: Vec::new(),
        last_activity: None,
        twin: Twin::new(now),
    })
}

/// Applies an update request to an existing module: its credentials (SAS keys left empty are kept, as for
/// devices) and `managedBy`.
pub fn update_module(current: &Device, spec: &DeviceSpec, identity_version: u64) -> Result<Device, HubError> {
    validate_managed_by(&spec.managed_by)?;
    let authentication = resolve_authentication(spec, Some(&current.authentication))?;
    let mut module = current.clone();
    module.identity_version = identity_version;
    module.authentication = authentication;
    if let Some(info) = module.module.as_mut() {
        info.managed_by.clone_from(&spec.managed_by);
    }
    Ok(module)
}

fn validate_managed_by(managed_by: &Option<String>) -> Result<(), HubError> {
    match managed_by {
        Some(text) if text.chars().count() > limits::MAX_STATUS_REASON_LEN => Err(HubError::ArgumentInvalid(format!(
            "managedBy is longer than {} characters",
            limits::MAX_STATUS_REASON_LEN
        ))),
        _ => Ok(()),
    }
}

/// A generation id like the hub's: an 18-digit number from .NET ticks, made unique by the change number.
fn generation_id(now: Timestamp, identity_version: u64) -> String {
    // .NET ticks (100 ns since 0001-01-01) at the Unix epoch.
    const UNIX_EPOCH_TICKS: i128 = 621_355_968_000_000_000;
    let ticks = UNIX_EPOCH_TICKS + now.as_nanosecond() / 100;
    let unique = ticks - ticks % 1_000_000 + i128::from(identity_version % 1_000_000);
    unique.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-01-02T03:04:05Z".parse().expect("time")
    }

    #[test]
    fn create_generates_both_keys_when_none_or_empty_are_given() {
        let empty = DeviceSpec { credentials: Credentials::sas("", ""), ..Default::default() };
        for spec in [DeviceSpec::default(), empty] {
            let device = create_device("dev1", &spec, now(), 7).expect("create");
            let primary = device.authentication.primary_key.clone().expect("primary");
            let secondary = device.authentication.secondary_key.clone().expect("secondary");
            assert_eq!(primary.len(), 44);
            assert_ne!(primary, secondary);
            assert_eq!(device.status, DeviceStatus::Enabled);
            assert_eq!(device.authentication.kind, AuthType::Sas);
            assert_eq!(device.generation_id.len(), 18);
        }
    }

    #[test]
    fn given_keys_are_kept_and_checked() {
        let key = BASE64.encode([1u8; 32]);
        let spec = DeviceSpec { credentials: Credentials::sas(key.clone(), ""), ..Default::default() };
        let device = create_device("dev1", &spec, now(), 1).expect("create");
        assert_eq!(device.authentication.primary_key.as_deref(), Some(key.as_str()));

        let short = DeviceSpec { credentials: Credentials::sas(BASE64.encode([1u8; 8]), ""), ..Default::default() };
        assert!(matches!(create_device("dev1", &short, now(), 1), Err(HubError::ArgumentInvalid(_))));
        let garbage = DeviceSpec { credentials: Credentials::sas("", "***"), ..Default::default() };
        assert!(matches!(create_device("dev1", &garbage, now(), 1), Err(HubError::ArgumentInvalid(_))));
    }

    #[test]
    fn device_ids_follow_the_hub_rules() {
        for ok in ["a", "dev-1:x.y+z%_#*?!(),=@;$'", &"x".repeat(128)] {
            validate_device_id(ok).expect(ok);
        }
        assert!(matches!(validate_device_id(""), Err(HubError::ArgumentNull(_))));
        for bad in ["has space", "slash/", "é", &"x".repeat(129), "tab\t"] {
            assert!(matches!(validate_device_id(bad), Err(HubError::ArgumentInvalid(_))), "{bad}");
        }
    }

    #[test]
    fn update_resets_omitted_members_but_keeps_keys() {
        let spec = DeviceSpec { iot_edge: Some(true), status_reason: Some("r".into()), ..Default::default() };
        let device = create_device("d", &spec, now(), 1).expect("create");
        let later: Timestamp = "2026-01-02T04:00:00Z".parse().expect("time");
        let disabled = DeviceSpec { status: Some(DeviceStatus::Disabled), ..Default::default() };
        let updated = update_device(&device, &disabled, later, 2).expect("update");
        assert_eq!(updated.status, DeviceStatus::Disabled);
        assert_eq!(updated.status_updated, Some(later));
        assert!(!updated.iot_edge);
        assert_eq!(updated.status_reason, None);
        assert_eq!(updated.authentication, device.authentication);
        assert_eq!(updated.generation_id, device.generation_id);
        assert_ne!(updated.etag(), device.etag());
    }

    #[test]
    fn if_match_compares_etags() {
        IfMatch::Any.check("abc").expect("any");
        IfMatch::Etag("abc".into()).check("abc").expect("same");
        assert!(matches!(IfMatch::Etag("abd".into()).check("abc"), Err(HubError::PreconditionFailed(_))));
    }

    #[test]
    fn self_signed_needs_a_thumbprint() {
        let self_signed = |primary: Option<String>| DeviceSpec {
            credentials: Credentials::SelfSigned { primary_thumbprint: primary, secondary_thumbprint: None },
            ..Default::default()
        };
        assert!(matches!(create_device("d", &self_signed(None), now(), 1), Err(HubError::ArgumentNull(_))));
        let spec = self_signed(Some("ab".repeat(20)));
        let device = create_device("d", &spec, now(), 1).expect("create");
        assert_eq!(device.authentication.primary_thumbprint, Some("AB".repeat(20)));
        assert_eq!(device.authentication.symmetric_keys().count(), 0);
    }
}
