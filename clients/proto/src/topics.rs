//! The IoT Hub MQTT topic grammar (wire-spec B.5), both directions: the filters a device subscribes to, the
//! topics it publishes on, and the topics the hub publishes to it. The emulator and the device client build and
//! parse topics with these functions only.

/// Direct-method requests from the hub.
pub const METHODS_FILTER: &str = "$iothub/methods/POST/#";
/// Answers to twin requests.
pub const TWIN_RESPONSES_FILTER: &str = "$iothub/twin/res/#";
/// Desired-property changes.
pub const DESIRED_FILTER: &str = "$iothub/twin/PATCH/properties/desired/#";

/// The cloud-to-device filter of a device.
pub fn cloud_to_device_filter(device_id: &str) -> String {
    format!("devices/{device_id}/messages/devicebound/#")
}

/// `devices/<id>/messages/devicebound/<property bag>`: a cloud-to-device message for the device.
pub fn cloud_to_device(device_id: &str, property_bag: &str) -> String {
    format!("devices/{device_id}/messages/devicebound/{property_bag}")
}

/// The value of `name` in a `?a=b&c=d` query string (no decoding: `$rid` values are opaque tokens).
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

/// Splits `path/?query` (the `/` before `?` is optional, as some clients omit it).
fn split_query(topic: &str) -> (&str, &str) {
    match topic.split_once('?') {
        Some((path, query)) => (path.trim_end_matches('/'), query),
        None => (topic.trim_end_matches('/'), ""),
    }
}

// ---- Device -> hub ----

/// `$iothub/twin/GET/?$rid=<rid>`: asks for the device's twin.
pub fn twin_get(rid: &str) -> String {
    format!("$iothub/twin/GET/?$rid={rid}")
}

/// `$iothub/twin/PATCH/properties/reported/?$rid=<rid>`: a reported-properties patch.
pub fn reported_patch(rid: &str) -> String {
    format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}")
}

/// `$iothub/methods/res/<status>/?$rid=<rid>`: a device's answer to a method request.
pub fn method_response(status: i64, rid: &str) -> String {
    format!("$iothub/methods/res/{status}/?$rid={rid}")
}

/// `devices/<id>/messages/events/<property bag>`: device-to-cloud telemetry.
pub fn telemetry(device_id: &str, property_bag: &str) -> String {
    format!("devices/{device_id}/messages/events/{property_bag}")
}

/// `devices/<id>/modules/<mid>/messages/events/<property bag>`: a module's telemetry.
pub fn module_telemetry(device_id: &str, module_id: &str, property_bag: &str) -> String {
    format!("devices/{device_id}/modules/{module_id}/messages/events/{property_bag}")
}

/// What a device's PUBLISH asks of the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// `$iothub/twin/GET/?$rid=<rid>`
    TwinGet {
        /// `$rid`: the request id the answer must echo.
        rid: String,
    },
    /// `$iothub/twin/PATCH/properties/reported/?$rid=<rid>`
    ReportedPatch {
        /// `$rid`: the request id the answer must echo.
        rid: String,
    },
    /// `$iothub/methods/res/<status>/?$rid=<rid>`
    MethodResponse {
        /// The status code the device's handler returned.
        status: i64,
        /// `$rid`: the id of the method request being answered.
        rid: String,
    },
    /// `devices/<id>/messages/events/<property bag>`
    Telemetry {
        /// The still-encoded property bag after `events/`, without a trailing `/`; may be empty.
        property_bag: &'a str,
    },
    /// Anything else, including another device's topics or a request without `$rid`.
    Unknown,
}

/// Classifies a device's or module's PUBLISH topic (`device_id` is the identity: `<deviceId>` or
/// `<deviceId>/<moduleId>`). Only the identity's own telemetry topic is accepted.
pub fn parse_device_publish<'a>(topic: &'a str, device_id: &str) -> Inbound<'a> {
    if let Some(rest) = topic.strip_prefix("$iothub/") {
        let (path, query) = split_query(rest);
        let Some(rid) = query_value(query, "$rid").filter(|r| !r.is_empty()).map(str::to_owned) else {
            return Inbound::Unknown;
        };
        return match path {
            "twin/GET" => Inbound::TwinGet { rid },
            "twin/PATCH/properties/reported" => Inbound::ReportedPatch { rid },
            _ => match path.strip_prefix("methods/res/").map(str::parse::<i64>) {
                Some(Ok(status)) => Inbound::MethodResponse { status, rid },
                _ => Inbound::Unknown,
            },
        };
    }
    // A module (`device_id` is `<deviceId>/<moduleId>`) sends on `devices/<d>/modules/<m>/messages/events/`.
    let own_prefix = topic.strip_prefix("devices/").and_then(|t| match device_id.split_once('/') {
        Some((device, module)) => t.strip_prefix(device)?.strip_prefix("/modules/")?.strip_prefix(module),
        None => t.strip_prefix(device_id),
    });
    match own_prefix.and_then(|t| t.strip_prefix("/messages/events")) {
        Some("") => Inbound::Telemetry { property_bag: "" },
        Some(rest) => match rest.strip_prefix('/') {
            Some(bag) => Inbound::Telemetry { property_bag: bag.trim_end_matches('/') },
            None => Inbound::Unknown,
        },
        None => Inbound::Unknown,
    }
}

// ---- Hub -> device ----

/// `$iothub/methods/POST/<name>/?$rid=<rid>`: the `/` before `?` is required by the Python SDK.
pub fn method_request(name: &str, rid: &str) -> String {
    format!("$iothub/methods/POST/{name}/?$rid={rid}")
}

/// `$iothub/twin/res/<status>/?$rid=<rid>[&$version=<v>]`.
pub fn twin_response(status: u16, rid: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("$iothub/twin/res/{status}/?$rid={rid}&$version={v}"),
        None => format!("$iothub/twin/res/{status}/?$rid={rid}"),
    }
}

/// `$iothub/twin/PATCH/properties/desired/?$version=<v>`.
pub fn desired_patch(version: u64) -> String {
    format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
}

/// What the hub's PUBLISH tells a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A direct-method call.
    MethodRequest {
        /// The method's name.
        name: String,
        /// `$rid`: the request id the device's answer must echo.
        rid: String,
    },
    /// The answer to twin request `rid`; `version` is the reported `$version` after a patch.
    TwinResponse {
        /// The request's outcome as an HTTP status, e.g. 200 or 204.
        status: u16,
        /// `$rid`: the id of the twin request being answered.
        rid: String,
        /// `$version`, when the topic carries it.
        version: Option<u64>,
    },
    /// Desired properties changed to `$version` `version`.
    DesiredPatch {
        /// `$version`: the desired properties' version after the change, when the topic carries it.
        version: Option<u64>,
    },
    /// A cloud-to-device message with its property bag (still percent-encoded).
    CloudToDevice {
        /// The property bag: the topic level after `devicebound/`.
        property_bag: String,
    },
    /// Anything else.
    Other,
}

/// Classifies a PUBLISH the hub sent a device.
pub fn parse_hub_publish(topic: &str) -> Outbound {
    if let Some(rest) = topic.strip_prefix("devices/") {
        return match rest.split_once("/messages/devicebound") {
            Some((_, bag)) => Outbound::CloudToDevice { property_bag: bag.trim_start_matches('/').to_owned() },
            None => Outbound::Other,
        };
    }
    let Some(rest) = topic.strip_prefix("$iothub/") else { return Outbound::Other };
    let (path, query) = split_query(rest);
    let number = |name: &str| query_value(query, name).and_then(|v| v.parse::<u64>().ok());
    if let Some(name) = path.strip_prefix("methods/POST/") {
        return match query_value(query, "$rid") {
            Some(rid) if !name.is_empty() && !name.contains('/') => {
                Outbound::MethodRequest { name: name.to_owned(), rid: rid.to_owned() }
            }
            _ => Outbound::Other,
        };
    }
    if let Some(status) = path.strip_prefix("twin/res/") {
        return match (status.parse::<u16>(), query_value(query, "$rid")) {
            (Ok(status), Some(rid)) => {
                Outbound::TwinResponse { status, rid: rid.to_owned(), version: number("$version") }
            }
            _ => Outbound::Other,
        };
    }
    if path == "twin/PATCH/properties/desired" {
        return Outbound::DesiredPatch { version: number("$version") };
    }
    Outbound::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_from_both_sdks_parse() {
        let parse = |t| parse_device_publish(t, "d");
        assert_eq!(parse("$iothub/twin/GET/?$rid=abc-1"), Inbound::TwinGet { rid: "abc-1".into() });
        assert_eq!(parse("$iothub/twin/GET?$rid=7"), Inbound::TwinGet { rid: "7".into() });
        assert_eq!(
            parse("$iothub/twin/PATCH/properties/reported/?$rid=9&$version=3"),
            Inbound::ReportedPatch { rid: "9".into() }
        );
        assert_eq!(
            parse("$iothub/methods/res/200/?$rid=12"),
            Inbound::MethodResponse { status: 200, rid: "12".into() }
        );
        assert_eq!(parse("$iothub/methods/res/-1/?$rid=12"), Inbound::MethodResponse { status: -1, rid: "12".into() });
        assert_eq!(parse("devices/d/messages/events/"), Inbound::Telemetry { property_bag: "" });
        assert_eq!(parse("devices/d/messages/events"), Inbound::Telemetry { property_bag: "" });
        assert_eq!(parse("devices/d/messages/events/%24.on=out&"), Inbound::Telemetry { property_bag: "%24.on=out&" });
        assert_eq!(parse("devices/d/messages/events/a=1/"), Inbound::Telemetry { property_bag: "a=1" });
    }

    #[test]
    fn foreign_or_malformed_publishes_are_unknown() {
        for topic in [
            "devices/other/messages/events/",
            "devices/d2/messages/events/",
            "devices/d/messages/eventsX",
            "devices/d/modules/m/messages/events/",
            "$iothub/twin/GET/",
            "$iothub/twin/GET/?$rid=",
            "$iothub/methods/res/abc/?$rid=1",
            "$iothub/twin/PATCH/properties/desired/?$rid=1",
            "anything",
        ] {
            assert_eq!(parse_device_publish(topic, "d"), Inbound::Unknown, "{topic}");
        }
    }

    #[test]
    fn what_one_side_builds_the_other_parses() {
        assert_eq!(method_request("lockDoor", "1"), "$iothub/methods/POST/lockDoor/?$rid=1");
        assert_eq!(
            parse_hub_publish(&method_request("lockDoor", "1")),
            Outbound::MethodRequest { name: "lockDoor".into(), rid: "1".into() }
        );
        assert_eq!(twin_response(204, "r", Some(6)), "$iothub/twin/res/204/?$rid=r&$version=6");
        assert_eq!(
            parse_hub_publish(&twin_response(204, "r", Some(6))),
            Outbound::TwinResponse { status: 204, rid: "r".into(), version: Some(6) }
        );
        assert_eq!(
            parse_hub_publish(&twin_response(200, "r", None)),
            Outbound::TwinResponse { status: 200, rid: "r".into(), version: None }
        );
        assert_eq!(desired_patch(8), "$iothub/twin/PATCH/properties/desired/?$version=8");
        assert_eq!(parse_hub_publish(&desired_patch(8)), Outbound::DesiredPatch { version: Some(8) });
        assert_eq!(
            parse_hub_publish(&cloud_to_device("d", "%24.mid=1&x=1")),
            Outbound::CloudToDevice { property_bag: "%24.mid=1&x=1".into() }
        );
        assert_eq!(parse_hub_publish("devices/d/messages/events/x=1"), Outbound::Other);
        assert_eq!(parse_hub_publish("$iothub/methods/POST/a/b/?$rid=1"), Outbound::Other);
        assert_eq!(
            parse_device_publish(&method_response(200, "5"), "d"),
            Inbound::MethodResponse { status: 200, rid: "5".into() }
        );
        assert_eq!(parse_device_publish(&twin_get("x"), "d"), Inbound::TwinGet { rid: "x".into() });
        assert_eq!(parse_device_publish(&reported_patch("x"), "d"), Inbound::ReportedPatch { rid: "x".into() });
        assert_eq!(parse_device_publish(&telemetry("d", "a=1"), "d"), Inbound::Telemetry { property_bag: "a=1" });
        let module = "devices/d/modules/m/messages/events/a=1";
        assert_eq!(parse_device_publish(module, "d/m"), Inbound::Telemetry { property_bag: "a=1" });
        assert_eq!(parse_device_publish(module, "d"), Inbound::Unknown, "a device cannot send as its module");
        assert_eq!(parse_device_publish(&telemetry("d", ""), "d/m"), Inbound::Unknown, "nor a module as its device");
        assert_eq!(parse_device_publish("devices/d/modules/x/messages/events/", "d/m"), Inbound::Unknown);
    }
}
