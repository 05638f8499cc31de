//! The IoT Hub MQTT topic grammar (wire-spec B.5): what a device may subscribe to and publish on, and the
//! topics the hub publishes to it.

use crate::hub::Subscriptions;

/// A topic filter the hub offers to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Methods,
    TwinResponses,
    Desired,
    CloudToDevice,
}

impl Filter {
    /// Marks this filter in `subscriptions` (`on`: subscribe, otherwise unsubscribe).
    pub fn set(self, subscriptions: &mut Subscriptions, on: bool) {
        match self {
            Self::Methods => subscriptions.methods = on,
            Self::TwinResponses => subscriptions.twin_responses = on,
            Self::Desired => subscriptions.desired = on,
            Self::CloudToDevice => subscriptions.cloud_to_device = on,
        }
    }
}

/// Which offered filter `filter` is, for `device_id`; `None` for anything else (refused with 0x80).
pub fn parse_filter(filter: &str, device_id: &str) -> Option<Filter> {
    match filter {
        "$iothub/methods/POST/#" => Some(Filter::Methods),
        "$iothub/twin/res/#" => Some(Filter::TwinResponses),
        "$iothub/twin/PATCH/properties/desired/#" => Some(Filter::Desired),
        _ => {
            let c2d = filter.strip_prefix("devices/")?.strip_suffix("/messages/devicebound/#")?;
            (c2d == device_id).then_some(Filter::CloudToDevice)
        }
    }
}

/// What a device's PUBLISH asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// `$iothub/twin/GET/?$rid=<rid>`
    TwinGet { rid: String },
    /// `$iothub/twin/PATCH/properties/reported/?$rid=<rid>`
    ReportedPatch { rid: String },
    /// `$iothub/methods/res/<status>/?$rid=<rid>`
    MethodResponse { status: i64, rid: String },
    /// `devices/<id>/messages/events/<property bag>`
    Telemetry { property_bag: &'a str },
    /// Anything else, including another device's topics or a request without `$rid`.
    Unknown,
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

/// Classifies a device's PUBLISH topic. Only the device's own telemetry topic is accepted.
pub fn parse_publish<'a>(topic: &'a str, device_id: &str) -> Inbound<'a> {
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
    let own_prefix = topic.strip_prefix("devices/").and_then(|t| t.strip_prefix(device_id));
    match own_prefix.and_then(|t| t.strip_prefix("/messages/events")) {
        Some("") => Inbound::Telemetry { property_bag: "" },
        Some(rest) => match rest.strip_prefix('/') {
            Some(bag) => Inbound::Telemetry { property_bag: bag.trim_end_matches('/') },
            None => Inbound::Unknown,
        },
        None => Inbound::Unknown,
    }
}

/// `$iothub/methods/POST/<name>/?$rid=<rid>`: the `/` before `?` is required by the Python SDK.
pub fn method_request(name: &str, rid: u64) -> String {
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
pub fn desired_changed(version: u64) -> String {
    format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_filters_only() {
        assert_eq!(parse_filter("$iothub/methods/POST/#", "d"), Some(Filter::Methods));
        assert_eq!(parse_filter("$iothub/twin/res/#", "d"), Some(Filter::TwinResponses));
        assert_eq!(parse_filter("$iothub/twin/PATCH/properties/desired/#", "d"), Some(Filter::Desired));
        assert_eq!(parse_filter("devices/d/messages/devicebound/#", "d"), Some(Filter::CloudToDevice));
        for refused in ["devices/other/messages/devicebound/#", "#", "$iothub/#", "devices/d/messages/events/", "a/b"] {
            assert_eq!(parse_filter(refused, "d"), None, "{refused}");
        }
    }

    #[test]
    fn publishes_from_both_sdks_parse() {
        assert_eq!(parse_publish("$iothub/twin/GET/?$rid=abc-1", "d"), Inbound::TwinGet { rid: "abc-1".into() });
        assert_eq!(parse_publish("$iothub/twin/GET?$rid=7", "d"), Inbound::TwinGet { rid: "7".into() });
        assert_eq!(
            parse_publish("$iothub/twin/PATCH/properties/reported/?$rid=9&$version=3", "d"),
            Inbound::ReportedPatch { rid: "9".into() }
        );
        assert_eq!(
            parse_publish("$iothub/methods/res/200/?$rid=12", "d"),
            Inbound::MethodResponse { status: 200, rid: "12".into() }
        );
        assert_eq!(
            parse_publish("$iothub/methods/res/-1/?$rid=12", "d"),
            Inbound::MethodResponse { status: -1, rid: "12".into() }
        );
        assert_eq!(parse_publish("devices/d/messages/events/", "d"), Inbound::Telemetry { property_bag: "" });
        assert_eq!(parse_publish("devices/d/messages/events", "d"), Inbound::Telemetry { property_bag: "" });
        assert_eq!(
            parse_publish("devices/d/messages/events/%24.on=out&", "d"),
            Inbound::Telemetry { property_bag: "%24.on=out&" }
        );
        assert_eq!(parse_publish("devices/d/messages/events/a=1/", "d"), Inbound::Telemetry { property_bag: "a=1" });
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
            assert_eq!(parse_publish(topic, "d"), Inbound::Unknown, "{topic}");
        }
    }

    #[test]
    fn hub_topics_have_the_shapes_the_sdks_parse() {
        assert_eq!(method_request("lockDoor", 1), "$iothub/methods/POST/lockDoor/?$rid=1");
        assert_eq!(twin_response(204, "r", Some(6)), "$iothub/twin/res/204/?$rid=r&$version=6");
        assert_eq!(twin_response(200, "r", None), "$iothub/twin/res/200/?$rid=r");
        assert_eq!(desired_changed(8), "$iothub/twin/PATCH/properties/desired/?$version=8");
    }
}
