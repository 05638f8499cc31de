//! Writes every performative with all its fields. fe2o3 leaves trailing null fields out of a performative's list,
//! which AMQP 1.0 allows (part 1, 1.4 "composite types"), but Python's `azure-eventhub` (its own AMQP stack,
//! pyamqp) reads fields by index and fails with "list index out of range" on a short open, begin, attach, flow or
//! transfer (`_pyamqp/_connection.py`, `session.py`, `link.py`, `receiver.py`: a transfer's payload is taken as
//! field 11), and its network trace fails on any short frame. The outbound byte stream passes through a
//! [`FramePadder`] that appends the missing nulls (0x40) and fixes the list and frame sizes.

/// Full field counts of the AMQP performatives (0x10 open .. 0x18 close) and SASL frames (0x40 .. 0x44).
fn field_count(descriptor: u64) -> Option<u32> {
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

/// Splits an outbound byte stream into protocol headers and frames, and pads each frame's performative.
#[derive(Debug, Default)]
pub(super) struct FramePadder {
    pending: Vec<u8>,
}

const NULL: u8 = 0x40;

impl FramePadder {
    /// Takes `data` and appends to `out` every protocol header and frame that is now complete, padded. Bytes of
    /// an unfinished frame wait for the next call.
    pub(super) fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        loop {
            let rest = &self.pending[at..];
            if rest.len() >= 4 && rest.starts_with(b"AMQP") {
                if rest.len() < 8 {
                    break;
                }
                out.extend_from_slice(&rest[..8]);
                at += 8;
                continue;
            }
            let Some(size) = rest.get(..4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize) else {
                break;
            };
            if rest.len() < size.max(8) {
                break;
            }
            pad_frame(&rest[..size.max(8)], out);
            at += size.max(8);
        }
        self.pending.drain(..at);
    }
}

/// Appends `frame` to `out`, with its performative padded to the full field count when it can be read; any
/// frame it cannot read (an empty heartbeat frame, an unknown descriptor) is copied as it is.
fn pad_frame(frame: &[u8], out: &mut Vec<u8>) {
    match padded(frame) {
        Some(padded) => out.extend_from_slice(&padded),
        None => out.extend_from_slice(frame),
    }
}

fn padded(frame: &[u8]) -> Option<Vec<u8>> {
    let doff = usize::from(*frame.get(4)?) * 4;
    let body = frame.get(doff..)?;
    // The descriptor: 0x00 then a smallulong (0x53 n) or ulong (0x80 8 bytes).
    let (descriptor, list_at) = match body {
        [0x00, 0x53, code, ..] => (u64::from(*code), 3),
        [0x00, 0x80, rest @ ..] if rest.len() >= 8 => {
            (u64::from_be_bytes([rest[0], rest[1], rest[2], rest[3], rest[4], rest[5], rest[6], rest[7]]), 10)
        }
        _ => return None,
    };
    let full = field_count(descriptor)?;
    let list = body.get(list_at..)?;
    // (count, fields bytes, bytes after the list)
    let (count, fields, after) = match list {
        [0x45, after @ ..] => (0u32, &[][..], after),
        [0xc0, size, count, rest @ ..] => {
            let len = usize::from(*size).checked_sub(1)?;
            (u32::from(*count), rest.get(..len)?, rest.get(len..)?)
        }
        [0xd0, s0, s1, s2, s3, c0, c1, c2, c3, rest @ ..] => {
            let len = (u32::from_be_bytes([*s0, *s1, *s2, *s3]) as usize).checked_sub(4)?;
            (u32::from_be_bytes([*c0, *c1, *c2, *c3]), rest.get(..len)?, rest.get(len..)?)
        }
        _ => return None,
    };
    if count >= full {
        return None;
    }
    let missing = (full - count) as usize;
    let mut list_bytes = Vec::with_capacity(fields.len() + missing + 9);
    let new_len = fields.len() + missing;
    if new_len < 255 {
        list_bytes.push(0xc0);
        list_bytes.push(u8::try_from(new_len + 1).ok()?);
        list_bytes.push(u8::try_from(full).ok()?);
    } else {
        list_bytes.push(0xd0);
        list_bytes.extend_from_slice(&u32::try_from(new_len + 4).ok()?.to_be_bytes());
        list_bytes.extend_from_slice(&full.to_be_bytes());
    }
    list_bytes.extend_from_slice(fields);
    list_bytes.resize(list_bytes.len() + missing, NULL);

    let mut padded = Vec::with_capacity(frame.len() + missing + 9);
    padded.extend_from_slice(&[0, 0, 0, 0]);
    padded.extend_from_slice(&frame[4..doff]);
    padded.extend_from_slice(&body[..list_at]);
    padded.extend_from_slice(&list_bytes);
    padded.extend_from_slice(after);
    let size = u32::try_from(padded.len()).ok()?;
    padded[..4].copy_from_slice(&size.to_be_bytes());
    Some(padded)
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
        FramePadder::default().push(data, &mut out);
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
        let mut padder = FramePadder::default();
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
}
