//! Cloud-to-device messages in the hub: the service sends, the queue keeps them durably, a connected device gets
//! them pushed (MQTT) or pulls them (HTTPS), settles them, and every outcome its sender asked about becomes
//! feedback the service reads. Expiries and locks run out on the hub's clock.
//!
//! Locks are not stored: after a restart every message waits again (at least once, as the hub promises).

use std::sync::Arc;

use jiff::Timestamp;

use super::presence::ToDevice;
use super::{Hub, State};
use crate::domain::c2d::{
    C2dError, DeviceQueue, DeviceRef, Ended, FeedbackBatch, FeedbackQueue, Message, Queued, Settlement,
};
use crate::domain::registry::Device;
use crate::error::HubError;
use crate::store::{Pending, Write};

/// How often expiries and lock timeouts are looked for.
pub(super) const SWEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// A message handed to a device: the lock token that settles it, and the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub token: String,
    pub message: Queued,
}

/// The cloud-to-device side of the hub state.
#[derive(Debug, Default)]
pub(super) struct Messages {
    pub(super) queues: std::collections::HashMap<String, DeviceQueue>,
    pub(super) feedback: FeedbackQueue,
    /// The next number for a message or feedback record (one counter: numbers never repeat).
    pub(super) next_sequence: u64,
}

impl Messages {
    /// Drops every queue and feedback record (a reset); numbers go on from where they were.
    pub(super) fn clear(&mut self) {
        self.queues.clear();
        self.feedback = FeedbackQueue::from_records(Vec::new());
    }

    pub(super) fn new(messages: Vec<(String, Queued)>, feedback: Vec<crate::domain::c2d::FeedbackRecord>) -> Self {
        let next_sequence =
            messages.iter().map(|(_, m)| m.sequence).chain(feedback.iter().map(|r| r.sequence)).max().unwrap_or(0) + 1;
        let mut queues: std::collections::HashMap<String, Vec<Queued>> = std::collections::HashMap::new();
        for (device_id, message) in messages {
            queues.entry(device_id).or_default().push(message);
        }
        Self {
            queues: queues.into_iter().map(|(id, messages)| (id, DeviceQueue::from_messages(messages))).collect(),
            feedback: FeedbackQueue::from_records(feedback),
            next_sequence,
        }
    }

    fn take_sequence(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        sequence
    }

    /// Messages waiting for a device (its `cloudToDeviceMessageCount`).
    pub(super) fn count(&self, device_id: &str) -> usize {
        self.queues.get(device_id).map_or(0, DeviceQueue::len)
    }
}

fn lock_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn from_c2d(error: C2dError) -> HubError {
    match error {
        C2dError::QueueFull => HubError::QueueFull(error.to_string()),
        C2dError::TooLarge(_) => HubError::MessageTooLarge(error.to_string()),
        C2dError::LockLost(_) => HubError::MessageLockLost(error.to_string()),
    }
}

impl Hub {
    /// Queues a message for `device_id`, answering once it is durable: `DeviceNotFound` for an unknown device,
    /// `QueueFull` past 50 waiting, `MessageTooLarge` past 64 KB. A connected device that listens gets it then
    /// (never before it is kept: a device never sees a message its sender was told failed).
    pub async fn send_message(&self, device_id: &str, message: Message) -> Result<(), HubError> {
        let now = self.clock.now();
        let (sequence, pending) = {
            let mut state = self.write();
            if !state.devices.contains_key(device_id) {
                return Err(HubError::DeviceNotFound(device_id.to_owned()));
            }
            let sequence = state.messages.take_sequence();
            let queue = state.messages.queues.entry(device_id.to_owned()).or_default();
            let queued = queue.enqueue(sequence, message, now).map_err(from_c2d)?.clone();
            let pending = self
                .store
                .submit(vec![Write::PutMessage { device_id: device_id.to_owned(), message: Box::new(queued) }]);
            (sequence, pending)
        };
        let saved = pending.durable().await;
        let mut state = self.write();
        if let Err(error) = saved {
            if let Some(queue) = state.messages.queues.get_mut(device_id) {
                queue.remove(sequence);
            }
            return Err(HubError::ServerError(format!("The message could not be saved: {error}")));
        }
        self.push_messages(&mut state, device_id, self.clock.now());
        Ok(())
    }

    /// Hands every waiting message to the device's connection, when it is connected and listens for them (MQTT
    /// pushes; an HTTPS device pulls instead). Call with the state lock held.
    pub(super) fn push_messages(&self, state: &mut State, device_id: &str, now: Timestamp) {
        let Some(presence) = state.connected.get(device_id) else { return };
        if !state.sessions.get(device_id).is_some_and(|s| s.cloud_to_device) {
            return;
        }
        let outbound = presence.outbound.clone();
        let Some(queue) = state.messages.queues.get_mut(device_id) else { return };
        while let Some(next) = queue.take_next(lock_token(), now) {
            let delivery = Delivery {
                token: next.lock.as_ref().map(|l| l.token.clone()).unwrap_or_default(),
                message: next.clone(),
            };
            if let Err(error) = outbound.try_send(ToDevice::Message(Box::new(delivery))) {
                // The device is not reading: the message waits for it (its lock is given back).
                if let tokio::sync::mpsc::error::TrySendError::Full(ToDevice::Message(delivery))
                | tokio::sync::mpsc::error::TrySendError::Closed(ToDevice::Message(delivery)) = error
                {
                    let _ = queue.settle(
                        &delivery.token,
                        Settlement::Abandon,
                        &DeviceRef { device_id, generation_id: "" },
                        now,
                    );
                }
                break;
            }
        }
    }

    /// The next message for a device that pulls (HTTPS), locked for it; `None` when none waits.
    pub fn receive_message(&self, device_id: &str) -> Result<Option<Delivery>, HubError> {
        let now = self.clock.now();
        let mut state = self.write();
        let device = state.lookup(device_id)?.clone();
        let writes = self.expire_queue(&mut state, &device, now);
        drop(self.store.submit(writes));
        let Some(queue) = state.messages.queues.get_mut(device_id) else { return Ok(None) };
        Ok(queue.take_next(lock_token(), now).map(|next| Delivery {
            token: next.lock.as_ref().map(|l| l.token.clone()).unwrap_or_default(),
            message: next.clone(),
        }))
    }

    /// Settles a message the device holds (complete, reject, abandon). Answers once the outcome is durable;
    /// `MessageLockLost` when no message is held with `token`.
    pub async fn settle_message(&self, device_id: &str, token: &str, how: Settlement) -> Result<(), HubError> {
        let pending = self.settle_message_now(device_id, token, how)?;
        pending.durable().await.map_err(|e| HubError::ServerError(format!("The outcome could not be saved: {e}")))
    }

    /// Settles a message at once and returns the store write to wait for, if the caller promises anything on it
    /// (an MQTT PUBACK promises nothing: a completion lost in a crash only means the message comes again).
    pub fn settle_message_now(&self, device_id: &str, token: &str, how: Settlement) -> Result<Pending, HubError> {
        let now = self.clock.now();
        let pending = {
            let mut state = self.write();
            let device = state.lookup(device_id)?.clone();
            let queue = state.messages.queues.get_mut(device_id).ok_or_else(|| {
                HubError::MessageLockLost(format!("No message of device '{device_id}' is held with '{token}'"))
            })?;
            let ended = queue.settle(token, how, &device_ref(&device), now).map_err(from_c2d)?;
            let writes = self.record_ended(&mut state, device_id, ended.into_iter().collect());
            if how == Settlement::Abandon {
                self.push_messages(&mut state, device_id, now);
            }
            self.store.submit(writes)
        };
        Ok(pending)
    }

    /// `DELETE /devices/{id}/commands`: removes every message waiting for the device; returns how many.
    pub async fn purge_messages(&self, device_id: &str) -> Result<usize, HubError> {
        let now = self.clock.now();
        let (count, pending) = {
            let mut state = self.write();
            let device = state.lookup(device_id)?.clone();
            let ended = state
                .messages
                .queues
                .get_mut(device_id)
                .map(|q| q.purge(&device_ref(&device), now))
                .unwrap_or_default();
            let count = ended.len();
            let mut writes = vec![Write::PurgeMessages { device_id: device_id.to_owned() }];
            writes.extend(
                self.record_ended(&mut state, device_id, ended)
                    .into_iter()
                    .filter(|w| !matches!(w, Write::DeleteMessage { .. })),
            );
            (count, self.store.submit(writes))
        };
        pending.durable().await.map_err(|e| HubError::ServerError(format!("The purge could not be saved: {e}")))?;
        Ok(count)
    }

    /// The store writes for messages that left a queue (and the feedback they leave), the feedback kept in
    /// memory too, and feedback readers woken.
    fn record_ended(&self, state: &mut State, device_id: &str, ended: Vec<Ended>) -> Vec<Write> {
        let mut writes = Vec::with_capacity(ended.len() * 2);
        let mut any_feedback = false;
        for Ended { sequence, feedback } in ended {
            writes.push(Write::DeleteMessage { device_id: device_id.to_owned(), sequence });
            if let Some(mut record) = feedback {
                record.sequence = state.messages.take_sequence();
                writes.push(Write::PutFeedback(Box::new(record.clone())));
                let forgotten = state.messages.feedback.push(record);
                if !forgotten.is_empty() {
                    writes.push(Write::DeleteFeedback(forgotten));
                }
                any_feedback = true;
            }
        }
        if any_feedback {
            self.feedback_changed.notify_waiters();
        }
        writes
    }

    /// Ends what time ended in one device's queue (expiries, runs out of locks); returns the store writes.
    fn expire_queue(&self, state: &mut State, device: &Device, now: Timestamp) -> Vec<Write> {
        let Some(queue) = state.messages.queues.get_mut(&device.device_id) else { return Vec::new() };
        if queue.next_deadline().is_none_or(|deadline| deadline > now) {
            return Vec::new();
        }
        let (ended, released) = queue.expire(&device_ref(device), now);
        let writes = self.record_ended(state, &device.device_id, ended);
        if released {
            self.push_messages(state, &device.device_id, now);
        }
        writes
    }

    /// One sweep over every queue and the feedback locks.
    pub(super) fn sweep_messages(&self) -> Pending {
        let now = self.clock.now();
        let mut state = self.write();
        let due: Vec<Arc<Device>> = state
            .messages
            .queues
            .iter()
            .filter(|(_, q)| q.next_deadline().is_some_and(|d| d <= now))
            .filter_map(|(id, _)| state.devices.get(id).cloned())
            .collect();
        let mut writes = Vec::new();
        for device in due {
            writes.extend(self.expire_queue(&mut state, &device, now));
        }
        if state.messages.feedback.expire_locks(now) {
            self.feedback_changed.notify_waiters();
        }
        self.store.submit(writes)
    }

    /// Gives back every message a connection held (it ended before settling them) and offers them again.
    pub(super) fn release_messages(state: &mut State, device_id: &str) {
        if let Some(queue) = state.messages.queues.get_mut(device_id) {
            queue.release_all();
        }
    }

    /// The next feedback message for the service, locked for its reader; `None` when no record waits.
    pub fn receive_feedback(&self) -> Option<FeedbackBatch> {
        let now = self.clock.now();
        self.write().messages.feedback.take(lock_token(), now).cloned()
    }

    /// Waits until a feedback record is waiting (or `stop` fires); used by AMQP feedback readers.
    pub async fn feedback_waiting(&self) {
        loop {
            let changed = self.feedback_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.read().messages.feedback.has_waiting() {
                return;
            }
            changed.await;
        }
    }

    /// Completes a feedback message: its records are forgotten. `MessageLockLost` for an unknown token.
    pub async fn complete_feedback(&self, token: &str) -> Result<(), HubError> {
        let pending = {
            let mut state = self.write();
            let forgotten = state.messages.feedback.complete(token).ok_or_else(|| lock_lost(token))?;
            self.store.submit(vec![Write::DeleteFeedback(forgotten)])
        };
        pending.durable().await.map_err(|e| HubError::ServerError(format!("The completion could not be saved: {e}")))
    }

    /// Gives a feedback message back: its records wait again. `MessageLockLost` for an unknown token.
    pub fn abandon_feedback(&self, token: &str) -> Result<(), HubError> {
        if !self.write().messages.feedback.abandon(token) {
            return Err(lock_lost(token));
        }
        self.feedback_changed.notify_waiters();
        Ok(())
    }
}

fn lock_lost(token: &str) -> HubError {
    HubError::MessageLockLost(format!("No feedback message is held with the lock token '{token}'"))
}

fn device_ref(device: &Device) -> DeviceRef<'_> {
    DeviceRef { device_id: &device.device_id, generation_id: &device.generation_id }
}
