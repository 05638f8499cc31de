//! Reading AMQP 1.0 encoded values and performatives straight off frame bytes, for the byte-stream stages under
//! fe2o3 ([`super::io`]'s inbound guard and the peer's open, [`super::outbound`]'s rewrite): they must
//! look inside frames without decoding them, and without trusting a declared size.

/// Largest length, size or count an encoded value may declare. Nothing legitimate comes near: a frame
/// is at most 64 KiB, a message at most 1 MiB.
pub(super) const MAX_DECLARED: u32 = 1 << 20;

/// What a byte stream of AMQP starts with: a protocol header (8 bytes), a frame of the size its first four bytes
/// declare (not yet checked, nor known to be whole), or too few bytes to tell.
pub(super) enum Unit {
    Header,
    Frame(u32),
    Partial,
}

/// The unit at the start of `stream`, for the stages that split the byte stream under fe2o3 into headers and frames.
pub(super) fn next_unit(stream: &[u8]) -> Unit {
    match stream {
        [b'A', b'M', b'Q', b'P', ..] if stream.len() >= 8 => Unit::Header,
        [b'A', b'M', b'Q', b'P', ..] => Unit::Partial,
        [a, b, c, d, ..] => Unit::Frame(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Unit::Partial,
    }
}

/// Performative descriptor codes this crate looks for (AMQP 1.0 part 2, 2.7).
pub(super) const OPEN: u64 = 0x10;
pub(super) const ATTACH: u64 = 0x12;
pub(super) const TRANSFER: u64 = 0x14;

/// A performative read off a frame body: its descriptor (the bytes, and the code), the encoded bytes of each field
/// of its list, and the bytes after the list (a transfer's payload).
pub(super) struct Performative<'a> {
    pub head: &'a [u8],
    pub code: u64,
    pub fields: Vec<&'a [u8]>,
    pub rest: &'a [u8],
}

/// Reads the performative at the start of `body` (a frame's bytes after its data offset). `None` when it is
/// not a described list this can follow (fe2o3 then refuses it, or it is not a performative at all).
pub(super) fn performative(body: &[u8]) -> Option<Performative<'_>> {
    let mut bytes = body.strip_prefix(&[0x00])?;
    let descriptor = take_value(&mut bytes)?;
    let code = match descriptor {
        [0x53, code] => u64::from(*code),
        [0x80, b @ ..] => u64::from_be_bytes((*b).try_into().ok()?),
        [0xa3, _, symbol @ ..] | [0xb3, _, _, _, _, symbol @ ..] => symbol_code(symbol)?,
        _ => return None,
    };
    let head = &body[..body.len() - bytes.len()];
    // The items are read one after another whatever the list's size says, as serde_amqp reads them (and as
    // `walk` does): the list ends where its last item does.
    let (constructor, after) = bytes.split_first()?;
    let (count, mut items) = match constructor {
        0x45 => (0, after),
        0xc0 => (u32::from(*after.get(1)?), after.get(2..)?),
        0xd0 => (u32::from_be_bytes(after.get(4..8)?.try_into().ok()?), after.get(8..)?),
        _ => return None,
    };
    if count > 64 {
        return None;
    }
    let mut fields = Vec::with_capacity(count as usize);
    for _ in 0..count {
        fields.push(take_value(&mut items)?);
    }
    let rest = items;
    Some(Performative { head, code, fields, rest })
}

fn symbol_code(symbol: &[u8]) -> Option<u64> {
    Some(match symbol {
        b"amqp:open:list" => OPEN,
        b"amqp:attach:list" => ATTACH,
        b"amqp:transfer:list" => TRANSFER,
        _ => return None,
    })
}

/// The value of an encoded `uint` field (uint0, smalluint or uint); `None` for anything else, null included.
pub(super) fn uint(field: &[u8]) -> Option<u32> {
    match field {
        [0x43] => Some(0),
        [0x52, n] => Some(u32::from(*n)),
        [0x70, b @ ..] => Some(u32::from_be_bytes((*b).try_into().ok()?)),
        _ => None,
    }
}

/// Whether an encoded `boolean` field is true (null and absent read as false, the fields' default).
pub(super) fn is_true(field: Option<&&[u8]>) -> bool {
    matches!(field, Some([0x41] | [0x56, 1]))
}

/// Takes one whole encoded value off the front of `bytes`, if it is there and within the limits.
pub(super) fn take_value<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
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
pub(super) fn walk(bytes: &mut &[u8], depth: u32) -> Result<bool, u32> {
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
    // compound (list, map) or array: the count, then the items. serde_amqp reads them one after another
    // whatever `size` says, so they are walked the same way, and every byte it reads as a value is walked.
    // Walking only `size` bytes let items past it through unchecked (a fuzz case: a list declaring 0 bytes and
    // 1,794 items, the first declaring 3 GB). A size that is not its items' is fe2o3's to refuse.
    let Some(count) = read(bytes, width) else { return Ok(false) };
    declared(count)?;
    if code >> 4 <= 0xd {
        for _ in 0..count {
            if !walk(bytes, depth + 1)? {
                return Ok(false);
            }
        }
    } else {
        let Some((&element, rest)) = bytes.split_first() else { return Ok(false) };
        *bytes = rest;
        let element = if element == 0x00 {
            if !walk(bytes, depth + 1)? {
                return Ok(false);
            }
            let Some((&element, rest)) = bytes.split_first() else { return Ok(false) };
            *bytes = rest;
            element
        } else {
            element
        };
        for _ in 0..count {
            if !walk_after(element, bytes, depth + 1)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
