//! Claims-based security: a SAS token put on `$cbs` for the hub authorizes the connection's links. The request
//! is a message with `operation`, `type` and `name` (the audience) application properties and the token as its
//! value; the reply correlates with the request's id and carries `status-code` and `status-description`.

use fe2o3_amqp::link::RecvError;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{AmqpValue, ApplicationProperties, Body, Message, MessageId, Outcome, Properties};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use fe2o3_amqp::{Receiver, Sender};

use super::failure::{link_error, send_cause, state_cause, unauthorized};
use crate::error::Error;

/// The `$cbs` node.
const CBS_ADDRESS: &str = "$cbs";
/// Where the hub sends replies: the target address of the reply link.
const REPLY_TO: &str = "cbs";
/// The token type IoT Hub takes.
const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

/// The two links of `$cbs`: requests out, replies in.
pub(crate) struct Cbs {
    requests: Sender,
    replies: Receiver,
    next_id: u64,
}

impl Cbs {
    /// Attaches both links on `session`; `suffix` makes the link names unique.
    pub(crate) async fn attach(session: &mut SessionHandle<()>, suffix: &str) -> Result<Self, Error> {
        let requests = Sender::attach(session, format!("cbs-sender-{suffix}"), CBS_ADDRESS)
            .await
            .map_err(|e| Error::Transport(format!("cannot attach to $cbs: {e}")))?;
        let replies = Receiver::builder()
            .name(format!("cbs-receiver-{suffix}"))
            .source(CBS_ADDRESS)
            .target(REPLY_TO)
            .attach(session)
            .await
            .map_err(|e| Error::Transport(format!("cannot attach to $cbs: {e}")))?;
        Ok(Self { requests, replies, next_id: 0 })
    }

    /// Puts `token` for `audience` and waits for the hub's verdict: 200 is `Ok`, 401 the hub's unauthorized
    /// error, anything else an [`Error::Hub`] with that status.
    pub(crate) async fn put_token(&mut self, audience: &str, token: String) -> Result<(), Error> {
        self.next_id += 1;
        let id = self.next_id;
        let request = Message::builder()
            .properties(Properties::builder().message_id(id).reply_to(REPLY_TO).build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", "put-token")
                    .insert("type", SAS_TOKEN_TYPE)
                    .insert("name", audience)
                    .build(),
            )
            .body(Body::Value(AmqpValue(Value::String(token))))
            .build();
        match self.requests.send(request).await {
            Ok(Outcome::Accepted(_)) => {}
            Ok(other) => return Err(Error::Transport(format!("the hub did not take the put-token: {other:?}"))),
            Err(error) => return Err(link_error("put-token", &error.to_string(), send_cause(&error))),
        }
        loop {
            let reply = self.replies.recv::<Body<Value>>().await.map_err(|e| {
                let cause = match &e {
                    RecvError::LinkStateError(state) => state_cause(state),
                    _ => None,
                };
                link_error("put-token reply", &e.to_string(), cause)
            })?;
            // Settling is a courtesy: the verdict is in the message either way.
            let _ = self.replies.accept(&reply).await;
            let message = reply.message();
            let correlation = message.properties.as_ref().and_then(|p| p.correlation_id.as_ref());
            if correlation != Some(&MessageId::Ulong(id)) {
                tracing::debug!(?correlation, expected = id, "a $cbs reply for an earlier request");
                continue;
            }
            let property = |key: &str| message.application_properties.as_ref().and_then(|p| p.get(key));
            let description = match property("status-description") {
                Some(SimpleValue::String(text)) => text.clone(),
                _ => String::new(),
            };
            return match property("status-code").and_then(status_code) {
                Some(200..=299) => Ok(()),
                Some(401) => Err(unauthorized(if description.is_empty() {
                    "The hub refused the token".to_owned()
                } else {
                    description
                })),
                Some(status) => Err(Error::Hub {
                    status: u16::try_from(status).unwrap_or(500),
                    code: format!("Http{status}"),
                    message: description,
                    number: None,
                }),
                None => Err(Error::Decode("the $cbs reply has no status-code".into())),
            };
        }
    }

    /// Detaches both links.
    pub(crate) async fn close(self) {
        let _ = self.requests.close().await;
        let _ = self.replies.close().await;
    }
}

/// A `status-code` of any integer type.
fn status_code(value: &SimpleValue) -> Option<i64> {
    match value {
        SimpleValue::Int(n) => Some(i64::from(*n)),
        SimpleValue::Long(n) => Some(*n),
        SimpleValue::Uint(n) => Some(i64::from(*n)),
        SimpleValue::Short(n) => Some(i64::from(*n)),
        SimpleValue::Ushort(n) => Some(i64::from(*n)),
        SimpleValue::Ulong(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}
