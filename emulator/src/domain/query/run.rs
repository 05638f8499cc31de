//! What a parsed query produces: the result item type, the checks on select lists, projections, and
//! aggregates with GROUP BY (wire-spec F.5).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::ast::{Aggregate, Collection, Path, Projected, Projection, Query, Select};
use super::eval::{Document, Val, number_json};
use super::twin_doc::canonical_root;

/// The `x-ms-item-type` of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemType {
    Twin,
    DeviceJob,
    Raw,
}

impl ItemType {
    /// The header value (case matters to the C# SDK).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Twin => "Twin",
            Self::DeviceJob => "DeviceJob",
            Self::Raw => "Raw",
        }
    }
}

/// The item type a query returns.
pub fn item_type(query: &Query) -> ItemType {
    match (&query.select, query.from) {
        (Select::All, Collection::DevicesJobs) => ItemType::DeviceJob,
        (Select::All, _) => ItemType::Twin,
        (Select::Items(_), _) => ItemType::Raw,
    }
}

fn aggregates(query: &Query) -> bool {
    matches!(&query.select, Select::Items(items) if items.iter().any(|i| matches!(i.value, Projected::Aggregate(_))))
}

/// True when the query aggregates (one row per group rather than one item per document).
pub fn is_aggregate(query: &Query) -> bool {
    aggregates(query) || !query.group_by.is_empty()
}

/// Checks what the grammar cannot: `devices.jobs` takes only `SELECT *`; aggregates mix only with grouped paths;
/// GROUP BY needs an aggregate.
pub fn validate(query: &Query) -> Result<(), String> {
    if query.from == Collection::DevicesJobs && (query.select != Select::All || !query.group_by.is_empty()) {
        return Err("queries on devices.jobs support only SELECT * (no projections, aggregates or GROUP BY)".into());
    }
    if !query.group_by.is_empty() && !aggregates(query) {
        return Err("GROUP BY needs an aggregate such as COUNT() in the select list".into());
    }
    if aggregates(query)
        && let Select::Items(items) = &query.select
    {
        for item in items {
            if let Projected::Path(path) = &item.value
                && !query.group_by.contains(path)
            {
                return Err(format!("'{path}' must appear in GROUP BY to be selected beside an aggregate"));
            }
        }
    }
    Ok(())
}

/// The member name of a projected path: its alias, else its last segment (root members in canonical case).
fn member_name(path: &Path, alias: Option<&String>) -> String {
    if let Some(alias) = alias {
        return alias.clone();
    }
    match path.segments() {
        [only] => canonical_root(only).map_or_else(|| only.clone(), str::to_owned),
        _ => path.last().to_owned(),
    }
}

/// One result item of a projection: the selected members present in the document (absent ones are left out).
pub fn project(items: &[Projection], document: &impl Document) -> Value {
    let mut out = Map::new();
    for item in items {
        if let Projected::Path(path) = &item.value
            && let Some(value) = document.resolve(path.segments()).to_json()
        {
            out.insert(member_name(path, item.alias.as_ref()), value);
        }
    }
    Value::Object(out)
}

#[derive(Debug, Clone, Default)]
struct Accumulator {
    count: u64,
    sum: f64,
    numbers: u64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Accumulator {
    fn merge(&mut self, other: Accumulator) {
        self.count += other.count;
        self.sum += other.sum;
        self.numbers += other.numbers;
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    fn add(&mut self, value: &Val<'_>) {
        if let Val::Num(n) = value {
            self.sum += n;
            self.numbers += 1;
            self.min = Some(self.min.map_or(*n, |m| m.min(*n)));
            self.max = Some(self.max.map_or(*n, |m| m.max(*n)));
        }
    }
}

struct Group {
    /// Hash of the key values, as `key_hash` computes it.
    hash: u64,
    keys: Vec<Option<Value>>,
    accumulators: Vec<Accumulator>,
}

/// A hash of GROUP BY key values that needs no allocation for primitives; equal values (1 and 1.0 included)
/// hash alike.
fn key_hash<'a>(keys: impl Iterator<Item = Val<'a>>) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for key in keys {
        match key {
            Val::Undefined => 0u8.hash(&mut hasher),
            Val::Null => 1u8.hash(&mut hasher),
            Val::Bool(b) => (2u8, b).hash(&mut hasher),
            Val::Num(n) => (3u8, if n == 0.0 { 0 } else { n.to_bits() }).hash(&mut hasher),
            Val::Str(s) => (4u8, s.as_ref()).hash(&mut hasher),
            other => (5u8, other.to_json().map(|v| v.to_string())).hash(&mut hasher),
        }
    }
    hasher.finish()
}

/// True when a key value seen in a document equals a stored key.
fn same_key(seen: &Val<'_>, stored: &Option<Value>) -> bool {
    match (seen, stored) {
        (Val::Undefined, None) => true,
        (Val::Null, Some(Value::Null)) => true,
        (Val::Bool(a), Some(Value::Bool(b))) => a == b,
        (Val::Num(a), Some(Value::Number(b))) => b.as_f64() == Some(*a),
        (Val::Str(a), Some(Value::String(b))) => a.as_ref() == b,
        (seen @ (Val::Obj(_) | Val::Arr(_)), Some(stored)) => seen.to_json().as_ref() == Some(stored),
        _ => false,
    }
}

/// Aggregation state: one group per distinct GROUP BY key, in order of first appearance.
pub struct Groups<'q> {
    query: &'q Query,
    items: &'q [Projection],
    groups: Vec<Group>,
    /// Key hash -> positions in `groups`.
    index: HashMap<u64, Vec<usize>>,
}

impl<'q> Groups<'q> {
    /// Empty state for `query` (which must aggregate).
    pub fn new(query: &'q Query) -> Self {
        let items: &[Projection] = match &query.select {
            Select::Items(items) => items,
            Select::All => &[],
        };
        Self { query, items, groups: Vec::new(), index: HashMap::new() }
    }

    fn find(&self, hash: u64, matches: impl Fn(&Group) -> bool) -> Option<usize> {
        self.index.get(&hash)?.iter().copied().find(|&i| matches(&self.groups[i]))
    }

    fn insert(&mut self, group: Group) -> usize {
        let position = self.groups.len();
        self.index.entry(group.hash).or_default().push(position);
        self.groups.push(group);
        position
    }

    /// Adds a matching document.
    pub fn add(&mut self, document: &impl Document) {
        let keys: Vec<Val<'_>> = self.query.group_by.iter().map(|p| document.resolve(p.segments())).collect();
        let hash = key_hash(keys.iter().cloned());
        let found = self.find(hash, |g| keys.iter().zip(&g.keys).all(|(seen, stored)| same_key(seen, stored)));
        let position = found.unwrap_or_else(|| {
            let accumulators = vec![Accumulator::default(); self.items.len()];
            self.insert(Group { hash, keys: keys.iter().map(Val::to_json).collect(), accumulators })
        });
        let group = &mut self.groups[position];
        for (item, accumulator) in self.items.iter().zip(group.accumulators.iter_mut()) {
            accumulator.count += 1;
            match &item.value {
                Projected::Aggregate(Aggregate::Sum(p) | Aggregate::Avg(p) | Aggregate::Min(p) | Aggregate::Max(p)) => {
                    accumulator.add(&document.resolve(p.segments()));
                }
                Projected::Aggregate(Aggregate::Count) | Projected::Path(_) => {}
            }
        }
    }

    /// Folds in the groups another share of the documents built (those documents come after this share's).
    pub fn merge(&mut self, other: Groups<'q>) {
        for group in other.groups {
            match self.find(group.hash, |g| g.keys == group.keys) {
                Some(position) => {
                    for (a, b) in self.groups[position].accumulators.iter_mut().zip(group.accumulators) {
                        a.merge(b);
                    }
                }
                None => {
                    self.insert(group);
                }
            }
        }
    }

    /// The result rows. Without GROUP BY there is exactly one row, even over no documents (`COUNT()` = 0).
    pub fn rows(self) -> Vec<Value> {
        let Self { query, items, groups, .. } = self;
        if query.group_by.is_empty() && groups.is_empty() {
            let empty = Group { hash: 0, keys: Vec::new(), accumulators: vec![Accumulator::default(); items.len()] };
            return vec![row(query, items, &empty)];
        }
        groups.iter().map(|group| row(query, items, group)).collect()
    }
}

fn row(query: &Query, items: &[Projection], group: &Group) -> Value {
    let mut out = Map::new();
    let mut unnamed = 0;
    for (item, accumulator) in items.iter().zip(&group.accumulators) {
        match &item.value {
            Projected::Path(path) => {
                let key =
                    query.group_by.iter().position(|g| g == path).and_then(|i| group.keys.get(i).cloned().flatten());
                if let Some(key) = key {
                    out.insert(member_name(path, item.alias.as_ref()), key);
                }
            }
            Projected::Aggregate(aggregate) => {
                let value = match aggregate {
                    Aggregate::Count => Some(Value::from(accumulator.count)),
                    Aggregate::Sum(_) => Some(number_json(accumulator.sum)),
                    Aggregate::Avg(_) => {
                        (accumulator.numbers > 0).then(|| number_json(accumulator.sum / accumulator.numbers as f64))
                    }
                    Aggregate::Min(_) => accumulator.min.map(number_json),
                    Aggregate::Max(_) => accumulator.max.map(number_json),
                };
                // Decision on wire-spec H.57: an aggregate without AS is named `$1`, `$2`, ... (as Cosmos DB does);
                // a group whose key is undefined keeps the row but leaves the key member out.
                let name = item.alias.clone().unwrap_or_else(|| {
                    unnamed += 1;
                    format!("${unnamed}")
                });
                if let Some(value) = value {
                    out.insert(name, value);
                }
            }
        }
    }
    Value::Object(out)
}
