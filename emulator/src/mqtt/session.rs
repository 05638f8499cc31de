//! One MQTT connection, from CONNECT to close: authenticate, resume or start the session, then serve the
//! device's twin requests, method answers and telemetry, and deliver what the hub sends it.
//!
//! Refusals follow the hub: a topic it does not offer gets SUBACK 0x80; a PUBLISH to a topic that is not the
//! device's own, a QoS 2 PUBLISH or an oversized message closes the connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use rumqttc::mqttbytes::v4::{
    Codec, ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, Subscribe, SubscribeReasonCode, UnsubAck,
    Unsubscribe,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::connect::{self, Accepted};
use super::topics::{self, Inbound};
use crate::domain::c2d::Settlement;
use crate::domain::methods;
use crate::domain::registry;
use crate::domain::telemetry::{self, TelemetryMessage};
use crate::domain::throttle::Operation;
use crate::error::HubError;
use crate::hub::{Delivery, Hub, Subscriptions, ToDevice};
use crate::limits;
use crate::wire;

type Transport<IO> = Framed<IO, Codec>;

/// Initial size of a connection's read and write buffers. Devices mostly send and get small packets, and
/// tens of thousands of idle connections each keeping tokio-util's default 2 x 8 KB would cost more than all
/// else a connection holds; the buffers grow for the rare large message.
const FRAME_BUFFER_BYTES: usize = 1024;

/// Serves one MQTT connection on `io` (TLS or WebSocket) until it ends or `shutdown` fires.
pub async fn serve_connection<IO>(io: IO, hub: Arc<Hub>, shutdown: CancellationToken, peer: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let codec =
        Codec { max_incoming_size: limits::MAX_MQTT_PACKET_BYTES, max_outgoing_size: limits::MAX_MQTT_PACKET_BYTES };
    let mut transport = Framed::with_capacity(io, codec, FRAME_BUFFER_BYTES);
    let first = tokio::select! {
        first = tokio::time::timeout(Duration::from_secs(limits::HANDSHAKE_TIMEOUT_SECS), transport.next()) => first,
        () = shutdown.cancelled() => return,
    };
    let connect = match first {
        Ok(Some(Ok(Packet::Connect(connect)))) => connect,
        Ok(Some(Err(CodecError::InvalidProtocol | CodecError::InvalidProtocolLevel(_)))) => {
            tracing::debug!(%peer, "CONNECT with an unsupported protocol level");
            refuse(&mut transport, ConnectReturnCode::RefusedProtocolVersion).await;
            return;
        }
        Ok(Some(Ok(other))) => {
            tracing::debug!(%peer, packet = ?other, "first packet is not CONNECT");
            return;
        }
        Ok(Some(Err(error))) => {
            tracing::debug!(%peer, %error, "malformed first packet");
            return;
        }
        Ok(None) => return,
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT in time");
            return;
        }
    };
    hub.note_connect_attempt();
    if connect.protocol != rumqttc::mqttbytes::Protocol::V4 {
        refuse(&mut transport, ConnectReturnCode::RefusedProtocolVersion).await;
        return;
    }
    let accepted = match connect::check(&hub, &connect) {
        Ok(accepted) => accepted,
        Err(code) => {
            refuse(&mut transport, code).await;
            return;
        }
    };
    if hub.connect_refused(&accepted.device_id) {
        // An outage or a disconnect fault (test-suite controls): refused as a hub that is away refuses.
        tracing::debug!(%peer, device_id = %accepted.device_id, "connection refused by a fault");
        refuse(&mut transport, ConnectReturnCode::ServiceUnavailable).await;
        return;
    }
    if hub.admit(Operation::DeviceConnect, 1.0).is_err() {
        // The hub answers connections past its rate with "server unavailable"; the SDKs retry with back-off.
        tracing::debug!(%peer, device_id = %accepted.device_id, "connection refused by the throttling profile");
        refuse(&mut transport, ConnectReturnCode::ServiceUnavailable).await;
        return;
    }
    let connected = hub.device_connected(&accepted.device_id, accepted.clean_session);
    let ack = ConnAck { session_present: connected.session_present, code: ConnectReturnCode::Success };
    let connection = connected.lease.id;
    if transport.send(Packet::ConnAck(ack)).await.is_ok() {
        tracing::debug!(%peer, device_id = %accepted.device_id, resumed = connected.session_present, "device connected");
        let mut session = Session {
            transport,
            hub: &hub,
            accepted: &accepted,
            connection,
            subscriptions: connected.subscriptions,
            outbound: connected.outbound,
            in_flight: HashMap::new(),
            next_packet_id: 0,
            withheld_acks: Vec::new(),
        };
        session.run(&connected.lease.closed, &shutdown).await;
        // Presence ends before the socket closes, so a client that sees the close sees the device gone too.
        hub.device_disconnected(&accepted.device_id, connection, accepted.clean_session);
        close(&mut session.transport).await;
    } else {
        hub.device_disconnected(&accepted.device_id, connection, accepted.clean_session);
    }
    tracing::debug!(%peer, device_id = %accepted.device_id, "device disconnected");
}

/// Answers a connection the emulator has no room for: CONNACK 3 (server unavailable) to its CONNECT, then
/// close, so the device backs off and retries instead of seeing a reset.
pub async fn refuse_busy<IO>(io: IO, peer: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let codec =
        Codec { max_incoming_size: limits::MAX_MQTT_PACKET_BYTES, max_outgoing_size: limits::MAX_MQTT_PACKET_BYTES };
    let mut transport = Framed::with_capacity(io, codec, FRAME_BUFFER_BYTES);
    if let Ok(Some(Ok(Packet::Connect(_)))) =
        tokio::time::timeout(Duration::from_secs(limits::HANDSHAKE_TIMEOUT_SECS), transport.next()).await
    {
        tracing::debug!(%peer, "CONNECT refused: server unavailable");
        refuse(&mut transport, ConnectReturnCode::ServiceUnavailable).await;
    }
}

async fn refuse<IO: AsyncRead + AsyncWrite + Unpin>(transport: &mut Transport<IO>, code: ConnectReturnCode) {
    let _ = transport.send(Packet::ConnAck(ConnAck { session_present: false, code })).await;
    close(transport).await;
}

/// Flushes and shuts the stream down (a TLS close_notify), briefly: a peer that stopped reading cannot hold
/// the task.
async fn close<IO: AsyncRead + AsyncWrite + Unpin>(transport: &mut Transport<IO>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), transport.close()).await;
}

/// How long the hub waits for any packet: 1.5 x the client's keep-alive, capped; `None` when disabled (0).
fn keep_alive_deadline(keep_alive_secs: u16) -> Option<Duration> {
    (keep_alive_secs > 0).then(|| {
        let millis = u64::from(keep_alive_secs) * 1500;
        Duration::from_millis(millis.min(limits::MAX_KEEP_ALIVE_TIMEOUT_SECS * 1000))
    })
}

/// Whether the connection goes on after handling something.
enum Flow {
    Continue,
    Close(&'static str),
}

enum Event {
    Packet(Packet),
    Outbound(ToDevice),
    /// Time to see whether held-back PUBACKs may go.
    ReleaseAcks,
    Ended(&'static str),
}

struct Session<'a, IO> {
    transport: Transport<IO>,
    hub: &'a Hub,
    accepted: &'a Accepted,
    connection: u64,
    subscriptions: Subscriptions,
    outbound: mpsc::Receiver<ToDevice>,
    /// Cloud-to-device messages published at QoS 1 and not acknowledged yet: packet id -> lock token. A PUBACK
    /// completes the message; what is still here when the connection ends waits for the next one.
    in_flight: HashMap<u16, String>,
    next_packet_id: u16,
    /// PUBACKs of telemetry held back by a fault, sent when it ends (if the connection lasts that long).
    withheld_acks: Vec<u16>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Session<'_, IO> {
    fn device_id(&self) -> &str {
        &self.accepted.device_id
    }

    async fn run(&mut self, closed: &CancellationToken, shutdown: &CancellationToken) {
        let deadline = keep_alive_deadline(self.accepted.keep_alive_secs);
        let token_expiry = i64::try_from(self.accepted.token_expiry)
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok())
            .unwrap_or(jiff::Timestamp::MAX);
        let expired = self.hub.clock().sleep_until(token_expiry);
        tokio::pin!(expired);
        loop {
            let event = {
                let holding_acks = !self.withheld_acks.is_empty();
                let release_at = if holding_acks {
                    self.hub.telemetry_acks_withheld_until(self.device_id()).unwrap_or(jiff::Timestamp::MIN)
                } else {
                    jiff::Timestamp::MAX
                };
                let hub = self.hub;
                let next = async {
                    match deadline {
                        Some(limit) => tokio::time::timeout(limit, self.transport.next())
                            .await
                            .unwrap_or(None)
                            .map_or(Event::Ended("keep-alive expired or connection closed"), |p| {
                                p.map_or(Event::Ended("malformed packet"), Event::Packet)
                            }),
                        None => self.transport.next().await.map_or(Event::Ended("connection closed"), |p| {
                            p.map_or(Event::Ended("malformed packet"), Event::Packet)
                        }),
                    }
                };
                tokio::select! {
                    event = next => event,
                    Some(message) = self.outbound.recv() => Event::Outbound(message),
                    () = hub.clock().sleep_until(release_at), if holding_acks => Event::ReleaseAcks,
                    () = hub.faults_changed(), if holding_acks => Event::ReleaseAcks,
                    () = closed.cancelled() => Event::Ended("closed by the hub (replaced, disabled or deleted)"),
                    () = &mut expired => Event::Ended("the SAS token expired"),
                    () = shutdown.cancelled() => Event::Ended("emulator shutting down"),
                }
            };
            let flow = match event {
                Event::Packet(packet) => self.handle(packet).await,
                Event::Outbound(message) => self.deliver(message).await,
                Event::ReleaseAcks => self.release_acks().await,
                Event::Ended(why) => Flow::Close(why),
            };
            if let Flow::Close(why) = flow {
                tracing::debug!(device_id = self.device_id(), why, "closing the connection");
                return;
            }
        }
    }

    /// Sends the held-back PUBACKs once no fault holds them any more.
    async fn release_acks(&mut self) -> Flow {
        if self.hub.telemetry_acks_withheld_until(self.device_id()).is_some() {
            return Flow::Continue;
        }
        tracing::debug!(device_id = self.device_id(), count = self.withheld_acks.len(), "held-back PUBACKs sent");
        for pkid in std::mem::take(&mut self.withheld_acks) {
            if let Flow::Close(why) = self.send(Packet::PubAck(PubAck::new(pkid))).await {
                return Flow::Close(why);
            }
        }
        Flow::Continue
    }

    async fn send(&mut self, packet: Packet) -> Flow {
        if let Some(latency) = self.hub.send_latency(self.device_id()) {
            // A latency fault: everything to this device goes out late, in order.
            tokio::time::sleep(latency).await;
        }
        // tokio polls the send before its timer, and arms the timer only when the send has to wait, so the hot
        // path (a PUBACK per telemetry message) does not touch the timer wheel.
        let limit = Duration::from_secs(limits::MQTT_WRITE_TIMEOUT_SECS);
        match tokio::time::timeout(limit, self.transport.send(packet)).await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(_)) => Flow::Close("write failed"),
            Err(_) => Flow::Close("the device stopped reading"),
        }
    }

    async fn publish(&mut self, topic: String, payload: impl Into<Bytes>) -> Flow {
        let publish = Publish::from_bytes(topic, QoS::AtMostOnce, payload.into());
        self.send(Packet::Publish(publish)).await
    }

    async fn handle(&mut self, packet: Packet) -> Flow {
        match packet {
            Packet::PingReq => self.send(Packet::PingResp).await,
            Packet::Disconnect => Flow::Close("DISCONNECT"),
            Packet::Subscribe(subscribe) => self.subscribe(subscribe).await,
            Packet::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe).await,
            Packet::Publish(publish) => self.on_publish(publish).await,
            Packet::PubAck(ack) => {
                if let Some(token) = self.in_flight.remove(&ack.pkid) {
                    // Kept in order with the hub's other writes; nothing waits on it.
                    match self.hub.settle_message_now(self.device_id(), &token, Settlement::Complete) {
                        Ok(pending) => drop(pending),
                        Err(error) => {
                            tracing::debug!(device_id = self.device_id(), %error, "a message was not completed")
                        }
                    }
                }
                Flow::Continue
            }
            Packet::Connect(_) => Flow::Close("a second CONNECT"),
            _ => Flow::Close("unexpected packet"),
        }
    }

    async fn subscribe(&mut self, subscribe: Subscribe) -> Flow {
        let mut return_codes = Vec::with_capacity(subscribe.filters.len());
        for filter in &subscribe.filters {
            match topics::parse_filter(&filter.path, self.device_id()) {
                Some(kind) => {
                    kind.set(&mut self.subscriptions, true);
                    let granted = if filter.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                    return_codes.push(SubscribeReasonCode::Success(granted));
                }
                None => {
                    tracing::debug!(device_id = self.device_id(), filter = %filter.path, "subscription refused");
                    return_codes.push(SubscribeReasonCode::Failure);
                }
            }
        }
        // Recorded before the SUBACK, so a method call can reach the device as soon as it knows it subscribed.
        self.record_subscriptions().await;
        self.send(Packet::SubAck(SubAck { pkid: subscribe.pkid, return_codes })).await
    }

    /// Hands the hub this connection's subscriptions (stored for a clean-session-0 client). If they cannot be
    /// stored they still hold until the hub stops, so the device is answered as usual and the error is logged.
    async fn record_subscriptions(&self) {
        let persistent = !self.accepted.clean_session;
        let recorded = self.hub.set_subscriptions(self.device_id(), self.connection, self.subscriptions, persistent);
        if let Err(error) = recorded.await {
            tracing::warn!(device_id = self.device_id(), %error, "subscriptions will not survive a restart");
        }
    }

    async fn unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Flow {
        for topic in &unsubscribe.topics {
            if let Some(kind) = topics::parse_filter(topic, self.device_id()) {
                kind.set(&mut self.subscriptions, false);
            }
        }
        self.record_subscriptions().await;
        self.send(Packet::UnsubAck(UnsubAck { pkid: unsubscribe.pkid })).await
    }

    async fn on_publish(&mut self, publish: Publish) -> Flow {
        if publish.qos == QoS::ExactlyOnce {
            return Flow::Close("QoS 2 is not supported by IoT Hub");
        }
        self.hub.touch(self.device_id());
        let reply = match topics::parse_device_publish(&publish.topic, self.device_id()) {
            Inbound::TwinGet { rid } => {
                let device = self
                    .twin_fault()
                    .and_then(|()| self.hub.admit(Operation::TwinRead, 1.0))
                    .and_then(|()| self.hub.get_device(self.device_id()));
                let (status, body) = match device {
                    Ok(device) => (200, wire::twin::device_view(&device.twin)),
                    Err(error) => self.error_reply(&error),
                };
                Some((topics::twin_response(status, &rid, None), body))
            }
            Inbound::ReportedPatch { rid } => {
                let outcome = match wire::twin::parse_reported_patch(&publish.payload) {
                    Ok(patch) => match self.twin_fault().and_then(|()| self.hub.admit(Operation::TwinUpdate, 1.0)) {
                        Ok(()) => self.hub.patch_reported(self.device_id(), &patch).await,
                        Err(throttled) => Err(throttled),
                    },
                    Err(error) => Err(error),
                };
                Some(match outcome {
                    Ok(version) => (topics::twin_response(204, &rid, Some(version)), String::new()),
                    Err(error) => {
                        let (status, body) = self.error_reply(&error);
                        (topics::twin_response(status, &rid, None), body)
                    }
                })
            }
            Inbound::MethodResponse { status, rid } => {
                match rid.parse::<u64>() {
                    Ok(rid) => {
                        if publish.payload.len() > methods::MAX_PAYLOAD_BYTES {
                            return Flow::Close("method response larger than 128 KB");
                        }
                        let response = wire::methods::parse_response(status, &publish.payload);
                        self.hub.complete_method(self.device_id(), rid, response);
                    }
                    Err(_) => tracing::debug!(
                        device_id = self.device_id(),
                        rid,
                        "method response with a foreign $rid dropped"
                    ),
                }
                None
            }
            Inbound::Telemetry { property_bag } => {
                if publish.payload.len() > telemetry::MAX_BODY_BYTES {
                    return Flow::Close("device-to-cloud message larger than 256 KB");
                }
                // Past the rate the hub slows the sender down rather than dropping its messages.
                self.hub.admit_wait(Operation::DeviceToCloud, 1.0).await;
                let (system_properties, mut properties) = iothub_proto::property_bag::decode(property_bag);
                if publish.retain {
                    properties.insert("mqtt-retain".into(), "true".into());
                }
                let (device_id, module_id) = registry::split_key(self.device_id());
                let recorded = self
                    .hub
                    .record_telemetry(TelemetryMessage {
                        device_id: device_id.to_owned(),
                        module_id: module_id.map(str::to_owned),
                        generation_id: String::new(),
                        enqueued_time: self.hub.clock().now(),
                        body: publish.payload.clone(),
                        system_properties,
                        properties,
                    })
                    .await;
                // Unsaved means unacknowledged: the device sends it again after reconnecting.
                if let Err(error) = recorded {
                    tracing::warn!(device_id = self.device_id(), %error, "telemetry not saved; closing the connection");
                    return Flow::Close("device-to-cloud message could not be saved");
                }
                None
            }
            Inbound::Unknown => {
                tracing::debug!(device_id = self.device_id(), topic = %publish.topic, "PUBLISH to a topic the hub does not offer");
                return Flow::Close("PUBLISH to a topic that is not offered or not the device's own");
            }
        };
        if publish.qos == QoS::AtLeastOnce {
            let telemetry = reply.is_none() && !publish.topic.starts_with("$iothub/");
            if telemetry && self.hub.telemetry_acks_withheld_until(self.device_id()).is_some() {
                // Kept, but not acknowledged until the fault ends.
                self.withheld_acks.push(publish.pkid);
            } else if let Flow::Close(why) = self.send(Packet::PubAck(PubAck::new(publish.pkid))).await {
                return Flow::Close(why);
            }
        }
        match reply {
            Some((topic, body)) if self.subscriptions.twin_responses => self.publish(topic, body).await,
            Some(_) => {
                tracing::debug!(
                    device_id = self.device_id(),
                    "twin response dropped: not subscribed to $iothub/twin/res/#"
                );
                Flow::Continue
            }
            None => Flow::Continue,
        }
    }

    /// The error a twin fault answers this device's twin requests with, if one is in force.
    fn twin_fault(&self) -> Result<(), HubError> {
        self.hub.twin_fault(self.device_id()).map_or(Ok(()), Err)
    }

    /// A twin error response: the status and the hub's JSON error object (the Node SDK needs `errorCode`).
    fn error_reply(&self, error: &HubError) -> (u16, String) {
        (error.wire().status, wire::errors::detail_text(error, self.hub.clock().now()))
    }

    async fn deliver(&mut self, message: ToDevice) -> Flow {
        match message {
            ToDevice::MethodRequest { rid, name, payload } if self.subscriptions.methods => {
                self.publish(topics::method_request(&name, &rid.to_string()), payload).await
            }
            ToDevice::DesiredChanged(notification) if self.subscriptions.desired => {
                let body = wire::twin::desired_notification(&notification);
                self.publish(topics::desired_patch(notification.version), body).await
            }
            ToDevice::Message(delivery) => self.deliver_message(*delivery).await,
            _ => Flow::Continue,
        }
    }

    /// Publishes a cloud-to-device message at QoS 1; its PUBACK completes it. A message for a device that no
    /// longer listens goes back to the queue.
    async fn deliver_message(&mut self, delivery: Delivery) -> Flow {
        if !self.subscriptions.cloud_to_device {
            if let Err(error) = self.hub.settle_message_now(self.device_id(), &delivery.token, Settlement::Abandon) {
                tracing::debug!(device_id = self.device_id(), %error, "a message not listened for was not given back");
            }
            return Flow::Continue;
        }
        let packet_id = loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
            if !self.in_flight.contains_key(&self.next_packet_id) {
                break self.next_packet_id;
            }
        };
        self.in_flight.insert(packet_id, delivery.token);
        let topic = wire::messages::mqtt_topic(self.device_id(), &delivery.message);
        let mut publish = Publish::from_bytes(topic, QoS::AtLeastOnce, Bytes::from(delivery.message.message.body));
        publish.pkid = packet_id;
        self.send(Packet::Publish(publish)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::AsyncWriteExt as _;

    fn encode(packet: Packet) -> Vec<u8> {
        let mut bytes = bytes::BytesMut::new();
        packet.write(&mut bytes, 1 << 20).expect("encode");
        bytes.to_vec()
    }

    /// A device that asks for its twin over and over but never reads an answer fills its socket; the session
    /// must give up on it after the write timeout instead of waiting forever.
    #[tokio::test(start_paused = true)]
    async fn a_device_that_stops_reading_is_disconnected() {
        let (hub, connect) = crate::fuzzing::hub_with_connected_device("reader");
        let (mut device, server) = tokio::io::duplex(4096);
        let peer = "127.0.0.1:1".parse().expect("addr");
        let session = tokio::spawn(serve_connection(server, hub, CancellationToken::new(), peer));
        let flood = tokio::spawn(async move {
            device.write_all(&connect).await.expect("connect");
            let subscribe = Subscribe::new("$iothub/twin/res/#", QoS::AtMostOnce);
            device.write_all(&encode(Packet::Subscribe(subscribe))).await.expect("subscribe");
            for rid in 0.. {
                let get = Publish::new(format!("$iothub/twin/GET/?$rid={rid}"), QoS::AtMostOnce, Vec::new());
                if device.write_all(&encode(Packet::Publish(get))).await.is_err() {
                    break;
                }
            }
            device
        });
        let ended = tokio::time::timeout(Duration::from_secs(limits::MQTT_WRITE_TIMEOUT_SECS * 3), session).await;
        assert!(ended.is_ok(), "the session still waits on a device that reads nothing");
        flood.abort();
    }

    #[test]
    fn keep_alive_is_one_and_a_half_times_capped() {
        assert_eq!(keep_alive_deadline(0), None);
        assert_eq!(keep_alive_deadline(60), Some(Duration::from_secs(90)));
        assert_eq!(keep_alive_deadline(u16::MAX), Some(Duration::from_secs(1767)));
    }
}
