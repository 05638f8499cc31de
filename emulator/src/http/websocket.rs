//! MQTT and AMQP over WebSockets on the HTTPS port: the upgrade at `/$iothub/websocket` (and
//! `/$servicebus/websocket`, where Python's uamqp goes), told apart by the subprotocol the client offers
//! (`mqtt`, which the Node SDK's `ws` requires echoed, or `AMQPWSB10`), then a byte-stream bridge to the same
//! MQTT session or AMQP connection code as ports 8883 and 5671. WebSocket frames do not align with packets or
//! frames, so the bridge is a plain byte stream.

use std::future::ready;
use std::io;
use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_util::io::{CopyToBytes, SinkWriter, StreamReader};

use super::AppState;
use crate::{amqp, mqtt};

/// Subprotocols accepted; the first one the client offers is echoed.
const SUBPROTOCOLS: [&str; 3] = ["mqtt", "mqttv3.1", amqp::WEBSOCKET_SUBPROTOCOL];

/// `GET /$iothub/websocket` with `Upgrade: websocket`.
pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.protocols(SUBPROTOCOLS).on_upgrade(move |socket| serve(socket, app, peer))
}

async fn serve(socket: WebSocket, app: AppState, peer: SocketAddr) {
    let amqp =
        socket.protocol().is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(amqp::WEBSOCKET_SUBPROTOCOL.as_bytes()));
    let (sink, stream) = socket.split();
    let incoming =
        stream.take_while(|message| ready(!matches!(message, Ok(Message::Close(_))))).filter_map(|message| {
            ready(match message {
                Ok(Message::Binary(bytes)) => Some(Ok(bytes)),
                Ok(Message::Text(_)) => {
                    Some(Err(io::Error::new(io::ErrorKind::InvalidData, "MQTT needs binary frames")))
                }
                Ok(_) => None,
                Err(error) => Some(Err(io::Error::other(error))),
            })
        });
    let outgoing =
        sink.sink_map_err(io::Error::other).with(|bytes: Bytes| ready(Ok::<_, io::Error>(Message::Binary(bytes))));
    let reader = StreamReader::new(Box::pin(incoming));
    let writer = SinkWriter::new(CopyToBytes::new(Box::pin(outgoing)));
    let bytes = tokio::io::join(reader, writer);
    if amqp {
        amqp::serve_connection(bytes, app.hub, app.shutdown, peer).await;
    } else {
        mqtt::serve_connection(bytes, app.hub, app.shutdown, peer).await;
    }
}
