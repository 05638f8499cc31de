//! The background task behind a `DeviceClient`: it owns the MQTT connection, and keeps it up.
//!
//! Written on rumqttc's packet codec rather than on rumqttc's client. rumqttc's client does not tell when a
//! given publish was acknowledged. It also needs its internals to reconnect with a renewed SAS token, and it
//! drops unacknowledged publishes when the hub has no session. What a device client must guarantee is easier to
//! get right on the packets directly:
//! - A QoS 1 publish (telemetry) completes only on its PUBACK, and is sent again after any reconnect until then.
//! - Twin requests are matched to answers by `$rid` and asked again after a reconnect.
//! - A cloud-to-device message is acknowledged only when the application takes it (`crate::c2d`), and only
//!   on the connection it came on.
//! - The token is renewed by reconnecting with a fresh one, before the hub's deadline.
//! - Transient failures are retried with back-off and jitter.
//! - Permanent ones (credentials, trust) end the client with a typed error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use iothub_proto::topics::{self, Outbound};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, Subscribe, SubscribeReasonCode};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::c2d::{self, CloudToDeviceMessage};
use crate::error::Error;
use crate::link::{self, Endpoint, Link, Mqtt, SUBSCRIBE_PKID};
use crate::methods::{MethodRequest, MethodResponse, parse_payload};
use crate::options::ClientOptions;
use crate::shared::{ConnectionStatus, Shared};
use crate::twin::{DesiredUpdate, Twin, error_message};

/// Publishes waiting for their PUBACK at once; more wait in the command queue.
const MAX_INFLIGHT: usize = 256;

/// A twin request the client makes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TwinRequest {
    Get,
    PatchReported(Vec<u8>),
}

/// The answer to a twin request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TwinAnswer {
    Twin(Twin),
    /// The reported properties' new `$version`.
    Version(u64),
}

/// What the client handle asks of the driver.
pub(crate) enum Command {
    /// A QoS 1 publish, done when the hub acknowledged it.
    Publish {
        topic: String,
        payload: Vec<u8>,
        done: oneshot::Sender<Result<(), Error>>,
    },
    Twin {
        request: TwinRequest,
        done: oneshot::Sender<Result<TwinAnswer, Error>>,
    },
}

struct Inflight {
    pkid: u16,
    topic: String,
    payload: Bytes,
    done: oneshot::Sender<Result<(), Error>>,
}

struct PendingTwin {
    request: TwinRequest,
    /// `None` for the client's own re-sync after a reconnect.
    done: Option<oneshot::Sender<Result<TwinAnswer, Error>>>,
}

/// Why a connection ended.
enum End {
    Closed,
    Renew,
    Lost(Error),
}

pub(crate) struct Driver {
    endpoint: Endpoint,
    options: ClientOptions,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    answers_tx: mpsc::UnboundedSender<(String, MethodResponse)>,
    answers: mpsc::UnboundedReceiver<(String, MethodResponse)>,
    inflight: Vec<Inflight>,
    twin_pending: HashMap<String, PendingTwin>,
    next_pkid: u16,
    next_rid: u64,
    last_sent: Instant,
    last_heard: Instant,
    /// The number of the current connection (cloud-to-device acknowledgements belong to one).
    epoch: u64,
    /// The current connection subscribed to cloud-to-device messages.
    c2d_subscribed: bool,
}

impl Driver {
    pub(crate) fn new(
        endpoint: Endpoint,
        options: ClientOptions,
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        let (answers_tx, answers) = mpsc::unbounded_channel();
        Self {
            endpoint,
            options,
            shared,
            commands,
            answers_tx,
            answers,
            inflight: Vec::new(),
            twin_pending: HashMap::new(),
            next_pkid: SUBSCRIBE_PKID,
            next_rid: 0,
            last_sent: Instant::now(),
            last_heard: Instant::now(),
            epoch: 0,
            c2d_subscribed: false,
        }
    }

    /// Serves `first`, then reconnects whenever the connection ends, until the client closes or fails.
    pub(crate) async fn run(mut self, first: Link) {
        let mut connection = Some(first);
        let mut reconnected = false;
        let mut attempt: u32 = 0;
        let mut last_error = Error::Closed;
        loop {
            let link = match connection.take() {
                Some(link) => link,
                None => {
                    if attempt > 0 {
                        if !self.options.retry.allows(attempt) {
                            let error =
                                Error::Connection(format!("gave up after {} attempts: {last_error}", attempt - 1));
                            return self.stop(ConnectionStatus::Failed(error));
                        }
                        let delay = self.options.retry.delay(attempt);
                        self.set_status(ConnectionStatus::Disconnected { reason: last_error.clone(), retry_in: delay });
                        tokio::select! {
                            () = self.shared.closing.cancelled() => return self.stop(ConnectionStatus::Closed),
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                    let opened = tokio::select! {
                        () = self.shared.closing.cancelled() => return self.stop(ConnectionStatus::Closed),
                        opened = link::open(&self.endpoint, self.shared.c2d.wanted()) => opened,
                    };
                    match opened {
                        Ok(link) => link,
                        Err(error) if error.is_permanent() => {
                            tracing::warn!(device_id = %self.endpoint.device_id, %error, "giving up");
                            return self.stop(ConnectionStatus::Failed(error));
                        }
                        Err(error) => {
                            tracing::debug!(device_id = %self.endpoint.device_id, %error, attempt, "reconnect failed");
                            attempt += 1;
                            last_error = error;
                            continue;
                        }
                    }
                }
            };
            attempt = 0;
            self.set_status(ConnectionStatus::Connected);
            let end = self.serve(link, reconnected).await;
            self.shared.c2d.connection_ended();
            match end {
                End::Closed => return self.stop(ConnectionStatus::Closed),
                End::Renew => tracing::debug!(device_id = %self.endpoint.device_id, "renewing the SAS token"),
                End::Lost(error) => {
                    tracing::info!(device_id = %self.endpoint.device_id, %error, "connection lost; reconnecting");
                    attempt = 1;
                    last_error = error;
                }
            }
            reconnected = true;
        }
    }

    fn set_status(&self, status: ConnectionStatus) {
        self.shared.status.send_replace(status);
    }

    /// Ends the driver: every waiting call gets the final error.
    fn stop(mut self, status: ConnectionStatus) {
        let error = match &status {
            ConnectionStatus::Failed(error) => error.clone(),
            _ => Error::Closed,
        };
        self.set_status(status);
        self.commands.close();
        for inflight in self.inflight.drain(..) {
            let _ = inflight.done.send(Err(error.clone()));
        }
        for (_, pending) in self.twin_pending.drain() {
            if let Some(done) = pending.done {
                let _ = done.send(Err(error.clone()));
            }
        }
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Publish { done, .. } => drop(done.send(Err(error.clone()))),
                Command::Twin { done, .. } => drop(done.send(Err(error.clone()))),
            }
        }
        self.shared.desired.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.shared.c2d.close();
    }

    async fn send(&mut self, mqtt: &mut Mqtt, packet: Packet) -> Result<(), Error> {
        self.last_sent = Instant::now();
        mqtt.send(packet).await.map_err(|e| Error::Connection(format!("writing to the hub: {e}")))
    }

    fn publish_packet(topic: &str, payload: Bytes, qos: QoS, pkid: u16, dup: bool) -> Packet {
        let mut publish = Publish::from_bytes(topic, qos, payload);
        publish.pkid = pkid;
        publish.dup = dup;
        Packet::Publish(publish)
    }

    fn twin_topic(rid: &str, request: &TwinRequest) -> (String, Bytes) {
        match request {
            TwinRequest::Get => (topics::twin_get(rid), Bytes::new()),
            TwinRequest::PatchReported(body) => (topics::reported_patch(rid), Bytes::from(body.clone())),
        }
    }

    async fn send_twin_request(&mut self, mqtt: &mut Mqtt, rid: &str, request: &TwinRequest) -> Result<(), Error> {
        let (topic, payload) = Self::twin_topic(rid, request);
        self.send(mqtt, Self::publish_packet(&topic, payload, QoS::AtMostOnce, 0, false)).await
    }

    fn take_rid(&mut self) -> String {
        self.next_rid += 1;
        self.next_rid.to_string()
    }

    /// The next free packet id (1 is the SUBSCRIBE's).
    fn take_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = if self.next_pkid == u16::MAX { SUBSCRIBE_PKID + 1 } else { self.next_pkid + 1 };
            if !self.inflight.iter().any(|f| f.pkid == self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, link: Link, reconnected: bool) -> End {
        let renew = tokio::time::sleep(link.renew_in(self.options.token_lifetime));
        self.epoch += 1;
        self.c2d_subscribed = link.c2d_subscribed;
        let mut mqtt = link.mqtt;
        let started = async {
            self.resume(&mut mqtt, reconnected).await?;
            for publish in link.early {
                self.on_packet(&mut mqtt, Packet::Publish(publish)).await?;
            }
            self.c2d_work(&mut mqtt).await
        };
        if let Err(error) = started.await {
            return End::Lost(error);
        }
        tokio::pin!(renew);
        let keep_alive = self.endpoint.keep_alive.max(Duration::from_secs(1));
        let mut tick = tokio::time::interval((keep_alive / 4).max(Duration::from_millis(250)));
        self.last_heard = Instant::now();
        loop {
            let result = tokio::select! {
                biased;
                () = self.shared.closing.cancelled() => {
                    let _ = self.send(&mut mqtt, Packet::Disconnect).await;
                    return End::Closed;
                }
                () = &mut renew => {
                    let _ = self.send(&mut mqtt, Packet::Disconnect).await;
                    return End::Renew;
                }
                packet = mqtt.next() => match packet {
                    Some(Ok(packet)) => {
                        self.last_heard = Instant::now();
                        self.on_packet(&mut mqtt, packet).await
                    }
                    Some(Err(error)) => Err(Error::Connection(format!("reading from the hub: {error}"))),
                    None => Err(Error::Connection("the hub closed the connection".into())),
                },
                () = self.shared.c2d.driver_work() => self.c2d_work(&mut mqtt).await,
                Some((rid, response)) = self.answers.recv() => {
                    let packet = Self::publish_packet(&topics::method_response(response.status, &rid), Bytes::from(response.body()), QoS::AtMostOnce, 0, false);
                    self.send(&mut mqtt, packet).await
                }
                command = self.commands.recv(), if self.inflight.len() < MAX_INFLIGHT => match command {
                    Some(command) => self.on_command(&mut mqtt, command).await,
                    None => {
                        let _ = self.send(&mut mqtt, Packet::Disconnect).await;
                        return End::Closed;
                    }
                },
                _ = tick.tick() => {
                    if self.last_heard.elapsed() > keep_alive + keep_alive / 2 {
                        Err(Error::Connection(format!("the hub sent nothing for {keep_alive:?}")))
                    } else if self.last_sent.elapsed() >= keep_alive / 2 {
                        self.send(&mut mqtt, Packet::PingReq).await
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(error) = result {
                return End::Lost(error);
            }
        }
    }

    /// On a new connection: sends again what was not acknowledged or answered, and after a reconnect reads
    /// the twin again so no desired change made meanwhile is missed.
    async fn resume(&mut self, mqtt: &mut Mqtt, reconnected: bool) -> Result<(), Error> {
        let unacknowledged: Vec<(u16, String, Bytes)> =
            self.inflight.iter().map(|f| (f.pkid, f.topic.clone(), f.payload.clone())).collect();
        for (pkid, topic, payload) in unacknowledged {
            self.send(mqtt, Self::publish_packet(&topic, payload, QoS::AtLeastOnce, pkid, true)).await?;
        }
        self.twin_pending.retain(|_, p| p.done.as_ref().is_none_or(|done| !done.is_closed()));
        let unanswered: Vec<(String, TwinRequest)> =
            self.twin_pending.iter().map(|(rid, p)| (rid.clone(), p.request.clone())).collect();
        for (rid, request) in unanswered {
            self.send_twin_request(mqtt, &rid, &request).await?;
        }
        let listening = {
            let mut subscribers = self.shared.desired.lock().unwrap_or_else(|p| p.into_inner());
            subscribers.retain(|s| !s.is_closed());
            !subscribers.is_empty()
        };
        if reconnected && listening {
            let rid = self.take_rid();
            self.twin_pending.insert(rid.clone(), PendingTwin { request: TwinRequest::Get, done: None });
            self.send_twin_request(mqtt, &rid, &TwinRequest::Get).await?;
        }
        Ok(())
    }

    async fn on_command(&mut self, mqtt: &mut Mqtt, command: Command) -> Result<(), Error> {
        match command {
            Command::Publish { topic, payload, done } => {
                let pkid = self.take_pkid();
                let payload = Bytes::from(payload);
                let packet = Self::publish_packet(&topic, payload.clone(), QoS::AtLeastOnce, pkid, false);
                // Kept before it is written, so a write that fails is sent again on the next connection.
                self.inflight.push(Inflight { pkid, topic, payload, done });
                self.send(mqtt, packet).await
            }
            Command::Twin { request, done } => {
                // Requests whose callers stopped waiting are forgotten.
                self.twin_pending.retain(|_, p| p.done.as_ref().is_none_or(|done| !done.is_closed()));
                let rid = self.take_rid();
                self.twin_pending.insert(rid.clone(), PendingTwin { request: request.clone(), done: Some(done) });
                self.send_twin_request(mqtt, &rid, &request).await
            }
        }
    }

    async fn on_packet(&mut self, mqtt: &mut Mqtt, packet: Packet) -> Result<(), Error> {
        match packet {
            Packet::Publish(publish) => {
                if let Some(bag) = c2d::own_property_bag(&publish.topic, &self.endpoint.device_id) {
                    // Held unacknowledged: the PUBACK goes out when the application takes the message.
                    let pkid = (publish.qos != QoS::AtMostOnce).then_some(publish.pkid);
                    self.shared.c2d.hold(self.epoch, pkid, CloudToDeviceMessage::parse(bag, &publish.payload));
                    return Ok(());
                }
                if publish.qos != QoS::AtMostOnce {
                    self.send(mqtt, Packet::PubAck(PubAck::new(publish.pkid))).await?;
                }
                self.on_publish(&publish);
            }
            Packet::PubAck(ack) => {
                if let Some(at) = self.inflight.iter().position(|f| f.pkid == ack.pkid) {
                    let _ = self.inflight.remove(at).done.send(Ok(()));
                }
            }
            Packet::SubAck(ack) if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) => {
                tracing::warn!(device_id = %self.endpoint.device_id, "the hub refused the cloud-to-device subscription");
            }
            _ => {}
        }
        Ok(())
    }

    /// Subscribes to cloud-to-device messages once the application listens, and acknowledges the messages it
    /// took that came on this connection.
    async fn c2d_work(&mut self, mqtt: &mut Mqtt) -> Result<(), Error> {
        if !self.c2d_subscribed
            && self.shared.c2d.wanted()
            && let Some(filter) = self.endpoint.cloud_to_device_filter()
        {
            self.c2d_subscribed = true;
            let mut subscribe = Subscribe::new(filter, QoS::AtLeastOnce);
            subscribe.pkid = SUBSCRIBE_PKID;
            self.send(mqtt, Packet::Subscribe(subscribe)).await?;
        }
        for pkid in self.shared.c2d.take_acks(self.epoch) {
            self.send(mqtt, Packet::PubAck(PubAck::new(pkid))).await?;
        }
        Ok(())
    }

    fn on_publish(&mut self, publish: &Publish) {
        match topics::parse_hub_publish(&publish.topic) {
            Outbound::MethodRequest { name, rid } => self.on_method(name, rid, &publish.payload),
            Outbound::TwinResponse { status, rid, version } => {
                let Some(pending) = self.twin_pending.remove(&rid) else { return };
                let answer = match (status, &pending.request) {
                    (200, TwinRequest::Get) => Twin::from_response(&publish.payload).map(TwinAnswer::Twin),
                    (200..=299, TwinRequest::PatchReported(_)) => Ok(TwinAnswer::Version(version.unwrap_or(0))),
                    (status, _) => Err(Error::Twin { status, message: error_message(&publish.payload) }),
                };
                match (pending.done, answer) {
                    (Some(done), answer) => drop(done.send(answer)),
                    (None, Ok(TwinAnswer::Twin(twin))) => {
                        self.broadcast(DesiredUpdate::Full { version: twin.desired_version, desired: twin.desired });
                    }
                    (None, other) => tracing::warn!(?other, "re-reading the twin after a reconnect failed"),
                }
            }
            Outbound::DesiredPatch { version } => match DesiredUpdate::from_patch(&publish.payload, version) {
                Some(update) => self.broadcast(update),
                None => tracing::warn!(topic = %publish.topic, "a desired-properties patch that is not a JSON object"),
            },
            // Another device's messages (a hub never sends them) are acknowledged and dropped like any other.
            Outbound::CloudToDevice { .. } | Outbound::Other => {
                tracing::debug!(topic = %publish.topic, "message on a topic the client does not use")
            }
        }
    }

    fn broadcast(&self, update: DesiredUpdate) {
        let mut subscribers = self.shared.desired.lock().unwrap_or_else(|p| p.into_inner());
        subscribers.retain(|s| s.send(update.clone()).is_ok());
    }

    /// Runs the handler registered for `name` (or answers 501) in its own task; a handler that panics is answered
    /// 500. The answer goes out on whatever connection is up when it is ready.
    fn on_method(&self, name: String, rid: String, body: &[u8]) {
        let handler = self.shared.handler(&name);
        let answers = self.answers_tx.clone();
        let request = MethodRequest { name: name.clone(), payload: parse_payload(body) };
        tokio::spawn(async move {
            let response = match handler {
                None => MethodResponse::not_implemented(&name),
                Some(handler) => match tokio::spawn(handler(request)).await {
                    Ok(response) => response,
                    Err(_) => MethodResponse::handler_failed(&name),
                },
            };
            let _ = answers.send((rid, response));
        });
    }
}
