//! Cloud-to-device messages: what the hub sends a device on `devices/<id>/messages/devicebound/<property bag>`,
//! and the inbox between the driver (which receives them) and the application (which takes them).
//!
//! A message is acknowledged (PUBACK, which completes it on the hub) only when the application takes it, so a
//! message the application never got is delivered again. Until then it is held, unacknowledged, in the inbox:
//! a bounded buffer shared by the driver and the one current [`CloudToDeviceMessages`]. Each held message
//! carries the epoch of the connection it came on; when that connection ends the held messages are forgotten
//! (the hub offers them again on the next one), and an acknowledgement due on an earlier connection is never
//! sent on a later one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use iothub_proto::messages::Ack;
use iothub_proto::property_bag;
use tokio::sync::Notify;

/// Most messages held for the application at once: the hub's queue depth. Past it the oldest is let go
/// (unacknowledged, so the hub offers it again).
pub(crate) const MAX_HELD: usize = 50;

/// A cloud-to-device message: the body and properties its sender set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CloudToDeviceMessage {
    /// The payload, as sent.
    pub body: Vec<u8>,
    /// `$.mid`: the id the sender gave (feedback names the message by it).
    pub message_id: Option<String>,
    /// `$.cid`: ties the message to a request.
    pub correlation_id: Option<String>,
    /// `$.uid`: the sender's user id.
    pub user_id: Option<String>,
    /// `$.to`: the address it was sent to, `/devices/<id>/messages/devicebound`.
    pub to: Option<String>,
    /// `$.ct`: e.g. `application/json`.
    pub content_type: Option<String>,
    /// `$.ce`: e.g. `utf-8`.
    pub content_encoding: Option<String>,
    /// `$.exp`: when the message expires, as the hub wrote it (ISO 8601, UTC), when its sender set an expiry.
    pub expiry: Option<String>,
    /// `iothub-ack`: which outcomes the sender gets feedback on.
    pub ack: Ack,
    /// Application properties in the sender's order (system properties and `iothub-ack` left out).
    pub properties: Vec<(String, String)>,
}

impl CloudToDeviceMessage {
    /// Reads a message from its topic's property bag (still percent-encoded) and its payload. Unknown `$.`
    /// system properties are left out; an unknown `iothub-ack` reads as [`Ack::None`].
    pub(crate) fn parse(property_bag: &str, body: &[u8]) -> Self {
        let mut message = Self { body: body.to_vec(), ..Self::default() };
        for (key, value) in property_bag::decode_pairs(property_bag) {
            let field = match key.as_str() {
                "$.mid" => &mut message.message_id,
                "$.cid" => &mut message.correlation_id,
                "$.uid" => &mut message.user_id,
                "$.to" => &mut message.to,
                "$.ct" => &mut message.content_type,
                "$.ce" => &mut message.content_encoding,
                "$.exp" => &mut message.expiry,
                "iothub-ack" => {
                    message.ack = Ack::parse(&value).unwrap_or_default();
                    continue;
                }
                system if system.starts_with("$.") => continue,
                _ => {
                    message.properties.push((key, value));
                    continue;
                }
            };
            *field = Some(value);
        }
        message
    }

    /// The value of application property `name` (the first, should the sender have repeated it).
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The body read as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// The C2D property bag of `topic` when it is `devices/<device_id>/messages/devicebound[/<bag>]` for this
/// device (its id as written or percent-encoded); `None` for any other topic.
pub(crate) fn own_property_bag<'a>(topic: &'a str, device_id: &str) -> Option<&'a str> {
    let (id, rest) = topic.strip_prefix("devices/")?.split_once("/messages/devicebound")?;
    let ours = id == device_id || percent_encoding::percent_decode_str(id).decode_utf8_lossy() == device_id;
    if !ours {
        return None;
    }
    match rest {
        "" => Some(""),
        rest => rest.strip_prefix('/'),
    }
}

/// A message held for the application, not acknowledged yet.
struct Held {
    /// The connection it came on.
    epoch: u64,
    /// Its packet id; `None` for a QoS 0 publish (nothing to acknowledge).
    pkid: Option<u16>,
    message: CloudToDeviceMessage,
}

#[derive(Default)]
struct State {
    held: VecDeque<Held>,
    /// The id of the current listener (0: none yet).
    listener: u64,
    /// The current listener, waiting for a message.
    waker: Option<Waker>,
    /// The application asked for messages: the connection subscribes to them.
    wanted: bool,
    /// The client is closed: listeners end.
    closed: bool,
    /// Acknowledgements for the driver to send: (epoch, packet id).
    acks: Vec<(u64, u16)>,
}

/// The messages held for the application, shared by the driver and the listener.
#[derive(Default)]
pub(crate) struct Inbox {
    state: Mutex<State>,
    /// Wakes the driver: a listener appeared (subscribe) or a message was taken (acknowledge).
    driver: Notify,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new listener; the previous one (if any) ends. Messages held so far go to the new one.
    pub(crate) fn listen(self: &Arc<Self>) -> CloudToDeviceMessages {
        let id = {
            let mut state = self.lock();
            state.listener += 1;
            state.wanted = true;
            if let Some(waker) = state.waker.take() {
                waker.wake();
            }
            state.listener
        };
        self.driver.notify_one();
        CloudToDeviceMessages { inbox: self.clone(), id }
    }

    /// True once the application asked for messages.
    pub(crate) fn wanted(&self) -> bool {
        self.lock().wanted
    }

    /// Resolves when the driver has something to do: subscribe, or send acknowledgements.
    pub(crate) async fn driver_work(&self) {
        self.driver.notified().await;
    }

    /// Holds a message received on connection `epoch` for the application.
    pub(crate) fn hold(&self, epoch: u64, pkid: Option<u16>, message: CloudToDeviceMessage) {
        let mut state = self.lock();
        if state.held.len() >= MAX_HELD
            && let Some(oldest) = state.held.pop_front()
        {
            tracing::debug!(message_id = ?oldest.message.message_id, "inbox full: the oldest message is left to the hub");
        }
        state.held.push_back(Held { epoch, pkid, message });
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// The acknowledgements due on connection `epoch`; those of earlier connections are dropped (the hub
    /// offers those messages again).
    pub(crate) fn take_acks(&self, epoch: u64) -> Vec<u16> {
        let acks = std::mem::take(&mut self.lock().acks);
        acks.into_iter().filter(|(e, _)| *e == epoch).map(|(_, pkid)| pkid).collect()
    }

    /// A connection ended: what it brought and nobody took is forgotten (the hub offers it again), and so are
    /// acknowledgements not sent on it.
    pub(crate) fn connection_ended(&self) {
        let mut state = self.lock();
        state.held.clear();
        state.acks.clear();
    }

    /// The client is closed: the listener ends, nothing more is held.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.held.clear();
        state.acks.clear();
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    fn poll_take(&self, listener: u64, cx: &mut Context<'_>) -> Poll<Option<CloudToDeviceMessage>> {
        let mut state = self.lock();
        if state.closed || state.listener != listener {
            return Poll::Ready(None);
        }
        match state.held.pop_front() {
            Some(held) => {
                if let Some(pkid) = held.pkid {
                    state.acks.push((held.epoch, pkid));
                    drop(state);
                    self.driver.notify_one();
                }
                Poll::Ready(Some(held.message))
            }
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Cloud-to-device messages for the device, from [`DeviceClient::messages`](crate::DeviceClient::messages).
///
/// Each message is acknowledged to the hub (which completes it and sends its sender positive feedback) when
/// it is taken from here, not before: a message the application never took, because it was not listening or
/// stopped, is delivered again, on a later connection at the latest. A message taken just as the connection
/// dropped may come again too (at least once). Ends (`None`) when the client closes or another listener
/// replaces this one.
pub struct CloudToDeviceMessages {
    inbox: Arc<Inbox>,
    id: u64,
}

impl CloudToDeviceMessages {
    /// The next message; `None` once the client is closed or this listener was replaced. Cancel-safe: a
    /// message is only taken (and acknowledged) when this returns it.
    pub async fn recv(&mut self) -> Option<CloudToDeviceMessage> {
        std::future::poll_fn(|cx| self.inbox.poll_take(self.id, cx)).await
    }
}

impl futures_util::Stream for CloudToDeviceMessages {
    type Item = CloudToDeviceMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inbox.poll_take(self.id, cx)
    }
}

impl std::fmt::Debug for CloudToDeviceMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudToDeviceMessages").field("listener", &self.id).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_property_bag_fills_system_properties_and_keeps_application_ones_in_order() {
        let bag = "%24.mid=m%201&%24.to=%2Fdevices%2Fd1%2Fmessages%2Fdevicebound&%24.cid=c%2F1&%24.uid=svc&\
                   %24.ct=application%2Fjson&%24.ce=utf-8&%24.exp=2030-01-01T00%3A00%3A00.0000000Z&\
                   iothub-ack=full&zeta=z%201&alpha=a%26b&%24.on=x&flag";
        let message = CloudToDeviceMessage::parse(bag, br#"{"on":true}"#);
        assert_eq!(message.message_id.as_deref(), Some("m 1"));
        assert_eq!(message.to.as_deref(), Some("/devices/d1/messages/devicebound"));
        assert_eq!(message.correlation_id.as_deref(), Some("c/1"));
        assert_eq!(message.user_id.as_deref(), Some("svc"));
        assert_eq!(message.content_type.as_deref(), Some("application/json"));
        assert_eq!(message.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(message.expiry.as_deref(), Some("2030-01-01T00:00:00.0000000Z"));
        assert_eq!(message.ack, Ack::Full);
        let expected = [("zeta", "z 1"), ("alpha", "a&b"), ("flag", "")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(message.properties, expected, "no system property among them");
        assert_eq!(message.property("alpha"), Some("a&b"));
        assert_eq!(message.json::<serde_json::Value>().expect("json"), serde_json::json!({"on": true}));

        let bare = CloudToDeviceMessage::parse("iothub-ack=sometimes", b"");
        assert_eq!(bare, CloudToDeviceMessage::default(), "an unknown ack reads as none");
    }

    #[test]
    fn only_the_devices_own_devicebound_topics_are_messages() {
        assert_eq!(own_property_bag("devices/d1/messages/devicebound/a=1&b=2", "d1"), Some("a=1&b=2"));
        assert_eq!(own_property_bag("devices/d1/messages/devicebound/", "d1"), Some(""));
        assert_eq!(own_property_bag("devices/d1/messages/devicebound", "d1"), Some(""));
        assert_eq!(own_property_bag("devices/a%23b/messages/devicebound/x=1", "a#b"), Some("x=1"));
        for topic in [
            "devices/d2/messages/devicebound/a=1",
            "devices/d1/messages/deviceboundX",
            "devices/d1/messages/events/a=1",
            "$iothub/methods/POST/m/?$rid=1",
        ] {
            assert_eq!(own_property_bag(topic, "d1"), None, "{topic}");
        }
    }

    fn message(id: &str) -> CloudToDeviceMessage {
        CloudToDeviceMessage { message_id: Some(id.into()), ..CloudToDeviceMessage::default() }
    }

    fn poll(messages: &mut CloudToDeviceMessages) -> Poll<Option<CloudToDeviceMessage>> {
        let mut cx = Context::from_waker(Waker::noop());
        messages.inbox.poll_take(messages.id, &mut cx)
    }

    #[test]
    fn taking_a_message_acknowledges_it_on_its_own_connection_only() {
        let inbox = Arc::new(Inbox::default());
        inbox.hold(1, Some(7), message("early"));
        assert!(!inbox.wanted());
        let mut listener = inbox.listen();
        assert!(inbox.wanted());
        inbox.hold(1, None, message("qos0"));
        inbox.hold(1, Some(8), message("late"));
        assert!(inbox.take_acks(1).is_empty(), "nothing taken, nothing acknowledged");
        let ids: Vec<_> = (0..3)
            .map(|_| match poll(&mut listener) {
                Poll::Ready(Some(m)) => m.message_id.expect("id"),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, ["early", "qos0", "late"]);
        assert!(poll(&mut listener).is_pending());
        assert_eq!(inbox.take_acks(1), [7, 8]);

        inbox.hold(1, Some(9), message("from the old connection"));
        assert!(matches!(poll(&mut listener), Poll::Ready(Some(_))));
        assert!(inbox.take_acks(2).is_empty(), "an ack from connection 1 is never sent on connection 2");
        inbox.hold(2, Some(3), message("held when the connection ends"));
        inbox.connection_ended();
        assert!(poll(&mut listener).is_pending(), "forgotten: the hub offers it again");
    }

    #[test]
    fn a_new_listener_replaces_the_old_one_and_closing_ends_it() {
        let inbox = Arc::new(Inbox::default());
        let mut first = inbox.listen();
        inbox.hold(1, Some(2), message("m"));
        let mut second = inbox.listen();
        assert!(matches!(poll(&mut first), Poll::Ready(None)), "the replaced listener ends");
        assert!(matches!(poll(&mut second), Poll::Ready(Some(_))), "and the held message goes to the new one");
        inbox.close();
        assert!(matches!(poll(&mut second), Poll::Ready(None)));
        assert!(matches!(poll(&mut inbox.listen()), Poll::Ready(None)), "a closed client gives no messages");
    }

    #[test]
    fn the_inbox_keeps_the_newest_when_full() {
        let inbox = Arc::new(Inbox::default());
        for i in 0..=MAX_HELD {
            inbox.hold(1, Some(u16::try_from(i + 2).expect("small")), message(&i.to_string()));
        }
        let mut listener = inbox.listen();
        let Poll::Ready(Some(first)) = poll(&mut listener) else { panic!("a message") };
        assert_eq!(first.message_id.as_deref(), Some("1"), "message 0 was let go");
        assert_eq!(inbox.take_acks(1), [3]);
    }
}
