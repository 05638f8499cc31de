//! MQTT over WebSockets at `/$iothub/websocket` on the HTTPS port: the upgrade (echoing the `mqtt`
//! subprotocol, which the Node SDK's `ws` requires) and a byte-stream bridge to the same MQTT session code
//! as port 8883. WebSocket frames do not align with MQTT packets, so the bridge is a plain byte stream.

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
use crate::mqtt;

/// Subprotocols accepted; the first one the client offers is echoed.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// `GET /$iothub/websocket` with `Upgrade: websocket`.
pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.protocols(SUBPROTOCOLS).on_upgrade(move |socket| serve(socket, app, peer))
}

async fn serve(socket: WebSocket, app: AppState, peer: SocketAddr) {
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
    mqtt::serve_connection(tokio::io::join(reader, writer), app.hub, app.shutdown, peer).await;
}
