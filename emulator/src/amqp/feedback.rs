//! `/messages/serviceBound/feedback`: delivery feedback for the service. Whenever records wait and the client has
//! credit, the waiting records go out as one message (a JSON array in a data section, content type
//! `application/vnd.microsoft.iothub.feedback.json`); the client's disposition settles it: accepted or rejected
//! forgets its records, released or modified gives them back for a later message.

use fe2o3_amqp::Sender;
use fe2o3_amqp::types::messaging::{Data, Message, MessageAnnotations, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, Timestamp as AmqpTimestamp};
use tokio_util::sync::CancellationToken;

use super::context::Connection;
use crate::domain::c2d::FeedbackBatch;
use crate::wire::messages::{FEEDBACK_CONTENT_TYPE, feedback_body};

fn message(batch: &FeedbackBatch, hub_name: &str, now: jiff::Timestamp) -> Message<Data> {
    Message::builder()
        .properties(
            Properties::builder()
                .message_id(batch.token.clone())
                .user_id(Binary::from(hub_name.as_bytes().to_vec()))
                .content_type(FEEDBACK_CONTENT_TYPE)
                .content_encoding("utf-8")
                .build(),
        )
        .message_annotations(
            MessageAnnotations::builder()
                .insert("iothub-enqueuedtime", AmqpTimestamp::from_milliseconds(now.as_millisecond()))
                .build(),
        )
        .data(Binary::from(feedback_body(batch)))
        .build()
}

/// Sends feedback until the link ends (`None`) or `stop` fires (the link, to detach).
pub(super) async fn serve(mut sender: Sender, connection: &Connection, stop: CancellationToken) -> Option<Sender> {
    let hub = &connection.hub;
    let hub_name = hub.event_hub_name().to_owned();
    loop {
        tokio::select! {
            () = stop.cancelled() => return Some(sender),
            _ = sender.on_detach() => return None,
            () = hub.feedback_waiting() => {}
        }
        let Some(batch) = hub.receive_feedback() else { continue };
        let sent = tokio::select! {
            () = stop.cancelled() => {
                let _ = hub.abandon_feedback(&batch.token);
                return Some(sender);
            }
            sent = Box::pin(sender.send(message(&batch, &hub_name, hub.clock().now()))) => sent,
        };
        match sent {
            Ok(Outcome::Accepted(_) | Outcome::Rejected(_)) => {
                if let Err(error) = hub.complete_feedback(&batch.token).await {
                    tracing::debug!(%error, "a feedback message was not completed");
                }
            }
            Ok(_) => {
                let _ = hub.abandon_feedback(&batch.token);
            }
            Err(error) => {
                tracing::debug!(?error, "a feedback message was not delivered");
                let _ = hub.abandon_feedback(&batch.token);
                return None;
            }
        }
    }
}
