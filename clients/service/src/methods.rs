//! Direct methods: `POST /twins/{id}/methods`.

use std::time::Duration;

use iothub_proto::methods::{CloudToDeviceMethod, CloudToDeviceMethodResult};
use reqwest::Method;

use crate::client::{Call, Safety, ServiceClient, segment};
use crate::error::Error;

/// The hub's default response timeout.
const DEFAULT_RESPONSE_TIMEOUT_SECS: u64 = 30;

/// Direct-method calls.
#[derive(Clone)]
pub struct MethodClient {
    client: ServiceClient,
}

impl MethodClient {
    pub(crate) fn new(client: ServiceClient) -> Self {
        Self { client }
    }

    /// Calls `method` on a device and returns its answer (any status the device chose). A device that is not
    /// connected within the connect timeout is `DeviceNotOnline` (404103); one that does not answer within the
    /// response timeout is `GatewayTimeout` (504101). Never retried except when throttled: the device might run
    /// the method twice.
    pub async fn invoke(
        &self,
        device_id: &str,
        method: &CloudToDeviceMethod,
    ) -> Result<CloudToDeviceMethodResult, Error> {
        invoke_at(&self.client, format!("/twins/{}/methods", segment(device_id)), method).await
    }
}

/// Posts `method` to `path` (a device's or a module's methods), waiting as long as its timeouts allow.
pub(crate) async fn invoke_at(
    client: &ServiceClient,
    path: String,
    method: &CloudToDeviceMethod,
) -> Result<CloudToDeviceMethodResult, Error> {
    let wait = method.response_timeout_in_seconds.unwrap_or(DEFAULT_RESPONSE_TIMEOUT_SECS)
        + method.connect_timeout_in_seconds.unwrap_or(0);
    let body = serde_json::to_value(method).map_err(|e| Error::Config(e.to_string()))?;
    let mut call = Call::new(Method::POST, path, Safety::Once).body(body);
    call.timeout = Some(Duration::from_secs(wait + 10));
    client.send(call).await?.json()
}
