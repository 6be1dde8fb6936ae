//! Raft traffic between nodes: one outbound task per peer that keeps an authenticated connection
//! open and forwards the node's messages (large ones in chunks, see [`crate::chunk`]).
//!
//! One connection carries the messages of every Raft group the two nodes share, each in an
//! [`Envelope`] naming its group. The task takes everything queued for the peer at once and
//! writes it with one flush (one `write` on the socket, instead of one per message), and the
//! heartbeats (or answers) of all the groups in it go as one coalesced frame, which the peer
//! decodes once (CockroachDB's coalesced heartbeats; see [`crate::chunk`]).
//!
//! Raft tolerates lost messages, so the outbound queue is bounded and a full queue drops the
//! message (the leader resends on its next heartbeat) rather than blocking the node. At most one
//! `InstallSnapshot` per peer is queued or being sent at a time: the leader re-offers a snapshot
//! every few heartbeats while the follower has not answered, and queueing a second copy of a
//! snapshot of hundreds of MB behind the first would only hold memory and delay the answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use consensus::{Message, MessageBody, NodeId};
use futures::SinkExt;
use ringleader_protocol::GroupId;
use ringleader_protocol::{Handshake, Role, HANDSHAKE_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::auth::{self, ClusterSecret};
use crate::budget::FrameCodec;
pub use crate::chunk::MAX_PEER_FRAME_BYTES;
use crate::chunk::{encode_heartbeats, is_heartbeat, Envelope};
use crate::faults::{TransportFaults, MAX_DELAYED_MESSAGES};
use crate::network::Network;

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_MESSAGES: usize = 4096;
/// Messages written to a peer's socket before one flush, at most (bounds what one flush holds
/// in the codec's buffer: a round of heartbeats of every shared group fits many times over).
const MESSAGES_PER_FLUSH: usize = 256;
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// A send of one frame (at most one chunk) to a peer taking longer than this drops the
/// connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting, the handshake and the authentication together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One peer's outbound queue.
#[derive(Clone)]
struct PeerQueue {
    sender: mpsc::Sender<Envelope>,
    /// An `InstallSnapshot` is queued or being sent.
    snapshot_in_flight: Arc<AtomicBool>,
}

/// The node's outbound side: a bounded queue per peer.
#[derive(Clone, Default)]
pub struct PeerSenders {
    queues: BTreeMap<NodeId, PeerQueue>,
    /// The fault seam (see [`crate::faults`]): the simulation's, or an operator's rules under
    /// `--allow-faults`; `None` otherwise.
    faults: Option<Arc<dyn TransportFaults>>,
    /// Delayed copies in flight (bounded by [`MAX_DELAYED_MESSAGES`]).
    delayed: Arc<AtomicUsize>,
}

fn is_snapshot(message: &Message) -> bool {
    matches!(message.body, MessageBody::InstallSnapshot { .. })
}

impl PeerSenders {
    /// Starts one connection task per peer (every entry of `peers` but `self_id`). Without a
    /// `secret` no peer connection can authenticate; [`crate::start`] refuses that case.
    pub fn start<N: Network>(
        network: N,
        self_id: NodeId,
        peers: &BTreeMap<NodeId, String>,
        secret: Option<ClusterSecret>,
    ) -> PeerSenders {
        let mut queues = BTreeMap::new();
        let Some(secret) = secret else {
            return PeerSenders {
                queues,
                ..PeerSenders::default()
            };
        };
        for (&peer_id, addr) in peers.iter().filter(|(id, _)| **id != self_id) {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES);
            let snapshot_in_flight = Arc::new(AtomicBool::new(false));
            tokio::spawn(run_peer(
                network.clone(),
                PeerLink {
                    self_id,
                    peer_id,
                    addr: addr.clone(),
                    secret: secret.clone(),
                    snapshot_in_flight: snapshot_in_flight.clone(),
                },
                receiver,
            ));
            queues.insert(
                peer_id,
                PeerQueue {
                    sender,
                    snapshot_in_flight,
                },
            );
        }
        PeerSenders {
            queues,
            ..PeerSenders::default()
        }
    }

    /// Routes every message through `faults` from now on (the simulation's seam).
    pub fn with_faults(mut self, faults: Option<Arc<dyn TransportFaults>>) -> PeerSenders {
        self.faults = faults;
        self
    }

    /// Sends a message of `group`'s Raft: at once in production; in the simulation, as many
    /// copies as the fault seam says, each after its delay (none when it drops the message).
    pub fn send(&self, group: GroupId, message: Message) {
        let envelope = Envelope { group, message };
        let Some(faults) = &self.faults else {
            self.enqueue(envelope);
            return;
        };
        let delays = faults.fate(&envelope.message);
        let last = delays.len().saturating_sub(1);
        let mut message = Some(envelope);
        for (copy, delay) in delays.into_iter().enumerate() {
            let Some(this) = (if copy == last {
                message.take()
            } else {
                message.clone()
            }) else {
                break;
            };
            if delay.is_zero() {
                self.enqueue(this);
                continue;
            }
            if self.delayed.fetch_add(1, Ordering::AcqRel) >= MAX_DELAYED_MESSAGES {
                self.delayed.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let senders = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                senders.enqueue(this);
                senders.delayed.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    /// Queues a message; drops it when the peer's queue is full or unknown, or when it is a
    /// snapshot and another snapshot to that peer is still queued or being sent.
    fn enqueue(&self, envelope: Envelope) {
        let Some(queue) = self.queues.get(&envelope.message.to) else {
            return;
        };
        let snapshot = is_snapshot(&envelope.message);
        if snapshot && queue.snapshot_in_flight.swap(true, Ordering::AcqRel) {
            tracing::debug!(
                peer = envelope.message.to,
                group = envelope.group,
                "a snapshot to this peer is still in flight: not queueing another"
            );
            return;
        }
        if queue.sender.try_send(envelope).is_err() {
            if snapshot {
                queue.snapshot_in_flight.store(false, Ordering::Release);
            }
            tracing::debug!("peer queue full or closed: message dropped");
        }
    }
}

struct PeerLink {
    self_id: NodeId,
    peer_id: NodeId,
    addr: String,
    secret: ClusterSecret,
    snapshot_in_flight: Arc<AtomicBool>,
}

impl PeerLink {
    /// Called once a message left the queue (sent or dropped).
    fn done_with(&self, message: &Message) {
        if is_snapshot(message) {
            self.snapshot_in_flight.store(false, Ordering::Release);
        }
    }
}

async fn run_peer<N: Network>(network: N, link: PeerLink, mut messages: mpsc::Receiver<Envelope>) {
    let peer_id = link.peer_id;
    // A wrong secret is a configuration error worth a warning, once per streak of failures.
    let mut auth_failing = false;
    loop {
        let stream = match connect(&network, &link).await {
            Ok(stream) => {
                auth_failing = false;
                stream
            }
            Err(error) => {
                match error {
                    ConnectError::Auth(error) => {
                        if !auth_failing {
                            tracing::warn!(peer = peer_id, addr = %link.addr, %error, "peer authentication failed: do both nodes have the same cluster secret?");
                        }
                        auth_failing = true;
                    }
                    error => {
                        tracing::debug!(peer = peer_id, addr = %link.addr, %error, "peer unreachable")
                    }
                }
                tokio::time::sleep(RECONNECT_BACKOFF).await;
                // Messages queued while the peer is down are stale by the time it returns.
                while let Ok(envelope) = messages.try_recv() {
                    link.done_with(&envelope.message);
                }
                if messages.is_closed() {
                    return;
                }
                continue;
            }
        };
        // Only this side writes on an outbound connection; the codec's decoder is unused.
        let mut framed = Framed::new(stream, FrameCodec::new(0, 0, None));
        let mut batch = Vec::with_capacity(MESSAGES_PER_FLUSH);
        loop {
            if messages.recv_many(&mut batch, MESSAGES_PER_FLUSH).await == 0 {
                return;
            }
            let mut sent = true;
            let heartbeats = take_heartbeats_to_coalesce(&mut batch);
            if !heartbeats.is_empty() {
                sent = feed_heartbeats(&mut framed, peer_id, &heartbeats).await;
            }
            for envelope in batch.drain(..) {
                sent = sent && feed_message(&mut framed, peer_id, &envelope).await;
                link.done_with(&envelope.message);
            }
            // One flush for the whole batch: one socket write for every group's messages.
            sent = sent && flush(&mut framed, peer_id).await;
            if !sent {
                break;
            }
        }
    }
}

/// Takes the heartbeats (and answers) out of `batch` when there are several: they go in one
/// coalesced frame. A lone heartbeat stays, to go as it is.
fn take_heartbeats_to_coalesce(batch: &mut Vec<Envelope>) -> Vec<Envelope> {
    if batch.iter().filter(|e| is_heartbeat(&e.message)).count() < 2 {
        return Vec::new();
    }
    let (heartbeats, rest) = std::mem::take(batch)
        .into_iter()
        .partition(|envelope| is_heartbeat(&envelope.message));
    *batch = rest;
    heartbeats
}

/// Buffers the coalesced frame of `heartbeats` for the next flush; false when the connection
/// is lost.
async fn feed_heartbeats<S>(
    framed: &mut Framed<S, FrameCodec>,
    peer_id: NodeId,
    heartbeats: &[Envelope],
) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = match encode_heartbeats(heartbeats) {
        Ok(frame) => frame,
        Err(error) => {
            tracing::warn!(peer = peer_id, %error, "cannot send heartbeats: dropped");
            return true;
        }
    };
    send_in_time(peer_id, framed.feed(frame)).await
}

/// Flushes what [`feed_message`] buffered; false when the connection is lost.
async fn flush<S>(framed: &mut Framed<S, FrameCodec>, peer_id: NodeId) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    send_in_time(peer_id, framed.flush()).await
}

/// Awaits one send or flush, giving up after [`SEND_TIMEOUT`]: a silent partition can stall a
/// send for the kernel's retransmission timeout, so reconnect sooner (Raft resends what
/// matters). False when the connection is lost.
async fn send_in_time<E: std::fmt::Display>(
    peer_id: NodeId,
    send: impl std::future::Future<Output = Result<(), E>>,
) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, send).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::debug!(peer = peer_id, %error, "peer connection lost");
            false
        }
        Err(_) => {
            tracing::debug!(peer = peer_id, "peer send timed out: reconnecting");
            false
        }
    }
}

/// Buffers one message (in chunks if large) for the next flush; a large message's chunks are
/// flushed as they go. False when the connection is lost.
async fn feed_message<S>(
    framed: &mut Framed<S, FrameCodec>,
    peer_id: NodeId,
    envelope: &Envelope,
) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frames = match crate::chunk::encode_envelope(envelope) {
        Ok(frames) => frames,
        Err(error) => {
            tracing::warn!(peer = peer_id, %error, "cannot send a message: dropped");
            return true;
        }
    };
    let chunked = frames.len() > 1;
    for frame in frames {
        // A chunked message's chunks are each sent and awaited: that is the flow control, TCP's
        // window paces a snapshot and nothing is buffered ahead of the socket. A small message
        // is only buffered (`feed`), to go with the batch's one flush.
        let write = async {
            if chunked {
                framed.send(frame).await
            } else {
                framed.feed(frame).await
            }
        };
        if !send_in_time(peer_id, write).await {
            return false;
        }
    }
    true
}

/// Connects, exchanges handshakes and proves (and checks) knowledge of the cluster secret.
async fn connect<N: Network>(network: &N, link: &PeerLink) -> Result<N::Stream, ConnectError> {
    let attempt = async {
        let mut stream = network
            .connect(&link.addr)
            .await
            .map_err(|e| e.to_string())?;
        let nonce = auth::fresh_nonce();
        let mut opening = [0u8; HANDSHAKE_BYTES + auth::NONCE_BYTES];
        opening[..HANDSHAKE_BYTES].copy_from_slice(
            &Handshake::new(Role::Peer {
                node_id: link.self_id,
            })
            .encode(),
        );
        opening[HANDSHAKE_BYTES..].copy_from_slice(&nonce);
        stream
            .write_all(&opening)
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = [0u8; HANDSHAKE_BYTES];
        stream
            .read_exact(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        let handshake = Handshake::decode(&reply).map_err(|e| e.to_string())?;
        handshake
            .check_version()
            .map_err(|e| format!("{}: {e}", link.addr))?;
        if handshake.role
            != (Role::Peer {
                node_id: link.peer_id,
            })
        {
            return Err(format!(
                "{} answered as {:?}, not as node {}",
                link.addr, handshake.role, link.peer_id
            )
            .into());
        }
        auth::initiate(&mut stream, &link.secret, link.self_id, link.peer_id, nonce)
            .await
            .map_err(ConnectError::Auth)?;
        Ok::<_, ConnectError>(stream)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| ConnectError::Other("connect timed out".to_string()))?
}

/// Why an outbound peer connection failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    Auth(auth::AuthError),
    #[error("{0}")]
    Other(String),
}

impl From<String> for ConnectError {
    fn from(message: String) -> Self {
        ConnectError::Other(message)
    }
}

#[cfg(test)]
mod tests {
    use consensus::{Snapshot, SnapshotMeta};

    use super::*;

    fn snapshot_to(to: NodeId) -> Message {
        Message {
            from: 1,
            to,
            term: 1,
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta::default(),
                    data: vec![0; 1024],
                },
            },
        }
    }

    fn heartbeat_to(to: NodeId) -> Message {
        Message {
            from: 1,
            to,
            term: 1,
            body: MessageBody::TimeoutNow,
        }
    }

    #[test]
    fn a_second_snapshot_is_not_queued_while_one_is_in_flight() {
        let (sender, mut receiver) = mpsc::channel(16);
        let snapshot_in_flight = Arc::new(AtomicBool::new(false));
        let senders = PeerSenders {
            faults: None,
            delayed: Arc::default(),
            queues: [(
                2,
                PeerQueue {
                    sender,
                    snapshot_in_flight: snapshot_in_flight.clone(),
                },
            )]
            .into_iter()
            .collect(),
        };
        senders.send(0, snapshot_to(2));
        senders.send(0, snapshot_to(2));
        senders.send(0, heartbeat_to(2));
        let first = receiver.try_recv().unwrap().message;
        assert!(is_snapshot(&first));
        assert!(
            !is_snapshot(&receiver.try_recv().unwrap().message),
            "the second copy was dropped; other messages still flow"
        );
        assert!(receiver.try_recv().is_err());
        // Once the first is sent (or dropped), the next snapshot may go.
        let link = PeerLink {
            self_id: 1,
            peer_id: 2,
            addr: String::new(),
            secret: ClusterSecret::from_bytes(b"0123456789abcdef".to_vec()).unwrap(),
            snapshot_in_flight,
        };
        link.done_with(&first);
        senders.send(0, snapshot_to(2));
        assert!(is_snapshot(&receiver.try_recv().unwrap().message));
    }

    fn beat(group: GroupId) -> Envelope {
        Envelope {
            group,
            message: Message {
                from: 1,
                to: 2,
                term: 1,
                body: MessageBody::HeartbeatResponse {
                    sent_tick: 1,
                    read_ctx: None,
                    applied_index: 5,
                    follower_tick: 3,
                    follower_boot: 1,
                },
            },
        }
    }

    #[test]
    fn a_batch_sends_the_heartbeats_of_all_its_groups_as_one_frame() {
        let snapshot = Envelope {
            group: 3,
            message: snapshot_to(2),
        };
        let mut batch: Vec<Envelope> = (0..8).map(beat).collect();
        batch.insert(4, snapshot.clone());
        let coalesced = take_heartbeats_to_coalesce(&mut batch);
        assert_eq!(coalesced, (0..8).map(beat).collect::<Vec<_>>());
        assert_eq!(batch, vec![snapshot], "the rest goes as it is");
        let mut lone = vec![beat(0)];
        assert!(take_heartbeats_to_coalesce(&mut lone).is_empty());
        assert_eq!(lone, vec![beat(0)], "a lone heartbeat is not wrapped");
    }
}
