//! One MQTT connection, from CONNECT to close: authenticate, keep presence, enforce keep-alive, answer pings.
//! Topics (twins, methods, telemetry) are not offered yet: subscriptions are refused (SUBACK 0x80) and a
//! PUBLISH closes the connection, as the hub does for topics it does not know.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rumqttc::mqttbytes::v4::{Codec, ConnAck, ConnectReturnCode, Packet, SubAck, SubscribeReasonCode, UnsubAck};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::connect;
use crate::hub::Hub;
use crate::limits;

type Transport<IO> = Framed<IO, Codec>;

/// Serves one MQTT connection on `io` (TLS today; WebSockets use the same code) until it ends or `shutdown`.
pub async fn serve_connection<IO>(io: IO, hub: Arc<Hub>, shutdown: CancellationToken, peer: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let codec =
        Codec { max_incoming_size: limits::MAX_MQTT_PACKET_BYTES, max_outgoing_size: limits::MAX_MQTT_PACKET_BYTES };
    let mut transport = Framed::new(io, codec);
    let first = tokio::select! {
        first = tokio::time::timeout(Duration::from_secs(limits::HANDSHAKE_TIMEOUT_SECS), transport.next()) => first,
        () = shutdown.cancelled() => return,
    };
    let connect = match first {
        Ok(Some(Ok(Packet::Connect(connect)))) => connect,
        Ok(Some(Err(CodecError::InvalidProtocol | CodecError::InvalidProtocolLevel(_)))) => {
            tracing::debug!(%peer, "CONNECT with an unsupported protocol level");
            refuse(&mut transport, ConnectReturnCode::RefusedProtocolVersion).await;
            return;
        }
        Ok(Some(Ok(other))) => {
            tracing::debug!(%peer, packet = ?other, "first packet is not CONNECT");
            return;
        }
        Ok(Some(Err(error))) => {
            tracing::debug!(%peer, %error, "malformed first packet");
            return;
        }
        Ok(None) => return,
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT in time");
            return;
        }
    };
    if connect.protocol != rumqttc::mqttbytes::Protocol::V4 {
        refuse(&mut transport, ConnectReturnCode::RefusedProtocolVersion).await;
        return;
    }
    let accepted = match connect::check(&hub, &connect) {
        Ok(accepted) => accepted,
        Err(code) => {
            refuse(&mut transport, code).await;
            return;
        }
    };
    let device_id = accepted.device_id.clone();
    let lease = hub.device_connected(&device_id);
    let ack = Packet::ConnAck(ConnAck { session_present: false, code: ConnectReturnCode::Success });
    if transport.send(ack).await.is_ok() {
        tracing::debug!(%peer, device_id, "device connected");
        run(&mut transport, &accepted, &lease.closed, &shutdown).await;
    }
    hub.device_disconnected(&device_id, lease.id);
    tracing::debug!(%peer, device_id, "device disconnected");
}

async fn refuse<IO: AsyncRead + AsyncWrite + Unpin>(transport: &mut Transport<IO>, code: ConnectReturnCode) {
    let _ = transport.send(Packet::ConnAck(ConnAck { session_present: false, code })).await;
}

/// How long the hub waits for any packet: 1.5 x the client's keep-alive, capped; `None` when disabled (0).
fn keep_alive_deadline(keep_alive_secs: u16) -> Option<Duration> {
    (keep_alive_secs > 0).then(|| {
        let millis = u64::from(keep_alive_secs) * 1500;
        Duration::from_millis(millis.min(limits::MAX_KEEP_ALIVE_TIMEOUT_SECS * 1000))
    })
}

async fn run<IO: AsyncRead + AsyncWrite + Unpin>(
    transport: &mut Transport<IO>,
    accepted: &connect::Accepted,
    closed: &CancellationToken,
    shutdown: &CancellationToken,
) {
    let deadline = keep_alive_deadline(accepted.keep_alive_secs);
    let device_id = accepted.device_id.as_str();
    loop {
        let next = async {
            match deadline {
                Some(limit) => tokio::time::timeout(limit, transport.next()).await.ok(),
                None => Some(transport.next().await),
            }
        };
        let packet = tokio::select! {
            packet = next => packet,
            () = closed.cancelled() => {
                tracing::debug!(device_id, "connection closed by the hub");
                return;
            }
            () = shutdown.cancelled() => return,
        };
        let packet = match packet {
            None => {
                tracing::debug!(device_id, "keep-alive expired");
                return;
            }
            Some(None) => return,
            Some(Some(Err(error))) => {
                tracing::debug!(device_id, %error, "malformed packet; closing");
                return;
            }
            Some(Some(Ok(packet))) => packet,
        };
        let reply = match packet {
            Packet::PingReq => Packet::PingResp,
            Packet::Disconnect => return,
            Packet::Subscribe(subscribe) => {
                for filter in &subscribe.filters {
                    tracing::debug!(device_id, filter = %filter.path, "subscription refused: topic not offered");
                }
                let return_codes = vec![SubscribeReasonCode::Failure; subscribe.filters.len()];
                Packet::SubAck(SubAck { pkid: subscribe.pkid, return_codes })
            }
            Packet::Unsubscribe(unsubscribe) => Packet::UnsubAck(UnsubAck { pkid: unsubscribe.pkid }),
            Packet::PubAck(_) => continue,
            Packet::Publish(publish) => {
                let why = if publish.qos == QoS::ExactlyOnce { "QoS 2 is not supported" } else { "topic not offered" };
                tracing::debug!(device_id, topic = %publish.topic, why, "PUBLISH refused; closing");
                return;
            }
            other => {
                tracing::debug!(device_id, packet = ?other, "unexpected packet; closing");
                return;
            }
        };
        if transport.send(reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_is_one_and_a_half_times_capped() {
        assert_eq!(keep_alive_deadline(0), None);
        assert_eq!(keep_alive_deadline(60), Some(Duration::from_secs(90)));
        assert_eq!(keep_alive_deadline(u16::MAX), Some(Duration::from_secs(1767)));
    }
}
