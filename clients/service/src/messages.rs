//! Cloud-to-device messages: sending over AMQP (`/messages/devicebound`), reading delivery feedback over HTTPS
//! (`GET /messages/serviceBound/feedback`, completed with `DELETE .../{lockToken}` or given back with
//! `POST .../{lockToken}/abandon`) and purging a device's queue (`DELETE /devices/{id}/commands`).

use iothub_proto::messages::{FEEDBACK_ADDRESS, FeedbackRecord, PurgeMessageQueueResult};
use reqwest::{Method, StatusCode};

use crate::client::{Call, Safety, ServiceClient, segment};
use crate::error::Error;
use crate::message::CloudToDeviceMessage;

/// One feedback message: the outcomes of messages whose senders asked for them, locked for this reader until it
/// completes or abandons it (or the lock runs out and the records wait again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackBatch {
    /// What completes or abandons this batch (the answer's `ETag`, without its quotes).
    pub lock_token: String,
    /// The outcomes, oldest first.
    pub records: Vec<FeedbackRecord>,
}

/// Cloud-to-device messages, their feedback and the devices' queues.
#[derive(Clone)]
pub struct MessageClient {
    client: ServiceClient,
}

fn feedback_path(lock_token: &str) -> String {
    format!("{FEEDBACK_ADDRESS}/{}", segment(lock_token.trim().trim_matches('"')))
}

impl MessageClient {
    pub(crate) fn new(client: ServiceClient) -> Self {
        Self { client }
    }

    /// Queues `message` for `device_id` and returns once the hub has it. The hub refuses with [`Error::Hub`]:
    /// `DeviceNotFound` (404) for an unknown device, `DeviceMaximumQueueDepthExceeded` (403) when 50 messages
    /// already wait, `MessageTooLarge` (413) for a body over 64 KiB, `IotHubUnauthorizedAccess` (401) for a
    /// policy without ServiceConnect.
    ///
    /// The first send opens the AMQP connection, which later sends reuse; one found broken is replaced once.
    pub async fn send(&self, device_id: &str, message: &CloudToDeviceMessage) -> Result<(), Error> {
        if device_id.is_empty() {
            return Err(Error::Config("the device id is empty".into()));
        }
        self.client.amqp().send(message.to_amqp(device_id)).await
    }

    /// The next feedback message, locked for a minute; `None` when no feedback waits.
    pub async fn receive_feedback(&self) -> Result<Option<FeedbackBatch>, Error> {
        let answer = self.client.send(Call::new(Method::GET, FEEDBACK_ADDRESS.into(), Safety::Idempotent)).await?;
        if answer.status == StatusCode::NO_CONTENT || answer.body.is_empty() {
            return Ok(None);
        }
        let lock_token = answer
            .header("etag")
            .map(|etag| etag.trim().trim_matches('"').to_owned())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| Error::Decode("the feedback message has no ETag (its lock token)".into()))?;
        Ok(Some(FeedbackBatch { lock_token, records: answer.json()? }))
    }

    /// Completes a feedback message: its records are gone for good. A lock that ran out is `MessageLockLost`
    /// (412).
    pub async fn complete_feedback(&self, lock_token: &str) -> Result<(), Error> {
        self.client.send(Call::new(Method::DELETE, feedback_path(lock_token), Safety::Once)).await.map(drop)
    }

    /// Gives a feedback message back: its records wait for the next reader.
    pub async fn abandon_feedback(&self, lock_token: &str) -> Result<(), Error> {
        let path = format!("{}/abandon", feedback_path(lock_token));
        self.client.send(Call::new(Method::POST, path, Safety::Once)).await.map(drop)
    }

    /// Removes every message waiting for `device_id` and says how many; senders that asked for negative
    /// feedback are told (`Purged`).
    pub async fn purge(&self, device_id: &str) -> Result<PurgeMessageQueueResult, Error> {
        let path = format!("/devices/{}/commands", segment(device_id));
        self.client.send(Call::new(Method::DELETE, path, Safety::Once)).await?.json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_tokens_lose_their_quotes_and_are_encoded() {
        assert_eq!(feedback_path("\"a1-b2\""), "/messages/serviceBound/feedback/a1-b2");
        assert_eq!(feedback_path("x/y"), "/messages/serviceBound/feedback/x%2Fy");
    }
}
