//! An AMQP 1.0 test client (fe2o3-amqp's client over tokio-rustls), speaking to the emulator the way the service
//! SDKs do: optional SASL, `$cbs` put-token, a sender to `/messages/devicebound`, a receiver of feedback.

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{DetachError, LinkStateError, RecvError};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{self, ErrorCondition};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};

use super::mqtt::{WAIT, tls_to};
use super::{TestHub, unix_now};

/// An open AMQP connection with one session.
pub struct Amqp {
    pub connection: ConnectionHandle<()>,
    pub session: SessionHandle<()>,
}

/// Opens a connection to the AMQPS port (no SASL when `sasl` is `None`, as Node's rhea does) and a session.
pub async fn open(hub: &TestHub, sasl: Option<SaslProfile>) -> Amqp {
    try_open(hub, sasl).await.expect("AMQP open")
}

/// Like [`open`], but gives back why the hub refused the connection (a SASL outcome, say).
pub async fn try_open(hub: &TestHub, sasl: Option<SaslProfile>) -> Result<Amqp, String> {
    open_taking_frames_of(hub, sasl, None).await
}

/// Like [`try_open`], announcing `max_frame_size` (fe2o3's default, 256 KiB, when `None`) in the open.
pub async fn open_taking_frames_of(
    hub: &TestHub,
    sasl: Option<SaslProfile>,
    max_frame_size: Option<u32>,
) -> Result<Amqp, String> {
    let stream = tls_to(hub, hub.emulator.amqp_addr()).await;
    let mut builder = Connection::builder().container_id("test-client").hostname("localhost");
    if let Some(max_frame_size) = max_frame_size {
        builder = builder.max_frame_size(max_frame_size);
    }
    if let Some(profile) = sasl {
        builder = builder.sasl_profile(profile);
    }
    let mut connection = builder.open_with_stream(stream).await.map_err(|e| format!("{e:?}"))?;
    let session = Session::begin(&mut connection).await.expect("session");
    Ok(Amqp { connection, session })
}

impl Amqp {
    /// Puts `token` for `audience` on `$cbs` and returns the reply's `status-code`.
    pub async fn put_token(&mut self, token: &str, audience: &str) -> i32 {
        self.put_token_of_type(token, audience, "servicebus.windows.net:sastoken").await
    }

    /// [`Amqp::put_token`] with the token type given (.NET's device client says `azure-devices.net:sastoken`).
    pub async fn put_token_of_type(&mut self, token: &str, audience: &str, token_type: &str) -> i32 {
        let mut requests = Sender::attach(&mut self.session, "cbs-sender", "$cbs").await.expect("cbs sender");
        let mut replies = Receiver::attach(&mut self.session, "cbs-receiver", "$cbs").await.expect("cbs receiver");
        let request = Message::builder()
            .properties(Properties::builder().message_id(7u64).reply_to("cbs").build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", "put-token")
                    .insert("type", token_type)
                    .insert("name", audience)
                    .build(),
            )
            .body(Body::Value(AmqpValue(Value::String(token.to_owned()))))
            .build();
        requests.send(request).await.expect("put-token sent");
        let reply =
            tokio::time::timeout(WAIT, replies.recv::<Body<Value>>()).await.expect("reply in time").expect("reply");
        replies.accept(&reply).await.expect("accept");
        let message = reply.message();
        let correlation = message.properties.as_ref().and_then(|p| p.correlation_id.clone());
        assert_eq!(correlation, Some(MessageId::Ulong(7)), "the reply correlates with the request's id, same type");
        let status = message.application_properties.as_ref().and_then(|p| p.get("status-code").cloned());
        let _ = requests.close().await;
        let _ = replies.close().await;
        match status {
            Some(SimpleValue::Int(code)) => code,
            other => panic!("status-code must be an int, got {other:?}"),
        }
    }

    /// Puts the owner's token for the whole hub.
    pub async fn authorize(&mut self, hub: &TestHub) {
        assert_eq!(self.put_token(&hub.owner_token(), "localhost").await, 200);
    }

    /// A sender to `/messages/devicebound`.
    pub async fn devicebound(&mut self) -> Sender {
        Sender::attach(&mut self.session, "c2d-sender", "/messages/devicebound").await.expect("devicebound sender")
    }

    /// A receiver of feedback.
    pub async fn feedback(&mut self) -> Receiver {
        Receiver::attach(&mut self.session, "feedback-receiver", "/messages/serviceBound/feedback")
            .await
            .expect("feedback receiver")
    }

    /// A sender to `address` (the hub accepts every attach, then detaches the links it refuses).
    pub async fn sender_to(&mut self, name: &str, address: &str) -> Sender {
        Sender::attach(&mut self.session, name, address).await.expect("sender attach")
    }

    /// A receiver from `address`.
    pub async fn receiver_from(&mut self, name: &str, address: &str) -> Receiver {
        Receiver::attach(&mut self.session, name, address).await.expect("receiver attach")
    }

    pub async fn close(mut self) {
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

/// A message for `device_id` with `body`, the way the Node SDK builds one.
pub fn message_to(device_id: &str, body: &[u8]) -> fe2o3_amqp::types::messaging::message::Builder<Data> {
    Message::builder()
        .properties(Properties::builder().to(format!("/devices/{device_id}/messages/devicebound")).build())
        .data(Binary::from(body.to_vec()))
}

/// Sends and returns the hub's disposition.
pub async fn send(sender: &mut Sender, message: Message<Data>) -> Outcome {
    tokio::time::timeout(WAIT, sender.send(message)).await.expect("disposition in time").expect("send")
}

/// The condition of a rejected outcome.
pub fn rejected_with(outcome: &Outcome) -> Option<ErrorCondition> {
    match outcome {
        Outcome::Rejected(rejected) => rejected.error.as_ref().map(|e: &definitions::Error| e.condition.clone()),
        _ => None,
    }
}

/// A token of `policy` for `resource`, expiring `secs` from now.
pub fn token_for(hub: &TestHub, policy: &str, resource: &str, secs: u64) -> String {
    let key = &hub.emulator.hub().policies().get(policy).expect("policy").primary_key;
    iothub_proto::generate_token(resource, key, Some(policy), unix_now() + secs).expect("token")
}

/// The condition the hub detaches `sender` with, once it does (`None`: detached without one).
pub async fn sender_refusal(sender: &mut Sender) -> Option<ErrorCondition> {
    match tokio::time::timeout(WAIT, sender.on_detach()).await.expect("the hub detaches the link in time") {
        DetachError::RemoteClosedWithError(error) | DetachError::RemoteDetachedWithError(error) => {
            Some(error.condition)
        }
        _ => None,
    }
}

/// The condition the hub detaches `receiver` with, once it does (`None`: it delivered a message or detached
/// without one).
pub async fn receiver_refusal(receiver: &mut Receiver) -> Option<ErrorCondition> {
    match tokio::time::timeout(WAIT, receiver.recv::<Body<Value>>()).await.expect("the hub detaches the link in time") {
        Err(RecvError::LinkStateError(
            LinkStateError::RemoteClosedWithError(error) | LinkStateError::RemoteDetachedWithError(error),
        )) => Some(error.condition),
        _ => None,
    }
}
