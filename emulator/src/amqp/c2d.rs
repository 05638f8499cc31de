//! `/messages/devicebound`: the service sends cloud-to-device messages. Each is read into the hub's message (its
//! `to` names the device), queued durably, and only then accepted; a refusal is a rejected disposition with the
//! condition the SDKs map to their errors (`amqp:not-found` -> DeviceNotFound, `amqp:resource-limit-exceeded` ->
//! DeviceMaximumQueueDepthExceeded, `amqp:link:message-size-exceeded` -> MessageTooLarge,
//! `com.microsoft:device-container-throttled` -> ThrottlingError).

use fe2o3_amqp::Receiver;
use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition, LinkError};
use fe2o3_amqp::types::messaging::{AmqpValue, Body, Message as AmqpMessage, MessageId};
use fe2o3_amqp::types::primitives::{SimpleValue, Symbol, Value};
use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use super::context::Connection;
use super::links::{Next, error, next_delivery};
use crate::domain::c2d::{Ack, Message};
use crate::domain::throttle::Operation;
use crate::error::HubError;

/// The condition of a send refused by throttling (`--throttle`), as the hub names it.
const THROTTLED: &str = "com.microsoft:device-container-throttled";

/// The text of a message or correlation id, whatever AMQP type the sender used.
pub(super) fn id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(text) => text.clone(),
        MessageId::Ulong(number) => number.to_string(),
        MessageId::Uuid(uuid) => uuid::Uuid::from_bytes(*uuid.as_inner()).to_string(),
        MessageId::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// An application property as text.
pub(super) fn property_text(value: &SimpleValue) -> Option<String> {
    Some(match value {
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.as_str().to_owned(),
        SimpleValue::Bool(b) => b.to_string(),
        SimpleValue::Ubyte(n) => n.to_string(),
        SimpleValue::Ushort(n) => n.to_string(),
        SimpleValue::Uint(n) => n.to_string(),
        SimpleValue::Ulong(n) => n.to_string(),
        SimpleValue::Byte(n) => n.to_string(),
        SimpleValue::Short(n) => n.to_string(),
        SimpleValue::Int(n) => n.to_string(),
        SimpleValue::Long(n) => n.to_string(),
        SimpleValue::Float(n) => n.into_inner().to_string(),
        SimpleValue::Double(n) => n.into_inner().to_string(),
        SimpleValue::Char(c) => c.to_string(),
        SimpleValue::Timestamp(t) => t.milliseconds().to_string(),
        SimpleValue::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        SimpleValue::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        _ => return None,
    })
}

/// A message's body as bytes: its data sections joined, or a string or binary value; `None` for other values.
pub(super) fn body_of(message: &AmqpMessage<Body<Value>>) -> Option<Vec<u8>> {
    Some(match &message.body {
        Body::Data(sections) => sections.iter().flat_map(|d| d.0.iter().copied()).collect(),
        Body::Value(AmqpValue(Value::String(text))) => text.clone().into_bytes(),
        Body::Value(AmqpValue(Value::Binary(bytes))) => bytes.to_vec(),
        Body::Empty => Vec::new(),
        _ => return None,
    })
}

/// The device a `to` of `/devices/<id>/messages/devicebound` names (percent-decoded: Node encodes the id).
fn device_of(to: &str) -> Option<String> {
    let id = super::links::path_of(to).strip_prefix("/devices/")?.strip_suffix("/messages/devicebound")?;
    let id = percent_encoding::percent_decode_str(id).decode_utf8().ok()?;
    (!id.is_empty() && !id.contains('/')).then(|| id.into_owned())
}

/// Reads a service's message: the device it is for, and the message as the hub keeps it.
pub(super) fn read(message: &AmqpMessage<Body<Value>>) -> Result<(String, Message), definitions::Error> {
    let properties = message.properties.as_ref();
    let to = properties.and_then(|p| p.to.as_deref()).ok_or_else(|| {
        error(AmqpError::InvalidField, "The message has no 'to'; address it to /devices/<id>/messages/devicebound")
    })?;
    let device_id = device_of(to).ok_or_else(|| {
        error(AmqpError::InvalidField, format!("'to' is '{to}'; address it to /devices/<id>/messages/devicebound"))
    })?;
    let mut ack = Ack::None;
    let mut application = Vec::new();
    for (key, value) in message.application_properties.iter().flat_map(|p| p.iter()) {
        let text = property_text(value).unwrap_or_default();
        if key.eq_ignore_ascii_case("iothub-ack") {
            ack = Ack::parse(&text).ok_or_else(|| {
                error(AmqpError::InvalidField, format!("iothub-ack '{text}' is not none, positive, negative or full"))
            })?;
        } else {
            application.push((key.clone(), text));
        }
    }
    let body = body_of(message)
        .ok_or_else(|| error(AmqpError::DecodeError, "The body must be data (or a string or binary value)"))?;
    let expiry = properties
        .and_then(|p| p.absolute_expiry_time.as_ref())
        .and_then(|t| Timestamp::from_millisecond(t.milliseconds()).ok());
    let text = |value: Option<&fe2o3_amqp::types::primitives::Symbol>| value.map(|s| s.as_str().to_owned());
    Ok((
        device_id,
        Message {
            message_id: properties.and_then(|p| p.message_id.as_ref()).map(id_text),
            correlation_id: properties.and_then(|p| p.correlation_id.as_ref()).map(id_text),
            user_id: properties.and_then(|p| p.user_id.as_ref()).map(|b| String::from_utf8_lossy(b).into_owned()),
            content_type: text(properties.and_then(|p| p.content_type.as_ref())),
            content_encoding: text(properties.and_then(|p| p.content_encoding.as_ref())),
            expiry,
            ack,
            properties: application,
            body,
        },
    ))
}

/// The rejection a hub error becomes.
fn refusal(error: &HubError) -> definitions::Error {
    let text = error.to_string();
    match error {
        HubError::DeviceNotFound(_) => super::links::error(AmqpError::NotFound, text),
        HubError::QueueFull(_) => super::links::error(AmqpError::ResourceLimitExceeded, text),
        HubError::MessageTooLarge(_) => super::links::error(LinkError::MessageSizeExceeded, text),
        // The hub's vendor condition for throttling: the SDKs report it as ThrottlingError / 429, not as a full queue.
        HubError::Throttled(_) => super::links::error(ErrorCondition::Custom(Symbol::from(THROTTLED)), text),
        _ => super::links::error(AmqpError::InternalError, text),
    }
}

/// Takes messages until the link ends (`None`) or `stop` fires (the link, to detach).
pub(super) async fn serve(
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
        // A send that raced an outage's start is refused as the link about to be detached would be.
        let queued = match (super::links::outage_refusal(&connection.hub), read(delivery.message())) {
            (Some(away), _) => Err(away),
            (None, Ok((device_id, message))) => match connection.hub.admit(Operation::CloudToDeviceSend, 1.0) {
                Ok(()) => connection.hub.send_message(&device_id, message).await.map_err(|e| refusal(&e)),
                Err(throttled) => Err(refusal(&throttled)),
            },
            (None, Err(unreadable)) => Err(unreadable),
        };
        let settled = match queued {
            Ok(()) => Box::pin(receiver.accept(&*delivery)).await,
            Err(reason) => {
                tracing::debug!(peer = %connection.peer, condition = ?reason.condition, "message refused");
                Box::pin(receiver.reject(&*delivery, reason)).await
            }
        };
        if settled.is_err() {
            return None;
        }
    }
}
