//! Raft traffic between nodes: one outbound task per peer that keeps a connection open and
//! forwards the node's messages, and the decoding of inbound peer frames.
//!
//! Raft tolerates lost messages, so the outbound queue is bounded and a full queue drops the
//! message (the leader resends on its next heartbeat) rather than blocking the node.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use consensus::{Message, NodeId};
use futures::SinkExt;
use ringleader_client::protocol::{
    encode_frame, frame_codec, Handshake, Role, HANDSHAKE_BYTES, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::network::Network;

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_MESSAGES: usize = 4096;
/// A peer frame may carry a whole snapshot.
pub const MAX_PEER_FRAME_BYTES: usize = 512 * 1024 * 1024;
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// A send to a peer taking longer than this drops the connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's outbound side: a bounded queue per peer.
#[derive(Clone, Default)]
pub struct PeerSenders {
    queues: BTreeMap<NodeId, mpsc::Sender<Message>>,
}

impl PeerSenders {
    /// Starts one connection task per peer (every entry of `peers` but `self_id`).
    pub fn start<N: Network>(
        network: N,
        self_id: NodeId,
        peers: &BTreeMap<NodeId, String>,
    ) -> PeerSenders {
        let mut queues = BTreeMap::new();
        for (&peer_id, addr) in peers.iter().filter(|(id, _)| **id != self_id) {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES);
            tokio::spawn(run_peer(
                network.clone(),
                self_id,
                peer_id,
                addr.clone(),
                receiver,
            ));
            queues.insert(peer_id, sender);
        }
        PeerSenders { queues }
    }

    /// Queues a message; drops it when the peer's queue is full or unknown.
    pub fn send(&self, message: Message) {
        if let Some(queue) = self.queues.get(&message.to) {
            if queue.try_send(message).is_err() {
                tracing::debug!("peer queue full or closed: message dropped");
            }
        }
    }
}

async fn run_peer<N: Network>(
    network: N,
    self_id: NodeId,
    peer_id: NodeId,
    addr: String,
    mut messages: mpsc::Receiver<Message>,
) {
    loop {
        let stream = match connect(&network, self_id, &addr).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(peer = peer_id, %addr, %error, "peer unreachable");
                tokio::time::sleep(RECONNECT_BACKOFF).await;
                // Messages queued while the peer is down are stale by the time it returns.
                while messages.try_recv().is_ok() {}
                if messages.is_closed() {
                    return;
                }
                continue;
            }
        };
        let mut framed = Framed::new(stream, frame_codec(MAX_PEER_FRAME_BYTES));
        loop {
            let Some(message) = messages.recv().await else {
                return;
            };
            let Ok(body) = encode_frame(&message) else {
                continue;
            };
            // A silent partition can stall a send for the kernel's retransmission timeout:
            // give up sooner and reconnect (Raft resends what matters).
            match tokio::time::timeout(SEND_TIMEOUT, framed.send(Bytes::from(body))).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::debug!(peer = peer_id, %error, "peer connection lost");
                    break;
                }
                Err(_) => {
                    tracing::debug!(peer = peer_id, "peer send timed out: reconnecting");
                    break;
                }
            }
        }
    }
}

async fn connect<N: Network>(
    network: &N,
    self_id: NodeId,
    addr: &str,
) -> Result<N::Stream, String> {
    let attempt = async {
        let mut stream = network.connect(addr).await.map_err(|e| e.to_string())?;
        stream
            .write_all(&Handshake::new(Role::Peer { node_id: self_id }).encode())
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = [0u8; HANDSHAKE_BYTES];
        stream
            .read_exact(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        match Handshake::decode(&reply) {
            Ok(handshake) if handshake.version == PROTOCOL_VERSION => Ok(stream),
            Ok(handshake) => Err(format!(
                "peer speaks protocol version {}",
                handshake.version
            )),
            Err(error) => Err(error),
        }
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .map_err(|_| "connect timed out".to_string())?
}
