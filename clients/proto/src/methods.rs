//! Direct-method wire types (swagger `CloudToDeviceMethod`, `CloudToDeviceMethodResult`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A method call: the body of `POST /twins/{id}/methods`, and the method of a method job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudToDeviceMethod {
    /// `methodName`: the method to call on the device.
    pub method_name: String,
    /// `payload`: the JSON argument passed to the method (`null` when there is none).
    #[serde(default)]
    pub payload: Value,
    /// 5 to 300 seconds (the hub's default is 30).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_timeout_in_seconds: Option<u64>,
    /// 0 to 300 seconds: how long to wait for the device to connect (default 0: it must be connected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout_in_seconds: Option<u64>,
}

/// A device's answer to a method call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudToDeviceMethodResult {
    /// `status`: the status code the device's handler returned.
    pub status: i64,
    /// `payload`: the JSON the device's handler returned.
    #[serde(default)]
    pub payload: Value,
}
