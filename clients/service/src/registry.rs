//! Device identities: `PUT/GET/DELETE /devices/{id}`, `GET /devices`, `GET /statistics/devices`.

use iothub_proto::registry::{BulkRegistryOperationResult, Device, ExportImportDevice, RegistryStatistics};
use reqwest::Method;

use crate::client::{Call, Safety, ServiceClient, segment};
use crate::error::Error;

/// An `If-Match` precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Etag {
    /// Whatever the current version is.
    Any,
    /// Only if the resource still has this etag (else [`Error::Hub`] with `PreconditionFailed`).
    Value(String),
}

impl Etag {
    /// The header value, quoted as the SDKs send it.
    pub(crate) fn header(&self) -> String {
        match self {
            Self::Any => "\"*\"".into(),
            Self::Value(etag) => format!("\"{}\"", etag.trim_matches('"')),
        }
    }
}

/// Device identities in the hub's registry.
#[derive(Clone)]
pub struct RegistryClient {
    client: ServiceClient,
}

fn device_path(id: &str) -> String {
    format!("/devices/{}", segment(id))
}

impl RegistryClient {
    pub(crate) fn new(client: ServiceClient) -> Self {
        Self { client }
    }

    /// Registers `device` (its `deviceId` must be set). Without keys the hub generates them; the answer carries
    /// them. An existing id is `DeviceAlreadyExists` (409).
    pub async fn create_device(&self, device: &Device) -> Result<Device, Error> {
        let id = device
            .device_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Error::Config("the device has no deviceId".into()))?;
        let body = serde_json::to_value(device).map_err(|e| Error::Config(e.to_string()))?;
        self.client.send(Call::new(Method::PUT, device_path(id), Safety::Once).body(body)).await?.json()
    }

    /// Registers a device with SAS authentication and hub-generated keys.
    pub async fn create_sas_device(&self, device_id: &str) -> Result<Device, Error> {
        self.create_device(&Device::sas(device_id)).await
    }

    /// One device.
    pub async fn get_device(&self, device_id: &str) -> Result<Device, Error> {
        self.client.send(Call::new(Method::GET, device_path(device_id), Safety::Idempotent)).await?.json()
    }

    /// Updates a device (status, keys, ...) if it still matches `etag`.
    pub async fn update_device(&self, device: &Device, etag: Etag) -> Result<Device, Error> {
        let id = device.device_id.as_deref().ok_or_else(|| Error::Config("the device has no deviceId".into()))?;
        let body = serde_json::to_value(device).map_err(|e| Error::Config(e.to_string()))?;
        let call = Call::new(Method::PUT, device_path(id), Safety::Once)
            .body(body)
            .header(reqwest::header::IF_MATCH, etag.header());
        self.client.send(call).await?.json()
    }

    /// Deletes a device and its twin if it still matches `etag`.
    pub async fn delete_device(&self, device_id: &str, etag: Etag) -> Result<(), Error> {
        let call = Call::new(Method::DELETE, device_path(device_id), Safety::Once)
            .header(reqwest::header::IF_MATCH, etag.header());
        self.client.send(call).await.map(drop)
    }

    /// Applies up to 100 identity operations in one call (`POST /devices`): each item on its own, its failure
    /// reported in the result rather than as an error (only a refused call is an error).
    pub async fn bulk(&self, items: &[ExportImportDevice]) -> Result<BulkRegistryOperationResult, Error> {
        let body = serde_json::to_value(items).map_err(|e| Error::Config(e.to_string()))?;
        self.client.send(Call::new(Method::POST, "/devices".into(), Safety::Once).body(body)).await?.json()
    }

    /// Up to `top` devices (the hub's limit is 1000).
    pub async fn list_devices(&self, top: usize) -> Result<Vec<Device>, Error> {
        let call = Call::new(Method::GET, "/devices".into(), Safety::Idempotent).query("top", top.to_string());
        self.client.send(call).await?.json()
    }

    /// Device counts.
    pub async fn statistics(&self) -> Result<RegistryStatistics, Error> {
        self.client.send(Call::new(Method::GET, "/statistics/devices".into(), Safety::Idempotent)).await?.json()
    }

    /// The connection string of a SAS device as returned by the registry (primary key).
    pub fn device_connection_string(&self, device: &Device) -> Option<String> {
        let key = device.authentication.as_ref()?.symmetric_key.as_ref()?.primary_key.clone()?;
        Some(
            iothub_proto::DeviceConnectionString {
                host_name: self.client.host_name().to_owned(),
                device_id: device.device_id.clone()?,
                module_id: None,
                key,
                gateway_host_name: None,
            }
            .to_string(),
        )
    }
}
