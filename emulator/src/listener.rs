//! The TLS accept loop shared by the HTTPS and MQTT endpoints: accept, handshake under a deadline in the
//! connection's own task (so one slow client never delays others), then hand the stream to the protocol.
//! A gate shared by both endpoints caps open connections below the open-file limit; connections past it are
//! refused by the protocol's own means (MQTT: CONNACK 3, server unavailable) instead of failing at random.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits;

/// File descriptors kept free of connections: the data file, logs, and the sockets of refusals in progress.
pub const RESERVED_FILES: usize = 128;

/// How many connections may be open at once, over both endpoints.
#[derive(Debug)]
pub struct ConnectionGate {
    open: AtomicUsize,
    ceiling: usize,
}

/// An admitted connection; dropping it frees its place.
pub struct Admitted(Arc<ConnectionGate>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionGate {
    /// A gate letting at most `ceiling` connections in.
    pub fn new(ceiling: usize) -> Arc<Self> {
        Arc::new(Self { open: AtomicUsize::new(0), ceiling })
    }

    /// The most connections at once.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// A place for one more connection, if there is one.
    pub fn try_admit(self: &Arc<Self>) -> Option<Admitted> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < self.ceiling).then_some(open + 1))
            .ok()
            .map(|_| Admitted(Arc::clone(self)))
    }
}

/// Raises this process's open-file soft limit to its hard limit and returns the limit now in force.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// The next accepted connection (TCP_NODELAY set), or `None` once `shutdown` fires. A failed accept (usually out of
/// file descriptors) backs off briefly instead of spinning.
async fn next_connection(listener: &TcpListener, shutdown: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return None,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return Some((tcp, peer));
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts TLS connections until `shutdown` fires; each admitted one runs `handle` in a task tracked by
/// `tracker`, each one past the gate's ceiling runs `refuse`.
pub async fn accept_tls<H, F, R, RF>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    gate: Arc<ConnectionGate>,
    handle: H,
    refuse: R,
) where
    H: Fn(TlsStream<TcpStream>, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
    R: Fn(TlsStream<TcpStream>, SocketAddr) -> RF + Clone + Send + 'static,
    RF: Future<Output = ()> + Send + 'static,
{
    while let Some((tcp, peer)) = next_connection(&listener, &shutdown).await {
        let admitted = gate.try_admit();
        if admitted.is_none() {
            tracing::warn!(%peer, ceiling = gate.ceiling(), "connection refused: the emulator is at its connection ceiling");
        }
        let acceptor = acceptor.clone();
        let (handle, refuse) = (handle.clone(), refuse.clone());
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let handshake =
                tokio::time::timeout(Duration::from_secs(limits::HANDSHAKE_TIMEOUT_SECS), acceptor.accept(tcp));
            let stream = tokio::select! {
                result = handshake => match result {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                () = shutdown.cancelled() => return,
            };
            match admitted {
                Some(_place) => handle(stream, peer).await,
                None => refuse(stream, peer).await,
            }
        });
    }
}

/// Accepts plain TCP connections (no TLS: the Event Hubs clients' development-emulator form) and runs `handle`
/// on each admitted one; connections past the ceiling are closed at once.
pub async fn accept_plain<H, F>(
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    gate: Arc<ConnectionGate>,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    while let Some((tcp, peer)) = next_connection(&listener, &shutdown).await {
        let Some(place) = gate.try_admit() else {
            tracing::warn!(%peer, ceiling = gate.ceiling(), "connection refused: the emulator is at its connection ceiling");
            continue;
        };
        let handle = handle.clone();
        tracker.spawn(async move {
            let _place = place;
            handle(tcp, peer).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_admits_up_to_its_ceiling_and_frees_places() {
        let gate = ConnectionGate::new(2);
        let first = gate.try_admit().expect("first");
        let _second = gate.try_admit().expect("second");
        assert!(gate.try_admit().is_none(), "full");
        drop(first);
        assert!(gate.try_admit().is_some(), "a place was freed");
    }
}
