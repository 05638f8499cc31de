//! Request/response nodes (`$cbs`, `$management`): requests arrive on the client's sender (target the node),
//! replies go out on the client's receiver (source the node) carrying the request's `message-id` as
//! `correlation-id`, of the same AMQP type (uamqp sends a ulong and matches on it), with `status-code` (int) and
//! `status-description` application properties.

use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use fe2o3_amqp::{Receiver, Sender};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::{Connection, Reply, ReplyRouter};
use super::links::{Next, next_delivery};

/// What a node answers to one request.
pub(super) struct Answer {
    pub status: i32,
    pub description: String,
    pub body: Body<Value>,
}

impl Answer {
    /// An answer without a body.
    pub fn status(status: i32, description: impl Into<String>) -> Self {
        Self { status, description: description.into(), body: Body::Empty }
    }
}

/// A text application property (string or symbol).
pub(super) fn text_property<'a>(message: &'a Message<Body<Value>>, key: &str) -> Option<&'a str> {
    match message.application_properties.as_ref()?.get(key)? {
        SimpleValue::String(s) => Some(s.as_str()),
        SimpleValue::Symbol(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Serves requests until the link ends (`None`) or `stop` fires (the link, to detach). `answer` decides each
/// reply; `router` finds the link it goes out on.
pub(super) async fn serve_requests(
    mut receiver: Receiver,
    connection: &Connection,
    router: &ReplyRouter,
    stop: CancellationToken,
    answer: impl Fn(&Connection, &Message<Body<Value>>) -> Answer,
    hold_refused_identities: bool,
) -> Option<Receiver> {
    loop {
        let delivery = match next_delivery(&mut receiver, &stop).await {
            Next::Delivery(delivery) => delivery,
            Next::Stopped => return Some(receiver),
            Next::Ended => return None,
        };
        let request = delivery.message();
        if hold_refused_identities {
            tokio::select! {
                () = stop.cancelled() => return Some(receiver),
                () = super::cbs::hold_while_refused(connection, request) => {}
            }
        }
        let properties = request.properties.as_ref();
        let message_id = properties.and_then(|p| p.message_id.clone());
        let reply_to = properties.and_then(|p| p.reply_to.clone());
        let Answer { status, description, body } = answer(connection, request);
        // The request is settled before the reply goes out: uamqp waits for that order.
        if Box::pin(receiver.accept(&*delivery)).await.is_err() {
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
            .body(body)
            .build();
        match router.route(reply_to.as_deref()).await {
            Some(link) => {
                let _ = link.send(Box::new(reply)).await;
            }
            None => tracing::debug!(peer = %connection.peer, "a reply had no link to go out on"),
        }
    }
}

/// Sends replies on the client's receiver until it detaches (`None`) or `stop` fires (the link).
pub(super) async fn serve_replies(
    mut sender: Sender,
    address: Option<String>,
    router: &ReplyRouter,
    stop: CancellationToken,
) -> Option<Sender> {
    let (replies, mut queued) = mpsc::channel::<Reply>(16);
    let id = router.register(sender.name().to_owned(), address, replies);
    let attached = loop {
        tokio::select! {
            () = stop.cancelled() => break true,
            _ = sender.on_detach() => break false,
            Some(reply) = queued.recv() => {
                // The client's disposition may never come (fe2o3 does not end the wait when the connection does).
                // Batchable: it makes fe2o3 write every transfer field, which pyamqp reads by index.
                let sent = tokio::select! {
                    () = stop.cancelled() => break true,
                    sent = async {
                        match Box::pin(sender.send_batchable(*reply)).await {
                            Ok(outcome) => outcome.await.map(|_| ()),
                            Err(error) => Err(error),
                        }
                    } => sent,
                };
                if sent.is_err() {
                    break false;
                }
            }
        }
    };
    router.unregister(id);
    attached.then_some(sender)
}
