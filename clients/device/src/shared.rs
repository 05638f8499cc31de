//! What the client handle and the background driver share: method handlers, desired-property listeners, the
//! connection's status, the cloud-to-device inbox and the signal to close.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::c2d::Inbox;
use crate::error::Error;
use crate::methods::Handler;
use crate::twin::DesiredUpdate;

/// The state of the client's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Connected and subscribed.
    Connected,
    /// The connection was lost (or its token is being renewed); the next attempt comes after `retry_in`.
    Disconnected {
        /// Why the last connection or attempt ended.
        reason: Error,
        /// The wait before the next attempt (back-off with jitter).
        retry_in: Duration,
    },
    /// The client stopped for good after a permanent failure; every call now fails with this error.
    Failed(Error),
    /// The client was closed.
    Closed,
}

/// What the client handle and the driver share.
pub(crate) struct Shared {
    pub handlers: Mutex<HashMap<String, Handler>>,
    pub desired: Mutex<Vec<mpsc::UnboundedSender<DesiredUpdate>>>,
    pub status: watch::Sender<ConnectionStatus>,
    /// Cloud-to-device messages held for the application.
    pub c2d: Arc<Inbox>,
    /// Cancelled to close the client.
    pub closing: CancellationToken,
}

impl Shared {
    pub(crate) fn new(handlers: HashMap<String, Handler>) -> Self {
        Self {
            handlers: Mutex::new(handlers),
            desired: Mutex::new(Vec::new()),
            status: watch::channel(ConnectionStatus::Connected).0,
            c2d: Arc::default(),
            closing: CancellationToken::new(),
        }
    }

    pub(crate) fn handler(&self, name: &str) -> Option<Handler> {
        self.handlers.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// The error calls get once the driver has stopped.
    pub(crate) fn final_error(&self) -> Error {
        match &*self.status.borrow() {
            ConnectionStatus::Failed(error) => error.clone(),
            _ => Error::Closed,
        }
    }
}
