//! Automatic device management: configurations (`PUT/GET/DELETE /configurations/{id}`, `GET /configurations`),
//! `POST /configurations/testQueries`, and IoT Edge content put on one device
//! (`POST /devices/{id}/applyConfigurationContent`).

use iothub_proto::configurations::{
    Configuration, ConfigurationContent, ConfigurationQueriesTestInput, ConfigurationQueriesTestResponse,
};
use reqwest::Method;

use crate::client::{Call, Safety, ServiceClient, segment};
use crate::error::Error;
use crate::registry::Etag;

/// Configurations: automatic device configurations (`deviceContent`), module configurations (`moduleContent`)
/// and IoT Edge deployments (`modulesContent`). The hub applies a configuration's content to the twins its
/// `targetCondition` selects, the higher `priority` winning where two write the same path, and counts them in
/// its `systemMetrics` (`targetedCount`, `appliedCount`) and its own `metrics`.
///
/// ```no_run
/// # async fn demo(hub: iothub_service::ServiceClient) -> Result<(), iothub_service::Error> {
/// use iothub_service::Etag;
/// use iothub_service::proto::configurations::{Configuration, ConfigurationContent};
/// let mut content = serde_json::Map::new();
/// content.insert("properties.desired.telemetry".into(), serde_json::json!({"intervalSeconds": 30}));
/// let configuration = Configuration {
///     id: "telemetry-30s".into(),
///     target_condition: "tags.site='lab'".into(),
///     priority: 10,
///     content: ConfigurationContent { device_content: Some(content), ..Default::default() },
///     ..Default::default()
/// };
/// let created = hub.configurations().create(&configuration).await?;
/// let now = hub.configurations().get(&created.id).await?;
/// println!("applied to {:?} devices", now.system_metrics.results.get("appliedCount"));
/// hub.configurations().delete(&created.id, Etag::Any).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConfigurationClient {
    client: ServiceClient,
}

fn configuration_path(id: &str) -> String {
    format!("/configurations/{}", segment(id))
}

/// The configuration's id, which must be set.
fn id_of(configuration: &Configuration) -> Result<&str, Error> {
    Some(configuration.id.as_str())
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Error::Config("the configuration has no id".into()))
}

fn to_body<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(value).map_err(|e| Error::Config(e.to_string()))
}

impl ConfigurationClient {
    pub(crate) fn new(client: ServiceClient) -> Self {
        Self { client }
    }

    /// Creates `configuration` (its `id` must be set: lowercase letters, digits and `-+%_*!'`) and returns it
    /// as the hub stored it, with `createdTimeUtc`, `systemMetrics` and its first `etag`. Members the hub sets
    /// (times, metrics results, etag) are ignored. An existing id is `ConfigurationAlreadyExists` (409); a bad id
    /// or `targetCondition` is `ArgumentInvalid` (400); more than the hub's 100 configurations is
    /// `ConfigurationCountLimitExceeded` (413).
    pub async fn create(&self, configuration: &Configuration) -> Result<Configuration, Error> {
        let id = id_of(configuration)?;
        let call = Call::new(Method::PUT, configuration_path(id), Safety::Once).body(to_body(configuration)?);
        self.client.send(call).await?.json()
    }

    /// One configuration, with its metrics counted now. An unknown id is `ConfigurationNotFound` (404).
    pub async fn get(&self, id: &str) -> Result<Configuration, Error> {
        self.client.send(Call::new(Method::GET, configuration_path(id), Safety::Idempotent)).await?.json()
    }

    /// The configurations in creation order, at most `top` of them (`None`: no `top`, the hub's default).
    pub async fn list(&self, top: Option<usize>) -> Result<Vec<Configuration>, Error> {
        let mut call = Call::new(Method::GET, "/configurations".into(), Safety::Idempotent);
        if let Some(top) = top {
            call = call.query("top", top.to_string());
        }
        self.client.send(call).await?.json()
    }

    /// Updates a configuration if it still matches `etag`, and returns it with its new etag. Only
    /// `targetCondition`, `labels`, `priority` and `metrics` may change: a different `content` is
    /// `ArgumentInvalid` (400). A stale etag is `PreconditionFailed` (412); an unknown id
    /// `ConfigurationNotFound` (404).
    pub async fn update(&self, configuration: &Configuration, etag: Etag) -> Result<Configuration, Error> {
        let id = id_of(configuration)?;
        let call = Call::new(Method::PUT, configuration_path(id), Safety::Once)
            .body(to_body(configuration)?)
            .header(reqwest::header::IF_MATCH, etag.header());
        self.client.send(call).await?.json()
    }

    /// Deletes a configuration if it still matches `etag` (the hub answers 204). Its content leaves the twins it
    /// was applied to (or passes to the next configuration writing the same paths).
    pub async fn delete(&self, id: &str, etag: Etag) -> Result<(), Error> {
        let call = Call::new(Method::DELETE, configuration_path(id), Safety::Once)
            .header(reqwest::header::IF_MATCH, etag.header());
        self.client.send(call).await.map(drop)
    }

    /// Checks a target condition and custom metric queries without creating anything: each error is a
    /// description, `""` where the query is valid.
    pub async fn test_queries(
        &self,
        input: &ConfigurationQueriesTestInput,
    ) -> Result<ConfigurationQueriesTestResponse, Error> {
        let call =
            Call::new(Method::POST, "/configurations/testQueries".into(), Safety::Idempotent).body(to_body(input)?);
        self.client.send(call).await?.json()
    }

    /// Puts IoT Edge content (`modulesContent`: `$edgeAgent`, `$edgeHub` and custom modules, each with its
    /// `properties.desired`) on one device's module twins directly, without a deployment (the hub answers 204).
    /// Content without `modulesContent` is `InvalidConfigurationContent` (400); an unknown device
    /// `DeviceNotFound` (404).
    pub async fn apply_on_edge_device(&self, device_id: &str, content: &ConfigurationContent) -> Result<(), Error> {
        let path = format!("/devices/{}/applyConfigurationContent", segment(device_id));
        let call = Call::new(Method::POST, path, Safety::Once).body(to_body(content)?);
        self.client.send(call).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_the_id_and_an_id_is_required() {
        assert_eq!(configuration_path("cfg-1"), "/configurations/cfg-1");
        assert_eq!(configuration_path("a*b!c'd"), "/configurations/a%2Ab%21c%27d");
        assert!(matches!(id_of(&Configuration::default()), Err(Error::Config(_))));
        let named = Configuration { id: "x".into(), ..Default::default() };
        assert_eq!(id_of(&named).ok(), Some("x"));
    }

    #[test]
    fn edge_content_serializes_only_the_sections_given() {
        let mut modules = serde_json::Map::new();
        modules.insert("$edgeAgent".into(), serde_json::json!({"properties.desired": {"schemaVersion": "1.1"}}));
        let content = ConfigurationContent { modules_content: Some(modules), ..Default::default() };
        assert_eq!(
            to_body(&content).expect("json"),
            serde_json::json!({"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1"}}}})
        );
    }
}
