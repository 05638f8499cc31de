//! The byte stream under an AMQP connection: replays the protocol header the endpoint read to choose between
//! SASL and plain AMQP, lowers the max-frame-size the peer's open announces to fe2o3 by the room the outbound
//! rewrite needs, guards fe2o3 against frames it cannot decode, and can be cut off.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::encoding::{self, MAX_DECLARED, Unit, walk};
use super::outbound::{HEADROOM, OutboundFrames};

/// Padded bytes the stream may hold back before a write waits for the peer to read.
const MAX_UNWRITTEN: usize = 256 * 1024;

/// Replays `header` before reading from `inner`. Once `kill` is cancelled every read/write fails,
/// which makes fe2o3's connection engine (a task we cannot abort) stop promptly. It also runs a
/// [`FrameGuard`] over the inbound bytes, because fe2o3 0.18.4 panics on frames whose size field
/// is 4..=7 (`FrameDecoder`/`sasl::FrameCodec` call `get_u8` on an empty buffer), and serde_amqp 0.18
/// allocates whatever length an encoded string or symbol declares before reading it (`vec![0; len]` in
/// `Read::read_bytes`): one 60-byte frame declaring a 3 GB symbol would have the emulator allocate 3 GB,
/// and one that declares 4 GiB in a message's properties the same (found by fuzz/fuzz_targets/amqp_frames.rs).
pub(super) struct PrefixedIo<S> {
    /// Inbound bytes handed to fe2o3 before any more are read: the replayed header, then frames held back
    /// until the peer's open had passed ([`PeerOpen`]). `ready_at` of them are read.
    ready: Vec<u8>,
    ready_at: usize,
    /// `None` once the peer's open has passed.
    before_open: Option<PeerOpen>,
    inner: S,
    guard: FrameGuard,
    /// Outbound frames are rewritten (`outbound`: full field lists, 16-byte delivery tags), and wait in `out`
    /// until the stream takes them.
    outbound: OutboundFrames,
    out: Vec<u8>,
    written: usize,
    kill: CancellationToken,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> PrefixedIo<S> {
    pub(super) fn new(header: [u8; 8], inner: S, kill: CancellationToken) -> Self {
        let killed = Box::pin(kill.clone().cancelled_owned());
        let mut before_open = PeerOpen::default();
        let mut ready = Vec::new();
        let passed = before_open.push(&header, &mut ready);
        Self {
            ready,
            ready_at: 0,
            before_open: (!passed).then_some(before_open),
            inner,
            guard: FrameGuard::default(),
            outbound: OutboundFrames::default(),
            out: Vec::new(),
            written: 0,
            kill,
            killed,
        }
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
        f.debug_struct("PrefixedIo").field("open_passed", &self.before_open.is_none()).finish()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        this.check_killed(cx)?;
        let before = buf.filled().len();
        loop {
            if this.ready_at < this.ready.len() {
                let n = (this.ready.len() - this.ready_at).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready = Vec::new();
                    this.ready_at = 0;
                }
                break;
            }
            let Some(open) = &mut this.before_open else {
                std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                break;
            };
            let mut chunk = [0u8; 1024];
            let mut read = ReadBuf::new(&mut chunk);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The peer is gone before its open: fe2o3 gets what it sent, then the end of the stream.
                this.ready.append(&mut open.pending);
                this.before_open = None;
                continue;
            }
            if open.push(read.filled(), &mut this.ready) {
                this.before_open = None;
            }
        }
        // On Err the caller discards what was put in `buf` (tokio-util only advances on Ok).
        this.guard.scan(&buf.filled()[before..])?;
        Poll::Ready(Ok(()))
    }
}

/// Holds inbound protocol headers and frames until the peer's open (the first AMQP frame) is whole, and lowers
/// the max-frame-size it announces by [`HEADROOM`]: fe2o3 then writes frames that the outbound rewrite
/// ([`super::outbound`]) can lengthen without going past what the peer takes (.NET's is 64 KiB).
#[derive(Debug, Default)]
struct PeerOpen {
    pending: Vec<u8>,
}

impl PeerOpen {
    /// Moves every whole header and frame of `data` (after what came before) to `ready`; true once the open has
    /// gone, with everything after it. A frame this cannot follow (a size the guard refuses) ends the holding
    /// too: the guard then refuses the stream.
    fn push(&mut self, data: &[u8], ready: &mut Vec<u8>) -> bool {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        let passed = loop {
            let rest = &self.pending[at..];
            let size = match encoding::next_unit(rest) {
                Unit::Header => {
                    at += 8;
                    continue;
                }
                Unit::Frame(size) => size,
                Unit::Partial => break false,
            };
            if !(8..=super::MAX_FRAME_SIZE).contains(&size) {
                break true;
            }
            let size = size as usize;
            if rest.len() < size {
                break false;
            }
            let frame = &mut self.pending[at..at + size];
            at += size;
            if lower_max_frame_size(frame) {
                break true;
            }
        };
        if passed {
            ready.append(&mut self.pending);
        } else {
            ready.extend(self.pending.drain(..at));
        }
        passed
    }
}

/// If `frame` is an AMQP open, lowers its max-frame-size in place (a `uint`, the form every client sends; null
/// means 4 GiB, where there is room anyway) and says so.
fn lower_max_frame_size(frame: &mut [u8]) -> bool {
    let (Some(&doff), Some(&kind)) = (frame.get(4), frame.get(5)) else { return false };
    let Some(body) = frame.get(usize::from(doff) * 4..) else { return false };
    if kind != 0 {
        return false;
    }
    let Some(open) = encoding::performative(body).filter(|p| p.code == encoding::OPEN) else { return false };
    let Some(field) = open.fields.get(2).filter(|f| f.len() == 5 && f[0] == 0x70) else { return true };
    let Some(announced) = encoding::uint(field) else { return true };
    let at = field.as_ptr() as usize - frame.as_ptr() as usize + 1;
    let lowered = announced.saturating_sub(HEADROOM).max(MIN_MAX_FRAME_SIZE);
    frame[at..at + 4].copy_from_slice(&lowered.to_be_bytes());
    true
}

/// The smallest max-frame-size AMQP allows (part 2, 2.7.1).
const MIN_MAX_FRAME_SIZE: u32 = 512;

/// Tracks frame boundaries of the inbound byte stream (protocol headers and frames, SASL then
/// AMQP), rejects frame sizes below the 8-byte frame header or above the endpoint's max frame size,
/// and rejects encoded values that declare a length, size or count above [`MAX_DECLARED`]: in every
/// performative, and in every message (whole, once its last frame arrives). serde_amqp allocates a
/// string's or symbol's declared length before reading it, whether from the stream or from a slice.
#[derive(Debug, Default)]
struct FrameGuard {
    state: Stream,
    /// Payloads of multi-frame deliveries in progress, by channel and handle; `None` once one grew past
    /// the largest message a link takes (fe2o3 refuses it then).
    deliveries: HashMap<(u16, u32), Option<Vec<u8>>>,
    buffered: usize,
}

#[derive(Debug)]
enum Stream {
    Header { seen: u8 },
    Size { bytes: [u8; 4], seen: u8 },
    Body { frame: Vec<u8>, remaining: u32 },
}

impl Default for Stream {
    fn default() -> Self {
        Stream::Header { seen: 0 }
    }
}

/// Most payload bytes of unfinished multi-frame deliveries a connection may have buffered here.
const MAX_BUFFERED: usize = 4 << 20;

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

impl FrameGuard {
    fn scan(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            match &mut self.state {
                Stream::Header { seen } => {
                    let n = (8 - *seen as usize).min(data.len());
                    *seen += n as u8;
                    data = &data[n..];
                    if *seen == 8 {
                        self.state = Stream::Size { bytes: [0; 4], seen: 0 };
                    }
                }
                Stream::Size { bytes, seen } => {
                    bytes[*seen as usize] = data[0];
                    *seen += 1;
                    data = &data[1..];
                    if *seen == 4 {
                        self.state = match u32::from_be_bytes(*bytes) {
                            // the AMQP header that follows a SASL outcome
                            _ if bytes == b"AMQP" => Stream::Header { seen: 4 },
                            size if size < 8 => return Err(invalid(format!("frame size {size} < 8"))),
                            size if size > super::MAX_FRAME_SIZE => {
                                return Err(invalid(format!("frame size {size} > {}", super::MAX_FRAME_SIZE)));
                            }
                            size => Stream::Body { frame: Vec::with_capacity(size as usize - 4), remaining: size - 4 },
                        };
                    }
                }
                Stream::Body { frame, remaining } => {
                    let n = (*remaining as usize).min(data.len());
                    frame.extend_from_slice(&data[..n]);
                    *remaining -= n as u32;
                    data = &data[n..];
                    if *remaining == 0 {
                        let frame = std::mem::take(frame);
                        self.state = Stream::Size { bytes: [0; 4], seen: 0 };
                        self.check_frame(&frame)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks one frame (after its size field): its performative, and, at the end of a multi-frame
    /// delivery, the whole payload. What it cannot follow it leaves to fe2o3, which refuses it.
    fn check_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let (Some(&doff), Some(&kind)) = (frame.first(), frame.get(1)) else { return Ok(()) };
        let channel = u16::from_be_bytes([frame.get(2).copied().unwrap_or(0), frame.get(3).copied().unwrap_or(0)]);
        let Some(body) = (usize::from(doff) * 4).checked_sub(4).and_then(|start| frame.get(start..)) else {
            return Ok(());
        };
        if doff < 2 || body.is_empty() {
            return Ok(());
        }
        let mut rest = body;
        walk(&mut rest, 0).map_err(|size| invalid(format!("an encoded value declares {size} bytes")))?;
        let performative = &body[..body.len() - rest.len()];
        if kind != 0 {
            return Ok(());
        }
        let Some(transfer) = transfer_fields(performative) else { return Ok(()) };
        let key = (channel, transfer.handle);
        if transfer.aborted {
            self.forget(key);
            return Ok(());
        }
        match (self.deliveries.get_mut(&key), transfer.more) {
            (None, false) => check_payload(rest)?,
            (None, true) => {
                self.deliveries.insert(key, Some(rest.to_vec()));
                self.buffered += rest.len();
            }
            (Some(delivery), more) => {
                if let Some(payload) = delivery {
                    if payload.len() + rest.len() > MAX_DECLARED as usize {
                        self.buffered -= payload.len();
                        *delivery = None;
                    } else {
                        payload.extend_from_slice(rest);
                        self.buffered += rest.len();
                    }
                }
                if !more {
                    if let Some(Some(payload)) = self.deliveries.get(&key) {
                        check_payload(payload)?;
                    }
                    self.forget(key);
                }
            }
        }
        if self.buffered > MAX_BUFFERED {
            return Err(invalid(format!("{} bytes of unfinished deliveries", self.buffered)));
        }
        Ok(())
    }

    fn forget(&mut self, key: (u16, u32)) {
        if let Some(Some(payload)) = self.deliveries.remove(&key) {
            self.buffered -= payload.len();
        }
    }
}

/// Walks the sections of a whole message.
fn check_payload(mut values: &[u8]) -> std::io::Result<()> {
    while !values.is_empty() {
        match walk(&mut values, 0) {
            Ok(true) => {}
            Ok(false) => break,
            Err(size) => return Err(invalid(format!("a message value declares {size} bytes"))),
        }
    }
    Ok(())
}

/// What the guard needs of a transfer.
struct TransferFields {
    handle: u32,
    more: bool,
    aborted: bool,
}

/// The handle, `more` and `aborted` of a transfer performative; `None` for any other performative (or
/// one the guard cannot read: fe2o3 refuses it then).
fn transfer_fields(performative: &[u8]) -> Option<TransferFields> {
    let transfer = encoding::performative(performative).filter(|p| p.code == encoding::TRANSFER)?;
    let handle = encoding::uint(transfer.fields.first()?)?;
    Some(TransferFields {
        handle,
        more: encoding::is_true(transfer.fields.get(5)),
        aborted: encoding::is_true(transfer.fields.get(9)),
    })
}

impl<S: AsyncWrite + Unpin> PrefixedIo<S> {
    /// Writes what waits in `out`; Ready once all of it is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.out.len() {
            let (inner, out, written) = (&mut self.inner, &self.out, self.written);
            match Pin::new(inner).poll_write(cx, &out[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.check_killed(cx)?;
        if let Poll::Ready(Err(error)) = self.poll_drain(cx) {
            return Poll::Ready(Err(error));
        }
        if self.out.len() - self.written > MAX_UNWRITTEN {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.outbound.push(data, &mut this.out);
        if let Poll::Ready(Err(error)) = self.poll_drain(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check_killed(cx)?;
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.kill.is_cancelled() {
            std::task::ready!(self.poll_drain(cx))?;
        }
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
        let mut guard = FrameGuard::default();
        guard.scan(b"AMQP\x00\x01\x00\x00").expect("the header");
        assert!(guard.scan(&[0, 1, 0, 1]).is_err(), "a size above the max frame size is refused");
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let size = u32::try_from(body.len() + 8).expect("size");
        [&size.to_be_bytes()[..], &[2, 0, 0, 0], body].concat()
    }

    /// An attach (0x12) whose name declares `len` bytes (a sym32 where a string goes: serde_amqp reads its
    /// length first either way), as the fuzzer found it.
    fn attach_declaring(len: u32) -> Vec<u8> {
        [&[0x00, 0x53, 0x12, 0xc0, 10, 1, 0xb3][..], &len.to_be_bytes(), b"xyz"].concat()
    }

    #[test]
    fn values_declaring_more_than_a_message_can_hold_are_refused() {
        for (len, ok) in [(3, true), (1 << 20, true), ((1 << 20) + 1, false), (0xb3b3_b3b3, false)] {
            let mut guard = FrameGuard::default();
            guard.scan(b"AMQP\x00\x01\x00\x00").expect("the header");
            assert_eq!(guard.scan(&frame(&attach_declaring(len))).is_ok(), ok, "a symbol of {len} bytes");
        }
        // Inside a list inside an array inside a described value; a list's count; a SASL frame's mechanism.
        for body in [
            vec![0x00, 0x53, 0x12, 0xc0, 9, 1, 0xe0, 6, 1, 0xb3, 0xff, 0xff, 0xff, 0xff],
            vec![0x00, 0x53, 0x12, 0xd0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x40],
            vec![0x00, 0x53, 0x41, 0xc0, 6, 1, 0xb3, 0x7f, 0, 0, 0],
        ] {
            let mut guard = FrameGuard::default();
            guard.scan(b"AMQP\x00\x01\x00\x00").expect("the header");
            assert!(guard.scan(&frame(&body)).is_err(), "{body:x?}");
        }
    }

    #[test]
    fn message_payloads_are_checked_whole() {
        // transfer: handle 1, delivery-id 0, tag, format 0, settled false, more
        let transfer = |more: u8| vec![0x00, 0x53, 0x14, 0xc0, 11, 6, 0x52, 1, 0x43, 0xa0, 1, 7, 0x43, 0x42, more];
        // A data section declaring 4 GiB, cut in two frames mid-length: refused when the delivery ends.
        let section = [0x00, 0x53, 0x75, 0xb0, 0xff, 0xff, 0xff, 0xff, b'x'];
        let mut guard = FrameGuard::default();
        guard.scan(b"AMQP\x00\x01\x00\x00").expect("the header");
        guard.scan(&frame(&[transfer(0x41), section[..5].to_vec()].concat())).expect("first part");
        assert!(guard.scan(&frame(&[transfer(0x42), section[5..].to_vec()].concat())).is_err());
        // A whole 200-byte message over three frames passes; a message in one frame is checked too; garbage
        // that declares nothing too large is fe2o3's to refuse.
        let message = [&[0x00, 0x53, 0x75, 0xb0, 0, 0, 0, 200][..], &[b'x'; 200]].concat();
        let mut guard = FrameGuard::default();
        guard.scan(b"AMQP\x00\x01\x00\x00").expect("the header");
        for (i, part) in message.chunks(80).enumerate() {
            let more = if i < 2 { 0x41 } else { 0x42 };
            guard.scan(&frame(&[transfer(more), part.to_vec()].concat())).expect("a part of a good message");
        }
        assert_eq!(guard.buffered, 0, "nothing left buffered");
        guard.scan(&frame(&[transfer(0x42), vec![0x00, 0x53, 0x75, 0xb0, 0xff, 0xff]].concat())).expect("cut short");
        assert!(guard.scan(&frame(&[transfer(0x42), section.to_vec()].concat())).is_err(), "in one frame");
    }

    #[test]
    fn the_amqp_header_after_a_sasl_exchange_is_followed() {
        let mut guard = FrameGuard::default();
        guard.scan(b"AMQP\x03\x01\x00\x00").expect("SASL header");
        guard.scan(&[0, 0, 0, 8, 2, 1, 0, 0]).expect("a SASL frame");
        guard.scan(b"AMQP\x00\x01\x00\x00").expect("the AMQP header that follows");
        guard.scan(&[0, 0, 0, 8, 2, 0, 0, 0]).expect("a frame");
    }

    /// An open from `container` announcing `max_frame_size` as a uint, as rhea, uamqp and .NET send it.
    fn open_announcing(max_frame_size: u32) -> Vec<u8> {
        let mut fields = vec![0xa1, 1, b'c', 0x40, 0x70];
        fields.extend_from_slice(&max_frame_size.to_be_bytes());
        let mut body = vec![0x00, 0x53, 0x10, 0xc0, (fields.len() + 1) as u8, 3];
        body.extend_from_slice(&fields);
        frame(&body)
    }

    #[test]
    fn the_peers_open_reaches_fe2o3_with_room_for_the_rewrite_whatever_the_reads() {
        let mut stream = b"AMQP\x03\x01\x00\x00".to_vec();
        stream.extend_from_slice(&[0, 0, 0, 8, 2, 1, 0, 0]); // a SASL frame
        stream.extend_from_slice(b"AMQP\x00\x01\x00\x00");
        stream.extend_from_slice(&open_announcing(65_536));
        stream.extend_from_slice(&[0, 0, 0, 8, 2, 0, 0, 0]); // what follows the open passes as it is
        let mut expected = stream.clone();
        let at = expected.len() - 8 - 4;
        expected[at..at + 4].copy_from_slice(&(65_536 - HEADROOM).to_be_bytes());
        for chunk_size in [1, 3, 7, stream.len()] {
            let mut open = PeerOpen::default();
            let mut ready = Vec::new();
            let mut passed = false;
            for chunk in stream.chunks(chunk_size) {
                if passed {
                    ready.extend_from_slice(chunk);
                } else {
                    passed = open.push(chunk, &mut ready);
                }
            }
            assert!(passed, "the open passed (reads of {chunk_size})");
            assert_eq!(ready, expected, "reads of {chunk_size}");
        }
        let mut ready = Vec::new();
        assert!(PeerOpen::default().push(&open_announcing(512), &mut ready));
        assert_eq!(ready, open_announcing(512), "never below the smallest max-frame-size AMQP allows");
    }
}
