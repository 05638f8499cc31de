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
//! - `/devices/<id>/methods/devicebound`: a pair of links. Requests go out with `IoThub-methodname` and the call's
//!   number as a uuid `correlation-id`; answers come back with `IoThub-status` and that id.
//! - `/devices/<id>/twin`: a pair of links. Requests carry annotations `operation` (`GET`, `PATCH`, `PUT`,
//!   `DELETE`) and `resource`, and a `correlation-id` the answer repeats with annotations `status` (and `version`);
//!   desired changes go out on the same link without a `correlation-id`, once the device PUT its subscription.
//!
//! The wire facts, with their sources in the Node and .NET SDKs, are in docs/amqp-devices-wire.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fe2o3_amqp::types::definitions::{self, AmqpError, LinkError};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Message as AmqpMessage, MessageAnnotations, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Timestamp as AmqpTimestamp, Value};
use fe2o3_amqp::{Receiver, Sender};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::c2d::{body_of, id_text, property_text};
use super::context::Connection;
use super::links::{Next, error, next_delivery};
use crate::domain::c2d::Settlement;
use crate::domain::registry::split_key;
use crate::domain::telemetry::{self, TelemetryMessage};
use crate::domain::throttle::Operation;
use crate::error::HubError;
use crate::hub::{Delivery, Hub, Subscriptions, ToDevice};

/// Messages waiting for a link of an identity before the dispatcher waits.
const ROUTE_CAPACITY: usize = 64;

/// What kind of device link, for the subscriptions the hub keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Telemetry,
    CloudToDevice,
    /// The device's side of a pair (methods or twin answers it sends): no route of its own.
    Requests,
    /// The link the hub sends method calls on.
    Methods,
    /// The link the hub sends twin answers and desired changes on.
    Twin,
}

/// A message ready for a device's method or twin link.
/// A message the hub sends a device on its method or twin link (boxed: it is ~600 bytes, and each link's route
/// holds a block of 32 slots from the start; 19 KB a link unboxed, by heaptrack).
type Outgoing = Box<AmqpMessage<Data>>;

/// Where the hub's messages for one identity go on this connection.
#[derive(Default)]
struct Routes {
    messages: Option<mpsc::Sender<Delivery>>,
    methods: Option<mpsc::Sender<Outgoing>>,
    twin: Option<mpsc::Sender<Outgoing>>,
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
        match self.kind {
            Kind::CloudToDevice => {
                self.attached.routes().messages = None;
                self.attached.subscribe(hub, |s| s.cloud_to_device = false);
            }
            Kind::Methods => {
                self.attached.routes().methods = None;
                self.attached.subscribe(hub, |s| s.methods = false);
            }
            Kind::Twin => {
                self.attached.routes().twin = None;
                self.attached.subscribe(hub, |s| s.desired = false);
            }
            Kind::Telemetry | Kind::Requests => {}
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
            ToDevice::MethodRequest { rid, name, payload } => {
                let route = attached.routes().methods.clone();
                // No methods link (it just detached): the call times out, as for an MQTT device gone mid-call.
                if let Some(route) = route {
                    let _ = route.send(method_request(rid, &name, &payload)).await;
                }
            }
            ToDevice::DesiredChanged(notification) => {
                let route = attached.routes().twin.clone();
                if let Some(route) = route {
                    let body = crate::wire::twin::desired_notification(&notification);
                    let message = AmqpMessage::builder().data(Binary::from(body.into_bytes())).build();
                    let _ = route.send(Box::new(message)).await;
                }
            }
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
/// `/devices/<id>/modules/<mid>/<rest>`, `<rest>` in any case (.NET writes `deviceBound`), ids percent-decoded.
pub(super) fn identity_of(path: &str, rest: &str) -> Option<String> {
    let inner = path.strip_prefix("/devices/")?;
    let split = inner.len().checked_sub(rest.len())?;
    let (inner, tail) = (inner.get(..split)?, inner.get(split..)?);
    if !tail.eq_ignore_ascii_case(rest) {
        return None;
    }
    let inner = inner.strip_suffix('/')?;
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
    let body: Vec<u8> = body_of(message)
        .ok_or_else(|| error(AmqpError::DecodeError, "The body must be data (or a string or binary value)"))?;
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
        let delivery = match next_from_device(&mut receiver, &joined.attached, &stop).await {
            Next::Delivery(delivery) => delivery,
            Next::Stopped => return Some(receiver),
            Next::Ended if joined.attached.closed.is_cancelled() => {
                super::links::close_receiver(receiver, Some(connection_ended())).await;
                return None;
            }
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
            Ok(_) => Box::pin(receiver.accept(&*delivery)).await,
            Err(reason) => Box::pin(receiver.reject(&*delivery, reason)).await,
        };
        if settled.is_err() {
            return None;
        }
    }
}

/// The next delivery on one of an identity's links; `Ended` also when the hub ended the identity's connection
/// (then `attached.closed` is cancelled and the caller detaches the link with [`connection_ended`]).
async fn next_from_device(receiver: &mut Receiver, attached: &Attached, stop: &CancellationToken) -> Next {
    tokio::select! {
        () = attached.closed.cancelled() => Next::Ended,
        next = next_delivery(receiver, stop) => next,
    }
}

/// The error links of an identity are detached with when the hub ends its connection: `detach-forced`, which
/// the SDKs retry (a deleted or disabled device is then refused at its next put-token, for good).
pub(super) fn connection_ended() -> definitions::Error {
    error(
        LinkError::DetachForced,
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
            sent = Box::pin(sender.send(c2d_message(key, &delivery))) => sent,
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

/// The `correlation-id` of method call `rid`: a version 4-shaped uuid carrying the number, which the SDKs hand back
/// (Node as a uuid or its text, .NET as a Guid).
fn call_id(rid: u64) -> uuid::Uuid {
    uuid::Uuid::from_u64_pair(0x0000_0000_0000_4000, 0x8000_0000_0000_0000 | (rid & 0x3fff_ffff_ffff_ffff))
}

/// The call number a method answer's `correlation-id` carries (uuid or its text), if it is one of ours.
fn rid_of(id: &MessageId) -> Option<u64> {
    let uuid = match id {
        MessageId::Uuid(uuid) => uuid::Uuid::from_bytes(*uuid.as_inner()),
        MessageId::String(text) => uuid::Uuid::parse_str(text).ok()?,
        _ => return None,
    };
    let (high, low) = uuid.as_u64_pair();
    (high == 0x0000_0000_0000_4000 && low & 0xc000_0000_0000_0000 == 0x8000_0000_0000_0000)
        .then_some(low & 0x3fff_ffff_ffff_ffff)
}

fn method_request(rid: u64, name: &str, payload: &str) -> Outgoing {
    Box::new(
        AmqpMessage::builder()
            .properties(Properties::builder().correlation_id(MessageId::Uuid(call_id(rid).into_bytes().into())).build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("IoThub-methodname", SimpleValue::String(name.to_owned()))
                    .build(),
            )
            .data(Binary::from(payload.as_bytes().to_vec()))
            .build(),
    )
}

/// An integer application property or annotation, whatever integer type the sender used.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(i64::from(*n)),
        Value::Long(n) => Some(*n),
        Value::Short(n) => Some(i64::from(*n)),
        Value::Uint(n) => Some(i64::from(*n)),
        Value::Ulong(n) => i64::try_from(*n).ok(),
        Value::Ushort(n) => Some(i64::from(*n)),
        Value::Ubyte(n) => Some(i64::from(*n)),
        Value::Byte(n) => Some(i64::from(*n)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A request's body as bytes, empty when it has none this hub reads.
fn body_bytes(message: &AmqpMessage<Body<Value>>) -> Vec<u8> {
    body_of(message).unwrap_or_default()
}

/// Settles a request the device may have sent pre-settled (the twin link does): a failed disposition of a
/// settled delivery is no reason to end the link.
async fn settle_request(receiver: &Receiver, delivery: &fe2o3_amqp::Delivery<Body<Value>>) {
    let _ = Box::pin(receiver.accept(delivery)).await;
}

/// The hub's side of a pair's outgoing link (method calls, or twin answers and desired changes): sends what the
/// identity's route gets until the link ends (`None`), the hub ends the identity's connection (detached here) or
/// `stop` fires (the link, to detach).
pub(super) async fn serve_outgoing(
    mut sender: Sender,
    connection: &Connection,
    key: &str,
    kind: Kind,
    stop: CancellationToken,
) -> Option<Sender> {
    let joined = join(connection, key, kind);
    let hub = &connection.hub;
    let (route, mut outgoing) = mpsc::channel(ROUTE_CAPACITY);
    match kind {
        Kind::Methods => {
            joined.attached.routes().methods = Some(route);
            joined.attached.subscribe(hub, |s| s.methods = true);
        }
        _ => joined.attached.routes().twin = Some(route),
    }
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Some(sender),
            () = joined.attached.closed.cancelled() => {
                super::links::close_sender(sender, Some(connection_ended())).await;
                return None;
            }
            _ = sender.on_detach() => return None,
            message = outgoing.recv() => match message {
                Some(message) => message,
                None => return Some(sender),
            },
        };
        let sent = tokio::select! {
            () = stop.cancelled() => return Some(sender),
            sent = Box::pin(sender.send(*message)) => sent,
        };
        if let Err(problem) = sent {
            tracing::debug!(identity = key, ?problem, "a message to the device was not delivered");
            return None;
        }
    }
}

/// Takes a device's method answers until the link ends (`None`), the hub ends the identity's connection, or
/// `stop` fires (the link, to detach).
pub(super) async fn serve_method_answers(
    mut receiver: Receiver,
    connection: &Connection,
    key: &str,
    stop: CancellationToken,
) -> Option<Receiver> {
    let joined = join(connection, key, Kind::Requests);
    let hub = &connection.hub;
    loop {
        let delivery = match next_from_device(&mut receiver, &joined.attached, &stop).await {
            Next::Delivery(delivery) => delivery,
            Next::Stopped => return Some(receiver),
            Next::Ended if joined.attached.closed.is_cancelled() => {
                super::links::close_receiver(receiver, Some(connection_ended())).await;
                return None;
            }
            Next::Ended => return None,
        };
        hub.touch(key);
        let message = delivery.message();
        let rid = message.properties.as_ref().and_then(|p| p.correlation_id.as_ref()).and_then(rid_of);
        let status = message
            .application_properties
            .as_ref()
            .and_then(|p| p.iter().find(|(k, _)| k.eq_ignore_ascii_case("IoThub-status")).map(|(_, v)| v.clone()))
            .and_then(|v| integer(&Value::from(v)));
        let body = body_bytes(message);
        let settled = match (rid, status) {
            (Some(rid), Some(status)) if body.len() <= crate::domain::methods::MAX_PAYLOAD_BYTES => {
                hub.complete_method(key, rid, crate::wire::methods::parse_response(status, &body));
                Box::pin(receiver.accept(&*delivery)).await
            }
            (Some(_), Some(_)) => {
                let refusal = error(LinkError::MessageSizeExceeded, "A method answer may be at most 128 KB");
                Box::pin(receiver.reject(&*delivery, refusal)).await
            }
            _ => {
                let refusal = error(
                    AmqpError::InvalidField,
                    "A method answer needs the request's correlation-id and an integer IoThub-status",
                );
                Box::pin(receiver.reject(&*delivery, refusal)).await
            }
        };
        if settled.is_err() {
            return None;
        }
    }
}

/// A twin answer: the request's `correlation-id`, annotations `status` (an int) and `version` (a long, when
/// there is one), and a JSON body when there is something to say (an error body must be JSON for Node).
fn twin_answer(correlation: Option<MessageId>, status: i32, version: Option<u64>, body: Option<String>) -> Outgoing {
    let mut annotations = MessageAnnotations::builder().insert("status", Value::Int(status));
    if let Some(version) = version {
        annotations = annotations.insert("version", Value::Long(i64::try_from(version).unwrap_or(i64::MAX)));
    }
    let mut properties = Properties::builder();
    if let Some(correlation) = correlation {
        properties = properties.correlation_id(correlation);
    }
    Box::new(
        AmqpMessage::builder()
            .properties(properties.build())
            .message_annotations(annotations.build())
            .data(Binary::from(body.unwrap_or_default().into_bytes()))
            .build(),
    )
}

/// A text annotation of a message.
fn annotation(message: &AmqpMessage<Body<Value>>, name: &str) -> Option<String> {
    message.message_annotations.as_ref()?.iter().find_map(|(k, v)| match (k, v) {
        (fe2o3_amqp::types::messaging::annotations::OwnedKey::Symbol(s), Value::String(text)) if s.as_str() == name => {
            Some(text.clone())
        }
        (fe2o3_amqp::types::messaging::annotations::OwnedKey::Symbol(s), Value::Symbol(text)) if s.as_str() == name => {
            Some(text.as_str().to_owned())
        }
        _ => None,
    })
}

/// Serves one twin request and gives the answer's status, version and body.
async fn twin_request(
    hub: &Hub,
    attached: &Attached,
    message: &AmqpMessage<Body<Value>>,
) -> (i32, Option<u64>, Option<String>) {
    let key = attached.key.as_str();
    let operation = annotation(message, "operation").unwrap_or_default();
    let resource = annotation(message, "resource").unwrap_or_default();
    let failed = |error: &HubError| {
        let status = i32::from(error.wire().status);
        (status, None, Some(crate::wire::errors::detail_text(error, hub.clock().now())))
    };
    let fault = hub.twin_fault(key).map_or(Ok(()), Err);
    match (operation.to_ascii_uppercase().as_str(), resource.as_str()) {
        ("GET", _) => match fault.and_then(|()| hub.admit(Operation::TwinRead, 1.0)).and_then(|()| hub.get_device(key))
        {
            Ok(device) => (200, Some(device.twin.version), Some(crate::wire::twin::device_view(&device.twin))),
            Err(error) => failed(&error),
        },
        ("PATCH", "/properties/reported") => {
            let body = body_bytes(message);
            let outcome = match crate::wire::twin::parse_reported_patch(&body) {
                Ok(patch) => match fault.and_then(|()| hub.admit(Operation::TwinUpdate, 1.0)) {
                    Ok(()) => hub.patch_reported(key, &patch).await,
                    Err(error) => Err(error),
                },
                Err(error) => Err(error),
            };
            match outcome {
                Ok(version) => (204, Some(version), None),
                Err(error) => failed(&error),
            }
        }
        ("PUT", "/notifications/twin/properties/desired") => {
            attached.subscribe(hub, |s| s.desired = true);
            (200, None, None)
        }
        ("DELETE", "/notifications/twin/properties/desired") => {
            attached.subscribe(hub, |s| s.desired = false);
            (200, None, None)
        }
        _ => failed(&HubError::ArgumentInvalid(format!(
            "The twin operation '{operation}' on '{resource}' is not supported: GET, PATCH /properties/reported, \
             PUT or DELETE /notifications/twin/properties/desired"
        ))),
    }
}

/// Takes a device's twin requests until the link ends (`None`), the hub ends the identity's connection, or
/// `stop` fires (the link, to detach); each answer goes out on the pair's other link.
pub(super) async fn serve_twin_requests(
    mut receiver: Receiver,
    connection: &Connection,
    key: &str,
    stop: CancellationToken,
) -> Option<Receiver> {
    let joined = join(connection, key, Kind::Requests);
    let hub = &connection.hub;
    loop {
        let delivery = match next_from_device(&mut receiver, &joined.attached, &stop).await {
            Next::Delivery(delivery) => delivery,
            Next::Stopped => return Some(receiver),
            Next::Ended if joined.attached.closed.is_cancelled() => {
                super::links::close_receiver(receiver, Some(connection_ended())).await;
                return None;
            }
            Next::Ended => return None,
        };
        settle_request(&receiver, &delivery).await;
        hub.touch(key);
        let message = delivery.message();
        let correlation = message.properties.as_ref().and_then(|p| p.correlation_id.clone());
        let (status, version, body) = twin_request(hub, &joined.attached, message).await;
        let route = joined.attached.routes().twin.clone();
        match route {
            Some(route) => {
                let _ = route.send(twin_answer(correlation, status, version, body)).await;
            }
            None => tracing::debug!(identity = key, "twin answer dropped: the device has no twin receiver link"),
        }
    }
}

/// A module's input messages (`/devices/<d>/modules/<m>/messages/events` as a receiver): the link is kept, and
/// nothing arrives on it (the emulator has no edge routing), rather than refused, which would make the SDK tear
/// the connection down and retry for ever.
pub(super) async fn serve_module_inputs(
    sender: Sender,
    connection: &Connection,
    key: &str,
    stop: CancellationToken,
) -> Option<Sender> {
    let joined = join(connection, key, Kind::Telemetry);
    tokio::select! {
        () = stop.cancelled() => Some(sender),
        () = joined.attached.closed.cancelled() => {
            super::links::close_sender(sender, Some(connection_ended())).await;
            None
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
        assert_eq!(identity_of("/devices/d1/messages/deviceBound", "messages/devicebound").as_deref(), Some("d1"));
        assert_eq!(resource_of("h", "d1/m1"), "h/devices/d1/modules/m1");
    }

    #[test]
    fn call_numbers_survive_the_round_trip_as_uuid_or_text() {
        for rid in [0, 1, 42, u64::MAX >> 2] {
            let id = call_id(rid);
            assert_eq!(id.get_version_num(), 4);
            assert_eq!(rid_of(&MessageId::Uuid(id.into_bytes().into())), Some(rid));
            assert_eq!(rid_of(&MessageId::String(id.to_string())), Some(rid));
        }
        assert_eq!(rid_of(&MessageId::String("not-a-uuid".into())), None);
        assert_eq!(rid_of(&MessageId::String(uuid::Uuid::nil().to_string())), None);
    }
}
