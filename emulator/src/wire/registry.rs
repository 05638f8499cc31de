//! Device identities on the wire (wire-spec C.1): the `Device` document (one definition, `iothub_proto::registry`,
//! shared with the Rust clients) rendered from the registry's record, and create/update bodies read into a spec.

use iothub_proto::registry as wire;

use crate::clock::format_optional_time;
use crate::domain::registry::{AuthType, Authentication, Credentials, Device, DeviceSpec, DeviceStatus, Liveness};
use crate::error::HubError;

/// `connectionState` as documents show it.
pub fn connection_state(liveness: &Liveness) -> &'static str {
    if liveness.connected_since.is_some() { "Connected" } else { "Disconnected" }
}

/// `x509Thumbprint` of a device.
pub fn thumbprints(auth: &Authentication) -> wire::X509Thumbprint {
    wire::X509Thumbprint {
        primary_thumbprint: auth.primary_thumbprint.clone(),
        secondary_thumbprint: auth.secondary_thumbprint.clone(),
    }
}

/// `authentication` of an identity, keys included (the registry shows them to its readers).
fn authentication(auth: &Authentication) -> wire::AuthenticationMechanism {
    wire::AuthenticationMechanism {
        symmetric_key: Some(wire::SymmetricKey {
            primary_key: auth.primary_key.clone(),
            secondary_key: auth.secondary_key.clone(),
        }),
        x509_thumbprint: Some(thumbprints(auth)),
        kind: Some(auth.kind.as_str().into()),
    }
}

/// Renders a module identity as the hub does (wire-spec C.2, swagger `Module`).
pub fn module(module: &Device, liveness: &Liveness) -> wire::Module {
    wire::Module {
        module_id: module.module_id().map(str::to_owned),
        managed_by: module.module.as_ref().and_then(|m| m.managed_by.clone()),
        device_id: Some(module.device_id.clone()),
        generation_id: Some(module.generation_id.clone()),
        etag: Some(module.etag()),
        connection_state: Some(connection_state(liveness).into()),
        connection_state_updated_time: Some(format_optional_time(liveness.connected_since)),
        last_activity_time: Some(format_optional_time(liveness.last_activity.or(module.last_activity))),
        cloud_to_device_message_count: Some(liveness.queued_messages as u64),
        authentication: Some(authentication(&module.authentication)),
    }
}

/// Reads a module create/update body into a spec, checking it names the same device and module as the path.
pub fn module_spec(device_id: &str, module_id: &str, body: &wire::Module) -> Result<DeviceSpec, HubError> {
    for (what, given, expected) in [("deviceId", &body.device_id, device_id), ("moduleId", &body.module_id, module_id)]
    {
        if let Some(given) = given.as_deref().filter(|id| !id.is_empty())
            && given != expected
        {
            return Err(HubError::ArgumentInvalid(format!(
                "The {what} in the body ('{given}') does not match the one in the path ('{expected}')"
            )));
        }
    }
    Ok(DeviceSpec {
        managed_by: body.managed_by.clone(),
        credentials: credentials(body.authentication.clone().unwrap_or_default())?,
        ..DeviceSpec::default()
    })
}

/// Renders a device identity as the hub does (wire-spec C.1).
pub fn device(device: &Device, liveness: &Liveness) -> wire::Device {
    let auth = &device.authentication;
    wire::Device {
        device_id: Some(device.device_id.clone()),
        generation_id: Some(device.generation_id.clone()),
        etag: Some(device.etag()),
        connection_state: Some(connection_state(liveness).into()),
        status: Some(device.status.as_str().into()),
        status_reason: device.status_reason.clone(),
        connection_state_updated_time: Some(format_optional_time(liveness.connected_since)),
        status_updated_time: Some(format_optional_time(device.status_updated)),
        last_activity_time: Some(format_optional_time(liveness.last_activity.or(device.last_activity))),
        cloud_to_device_message_count: Some(liveness.queued_messages as u64),
        authentication: Some(authentication(auth)),
        capabilities: Some(wire::DeviceCapabilities { iot_edge: Some(device.iot_edge) }),
        device_scope: device.device_scope.clone(),
        parent_scopes: device.device_scope.as_ref().map(|_| device.parent_scopes.clone()),
    }
}

/// Reads a create/update body into a spec, checking it names the same device as the path.
pub fn device_spec(path_id: &str, body: &wire::Device) -> Result<DeviceSpec, HubError> {
    if let Some(body_id) = body.device_id.as_deref().filter(|id| !id.is_empty())
        && body_id != path_id
    {
        return Err(HubError::ArgumentInvalid(format!(
            "The deviceId in the body ('{body_id}') does not match the one in the path ('{path_id}')"
        )));
    }
    Ok(DeviceSpec {
        managed_by: None,
        status: body.status.as_deref().map(DeviceStatus::parse).transpose()?,
        status_reason: body.status_reason.clone(),
        credentials: credentials(body.authentication.clone().unwrap_or_default())?,
        iot_edge: body.capabilities.as_ref().and_then(|c| c.iot_edge),
        device_scope: body.device_scope.clone(),
        parent_scopes: body.parent_scopes.clone(),
    })
}

/// The credentials an `authentication` member gives (SAS with generated keys when it gives nothing).
fn credentials(auth: wire::AuthenticationMechanism) -> Result<Credentials, HubError> {
    let keys = auth.symmetric_key.unwrap_or_default();
    let thumbprints = auth.x509_thumbprint.unwrap_or_default();
    Ok(match auth.kind.as_deref().map(AuthType::parse).transpose()?.unwrap_or(AuthType::Sas) {
        AuthType::Sas => Credentials::Sas { primary_key: keys.primary_key, secondary_key: keys.secondary_key },
        AuthType::SelfSigned => Credentials::SelfSigned {
            primary_thumbprint: thumbprints.primary_thumbprint,
            secondary_thumbprint: thumbprints.secondary_thumbprint,
        },
        AuthType::CertificateAuthority => Credentials::CertificateAuthority,
        AuthType::None => Credentials::None,
    })
}
