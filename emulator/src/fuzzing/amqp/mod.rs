//! The AMQP endpoint under untrusted bytes: a fuzz input's first byte picks how far a well-behaved client gets
//! before the input's own bytes follow (nothing, the header, an Open, a session, `$cbs` links, or a SASL PLAIN
//! login with links to `/messages/devicebound` and feedback), so the fuzzer works on every stage of the protocol.

use std::cell::Cell;
use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::BytesMut;
use fe2o3_amqp::frames::{amqp as amqp_frame, sasl as sasl_frame};
use fe2o3_amqp::transport::Transport;
use fe2o3_amqp::types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Source, Target, TargetArchetype};
use fe2o3_amqp::types::performatives::{Attach, Begin, Flow, Open};
use fe2o3_amqp::types::primitives::{Binary, Symbol};
use fe2o3_amqp::types::sasl::SaslInit;
use futures_util::{FutureExt as _, SinkExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::codec::{Decoder as _, Encoder as _};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// The device messages in the inputs are addressed to.
pub(super) const DEVICE: &str = "fuzz";
/// How long (tokio time: paused in the fuzz target and the tests, so waiting costs nothing) a connection may
/// take to end after the client sent everything and shut down its side. Above every time-out of the endpoint
/// (handshake 10 s, attach 5 s, close 3 s): reaching it means the endpoint hangs.
const END_LIMIT: Duration = Duration::from_secs(120);
/// How long the server stays silent before the client takes it as waiting for more: then the client sends its
/// next stage, or, with everything sent, leaves. Below every time-out of the endpoint, so under paused time it
/// passes exactly when all the endpoint's tasks wait on the client.
const QUIET: Duration = Duration::from_secs(1);
/// At most this much of the server's answer is kept.
const MAX_ANSWER: usize = 1 << 20;

/// How far a well-behaved client gets before the input's bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmqpStart {
    /// Nothing: the input begins with its own protocol header (or none).
    Raw,
    /// The AMQP 1.0 protocol header (no SASL).
    Header,
    /// The header and an Open.
    Open,
    /// The header, an Open and a Begin on channel 0.
    Begin,
    /// The SASL protocol header.
    SaslHeader,
    /// SASL ANONYMOUS, then the AMQP header and an Open.
    SaslAnonymous,
    /// As `Begin`, then a sender to `$cbs` (handle 0) and a receiver of its replies (handle 1, with credit):
    /// the input's transfers on handle 0 are put-token requests.
    Cbs,
    /// SASL PLAIN with a valid ServiceConnect token, the AMQP header, an Open, a Begin, a sender to
    /// `/messages/devicebound` (handle 0) and a feedback receiver (handle 1, with credit): the input's
    /// transfers on handle 0 are cloud-to-device messages the hub queues.
    DeviceBound,
    /// No SASL (as the Node and .NET device SDKs), the device's own token on `$cbs`, then its telemetry sender
    /// (handle 2), twin request sender (handle 3) and twin answer receiver (handle 4, with credit): the input's
    /// transfers on handle 2 are telemetry, on handle 3 twin requests.
    Device,
}

impl AmqpStart {
    pub const ALL: [AmqpStart; 9] = [
        AmqpStart::Raw,
        AmqpStart::Header,
        AmqpStart::Open,
        AmqpStart::Begin,
        AmqpStart::SaslHeader,
        AmqpStart::SaslAnonymous,
        AmqpStart::Cbs,
        AmqpStart::DeviceBound,
        AmqpStart::Device,
    ];

    /// The start a fuzz input's first byte picks.
    pub fn of(byte: u8) -> Self {
        Self::ALL[usize::from(byte) % Self::ALL.len()]
    }

    /// The byte that picks this start.
    pub fn byte(self) -> u8 {
        Self::ALL.iter().position(|s| *s == self).map_or(0, |i| i as u8)
    }
}

/// What the server wrote, read back: protocol headers and frames.
#[derive(Debug)]
pub enum ServerSaid {
    Header([u8; 8]),
    Sasl(sasl_frame::Frame),
    Amqp(amqp_frame::Frame),
}

/// A hub with one device (`fuzz`) and the byte strings of every [`AmqpStart`] for it: build it once and run
/// many inputs through it.
pub struct AmqpTarget {
    hub: Arc<Hub>,
    /// Per start, the stages a well-behaved client sends: each after the server answered the one before.
    starts: Vec<Vec<Vec<u8>>>,
}

pub(super) const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
pub(super) const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";

impl AmqpTarget {
    pub fn new() -> Self {
        let (hub, device_key) = crate::fuzzing::hub_with_device(DEVICE);
        let key = hub.policies().get("service").map(|p| p.primary_key.clone()).expect("a new hub has 'service'");
        let expiry = crate::fuzzing::unix_now() + 10 * 365 * 24 * 3600;
        let token =
            iothub_proto::generate_token("localhost", &key, Some("service"), expiry).expect("a generated key signs");
        let device_token =
            iothub_proto::generate_token(&format!("localhost/devices/{DEVICE}"), &device_key, None, expiry)
                .expect("a generated key signs");
        let starts = AmqpStart::ALL.iter().map(|start| start_stages(*start, &token, &device_token)).collect();
        Self { hub, starts }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The bytes a well-behaved client sends to reach `start`, in stages: it waits for the server's answer
    /// to one (an attach, a session) before sending the next, as real clients do.
    pub fn start(&self, start: AmqpStart) -> &[Vec<u8>] {
        self.starts.get(start.byte() as usize).map_or(&[], Vec::as_slice)
    }

    /// Runs one fuzz input (its first byte picks the start) on `runtime`, which must be a current-thread
    /// runtime with paused time (`start_paused(true)`, tokio's `test-util`). Panics when an invariant breaks.
    pub fn run(&self, runtime: &tokio::runtime::Runtime, data: &[u8]) {
        let (start, rest) = match data.split_first() {
            Some((first, rest)) => (AmqpStart::of(*first), rest),
            None => (AmqpStart::Raw, data),
        };
        runtime.block_on(self.session(start, rest));
    }

    /// Serves a connection whose client sends `start`'s stages, then `rest` (each once the server has answered
    /// what came before), then shuts its side down; returns what the server wrote. Panics unless: the server
    /// takes the input, closes its side once the client left, and its connection task ends, each within
    /// [`END_LIMIT`] (tokio time); nothing panics on the way (the endpoint's tasks and fe2o3's run on this
    /// thread); every task spawned ends; every frame the server wrote decodes; and the hub still answers a
    /// registry read and a write (a purge of the device's queue, which also keeps the queue from filling up
    /// over a fuzz run).
    pub async fn session(&self, start: AmqpStart, rest: &[u8]) -> Vec<ServerSaid> {
        install_panic_counter();
        let panics_before = PANICS.with(Cell::get);
        let metrics = tokio::runtime::Handle::current().metrics();
        let tasks_before = metrics.num_alive_tasks();

        let (client, server) = tokio::io::duplex(1 << 16);
        let peer = "127.0.0.1:5671".parse().expect("an address");
        let connection =
            tokio::spawn(crate::amqp::serve_connection(server, Arc::clone(&self.hub), CancellationToken::new(), peer));
        let (mut reader, mut writer) = tokio::io::split(client);
        let mut answer = Vec::new();
        let mut buffer = vec![0u8; 1 << 14];
        // Send each stage of the start, then the input, each time reading until the server has nothing more
        // to say (it waits on the client: under paused time the quiet period passes only once every task is
        // idle) or closes.
        let talk = async {
            for stage in self.start(start).iter().map(Vec::as_slice).chain([rest]) {
                let send = writer.write_all(stage);
                tokio::pin!(send);
                let mut sent = false;
                loop {
                    tokio::select! {
                        _ = &mut send, if !sent => sent = true,
                        read = tokio::time::timeout(QUIET, reader.read(&mut buffer)) => match read {
                            Ok(Ok(0) | Err(_)) => return,
                            Ok(Ok(n)) => keep(&mut answer, &buffer[..n]),
                            Err(_) if sent => break,
                            Err(_) => {}
                        },
                    }
                }
            }
        };
        let talked = tokio::time::timeout(END_LIMIT, talk).await;
        assert!(talked.is_ok(), "{start:?}: the server neither took the input nor closed its side in time");
        // Then leave: the server must close its side.
        let _ = writer.shutdown().await;
        let closed = tokio::time::timeout(END_LIMIT, async {
            while let Ok(n @ 1..) = reader.read(&mut buffer).await {
                keep(&mut answer, &buffer[..n]);
            }
        });
        assert!(closed.await.is_ok(), "{start:?}: the server did not close its side after the client left");
        drop((reader, writer));

        match tokio::time::timeout(END_LIMIT, connection).await {
            Err(_) => panic!("{start:?}: the connection task did not end after the client left"),
            Ok(Err(failed)) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
            Ok(_) => {}
        }
        let drained = tokio::time::timeout(END_LIMIT, async {
            while metrics.num_alive_tasks() > tasks_before {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            drained.is_ok(),
            "{start:?}: {} tasks outlived the connection",
            metrics.num_alive_tasks() - tasks_before
        );
        let panics = PANICS.with(Cell::get) - panics_before;
        assert_eq!(panics, 0, "{start:?}: a task panicked while serving the connection");

        assert!(self.hub.get_device(DEVICE).is_ok(), "the registry still answers");
        let purged = tokio::time::timeout(END_LIMIT, self.hub.purge_messages(DEVICE)).await;
        assert!(matches!(purged, Ok(Ok(_))), "the hub still takes writes: {purged:?}");

        match read_answer(&answer) {
            Ok(said) => said,
            Err(error) => panic!("{start:?}: the server wrote something that is not AMQP: {error}"),
        }
    }
}

impl Default for AmqpTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps what the server wrote, up to about [`MAX_ANSWER`] (then nothing more, so what is kept still parses).
fn keep(answer: &mut Vec<u8>, read: &[u8]) {
    if answer.len() < MAX_ANSWER {
        answer.extend_from_slice(read);
    }
}

thread_local! {
    /// Panics seen on this thread: a panic in a spawned task (the endpoint's or fe2o3's) ends only that
    /// task, so the session counts them rather than trusting the connection task's result.
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

fn install_panic_counter() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
}

/// Splits what the server wrote into protocol headers and frames and decodes each frame; a frame cut off at
/// the end (the connection was cut mid-write) is left out.
fn read_answer(mut bytes: &[u8]) -> Result<Vec<ServerSaid>, String> {
    let mut said = Vec::new();
    while !bytes.is_empty() {
        if let Some(header) = bytes.first_chunk::<8>().filter(|h| h.starts_with(b"AMQP")) {
            said.push(ServerSaid::Header(*header));
            bytes = &bytes[8..];
            continue;
        }
        let Some(size) = bytes.first_chunk::<4>().map(|s| u32::from_be_bytes(*s) as usize) else { break };
        if size < 8 {
            return Err(format!("a frame size of {size}"));
        }
        let Some(frame) = bytes.get(4..size) else { break };
        bytes = &bytes[size..];
        let mut frame = BytesMut::from(frame);
        match frame[1] {
            0 => match (amqp_frame::FrameDecoder {}).decode(&mut frame) {
                Ok(Some(frame)) => said.push(ServerSaid::Amqp(frame)),
                other => return Err(format!("an AMQP frame that does not decode: {other:?}")),
            },
            1 => match (sasl_frame::FrameCodec {}).decode(&mut frame) {
                Ok(Some(frame)) => said.push(ServerSaid::Sasl(frame)),
                other => return Err(format!("a SASL frame that does not decode: {other:?}")),
            },
            other => return Err(format!("a frame of type {other}")),
        }
    }
    Ok(said)
}

/// AMQP frames as fe2o3 writes them (size, header, performative, payload).
pub(super) fn encode(frames: Vec<amqp_frame::Frame>) -> Vec<u8> {
    let (ours, mut theirs) = tokio::io::duplex(1 << 20);
    let mut transport = Transport::<_, amqp_frame::Frame>::bind(ours, 1 << 16, None);
    for frame in frames {
        let sent = transport.send(frame).now_or_never();
        assert!(matches!(sent, Some(Ok(()))), "a frame encodes into memory: {sent:?}");
    }
    drop(transport);
    let mut bytes = Vec::new();
    let read = theirs.read_to_end(&mut bytes).now_or_never();
    assert!(matches!(read, Some(Ok(_))), "the encoded frames are read back");
    bytes
}

/// A SASL frame as fe2o3 writes it.
fn encode_sasl(frame: sasl_frame::Frame) -> Vec<u8> {
    let mut body = BytesMut::new();
    (sasl_frame::FrameCodec {}).encode(frame, &mut body).expect("a SASL frame encodes");
    let size = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    size.to_be_bytes().into_iter().chain(body).collect()
}

fn sasl_init(mechanism: &str, response: Option<Vec<u8>>) -> Vec<u8> {
    encode_sasl(sasl_frame::Frame::Init(SaslInit {
        mechanism: Symbol::from(mechanism),
        initial_response: response.map(Binary::from),
        hostname: Some("localhost".into()),
    }))
}

pub(super) fn open() -> amqp_frame::Frame {
    let open = Open {
        container_id: "fuzz-client".into(),
        hostname: Some("localhost".into()),
        max_frame_size: 65_536.into(),
        channel_max: 255.into(),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    amqp_frame::Frame::new(0u16, amqp_frame::FrameBody::Open(open))
}

pub(super) fn begin(channel: u16) -> amqp_frame::Frame {
    let begin = Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: 2048,
        outgoing_window: 2048,
        handle_max: Handle(255),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    amqp_frame::Frame::new(channel, amqp_frame::FrameBody::Begin(begin))
}

/// An attach of the client's sender (`role` Sender: the client sends to `address`) or receiver (it reads
/// from `address`).
pub(super) fn attach(handle: u32, name: &str, role: Role, address: &str, reply_to: Option<&str>) -> amqp_frame::Frame {
    let (source, target) = match role {
        Role::Sender => (Source::builder().address(name).build(), Target::builder().address(address).build()),
        Role::Receiver => {
            (Source::builder().address(address).build(), Target::builder().address(reply_to.unwrap_or(name)).build())
        }
    };
    let initial_delivery_count = (role == Role::Sender).then_some(0);
    let attach = Attach {
        name: name.into(),
        handle: Handle(handle),
        role,
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode: ReceiverSettleMode::First,
        source: Some(Box::new(source)),
        target: Some(Box::new(TargetArchetype::Target(target))),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count,
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    amqp_frame::Frame::new(0u16, amqp_frame::FrameBody::Attach(attach))
}

/// Credit for the client's receiver on `handle`.
pub(super) fn credit(handle: u32, credit: u32) -> amqp_frame::Frame {
    let flow = Flow {
        next_incoming_id: Some(0),
        incoming_window: 2048,
        next_outgoing_id: 0,
        outgoing_window: 2048,
        handle: Some(Handle(handle)),
        delivery_count: Some(0),
        link_credit: Some(credit),
        available: None,
        drain: false,
        echo: false,
        properties: None,
    };
    amqp_frame::Frame::new(0u16, amqp_frame::FrameBody::Flow(flow))
}

/// A transfer of one whole message (`payload`: its encoded sections) on `handle`.
pub(super) fn transfer(handle: u32, delivery_id: u32, payload: Vec<u8>) -> amqp_frame::Frame {
    transfer_frame(handle, delivery_id, false, payload)
}

/// A transfer of part of delivery 0 on `handle`, more to come or not.
#[cfg(test)]
pub(super) fn transfer_part(handle: u32, more: bool, payload: Vec<u8>) -> amqp_frame::Frame {
    transfer_frame(handle, 0, more, payload)
}

fn transfer_frame(handle: u32, delivery_id: u32, more: bool, payload: Vec<u8>) -> amqp_frame::Frame {
    use fe2o3_amqp::types::performatives::Transfer;
    let transfer = Transfer {
        handle: Handle(handle),
        delivery_id: Some(delivery_id),
        delivery_tag: Some(Binary::from(delivery_id.to_be_bytes().to_vec())),
        message_format: Some(0),
        settled: Some(false),
        more,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    };
    amqp_frame::Frame::new(0u16, amqp_frame::FrameBody::Transfer { performative: transfer, payload: payload.into() })
}

fn start_stages(start: AmqpStart, token: &str, device_token: &str) -> Vec<Vec<u8>> {
    let opened = |frames: Vec<amqp_frame::Frame>| [AMQP_HEADER.to_vec(), encode(frames)].concat();
    match start {
        AmqpStart::Raw => vec![],
        AmqpStart::Header => vec![AMQP_HEADER.to_vec()],
        AmqpStart::Open => vec![opened(vec![open()])],
        AmqpStart::Begin => vec![opened(vec![open(), begin(0)])],
        AmqpStart::SaslHeader => vec![SASL_HEADER.to_vec()],
        AmqpStart::SaslAnonymous => {
            vec![[SASL_HEADER.to_vec(), sasl_init("ANONYMOUS", None), opened(vec![open()])].concat()]
        }
        AmqpStart::Cbs => vec![
            opened(vec![open(), begin(0)]),
            encode(vec![
                attach(0, "cbs-sender", Role::Sender, "$cbs", None),
                attach(1, "cbs-receiver", Role::Receiver, "$cbs", Some("cbs")),
            ]),
            encode(vec![credit(1, 100)]),
        ],
        AmqpStart::DeviceBound => {
            let login = [&b"\0service@sas.root.localhost\0"[..], token.as_bytes()].concat();
            vec![
                [SASL_HEADER.to_vec(), sasl_init("PLAIN", Some(login)), opened(vec![open(), begin(0)])].concat(),
                encode(vec![
                    attach(0, "c2d-sender", Role::Sender, "/messages/devicebound", None),
                    attach(1, "feedback-receiver", Role::Receiver, "/messages/serviceBound/feedback", None),
                ]),
                encode(vec![credit(1, 100)]),
            ]
        }
        AmqpStart::Device => {
            let put_token = tests_free::put_token(device_token, &format!("localhost/devices/{DEVICE}"));
            vec![
                opened(vec![open(), begin(0)]),
                encode(vec![
                    attach(0, "cbs-sender", Role::Sender, "$cbs", None),
                    attach(1, "cbs-receiver", Role::Receiver, "$cbs", Some("cbs")),
                ]),
                encode(vec![credit(1, 100), transfer(0, 0, put_token)]),
                encode(vec![
                    attach(2, "events", Role::Sender, &format!("/devices/{DEVICE}/messages/events"), None),
                    attach(3, "twin-out", Role::Sender, &format!("/devices/{DEVICE}/twin"), None),
                    attach(4, "twin-in", Role::Receiver, &format!("/devices/{DEVICE}/twin"), None),
                ]),
                encode(vec![credit(4, 100)]),
            ]
        }
    }
}

/// Message bodies the starts need, outside the test-only encoders.
mod tests_free {
    /// A `$cbs` put-token request: properties (message-id 7, reply-to `cbs`), application properties, the token.
    pub(super) fn put_token(token: &str, audience: &str) -> Vec<u8> {
        let str8 = |text: &str| [vec![0xa1, text.len() as u8], text.as_bytes().to_vec()].concat();
        let list = |items: &[Vec<u8>]| {
            let body: Vec<u8> = items.concat();
            [
                vec![0xd0],
                ((body.len() + 4) as u32).to_be_bytes().to_vec(),
                (items.len() as u32).to_be_bytes().to_vec(),
                body,
            ]
            .concat()
        };
        let map = |pairs: &[(&str, &str)]| {
            let body: Vec<u8> = pairs.iter().flat_map(|(k, v)| [str8(k), str8(v)].concat()).collect();
            [
                vec![0xd1],
                ((body.len() + 4) as u32).to_be_bytes().to_vec(),
                ((pairs.len() * 2) as u32).to_be_bytes().to_vec(),
                body,
            ]
            .concat()
        };
        let described = |code: u8, value: Vec<u8>| [vec![0x00, 0x53, code], value].concat();
        let null = vec![0x40];
        let properties = list(&[vec![0x53, 7], null.clone(), null.clone(), null, str8("cbs")]);
        let application =
            map(&[("operation", "put-token"), ("type", "servicebus.windows.net:sastoken"), ("name", audience)]);
        let value = [vec![0xb1], (token.len() as u32).to_be_bytes().to_vec(), token.as_bytes().to_vec()].concat();
        [described(0x73, properties), described(0x74, application), described(0x77, value)].concat()
    }
}

#[cfg(test)]
mod tests;
