//! Configurations on the wire: reading `PUT /configurations/{id}`, `testQueries` and `applyConfigurationContent`
//! bodies, and writing configurations in the hub's member order (docs/research/configurations.md §2).

use iothub_proto::configurations::{
    Configuration as ConfigurationBody, ConfigurationContent, ConfigurationMetrics, ConfigurationQueriesTestResponse,
};
use serde_json::{Map, Value as Json};

use crate::clock::format_time;
use crate::domain::configurations::{self, Configuration, ConfigurationSpec, Content};
use crate::error::HubError;
use crate::hub::ConfigurationCounts;

fn invalid(detail: String) -> HubError {
    HubError::ArgumentInvalid(detail)
}

/// Reads a configuration sent for `id`. Members only the hub writes (`createdTimeUtc`, `systemMetrics`, `etag`,
/// `contentType`, ...) are ignored, so a configuration read back and sent again is accepted.
pub fn spec(id: &str, body: &Json) -> Result<ConfigurationSpec, HubError> {
    let Json::Object(body) = body else {
        return Err(invalid("The configuration must be a JSON object".into()));
    };
    let member = |name: &str| body.get(name).filter(|v| !v.is_null());
    if let Some(given) = member("id")
        && given.as_str() != Some(id)
    {
        return Err(invalid(format!("The configuration id in the body ({given}) is not the id in the path ({id})")));
    }
    let text = |name: &str| -> Result<Option<String>, HubError> {
        match member(name) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(invalid(format!("{name} must be a string, not {other}"))),
        }
    };
    let labels = member("labels").map(|labels| string_members("labels", labels)).transpose()?;
    let priority = match member("priority") {
        None => 0,
        Some(value) => value
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| invalid(format!("priority must be a 32-bit integer, not {value}")))?,
    };
    let metrics = match member("metrics").and_then(|m| m.get("queries")).filter(|q| !q.is_null()) {
        None => Vec::new(),
        Some(queries) => string_members("metrics.queries", queries)?,
    };
    Ok(ConfigurationSpec {
        schema_version: text("schemaVersion")?,
        labels,
        content: content(member("content"))?,
        target_condition: text("targetCondition")?.unwrap_or_default(),
        priority,
        metrics,
    })
}

/// The members of `value`, an object of strings (`labels`, `metrics.queries`), named `what` in errors.
fn string_members(what: &str, value: &Json) -> Result<Vec<(String, String)>, HubError> {
    let Json::Object(members) = value else {
        return Err(invalid(format!("{what} must be an object, not {value}")));
    };
    members
        .iter()
        .map(|(name, member)| match member {
            Json::String(text) => Ok((name.clone(), text.clone())),
            other => Err(invalid(format!("{what}.{name} must be a string, not {other}"))),
        })
        .collect()
}

/// Reads a `content` object (absent or `null`: no content). Each section must be an object or `null`.
pub fn content(value: Option<&Json>) -> Result<Content, HubError> {
    let content = match value {
        None | Some(Json::Null) => return Ok(Content::default()),
        Some(Json::Object(content)) => content,
        Some(other) => return Err(invalid(format!("content must be an object, not {other}"))),
    };
    let section = |name: &str| -> Result<Option<Map<String, Json>>, HubError> {
        match content.get(name) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Object(section)) => Ok(Some(section.clone())),
            Some(other) => {
                Err(configurations::invalid_content(format!("content.{name} must be an object, not {other}")))
            }
        }
    };
    Ok(Content::new(section("deviceContent")?, section("modulesContent")?, section("moduleContent")?))
}

/// The body of `POST /configurations/testQueries`: the target condition's error and each metric query's
/// (`""` where valid).
pub fn test_queries(body: &Json) -> Result<ConfigurationQueriesTestResponse, HubError> {
    let Json::Object(body) = body else {
        return Err(invalid("The body must be a JSON object".into()));
    };
    let target = match body.get("targetCondition") {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(text)) => configurations::check_target(text),
        Some(other) => return Err(invalid(format!("targetCondition must be a string, not {other}"))),
    };
    let mut errors = Map::new();
    match body.get("customMetricQueries") {
        None | Some(Json::Null) => {}
        Some(Json::Object(queries)) => {
            for (name, query) in queries {
                let error = match query {
                    Json::String(text) => configurations::check_query(text).err().unwrap_or_default(),
                    other => format!("the query must be a string, not {other}"),
                };
                errors.insert(name.clone(), Json::String(error));
            }
        }
        Some(other) => return Err(invalid(format!("customMetricQueries must be an object, not {other}"))),
    }
    Ok(ConfigurationQueriesTestResponse { target_condition_error: target, custom_metric_query_errors: errors })
}

/// A configuration as the hub shows it, with its metrics counted.
pub fn configuration(configuration: &Configuration, counts: &ConfigurationCounts) -> ConfigurationBody {
    let labels = configuration
        .labels
        .as_ref()
        .map(|labels| labels.iter().map(|(name, value)| (name.clone(), Json::String(value.clone()))).collect());
    let content = &configuration.content;
    let mut system = ConfigurationMetrics::default();
    for (name, text, count) in &counts.system {
        if let Some(count) = count {
            system.results.insert(name.clone(), Json::from(*count));
        }
        system.queries.insert(name.clone(), Json::String(text.clone()));
    }
    let mut metrics = ConfigurationMetrics::default();
    for (name, count) in &counts.custom {
        if let Some(count) = count {
            metrics.results.insert(name.clone(), Json::from(*count));
        }
    }
    for metric in &configuration.metrics {
        metrics.queries.insert(metric.name.clone(), Json::String(metric.text.clone()));
    }
    ConfigurationBody {
        id: configuration.id.clone(),
        schema_version: configuration.schema_version.clone(),
        labels,
        content: ConfigurationContent {
            device_content: content.device.clone(),
            modules_content: content.modules.clone(),
            module_content: content.module.clone(),
        },
        target_condition: configuration.target.text().to_owned(),
        created_time_utc: Some(round_trip_time(configuration.created)),
        last_updated_time_utc: Some(round_trip_time(configuration.last_updated)),
        priority: configuration.priority,
        system_metrics: system,
        metrics,
        etag: Some(configuration.etag()),
    }
}

/// A time as configurations show it: .NET's round-trip form with trailing fractional zeros dropped
/// (`2020-08-20T22:05:26.653904Z`).
fn round_trip_time(time: jiff::Timestamp) -> String {
    let text = format_time(time);
    match text.strip_suffix('Z').and_then(|t| t.split_once('.')) {
        Some((seconds, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() { format!("{seconds}Z") } else { format!("{seconds}.{fraction}Z") }
        }
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_configuration_is_written_in_the_hubs_order_with_its_counts() {
        let body = json!({
            "id": "c1", "contentType": "assignment", "schemaVersion": "1.0", "labels": {"team": "a"},
            "content": {"deviceContent": {"properties.desired.x": 1}, "modulesContent": {}, "moduleContent": {}},
            "targetCondition": "tags.x = 1", "priority": 3, "createdTimeUtc": "0001-01-01T00:00:00",
            "systemMetrics": {"results": {}, "queries": {}}, "metrics": {"queries": {"m": "SELECT deviceId FROM devices"}},
            "etag": "*"
        });
        let sent = spec("c1", &body).expect("spec");
        let now = jiff::Timestamp::from_second(1_800_000_000).expect("time");
        let configuration = Configuration::create("c1", sent, now).expect("configuration");
        let counts = ConfigurationCounts {
            system: vec![("targetedCount".into(), "select deviceId from devices where tags.x = 1".into(), Some(2))],
            custom: vec![("m".into(), Some(5))],
        };
        let text = serde_json::to_string(&self::configuration(&configuration, &counts)).expect("json");
        assert_eq!(
            text,
            concat!(
                r#"{"id":"c1","schemaVersion":"1.0","labels":{"team":"a"},"content":{"deviceContent":{"properties.desired.x":1}},"#,
                r#""targetCondition":"tags.x = 1","createdTimeUtc":"2027-01-15T08:00:00Z","lastUpdatedTimeUtc":"2027-01-15T08:00:00Z","#,
                r#""priority":3,"systemMetrics":{"results":{"targetedCount":2},"queries":{"targetedCount":"select deviceId from devices where tags.x = 1"}},"#,
                r#""metrics":{"results":{"m":5},"queries":{"m":"SELECT deviceId FROM devices"}},"etag":"MQ=="}"#
            )
        );
        assert!(spec("other", &body).is_err(), "the body's id must be the path's");
        assert_eq!(
            round_trip_time("2020-08-20T22:05:26.6539040Z".parse().expect("time")),
            "2020-08-20T22:05:26.653904Z"
        );
    }

    #[test]
    fn test_queries_report_each_error_in_the_body() {
        let answer = test_queries(&json!({
            "targetCondition": "tags.a = 'b'",
            "customMetricQueries": {"ok": "SELECT deviceId FROM devices", "bad": "SELECT FROM WHERE"}
        }))
        .expect("answer");
        assert_eq!(answer.target_condition_error, "");
        assert_eq!(answer.custom_metric_query_errors["ok"], "");
        assert_ne!(answer.custom_metric_query_errors["bad"], "");
        let bad_target = test_queries(&json!({"targetCondition": "tags.a = "})).expect("answer");
        assert_ne!(bad_target.target_condition_error, "");
    }
}
