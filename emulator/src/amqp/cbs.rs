//! The `$cbs` node (claims-based security): a client puts a SAS token for an audience, the hub checks it and
//! answers `status-code` 200 (the claim then authorizes the connection's links) or 401 with a description.

use fe2o3_amqp::types::messaging::{AmqpValue, Body, Message};
use fe2o3_amqp::types::primitives::Value;

use super::context::Connection;
use super::request::{Answer, text_property};
use crate::error::HubError;

/// The token type clients put (Node, uamqp and the Event Hubs clients all use it).
const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
/// The type the .NET device SDK puts (docs/amqp-devices-wire.md).
const DEVICES_TOKEN_TYPE: &str = "azure-devices.net:sastoken";

/// Holds a device's or module's put-token while a disconnect or outage fault refuses it: the answer comes when
/// the fault ends, so the SDK (which waits for it) connects then, as MQTT devices do after their CONNACK 3s.
/// Refusing the claim or its links instead makes Node's SDK give up (a 401) or stall in its reconnect.
pub(super) async fn hold_while_refused(connection: &Connection, request: &Message<Body<Value>>) {
    let Body::Value(AmqpValue(Value::String(token))) = &request.body else { return };
    let Ok(parsed) = iothub_proto::SasToken::parse(token) else { return };
    if parsed.key_name.is_some() {
        return;
    }
    let hub = &connection.hub;
    let Some(key) = crate::auth::identity_of_resource(hub.host_name(), &parsed.resource) else { return };
    while hub.connect_refused(&key) {
        tracing::debug!(peer = %connection.peer, identity = key, "put-token held while a fault refuses the device");
        tokio::select! {
            () = hub.faults_changed() => {}
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}

/// Checks one put-token request.
pub(super) fn put_token(connection: &Connection, request: &Message<Body<Value>>) -> Answer {
    let operation = text_property(request, "operation");
    let token_type = text_property(request, "type");
    let audience = text_property(request, "name");
    let token = match &request.body {
        Body::Value(AmqpValue(Value::String(token))) => Some(token.as_str()),
        _ => None,
    };
    // The Node device SDK puts the token's `sr` as the name, still percent-encoded (`host%2Fdevices%2Fd1`).
    let audience = audience.map(|a| percent_encoding::percent_decode_str(a).decode_utf8_lossy().into_owned());
    match (operation, token_type, audience.as_deref(), token) {
        (Some("put-token"), Some(SAS_TOKEN_TYPE | DEVICES_TOKEN_TYPE), Some(audience), Some(token)) => {
            match connection.hub.verify_claim(token, audience) {
                Ok(claim) => {
                    tracing::debug!(peer = %connection.peer, policy = %claim.policy, resource = %claim.resource, "claim put");
                    connection.add_claim(claim);
                    Answer::status(200, "OK")
                }
                Err(HubError::Unauthorized) => {
                    Answer::status(401, format!("The token for '{audience}' is not valid for this hub"))
                }
                Err(other) => Answer::status(500, other.to_string()),
            }
        }
        (Some("put-token"), Some(other), _, _) if other != SAS_TOKEN_TYPE && other != DEVICES_TOKEN_TYPE => {
            Answer::status(400, format!("Token type '{other}' is not supported; put a '{SAS_TOKEN_TYPE}'"))
        }
        (Some("put-token"), ..) => Answer::status(400, "A put-token needs a 'name' and a SAS token as its body"),
        (other, ..) => Answer::status(400, format!("The $cbs operation {other:?} is not supported; only put-token is")),
    }
}
