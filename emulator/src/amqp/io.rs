//! The byte stream under an AMQP connection: replays the protocol header the endpoint read to choose between
//! SASL and plain AMQP, guards fe2o3 against frames it cannot decode, and can be cut off.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Replays `header` before reading from `inner`. Once `kill` is cancelled every read/write fails,
/// which makes fe2o3's connection engine (a task we cannot abort) stop promptly. It also runs a
/// [`FrameGuard`] over the inbound bytes, because fe2o3 0.18.4 panics on frames whose size field
/// is 4..=7 (`FrameDecoder`/`sasl::FrameCodec` call `get_u8` on an empty buffer).
pub(super) struct PrefixedIo<S> {
    header: [u8; 8],
    pos: usize,
    inner: S,
    guard: FrameGuard,
    kill: CancellationToken,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> PrefixedIo<S> {
    pub(super) fn new(header: [u8; 8], inner: S, kill: CancellationToken) -> Self {
        let killed = Box::pin(kill.clone().cancelled_owned());
        Self { header, pos: 0, inner, guard: FrameGuard::default(), kill, killed }
    }
    /// Err if killed; otherwise registers the waker so a later kill wakes the pending I/O.
    fn check_killed(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        if self.kill.is_cancelled() || self.killed.as_mut().poll(cx).is_ready() {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "killed"));
        }
        Ok(())
    }
}

impl<S> fmt::Debug for PrefixedIo<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixedIo").field("replayed", &self.pos).finish()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        this.check_killed(cx)?;
        let before = buf.filled().len();
        if this.pos < this.header.len() {
            let n = (this.header.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.header[this.pos..this.pos + n]);
            this.pos += n;
        } else {
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        }
        // On Err the caller discards what was put in `buf` (tokio-util only advances on Ok).
        this.guard.scan(&buf.filled()[before..])?;
        Poll::Ready(Ok(()))
    }
}

/// Tracks frame boundaries of the inbound byte stream (protocol headers and frames, SASL then
/// AMQP) and rejects frame sizes below the 8-byte frame header.
#[derive(Debug)]
enum FrameGuard {
    Header { seen: u8 },
    Size { bytes: [u8; 4], seen: u8 },
    Body { remaining: u32 },
}

impl Default for FrameGuard {
    fn default() -> Self {
        FrameGuard::Header { seen: 0 }
    }
}

impl FrameGuard {
    fn scan(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            match self {
                FrameGuard::Header { seen } => {
                    let n = (8 - *seen as usize).min(data.len());
                    *seen += n as u8;
                    data = &data[n..];
                    if *seen == 8 {
                        *self = FrameGuard::Size { bytes: [0; 4], seen: 0 };
                    }
                }
                FrameGuard::Size { bytes, seen } => {
                    bytes[*seen as usize] = data[0];
                    *seen += 1;
                    data = &data[1..];
                    if *seen == 4 {
                        *self = match u32::from_be_bytes(*bytes) {
                            // the AMQP header that follows a SASL outcome
                            _ if bytes == b"AMQP" => FrameGuard::Header { seen: 4 },
                            size if size < 8 => {
                                return Err(std::io::Error::new(
                                    std::io::ErrorKind::InvalidData,
                                    format!("frame size {size} < 8"),
                                ));
                            }
                            size => FrameGuard::Body { remaining: size - 4 },
                        };
                    }
                }
                FrameGuard::Body { remaining } => {
                    let n = (*remaining as usize).min(data.len());
                    *remaining -= n as u32;
                    data = &data[n..];
                    if *remaining == 0 {
                        *self = FrameGuard::Size { bytes: [0; 4], seen: 0 };
                    }
                }
            }
        }
        Ok(())
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.check_killed(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check_killed(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_shorter_than_their_header_are_refused_and_others_pass() {
        let mut guard = FrameGuard::default();
        let mut stream = b"AMQP\x00\x01\x00\x00".to_vec();
        stream.extend_from_slice(&[0, 0, 0, 8, 2, 0, 0, 0]); // an empty frame (heartbeat)
        stream.extend_from_slice(&[0, 0, 0, 10, 2, 0, 0, 0, 0xAB, 0xCD]);
        for chunk in stream.chunks(3) {
            guard.scan(chunk).expect("well-formed frames pass");
        }
        assert!(guard.scan(&[0, 0, 0, 5]).is_err(), "a size below 8 is refused before fe2o3 sees it");
    }

    #[test]
    fn the_amqp_header_after_a_sasl_exchange_is_followed() {
        let mut guard = FrameGuard::default();
        guard.scan(b"AMQP\x03\x01\x00\x00").expect("SASL header");
        guard.scan(&[0, 0, 0, 8, 2, 1, 0, 0]).expect("a SASL frame");
        guard.scan(b"AMQP\x00\x01\x00\x00").expect("the AMQP header that follows");
        guard.scan(&[0, 0, 0, 8, 2, 0, 0, 0]).expect("a frame");
    }
}
