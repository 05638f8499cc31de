//! Rewrites the outbound frame stream under fe2o3, for two kinds of peers it does not satisfy on its own:
//!
//! - **Every performative with all its fields.** fe2o3 leaves trailing null fields out of a performative's list,
//!   which AMQP 1.0 allows (part 1, 1.4 "composite types"), but Python's `azure-eventhub` (its own AMQP stack,
//!   pyamqp) reads fields by index and fails with "list index out of range" on a short open, begin, attach, flow or
//!   transfer (`_pyamqp/_connection.py`, `session.py`, `link.py`, `receiver.py`: a transfer's payload is taken as
//!   field 11), and its network trace fails on any short frame. The missing nulls (0x40) are appended.
//! - **16-byte delivery tags.** fe2o3 tags a delivery with its 4-byte delivery number. The .NET device SDK takes a
//!   cloud-to-device message's lock token from its delivery tag with `new Guid(deliveryTag)` (azure-iot-sdk-csharp
//!   `AmqpIotMessageConverter`), which throws unless the tag is 16 bytes, and settles by looking that tag up again.
//!   Each 4-byte tag gets 12 bytes of its link's own random salt (drawn when the link attaches), so tags stay
//!   unique per link as the hub's GUID lock tokens are, and a token kept from an earlier link matches nothing.
//!
//! Both make frames longer, so [`super::io`] announces a peer's max-frame-size to fe2o3 less [`HEADROOM`].
//! Dispositions name deliveries by delivery-id, never by tag, so fe2o3 never needs to know the wider tags.

use std::collections::HashMap;

use super::encoding::{self, ATTACH, Performative, TRANSFER, Unit};

/// Bytes a rewritten frame may grow by: a transfer's tag (+12), its missing fields (at most 11 nulls) and a list8
/// turned list32 (+6), with room to spare.
pub(super) const HEADROOM: u32 = 64;

/// Full field counts of the AMQP performatives (0x10 open .. 0x18 close) and SASL frames (0x40 .. 0x44).
fn field_count(descriptor: u64) -> Option<usize> {
    Some(match descriptor {
        0x10 => 10,              // open
        0x11 => 8,               // begin
        0x12 => 14,              // attach
        0x13 => 11,              // flow
        0x14 => 11,              // transfer
        0x15 => 6,               // disposition
        0x16 => 3,               // detach
        0x17 | 0x18 => 1,        // end, close
        0x40 | 0x42 | 0x43 => 1, // sasl-mechanisms, -challenge, -response
        0x41 => 3,               // sasl-init
        0x44 => 2,               // sasl-outcome
        _ => return None,
    })
}

const DETACH: u64 = 0x16;
const END: u64 = 0x17;
/// Frame type of AMQP frames (SASL frames are 0x01).
const AMQP_FRAME: u8 = 0x00;
const NULL: u8 = 0x40;
/// A 4-byte binary (vbin8): how fe2o3 encodes its delivery tags.
const SHORT_TAG: [u8; 2] = [0xa0, 4];

/// Splits an outbound byte stream into protocol headers and frames, and rewrites each frame as the module says.
#[derive(Debug, Default)]
pub(super) struct OutboundFrames {
    pending: Vec<u8>,
    /// The tag salt of each attached sending link, by channel and handle.
    salts: HashMap<(u16, u32), [u8; 12]>,
}

impl OutboundFrames {
    /// Takes `data` and appends to `out` every protocol header and frame that is now complete, rewritten. Bytes of
    /// an unfinished frame wait for the next call.
    pub(super) fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        loop {
            let rest = &self.pending[at..];
            let size = match encoding::next_unit(rest) {
                Unit::Header => {
                    out.extend_from_slice(&rest[..8]);
                    at += 8;
                    continue;
                }
                Unit::Frame(size) => (size as usize).max(8),
                Unit::Partial => break,
            };
            if rest.len() < size {
                break;
            }
            let frame = &self.pending[at..at + size];
            match rewritten(frame, &mut self.salts) {
                Some(frame) => out.extend_from_slice(&frame),
                None => out.extend_from_slice(frame),
            }
            at += size;
        }
        self.pending.drain(..at);
    }
}

/// `frame` rewritten, or `None` when it stays as it is (nothing to change, or nothing this can read: an empty
/// heartbeat frame, an unknown descriptor).
fn rewritten(frame: &[u8], salts: &mut HashMap<(u16, u32), [u8; 12]>) -> Option<Vec<u8>> {
    let doff = usize::from(*frame.get(4)?) * 4;
    let (kind, channel) = (*frame.get(5)?, u16::from_be_bytes([*frame.get(6)?, *frame.get(7)?]));
    let body = frame.get(doff..)?;
    let Performative { head, code, fields, rest } = encoding::performative(body)?;
    let full = field_count(code)?;
    let handle = || fields.get(1).and_then(|f| encoding::uint(f));
    let mut widened_tag = None;
    if kind == AMQP_FRAME {
        match code {
            ATTACH => {
                if let Some(handle) = handle() {
                    salts.insert((channel, handle), rand::random());
                }
            }
            DETACH => {
                if let Some(handle) = fields.first().and_then(|f| encoding::uint(f)) {
                    salts.remove(&(channel, handle));
                }
            }
            END => salts.retain(|(on, _), _| *on != channel),
            TRANSFER => {
                let salt = fields.first().and_then(|f| encoding::uint(f)).and_then(|h| salts.get(&(channel, h)));
                if let (Some(salt), Some(tag)) = (salt, fields.get(2).and_then(|t| t.strip_prefix(&SHORT_TAG))) {
                    let mut wide = vec![0xa0, 16];
                    wide.extend_from_slice(tag);
                    wide.extend_from_slice(salt);
                    widened_tag = Some(wide);
                }
            }
            _ => {}
        }
    }
    if fields.len() >= full && widened_tag.is_none() {
        return None;
    }
    let mut items = Vec::with_capacity(rest.len().min(64) + 64);
    for (index, field) in fields.iter().enumerate() {
        match (&widened_tag, index) {
            (Some(tag), 2) => items.extend_from_slice(tag),
            _ => items.extend_from_slice(field),
        }
    }
    let count = fields.len().max(full);
    items.resize(items.len() + (count - fields.len()), NULL);

    let mut frame_out = Vec::with_capacity(doff + head.len() + items.len() + 9 + rest.len());
    frame_out.extend_from_slice(&[0, 0, 0, 0]);
    frame_out.extend_from_slice(frame.get(4..doff)?);
    frame_out.extend_from_slice(head);
    if items.len() < 255 {
        frame_out.extend_from_slice(&[0xc0, u8::try_from(items.len() + 1).ok()?, u8::try_from(count).ok()?]);
    } else {
        frame_out.push(0xd0);
        frame_out.extend_from_slice(&u32::try_from(items.len() + 4).ok()?.to_be_bytes());
        frame_out.extend_from_slice(&u32::try_from(count).ok()?.to_be_bytes());
    }
    frame_out.extend_from_slice(&items);
    frame_out.extend_from_slice(rest);
    let size = u32::try_from(frame_out.len()).ok()?;
    frame_out[..4].copy_from_slice(&size.to_be_bytes());
    Some(frame_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut frame = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[2, 0, 0, 1]);
        frame.extend_from_slice(body);
        frame
    }

    fn pad(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        OutboundFrames::default().push(data, &mut out);
        out
    }

    #[test]
    fn a_short_performative_gets_its_missing_fields_as_nulls() {
        // detach(handle 0, closed true): two of three fields.
        let short = frame(&[0x00, 0x53, 0x16, 0xc0, 0x03, 0x02, 0x43, 0x41]);
        assert_eq!(pad(&short), frame(&[0x00, 0x53, 0x16, 0xc0, 0x04, 0x03, 0x43, 0x41, 0x40]));
        // end with list0
        assert_eq!(pad(&frame(&[0x00, 0x53, 0x17, 0x45])), frame(&[0x00, 0x53, 0x17, 0xc0, 0x02, 0x01, 0x40]));
    }

    #[test]
    fn a_transfer_keeps_its_payload_after_the_padded_list() {
        let mut body = vec![0x00, 0x53, 0x14, 0xc0, 0x03, 0x02, 0x43, 0x43];
        body.extend_from_slice(b"\x00\x53\x75\xa0\x02hi");
        let padded = pad(&frame(&body));
        let mut expected = vec![0x00, 0x53, 0x14, 0xc0, 0x0c, 0x0b, 0x43, 0x43];
        expected.extend_from_slice(&[0x40; 9]);
        expected.extend_from_slice(b"\x00\x53\x75\xa0\x02hi");
        assert_eq!(padded, frame(&expected));
    }

    #[test]
    fn headers_full_frames_heartbeats_and_split_writes_pass_through() {
        let full_close = frame(&[0x00, 0x53, 0x18, 0xc0, 0x02, 0x01, 0x40]);
        let heartbeat = frame(&[]);
        let mut stream = b"AMQP\x00\x01\x00\x00".to_vec();
        stream.extend_from_slice(&heartbeat);
        stream.extend_from_slice(&full_close);
        let mut padder = OutboundFrames::default();
        let mut out = Vec::new();
        for byte in &stream {
            padder.push(std::slice::from_ref(byte), &mut out);
        }
        assert_eq!(out, stream, "nothing to pad, one byte at a time");
    }

    #[test]
    fn a_list_that_outgrows_list8_becomes_list32() {
        let mut fields = vec![0xa1, 250];
        fields.extend_from_slice(&[b'x'; 250]);
        let mut body = vec![0x00, 0x53, 0x10, 0xc0, (fields.len() + 1) as u8, 0x01];
        body.extend_from_slice(&fields);
        let padded = pad(&frame(&body));
        let list = &padded[8 + 3..];
        assert_eq!(list[0], 0xd0);
        assert_eq!(u32::from_be_bytes([list[5], list[6], list[7], list[8]]), 10);
        assert_eq!(u32::from_be_bytes([list[1], list[2], list[3], list[4]]) as usize, 4 + fields.len() + 9);
        assert_eq!(u32::from_be_bytes([padded[0], padded[1], padded[2], padded[3]]) as usize, padded.len());
    }

    /// A sender's attach on `handle` (name "l", role sender), as fe2o3 writes it.
    fn attach(handle: u8) -> Vec<u8> {
        frame(&[0x00, 0x53, 0x12, 0xc0, 0x07, 0x03, 0xa1, 0x01, b'l', 0x52, handle, 0x42])
    }

    /// A transfer on `handle` with fe2o3's 4-byte tag `tag` and a payload.
    fn transfer(handle: u8, tag: u32, more: bool) -> Vec<u8> {
        let mut body = vec![0x00, 0x53, 0x14, 0xc0, 0x0e, 0x06, 0x52, handle, 0x52, 0x00, 0xa0, 0x04];
        body.extend_from_slice(&tag.to_be_bytes());
        body.extend_from_slice(&[0x43, 0x42, if more { 0x41 } else { 0x42 }]);
        body.extend_from_slice(b"\x00\x53\x75\xa0\x02hi");
        frame(&body)
    }

    /// The delivery tag of a rewritten transfer.
    fn tag_of(frame: &[u8]) -> Vec<u8> {
        let p = encoding::performative(&frame[8..]).expect("a transfer");
        assert_eq!(p.rest, b"\x00\x53\x75\xa0\x02hi", "the payload follows unchanged");
        assert_eq!(p.fields.len(), 11, "every field");
        assert_eq!(u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize, frame.len());
        p.fields[2].strip_prefix(&[0xa0, 16]).expect("a 16-byte binary").to_vec()
    }

    #[test]
    fn delivery_tags_become_16_bytes_unique_to_the_link_and_consistent_across_a_delivery() {
        let mut outbound = OutboundFrames::default();
        let mut out = Vec::new();
        outbound.push(&attach(0), &mut out);
        assert_eq!(out.len(), attach(0).len() + 11, "the attach is padded");
        let mut rewrite = |data: &[u8]| {
            let mut out = Vec::new();
            outbound.push(data, &mut out);
            out
        };
        let first = tag_of(&rewrite(&transfer(0, 1, true)));
        assert_eq!(&first[..4], &[0, 0, 0, 1], "fe2o3's number leads");
        assert_eq!(tag_of(&rewrite(&transfer(0, 1, false))), first, "a delivery's frames carry one tag");
        let second = tag_of(&rewrite(&transfer(0, 2, false)));
        assert_eq!(second[4..], first[4..], "one salt per link");
        assert_ne!(second, first);
        rewrite(&frame(&[0x00, 0x53, 0x16, 0xc0, 0x03, 0x02, 0x43, 0x41])); // detach handle 0
        rewrite(&attach(0));
        let reattached = tag_of(&rewrite(&transfer(0, 1, false)));
        assert_eq!(reattached[..4], first[..4]);
        assert_ne!(reattached, first, "a link attached again on the same handle gets a new salt");
        rewrite(&attach(1));
        let other = tag_of(&rewrite(&transfer(1, 1, false)));
        assert_ne!(other[4..], reattached[4..], "links have salts of their own");
    }
}
