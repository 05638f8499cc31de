//! Live device connections: who is connected, what each device subscribed to, and the channel the hub uses
//! to send a device its method requests and desired-property changes.

use std::sync::atomic::{AtomicI64, Ordering};

use jiff::Timestamp;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::domain::twin::DesiredNotification;
use crate::error::HubError;
use crate::store::Write;

/// Presence changes a slow watcher may fall behind by before it is told to read everything again.
pub(super) const FEED_CAPACITY: usize = 4096;

/// A connection or disconnection of an identity (`<deviceId>` or `<deviceId>/<moduleId>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub key: String,
    pub connected: bool,
    pub time: Timestamp,
}

/// Messages waiting per connection before the hub considers the device too slow.
pub(super) const OUTBOUND_CAPACITY: usize = 1024;

pub use crate::domain::sessions::Subscriptions;

/// What the hub sends a connected device on its own initiative.
#[derive(Debug, Clone, PartialEq)]
pub enum ToDevice {
    /// A direct method call; `payload` is JSON text.
    MethodRequest { rid: u64, name: String, payload: String },
    /// Desired properties changed.
    DesiredChanged(DesiredNotification),
    /// A cloud-to-device message, locked for this connection until it settles it.
    Message(Box<super::Delivery>),
}

pub(super) struct Presence {
    pub(super) connection: u64,
    pub(super) since: Timestamp,
    pub(super) closed: CancellationToken,
    pub(super) outbound: mpsc::Sender<ToDevice>,
    /// Nanoseconds since the epoch; atomic so activity is recorded under the read lock.
    last_activity: AtomicI64,
}

impl Presence {
    pub(super) fn last_activity(&self) -> Timestamp {
        Timestamp::from_nanosecond(i128::from(self.last_activity.load(Ordering::Relaxed))).unwrap_or(self.since)
    }
}

fn nanos(ts: Timestamp) -> i64 {
    i64::try_from(ts.as_nanosecond()).unwrap_or(i64::MAX)
}

/// Handed to a transport when a device connects: its connection number, and a token the hub cancels when
/// the connection must end (a newer connection for the device, the device deleted or disabled).
#[derive(Debug, Clone)]
pub struct ConnectionLease {
    pub id: u64,
    pub closed: CancellationToken,
}

/// Everything a transport gets for an accepted connection.
#[derive(Debug)]
pub struct Connected {
    pub lease: ConnectionLease,
    /// Messages the hub sends the device.
    pub outbound: mpsc::Receiver<ToDevice>,
    /// True when a stored session (clean-session 0) was resumed.
    pub session_present: bool,
    /// The subscriptions in force from the start (resumed ones).
    pub subscriptions: Subscriptions,
}

impl Hub {
    /// Records a new connection of `device_id`. An older connection of the same device is told to close, as the
    /// hub allows one connection per identity. A clean session discards stored subscriptions.
    pub fn device_connected(&self, device_id: &str, clean_session: bool) -> Connected {
        let now = self.clock.now();
        let (outbound_tx, outbound) = mpsc::channel(OUTBOUND_CAPACITY);
        let closed = CancellationToken::new();
        let connected = {
            let mut state = self.write();
            let id = state.next_connection;
            state.next_connection += 1;
            let presence = Presence {
                connection: id,
                since: now,
                closed: closed.clone(),
                outbound: outbound_tx,
                last_activity: AtomicI64::new(nanos(now)),
            };
            if let Some(older) = state.connected.insert(device_id.to_owned(), presence) {
                tracing::info!(device_id, "a new connection replaces the older one");
                older.closed.cancel();
                // What the older connection held is offered to this one.
                Self::release_messages(&mut state, device_id);
            }
            state.last_activity.remove(device_id);
            let resumed = if clean_session {
                if state.sessions.remove(device_id).is_some() {
                    // Queued in order behind earlier writes; nothing waits on it. If it cannot be saved, a
                    // restart brings the old session back until the device next connects clean.
                    let _ = self.store.submit(vec![Write::DeleteSession { device_id: device_id.to_owned() }]);
                }
                None
            } else {
                state.sessions.get(device_id).copied()
            };
            if resumed.is_some_and(|s| s.cloud_to_device) {
                // Messages queued while the device was away wait in the channel until the session runs.
                self.push_messages(&mut state, device_id, now);
            }
            Connected {
                lease: ConnectionLease { id, closed },
                outbound,
                session_present: resumed.is_some(),
                subscriptions: resumed.unwrap_or_default(),
            }
        };
        self.presence_changed.notify_waiters();
        // Nobody watching is fine.
        let _ = self.presence_feed.send(PresenceChange { key: device_id.to_owned(), connected: true, time: now });
        connected
    }

    /// Records what connection `connection` of `device_id` now subscribes to. A `persistent` session (clean
    /// session 0) is stored, as the hub keeps it, so it outlives a restart too: the SDKs never subscribe again
    /// after a reconnect. They are in force at once; the returned future resolves once they are durable. If they
    /// cannot be saved they still hold for this run, and the future gives the error for the caller to log.
    pub fn set_subscriptions(
        &self,
        device_id: &str,
        connection: u64,
        subscriptions: Subscriptions,
        persistent: bool,
    ) -> impl Future<Output = Result<(), HubError>> + use<> {
        let pending = {
            let mut state = self.write();
            if state.connected.get(device_id).is_none_or(|p| p.connection != connection) {
                None
            } else {
                let previous = state.sessions.insert(device_id.to_owned(), subscriptions);
                if subscriptions.cloud_to_device {
                    self.push_messages(&mut state, device_id, self.clock.now());
                }
                (persistent && previous != Some(subscriptions)).then(|| {
                    let device_id = device_id.to_owned();
                    self.store.submit(vec![Write::PutSession { device_id, subscriptions }])
                })
            }
        };
        self.presence_changed.notify_waiters();
        async move {
            match pending {
                Some(pending) => pending
                    .durable()
                    .await
                    .map_err(|e| HubError::ServerError(format!("The session could not be saved: {e}"))),
                None => Ok(()),
            }
        }
    }

    /// Records the end of connection `connection` of `device_id` (ignored if a newer one replaced it). A clean
    /// session's subscriptions end with it.
    pub fn device_disconnected(&self, device_id: &str, connection: u64, clean_session: bool) {
        let mut state = self.write();
        if state.connected.get(device_id).is_some_and(|p| p.connection == connection) {
            if let Some(presence) = state.connected.remove(device_id) {
                state.last_activity.insert(device_id.to_owned(), presence.last_activity());
            }
            // What the connection held and did not settle waits for the next one.
            Self::release_messages(&mut state, device_id);
            if clean_session {
                state.sessions.remove(device_id);
            }
            let change = PresenceChange { key: device_id.to_owned(), connected: false, time: self.clock.now() };
            let _ = self.presence_feed.send(change);
        }
    }

    /// Connections and disconnections from now on, as they happen.
    pub fn presence_stream(&self) -> broadcast::Receiver<PresenceChange> {
        self.presence_feed.subscribe()
    }

    /// Counts one device CONNECT, whatever the answer.
    pub fn note_connect_attempt(&self) {
        self.connect_attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// Device-to-cloud messages recorded since the hub started.
    pub fn telemetry_count(&self) -> u64 {
        self.telemetry_count.load(Ordering::Relaxed)
    }

    /// Device CONNECTs received since the hub started, accepted or refused.
    pub fn connect_attempts(&self) -> u64 {
        self.connect_attempts.load(Ordering::Relaxed)
    }

    /// Notes that the device sent something (its `lastActivityTime`).
    pub fn touch(&self, device_id: &str) {
        let now = nanos(self.clock.now());
        if let Some(presence) = self.read().connected.get(device_id) {
            presence.last_activity.store(now, Ordering::Relaxed);
        }
    }

    /// Ends the device's connection from the hub's side, as a network drop would (for tests of reconnects).
    /// False when it was not connected.
    pub fn drop_connection(&self, device_id: &str) -> bool {
        let mut state = self.write();
        let connected = state.connected.contains_key(device_id);
        state.disconnect(device_id);
        connected
    }

    /// True when the device has a live connection.
    pub fn is_connected(&self, id: &str) -> bool {
        self.read().connected.contains_key(id)
    }

    /// How many devices are connected now (module connections are not devices).
    pub fn connected_device_count(&self) -> usize {
        self.read().connected.keys().filter(|key| !key.contains('/')).count()
    }

    /// The sender to a connected device that subscribed as `wanted` says; `Err(true)` when it is connected but
    /// not subscribed, `Err(false)` when it is not connected.
    pub(super) fn route(
        &self,
        device_id: &str,
        wanted: fn(&Subscriptions) -> bool,
    ) -> Result<mpsc::Sender<ToDevice>, bool> {
        let state = self.read();
        let presence = state.connected.get(device_id).ok_or(false)?;
        let subscribed = state.sessions.get(device_id).is_some_and(wanted);
        if subscribed { Ok(presence.outbound.clone()) } else { Err(true) }
    }
}
