//! Sessions and links: each session accepts its links one after another and runs each in its own task, routed by
//! address. Addresses are compared without their `amqps://<host>` prefix and case-insensitively, so
//! `/messages/devicebound` and `amqps://<host>/messages/devicebound` are the same node.

use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SupportedReceiverSettleModes};
use fe2o3_amqp::link::RecvError;
use fe2o3_amqp::types::definitions::{self, AmqpError, LinkError, ReceiverSettleMode, Role};
use fe2o3_amqp::types::messaging::{Body, TargetArchetype};
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Delivery, Receiver, Sender};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::context::Connection;
use super::eventhubs::{self, EventsNode};
use super::{c2d, cbs, devices, feedback, request};
use crate::auth::Rights;
use crate::error::HubError;
use crate::hub::Hub;

/// How long attaching one link may take.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a detach or end waits for the peer's answer.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest message a link takes (bigger ones end the link with `amqp:link:message-size-exceeded`); messages
/// above the hub's own limits but below this are refused one by one with a clear condition.
const MAX_LINK_MESSAGE_BYTES: u64 = 1024 * 1024;

/// The node a link attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// The client sends put-token requests (target `$cbs`).
    CbsRequests,
    /// The client reads `$cbs` replies (source `$cbs`); its target address, if any.
    CbsReplies(Option<String>),
    /// The client sends cloud-to-device messages.
    DeviceBound,
    /// The client reads delivery feedback.
    Feedback,
    /// The client sends `$management` requests (Event Hubs READ).
    ManagementRequests,
    /// The client reads `$management` replies; its target address, if any.
    ManagementReplies(Option<String>),
    /// The client reads the Event Hubs-compatible endpoint (or is redirected to it).
    Events(Box<EventsNode>),
    /// A device (or module) sends telemetry; its identity key.
    DeviceTelemetry(String),
    /// A device (or module) receives its cloud-to-device messages; its identity key.
    DeviceMessages(String),
    /// A device receives method calls (`/devices/<id>/methods/devicebound`, the hub's side sends).
    MethodCalls(String),
    /// A device sends method answers (same address, the hub's side receives).
    MethodAnswers(String),
    /// A device receives twin answers and desired changes (`/devices/<id>/twin`, the hub's side sends).
    TwinAnswers(String),
    /// A device sends twin requests (same address, the hub's side receives).
    TwinRequests(String),
    /// A module listens for input messages (`/devices/<d>/modules/<m>/messages/events` as a receiver).
    ModuleInputs(String),
    /// Anything else: the address as given, and whether the client sends to it.
    Unknown(String),
}

/// The path of an address: `amqps://<host>/messages/devicebound` and `/messages/devicebound` are the same node.
pub(super) fn path_of(address: &str) -> &str {
    for scheme in ["amqps://", "amqp://", "wss://", "https://"] {
        if let Some(rest) = address.strip_prefix(scheme) {
            return rest.find('/').map_or("", |i| &rest[i..]);
        }
    }
    address
}

fn target_address(attach: &Attach) -> Option<String> {
    match attach.target.as_deref() {
        Some(TargetArchetype::Target(target)) => target.address.clone(),
        #[allow(unreachable_patterns)] // Coordinator exists only with fe2o3's `transaction` feature
        _ => None,
    }
}

fn classify(attach: &Attach, hub: &Hub) -> Node {
    let source = attach.source.as_ref().and_then(|s| s.address.clone());
    let target = target_address(attach);
    match attach.role {
        // The client sends: we receive, and the node is the target.
        Role::Sender => {
            let address = target.unwrap_or_default();
            match path_of(&address) {
                "$cbs" => Node::CbsRequests,
                "$management" => Node::ManagementRequests,
                path if path.eq_ignore_ascii_case("/messages/devicebound") => Node::DeviceBound,
                path => {
                    if let Some(key) = devices::identity_of(path, "messages/events") {
                        Node::DeviceTelemetry(key)
                    } else if let Some(key) = devices::identity_of(path, "methods/devicebound") {
                        Node::MethodAnswers(key)
                    } else if let Some(key) = devices::identity_of(path, "twin") {
                        Node::TwinRequests(key)
                    } else {
                        Node::Unknown(address)
                    }
                }
            }
        }
        // The client receives: we send, and the node is the source.
        Role::Receiver => {
            let address = source.unwrap_or_default();
            match path_of(&address) {
                "$cbs" => Node::CbsReplies(target),
                "$management" => Node::ManagementReplies(target),
                path if path.eq_ignore_ascii_case("/messages/serviceBound/feedback") => Node::Feedback,
                path if path.starts_with("/devices/") => {
                    if let Some(key) = devices::identity_of(path, "messages/devicebound") {
                        Node::DeviceMessages(key)
                    } else if let Some(key) = devices::identity_of(path, "methods/devicebound") {
                        Node::MethodCalls(key)
                    } else if let Some(key) = devices::identity_of(path, "twin") {
                        Node::TwinAnswers(key)
                    } else if let Some(key) = devices::identity_of(path, "messages/events").filter(|k| k.contains('/'))
                    {
                        Node::ModuleInputs(key)
                    } else {
                        Node::Unknown(address)
                    }
                }
                path => match eventhubs::classify(hub, path, attach) {
                    Some(events) => Node::Events(Box::new(events)),
                    None => Node::Unknown(address),
                },
            }
        }
    }
}

/// Accepts a session's links until it ends, running each in its own task.
pub(super) async fn serve_session(
    mut session: ListenerSessionHandle,
    connection: Arc<Connection>,
    shutdown: CancellationToken,
) {
    // Only `first`: with `second` the dispositions go out unsettled and uamqp (which asks for `second`) waits
    // forever.
    let acceptor = LinkAcceptor::builder()
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .max_message_size(MAX_LINK_MESSAGE_BYTES)
        .build();
    let links = TaskTracker::new();
    loop {
        let attach = tokio::select! {
            () = shutdown.cancelled() => break,
            attach = session.next_incoming_attach() => match attach {
                Some(attach) => attach,
                None => break,
            },
        };
        let node = classify(&attach, &connection.hub);
        tracing::debug!(peer = %connection.peer, link = %attach.name, ?node, "attach");
        // Boxed, as the opening steps below: held inline they would stay in the session task's state for good.
        match tokio::time::timeout(ATTACH_TIMEOUT, Box::pin(acceptor.accept_incoming_attach(attach, &mut session)))
            .await
        {
            Ok(Ok(link)) => {
                links.spawn(run_link(link, node, Arc::clone(&connection), shutdown.child_token()));
            }
            Ok(Err(error)) => tracing::debug!(peer = %connection.peer, ?error, "attach failed"),
            Err(_) => tracing::debug!(peer = %connection.peer, "attach timed out"),
        }
    }
    // A dropped session handle ends the session: keep it until every link is done.
    links.close();
    links.wait().await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.end()).await;
}

impl Node {
    /// True for the service side's links (cloud-to-device sends, feedback, Event Hubs partition readers): a hub
    /// outage detaches them and refuses them until it ends. Not `$management`: @azure/event-hubs waits out its
    /// 60 s operation time-out on a refused request link, and its readers stay down meanwhile.
    fn is_service(&self) -> bool {
        matches!(self, Node::DeviceBound | Node::Feedback | Node::Events(_))
    }

    /// The device or module a device link belongs to.
    fn identity(&self) -> Option<&str> {
        match self {
            Node::DeviceTelemetry(key)
            | Node::DeviceMessages(key)
            | Node::MethodCalls(key)
            | Node::MethodAnswers(key)
            | Node::TwinAnswers(key)
            | Node::TwinRequests(key)
            | Node::ModuleInputs(key) => Some(key),
            _ => None,
        }
    }
}

/// What a link to `node` must be authorized for: the target of the claim and the permission.
fn needs(connection: &Connection, node: &Node) -> Option<(String, Rights)> {
    let host = connection.hub.host_name();
    match node {
        Node::DeviceBound => Some((format!("{host}/messages/devicebound"), Rights::SERVICE_CONNECT)),
        Node::Feedback => Some((format!("{host}/messages/servicebound/feedback"), Rights::SERVICE_CONNECT)),
        Node::Events(events) => eventhubs::needs(&connection.hub, events),
        Node::DeviceTelemetry(key)
        | Node::DeviceMessages(key)
        | Node::MethodCalls(key)
        | Node::MethodAnswers(key)
        | Node::TwinAnswers(key)
        | Node::TwinRequests(key)
        | Node::ModuleInputs(key) => Some((devices::resource_of(host, key), Rights::DEVICE_CONNECT)),
        _ => None,
    }
}

/// An AMQP error with a description.
pub(super) fn error(
    condition: impl Into<definitions::ErrorCondition>,
    description: impl Into<String>,
) -> definitions::Error {
    definitions::Error::new(condition, Some(description.into()), None)
}

async fn run_link(link: LinkEndpoint, node: Node, connection: Arc<Connection>, shutdown: CancellationToken) {
    let needed = needs(&connection, &node);
    if let Some((target, _)) = needed.as_ref().filter(|(t, n)| connection.authorized_until(t, *n).is_none()) {
        let refusal = error(
            AmqpError::UnauthorizedAccess,
            format!("Put a token with ServiceConnect for '{target}' on $cbs before attaching to this node"),
        );
        return close(link, Some(refusal)).await;
    }
    if let Some(key) = node.identity() {
        let refusal = match connection.hub.may_connect(key) {
            Err(HubError::DeviceDisabled(_)) => {
                Some(error(AmqpError::UnauthorizedAccess, format!("{key} is disabled")))
            }
            Err(missing) => Some(error(AmqpError::NotFound, missing.to_string())),
            Ok(()) => None,
        };
        if let Some(refusal) = refusal {
            return close(link, Some(refusal)).await;
        }
    }
    if let Some(key) = node.identity().filter(|key| connection.hub.connect_refused(key)) {
        // A disconnect or outage fault: refused as a hub that is away refuses, in a way the SDKs retry.
        tracing::debug!(peer = %connection.peer, identity = key, "device link refused by a fault");
        let refusal = error(LinkError::DetachForced, "The hub is unavailable (emulator fault); retry later");
        return close(link, Some(refusal)).await;
    }
    let service = node.is_service();
    if let Some(refusal) = outage_refusal(&connection.hub).filter(|_| service) {
        tracing::debug!(peer = %connection.peer, ?node, "service link refused by an outage");
        return close(link, Some(refusal)).await;
    }
    // The link ends when the connection does, when the tokens that authorized it expire unrenewed, or (a service
    // link) when an outage begins; the reason it is detached with is kept here.
    let stop = shutdown.child_token();
    let ended_by = std::sync::OnceLock::new();
    let watch = async {
        let expiry = async {
            match &needed {
                Some((target, rights)) => connection.until_unauthorized(target, *rights).await,
                None => std::future::pending().await,
            }
        };
        let outage = async {
            if service {
                connection.hub.outage_begun().await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let reason = tokio::select! {
            () = expiry => token_expired(),
            () = outage => outage_refusal(&connection.hub).unwrap_or_else(token_expired),
        };
        let _ = ended_by.set(reason);
        stop.cancel();
        std::future::pending::<()>().await;
    };
    let returned = tokio::select! {
        returned = serve_link(link, node, &connection, stop.clone()) => returned,
        () = watch => None,
    };
    if let Some(link) = returned {
        close(link, ended_by.into_inner()).await;
    }
}

/// While a hub outage is in force, the error service links are detached and refused with: `detach-forced`, which
/// the SDKs retry (Node's ServiceUnavailableError, the Event Hubs clients' DetachForcedError), as the service REST
/// API's 503 is retried.
pub(super) fn outage_refusal(hub: &Hub) -> Option<definitions::Error> {
    let seconds = hub.outage_seconds_left()?;
    Some(error(
        LinkError::DetachForced,
        format!("The hub is unavailable (emulator outage fault) for {seconds} s; retry later"),
    ))
}

/// Serves a link until it ends or `stop` fires; returns it when it is still attached, for the caller to detach.
async fn serve_link(
    link: LinkEndpoint,
    node: Node,
    connection: &Connection,
    stop: CancellationToken,
) -> Option<LinkEndpoint> {
    match (node, link) {
        (Node::CbsRequests, LinkEndpoint::Receiver(receiver)) => {
            request::serve_requests(receiver, connection, &connection.cbs, stop, cbs::put_token, true)
                .await
                .map(LinkEndpoint::Receiver)
        }
        (Node::CbsReplies(address), LinkEndpoint::Sender(sender)) => {
            request::serve_replies(sender, address, &connection.cbs, stop).await.map(LinkEndpoint::Sender)
        }
        (Node::ManagementRequests, LinkEndpoint::Receiver(receiver)) => {
            request::serve_requests(receiver, connection, &connection.management, stop, eventhubs::management, false)
                .await
                .map(LinkEndpoint::Receiver)
        }
        (Node::ManagementReplies(address), LinkEndpoint::Sender(sender)) => {
            request::serve_replies(sender, address, &connection.management, stop).await.map(LinkEndpoint::Sender)
        }
        (Node::Events(events), LinkEndpoint::Sender(sender)) => match *events {
            EventsNode::Partition { group, partition, start: Ok(start), epoch } => {
                eventhubs::serve_partition(sender, connection, &group, partition, start, epoch, stop)
                    .await
                    .map(LinkEndpoint::Sender)
            }
            EventsNode::Partition { start: Err(description), .. } => {
                close_sender(sender, Some(error(eventhubs::argument_error(), description))).await;
                None
            }
            EventsNode::Redirect { rest } => {
                eventhubs::redirect(sender, &connection.hub, &rest).await;
                None
            }
            EventsNode::Refused { condition, description } => {
                let condition = definitions::ErrorCondition::Custom(condition.as_str().into());
                close_sender(sender, Some(error(condition, description))).await;
                None
            }
        },
        (Node::DeviceBound, LinkEndpoint::Receiver(receiver)) => {
            c2d::serve(receiver, connection, stop).await.map(LinkEndpoint::Receiver)
        }
        (Node::DeviceTelemetry(key), LinkEndpoint::Receiver(receiver)) => {
            devices::serve_telemetry(receiver, connection, &key, stop).await.map(LinkEndpoint::Receiver)
        }
        (Node::DeviceMessages(key), LinkEndpoint::Sender(sender)) => {
            devices::serve_cloud_to_device(sender, connection, &key, stop).await.map(LinkEndpoint::Sender)
        }
        (Node::MethodCalls(key), LinkEndpoint::Sender(sender)) => {
            devices::serve_outgoing(sender, connection, &key, devices::Kind::Methods, stop)
                .await
                .map(LinkEndpoint::Sender)
        }
        (Node::TwinAnswers(key), LinkEndpoint::Sender(sender)) => {
            devices::serve_outgoing(sender, connection, &key, devices::Kind::Twin, stop).await.map(LinkEndpoint::Sender)
        }
        (Node::MethodAnswers(key), LinkEndpoint::Receiver(receiver)) => {
            devices::serve_method_answers(receiver, connection, &key, stop).await.map(LinkEndpoint::Receiver)
        }
        (Node::TwinRequests(key), LinkEndpoint::Receiver(receiver)) => {
            devices::serve_twin_requests(receiver, connection, &key, stop).await.map(LinkEndpoint::Receiver)
        }
        (Node::ModuleInputs(key), LinkEndpoint::Sender(sender)) => {
            devices::serve_module_inputs(sender, connection, &key, stop).await.map(LinkEndpoint::Sender)
        }
        (Node::Feedback, LinkEndpoint::Sender(sender)) => {
            feedback::serve(sender, connection, stop).await.map(LinkEndpoint::Sender)
        }
        (Node::Unknown(address), link) => {
            let refusal = error(AmqpError::NotFound, format!("The messaging entity '{address}' could not be found"));
            close(link, Some(refusal)).await;
            None
        }
        (_, link) => {
            close(link, Some(error(AmqpError::NotAllowed, "This node does not take links this way"))).await;
            None
        }
    }
}

/// What waiting on a receiver gave.
pub(super) enum Next {
    Delivery(Box<Delivery<Body<Value>>>),
    /// `stop` fired: the link is still attached.
    Stopped,
    /// The link, its session or the connection ended.
    Ended,
}

/// The next delivery on a receiver. An undecodable message is rejected with `amqp:decode-error` and the link
/// goes on.
pub(super) async fn next_delivery(receiver: &mut Receiver, stop: &CancellationToken) -> Next {
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return Next::Stopped,
            received = Box::pin(receiver.recv::<Body<Value>>()) => received,
        };
        match received {
            Ok(delivery) => return Next::Delivery(Box::new(delivery)),
            Err(RecvError::MessageDecode(undecodable)) => {
                tracing::debug!(error = %undecodable.source, "an undecodable message is rejected");
                let refusal = error(AmqpError::DecodeError, "The message could not be decoded");
                if Box::pin(receiver.reject(undecodable.info, refusal)).await.is_err() {
                    return Next::Ended;
                }
            }
            Err(other) => {
                tracing::debug!(error = ?other, "link ended");
                return Next::Ended;
            }
        }
    }
}

/// Detaches a link (closed), with an error when given; bounded, since the peer may never answer.
pub(super) async fn close(link: LinkEndpoint, error: Option<definitions::Error>) {
    match link {
        LinkEndpoint::Sender(sender) => close_sender(sender, error).await,
        LinkEndpoint::Receiver(receiver) => close_receiver(receiver, error).await,
    }
}

/// Detaches a sender link. The detach is boxed (as the receiver's below): fe2o3's close future is ~5 KB, and
/// inline it would sit in the state of every link's task from the start, closing or not.
pub(super) async fn close_sender(sender: Sender, error: Option<definitions::Error>) {
    let closing = Box::pin(async move {
        match error {
            Some(error) => sender.close_with_error(error).await,
            None => sender.close().await,
        }
    });
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}

/// Detaches a receiver link.
pub(super) async fn close_receiver(receiver: Receiver, error: Option<definitions::Error>) {
    let closing = Box::pin(async move {
        match error {
            Some(error) => receiver.close_with_error(error).await,
            None => receiver.close().await,
        }
    });
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}

/// The error a link is detached with when the token that authorized it expires.
pub(super) fn token_expired() -> definitions::Error {
    error(AmqpError::UnauthorizedAccess, "The token that authorized this link expired; put a new one on $cbs")
}
