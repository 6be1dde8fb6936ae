//! The listening side of a node: accepts connections, reads the handshake, and serves either a
//! client (request frames in, response frames out, pipelined) or a peer (Raft messages in).
//!
//! Every resource is bounded: connections by a semaphore, requests in flight per connection,
//! frame sizes by the codec. A malformed or oversized frame is answered with an `Invalid` error
//! and the connection is closed; it never reaches the node, so it can never be half-applied.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use consensus::{Message, NodeId};
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use ringleader_client::protocol::{
    decode_frame, encode_frame, frame_codec, ErrorKind, Handshake, Limits, RequestFrame, Response,
    ResponseFrame, Role, HANDSHAKE_BYTES, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::codec::Framed;

use crate::network::Network;
use crate::node::NodeInput;
use crate::peer::MAX_PEER_FRAME_BYTES;

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// Requests one client connection may have in flight; the server stops reading beyond it.
pub const MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown` flips to true.
pub async fn accept_loop<N: Network>(
    network: N,
    mut listener: N::Listener,
    self_id: NodeId,
    peer_ids: BTreeSet<NodeId>,
    limits: Limits,
    node: mpsc::Sender<NodeInput>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peer_ids = Arc::new(peer_ids);
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            accepted = network.accept(&mut listener) => match accepted {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let node = node.clone();
        let shutdown = shutdown.clone();
        let peer_ids = peer_ids.clone();
        tokio::spawn(async move {
            serve_connection(stream, self_id, &peer_ids, limits, node, shutdown).await;
            drop(permit);
        });
    }
}

async fn serve_connection<S>(
    mut stream: S,
    self_id: NodeId,
    peer_ids: &BTreeSet<NodeId>,
    limits: Limits,
    node: mpsc::Sender<NodeInput>,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut bytes = [0u8; HANDSHAKE_BYTES];
    let Ok(Ok(_)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut bytes)).await
    else {
        return;
    };
    let handshake = match Handshake::decode(&bytes) {
        Ok(handshake) => handshake,
        Err(error) => {
            tracing::debug!(%error, "refused a connection");
            return;
        }
    };
    // Answer with our version either way, so the other side can say what is wrong.
    let reply = Handshake::new(Role::Peer { node_id: self_id }).encode();
    if stream.write_all(&reply).await.is_err() || handshake.version != PROTOCOL_VERSION {
        return;
    }
    match handshake.role {
        Role::Client => serve_client(stream, limits, node, shutdown).await,
        // Only configured voters may speak Raft (and get the large peer frame limit).
        Role::Peer { node_id } if node_id != self_id && peer_ids.contains(&node_id) => {
            serve_peer(stream, node_id, self_id, node).await
        }
        Role::Peer { node_id } => {
            tracing::warn!(node_id, "refused a peer connection from an unknown node")
        }
    }
}

async fn serve_peer<S>(stream: S, peer_id: NodeId, self_id: NodeId, node: mpsc::Sender<NodeInput>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, frame_codec(MAX_PEER_FRAME_BYTES));
    while let Some(Ok(bytes)) = framed.next().await {
        let message: Message = match decode_frame(&bytes) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(peer = peer_id, %error, "undecodable peer frame: closing");
                return;
            }
        };
        if message.from != peer_id || message.to != self_id {
            tracing::warn!(
                peer = peer_id,
                from = message.from,
                to = message.to,
                "misaddressed peer message: closing"
            );
            return;
        }
        if node.send(NodeInput::Peer(message)).await.is_err() {
            return;
        }
    }
}

fn error_frame(id: u64, kind: ErrorKind, message: String) -> Bytes {
    let frame = ResponseFrame {
        id,
        response: Response::Error { kind, message },
    };
    Bytes::from(encode_frame(&frame).unwrap_or_default())
}

async fn serve_client<S>(
    stream: S,
    limits: Limits,
    node: mpsc::Sender<NodeInput>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, frame_codec(limits.max_frame_bytes));
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    loop {
        if !reading && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some((id, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                let response = match answer {
                    Ok(response) => response,
                    // The node dropped the request: it may have been proposed already.
                    Err(_) => Response::Error { kind: ErrorKind::Unknown, message: "the node stopped before answering".into() },
                };
                let Ok(body) = encode_frame(&ResponseFrame { id, response }) else { break };
                if framed.send(Bytes::from(body)).await.is_err() {
                    break;
                }
            }
            _ = shutdown.changed(), if reading => {
                // Finish what is in flight, read nothing more.
                reading = false;
            }
            frame = framed.next(), if reading && in_flight.len() < MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION => {
                let bytes = match frame {
                    None => { reading = false; continue; }
                    Some(Err(error)) => {
                        // Oversized length or a broken stream: refuse the frame whole, then close.
                        let _ = framed.send(error_frame(0, ErrorKind::Invalid, format!("bad frame: {error}"))).await;
                        reading = false;
                        continue;
                    }
                    Some(Ok(bytes)) => bytes,
                };
                let RequestFrame { id, request } = match decode_frame::<RequestFrame>(&bytes) {
                    Ok(frame) => frame,
                    Err(error) => {
                        let _ = framed.send(error_frame(0, ErrorKind::Invalid, format!("malformed request: {error}"))).await;
                        reading = false;
                        continue;
                    }
                };
                let (reply, answer) = oneshot::channel();
                if node.send(NodeInput::Client { request, reply }).await.is_err() {
                    let _ = framed.send(error_frame(id, ErrorKind::ShuttingDown, "the node stopped".into())).await;
                    break;
                }
                in_flight.push(async move { (id, answer.await) });
            }
        }
    }
}
