//! The built-in Event Hubs-compatible endpoint (docs/eventhubs-wire.md has the facts and their sources):
//! - receivers on `<hub>/ConsumerGroups/<group>/Partitions/<n>` read the telemetry log from the position their
//!   selector filter names, within the credit they grant, every delivery pre-settled (progress lives in the
//!   client's checkpoint); `com.microsoft:epoch` receivers take a partition over (`amqp:link:stolen`);
//! - `$management` answers READ of `com.microsoft:eventhub` and `com.microsoft:partition`;
//! - a receiver on the IoT Hub's own `messages/events[/...]` is answered with `amqp:link:redirect` to the
//!   compatible endpoint, which is how the Event Hubs samples and IoT Explorer turn an IoT Hub connection string
//!   into an Event Hubs one.

use fe2o3_amqp::link::delivery::Sendable;
use fe2o3_amqp::types::definitions::{self, AmqpError, Fields, LinkError};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageAnnotations, Properties, Source,
};
use fe2o3_amqp::types::primitives::{
    Array, Binary, OrderedMap, SimpleValue, Symbol, Timestamp as AmqpTimestamp, Value,
};
use fe2o3_amqp::{Sender, types::performatives::Attach};
use tokio_util::sync::CancellationToken;

use super::context::Connection;
use super::links::{close_sender, error};
use super::request::{Answer, text_property};
use crate::auth::Rights;
use crate::domain::eventlog::{Event, StartAt};
use crate::hub::{Hub, ReaderRefused};

/// The selector filter's key (and, as Python writes it, its descriptor).
const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
/// The selector filter's descriptor code, as rhea writes it.
const SELECTOR_FILTER_CODE: u64 = 0x0000_468C_0000_0004;
const EPOCH_PROPERTY: &str = "com.microsoft:epoch";
/// What Event Hubs answers a bad filter or an unknown partition with (both SDKs do not retry it).
const ARGUMENT_ERROR: &str = "com.microsoft:argument-error";
const ARGUMENT_OUT_OF_RANGE: &str = "com.microsoft:argument-out-of-range";
/// Events read from the log per step (each step then waits for credit message by message).
const READ_BATCH: usize = 256;
/// `iothub-connection-auth-method` of a device, and of a module, authenticated with a SAS token.
const SAS_DEVICE_AUTH: &str = r#"{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#;
const SAS_MODULE_AUTH: &str = r#"{"scope":"module","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#;

/// The condition a bad selector filter is refused with.
pub(super) fn argument_error() -> definitions::ErrorCondition {
    definitions::ErrorCondition::Custom(ARGUMENT_ERROR.into())
}

/// An address of the compatible endpoint, or of the IoT Hub's own event path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EventsNode {
    /// A partition reader: the group in its declared spelling, the partition, where to start, the epoch.
    Partition { group: String, partition: u32, start: Result<StartAt, String>, epoch: Option<i64> },
    /// `messages/events` and what follows it: redirected to the compatible endpoint.
    Redirect { rest: String },
    /// An address under this hub's name that names no group or partition: the condition and description.
    Refused { condition: String, description: String },
}

/// Classifies the source `path` (scheme and host stripped) of a receiver, if it is an events address.
pub(super) fn classify(hub: &Hub, path: &str, attach: &Attach) -> Option<EventsNode> {
    let path = path.trim_start_matches('/');
    let lower = path.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("messages/events")
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return Some(EventsNode::Redirect { rest: path["messages/events".len()..].to_owned() });
    }
    let parts: Vec<&str> = path.split('/').collect();
    let hub_name = hub.event_hub_name();
    if !parts.first().is_some_and(|name| name.eq_ignore_ascii_case(hub_name)) || parts.len() == 1 {
        return None;
    }
    let entity = format!("sb://{}/{}", hub.host_name(), hub_name);
    let refused = |condition: &str, description: String| {
        Some(EventsNode::Refused { condition: condition.to_owned(), description })
    };
    match parts.as_slice() {
        [_, groups, group, partitions, partition]
            if groups.eq_ignore_ascii_case("consumergroups") && partitions.eq_ignore_ascii_case("partitions") =>
        {
            let log = hub.event_log();
            let Some(declared) = log.settings().consumer_group(group) else {
                return refused(
                    "amqp:not-found",
                    format!(
                        "The messaging entity '{entity}/consumergroups/{}' could not be found. Start the emulator with --consumer-group {group} to declare it.",
                        group.to_ascii_lowercase()
                    ),
                );
            };
            let count = log.partition_count();
            match partition.parse::<u32>() {
                Ok(partition) if partition < count => Some(EventsNode::Partition {
                    group: declared.to_owned(),
                    partition,
                    start: start_position(attach.source.as_deref()),
                    epoch: epoch(attach.properties.as_ref()),
                }),
                _ => refused(
                    ARGUMENT_OUT_OF_RANGE,
                    format!("The specified partition '{partition}' is invalid: use 0 to {}", count.saturating_sub(1)),
                ),
            }
        }
        _ => refused(
            "amqp:not-found",
            format!("The messaging entity 'sb://{}/{path}' could not be found.", hub.host_name()),
        ),
    }
}

/// What a link to an events node must be authorized for.
pub(super) fn needs(hub: &Hub, node: &EventsNode) -> Option<(String, Rights)> {
    let host = hub.host_name();
    match node {
        EventsNode::Partition { group, partition, .. } => Some((
            format!("{host}/{}/ConsumerGroups/{group}/Partitions/{partition}", hub.event_hub_name()),
            Rights::SERVICE_CONNECT,
        )),
        EventsNode::Redirect { .. } => Some((format!("{host}/messages/events"), Rights::SERVICE_CONNECT)),
        EventsNode::Refused { .. } => None,
    }
}

/// The epoch (owner level) a receiver asked for.
fn epoch(properties: Option<&Fields>) -> Option<i64> {
    match properties?.get(&Symbol::from(EPOCH_PROPERTY))? {
        Value::Long(epoch) => Some(*epoch),
        Value::Int(epoch) => Some(i64::from(*epoch)),
        Value::Ulong(epoch) => i64::try_from(*epoch).ok(),
        Value::Uint(epoch) => Some(i64::from(*epoch)),
        _ => None,
    }
}

/// Where a receiver starts, from its selector filter; no filter reads from the start of the stream.
fn start_position(source: Option<&Source>) -> Result<StartAt, String> {
    let Some(filters) = source.and_then(|s| s.filter.as_ref()) else { return Ok(StartAt::Start) };
    let expression = filters.iter().find_map(|(key, value)| {
        let Value::Described(described) = value else { return None };
        let by_descriptor = match &described.descriptor {
            serde_amqp::descriptor::Descriptor::Code(code) => *code == SELECTOR_FILTER_CODE,
            serde_amqp::descriptor::Descriptor::Name(name) => name.as_str() == SELECTOR_FILTER,
        };
        match &described.value {
            Value::String(text) if by_descriptor || key.as_str() == SELECTOR_FILTER => Some(text.clone()),
            _ => None,
        }
    });
    match expression {
        None => Ok(StartAt::Start),
        Some(expression) => parse_selector(&expression),
    }
}

/// Parses `amqp.annotation.x-opt-<offset|sequence-number|enqueued-time> <op> '<value>'` with `>` or `>=`.
pub(super) fn parse_selector(expression: &str) -> Result<StartAt, String> {
    let refuse = || {
        format!(
            "The selector filter '{expression}' is not supported: use amqp.annotation.x-opt-offset, x-opt-sequence-number or x-opt-enqueued-time with > or >= and a quoted value"
        )
    };
    let mut words = expression.split_whitespace();
    let (Some(field), Some(operator), Some(quoted), None) = (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(refuse());
    };
    let inclusive = match operator {
        ">" => false,
        ">=" => true,
        _ => return Err(refuse()),
    };
    let value = quoted.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).ok_or_else(refuse)?;
    let field = field.to_ascii_lowercase();
    match field.strip_prefix("amqp.annotation.").ok_or_else(refuse)? {
        "x-opt-offset" => match value {
            "-1" => Ok(StartAt::Start),
            "@latest" => Ok(StartAt::Latest),
            number => number.parse().map(|offset| StartAt::Offset { offset, inclusive }).map_err(|_| refuse()),
        },
        "x-opt-sequence-number" => {
            value.parse().map(|sequence| StartAt::Sequence { sequence, inclusive }).map_err(|_| refuse())
        }
        "x-opt-enqueued-time" => {
            value.parse().map(|millis| StartAt::EnqueuedTime { millis, inclusive }).map_err(|_| refuse())
        }
        _ => Err(refuse()),
    }
}

/// An event as the endpoint delivers it: the body as one data section, the hub's annotations, the device's
/// system properties as AMQP properties and its application properties.
pub(super) fn event_message(event: &Event) -> Message<Data> {
    let message = &event.message;
    let enqueued = AmqpTimestamp::from_milliseconds(message.enqueued_time.as_millisecond());
    let mut annotations = MessageAnnotations::builder()
        .insert("iothub-connection-device-id", Value::String(message.device_id.clone()))
        .insert(
            "iothub-connection-auth-method",
            Value::String(if message.module_id.is_some() { SAS_MODULE_AUTH } else { SAS_DEVICE_AUTH }.to_owned()),
        )
        .insert("iothub-connection-auth-generation-id", Value::String(message.generation_id.clone()))
        .insert("iothub-enqueuedtime", Value::Timestamp(enqueued.clone()))
        .insert("iothub-message-source", Value::String("Telemetry".to_owned()));
    if let Some(module) = &message.module_id {
        annotations = annotations.insert("iothub-connection-module-id", Value::String(module.clone()));
    }
    let annotations = annotations
        .insert("x-opt-sequence-number", Value::Long(i64::try_from(event.sequence).unwrap_or(i64::MAX)))
        .insert("x-opt-offset", Value::String(event.offset.to_string()))
        .insert("x-opt-enqueued-time", Value::Timestamp(enqueued))
        .build();
    let system = |name: &str| message.system_properties.get(name).cloned();
    let mut properties = Properties::builder();
    if let Some(id) = system("messageId") {
        properties = properties.message_id(id);
    }
    if let Some(id) = system("correlationId") {
        properties = properties.correlation_id(id);
    }
    if let Some(user) = system("userId") {
        properties = properties.user_id(Binary::from(user.into_bytes()));
    }
    if let Some(to) = system("to") {
        properties = properties.to(to);
    }
    if let Some(content_type) = system("contentType") {
        properties = properties.content_type(content_type);
    }
    if let Some(encoding) = system("contentEncoding") {
        properties = properties.content_encoding(encoding);
    }
    let mut application = ApplicationProperties::builder();
    for (key, value) in &message.properties {
        application = application.insert(key.clone(), SimpleValue::String(value.clone()));
    }
    Message::builder()
        .properties(properties.build())
        .message_annotations(annotations)
        .application_properties(application.build())
        .data(Binary::from(message.body.to_vec()))
        .build()
}

/// Reads a partition to the client until the link ends (`None`), it is taken over or refused (detached here,
/// `None`), or `stop` fires (the link, to detach).
pub(super) async fn serve_partition(
    mut sender: Sender,
    connection: &Connection,
    group: &str,
    partition: u32,
    start: StartAt,
    epoch: Option<i64>,
    stop: CancellationToken,
) -> Option<Sender> {
    let log = connection.hub.event_log();
    let lease = match log.join_readers(group, partition, epoch) {
        Ok(lease) => lease,
        Err(refused) => {
            let condition: definitions::ErrorCondition = match refused {
                ReaderRefused::TooMany => AmqpError::ResourceLimitExceeded.into(),
                ReaderRefused::EpochHeld { .. } => LinkError::Stolen.into(),
            };
            close_sender(sender, Some(error(condition, refused.to_string()))).await;
            return None;
        }
    };
    let (Some(mut visible), Some(mut next)) = (log.watch(partition), log.first_sequence(partition, start)) else {
        return Some(sender);
    };
    let stolen = || {
        let description = "A receiver with a higher epoch took this partition over";
        Some(error(LinkError::Stolen, description))
    };
    loop {
        let batch = log.read(partition, next, READ_BATCH);
        if batch.is_empty() {
            tokio::select! {
                () = stop.cancelled() => return Some(sender),
                () = lease.stolen.cancelled() => {
                    close_sender(sender, stolen()).await;
                    return None;
                }
                _ = sender.on_detach() => return None,
                changed = async { visible.wait_for(|end| *end > next).await.map(|_| ()) } => {
                    if changed.is_err() {
                        return Some(sender);
                    }
                }
            }
            continue;
        }
        for event in batch {
            let delivery = Sendable::builder().message(event_message(&event)).settled(true).build();
            tokio::select! {
                () = stop.cancelled() => return Some(sender),
                () = lease.stolen.cancelled() => {
                    close_sender(sender, stolen()).await;
                    return None;
                }
                // The outcome is not awaited: a pre-settled delivery has none, and on an unsettled link the
                // client's disposition changes nothing here.
                sent = Box::pin(sender.send_batchable(delivery)) => if sent.is_err() { return None },
            }
            next = event.sequence + 1;
        }
    }
}

/// Answers a receiver on the IoT Hub's `messages/events[...]` with `amqp:link:redirect` to the compatible
/// endpoint: `amqps://<host>:<port>/<hub><rest>` (the published converters parse the port and hub name out of it).
pub(super) async fn redirect(sender: Sender, hub: &Hub, rest: &str) {
    let host = hub.host_name();
    let port = hub.amqp_port();
    let address = format!("amqps://{host}:{port}/{}{rest}", hub.event_hub_name());
    let mut info = Fields::new();
    info.insert(Symbol::from("hostname"), Value::String(host.to_owned()));
    info.insert(Symbol::from("network-host"), Value::String(host.to_owned()));
    info.insert(Symbol::from("port"), Value::Int(i32::from(port)));
    info.insert(Symbol::from("address"), Value::String(address.clone()));
    let redirect = definitions::Error::new(
        LinkError::Redirect,
        Some(format!("The IoT Hub's events are read at the Event Hubs-compatible endpoint '{address}'")),
        Some(info),
    );
    close_sender(sender, Some(redirect)).await;
}

/// Answers a `$management` request: READ of `com.microsoft:eventhub` (name, created_at, partition_count,
/// partition_ids) or `com.microsoft:partition` (sequence numbers, offset, time, emptiness).
pub(super) fn management(connection: &Connection, request: &Message<Body<Value>>) -> Answer {
    let hub = &connection.hub;
    let hub_name = hub.event_hub_name();
    let entity = format!("{}/{hub_name}", hub.host_name());
    let authorized = connection.authorized_until(&format!("{entity}/$management"), Rights::SERVICE_CONNECT).is_some()
        || text_property(request, "security_token").is_some_and(|token| {
            hub.verify_claim(token, &entity)
                .is_ok_and(|claim| claim.allows(&entity, Rights::SERVICE_CONNECT, hub.clock().unix_seconds()))
        });
    if !authorized {
        return Answer::status(
            401,
            format!("Put a token with ServiceConnect for 'sb://{entity}' on $cbs, or send it as security_token"),
        );
    }
    if text_property(request, "operation") != Some("READ") {
        return Answer::status(400, "Only the READ operation is supported on $management");
    }
    let name = text_property(request, "name").unwrap_or_default();
    if !name.eq_ignore_ascii_case(hub_name) {
        return Answer::status(
            404,
            format!("The messaging entity 'sb://{}/{name}' could not be found.", hub.host_name()),
        );
    }
    let log = hub.event_log();
    let key = |k: &str| Value::String(k.to_owned());
    let mut body = OrderedMap::new();
    match text_property(request, "type") {
        Some("com.microsoft:eventhub") => {
            let ids = (0..log.partition_count()).map(|p| Value::String(p.to_string())).collect::<Vec<_>>();
            body.insert(key("name"), Value::String(hub_name.to_owned()));
            body.insert(key("type"), Value::String("com.microsoft:eventhub".to_owned()));
            body.insert(
                key("created_at"),
                Value::Timestamp(AmqpTimestamp::from_milliseconds(log.created_at().as_millisecond())),
            );
            body.insert(key("partition_count"), Value::Int(i32::try_from(log.partition_count()).unwrap_or(i32::MAX)));
            body.insert(key("partition_ids"), Value::Array(Array::from(ids)));
        }
        Some("com.microsoft:partition") => {
            let asked = text_property(request, "partition").unwrap_or_default();
            let Some((partition, info)) =
                asked.parse::<u32>().ok().and_then(|p| log.partition_info(p).map(|info| (p, info)))
            else {
                return Answer::status(
                    400,
                    format!(
                        "The specified partition '{asked}' is invalid: use 0 to {}",
                        log.partition_count().saturating_sub(1)
                    ),
                );
            };
            let last_time = info.last_enqueued.map_or(0, |t| t.as_millisecond());
            body.insert(key("name"), Value::String(hub_name.to_owned()));
            body.insert(key("type"), Value::String("com.microsoft:partition".to_owned()));
            body.insert(key("partition"), Value::String(partition.to_string()));
            body.insert(key("begin_sequence_number"), Value::Long(info.begin_sequence));
            body.insert(key("last_enqueued_sequence_number"), Value::Long(info.last_sequence));
            body.insert(key("last_enqueued_offset"), Value::String(info.last_offset.to_string()));
            body.insert(key("last_enqueued_time_utc"), Value::Timestamp(AmqpTimestamp::from_milliseconds(last_time)));
            body.insert(key("is_partition_empty"), Value::Bool(info.is_empty));
        }
        other => {
            return Answer::status(
                400,
                format!("READ of {other:?} is not supported: use com.microsoft:eventhub or com.microsoft:partition"),
            );
        }
    }
    Answer {
        status: 200,
        description: "OK".into(),
        body: Body::Value(fe2o3_amqp::types::messaging::AmqpValue(Value::Map(body))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_filters_name_the_start_as_both_sdks_write_them() {
        let parse = |s: &str| parse_selector(s);
        assert_eq!(parse("amqp.annotation.x-opt-offset > '-1'"), Ok(StartAt::Start));
        assert_eq!(parse("amqp.annotation.x-opt-offset > '@latest'"), Ok(StartAt::Latest));
        assert_eq!(
            parse("amqp.annotation.x-opt-offset >= '4096'"),
            Ok(StartAt::Offset { offset: 4096, inclusive: true })
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-sequence-number > '41'"),
            Ok(StartAt::Sequence { sequence: 41, inclusive: false })
        );
        assert_eq!(
            parse("amqp.annotation.x-opt-enqueued-time > '1764900000000'"),
            Ok(StartAt::EnqueuedTime { millis: 1_764_900_000_000, inclusive: false })
        );
        for bad in [
            "",
            "amqp.annotation.x-opt-offset = '1'",
            "amqp.annotation.x-opt-offset > 1",
            "x-opt-offset > '1'",
            "amqp.annotation.x-opt-partition-key > 'a'",
            "amqp.annotation.x-opt-offset > 'abc'",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_event_carries_the_hubs_annotations_and_the_devices_properties() {
        let event = Event {
            partition: 1,
            sequence: 12,
            offset: 3000,
            message: crate::domain::telemetry::TelemetryMessage {
                device_id: "d1".into(),
                module_id: None,
                generation_id: "6380".into(),
                enqueued_time: jiff::Timestamp::from_millisecond(1_764_900_000_123).expect("time"),
                body: bytes::Bytes::from_static(b"{\"t\":1}"),
                system_properties: [
                    ("messageId".to_owned(), "m1".to_owned()),
                    ("contentType".to_owned(), "application/json".to_owned()),
                ]
                .into(),
                properties: [("alert".to_owned(), "high".to_owned())].into(),
            },
        };
        let message = event_message(&event);
        let annotations = message.message_annotations.expect("annotations");
        let annotation = |key: &str| {
            annotations.get(&fe2o3_amqp::types::messaging::annotations::OwnedKey::from(Symbol::from(key))).cloned()
        };
        assert_eq!(annotation("iothub-connection-device-id"), Some(Value::String("d1".into())));
        assert_eq!(annotation("x-opt-sequence-number"), Some(Value::Long(12)));
        assert_eq!(annotation("x-opt-offset"), Some(Value::String("3000".into())), "offsets are strings");
        assert_eq!(annotation("iothub-message-source"), Some(Value::String("Telemetry".into())));
        let properties = message.properties.expect("properties");
        assert_eq!(properties.content_type.map(|s| s.0), Some("application/json".to_owned()));
        assert_eq!(
            message.application_properties.expect("application").get("alert"),
            Some(&SimpleValue::String("high".into()))
        );
    }
}
