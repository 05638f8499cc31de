//! A device's MQTT session as the hub keeps it: which of the hub's features the device subscribed to. For a
//! clean-session-0 client it outlives the connection and, like the hub's, a restart: the Node and Python SDKs
//! never subscribe again on reconnect, they rely on the session being there.

use serde::{Deserialize, Serialize};

/// What a device listens to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subscriptions {
    /// `$iothub/methods/POST/#`
    pub methods: bool,
    /// `$iothub/twin/res/#`
    pub twin_responses: bool,
    /// `$iothub/twin/PATCH/properties/desired/#`
    pub desired: bool,
    /// `devices/<id>/messages/devicebound/#`
    pub cloud_to_device: bool,
}
