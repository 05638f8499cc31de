//! Reading device-to-cloud messages from the hub's built-in Event Hubs-compatible endpoint, as back ends do.
//!
//! Our own small reader on fe2o3-amqp rather than an Event Hubs crate: the Rust Event Hubs SDK pulls in the
//! Azure identity and HTTP stacks (and aws-lc-rs through its TLS defaults), while reading one partition is a
//! connection (TLS, SASL ANONYMOUS), a token on `$cbs` and one receiver link with a selector filter, the same
//! pieces the C2D sender already uses. It speaks what `@azure/event-hubs` and `azure-eventhub` speak
//! (docs/eventhubs-wire.md), so it reads a real hub's endpoint and the emulator's alike.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, Properties, Source};
use fe2o3_amqp::types::primitives::{SimpleValue, Symbol, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use iothub_proto::tls::Trust;
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;

use crate::amqp::cbs::Cbs;
use crate::amqp::connect_tls;
use crate::error::Error;

/// The AMQPS port of an Event Hubs namespace.
const DEFAULT_PORT: u16 = 5671;
const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
const SELECTOR_FILTER_CODE: u64 = 0x0000_468C_0000_0004;
/// Lifetime of the token put on `$cbs` (a receiver lives for one token; reopen it to read on).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Messages a receiver asks for ahead of reading them.
const PREFETCH: u32 = 300;

/// Where a partition receiver starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPosition {
    /// The oldest message the endpoint keeps.
    Earliest,
    /// Only messages enqueued after the receiver attaches.
    Latest,
    /// Messages after this sequence number (a checkpoint).
    AfterSequenceNumber(i64),
    /// Messages after this offset.
    AfterOffset(String),
    /// Messages enqueued after this time.
    EnqueuedAfter(SystemTime),
}

impl EventPosition {
    fn selector(&self) -> String {
        match self {
            Self::Earliest => "amqp.annotation.x-opt-offset > '-1'".to_owned(),
            Self::Latest => "amqp.annotation.x-opt-offset > '@latest'".to_owned(),
            Self::AfterSequenceNumber(n) => format!("amqp.annotation.x-opt-sequence-number > '{n}'"),
            Self::AfterOffset(offset) => format!("amqp.annotation.x-opt-offset > '{offset}'"),
            Self::EnqueuedAfter(time) => {
                let millis = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
                format!("amqp.annotation.x-opt-enqueued-time > '{millis}'")
            }
        }
    }
}

/// One device-to-cloud message as the endpoint delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEvent {
    /// The partition it was read from.
    pub partition: String,
    /// Its place in the partition (`x-opt-sequence-number`): what a checkpoint keeps.
    pub sequence_number: i64,
    /// Its offset in the partition (`x-opt-offset`).
    pub offset: String,
    /// Milliseconds since the Unix epoch.
    pub enqueued_time_ms: i64,
    /// `iothub-connection-device-id`: the device that sent it.
    pub device_id: Option<String>,
    /// The body as the device sent it.
    pub body: Vec<u8>,
    /// The device's application properties.
    pub properties: BTreeMap<String, String>,
    /// The device's message id.
    pub message_id: Option<String>,
    /// The device's correlation id.
    pub correlation_id: Option<String>,
    /// The content type the device set (`application/json` for the tutorial's telemetry).
    pub content_type: Option<String>,
    /// The content encoding the device set.
    pub content_encoding: Option<String>,
    /// Every other message annotation the hub added (`iothub-*`), as text.
    pub annotations: BTreeMap<String, String>,
}

/// Reads the built-in endpoint of one hub in one consumer group.
#[derive(Debug, Clone)]
pub struct EventHubConsumer {
    host: String,
    port: u16,
    entity: String,
    key_name: String,
    key: String,
    consumer_group: String,
    trust: Trust,
}

impl EventHubConsumer {
    /// From the Event Hub-compatible connection string (`Endpoint=sb://<host>[:port]/;SharedAccessKeyName=...;
    /// SharedAccessKey=...;EntityPath=<name>`: the portal's Built-in endpoints, or the emulator's banner).
    pub fn from_connection_string(connection_string: &str, consumer_group: &str, trust: Trust) -> Result<Self, Error> {
        let field = |name: &str| {
            connection_string
                .split(';')
                .filter_map(|part| part.split_once('='))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
                .map(|(_, value)| value.trim().to_owned())
                .ok_or_else(|| Error::Config(format!("the Event Hub-compatible connection string has no {name}")))
        };
        let endpoint = field("Endpoint")?;
        let authority = endpoint.split_once("://").map_or(endpoint.as_str(), |(_, rest)| rest).trim_end_matches('/');
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => {
                (host.to_owned(), port.parse().map_err(|_| Error::Config(format!("bad port in '{endpoint}'")))?)
            }
            None => (authority.to_owned(), DEFAULT_PORT),
        };
        Ok(Self {
            host,
            port,
            entity: field("EntityPath")?,
            key_name: field("SharedAccessKeyName")?,
            key: field("SharedAccessKey")?,
            consumer_group: consumer_group.to_owned(),
            trust,
        })
    }

    /// The endpoint's name (`EntityPath`).
    pub fn name(&self) -> &str {
        &self.entity
    }

    fn token(&self, audience: &str) -> String {
        let expiry = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + TOKEN_LIFETIME.as_secs();
        iothub_proto::generate_event_hubs_token(audience, &self.key, &self.key_name, expiry)
    }

    /// TLS, SASL ANONYMOUS, a session and a token on `$cbs` for the whole endpoint.
    async fn open(&self) -> Result<(ConnectionHandle<()>, SessionHandle<()>), Error> {
        let tls = connect_tls(&self.host, self.port, &self.trust).await?;
        let suffix = format!("{:016x}", rand::random::<u64>());
        let mut connection = Connection::builder()
            .container_id(format!("iothub-service-rust-events-{suffix}"))
            .hostname(self.host.as_str())
            .sasl_profile(SaslProfile::Anonymous)
            .open_with_stream(tls)
            .await
            .map_err(|e| Error::Transport(format!("AMQP open: {e}")))?;
        let mut session =
            Session::begin(&mut connection).await.map_err(|e| Error::Transport(format!("AMQP begin: {e}")))?;
        let mut cbs = Cbs::attach(&mut session, &suffix).await?;
        let audience = format!("sb://{}/{}", self.host, self.entity);
        cbs.put_token(&audience, self.token(&audience)).await?;
        cbs.close().await;
        Ok((connection, session))
    }

    /// The partition ids, read from `$management`.
    pub async fn partition_ids(&self) -> Result<Vec<String>, Error> {
        let (mut connection, mut session) = self.open().await?;
        let read = self.read_partition_ids(&mut session).await;
        let _ = session.end().await;
        let _ = connection.close().await;
        read
    }

    async fn read_partition_ids(&self, session: &mut SessionHandle<()>) -> Result<Vec<String>, Error> {
        let transport = |what: &str, e: &dyn std::fmt::Display| Error::Transport(format!("{what}: {e}"));
        let mut requests = Sender::attach(session, "mgmt-sender", "$management")
            .await
            .map_err(|e| transport("cannot attach to $management", &e))?;
        let mut replies = Receiver::builder()
            .name("mgmt-receiver")
            .source("$management")
            .target("mgmt-reply")
            .attach(session)
            .await
            .map_err(|e| transport("cannot attach to $management", &e))?;
        let audience = format!("sb://{}/{}", self.host, self.entity);
        let request = Message::builder()
            .properties(Properties::builder().message_id(1u64).reply_to("mgmt-reply").build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", "READ")
                    .insert("type", "com.microsoft:eventhub")
                    .insert("name", self.entity.as_str())
                    .insert("security_token", self.token(&audience))
                    .build(),
            )
            .body(Body::<Value>::Empty)
            .build();
        requests.send(request).await.map_err(|e| transport("$management request", &e))?;
        let reply = replies.recv::<Body<Value>>().await.map_err(|e| transport("$management reply", &e))?;
        let _ = replies.accept(&reply).await;
        let _ = requests.close().await;
        let _ = replies.close().await;
        let message = reply.message();
        let status = message.application_properties.as_ref().and_then(|p| p.get("status-code")).and_then(|v| match v {
            SimpleValue::Int(n) => Some(i64::from(*n)),
            SimpleValue::Long(n) => Some(*n),
            _ => None,
        });
        if status != Some(200) {
            return Err(Error::Transport(format!("$management READ answered {status:?}")));
        }
        let Body::Value(fe2o3_amqp::types::messaging::AmqpValue(Value::Map(map))) = &message.body else {
            return Err(Error::Decode("the $management reply has no map".into()));
        };
        let ids = match map.get(&Value::String("partition_ids".into())) {
            Some(Value::Array(array)) => array.0.clone(),
            Some(Value::List(list)) => list.clone(),
            _ => return Err(Error::Decode("the $management reply has no partition_ids".into())),
        };
        Ok(ids.into_iter().filter_map(|id| if let Value::String(id) = id { Some(id) } else { None }).collect())
    }

    /// Opens a receiver on `partition` starting at `start`.
    pub async fn receive(&self, partition: &str, start: EventPosition) -> Result<PartitionReceiver, Error> {
        let (connection, mut session) = self.open().await?;
        let address = format!("{}/ConsumerGroups/{}/Partitions/{partition}", self.entity, self.consumer_group);
        let filter = Value::Described(Box::new(Described {
            descriptor: Descriptor::Code(SELECTOR_FILTER_CODE),
            value: Value::String(start.selector()),
        }));
        let mut filters = fe2o3_amqp::types::messaging::FilterSet::new();
        filters.insert(Symbol::from(SELECTOR_FILTER), filter);
        let receiver = Receiver::builder()
            .name(format!("receiver-{partition}-{:08x}", rand::random::<u32>()))
            .source(Source::builder().address(address.clone()).filter(filters).build())
            .target(format!("rust-consumer-{partition}"))
            .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Auto(PREFETCH))
            .attach(&mut session)
            .await
            .map_err(|e| Error::Transport(format!("cannot attach to {address}: {e}")))?;
        Ok(PartitionReceiver { connection, session, receiver, partition: partition.to_owned() })
    }
}

/// A receiver of one partition.
pub struct PartitionReceiver {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    receiver: Receiver,
    partition: String,
}

impl std::fmt::Debug for PartitionReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReceiver").field("partition", &self.partition).finish_non_exhaustive()
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.as_str().to_owned()),
        Value::Long(n) => Some(n.to_string()),
        Value::Int(n) => Some(n.to_string()),
        Value::Timestamp(t) => Some(t.milliseconds().to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl PartitionReceiver {
    /// The next message; waits for one to arrive. An error ends the receiver (a higher epoch took the
    /// partition, the connection broke): open a new one from the last sequence number.
    pub async fn next(&mut self) -> Result<ReceivedEvent, Error> {
        let delivery = self
            .receiver
            .recv::<Body<Value>>()
            .await
            .map_err(|e| Error::Transport(format!("receiving from partition {}: {e}", self.partition)))?;
        let _ = self.receiver.accept(&delivery).await;
        let message = delivery.into_message();
        let mut annotations = BTreeMap::new();
        let (mut sequence_number, mut offset, mut enqueued_time_ms) = (-1, String::new(), 0);
        for (key, value) in message.message_annotations.iter().flat_map(|a| a.0.iter()) {
            let key = match key {
                fe2o3_amqp::types::messaging::annotations::OwnedKey::Symbol(s) => s.as_str().to_owned(),
                other => format!("{other:?}"),
            };
            match (key.as_str(), value) {
                ("x-opt-sequence-number", Value::Long(n)) => sequence_number = *n,
                ("x-opt-offset", value) => offset = text(value).unwrap_or_default(),
                ("x-opt-enqueued-time", Value::Timestamp(t)) => enqueued_time_ms = t.milliseconds(),
                (_, value) => {
                    if let Some(text) = text(value) {
                        annotations.insert(key, text);
                    }
                }
            }
        }
        let properties = message.properties.as_ref();
        let id_text = |id: Option<&fe2o3_amqp::types::messaging::MessageId>| {
            id.map(|id| match id {
                fe2o3_amqp::types::messaging::MessageId::String(s) => s.clone(),
                other => format!("{other:?}"),
            })
        };
        let body = match message.body {
            Body::Data(batch) => batch.into_iter().flat_map(|data| data.0.into_vec()).collect(),
            Body::Value(fe2o3_amqp::types::messaging::AmqpValue(Value::String(s))) => s.into_bytes(),
            _ => Vec::new(),
        };
        Ok(ReceivedEvent {
            partition: self.partition.clone(),
            sequence_number,
            offset,
            enqueued_time_ms,
            device_id: annotations.get("iothub-connection-device-id").cloned(),
            body,
            properties: message
                .application_properties
                .iter()
                .flat_map(|p| p.0.iter())
                .filter_map(|(k, v)| match v {
                    SimpleValue::String(s) => Some((k.clone(), s.clone())),
                    _ => None,
                })
                .collect(),
            message_id: id_text(properties.and_then(|p| p.message_id.as_ref())),
            correlation_id: id_text(properties.and_then(|p| p.correlation_id.as_ref())),
            content_type: properties.and_then(|p| p.content_type.as_ref()).map(|s| s.as_str().to_owned()),
            content_encoding: properties.and_then(|p| p.content_encoding.as_ref()).map(|s| s.as_str().to_owned()),
            annotations,
        })
    }

    /// Detaches and closes the connection.
    pub async fn close(mut self) {
        let _ = self.receiver.close().await;
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}
