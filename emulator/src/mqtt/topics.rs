//! Which of the IoT Hub topic filters (wire-spec B.5) a device subscribes to. The topic grammar itself is
//! `iothub_proto::topics`, shared with the device client.

use iothub_proto::topics;

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
        topics::METHODS_FILTER => Some(Filter::Methods),
        topics::TWIN_RESPONSES_FILTER => Some(Filter::TwinResponses),
        topics::DESIRED_FILTER => Some(Filter::Desired),
        _ => {
            let c2d = filter.strip_prefix("devices/")?.strip_suffix("/messages/devicebound/#")?;
            (c2d == device_id).then_some(Filter::CloudToDevice)
        }
    }
}

pub use iothub_proto::topics::{Inbound, desired_patch, method_request, parse_device_publish, twin_response};

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
}
