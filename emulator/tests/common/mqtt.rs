//! A raw MQTT 3.1.1 test client over TLS (rumqttc's codec on tokio-rustls), so tests control every packet.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    Codec, ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeFilter,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;

use super::{TestHub, unix_now};

pub type Mqtt = Framed<TlsStream<TcpStream>, Codec>;

pub const WAIT: Duration = Duration::from_secs(5);

/// A TLS connection to the MQTT port that trusts only the emulator's CA.
pub async fn tls(hub: &TestHub) -> TlsStream<TcpStream> {
    tls_to(hub, hub.emulator.mqtt_addr()).await
}

/// A TLS connection to one of the hub's ports, trusting only its CA.
pub async fn tls_to(hub: &TestHub, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    let config = super::client_tls(hub.emulator.ca_pem(), rustls::DEFAULT_VERSIONS);
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS with only the emulator CA trusted")
}

pub fn user_name(device_id: &str) -> String {
    format!("localhost/{device_id}/?api-version=2021-04-12&DeviceClientType=test%2F1.0")
}

/// A SAS token for `device_id` signed with the key of `key_of`.
pub fn device_token(hub: &TestHub, device_id: &str, key_of: &str, expiry: u64) -> String {
    let key = hub.emulator.hub().get_device(key_of).expect("device").authentication.primary_key.clone().expect("key");
    iothub_proto::generate_token(&format!("localhost/devices/{device_id}"), &key, None, expiry).expect("token")
}

/// Sends CONNECT (keep-alive 60 s) and returns the transport and the CONNACK.
pub async fn connect_with(hub: &TestHub, client_id: &str, user: &str, password: &str, clean: bool) -> (Mqtt, ConnAck) {
    let mut packet = Connect::new(client_id);
    packet.keep_alive = 60;
    packet.clean_session = clean;
    packet.set_login(user, password);
    connect_packet(hub, packet).await
}

/// Sends `packet` as the CONNECT and returns the transport and the CONNACK.
pub async fn connect_packet(hub: &TestHub, packet: Connect) -> (Mqtt, ConnAck) {
    let mut mqtt = Framed::new(tls(hub).await, Codec { max_incoming_size: 1 << 20, max_outgoing_size: 1 << 20 });
    mqtt.send(Packet::Connect(packet)).await.expect("send CONNECT");
    match tokio::time::timeout(WAIT, mqtt.next()).await.expect("CONNACK in time") {
        Some(Ok(Packet::ConnAck(ack))) => (mqtt, ack),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Connects `device_id` with its own key (clean session 0, as the SDKs do) and expects success.
pub async fn connect_device(hub: &TestHub, device_id: &str) -> Mqtt {
    let token = device_token(hub, device_id, device_id, unix_now() + 600);
    let (mqtt, ack) = connect_with(hub, device_id, &user_name(device_id), &token, false).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    mqtt
}

/// The next packet, within `WAIT`.
pub async fn next(mqtt: &mut Mqtt) -> Packet {
    match tokio::time::timeout(WAIT, mqtt.next()).await.expect("a packet in time") {
        Some(Ok(packet)) => packet,
        other => panic!("connection ended: {other:?}"),
    }
}

/// The next PUBLISH, skipping PUBACKs and PINGRESPs.
pub async fn next_publish(mqtt: &mut Mqtt) -> Publish {
    loop {
        match next(mqtt).await {
            Packet::Publish(publish) => return publish,
            Packet::PubAck(_) | Packet::PingResp => {}
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// Subscribes to `filters` at `qos` and returns the SUBACK return codes.
pub async fn subscribe(
    mqtt: &mut Mqtt,
    filters: &[&str],
    qos: QoS,
) -> Vec<rumqttc::mqttbytes::v4::SubscribeReasonCode> {
    let filters: Vec<SubscribeFilter> = filters.iter().map(|f| SubscribeFilter::new((*f).to_owned(), qos)).collect();
    let mut packet = Subscribe::new_many(filters);
    packet.pkid = 1;
    mqtt.send(Packet::Subscribe(packet)).await.expect("subscribe");
    loop {
        match next(mqtt).await {
            Packet::SubAck(ack) => return ack.return_codes,
            Packet::Publish(_) | Packet::PubAck(_) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

/// Publishes; at QoS 1 waits for the PUBACK (other packets before it are returned).
pub async fn publish(mqtt: &mut Mqtt, topic: &str, qos: QoS, payload: &[u8]) -> Vec<Packet> {
    let mut packet = Publish::new(topic, qos, payload.to_vec());
    if qos != QoS::AtMostOnce {
        packet.pkid = 7;
    }
    mqtt.send(Packet::Publish(packet)).await.expect("publish");
    let mut before = Vec::new();
    if qos == QoS::AtLeastOnce {
        loop {
            match next(mqtt).await {
                Packet::PubAck(PubAck { pkid: 7, .. }) => break,
                other => before.push(other),
            }
        }
    }
    before
}

/// Waits until the hub closes the connection.
pub async fn expect_closed(mqtt: &mut Mqtt) {
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match mqtt.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Packet::PubAck(_) | Packet::PingResp)) => {}
                Some(Ok(packet)) => panic!("unexpected packet while waiting for close: {packet:?}"),
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the hub closed the connection");
}

/// The `$rid` / `$version` of a hub topic's query string.
pub fn topic_param<'a>(topic: &'a str, name: &str) -> Option<&'a str> {
    topic.split_once('?')?.1.split('&').find_map(|p| p.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}
