//! Device twins: `GET/PATCH/PUT /twins/{id}`.

use iothub_proto::twin::Twin;
use reqwest::Method;

use crate::client::{Call, Safety, ServiceClient, segment};
use crate::error::Error;
use crate::registry::Etag;

/// Device twins: tags and desired properties (reported ones belong to the device).
#[derive(Clone)]
pub struct TwinClient {
    client: ServiceClient,
}

fn twin_path(id: &str) -> String {
    format!("/twins/{}", segment(id))
}

impl TwinClient {
    pub(crate) fn new(client: ServiceClient) -> Self {
        Self { client }
    }

    /// The device's full twin.
    pub async fn get_twin(&self, device_id: &str) -> Result<Twin, Error> {
        self.client.send(Call::new(Method::GET, twin_path(device_id), Safety::Idempotent)).await?.json()
    }

    /// Merges `patch` (tags and/or desired properties; `null` removes) into the twin if it matches `etag`, and
    /// returns the new twin. Connected devices are told of desired changes.
    pub async fn update_twin(&self, device_id: &str, patch: &Twin, etag: Etag) -> Result<Twin, Error> {
        self.write(Method::PATCH, device_id, patch, etag).await
    }

    /// Replaces the twin's tags and desired properties with those of `twin` if it matches `etag`.
    pub async fn replace_twin(&self, device_id: &str, twin: &Twin, etag: Etag) -> Result<Twin, Error> {
        self.write(Method::PUT, device_id, twin, etag).await
    }

    async fn write(&self, method: Method, device_id: &str, twin: &Twin, etag: Etag) -> Result<Twin, Error> {
        let body = serde_json::to_value(twin).map_err(|e| Error::Config(e.to_string()))?;
        let call = Call::new(method, twin_path(device_id), Safety::Once)
            .body(body)
            .header(reqwest::header::IF_MATCH, etag.header());
        self.client.send(call).await?.json()
    }
}
