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
    /// A module's input messages (`devices/<d>/modules/<m>/inputs/#`): granted, as the SDKs treat a refused
    /// SUBACK as success anyway; the emulator routes nothing to inputs (no edge routing).
    ModuleInputs,
}

impl Filter {
    /// Marks this filter in `subscriptions` (`on`: subscribe, otherwise unsubscribe).
    pub fn set(self, subscriptions: &mut Subscriptions, on: bool) {
        match self {
            Self::Methods => subscriptions.methods = on,
            Self::TwinResponses => subscriptions.twin_responses = on,
            Self::Desired => subscriptions.desired = on,
            Self::CloudToDevice => subscriptions.cloud_to_device = on,
            Self::ModuleInputs => {}
        }
    }
}

/// Which offered filter `filter` is, for the identity `key` (`<deviceId>` or `<deviceId>/<moduleId>`); `None`
/// for anything else (refused with 0x80). Cloud-to-device messages are for devices, inputs for modules.
pub fn parse_filter(filter: &str, key: &str) -> Option<Filter> {
    match filter {
        topics::METHODS_FILTER => Some(Filter::Methods),
        topics::TWIN_RESPONSES_FILTER => Some(Filter::TwinResponses),
        topics::DESIRED_FILTER => Some(Filter::Desired),
        _ => {
            let rest = filter.strip_prefix("devices/")?;
            match key.split_once('/') {
                Some((device_id, module_id)) => {
                    let inputs = rest.strip_prefix(device_id)?.strip_prefix("/modules/")?.strip_suffix("/inputs/#")?;
                    (inputs == module_id).then_some(Filter::ModuleInputs)
                }
                None => (rest.strip_suffix("/messages/devicebound/#")? == key).then_some(Filter::CloudToDevice),
            }
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
        assert_eq!(parse_filter("devices/d/modules/m/inputs/#", "d/m"), Some(Filter::ModuleInputs));
        assert_eq!(parse_filter("$iothub/methods/POST/#", "d/m"), Some(Filter::Methods));
        for refused in [
            "devices/d/modules/other/inputs/#",
            "devices/d/messages/devicebound/#",
            "devices/d/m/messages/devicebound/#",
        ] {
            assert_eq!(parse_filter(refused, "d/m"), None, "{refused}");
        }
        assert_eq!(parse_filter("devices/d/modules/m/inputs/#", "d"), None);
        for refused in ["devices/other/messages/devicebound/#", "#", "$iothub/#", "devices/d/messages/events/", "a/b"] {
            assert_eq!(parse_filter(refused, "d"), None, "{refused}");
        }
    }
}
