//! The `$cbs` node (claims-based security): a client puts a SAS token for an audience, the hub checks it and
//! answers `status-code` 200 (the claim then authorizes the connection's links) or 401 with a description.
//!
//! Requests arrive on the client's sender (target `$cbs`); replies go out on the client's receiver (source
//! `$cbs`) carrying the request's `message-id` as `correlation-id`, of the same AMQP type (uamqp sends a ulong and
//! matches on it), and `status-code` as an int.

use fe2o3_amqp::types::messaging::{AmqpValue, ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use fe2o3_amqp::{Receiver, Sender};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::{Connection, Reply};
use super::links::{Next, next_delivery};
use crate::error::HubError;

/// The token type clients put (Node and uamqp both use it).
const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

/// A text application property (string or symbol).
pub(super) fn text_property<'a>(message: &'a Message<Body<Value>>, key: &str) -> Option<&'a str> {
    match message.application_properties.as_ref()?.get(key)? {
        SimpleValue::String(s) => Some(s.as_str()),
        SimpleValue::Symbol(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Checks one put-token request: `(status-code, status-description)`.
fn put_token(connection: &Connection, request: &Message<Body<Value>>) -> (i32, String) {
    let operation = text_property(request, "operation");
    let token_type = text_property(request, "type");
    let audience = text_property(request, "name");
    let token = match &request.body {
        Body::Value(AmqpValue(Value::String(token))) => Some(token.as_str()),
        _ => None,
    };
    match (operation, token_type, audience, token) {
        (Some("put-token"), Some(SAS_TOKEN_TYPE), Some(audience), Some(token)) => {
            match connection.hub.verify_claim(token, audience) {
                Ok(claim) => {
                    tracing::debug!(peer = %connection.peer, policy = %claim.policy, resource = %claim.resource, "claim put");
                    connection.add_claim(claim);
                    (200, "OK".into())
                }
                Err(HubError::Unauthorized) => (401, format!("The token for '{audience}' is not valid for this hub")),
                Err(other) => (500, other.to_string()),
            }
        }
        (Some("put-token"), Some(other), _, _) if other != SAS_TOKEN_TYPE => {
            (400, format!("Token type '{other}' is not supported; put a '{SAS_TOKEN_TYPE}'"))
        }
        (Some("put-token"), ..) => (400, "A put-token needs a 'name' and a SAS token as its body".into()),
        (other, ..) => (400, format!("The $cbs operation {other:?} is not supported; only put-token is")),
    }
}

/// Serves put-token requests until the link ends (`None`) or `stop` fires (the link, to detach).
pub(super) async fn serve_requests(
    mut receiver: Receiver,
    connection: &Connection,
    stop: CancellationToken,
) -> Option<Receiver> {
    loop {
        let delivery = match next_delivery(&mut receiver, &stop).await {
            Next::Delivery(delivery) => delivery,
            Next::Stopped => return Some(receiver),
            Next::Ended => return None,
        };
        let request = delivery.message();
        let properties = request.properties.as_ref();
        let message_id = properties.and_then(|p| p.message_id.clone());
        let reply_to = properties.and_then(|p| p.reply_to.clone());
        let (status, description) = put_token(connection, request);
        // The request is settled before the reply goes out: uamqp waits for that order.
        if receiver.accept(&*delivery).await.is_err() {
            return None;
        }
        let mut reply_properties = Properties::builder();
        if let Some(id) = message_id {
            reply_properties = reply_properties.correlation_id(id);
        }
        if let Some(to) = &reply_to {
            reply_properties = reply_properties.to(to.clone());
        }
        let reply = Message::builder()
            .properties(reply_properties.build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", SimpleValue::Int(status))
                    .insert("status-description", description)
                    .build(),
            )
            .body(Body::<Value>::Empty)
            .build();
        match connection.cbs.route(reply_to.as_deref()).await {
            Some(link) => {
                let _ = link.send(reply).await;
            }
            None => tracing::debug!(peer = %connection.peer, "a $cbs reply had no link to go out on"),
        }
    }
}

/// Sends `$cbs` replies on the client's receiver until it detaches (`None`) or `stop` fires (the link).
pub(super) async fn serve_replies(
    mut sender: Sender,
    address: Option<String>,
    connection: &Connection,
    stop: CancellationToken,
) -> Option<Sender> {
    let (replies, mut queued) = mpsc::channel::<Reply>(16);
    let id = connection.cbs.register(sender.name().to_owned(), address, replies);
    let attached = loop {
        tokio::select! {
            () = stop.cancelled() => break true,
            _ = sender.on_detach() => break false,
            Some(reply) = queued.recv() => {
                // The client's disposition may never come (fe2o3 does not end the wait when the connection does).
                let sent = tokio::select! {
                    () = stop.cancelled() => break true,
                    sent = sender.send(reply) => sent,
                };
                if sent.is_err() {
                    break false;
                }
            }
        }
    };
    connection.cbs.unregister(id);
    attached.then_some(sender)
}
