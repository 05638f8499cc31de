//! What one AMQP connection knows across its sessions and links: who it is (the hub, the peer), the claims its
//! tokens established (claims-based security), and where `$cbs` and `$management` replies go.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;
use jiff::Timestamp;
use tokio::sync::{Notify, mpsc};

use crate::auth::{Claim, Rights};
use crate::hub::Hub;

/// How long a reply waits for the client to attach its reply link.
const REPLY_LINK_WAIT: Duration = Duration::from_secs(5);

/// A `$cbs` or `$management` reply on its way to the client (boxed: a message is ~600 bytes, and every reply
/// link's channel holds a block of 32 slots from the start).
pub(super) type Reply = Box<Message<Body<Value>>>;

/// The state one connection shares with its links.
pub(super) struct Connection {
    pub(super) hub: Arc<Hub>,
    pub(super) peer: SocketAddr,
    claims: Mutex<Vec<Claim>>,
    claims_changed: Notify,
    /// Where `$cbs` replies go.
    pub(super) cbs: ReplyRouter,
    /// Where `$management` replies go.
    pub(super) management: ReplyRouter,
    /// The devices and modules with links on this connection.
    pub(super) devices: super::devices::DeviceLinks,
}

impl Connection {
    pub(super) fn new(hub: Arc<Hub>, peer: SocketAddr) -> Self {
        Self {
            hub,
            peer,
            claims: Mutex::default(),
            claims_changed: Notify::new(),
            cbs: ReplyRouter::default(),
            management: ReplyRouter::default(),
            devices: super::devices::DeviceLinks::default(),
        }
    }

    fn claims(&self) -> MutexGuard<'_, Vec<Claim>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds what a token grants (a renewed token for the same resource replaces the older one) and wakes the
    /// links waiting on their claims.
    pub(super) fn add_claim(&self, claim: Claim) {
        {
            let mut claims = self.claims();
            claims.retain(|c| !c.same_grant(&claim));
            claims.push(claim);
        }
        self.claims_changed.notify_waiters();
    }

    /// When the longest-lived claim allowing `needed` on `target` (`<host>/<path>`) ends, if one allows it now.
    pub(super) fn authorized_until(&self, target: &str, needed: Rights) -> Option<u64> {
        let now = self.hub.clock().unix_seconds();
        self.claims().iter().filter(|c| c.allows(target, needed, now)).map(|c| c.expires).max()
    }

    /// Returns once no claim allows `needed` on `target` any more: its tokens expired and none was renewed.
    pub(super) async fn until_unauthorized(&self, target: &str, needed: Rights) {
        loop {
            let changed = self.claims_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let Some(expires) = self.authorized_until(target, needed) else { return };
            let at = Timestamp::from_second(i64::try_from(expires).unwrap_or(i64::MAX)).unwrap_or(Timestamp::MAX);
            tokio::select! {
                () = changed => {}
                () = self.hub.clock().sleep_until(at) => {}
            }
        }
    }
}

/// Routes replies of a request node (`$cbs`, `$management`) to the link the client reads them on. Clients differ:
/// Node sends `reply-to: cbs` and attaches a receiver without a target; uamqp and Python's pyamqp send no
/// `reply-to` and attach `$cbs-receiver` or a receiver targeting the node itself.
#[derive(Default)]
pub(super) struct ReplyRouter {
    next_id: AtomicU64,
    links: Mutex<Vec<ReplyLink>>,
    changed: Notify,
}

struct ReplyLink {
    id: u64,
    name: String,
    /// The target address of the client's receiver (what a client may put in `reply-to`).
    address: Option<String>,
    replies: mpsc::Sender<Reply>,
}

impl ReplyRouter {
    fn links(&self) -> MutexGuard<'_, Vec<ReplyLink>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a client receiver of replies; returns its id for `unregister`.
    pub(super) fn register(&self, name: String, address: Option<String>, replies: mpsc::Sender<Reply>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.links().push(ReplyLink { id, name, address, replies });
        self.changed.notify_waiters();
        id
    }

    /// Forgets a reply link that detached.
    pub(super) fn unregister(&self, id: u64) {
        self.links().retain(|l| l.id != id);
    }

    /// The link whose target address or name is `reply_to`, else the newest one.
    fn find(&self, reply_to: Option<&str>) -> Option<mpsc::Sender<Reply>> {
        let links = self.links();
        let exact = reply_to.and_then(|r| links.iter().rev().find(|l| l.address.as_deref() == Some(r) || l.name == r));
        exact.or(links.last()).map(|l| l.replies.clone())
    }

    /// Where to send a reply, waiting briefly for a client that attaches its reply link after its request.
    pub(super) async fn route(&self, reply_to: Option<&str>) -> Option<mpsc::Sender<Reply>> {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(found) = self.find(reply_to) {
                    return found;
                }
                changed.await;
            }
        };
        tokio::time::timeout(REPLY_LINK_WAIT, wait).await.ok()
    }
}
