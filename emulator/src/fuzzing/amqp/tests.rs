//! The AMQP endpoint under hand-written and generated inputs: every case must end cleanly and leave the hub
//! serving; the hand-written ones must also get the answer the hub gives.

use proptest::prelude::*;

use super::*;

thread_local! {
    /// One AMQP target (hub and starts) and its runtime per test thread, shared by that thread's cases.
    static AMQP: (tokio::runtime::Runtime, AmqpTarget) = (paused_runtime(), AmqpTarget::new());
}

/// A frame that is almost right: a size that is usually true, doff 2 and type 0 or 1 mostly, a performative
/// descriptor, and fields that are empty, a short list of arbitrary bytes, or arbitrary bytes.
fn almost_a_frame() -> impl Strategy<Value = Vec<u8>> {
    let doff = prop_oneof![4 => Just(2u8), 1 => any::<u8>()];
    let kind = prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => any::<u8>()];
    let fields = prop_oneof![
        Just(vec![0x45]),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| [vec![0xc0, b.len() as u8 + 1, 4], b].concat()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    let size_error = prop_oneof![4 => Just(0i64), 1 => -12i64..12];
    (doff, kind, 0u16..3, 0x10u8..=0x18, fields, size_error).prop_map(
        |(doff, kind, channel, code, fields, size_error)| {
            let body = [vec![0x00, 0x53, code], fields].concat();
            let size = u32::try_from((body.len() as i64 + 8 + size_error).max(0)).unwrap_or(0);
            [size.to_be_bytes().to_vec(), vec![doff, kind], channel.to_be_bytes().to_vec(), body].concat()
        },
    )
}

proptest! {
    // Each case serves a whole connection (in paused time, so about a millisecond): a few dozen will do here;
    // the fuzz target runs millions.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_bytes_after_any_amqp_start_end_cleanly(start in any::<u8>(), bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        AMQP.with(|(runtime, target)| target.run(runtime, &[&[start], &bytes[..]].concat()));
    }

    #[test]
    fn almost_right_frames_after_any_amqp_start_end_cleanly(start in any::<u8>(), frames in prop::collection::vec(almost_a_frame(), 0..5)) {
        AMQP.with(|(runtime, target)| target.run(runtime, &[vec![start], frames.concat()].concat()));
    }
}

/// A current-thread runtime with paused time, as the fuzz target runs AMQP sessions on.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("a runtime")
}

/// A few pieces of the AMQP type system, to write messages and frames by hand.
mod enc {
    pub fn str8(text: &str) -> Vec<u8> {
        [vec![0xa1, text.len() as u8], text.as_bytes().to_vec()].concat()
    }
    pub fn list(items: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = items.concat();
        let size = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
        [vec![0xd0], size.to_be_bytes().to_vec(), (items.len() as u32).to_be_bytes().to_vec(), body].concat()
    }
    pub fn map(pairs: &[(&str, &str)]) -> Vec<u8> {
        let body: Vec<u8> = pairs.iter().flat_map(|(k, v)| [str8(k), str8(v)].concat()).collect();
        let size = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
        [vec![0xd1], size.to_be_bytes().to_vec(), ((pairs.len() * 2) as u32).to_be_bytes().to_vec(), body].concat()
    }
    pub fn described(code: u8, value: Vec<u8>) -> Vec<u8> {
        [vec![0x00, 0x53, code], value].concat()
    }
    /// A frame: size, doff, type, channel, then `body`.
    pub fn frame(doff: u8, kind: u8, channel: u16, body: &[u8]) -> Vec<u8> {
        let size = u32::try_from(body.len() + 8).unwrap_or(u32::MAX);
        [size.to_be_bytes().to_vec(), vec![doff, kind], channel.to_be_bytes().to_vec(), body.to_vec()].concat()
    }
    /// A message: properties (`to`, and `reply-to` when given), application properties, and a data body.
    pub fn message(to: Option<&str>, properties: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let null = vec![0x40];
        let to = to.map_or(null.clone(), str8);
        let mut sections = described(0x73, list(&[null.clone(), null, to]));
        if !properties.is_empty() {
            sections.extend(described(0x74, map(properties)));
        }
        let size = u32::try_from(body.len()).unwrap_or(u32::MAX);
        sections.extend(described(0x75, [vec![0xb0], size.to_be_bytes().to_vec(), body.to_vec()].concat()));
        sections
    }
    /// A `$cbs` put-token request for `audience` (message-id 7, reply-to `cbs`).
    /// A message-annotations section with symbol keys and string values.
    pub fn annotations(pairs: &[(&str, &str)]) -> Vec<u8> {
        let sym8 = |text: &str| [vec![0xa3, text.len() as u8], text.as_bytes().to_vec()].concat();
        let body: Vec<u8> = pairs.iter().flat_map(|(k, v)| [sym8(k), str8(v)].concat()).collect();
        let count = (pairs.len() * 2) as u32;
        described(
            0x72,
            [vec![0xd1], ((body.len() + 4) as u32).to_be_bytes().to_vec(), count.to_be_bytes().to_vec(), body].concat(),
        )
    }

    pub fn put_token(token: &str, audience: &str) -> Vec<u8> {
        super::super::tests_free::put_token(token, audience)
    }
}

/// One line per thing the server said: `header 0` (its protocol id), `sasl outcome Ok`, `begin`,
/// `detach 0 amqp:not-found`, `accepted`, `rejected amqp:invalid-field`, `close amqp:illegal-state`...
fn summary(said: &[ServerSaid]) -> Vec<String> {
    use fe2o3_amqp::frames::amqp::FrameBody;
    use fe2o3_amqp::frames::sasl::Frame as Sasl;
    use fe2o3_amqp::types::definitions::{Error, ErrorCondition as C};
    use fe2o3_amqp::types::messaging::DeliveryState;
    use fe2o3_amqp::types::primitives::Symbol;
    let condition = |error: &Option<Error>| {
        let symbol = |e: &Error| match &e.condition {
            C::AmqpError(e) => Symbol::from(e),
            C::ConnectionError(e) => Symbol::from(e),
            C::SessionError(e) => Symbol::from(e),
            C::LinkError(e) => Symbol::from(e),
            C::Custom(s) => s.clone(),
        };
        error.as_ref().map_or(String::new(), |e| format!(" {}", symbol(e).as_str()))
    };
    said.iter()
        .map(|s| match s {
            ServerSaid::Header(h) => format!("header {}", h[4]),
            ServerSaid::Sasl(Sasl::Mechanisms(_)) => "sasl mechanisms".into(),
            ServerSaid::Sasl(Sasl::Outcome(o)) => format!("sasl outcome {:?}", o.code),
            ServerSaid::Sasl(other) => format!("sasl {other:?}"),
            ServerSaid::Amqp(frame) => match &frame.body {
                FrameBody::Open(_) => "open".into(),
                FrameBody::Begin(_) => "begin".into(),
                FrameBody::Attach(a) => format!("attach {}", a.handle.0),
                FrameBody::Flow(_) => "flow".into(),
                FrameBody::Transfer { performative, .. } => format!("transfer {}", performative.handle.0),
                FrameBody::Disposition(d) => match &d.state {
                    Some(DeliveryState::Accepted(_)) => "accepted".into(),
                    Some(DeliveryState::Rejected(r)) => format!("rejected{}", condition(&r.error)),
                    other => format!("disposition {other:?}"),
                },
                FrameBody::Detach(d) => format!("detach {}{}", d.handle.0, condition(&d.error)),
                FrameBody::End(e) => format!("end{}", condition(&e.error)),
                FrameBody::Close(c) => format!("close{}", condition(&c.error)),
                FrameBody::Empty => "empty".into(),
            },
        })
        .collect()
}

/// What the server must have said in answer to a hand-written input (see [`summary`] for the lines).
enum Expect {
    /// Exactly these lines.
    Exactly(&'static [&'static str]),
    /// These lines among others.
    Contains(&'static [&'static str]),
    /// Nothing but lines among these: the input was refused before anything was served.
    Only(&'static [&'static str]),
}

/// What the server says to a client that leaves without closing: it closes the connection itself.
const LEFT: &str = "close amqp:illegal-state";
/// The server's side of a connection that never got past the Open.
const REFUSED: &[&str] = &["header 0", "open", "close", LEFT];

/// What the server says to the Device start when the next frame is refused: its links, and nothing answered.
const DEVICE_CUT_OFF: &[&str] = &[
    "header 0",
    "open",
    "begin",
    "attach 0",
    "flow",
    "attach 1",
    "accepted",
    "transfer 1",
    "attach 2",
    "flow",
    "attach 3",
    "flow",
    "attach 4",
];

/// What the server says to a SASL PLAIN login with a devicebound and a feedback link, up to the feedback
/// message it offers (left unsettled).
const LINKS_UP: &[&str] = &[
    "header 3",
    "sasl mechanisms",
    "sasl outcome Ok",
    "header 0",
    "open",
    "begin",
    "attach 0",
    "flow",
    "attach 1",
    "transfer 1",
];

/// Hand-written AMQP inputs: what they are, where they start, the bytes that follow, and the answer.
fn amqp_cases() -> Vec<(&'static str, AmqpStart, Vec<u8>, Expect)> {
    use super::{attach, begin, encode, open, transfer, transfer_part};
    use Expect::{Contains, Exactly, Only};
    use fe2o3_amqp::types::definitions::Role;
    let to = "/devices/fuzz/messages/devicebound";
    let attach_to = |address: &str| encode(vec![attach(2, "fuzz-link", Role::Sender, address, None)]);
    let send = |payload: Vec<u8>| encode(vec![transfer(0, 0, payload)]);
    // After the Device start's put-token (delivery 0), the next delivery is 1.
    let device_send = |handle: u32, payload: Vec<u8>| encode(vec![transfer(handle, 1, payload)]);
    let sasl_init_xyz = enc::described(0x41, enc::list(&[vec![0xa3, 3, b'X', b'Y', b'Z']]));
    vec![
        // The protocol header.
        ("a garbage protocol header", AmqpStart::Raw, b"GET / HTTP/1.1\r\n\r\n".to_vec(), Exactly(&["header 3"])),
        ("an AMQP 0-9-1 protocol header", AmqpStart::Raw, b"AMQP\x00\x00\x09\x01".to_vec(), Exactly(&["header 3"])),
        ("the TLS protocol header", AmqpStart::Raw, b"AMQP\x02\x01\x00\x00".to_vec(), Exactly(&["header 3"])),
        ("a protocol header cut short", AmqpStart::Raw, b"AMQP\x00\x01".to_vec(), Exactly(&[])),
        // Frame sizes and headers.
        ("frame size 0 before Open", AmqpStart::Header, vec![0, 0, 0, 0, 2, 0, 0, 0], Only(REFUSED)),
        ("frame size 4 before Open", AmqpStart::Header, vec![0, 0, 0, 4, 2, 0, 0, 0], Only(REFUSED)),
        ("frame size 7 after Open", AmqpStart::Open, vec![0, 0, 0, 7, 2, 0, 0, 0], Only(REFUSED)),
        (
            "frame size 7 in SASL",
            AmqpStart::SaslHeader,
            vec![0, 0, 0, 7, 2, 1, 0, 0],
            Exactly(&["header 3", "sasl mechanisms"]),
        ),
        ("a huge frame size", AmqpStart::Open, vec![0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0], Only(REFUSED)),
        ("a frame over 512 bytes before Open", AmqpStart::Header, enc::frame(2, 0, 0, &[0x40; 600]), Only(REFUSED)),
        (
            "a frame over 64 KiB after Open",
            AmqpStart::Open,
            enc::frame(2, 0, 0, &vec![0x40; 65_537]),
            Only(REFUSED),
        ),
        ("a truncated frame", AmqpStart::Open, vec![0, 0, 0, 64, 2, 0, 0, 0, 0x00, 0x53, 0x11], Only(REFUSED)),
        ("doff 0", AmqpStart::Open, enc::frame(0, 0, 0, &[]), Only(REFUSED)),
        ("doff 1", AmqpStart::Open, enc::frame(1, 0, 0, &[0x00, 0x53, 0x11, 0x45]), Only(REFUSED)),
        (
            "doff 3 (an extended header)",
            AmqpStart::Open,
            enc::frame(3, 0, 0, &[0, 0, 0, 0, 0x00, 0x53, 0x18, 0x45]),
            Only(REFUSED),
        ),
        ("an unknown frame type", AmqpStart::Open, enc::frame(2, 5, 0, &[0x45]), Only(REFUSED)),
        ("an unknown performative", AmqpStart::Open, enc::frame(2, 0, 0, &[0x00, 0x53, 0x19, 0x45]), Only(REFUSED)),
        ("a performative that is not described", AmqpStart::Open, enc::frame(2, 0, 0, &[0x45]), Only(REFUSED)),
        (
            "an empty frame (a heartbeat)",
            AmqpStart::Open,
            enc::frame(2, 0, 0, &[]),
            Exactly(&["header 0", "open", LEFT]),
        ),
        // Connection and session state.
        ("a second Open", AmqpStart::Open, encode(vec![open()]), Exactly(&["header 0", "open", LEFT])),
        (
            "a Begin on a channel past channel-max",
            AmqpStart::Open,
            encode(vec![begin(300)]),
            Only(&["header 0", "open", "begin", LEFT]),
        ),
        (
            "an attach on a channel with no session",
            AmqpStart::Open,
            enc::frame(2, 0, 3, &attach_to("$cbs")[8..]),
            Exactly(&["header 0", "open", "close amqp:not-found"]),
        ),
        (
            "a transfer on an unattached handle",
            AmqpStart::Begin,
            encode(vec![transfer(7, 0, enc::message(Some(to), &[], b"x"))]),
            Exactly(&["header 0", "open", "begin", LEFT]),
        ),
        // Links.
        (
            "an attach to an unknown address",
            AmqpStart::Begin,
            attach_to("/nowhere"),
            Contains(&["detach 0 amqp:not-found"]),
        ),
        (
            "an attach to devicebound without a token",
            AmqpStart::Begin,
            attach_to("/messages/devicebound"),
            Contains(&["detach 0 amqp:unauthorized-access"]),
        ),
        // SASL.
        (
            "an unknown SASL mechanism",
            AmqpStart::SaslHeader,
            enc::frame(2, 1, 0, &sasl_init_xyz),
            Exactly(&["header 3", "sasl mechanisms", "sasl outcome Auth"]),
        ),
        (
            "an AMQP frame during SASL",
            AmqpStart::SaslHeader,
            encode(vec![open()]),
            Exactly(&["header 3", "sasl mechanisms"]),
        ),
        // $cbs: the reply goes out and is never settled; the client leaves.
        (
            "a put-token with a garbage token",
            AmqpStart::Cbs,
            send(enc::put_token("SharedAccessSignature sr=&sig=&se=", "localhost")),
            Contains(&["accepted", "transfer 1"]),
        ),
        (
            "a put-token that is not a message",
            AmqpStart::Cbs,
            send(vec![0x00, 0x53, 0x77, 0xff]),
            Contains(&["rejected amqp:decode-error"]),
        ),
        // Cloud-to-device messages (each session ends by purging the queue, so the message with `full` feedback
        // sends a feedback message over the next session's feedback link, never settled either).
        (
            "a message to the device",
            AmqpStart::DeviceBound,
            send(enc::message(Some(to), &[("iothub-ack", "full")], b"hi")),
            Contains(&["accepted"]),
        ),
        (
            "a message without 'to'",
            AmqpStart::DeviceBound,
            send(enc::message(None, &[], b"x")),
            Contains(&["transfer 1", "rejected amqp:invalid-field"]),
        ),
        (
            "a message with a bad iothub-ack",
            AmqpStart::DeviceBound,
            send(enc::message(Some(to), &[("iothub-ack", "maybe")], b"x")),
            Contains(&["rejected amqp:invalid-field"]),
        ),
        (
            "a message over 64 KB",
            AmqpStart::DeviceBound,
            send(enc::message(Some(to), &[], &vec![b'x'; 64 * 1024 + 1])),
            Contains(&["rejected amqp:link:message-size-exceeded"]),
        ),
        (
            "a message that does not decode",
            AmqpStart::DeviceBound,
            send(vec![0x00, 0x53, 0x75, 0xb0, 0xff, 0xff]),
            Contains(&["rejected amqp:decode-error"]),
        ),
        // Device links (no SASL, the device's own token on $cbs, telemetry on handle 2, twin requests on 3,
        // twin answers on 4).
        (
            "device telemetry",
            AmqpStart::Device,
            device_send(2, enc::message(None, &[("temperatureAlert", "true")], b"{\"t\":1}")),
            Contains(&["attach 2", "attach 3", "attach 4", "accepted"]),
        ),
        (
            "device telemetry over 256 KB",
            AmqpStart::Device,
            device_send(2, enc::message(None, &[], &vec![b'x'; 256 * 1024 + 1])),
            Contains(&["rejected amqp:link:message-size-exceeded"]),
        ),
        (
            "device telemetry that does not decode",
            AmqpStart::Device,
            device_send(2, vec![0x00, 0x53, 0x75, 0xb0, 0xff, 0xff]),
            Contains(&["rejected amqp:decode-error"]),
        ),
        (
            "a twin GET",
            AmqpStart::Device,
            device_send(3, [enc::annotations(&[("operation", "GET")]), enc::described(0x75, vec![0xa0, 1, b' '])].concat()),
            Contains(&["transfer 4"]),
        ),
        (
            "a twin request with no operation",
            AmqpStart::Device,
            device_send(3, enc::message(None, &[], b"{}")),
            Contains(&["transfer 4"]),
        ),
        (
            "a reported patch that is not JSON",
            AmqpStart::Device,
            device_send(
                3,
                [
                    enc::annotations(&[("operation", "PATCH"), ("resource", "/properties/reported")]),
                    enc::described(0x75, vec![0xa0, 3, b'{', b'{', b'{']),
                ]
                .concat(),
            ),
            Contains(&["transfer 4"]),
        ),
        // Found by the fuzzer: an attach whose first field is a symbol declaring 3 GB, which serde_amqp
        // allocated before reading it (emulator/src/amqp/io.rs now refuses the frame).
        ("a performative declaring a 3 GB symbol", AmqpStart::Open, b"\x00\x00\x00\x3f\x02\x00\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\xb3\x00\x03\x00\x53\x12\xc0\x32\x00\xbf\xb2\xae\x50\x02\x01\x00\x00\x69\x6e\x52\x6b\x06\x2f\x04\x24\x63\x62\x73\x40\x40\x43".to_vec(), Only(REFUSED)),
        // Found by the fuzzer: a message whose `to` declares 4 GiB, allocated before reading it.
        (
            "a message property declaring 4 GiB",
            AmqpStart::DeviceBound,
            b"\x00\x00\x00\x72\x02\x00\x00\x00\x00\x53\x14\xc0\x0b\x05\x43\x43\xa0\x04\x00\x00\x00\x00\x43\x42\x00\x53\x73\xd0\x00\x00\x00\x2a\x00\x00\x00\x03\x40\x40\xb1\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00\x53\x74\xd1\x00\x00\x00\xcb\x16\x00\x00\x00\x02\xa1\x0a\x69\x6f\x74\x68\x75\x62\x2d\x7a\x2d\x6c\x69\x6e\x6b\x52\x02\x42\x50\x00\x40\x00\x53\x28\xc0\x0c\x01\xa1\x09\x66\x75\x7a\x61\x63\x6b\x00\x00\x00\x00\x00\x00\x00\xa1\x04\x41\x75\x6c\x6c\x00\x53\x75\xb0\x00\x00\x00\x02\x68\x69".to_vec(),
            Only(LINKS_UP),
        ),
        // Found by the fuzzer: a twin request whose properties list declares 0 bytes but 1,794 items; serde_amqp
        // reads the items anyway, and the first declares 3 GB. The guard now walks items as serde_amqp reads them
        // and refuses a size that is not theirs, so the connection is cut before anything is decoded.
        (
            "a list declaring 0 bytes whose items declare 3 GB",
            AmqpStart::Device,
            b"\x00\x00\x00\x33\x02\x00\x00\x00\x00\x53\x14\xc0\x0d\x05\x52\x03\x52\x01\xa0\x04\x00\x00\x00\x01\x43\x42\x00\x53\x73\xd0\x00\x00\x00\x00\x00\x07\x02\x00\x53\x75\xb0\xc3\x01\x53\x75\xc1\xb0\x00\x00\x00\x02\x7b\x7d".to_vec(),
            Only(DEVICE_CUT_OFF),
        ),
        // The same in a message sent over two frames.
        (
            "a message over two frames declaring 4 GB",
            AmqpStart::DeviceBound,
            encode(vec![
                transfer_part(0, true, vec![0x00, 0x53, 0x75, 0xb0, 0xff]),
                transfer_part(0, false, vec![0xff, 0xff, 0xff, b'x']),
            ]),
            // Cut off before any disposition ("transfer 1": feedback from the cases before, never settled).
            Only(LINKS_UP),
        ),
    ]
}

/// Hand-written inputs, each answered as the hub should, none hanging, panicking or harming the hub (the
/// session checks those). With `IOTHUB_AMQP_SEEDS=<dir>` set, also writes them there as fuzz inputs (first
/// byte: the start), to seed `fuzz/corpus/amqp_frames`.
#[test]
fn amqp_regressions() {
    let runtime = paused_runtime();
    let target = AmqpTarget::new();
    let seeds = std::env::var_os("IOTHUB_AMQP_SEEDS").map(std::path::PathBuf::from);
    for (name, start, rest, expect) in amqp_cases() {
        let said = summary(&runtime.block_on(target.session(start, &rest)));
        match expect {
            Expect::Exactly(lines) => assert_eq!(said, lines, "{name}"),
            Expect::Contains(lines) => {
                assert!(lines.iter().all(|l| said.iter().any(|s| s == l)), "{name}: {lines:?} in {said:?}")
            }
            Expect::Only(lines) => {
                assert!(said.iter().all(|s| lines.contains(&s.as_str())), "{name}: {said:?} within {lines:?}")
            }
        }
        // Seeds stay under libFuzzer's default 4 KiB input size, which the largest seed would raise.
        if let Some(dir) = seeds.as_ref().filter(|_| rest.len() < 4096) {
            let file: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
            std::fs::create_dir_all(dir).expect("the seed directory");
            std::fs::write(dir.join(file), [&[start.byte()], &rest[..]].concat()).expect("a seed");
        }
    }
}

/// The hub's answer to a `$cbs` put-token, as the server's `status-code`.
#[test]
fn put_token_replies_carry_the_status() {
    let runtime = paused_runtime();
    let target = AmqpTarget::new();
    let status = |token: &str| {
        let rest = super::encode(vec![super::transfer(0, 0, enc::put_token(token, "localhost"))]);
        let said = runtime.block_on(target.session(AmqpStart::Cbs, &rest));
        said.iter().find_map(|s| match s {
            ServerSaid::Amqp(frame) => match &frame.body {
                fe2o3_amqp::frames::amqp::FrameBody::Transfer { payload, .. } => {
                    let at = payload.windows(11).position(|w| w == b"status-code")?;
                    let code = payload.get(at + 11..at + 16)?;
                    (code[0] == 0x71).then(|| i32::from_be_bytes([code[1], code[2], code[3], code[4]]))
                }
                _ => None,
            },
            _ => None,
        })
    };
    let key = target.hub().policies().get("service").map(|p| p.primary_key.clone()).expect("service");
    let good = iothub_proto::generate_token("localhost", &key, Some("service"), crate::fuzzing::unix_now() + 600)
        .expect("a token");
    assert_eq!(status(&good), Some(200));
    assert_eq!(status("SharedAccessSignature sr=localhost&sig=AAAA&se=1&skn=service"), Some(401));
}
