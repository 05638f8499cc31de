//! What the emulator covers of the hub, surface by surface, with the scenarios that check each. The README's
//! table is this one rendered (`cargo run -p conformance -- --coverage`), and a test keeps them equal.

use crate::scenarios;

/// One row of the table.
pub struct Surface {
    /// The area: MQTT, AMQP, REST, query or jobs.
    pub area: &'static str,
    /// The surface, as users know it.
    pub what: &'static str,
    /// True when the emulator offers it.
    pub supported: bool,
    /// The scenarios that check it.
    pub scenarios: &'static [&'static str],
}

const fn row(area: &'static str, what: &'static str, scenarios: &'static [&'static str]) -> Surface {
    Surface { area, what, supported: true, scenarios }
}

const fn missing(area: &'static str, what: &'static str) -> Surface {
    Surface { area, what, supported: false, scenarios: &[] }
}

/// The table.
pub const SURFACES: &[Surface] = &[
    row("MQTT", "CONNECT with a device SAS token; CONNACK 5 for a wrong key or an expired token", &["bad-credentials"]),
    row(
        "MQTT",
        "`$iothub/methods/POST/#` and `$iothub/methods/res/{status}/?$rid=`",
        &["method-round-trip", "method-timeout"],
    ),
    row("MQTT", "`$iothub/twin/GET/?$rid=` and `$iothub/twin/res/#`", &["twin-reported", "twin-desired"]),
    row(
        "MQTT",
        "`$iothub/twin/PATCH/properties/reported/?$rid=` (answered `res/204` with `$version`)",
        &["twin-reported"],
    ),
    row("MQTT", "`$iothub/twin/PATCH/properties/desired/#` notifications", &["twin-desired", "tutorial"]),
    row("MQTT", "`devices/{id}/messages/events/{properties}` telemetry, QoS 1", &["telemetry"]),
    row("MQTT", "MQTT over WebSockets at `/$iothub/websocket`", &["websocket"]),
    row(
        "MQTT",
        "`devices/{id}/messages/devicebound/#` cloud-to-device messages with their property bag, completed by PUBACK",
        &["c2d-round-trip"],
    ),
    row(
        "MQTT",
        "module identities (`{device}/{module}` clients): their own twin, methods and telemetry beside the device's",
        &["modules"],
    ),
    row(
        "REST",
        "`PUT/GET/DELETE /devices/{id}` with etags, `GET /devices`, `GET /statistics/devices`",
        &["registry-crud", "unknown-device"],
    ),
    row("REST", "`GET/PATCH/PUT /twins/{id}` with etags", &["twin-etag", "twin-tags-and-nulls", "unknown-device"]),
    row(
        "REST",
        "`PUT/GET/DELETE /devices/{id}/modules/{mid}`, `GET /devices/{id}/modules`, module twins and module methods",
        &["modules"],
    ),
    row(
        "REST",
        "`POST /twins/{id}/methods` (404103, 504101)",
        &["method-round-trip", "method-offline", "method-timeout"],
    ),
    row(
        "REST",
        "`POST /devices/query` with `x-ms-max-item-count` and `x-ms-continuation`",
        &["query-filters", "query-paging"],
    ),
    row(
        "REST",
        "`PUT/GET /jobs/v2/{id}`, `POST /jobs/v2/{id}/cancel`, `GET /jobs/v2/query`",
        &["tutorial", "job-cancel", "job-query"],
    ),
    row("REST", "SAS on every request: 401 for a wrong key, an expired or a missing token", &["bad-credentials"]),
    row(
        "AMQP",
        "`/messages/devicebound` sends with `$cbs` tokens: properties, `iothub-ack`, refusals (not found, queue full, too large)",
        &["c2d-round-trip", "c2d-refusals"],
    ),
    row(
        "AMQP",
        "the Event Hubs-compatible endpoint: `$management` partition ids, a receiver with a selector filter, the hub's annotations",
        &["telemetry"],
    ),
    row(
        "REST",
        "`GET /messages/serviceBound/feedback` and its completion; `DELETE /devices/{id}/commands` (purge)",
        &["c2d-round-trip", "c2d-refusals"],
    ),
    row(
        "REST",
        "IoT Edge devices (`capabilities.iotEdge`): generated `deviceScope`, leaf children by scope (`parentScopes`, also in twins), unknown scopes refused, children freed with their parent",
        &["edge-hierarchy"],
    ),
    row(
        "REST",
        "bulk identity operations (`POST /devices`): per-item results with the hub's numeric codes",
        &["bulk-registry"],
    ),
    row(
        "REST",
        "`PUT/GET/DELETE /configurations/{id}` with etags, applied to targeted twins by priority, system and custom metrics",
        &["configurations"],
    ),
    missing("REST", "import/export jobs (`/jobs/create`)"),
    row("query", "WHERE on tags and reported properties, comparisons, AND/OR/NOT, `IN`", &["query-filters"]),
    row("query", "projections with `AS`", &["query-filters"]),
    row("query", "`COUNT()` with `GROUP BY` (and `[[quoted]]` names)", &["query-group-by"]),
    row("query", "paging across several pages", &["query-paging"]),
    row("query", "syntax errors as 400 with the position", &["query-syntax-error"]),
    row("query", "`FROM devices.jobs` per-device job records", &["tutorial", "job-offline-devices"]),
    row("query", "`FROM devices.modules`", &["modules"]),
    row(
        "jobs",
        "`scheduleDeviceMethod` over a query condition, per-device outcomes",
        &["tutorial", "job-offline-devices"],
    ),
    row("jobs", "`scheduleUpdateTwin` with etag `*`, desired notifications to devices", &["tutorial"]),
    row("jobs", "future start time (`queued`, `scheduled`, then running)", &["job-future-start"]),
    row("jobs", "cancel", &["job-cancel"]),
    row("jobs", "maximum execution time", &["job-max-execution-time"]),
    row("jobs", "job query by type and status", &["job-query"]),
    row("jobs", "invalid job requests refused with the hub's codes", &["invalid-job-bodies"]),
];

/// The table as Markdown.
pub fn markdown() -> String {
    let mut out = String::from("| area | surface | emulator | checked by |\n| --- | --- | --- | --- |\n");
    for surface in SURFACES {
        let supported = if surface.supported { "yes" } else { "not yet" };
        let scenarios = surface.scenarios.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ");
        out.push_str(&format!("| {} | {} | {supported} | {scenarios} |\n", surface.area, surface.what));
    }
    out
}

/// The markers around the table in the README.
pub const START: &str = "<!-- coverage:start (generated by `cargo run -p conformance -- --coverage`) -->";
pub const END: &str = "<!-- coverage:end -->";

/// Problems with the table: scenarios it names that do not exist, supported rows no scenario checks, and
/// scenarios that check no row.
pub fn problems() -> Vec<String> {
    let mut problems = Vec::new();
    for surface in SURFACES {
        for name in surface.scenarios {
            if scenarios::find(name).is_none() {
                problems.push(format!("'{}' names a scenario that does not exist: {name}", surface.what));
            }
        }
        if surface.supported && surface.scenarios.is_empty() {
            problems.push(format!("'{}' is supported but no scenario checks it", surface.what));
        }
    }
    for scenario in scenarios::ALL {
        if !SURFACES.iter().any(|s| s.scenarios.contains(&scenario.name)) {
            problems.push(format!("scenario {} checks no surface of the table", scenario.name));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_scenarios_agree() {
        assert_eq!(problems(), Vec::<String>::new());
    }

    #[test]
    fn the_readme_shows_the_table() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
        let start = readme.find(START).expect("the README has the coverage start marker") + START.len();
        let end = readme.find(END).expect("the README has the coverage end marker");
        assert_eq!(
            readme[start..end].trim(),
            markdown().trim(),
            "the README's coverage table is stale: run `cargo run -p conformance -- --coverage` and paste it"
        );
    }
}
