//! Every hub limit the emulator enforces, as a named constant, with where the number comes from.

/// Longest device or module id (wire-spec C.0.4, swagger `Twin.deviceId`).
pub const MAX_DEVICE_ID_LEN: usize = 128;
/// Most modules a device may have (the hub's documented limit: 50 module identities per device).
pub const MAX_MODULES_PER_DEVICE: usize = 50;
/// Longest `statusReason` (swagger `Device.statusReason`); the emulator holds `managedBy` to it too.
pub const MAX_STATUS_REASON_LEN: usize = 128;
/// Symmetric keys must decode to 16..=64 bytes (the hub refuses shorter and longer keys).
pub const MIN_KEY_BYTES: usize = 16;
pub const MAX_KEY_BYTES: usize = 64;
/// Bytes of randomness in a generated key (44 base64 characters, as the hub makes them).
pub const GENERATED_KEY_BYTES: usize = 32;
/// `GET /devices?top=` outside 1..=1000 is treated as 1000 (swagger `Devices_GetDevices`).
pub const MAX_DEVICES_LIST: usize = 1000;
/// Largest HTTP request body accepted; well above the largest legal twin or method payload.
pub const MAX_HTTP_BODY_BYTES: usize = 256 * 1024;
/// A TLS handshake (or the first MQTT packet) that takes longer than this is dropped (slow-loris guard).
pub const HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Time a client has to send a request's headers once TLS is up, which is also how long a kept-alive HTTPS
/// connection may sit idle between requests: a client that opens a connection and trickles bytes must not
/// hold it (and a slot under the connection ceiling) forever. hyper's own default; clients reconnect unnoticed.
pub const HTTP_HEADER_TIMEOUT_SECS: u64 = 30;
/// Longest accepted `Authorization` header.
pub const MAX_AUTH_HEADER_LEN: usize = iothub_proto::sas::MAX_TOKEN_LEN;
/// A device that leaves a packet unread this long is disconnected: a client that stops reading its socket must
/// not pin a session (and its queue) forever, nor hold up a graceful shutdown.
pub const MQTT_WRITE_TIMEOUT_SECS: u64 = 30;
/// Largest MQTT packet accepted: a 256 KB device-to-cloud message plus room for its topic and property bag.
pub const MAX_MQTT_PACKET_BYTES: usize = 256 * 1024 + 8 * 1024;
/// Clients get 1.5 times their keep-alive before they are considered gone (wire-spec B.3), capped like the hub.
pub const MAX_KEEP_ALIVE_TIMEOUT_SECS: u64 = 1767;
