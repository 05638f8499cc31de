//! Devices and modules on an AMQP connection (the .NET SDK's default transport, Node's `Amqp`/`AmqpWs`): each
//! identity with links on the connection holds the hub's one lease for it, as an MQTT connection does, and what
//! the hub sends it (method calls, desired changes, cloud-to-device messages) is routed to the link that carries
//! that kind. Several identities may share one connection (gateways, .NET connection pooling); each is confined
//! to its own addresses by the claims its token put on `$cbs`.
//!
//! - `/devices/<id>/messages/events` (and `/devices/<id>/modules/<mid>/messages/events`): telemetry, accepted
//!   once it is durable in the log, as MQTT's PUBACK is.
//! - `/devices/<id>/messages/devicebound`: cloud-to-device messages from the device's queue; accepted completes,
//!   rejected rejects (feedback `Rejected`), released or modified abandons (the delivery count grows).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fe2o3_amqp::types::definitions::{self, AmqpError, LinkError};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message as AmqpMessage, MessageAnnotations, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Timestamp as AmqpTimestamp, Value};
use fe2o3_amqp::{Receiver, Sender};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::c2d::{id_text, property_text};
use super::context::Connection;
use super::links::{Next, error, next_delivery};
use crate::domain::c2d::Settlement;
use crate::domain::registry::split_key;
use crate::domain::telemetry::{self, TelemetryMessage};
use crate::domain::throttle::Operation;
use crate::hub::{Delivery, Hub, Subscriptions, ToDevice};

/// Messages waiting for a link of an identity before the dispatcher waits.
const ROUTE_CAPACITY: usize = 64;

/// What kind of device link, for the subscriptions the hub keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Telemetry,
    CloudToDevice,
}

/// Where the hub's messages for one identity go on this connection.
#[derive(Default)]
struct Routes {
    messages: Option<mpsc::Sender<Delivery>>,
}

/// One identity with links on this connection.
pub(super) struct Attached {
    pub(super) key: String,
    /// The hub's connection number for this identity's presence.
    lease: u64,
    /// Cancelled when the hub ends this identity's connection (replaced, deleted, disabled, a fault).
    pub(super) closed: CancellationToken,
    links: Mutex<usize>,
    subscriptions: Mutex<Subscriptions>,
    routes: Mutex<Routes>,
    dispatcher: CancellationToken,
}

impl Attached {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what this identity now listens to with the hub.
    fn subscribe(&self, hub: &Hub, change: impl FnOnce(&mut Subscriptions)) {
        let subscriptions = {
            let mut current = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut current);
            *current
        };
        // AMQP links carry no session across connections: nothing to store, so the future is dropped.
        drop(hub.set_subscriptions(&self.key, self.lease, subscriptions, false));
    }
}

/// The identities with links on one connection.
#[derive(Default)]
pub(super) struct DeviceLinks {
    attached: Mutex<HashMap<String, Arc<Attached>>>,
}

impl DeviceLinks {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Attached>>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The identity's presence on this connection, made (the hub told it connected, replacing any other
    /// connection of the identity) when this is its first link here.
    fn join(&self, hub: &Arc<Hub>, key: &str) -> Arc<Attached> {
        let mut map = self.map();
        if let Some(attached) = map.get(key).filter(|a| !a.closed.is_cancelled()) {
            *attached.links.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            return Arc::clone(attached);
        }
        let connected = hub.device_connected(key, true);
        let attached = Arc::new(Attached {
            key: key.to_owned(),
            lease: connected.lease.id,
            closed: connected.lease.closed.clone(),
            links: Mutex::new(1),
            subscriptions: Mutex::new(Subscriptions::default()),
            routes: Mutex::new(Routes::default()),
            dispatcher: CancellationToken::new(),
        });
        tokio::spawn(dispatch(Arc::clone(hub), Arc::clone(&attached), connected.outbound));
        map.insert(key.to_owned(), Arc::clone(&attached));
        tracing::debug!(identity = key, "device connected over AMQP");
        attached
    }

    /// One link of the identity ended; the last one ends its presence.
    fn leave(&self, hub: &Hub, attached: &Arc<Attached>) {
        let mut map = self.map();
        let left = {
            let mut links = attached.links.lock().unwrap_or_else(|p| p.into_inner());
            *links = links.saturating_sub(1);
            *links
        };
        if left > 0 {
            return;
        }
        if map.get(&attached.key).is_some_and(|a| Arc::ptr_eq(a, attached)) {
            map.remove(&attached.key);
        }
        attached.dispatcher.cancel();
        hub.device_disconnected(&attached.key, attached.lease, true);
        tracing::debug!(identity = %attached.key, "device disconnected from AMQP");
    }
}

/// Ends the identity's presence on this connection with its last link, however the link's task ends.
struct Joined<'a> {
    connection: &'a Connection,
    attached: Arc<Attached>,
    kind: Kind,
}

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        let hub = &self.connection.hub;
        if self.kind == Kind::CloudToDevice {
            self.attached.routes().messages = None;
            self.attached.subscribe(hub, |s| s.cloud_to_device = false);
        }
        self.connection.devices.leave(hub, &self.attached);
    }
}

fn join<'a>(connection: &'a Connection, key: &str, kind: Kind) -> Joined<'a> {
    let attached = connection.devices.join(&connection.hub, key);
    Joined { connection, attached, kind }
}

/// Routes what the hub sends one identity to its links here, until its presence ends.
async fn dispatch(hub: Arc<Hub>, attached: Arc<Attached>, mut outbound: mpsc::Receiver<ToDevice>) {
    loop {
        let next = tokio::select! {
            () = attached.dispatcher.cancelled() => break,
            next = outbound.recv() => next,
        };
        let Some(message) = next else { break };
        match message {
            ToDevice::Message(delivery) => {
                let route = attached.routes().messages.clone();
                let undelivered = match route {
                    Some(route) => route.send(*delivery).await.err().map(|e| e.0),
                    None => Some(*delivery),
                };
                if let Some(delivery) = undelivered {
                    // Nobody listens here any more: back to the queue for the next receiver.
                    let _ = hub.settle_message_now(&attached.key, &delivery.token, Settlement::Abandon);
                }
            }
            // Method calls and desired changes go to links of their own (not attached yet: dropped, as for an
            // MQTT device that did not subscribe; the hub routes nothing it was not subscribed for).
            ToDevice::MethodRequest { .. } | ToDevice::DesiredChanged(_) => {}
        }
    }
    // What is still queued goes back to the hub's queue.
    outbound.close();
    while let Ok(message) = outbound.try_recv() {
        if let ToDevice::Message(delivery) = message {
            let _ = hub.settle_message_now(&attached.key, &delivery.token, Settlement::Abandon);
        }
    }
}

/// The identity key an address names for a device link: `/devices/<id>/<rest>` or
/// `/devices/<id>/modules/<mid>/<rest>` with `<rest>` as given (ids percent-decoded).
pub(super) fn identity_of(path: &str, rest: &str) -> Option<String> {
    let inner = path.strip_prefix("/devices/")?;
    let inner = inner.strip_suffix(rest)?.strip_suffix('/')?;
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|d| d.into_owned());
    let key = match inner.split_once("/modules/") {
        Some((device, module)) if !device.is_empty() && !module.is_empty() && !module.contains('/') => {
            format!("{}/{}", decode(device)?, decode(module)?)
        }
        None if !inner.is_empty() && !inner.contains('/') => decode(inner)?,
        _ => return None,
    };
    Some(key)
}

/// What a device link must be authorized for: `<host>/devices/<id>[/modules/<mid>]` with DeviceConnect.
pub(super) fn resource_of(host: &str, key: &str) -> String {
    match split_key(key) {
        (device, Some(module)) => format!("{host}/devices/{device}/modules/{module}"),
        (device, None) => format!("{host}/devices/{device}"),
    }
}

/// Reads a device's telemetry message into the record the log keeps (the same as MQTT's).
fn telemetry_of(
    key: &str,
    message: &AmqpMessage<Body<Value>>,
    hub: &Hub,
) -> Result<TelemetryMessage, definitions::Error> {
    let body: Vec<u8> = match &message.body {
        Body::Data(sections) => sections.iter().flat_map(|d| d.0.iter().copied()).collect(),
        Body::Value(AmqpValue(Value::String(text))) => text.clone().into_bytes(),
        Body::Value(AmqpValue(Value::Binary(bytes))) => bytes.to_vec(),
        Body::Empty => Vec::new(),
        _ => return Err(error(AmqpError::DecodeError, "The body must be data (or a string or binary value)")),
    };
    if body.len() > telemetry::MAX_BODY_BYTES {
        return Err(error(LinkError::MessageSizeExceeded, "A device-to-cloud message may be at most 256 KB"));
    }
    let mut system = std::collections::BTreeMap::new();
    if let Some(p) = message.properties.as_ref() {
        let mut put = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                system.insert(name.to_owned(), value);
            }
        };
        put("messageId", p.message_id.as_ref().map(id_text));
        put("correlationId", p.correlation_id.as_ref().map(id_text));
        put("userId", p.user_id.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()));
        put("to", p.to.clone());
        put("contentType", p.content_type.as_ref().map(|s| s.as_str().to_owned()));
        put("contentEncoding", p.content_encoding.as_ref().map(|s| s.as_str().to_owned()));
        put("subject", p.subject.clone());
    }
    let properties = message
        .application_properties
        .iter()
        .flat_map(|p| p.iter())
        .filter_map(|(key, value)| Some((key.clone(), property_text(value)?)))
        .collect();
    let (device_id, module_id) = split_key(key);
    Ok(TelemetryMessage {
        device_id: device_id.to_owned(),
        module_id: module_id.map(str::to_owned),
        generation_id: String::new(),
        enqueued_time: hub.clock().now(),
        body: Bytes::from(body),
        system_properties: system,
        properties,
    })
}

/// Takes a device's telemetry until the link ends (`None`), the hub ends the identity's connection (detached
/// here) or `stop` fires (the link, to detach). Each message is accepted once it is durable, or rejected with why.
pub(super) async fn serve_telemetry(
    mut receiver: Receiver,
    connection: &Connection,
    key: &str,
    stop: CancellationToken,
) -> Option<Receiver> {
    let joined = join(connection, key, Kind::Telemetry);
    let hub = &connection.hub;
    loop {
        let next = tokio::select! {
            () = joined.attached.closed.cancelled() => {
                super::links::close_receiver(receiver, Some(connection_ended())).await;
                return None;
            }
            next = next_delivery(&mut receiver, &stop) => next,
        };
        let delivery = match next {
            Next::Delivery(delivery) => delivery,
            Next::Stopped => return Some(receiver),
            Next::Ended => return None,
        };
        hub.touch(key);
        let recorded = match telemetry_of(key, delivery.message(), hub) {
            Ok(message) => {
                hub.admit_wait(Operation::DeviceToCloud, 1.0).await;
                hub.record_telemetry(message)
                    .await
                    .map_err(|e| error(AmqpError::InternalError, format!("The message could not be saved: {e}")))
            }
            Err(refusal) => Err(refusal),
        };
        let settled = match recorded {
            Ok(_) => receiver.accept(&*delivery).await,
            Err(reason) => receiver.reject(&*delivery, reason).await,
        };
        if settled.is_err() {
            return None;
        }
    }
}

/// The error links of an identity are detached with when the hub ends its connection.
fn connection_ended() -> definitions::Error {
    error(
        AmqpError::UnauthorizedAccess,
        "The hub ended this device's connection (another connection, deleted, disabled, or a fault)",
    )
}

/// A queued message as the device receives it: the hub's properties, `iothub-ack` and the sender's application
/// properties, the body as one data section.
fn c2d_message(key: &str, delivery: &Delivery) -> AmqpMessage<Data> {
    let queued = &delivery.message;
    let m = &queued.message;
    let (device_id, _) = split_key(key);
    let mut properties = Properties::builder().to(iothub_proto::messages::devicebound_to(device_id));
    if let Some(id) = &m.message_id {
        properties = properties.message_id(id.clone());
    }
    if let Some(id) = &m.correlation_id {
        properties = properties.correlation_id(id.clone());
    }
    if let Some(user) = &m.user_id {
        properties = properties.user_id(Binary::from(user.clone().into_bytes()));
    }
    if let Some(content_type) = &m.content_type {
        properties = properties.content_type(content_type.clone());
    }
    if let Some(encoding) = &m.content_encoding {
        properties = properties.content_encoding(encoding.clone());
    }
    if let Some(expiry) = m.expiry {
        properties = properties.absolute_expiry_time(AmqpTimestamp::from_milliseconds(expiry.as_millisecond()));
    }
    let mut application =
        ApplicationProperties::builder().insert("iothub-ack", SimpleValue::String(m.ack.as_str().to_owned()));
    for (name, value) in &m.properties {
        application = application.insert(name.clone(), SimpleValue::String(value.clone()));
    }
    let annotations = MessageAnnotations::builder()
        .insert("iothub-enqueuedtime", AmqpTimestamp::from_milliseconds(queued.enqueued.as_millisecond()))
        .insert("iothub-deliverycount", Value::Uint(queued.delivery_count.saturating_sub(1)))
        .insert("x-opt-sequence-number", Value::Long(i64::try_from(queued.sequence).unwrap_or(i64::MAX)))
        .insert("x-opt-lock-token", Value::String(delivery.token.clone()))
        .build();
    AmqpMessage::builder()
        .properties(properties.build())
        .message_annotations(annotations)
        .application_properties(application.build())
        .data(Binary::from(m.body.clone()))
        .build()
}

/// Hands the device its cloud-to-device messages until the link ends (`None`), the hub ends the identity's
/// connection (detached here) or `stop` fires (the link, to detach). The device's disposition settles each.
pub(super) async fn serve_cloud_to_device(
    mut sender: Sender,
    connection: &Connection,
    key: &str,
    stop: CancellationToken,
) -> Option<Sender> {
    let joined = join(connection, key, Kind::CloudToDevice);
    let hub = &connection.hub;
    let (route, mut messages) = mpsc::channel(ROUTE_CAPACITY);
    joined.attached.routes().messages = Some(route);
    joined.attached.subscribe(hub, |s| s.cloud_to_device = true);
    loop {
        let delivery = tokio::select! {
            () = stop.cancelled() => return Some(sender),
            () = joined.attached.closed.cancelled() => {
                super::links::close_sender(sender, Some(connection_ended())).await;
                return None;
            }
            _ = sender.on_detach() => return None,
            delivery = messages.recv() => match delivery {
                Some(delivery) => delivery,
                None => return Some(sender),
            },
        };
        let sent = tokio::select! {
            () = stop.cancelled() => {
                let _ = hub.settle_message_now(key, &delivery.token, Settlement::Abandon);
                return Some(sender);
            }
            sent = sender.send(c2d_message(key, &delivery)) => sent,
        };
        let settlement = match sent {
            Ok(Outcome::Accepted(_)) => Settlement::Complete,
            Ok(Outcome::Rejected(_)) => Settlement::Reject,
            Ok(_) => Settlement::Abandon,
            Err(problem) => {
                tracing::debug!(identity = key, ?problem, "a cloud-to-device message was not delivered");
                let _ = hub.settle_message_now(key, &delivery.token, Settlement::Abandon);
                return None;
            }
        };
        hub.touch(key);
        if let Err(failure) = hub.settle_message(key, &delivery.token, settlement).await {
            tracing::debug!(identity = key, %failure, "a cloud-to-device message was not settled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_and_module_addresses_name_their_identity() {
        assert_eq!(identity_of("/devices/d1/messages/events", "messages/events").as_deref(), Some("d1"));
        assert_eq!(identity_of("/devices/d%201/messages/events", "messages/events").as_deref(), Some("d 1"));
        let module = identity_of("/devices/d1/modules/m1/messages/events", "messages/events");
        assert_eq!(module.as_deref(), Some("d1/m1"));
        assert_eq!(identity_of("/devices//messages/events", "messages/events"), None);
        assert_eq!(identity_of("/devices/d1/x/messages/events", "messages/events"), None);
        assert_eq!(identity_of("/devices/d1/messages/devicebound", "messages/events"), None);
        assert_eq!(resource_of("h", "d1/m1"), "h/devices/d1/modules/m1");
    }
}
