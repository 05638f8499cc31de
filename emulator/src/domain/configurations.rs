//! Automatic device management: configurations (content, target condition, priority, labels, metric queries),
//! their rules (what may change, limits), and which configuration wins each desired path of a twin. Applying
//! the outcome to twins is the hub's job (`hub::configurations`); the JSON is the wire layer's.
//! Facts and sources: docs/research/configurations.md.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value as Json};

use super::query::ast::Expr;
use super::query::{Query, parse_condition, parse_query, run};
use super::twin::json::object_from_json;
use super::twin::{ConfigurationMark, Object, SectionKind, Twin, Value, rules};
use crate::error::HubError;

/// Configurations a hub holds (standard tiers; deployments and device configurations share the quota).
pub const MAX_CONFIGURATIONS: usize = 100;
/// Custom metric queries per configuration.
pub const MAX_CUSTOM_METRICS: usize = 5;
/// Length of a configuration id, a label name or a label value.
pub const MAX_ID_LEN: usize = 128;
/// Characters allowed in a configuration id besides lowercase ASCII letters and digits.
const ID_PUNCTUATION: &str = "-+%_*!'";
/// The content key that names the whole desired section; deeper paths follow it after a dot.
const DESIRED: &str = "properties.desired";
/// How a module configuration's target condition starts (the rest is a WHERE condition on module twins).
const MODULES_FROM: &str = "from devices.modules";

/// What a configuration configures, from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `deviceContent`: device twins.
    Device,
    /// `moduleContent`: module twins picked by a `FROM devices.modules WHERE ...` condition.
    Module,
    /// `modulesContent`: an IoT Edge deployment, written to the module twins of targeted Edge devices.
    Edge,
}

/// `content`: the sections as sent (empty ones dropped), each a map of twin path to value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Map<String, Json>>,
    /// Module id to (twin path to value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<Map<String, Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<Map<String, Json>>,
}

impl Content {
    /// The sections given, with empty ones treated as absent (the C# SDK sends all three, unused ones as `{}`).
    pub fn new(
        device: Option<Map<String, Json>>,
        modules: Option<Map<String, Json>>,
        module: Option<Map<String, Json>>,
    ) -> Self {
        let keep = |section: Option<Map<String, Json>>| section.filter(|s| !s.is_empty());
        Self { device: keep(device), modules: keep(modules), module: keep(module) }
    }

    /// The kind the sections make, or 400 InvalidConfigurationContent for a mix.
    fn kind(&self) -> Result<Kind, HubError> {
        match (&self.device, &self.modules, &self.module) {
            (_, None, None) => Ok(Kind::Device),
            (None, Some(_), None) => Ok(Kind::Edge),
            (None, None, Some(_)) => Ok(Kind::Module),
            _ => {
                Err(invalid_content("only one of deviceContent, modulesContent and moduleContent may be given".into()))
            }
        }
    }

    /// Checks every section: keys are `properties.desired[.path]`, values are valid desired properties (400
    /// InvalidConfigurationContent otherwise).
    pub fn validate(&self) -> Result<(), HubError> {
        if let Some(device) = &self.device {
            validate_paths("deviceContent", device)?;
        }
        if let Some(module) = &self.module {
            validate_paths("moduleContent", module)?;
        }
        if let Some(modules) = &self.modules {
            for (module_id, section) in modules {
                super::registry::validate_module_id(module_id)
                    .map_err(|e| invalid_content(format!("modulesContent: {e}")))?;
                let Json::Object(section) = section else {
                    return Err(invalid_content(format!("modulesContent.{module_id} must be an object")));
                };
                validate_paths(&format!("modulesContent.{module_id}"), section)?;
            }
        }
        Ok(())
    }

    /// The leaves a twin of `module_id` (none: a device twin) gets from this content.
    pub fn leaves_for(&self, module_id: Option<&str>) -> Vec<Leaf<'_>> {
        let section = match (module_id, &self.modules) {
            (Some(module_id), Some(modules)) => modules.get(module_id).and_then(Json::as_object),
            (Some(_), None) => self.module.as_ref(),
            (None, _) => self.device.as_ref(),
        };
        section.map(leaves).unwrap_or_default()
    }

    /// Whether this content gives module `module_id` its whole `properties.desired` (rather than paths below it).
    pub fn writes_whole_desired(&self, module_id: &str) -> bool {
        self.modules
            .as_ref()
            .and_then(|m| m.get(module_id))
            .and_then(Json::as_object)
            .is_some_and(|section| section.contains_key(DESIRED))
    }

    /// For a deployment: whether it is a base deployment (`$edgeAgent` gets the whole `properties.desired`),
    /// which replaces lower-priority ones instead of merging with them. Layered ones write paths below it.
    pub fn is_base_deployment(&self) -> bool {
        self.writes_whole_desired("$edgeAgent")
    }
}

/// 400 InvalidConfigurationContent, with the hub's wording before `detail`.
pub fn invalid_content(detail: String) -> HubError {
    HubError::InvalidConfigurationContent(format!("The content provided for configuration is invalid: {detail}"))
}

/// The twin path a content key names below `properties.desired` (`[]` for the section itself).
fn desired_path(key: &str) -> Option<Vec<String>> {
    if key == DESIRED {
        return Some(Vec::new());
    }
    let rest = key.strip_prefix(DESIRED)?.strip_prefix('.')?;
    let path: Vec<String> = rest.split('.').map(str::to_owned).collect();
    path.iter().all(|s| !s.is_empty()).then_some(path)
}

fn validate_paths(name: &str, section: &Map<String, Json>) -> Result<(), HubError> {
    for (key, value) in section {
        let Some(path) = desired_path(key) else {
            return Err(invalid_content(format!("{name} key '{key}' is not 'properties.desired' or a path below it")));
        };
        if path.is_empty() && !value.is_object() {
            return Err(invalid_content(format!("{name}.{key} must be an object")));
        }
        let patch = object_from_json(&nest(&path, value));
        rules::validate(SectionKind::Desired, &patch, true)
            .and_then(|()| rules::check_size(SectionKind::Desired, &patch))
            .map_err(|e| invalid_content(format!("{name}.{key}: {e}")))?;
    }
    Ok(())
}

/// `value` placed at `path` in an otherwise empty object (`value` itself, an object, when `path` is empty).
fn nest(path: &[String], value: &Json) -> Map<String, Json> {
    match path.split_last() {
        None => value.as_object().cloned().unwrap_or_default(),
        Some((last, parents)) => {
            let mut object = Map::from_iter([(last.clone(), value.clone())]);
            for parent in parents.iter().rev() {
                object = Map::from_iter([(parent.clone(), Json::Object(object))]);
            }
            object
        }
    }
}

/// One value a configuration writes: its path below `properties.desired` and the value (`null` removes).
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf<'a> {
    pub path: Vec<String>,
    pub value: &'a Json,
}

/// A section's values, down to the leaves: `properties.desired.a` = `{"b": 1, "c": 2}` is `a.b` = 1 and `a.c` = 2,
/// so another configuration can win `a.b` alone (the hub merges per path). Arrays, scalars, `null` and `{}` are
/// leaves.
fn leaves(section: &Map<String, Json>) -> Vec<Leaf<'_>> {
    fn walk<'a>(path: Vec<String>, value: &'a Json, out: &mut Vec<Leaf<'a>>) {
        match value {
            Json::Object(members) if !members.is_empty() => {
                for (key, member) in members {
                    let mut child = path.clone();
                    child.push(key.clone());
                    walk(child, member, out);
                }
            }
            _ if path.is_empty() => {}
            _ => out.push(Leaf { path, value }),
        }
    }
    let mut out = Vec::new();
    for (key, value) in section {
        if let Some(path) = desired_path(key) {
            walk(path, value, &mut out);
        }
    }
    out
}

/// A target condition: the text as given, parsed once. `*` targets every twin, `""` none.
#[derive(Debug, Clone)]
pub struct Target {
    text: String,
    parsed: Targets,
}

/// Which twins a target condition selects.
#[derive(Debug, Clone, Copy)]
pub enum Selects<'a> {
    Every,
    Matching(&'a Expr),
    Nothing,
}

#[derive(Debug, Clone)]
enum Targets {
    All,
    Nothing,
    Matching(Arc<Expr>),
    /// A stored condition this release cannot read (targets nothing; said in the log once read).
    Unreadable,
}

impl Target {
    /// Parses a configuration's target condition; module configurations write `FROM devices.modules WHERE ...`.
    pub fn parse(text: &str, kind: Kind) -> Result<Self, HubError> {
        let split = where_part(text);
        if names_modules(split) && kind != Kind::Module {
            return Err(HubError::ArgumentInvalid(
                "targetCondition: only a module configuration (moduleContent) targets devices.modules".into(),
            ));
        }
        let (modules, condition) = split.ok_or_else(|| {
            HubError::ArgumentInvalid(format!("targetCondition: expected WHERE after FROM devices.modules in '{text}'"))
        })?;
        if !modules && kind == Kind::Module && !condition.is_empty() {
            return Err(invalid_content(
                "a module configuration's targetCondition must start with 'FROM devices.modules WHERE'".into(),
            ));
        }
        let parsed = if condition.is_empty() {
            Targets::Nothing
        } else {
            match parse_condition(condition).map_err(|e| HubError::ArgumentInvalid(format!("targetCondition: {e}")))? {
                None => Targets::All,
                Some(expr) => Targets::Matching(Arc::new(expr)),
            }
        };
        Ok(Self { text: text.to_owned(), parsed })
    }

    /// The condition as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Which twins the condition selects.
    pub fn selects(&self) -> Selects<'_> {
        match &self.parsed {
            Targets::All => Selects::Every,
            Targets::Matching(expr) => Selects::Matching(expr),
            Targets::Nothing | Targets::Unreadable => Selects::Nothing,
        }
    }

    /// The condition without a `FROM devices.modules` start (for the system metric queries).
    fn where_text(&self) -> &str {
        where_part(&self.text).map_or("*", |(_, condition)| condition)
    }
}

/// Whether a target condition (split by [`where_part`]) starts `FROM devices.modules`, well formed or not.
fn names_modules(split: Option<(bool, &str)>) -> bool {
    split.is_none_or(|(modules, _)| modules)
}

/// A target condition's WHERE part, and whether it names module twins: `FROM devices.modules WHERE c` is
/// `(true, c)` (`*` with no WHERE), anything else `(false, text)`. `None` when something other than WHERE follows
/// the FROM.
fn where_part(text: &str) -> Option<(bool, &str)> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix(MODULES_FROM) else { return Some((false, trimmed)) };
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Some((true, "*"));
    }
    // ASCII lowercasing keeps byte offsets, so the offset into `lower` is one into `trimmed`.
    let at = trimmed.len() - rest.len();
    rest.starts_with("where").then(|| (true, trimmed[at + "where".len()..].trim()))
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// A custom metric: its name and query, parsed once.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub text: String,
    pub query: Option<Arc<Query>>,
}

impl Metric {
    /// A metric whose query must parse and be one the hub runs.
    pub fn parse(name: &str, text: &str) -> Result<Self, HubError> {
        let query = check_query(text).map_err(|e| HubError::ArgumentInvalid(format!("metrics.queries.{name}: {e}")))?;
        Ok(Self { name: name.to_owned(), text: text.to_owned(), query: Some(Arc::new(query)) })
    }
}

impl PartialEq for Metric {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.text == other.text
    }
}

/// Parses and checks a metric query (what `testQueries` reports).
pub fn check_query(text: &str) -> Result<Query, String> {
    let query = parse_query(text).map_err(|e| e.to_string())?;
    run::validate(&query)?;
    Ok(query)
}

/// Checks a target condition for `testQueries`: the error text, `""` when valid.
pub fn check_target(text: &str) -> String {
    let kind = if names_modules(where_part(text)) { Kind::Module } else { Kind::Device };
    Target::parse(text, kind).err().map(|e| e.to_string()).unwrap_or_default()
}

/// A configuration as sent by the service (`PUT /configurations/{id}`), before the hub's own members.
#[derive(Debug, Clone, Default)]
pub struct ConfigurationSpec {
    pub schema_version: Option<String>,
    pub labels: Option<Vec<(String, String)>>,
    pub content: Content,
    pub target_condition: String,
    pub priority: i32,
    pub metrics: Vec<(String, String)>,
}

/// Where a configuration stands against others: priority, then creation time, then id (greater wins).
pub type Precedence<'a> = (i32, Timestamp, &'a str);

/// A stored configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Configuration {
    pub id: String,
    pub schema_version: Option<String>,
    pub labels: Option<Vec<(String, String)>>,
    pub content: Content,
    pub kind: Kind,
    pub target: Target,
    pub created: Timestamp,
    pub last_updated: Timestamp,
    pub priority: i32,
    pub metrics: Vec<Metric>,
    /// Grows by one on every update; the etag is derived from it.
    pub version: u64,
}

impl Configuration {
    /// A new configuration from `spec`, checked against the hub's rules.
    pub fn create(id: &str, spec: ConfigurationSpec, now: Timestamp) -> Result<Self, HubError> {
        validate_id(id)?;
        spec.content.validate()?;
        let kind = spec.content.kind()?;
        let (labels, metrics, target) = checked_mutables(&spec, kind)?;
        Ok(Self {
            id: id.to_owned(),
            schema_version: spec.schema_version,
            labels,
            content: spec.content,
            kind,
            target,
            created: now,
            last_updated: now,
            priority: spec.priority,
            metrics,
            version: 1,
        })
    }

    /// This configuration updated from `spec`: only the target condition, labels, priority and metrics may
    /// change ("Configuration content is immutable").
    pub fn update(&self, spec: ConfigurationSpec, now: Timestamp) -> Result<Self, HubError> {
        if spec.content != self.content {
            return Err(HubError::ArgumentInvalid(format!(
                "Configuration content is immutable: configuration '{}' can change only its targetCondition, labels, \
                 priority and metrics",
                self.id
            )));
        }
        let (labels, metrics, target) = checked_mutables(&spec, self.kind)?;
        Ok(Self {
            labels,
            target,
            priority: spec.priority,
            metrics,
            last_updated: now,
            version: self.version + 1,
            ..self.clone()
        })
    }

    /// The etag: base64 of the version's decimal digits (`MQ==` when created), as the hub writes it.
    pub fn etag(&self) -> String {
        BASE64.encode(self.version.to_string())
    }

    /// Distinguishes this configuration from one re-created under the same id (the twin marks carry it).
    pub fn generation(&self) -> i64 {
        self.created.as_microsecond()
    }

    /// The order in which configurations claim paths: higher priority first, then the newer one.
    pub fn precedence(&self) -> Precedence<'_> {
        (self.priority, self.created, &self.id)
    }

    /// The system metrics' names and query texts, as the hub writes them for this kind of configuration.
    pub fn system_metric_queries(&self) -> Vec<(&'static str, String)> {
        let id = &self.id;
        let condition = self.target.where_text();
        let applied = format!("configurations.[[{id}]].status = 'Applied'");
        match self.kind {
            Kind::Device => {
                let targeted = match condition {
                    "" => String::new(),
                    "*" => "select deviceId from devices".to_owned(),
                    condition => format!("select deviceId from devices where {condition}"),
                };
                vec![
                    ("targetedCount", targeted),
                    ("appliedCount", format!("select deviceId from devices where {applied}")),
                ]
            }
            Kind::Module => {
                let targeted = match condition {
                    "" => String::new(),
                    "*" => "select deviceId, moduleId from devices.modules".to_owned(),
                    condition => format!("select deviceId, moduleId from devices.modules where {condition}"),
                };
                let applied = format!("select deviceId, moduleId from devices.modules where {applied}");
                vec![("targetedCount", targeted), ("appliedCount", applied)]
            }
            Kind::Edge => {
                let edge = "select deviceId from devices where capabilities.iotEdge = true";
                let targeted = match condition {
                    "" => String::new(),
                    "*" => edge.to_owned(),
                    condition => format!("{edge} and ({condition})"),
                };
                let applied =
                    format!("select deviceId from devices.modules where moduleId = '$edgeAgent' and {applied}");
                let reported = "properties.desired.$version = properties.reported.lastDesiredVersion and \
                                properties.reported.lastDesiredStatus.code";
                vec![
                    ("targetedCount", targeted),
                    ("appliedCount", applied.clone()),
                    ("reportedSuccessfulCount", format!("{applied} and {reported} = 200")),
                    ("reportedFailedCount", format!("{applied} and {reported} != 200")),
                ]
            }
        }
    }
}

/// The members an update may change, checked: labels, metrics and the target condition.
#[allow(clippy::type_complexity)]
fn checked_mutables(
    spec: &ConfigurationSpec,
    kind: Kind,
) -> Result<(Option<Vec<(String, String)>>, Vec<Metric>, Target), HubError> {
    if let Some(labels) = &spec.labels {
        for (name, value) in labels {
            for (what, text) in [("name", name), ("value", value)] {
                if text.is_empty() || text.len() > MAX_ID_LEN || text.starts_with('$') {
                    return Err(HubError::ArgumentInvalid(format!(
                        "Label {what} '{text}' is invalid: 1 to {MAX_ID_LEN} characters, not starting with '$'"
                    )));
                }
            }
        }
    }
    if spec.metrics.len() > MAX_CUSTOM_METRICS {
        return Err(HubError::ArgumentInvalid(format!(
            "A configuration has at most {MAX_CUSTOM_METRICS} custom metrics; {} were given",
            spec.metrics.len()
        )));
    }
    let metrics = spec.metrics.iter().map(|(name, text)| Metric::parse(name, text)).collect::<Result<_, _>>()?;
    let target = Target::parse(&spec.target_condition, kind)?;
    Ok((spec.labels.clone(), metrics, target))
}

/// Checks a configuration id: 1 to 128 lowercase letters, digits and `-+%_*!'`.
pub fn validate_id(id: &str) -> Result<(), HubError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ID_PUNCTUATION.contains(c));
    if valid {
        return Ok(());
    }
    Err(HubError::ArgumentInvalid(format!(
        "Configuration id '{}' is invalid: up to {MAX_ID_LEN} lowercase letters, digits and {ID_PUNCTUATION}",
        id.chars().take(MAX_ID_LEN + 1).collect::<String>()
    )))
}

/// One configuration's part in a twin: its leaves for that twin, and whether it may claim any (a base
/// deployment beaten by another base deployment only shows as targeted).
#[derive(Debug)]
pub struct Contribution<'a> {
    pub configuration: &'a Configuration,
    pub leaves: Vec<Leaf<'a>>,
    pub may_claim: bool,
}

/// Who won what: for each contribution, whether it is applied and the leaves (by index) it owns.
#[derive(Debug, PartialEq)]
pub struct Resolution {
    pub applied: Vec<bool>,
    pub owned: Vec<Vec<usize>>,
}

/// Resolves contributions to one twin: the highest priority (then the newest) claims each path first; a
/// path inside or above a claimed one belongs to the claimer. A configuration is applied when it owns a path
/// (or has none to write); otherwise it is only targeted.
pub fn resolve(contributions: &[Contribution<'_>]) -> Resolution {
    let mut order: Vec<usize> = (0..contributions.len()).collect();
    order.sort_by(|&a, &b| {
        contributions[b].configuration.precedence().cmp(&contributions[a].configuration.precedence())
    });
    let mut claimed: Vec<&[String]> = Vec::new();
    let mut applied = vec![false; contributions.len()];
    let mut owned = vec![Vec::new(); contributions.len()];
    for index in order {
        let contribution = &contributions[index];
        if !contribution.may_claim {
            continue;
        }
        applied[index] = contribution.leaves.is_empty();
        for (leaf_index, leaf) in contribution.leaves.iter().enumerate() {
            let overlaps = claimed.iter().any(|c| c.starts_with(&leaf.path) || leaf.path.starts_with(c));
            if !overlaps {
                claimed.push(&leaf.path);
                owned[index].push(leaf_index);
                applied[index] = true;
            }
        }
    }
    Resolution { applied, owned }
}

/// What a twin needs to match its configurations: a desired-properties patch (empty when no value changes) and
/// the twin's new `configurations` marks.
#[derive(Debug, PartialEq)]
pub struct Plan {
    pub patch: Map<String, Json>,
    pub marks: Vec<ConfigurationMark>,
}

/// Compares what `contributions` (the configurations targeting `twin` now) say with what the twin's marks
/// record, and returns the change to make, or `None` when the twin is up to date. A path is written when its
/// owner changes (not when a user overwrote it since: the hub does not fight the user), and removed when no
/// configuration owns it any more, except what IoT Edge deployments wrote when none applies now (an Edge
/// device keeps running its last deployment, as on the hub).
pub fn plan(twin: &Twin, contributions: &[Contribution<'_>]) -> Option<Plan> {
    let resolution = resolve(contributions);
    let previous = twin.configuration_marks();
    let mut owner_before: HashMap<&[String], (&str, i64)> = HashMap::new();
    for mark in previous {
        for path in &mark.paths {
            owner_before.insert(path, (&mark.id, mark.generation));
        }
    }
    let mut marks = Vec::with_capacity(contributions.len());
    let mut sets: Vec<(&[String], &Json, Precedence<'_>)> = Vec::new();
    let mut owned_now: HashSet<&[String]> = HashSet::new();
    for (index, contribution) in contributions.iter().enumerate() {
        let configuration = contribution.configuration;
        let owner = (configuration.id.as_str(), configuration.generation());
        let mut paths = Vec::with_capacity(resolution.owned[index].len());
        for &leaf_index in &resolution.owned[index] {
            let leaf = &contribution.leaves[leaf_index];
            owned_now.insert(&leaf.path);
            if owner_before.get(leaf.path.as_slice()) != Some(&owner) {
                sets.push((&leaf.path, leaf.value, configuration.precedence()));
            }
            paths.push(leaf.path.clone());
        }
        marks.push(ConfigurationMark {
            id: configuration.id.clone(),
            generation: owner.1,
            applied: resolution.applied[index],
            edge: configuration.kind == Kind::Edge,
            paths,
        });
    }
    let edge_applies = contributions.iter().any(|c| c.configuration.kind == Kind::Edge);
    let removals: Vec<&[String]> = previous
        .iter()
        .filter(|mark| !mark.edge || edge_applies)
        .flat_map(|mark| &mark.paths)
        .map(Vec::as_slice)
        .filter(|path| !owned_now.contains(path) && holds(&twin.desired.properties, path))
        .collect();
    if sets.is_empty() && removals.is_empty() && marks == previous {
        return None;
    }
    let mut patch = Map::new();
    for path in removals {
        place(&mut patch, path, Json::Null, false);
    }
    // New members go in from the lowest-priority configuration up, each in its content's order, so a twin's
    // properties come out in the same order whichever configuration was applied first.
    sets.sort_by_key(|(_, _, precedence)| *precedence);
    for (path, value, _) in sets {
        place(&mut patch, path, value.clone(), true);
    }
    collapse(&mut patch, &twin.desired.properties);
    Some(Plan { patch, marks })
}

/// Turns a patch that removes every member of an object into one that removes the object, bottom up, so
/// content taken back leaves no empty objects behind (`{"cfg": {"a": null}}` over `{"cfg": {"a": 1}}` becomes
/// `{"cfg": null}`).
fn collapse(patch: &mut Map<String, Json>, current: &Object) {
    for (key, change) in patch.iter_mut() {
        let Some(Value::Object(child)) = current.get(key) else { continue };
        let Json::Object(child_patch) = change else { continue };
        collapse(child_patch, child);
        let mut members = child.iter().filter(|p| !p.value.is_null()).peekable();
        let all_removed = members.peek().is_some()
            && members.all(|p| child_patch.get(p.key.as_str()).is_some_and(Json::is_null))
            && child_patch.values().all(Json::is_null);
        if all_removed {
            *change = Json::Null;
        }
    }
}

/// True when `object` has a member at `path`.
fn holds(object: &Object, path: &[String]) -> bool {
    match path.split_first() {
        None => true,
        Some((first, rest)) => match object.get(first) {
            Some(Value::Object(child)) => holds(child, rest),
            Some(Value::Null) | None => false,
            Some(_) => rest.is_empty(),
        },
    }
}

/// Puts `value` at `path` in a patch, replacing whatever is in its way.
pub fn place_value(patch: &mut Map<String, Json>, path: &[String], value: Json) {
    place(patch, path, value, true);
}

/// Puts `value` at `path` in a patch. A removal (`overwrite` false) never replaces what a write put there, and
/// is dropped below a value a write set; a write replaces whatever is in its way.
fn place(patch: &mut Map<String, Json>, path: &[String], value: Json, overwrite: bool) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut object = patch;
    for parent in parents {
        let slot = object.entry(parent.clone()).or_insert_with(|| Json::Object(Map::new()));
        if !slot.is_object() {
            if !overwrite {
                return;
            }
            *slot = Json::Object(Map::new());
        }
        let Json::Object(child) = slot else { return };
        object = child;
    }
    if overwrite || !object.contains_key(last) {
        object.insert(last.clone(), value);
    }
}

/// The stored form: the configuration as its members, the target and metrics as their texts.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    schema_version: Option<String>,
    labels: Option<Vec<(String, String)>>,
    content: Content,
    target: String,
    created: Timestamp,
    last_updated: Timestamp,
    priority: i32,
    metrics: Vec<(String, String)>,
    version: u64,
}

impl Serialize for Configuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Stored {
            id: self.id.clone(),
            schema_version: self.schema_version.clone(),
            labels: self.labels.clone(),
            content: self.content.clone(),
            target: self.target.text.clone(),
            created: self.created,
            last_updated: self.last_updated,
            priority: self.priority,
            metrics: self.metrics.iter().map(|m| (m.name.clone(), m.text.clone())).collect(),
            version: self.version,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Configuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = Stored::deserialize(deserializer)?;
        let kind = stored.content.kind().map_err(serde::de::Error::custom)?;
        // A condition or query a later parser no longer reads targets nothing and counts nothing, rather than
        // making the whole data file unreadable.
        let target = Target::parse(&stored.target, kind)
            .unwrap_or(Target { text: stored.target.clone(), parsed: Targets::Unreadable });
        let metrics = stored
            .metrics
            .iter()
            .map(|(name, text)| {
                Metric::parse(name, text).unwrap_or(Metric { name: name.clone(), text: text.clone(), query: None })
            })
            .collect();
        Ok(Self {
            id: stored.id,
            schema_version: stored.schema_version,
            labels: stored.labels,
            content: stored.content,
            kind,
            target,
            created: stored.created,
            last_updated: stored.last_updated,
            priority: stored.priority,
            metrics,
            version: stored.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn device_config(id: &str, priority: i32, content: Json, created: i64) -> Configuration {
        let spec = ConfigurationSpec {
            content: Content::new(content.as_object().cloned(), None, None),
            target_condition: "*".into(),
            priority,
            ..ConfigurationSpec::default()
        };
        Configuration::create(id, spec, t(created)).expect("configuration")
    }

    fn contribute<'a>(configs: &[&'a Configuration]) -> Vec<Contribution<'a>> {
        configs
            .iter()
            .map(|c| Contribution { configuration: c, leaves: c.content.leaves_for(None), may_claim: true })
            .collect()
    }

    fn owned_paths(config: &Contribution<'_>, owned: &[usize]) -> Vec<String> {
        owned.iter().map(|&i| config.leaves[i].path.join(".")).collect()
    }

    #[test]
    fn the_higher_priority_wins_each_path_and_the_lower_keeps_the_rest() {
        let low = device_config("low", 1, json!({"properties.desired.cfg": {"a": 1, "b": 1}}), 0);
        let high = device_config("high", 2, json!({"properties.desired.cfg.b": 2}), 0);
        let contributions: Vec<_> = [&low, &high]
            .into_iter()
            .map(|c| Contribution { configuration: c, leaves: c.content.leaves_for(None), may_claim: true })
            .collect();
        let resolution = resolve(&contributions);
        assert_eq!(resolution.applied, vec![true, true]);
        assert_eq!(owned_paths(&contributions[0], &resolution.owned[0]), vec!["cfg.a"]);
        assert_eq!(owned_paths(&contributions[1], &resolution.owned[1]), vec!["cfg.b"]);
    }

    #[test]
    fn a_configuration_beaten_on_every_path_is_only_targeted_and_ties_go_to_the_newer() {
        let old = device_config("old", 5, json!({"properties.desired": {"x": 1}}), 0);
        let new = device_config("new", 5, json!({"properties.desired.x": 2}), 10);
        let contributions: Vec<_> = [&old, &new]
            .into_iter()
            .map(|c| Contribution { configuration: c, leaves: c.content.leaves_for(None), may_claim: true })
            .collect();
        let resolution = resolve(&contributions);
        assert_eq!(resolution.applied, vec![false, true]);
        // A whole object claimed above a path wins the path too.
        let parent = device_config("parent", 9, json!({"properties.desired.x": {"deep": 1}}), 0);
        let leaves = parent.content.leaves_for(None);
        assert_eq!(leaves[0].path, vec!["x".to_owned(), "deep".to_owned()]);
    }

    #[test]
    fn content_is_checked_and_immutable_while_the_rest_may_change() {
        let bad = |content: Json| {
            let spec = ConfigurationSpec {
                content: Content::new(content.as_object().cloned(), None, None),
                ..Default::default()
            };
            Configuration::create("c", spec, t(0)).expect_err("refused")
        };
        assert!(matches!(bad(json!({"tags.x": 1})), HubError::InvalidConfigurationContent(_)));
        assert!(matches!(bad(json!({"properties.desired": 3})), HubError::InvalidConfigurationContent(_)));
        assert!(matches!(bad(json!({"properties.desired.$x": 3})), HubError::InvalidConfigurationContent(_)));
        assert!(validate_id("Upper").is_err() && validate_id("ok-1_+%*!'").is_ok() && validate_id("").is_err());
        let config = device_config("c", 1, json!({"properties.desired.a": 1}), 0);
        assert_eq!(config.etag(), "MQ==");
        let mut spec = ConfigurationSpec {
            content: config.content.clone(),
            target_condition: "tags.x = 1".into(),
            priority: 7,
            ..Default::default()
        };
        let updated = config.update(spec.clone(), t(5)).expect("update");
        assert_eq!((updated.etag().as_str(), updated.priority, updated.created), ("Mg==", 7, t(0)));
        spec.content = Content::new(json!({"properties.desired.a": 2}).as_object().cloned(), None, None);
        assert!(config.update(spec, t(6)).is_err());
    }

    #[test]
    fn system_metric_queries_follow_the_hubs_texts() {
        let config = device_config("c1", 1, json!({}), 0);
        assert_eq!(
            config.system_metric_queries(),
            vec![
                ("targetedCount", "select deviceId from devices".to_owned()),
                (
                    "appliedCount",
                    "select deviceId from devices where configurations.[[c1]].status = 'Applied'".to_owned()
                ),
            ]
        );
        let module = Target::parse("FROM devices.modules WHERE moduleId = 'm'", Kind::Module).expect("target");
        assert!(matches!(module.selects(), Selects::Matching(_)));
        assert!(Target::parse("tags.x = 1", Kind::Module).is_err());
        assert_eq!(where_part(" from devices.modules  WHERE  moduleId = 'm' "), Some((true, "moduleId = 'm'")));
        assert_eq!(where_part("FROM devices.modules"), Some((true, "*")));
        assert_eq!(where_part("FROM devices.modules moduleId = 'm'"), None);
        assert_eq!(where_part(" tags.x = 1 "), Some((false, "tags.x = 1")));
        assert!(matches!(Target::parse("", Kind::Device).expect("empty").selects(), Selects::Nothing));
        assert_eq!(check_target("tags.x = "), check_target("tags.x = ").to_string());
        assert!(!check_target("tags.x = ").is_empty() && check_target("*").is_empty());
    }

    #[test]
    fn a_plan_writes_new_owners_takes_back_released_paths_and_then_rests() {
        use crate::domain::twin::json::object_from_json;
        use crate::domain::twin::{TwinWrite, WriteMode};
        let now = t(0);
        let low = device_config("low", 1, json!({"properties.desired.cfg": {"a": 1, "b": 1}}), 0);
        let high = device_config("high", 2, json!({"properties.desired.cfg.b": 2}), 0);
        let apply = |twin: &Twin, plan: Plan| {
            let write = TwinWrite { tags: None, desired: Some(Some(object_from_json(&plan.patch))) };
            let mut next = twin.apply_service_write(&write, WriteMode::Merge, now).expect("write").twin;
            next.configurations = Some(plan.marks.into_boxed_slice());
            next
        };
        let twin = Twin::new(now);
        let both = plan(&twin, &contribute(&[&low, &high])).expect("a change");
        assert_eq!(both.patch, json!({"cfg": {"a": 1, "b": 2}}).as_object().cloned().expect("object"));
        let twin = apply(&twin, both);
        assert_eq!(plan(&twin, &contribute(&[&low, &high])), None, "nothing more to do");
        // The higher one goes: its path returns to the lower one's value.
        let low_only = plan(&twin, &contribute(&[&low])).expect("a change");
        assert_eq!(low_only.patch, json!({"cfg": {"b": 1}}).as_object().cloned().expect("object"));
        let twin = apply(&twin, low_only);
        // The lower one goes too: its paths are removed.
        let none = plan(&twin, &[]).expect("a change");
        assert_eq!(none.patch, json!({"cfg": null}).as_object().cloned().expect("object"), "no empty object is left");
        assert!(none.marks.is_empty());
    }

    /// Applies plans to `twin` until none is left; the second plan must already be `None` (one pass settles).
    fn settle(mut twin: Twin, configs: &[&Configuration], now: Timestamp) -> Twin {
        use crate::domain::twin::json::object_from_json;
        use crate::domain::twin::{TwinWrite, WriteMode};
        if let Some(plan) = plan(&twin, &contribute(configs)) {
            let write = TwinWrite { tags: None, desired: Some(Some(object_from_json(&plan.patch))) };
            twin = twin.apply_service_write(&write, WriteMode::Merge, now).expect("write").twin;
            twin.configurations = (!plan.marks.is_empty()).then(|| plan.marks.into_boxed_slice());
        }
        assert_eq!(plan(&twin, &contribute(configs)), None, "one pass settles the twin");
        twin
    }

    proptest::proptest! {
        /// Whatever configurations came and went before, a twin ends up with the desired properties and the
        /// statuses it would have if only the present ones had ever existed.
        #[test]
        fn a_twin_ends_up_as_if_only_the_present_configurations_ever_applied(
            specs in proptest::collection::vec(
                (0i32..3, proptest::collection::vec((0usize..5, 0i64..4), 1..4)),
                1..5,
            ),
            steps in proptest::collection::vec(0u8..16, 1..6),
        ) {
            const PATHS: [&str; 5] = ["properties.desired.a", "properties.desired.b", "properties.desired.a.x",
                "properties.desired.a.y", "properties.desired.c.z"];
            let configs: Vec<Configuration> = specs
                .iter()
                .enumerate()
                .map(|(i, (priority, leaves))| {
                    let content: Map<String, Json> =
                        leaves.iter().map(|(path, value)| (PATHS[*path].to_owned(), json!(value))).collect();
                    device_config(&format!("c{i}"), *priority, Json::Object(content), i as i64)
                })
                .collect();
            let now = t(100);
            let mut twin = Twin::new(now);
            for step in steps {
                let present: Vec<&Configuration> =
                    configs.iter().enumerate().filter(|(i, _)| step & (1 << i) != 0).map(|(_, c)| c).collect();
                twin = settle(twin, &present, now);
                let fresh = settle(Twin::new(now), &present, now);
                let desired = |twin: &Twin| crate::domain::twin::json::object_to_json(&twin.desired.properties);
                proptest::prop_assert_eq!(desired(&twin), desired(&fresh));
                proptest::prop_assert_eq!(twin.configuration_marks(), fresh.configuration_marks());
            }
        }
    }

    #[test]
    fn the_stored_form_reads_back() {
        let config = device_config("c", 3, json!({"properties.desired.a": {"b": [1, 2]}}), 0);
        let bytes = serde_json::to_vec(&config).expect("encode");
        let back: Configuration = serde_json::from_slice(&bytes).expect("decode");
        assert_eq!(back, config);
        assert_eq!(back.kind, Kind::Device);
    }
}
