//! One scenario run: uniquely named devices, jobs and configurations (so runs never collide, on a shared real hub
//! too), the observations it makes, and the clean-up afterwards.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use iothub_device::DeviceClientBuilder;
use iothub_service::{Etag, ServiceClient};
use serde_json::{Map, Value};

use crate::target::Target;

/// A scenario's run.
pub struct Run {
    pub target: Arc<Target>,
    /// Starts every id this run makes (`conf-<scenario>-<random>`); replaced by `<run>` in observations.
    prefix: String,
    devices: Mutex<Vec<String>>,
    configurations: Mutex<Vec<String>>,
    observed: Mutex<Map<String, Value>>,
}

impl Run {
    /// A run of scenario `name` on `target`.
    pub fn new(target: Arc<Target>, name: &str) -> Self {
        let prefix = format!("conf-{name}-{:08x}", rand::random::<u32>());
        Self {
            target,
            prefix,
            devices: Mutex::new(Vec::new()),
            configurations: Mutex::new(Vec::new()),
            observed: Mutex::new(Map::new()),
        }
    }

    /// The service client.
    pub fn service(&self) -> &ServiceClient {
        &self.target.service
    }

    /// An id for something this run makes.
    pub fn id(&self, label: &str) -> String {
        format!("{}-{label}", self.prefix)
    }

    /// Registers a SAS device (deleted after the run) and returns its id and connection string.
    pub async fn create_device(&self, label: &str) -> anyhow::Result<(String, String)> {
        let id = self.id(label);
        let device = self.service().registry().create_sas_device(&id).await?;
        self.devices.lock().unwrap_or_else(|p| p.into_inner()).push(id.clone());
        let cs = self
            .service()
            .registry()
            .device_connection_string(&device)
            .ok_or_else(|| anyhow::anyhow!("the registry returned no key for {id}"))?;
        Ok((id, cs))
    }

    /// Deletes device `id` after the run (for devices the scenario registers itself, e.g. in bulk).
    pub fn adopt_device(&self, id: &str) {
        self.devices.lock().unwrap_or_else(|p| p.into_inner()).push(id.to_owned());
    }

    /// Deletes configuration `id` after the run.
    pub fn adopt_configuration(&self, id: &str) {
        self.configurations.lock().unwrap_or_else(|p| p.into_inner()).push(id.to_owned());
    }

    /// A device client builder for `connection_string` with the target's options.
    pub fn device(&self, connection_string: &str) -> anyhow::Result<DeviceClientBuilder> {
        Ok(iothub_device::DeviceClient::builder(connection_string)?.options(self.target.device_options()))
    }

    /// Records an observation under `key`, with this run's ids replaced by `<run>`.
    pub fn observe(&self, key: &str, value: impl serde::Serialize) {
        let value = replace_text(&serde_json::to_value(value).unwrap_or(Value::Null), &self.prefix, "<run>");
        self.observed.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_owned(), value);
    }

    /// Everything observed, for the snapshot.
    pub fn observations(&self) -> Value {
        Value::Object(self.observed.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Deletes what the run registered (errors ignored: the hub may have removed it already).
    pub async fn clean_up(&self) {
        let configurations = std::mem::take(&mut *self.configurations.lock().unwrap_or_else(|p| p.into_inner()));
        for id in configurations {
            let _ = self.service().configurations().delete(&id, Etag::Any).await;
        }
        let devices = std::mem::take(&mut *self.devices.lock().unwrap_or_else(|p| p.into_inner()));
        for id in devices {
            let _ = self.service().registry().delete_device(&id, Etag::Any).await;
        }
    }
}

/// The structure of a JSON document: member names kept, values replaced by their type (`<string>`,
/// `<number>`, `<bool>`), arrays by the skeleton of their first item. What clients depend on, without the ids,
/// times and etags that differ on every run.
pub fn skeleton(value: &Value) -> Value {
    match value {
        Value::Null => Value::Null,
        Value::Bool(_) => Value::String("<bool>".into()),
        Value::Number(_) => Value::String("<number>".into()),
        Value::String(_) => Value::String("<string>".into()),
        Value::Array(items) => Value::Array(items.first().map(skeleton).into_iter().collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), skeleton(v))).collect()),
    }
}

/// `value` with every member named in `members` (at any depth) that holds something other than `null` replaced
/// by `placeholder`: for times and other values that differ on every run, where the rest of the document matters.
pub fn redact(value: &Value, members: &[&str], placeholder: &str) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|v| redact(v, members, placeholder)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if members.contains(&k.as_str()) && !v.is_null() {
                        Value::String(placeholder.to_owned())
                    } else {
                        redact(v, members, placeholder)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `value` with `text` replaced by `placeholder` in every string and member name (for generated parts of values,
/// such as the generation id in an IoT Edge device's scope).
pub fn replace_text(value: &Value, text: &str, placeholder: &str) -> Value {
    if text.is_empty() {
        return value.clone();
    }
    match value {
        Value::String(s) => Value::String(s.replace(text, placeholder)),
        Value::Array(items) => Value::Array(items.iter().map(|v| replace_text(v, text, placeholder)).collect()),
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, v)| (k.replace(text, placeholder), replace_text(v, text, placeholder))).collect(),
        ),
        other => other.clone(),
    }
}

/// Polls `check` every `every` until it yields a value or `within` runs out.
pub async fn eventually<T, F, Fut>(within: Duration, every: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("not reached within {within:?}");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn skeletons_keep_names_and_types() {
        let doc = json!({"deviceId": "d1", "version": 3, "tags": {"a": true}, "list": [{"x": null}, {"y": 1}]});
        assert_eq!(
            skeleton(&doc),
            json!({"deviceId": "<string>", "version": "<number>", "tags": {"a": "<bool>"}, "list": [{"x": null}]})
        );
    }

    #[test]
    fn redaction_replaces_named_members_and_text() {
        let doc = json!({"id": "c-123", "createdTimeUtc": "2024-01-01T00:00:00Z", "inner": [{"createdTimeUtc": null}]});
        assert_eq!(
            redact(&doc, &["createdTimeUtc"], "<time>"),
            json!({"id": "c-123", "createdTimeUtc": "<time>", "inner": [{"createdTimeUtc": null}]})
        );
        assert_eq!(replace_text(&json!({"c-123": ["x-123"]}), "123", "<n>"), json!({"c-<n>": ["x-<n>"]}));
    }
}
