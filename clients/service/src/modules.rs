//! Module identities, module twins and module methods: `/devices/{id}/modules[/{mid}]`,
//! `/twins/{id}/modules/{mid}[/methods]`.

use iothub_proto::methods::{CloudToDeviceMethod, CloudToDeviceMethodResult};
use iothub_proto::registry::{AuthenticationMechanism, Module, SymmetricKey};
use iothub_proto::twin::Twin;
use reqwest::Method;

use crate::client::{Call, Safety, ServiceClient, segment};
use crate::error::Error;
use crate::registry::Etag;

/// Modules of devices: their identities, twins and direct methods.
#[derive(Clone)]
pub struct ModuleClient {
    client: ServiceClient,
}

fn module_path(device_id: &str, module_id: &str) -> String {
    format!("/devices/{}/modules/{}", segment(device_id), segment(module_id))
}

fn twin_path(device_id: &str, module_id: &str) -> String {
    format!("/twins/{}/modules/{}", segment(device_id), segment(module_id))
}

impl ModuleClient {
    pub(crate) fn new(client: ServiceClient) -> Self {
        Self { client }
    }

    /// Registers a module with SAS authentication and hub-generated keys (the answer carries them). An existing
    /// module is `ModuleAlreadyExistsOnDevice` (409); a missing device `DeviceNotFound` (404).
    pub async fn create_sas_module(&self, device_id: &str, module_id: &str) -> Result<Module, Error> {
        let module = Module {
            module_id: Some(module_id.to_owned()),
            device_id: Some(device_id.to_owned()),
            authentication: Some(AuthenticationMechanism {
                symmetric_key: Some(SymmetricKey::default()),
                kind: Some("sas".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = serde_json::to_value(&module).map_err(|e| Error::Config(e.to_string()))?;
        let call = Call::new(Method::PUT, module_path(device_id, module_id), Safety::Once).body(body);
        self.client.send(call).await?.json()
    }

    /// One module.
    pub async fn get_module(&self, device_id: &str, module_id: &str) -> Result<Module, Error> {
        self.client.send(Call::new(Method::GET, module_path(device_id, module_id), Safety::Idempotent)).await?.json()
    }

    /// Updates a module (keys, `managedBy`) if it still matches `etag`.
    pub async fn update_module(&self, module: &Module, etag: Etag) -> Result<Module, Error> {
        let (Some(device_id), Some(module_id)) = (module.device_id.as_deref(), module.module_id.as_deref()) else {
            return Err(Error::Config("the module needs its deviceId and moduleId".into()));
        };
        let body = serde_json::to_value(module).map_err(|e| Error::Config(e.to_string()))?;
        let call = Call::new(Method::PUT, module_path(device_id, module_id), Safety::Once)
            .body(body)
            .header(reqwest::header::IF_MATCH, etag.header());
        self.client.send(call).await?.json()
    }

    /// Deletes a module with its twin if it still matches `etag`.
    pub async fn delete_module(&self, device_id: &str, module_id: &str, etag: Etag) -> Result<(), Error> {
        let call = Call::new(Method::DELETE, module_path(device_id, module_id), Safety::Once)
            .header(reqwest::header::IF_MATCH, etag.header());
        self.client.send(call).await.map(drop)
    }

    /// A device's modules, in id order.
    pub async fn list_modules(&self, device_id: &str) -> Result<Vec<Module>, Error> {
        let path = format!("/devices/{}/modules", segment(device_id));
        self.client.send(Call::new(Method::GET, path, Safety::Idempotent)).await?.json()
    }

    /// The module's twin (it carries `moduleId`).
    pub async fn get_twin(&self, device_id: &str, module_id: &str) -> Result<Twin, Error> {
        self.client.send(Call::new(Method::GET, twin_path(device_id, module_id), Safety::Idempotent)).await?.json()
    }

    /// Merges `patch` into the module twin if it matches `etag`; the module is told of desired changes.
    pub async fn update_twin(&self, device_id: &str, module_id: &str, patch: &Twin, etag: Etag) -> Result<Twin, Error> {
        self.write_twin(Method::PATCH, device_id, module_id, patch, etag).await
    }

    /// Replaces the module twin's tags and desired properties if it matches `etag`.
    pub async fn replace_twin(&self, device_id: &str, module_id: &str, twin: &Twin, etag: Etag) -> Result<Twin, Error> {
        self.write_twin(Method::PUT, device_id, module_id, twin, etag).await
    }

    async fn write_twin(
        &self,
        method: Method,
        device_id: &str,
        module_id: &str,
        twin: &Twin,
        etag: Etag,
    ) -> Result<Twin, Error> {
        let body = serde_json::to_value(twin).map_err(|e| Error::Config(e.to_string()))?;
        let call = Call::new(method, twin_path(device_id, module_id), Safety::Once)
            .body(body)
            .header(reqwest::header::IF_MATCH, etag.header());
        self.client.send(call).await?.json()
    }

    /// Calls `method` on the module's own connection (not its device's), with the same timeouts and errors as a
    /// device method. Never retried except when throttled.
    pub async fn invoke_method(
        &self,
        device_id: &str,
        module_id: &str,
        method: &CloudToDeviceMethod,
    ) -> Result<CloudToDeviceMethodResult, Error> {
        crate::methods::invoke_at(&self.client, format!("{}/methods", twin_path(device_id, module_id)), method).await
    }
}
