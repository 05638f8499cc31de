//! The byte stream under an AMQP connection: replays the protocol header the endpoint read to choose between
//! SASL and plain AMQP, guards fe2o3 against frames it cannot decode, and can be cut off.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::padding::FramePadder;

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
    header: [u8; 8],
    pos: usize,
    inner: S,
    guard: FrameGuard,
    /// Outbound frames get their full field lists (`padding`), and wait in `out` until the stream takes them.
    padder: FramePadder,
    out: Vec<u8>,
    written: usize,
    kill: CancellationToken,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> PrefixedIo<S> {
    pub(super) fn new(header: [u8; 8], inner: S, kill: CancellationToken) -> Self {
        let killed = Box::pin(kill.clone().cancelled_owned());
        Self {
            header,
            pos: 0,
            inner,
            guard: FrameGuard::default(),
            padder: FramePadder::default(),
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

/// Largest length, size or count an encoded value may declare. Nothing legitimate comes near: a frame
/// is at most 64 KiB, a message at most 1 MiB.
const MAX_DECLARED: u32 = 1 << 20;
/// Most payload bytes of unfinished multi-frame deliveries a connection may have buffered here.
const MAX_BUFFERED: usize = 4 << 20;
/// Transfer performative descriptors.
const TRANSFER_CODE: u8 = 0x14;
const TRANSFER_SYMBOL: &[u8] = b"amqp:transfer:list";

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
    let mut bytes = performative.strip_prefix(&[0x00])?;
    let descriptor = take_value(&mut bytes)?;
    let is_transfer = match descriptor {
        [0x53, code] | [0x80, 0, 0, 0, 0, 0, 0, 0, code] => *code == TRANSFER_CODE,
        [0xa3, _, symbol @ ..] | [0xb3, _, _, _, _, symbol @ ..] => symbol == TRANSFER_SYMBOL,
        _ => false,
    };
    if !is_transfer {
        return None;
    }
    let (code, mut items) = bytes.split_first()?;
    let count = match code {
        0x45 => 0,
        0xc0 => {
            let count = u32::from(*items.get(1)?);
            items = items.get(2..)?;
            count
        }
        0xd0 => {
            let count = u32::from_be_bytes(items.get(4..8)?.try_into().ok()?);
            items = items.get(8..)?;
            count
        }
        _ => return None,
    };
    let mut fields = Vec::new();
    for _ in 0..count.min(10) {
        fields.push(take_value(&mut items)?);
    }
    let handle = match fields.first()? {
        [0x43] => 0,
        [0x52, n] => u32::from(*n),
        [0x70, b @ ..] => u32::from_be_bytes((*b).try_into().ok()?),
        _ => return None,
    };
    let flag = |field: usize| matches!(fields.get(field), Some([0x41] | [0x56, 1]));
    Some(TransferFields { handle, more: flag(5), aborted: flag(9) })
}

/// Takes one whole encoded value off the front of `bytes`, if it is there and within the limits.
fn take_value<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let start = *bytes;
    match walk(bytes, 0) {
        Ok(true) => Some(&start[..start.len() - bytes.len()]),
        _ => None,
    }
}

/// Nesting deeper than this is left to serde_amqp (which refuses it) rather than followed here.
const MAX_DEPTH: u32 = 64;

/// Walks one encoded value off the front of `bytes` (AMQP 1.0 part 1: the constructor's high nibble
/// says how its width is encoded). `Err(declared)` when it, or anything in it, declares a length, size
/// or count above [`MAX_DECLARED`]; `Ok(false)` when the value cannot be followed (cut short, an
/// unknown constructor, too deep); `Ok(true)` when it was walked whole.
fn walk(bytes: &mut &[u8], depth: u32) -> Result<bool, u32> {
    if depth > MAX_DEPTH {
        return Ok(false);
    }
    let Some((&code, rest)) = bytes.split_first() else { return Ok(false) };
    *bytes = rest;
    if code == 0x00 {
        return Ok(walk(bytes, depth + 1)? && walk(bytes, depth + 1)?);
    }
    walk_after(code, bytes, depth)
}

/// Walks what follows the constructor `code`.
fn walk_after(code: u8, bytes: &mut &[u8], depth: u32) -> Result<bool, u32> {
    let skip = |bytes: &mut &[u8], n: usize| match bytes.get(n..) {
        Some(rest) => {
            *bytes = rest;
            true
        }
        None => false,
    };
    let read = |bytes: &mut &[u8], width: usize| -> Option<u32> {
        let field = bytes.get(..width)?;
        *bytes = &bytes[width..];
        Some(field.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)))
    };
    let declared = |n: u32| if n > MAX_DECLARED { Err(n) } else { Ok(n as usize) };
    let width = match code >> 4 {
        0x4 => return Ok(true),
        0x5 => return Ok(skip(bytes, 1)),
        0x6 => return Ok(skip(bytes, 2)),
        0x7 => return Ok(skip(bytes, 4)),
        0x8 => return Ok(skip(bytes, 8)),
        0x9 => return Ok(skip(bytes, 16)),
        0xa | 0xc | 0xe => 1,
        0xb | 0xd | 0xf => 4,
        _ => return Ok(false),
    };
    let Some(size) = read(bytes, width) else { return Ok(false) };
    let size = declared(size)?;
    if code >> 4 <= 0xb {
        // variable width: binary, string, symbol
        return Ok(skip(bytes, size));
    }
    // compound (list, map) or array: the count, then the items, within `size`. serde_amqp reads the
    // items without checking `size` first, so a compound cut short is walked as far as it goes.
    let (mut inner, after) = bytes.split_at(size.min(bytes.len()));
    *bytes = after;
    let Some(count) = read(&mut inner, width) else { return Ok(false) };
    declared(count)?;
    if code >> 4 <= 0xd {
        for _ in 0..count {
            if !walk(&mut inner, depth + 1)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let Some((&element, rest)) = inner.split_first() else { return Ok(false) };
    inner = rest;
    let element = if element == 0x00 {
        if !walk(&mut inner, depth + 1)? {
            return Ok(false);
        }
        let Some((&element, rest)) = inner.split_first() else { return Ok(false) };
        inner = rest;
        element
    } else {
        element
    };
    for _ in 0..count {
        if !walk_after(element, &mut inner, depth + 1)? {
            return Ok(false);
        }
    }
    Ok(true)
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
        this.padder.push(data, &mut this.out);
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
}
