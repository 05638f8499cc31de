//! Automatic device management on the wire: configurations (`/configurations/{id}`), their content, metrics, the
//! `testQueries` call and the twin's `configurations` member. Member order is the hub's (a recorded real-hub
//! response; docs/research/configurations.md §2).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A configuration (an automatic device configuration, or an IoT Edge deployment when it has `modulesContent`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Configuration {
    /// `id`: lowercase letters, digits and `-+%_*!'`, at most 128 characters.
    pub id: String,
    /// `schemaVersion`: stored as sent (`null` when not sent).
    pub schema_version: Option<String>,
    /// `labels`: name to value, as sent (`null` when not sent).
    pub labels: Option<Map<String, Value>>,
    /// `content`: what targeted twins get.
    pub content: ConfigurationContent,
    /// `targetCondition`: a twin query condition (`*` for every device; `""` for none).
    pub target_condition: String,
    /// `createdTimeUtc`, set by the hub.
    pub created_time_utc: Option<String>,
    /// `lastUpdatedTimeUtc`, set by the hub.
    pub last_updated_time_utc: Option<String>,
    /// `priority`: the higher wins where two configurations write the same twin path.
    pub priority: i32,
    /// `systemMetrics`: `targetedCount` and `appliedCount`, written by the hub.
    pub system_metrics: ConfigurationMetrics,
    /// `metrics`: the user's own metric queries and their counts.
    pub metrics: ConfigurationMetrics,
    /// `etag`: base64 of the configuration's version (`MQ==` when created).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// `content`: device twin paths (`properties.desired...`) for device configurations, per-module twin paths for
/// IoT Edge deployments, module twin paths for module configurations. Sections not sent are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigurationContent {
    /// `deviceContent`: twin path (`properties.desired` or below) to value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_content: Option<Map<String, Value>>,
    /// `modulesContent`: module id (`$edgeAgent`, `$edgeHub`, ...) to twin path to value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules_content: Option<Map<String, Value>>,
    /// `moduleContent`: module twin path to value, for module configurations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_content: Option<Map<String, Value>>,
}

/// `metrics` and `systemMetrics`: each query's text and, once evaluated, how many rows it returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigurationMetrics {
    /// Metric name to the number of rows its query returns.
    pub results: Map<String, Value>,
    /// Metric name to query text.
    pub queries: Map<String, Value>,
}

/// The body of `POST /configurations/testQueries`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigurationQueriesTestInput {
    /// `targetCondition` to check.
    pub target_condition: String,
    /// `customMetricQueries`: name to query text.
    pub custom_metric_queries: Map<String, Value>,
}

/// The answer of `POST /configurations/testQueries`: an empty string where a query is valid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigurationQueriesTestResponse {
    /// `targetConditionError`: why the condition is not valid (`""` when it is).
    pub target_condition_error: String,
    /// `customMetricQueryErrors`: name to why that query is not valid (`""` when it is).
    pub custom_metric_query_errors: Map<String, Value>,
}

/// A configuration's status in a twin's `configurations` member.
pub mod status {
    /// The configuration's content is in the twin (some paths may belong to a higher-priority one).
    pub const APPLIED: &str = "Applied";
    /// The twin meets the configuration's target condition, but higher-priority configurations won every path.
    pub const TARGETED: &str = "Targeted";
}
