//! One MQTT connection to the hub: TCP, TLS (and for WebSockets the upgrade to `/$iothub/websocket` with the
//! `mqtt` subprotocol), CONNECT with a fresh SAS token, CONNACK, and the subscriptions the client needs.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use iothub_proto::topics;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Codec, Connect, ConnectReturnCode, Packet, Publish, Subscribe, SubscribeFilter};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_util::codec::Framed;
use tokio_util::io::{CopyToBytes, SinkWriter, StreamReader};

use crate::error::Error;
use crate::options::{ClientOptions, Transport, Trust};

/// The byte stream MQTT runs over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open MQTT connection.
pub(crate) type Mqtt = Framed<Pin<Box<dyn Io>>, Codec>;

/// Largest packet sent or accepted: a 256 KB message plus topic and properties.
const MAX_PACKET: usize = 256 * 1024 + 8 * 1024;
/// How long opening a connection may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Most publishes kept that the hub sends before its SUBACK.
const MAX_EARLY: usize = 1024;
/// The MQTT api-version the client announces.
const API_VERSION: &str = "2021-04-12";

/// Who connects where: fixed for the life of a client.
pub(crate) struct Endpoint {
    /// `HostName`: the SAS audience and user-name prefix.
    pub host_name: String,
    pub device_id: String,
    /// Set when the connection string names a module: the client then connects as `<deviceId>/<moduleId>`.
    pub module_id: Option<String>,
    pub key: String,
    /// Where the socket goes and the name the certificate must carry (`GatewayHostName` or `HostName`).
    pub connect_host: String,
    pub port: u16,
    pub transport: Transport,
    pub tls: TlsConnector,
    pub keep_alive: Duration,
    pub token_lifetime: Duration,
}

impl Endpoint {
    /// Resolves the connection string and options into an endpoint.
    pub(crate) fn new(cs: &iothub_proto::DeviceConnectionString, options: &ClientOptions) -> Result<Self, Error> {
        let (gateway_host, gateway_port) = match cs.gateway_host_name.as_deref() {
            None => (None, None),
            Some(gateway) => match gateway.rsplit_once(':') {
                Some((host, port)) if !host.contains(']') || host.ends_with(']') => {
                    let port = port
                        .parse::<u16>()
                        .map_err(|_| Error::Config(format!("GatewayHostName '{gateway}' has a bad port")))?;
                    (Some(host.to_owned()), Some(port))
                }
                _ => (Some(gateway.to_owned()), None),
            },
        };
        let connect_host = gateway_host.unwrap_or_else(|| cs.host_name.clone());
        ServerName::try_from(connect_host.clone())
            .map_err(|_| Error::Config(format!("'{connect_host}' is not a valid host name")))?;
        Ok(Self {
            host_name: cs.host_name.clone(),
            device_id: cs.device_id.clone(),
            module_id: cs.module_id.clone(),
            key: cs.key.clone(),
            port: options.port.or(gateway_port).unwrap_or(options.transport.default_port()),
            connect_host,
            transport: options.transport,
            tls: tls_connector(&options.trust, options.transport)?,
            keep_alive: options.keep_alive,
            token_lifetime: options.token_lifetime,
        })
    }

    /// The MQTT client id: `<deviceId>`, or `<deviceId>/<moduleId>` for a module.
    pub(crate) fn client_id(&self) -> String {
        match &self.module_id {
            Some(module_id) => format!("{}/{module_id}", self.device_id),
            None => self.device_id.clone(),
        }
    }

    /// The cloud-to-device filter; none for a module (modules receive no cloud-to-device messages).
    pub(crate) fn cloud_to_device_filter(&self) -> Option<String> {
        self.module_id.is_none().then(|| topics::cloud_to_device_filter(&self.device_id))
    }

    fn user_name(&self) -> String {
        let agent = concat!("iothub-device-rust%2F", env!("CARGO_PKG_VERSION"));
        format!("{}/{}/?api-version={API_VERSION}&DeviceClientType={agent}", self.host_name, self.client_id())
    }

    /// A SAS token for the device, valid for the configured lifetime from now, and when it expires. The expiry
    /// is in whole seconds, so a token may live up to a second less than asked.
    fn token(&self) -> Result<(String, SystemTime), Error> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let expiry = now + self.token_lifetime.as_secs().max(1);
        let resource = match &self.module_id {
            Some(module_id) => format!("{}/devices/{}/modules/{module_id}", self.host_name, self.device_id),
            None => format!("{}/devices/{}", self.host_name, self.device_id),
        };
        let token = iothub_proto::generate_token(&resource, &self.key, None, expiry)
            .map_err(|e| Error::Config(format!("cannot sign a SAS token with the device key: {e}")))?;
        Ok((token, UNIX_EPOCH + Duration::from_secs(expiry)))
    }
}

fn tls_connector(trust: &Trust, transport: Transport) -> Result<TlsConnector, Error> {
    let alpn: &[&[u8]] = if transport == Transport::WebSocket { &[b"http/1.1"] } else { &[] };
    let config = trust.client_config(alpn).map_err(|e| Error::Config(e.to_string()))?;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Opens the byte stream: TCP, TLS, and for WebSockets the HTTP upgrade.
async fn open_stream(endpoint: &Endpoint) -> Result<Pin<Box<dyn Io>>, Error> {
    let tcp = TcpStream::connect((endpoint.connect_host.as_str(), endpoint.port))
        .await
        .map_err(|e| Error::from_io(&format!("connecting to {}:{}", endpoint.connect_host, endpoint.port), &e))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(endpoint.connect_host.clone())
        .map_err(|_| Error::Config(format!("'{}' is not a valid host name", endpoint.connect_host)))?;
    let tls = endpoint.tls.connect(name, tcp).await.map_err(|e| Error::from_io("TLS handshake", &e))?;
    match endpoint.transport {
        Transport::Mqtt => Ok(Box::pin(tls)),
        Transport::WebSocket => {
            let url = format!(
                "wss://{}:{}/$iothub/websocket?iothub-no-client-cert=true",
                endpoint.connect_host, endpoint.port
            );
            let mut request =
                url.into_client_request().map_err(|e| Error::Config(format!("WebSocket request: {e}")))?;
            request.headers_mut().insert("Sec-WebSocket-Protocol", http_value("mqtt"));
            let (socket, _) = tokio_tungstenite::client_async(request, tls)
                .await
                .map_err(|e| Error::Connection(format!("WebSocket upgrade: {e}")))?;
            let (sink, stream) = socket.split();
            // WebSocket frames do not align with MQTT packets: carry a plain byte stream both ways.
            let incoming = stream.filter_map(|message| {
                std::future::ready(match message {
                    Ok(Message::Binary(bytes)) => Some(Ok(bytes)),
                    Ok(Message::Close(_)) => Some(Err(io::Error::from(io::ErrorKind::ConnectionAborted))),
                    Ok(_) => None,
                    Err(error) => Some(Err(io::Error::other(error))),
                })
            });
            let outgoing = sink
                .sink_map_err(io::Error::other)
                .with(|bytes: Bytes| std::future::ready(Ok::<_, io::Error>(Message::Binary(bytes))));
            let reader = StreamReader::new(Box::pin(incoming));
            let writer = SinkWriter::new(CopyToBytes::new(Box::pin(outgoing)));
            Ok(Box::pin(tokio::io::join(reader, writer)))
        }
    }
}

fn http_value(text: &'static str) -> tokio_tungstenite::tungstenite::http::HeaderValue {
    tokio_tungstenite::tungstenite::http::HeaderValue::from_static(text)
}

async fn next_packet(mqtt: &mut Mqtt, what: &str) -> Result<Packet, Error> {
    match tokio::time::timeout(OPEN_TIMEOUT, mqtt.next()).await {
        Err(_) => Err(Error::Connection(format!("no {what} within {OPEN_TIMEOUT:?}"))),
        Ok(None) => Err(Error::Connection(format!("the hub closed the connection before {what}"))),
        Ok(Some(Err(e))) => Err(Error::Connection(format!("reading {what}: {e}"))),
        Ok(Some(Ok(packet))) => Ok(packet),
    }
}

/// A new connection: CONNECT with a fresh token (persistent session, so the hub keeps subscriptions), and
/// SUBSCRIBE to methods, twin responses and desired changes, and with `c2d` to cloud-to-device messages, every
/// time (idempotent, and the client never depends on the hub having kept the session).
///
/// A hub that resumes the session may publish before its SUBACK (a message queued while the device was away):
/// such publishes are kept, unacknowledged, in [`Link::early`] for the driver.
pub(crate) async fn open(endpoint: &Endpoint, c2d: bool) -> Result<Link, Error> {
    let handshake = async {
        let stream = open_stream(endpoint).await?;
        let mut mqtt = Framed::new(stream, Codec { max_incoming_size: MAX_PACKET, max_outgoing_size: MAX_PACKET });
        let mut connect = Connect::new(endpoint.client_id());
        connect.keep_alive = u16::try_from(endpoint.keep_alive.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = false;
        let (token, token_expiry) = endpoint.token()?;
        connect.set_login(endpoint.user_name(), token);
        mqtt.send(Packet::Connect(connect)).await.map_err(|e| Error::Connection(format!("sending CONNECT: {e}")))?;
        // Whether the hub kept a session does not matter: the client subscribes and resends every time.
        match next_packet(&mut mqtt, "CONNACK").await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
            Packet::ConnAck(ack) => return Err(Error::from_connack(ack.code)),
            other => return Err(Error::Connection(format!("expected CONNACK, got {other:?}"))),
        };
        let mut filters: Vec<String> =
            [topics::METHODS_FILTER, topics::TWIN_RESPONSES_FILTER, topics::DESIRED_FILTER].map(str::to_owned).into();
        if c2d && let Some(filter) = endpoint.cloud_to_device_filter() {
            filters.push(filter);
        }
        let mut subscribe = Subscribe::new_many(filters.into_iter().map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce)));
        subscribe.pkid = SUBSCRIBE_PKID;
        mqtt.send(Packet::Subscribe(subscribe))
            .await
            .map_err(|e| Error::Connection(format!("sending SUBSCRIBE: {e}")))?;
        let mut early = Vec::new();
        loop {
            match next_packet(&mut mqtt, "SUBACK").await? {
                Packet::SubAck(ack) if ack.pkid == SUBSCRIBE_PKID => {
                    use rumqttc::mqttbytes::v4::SubscribeReasonCode;
                    if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
                        return Err(Error::Connection("the hub refused a subscription".into()));
                    }
                    break;
                }
                Packet::Publish(publish) if early.len() < MAX_EARLY => early.push(publish),
                other => return Err(Error::Connection(format!("expected SUBACK, got {other:?}"))),
            }
        }
        Ok(Link { mqtt, token_expiry, early, c2d_subscribed: c2d })
    };
    match tokio::time::timeout(OPEN_TIMEOUT, handshake).await {
        Ok(result) => result,
        Err(_) => Err(Error::Connection(format!("connecting took longer than {OPEN_TIMEOUT:?}"))),
    }
}

/// An open connection, with what the driver needs to know about it.
pub(crate) struct Link {
    pub mqtt: Mqtt,
    /// When the token this connection was opened with expires; the connection must be renewed before.
    pub token_expiry: SystemTime,
    /// Publishes the hub sent before its SUBACK, not acknowledged yet.
    pub early: Vec<Publish>,
    /// The SUBSCRIBE included the cloud-to-device filter.
    pub c2d_subscribed: bool,
}

impl Link {
    /// How long until the connection should be renewed: with a quarter of the token's lifetime to spare.
    pub(crate) fn renew_in(&self, lifetime: Duration) -> Duration {
        let left = self.token_expiry.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        left.saturating_sub(lifetime / 4)
    }
}

/// The packet id of the connection's SUBSCRIBE (publishes use ids from 2 up).
pub(crate) const SUBSCRIBE_PKID: u16 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(text: &str) -> iothub_proto::DeviceConnectionString {
        text.parse().expect("connection string")
    }

    #[test]
    fn gateway_host_and_port_decide_where_to_connect() {
        let options = ClientOptions::default().with_ca_pem(test_ca());
        let plain = Endpoint::new(&cs("HostName=hub.example;DeviceId=d;SharedAccessKey=AAAA"), &options).expect("ok");
        assert_eq!((plain.connect_host.as_str(), plain.port), ("hub.example", 8883));
        let gateway = Endpoint::new(
            &cs("HostName=hub.example;DeviceId=d;SharedAccessKey=AAAA;GatewayHostName=localhost:18883"),
            &options,
        )
        .expect("ok");
        assert_eq!(
            (gateway.connect_host.as_str(), gateway.port, gateway.host_name.as_str()),
            ("localhost", 18883, "hub.example")
        );
        let ws = Endpoint::new(
            &cs("HostName=hub.example;DeviceId=d;SharedAccessKey=AAAA"),
            &options.clone().with_transport(Transport::WebSocket),
        )
        .expect("ok");
        assert_eq!(ws.port, 443);
        let forced =
            Endpoint::new(&cs("HostName=h;DeviceId=d;SharedAccessKey=AAAA;GatewayHostName=g:1"), &options.with_port(9))
                .expect("ok");
        assert_eq!(forced.port, 9, "an explicit port wins");
        assert!(
            plain
                .user_name()
                .starts_with("hub.example/d/?api-version=2021-04-12&DeviceClientType=iothub-device-rust%2F")
        );
    }

    #[test]
    fn bad_trust_settings_are_configuration_errors() {
        let options = ClientOptions::default().with_ca_pem("not a certificate");
        let err = Endpoint::new(&cs("HostName=h;DeviceId=d;SharedAccessKey=AAAA"), &options).err().expect("refused");
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(err.is_permanent());
    }

    /// A real CA certificate (the emulator's kind), for the parsing of trust settings.
    fn test_ca() -> String {
        iothub_emulator::tls::LocalCa::generate().expect("CA").cert_pem().to_owned()
    }
}
