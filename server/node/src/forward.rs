//! Forwarding: a node that holds no replica of a request's shard sends the request on to the
//! shard's leader and relays the answer, so that any node accepts any key (a client that does
//! not know the ring, or routed by a stale one, still gets served).
//!
//! The forwarder does not know which replica leads a group it does not host: it tries the one
//! it last saw answer (a leader cache), else the ring's preferred leader, and follows a
//! `NotLeader` redirect; a replica it cannot reach, or that knows no leader (an election is
//! under way), is skipped for the next one of the shard. At most [`MAX_FORWARD_HOPS`] nodes are
//! tried; if none served, the client gets `Unavailable` (it retries), never a redirect to a
//! node it did not send to. The answer's receipt names this node in
//! `forwarded_by`, so a client sees that its request took an extra hop.
//!
//! A replica that does host the group but does not lead it answers with a redirect instead
//! (`NotLeader` naming the leader): the client learns the leader in one round trip and sends
//! the next request straight to it.
//!
//! One pipelined connection per node is kept open (bounded by the ring's node count); each
//! forwarded request waits at most [`FORWARD_TIMEOUT`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consensus::NodeId;
use ringleader_protocol::connection::{CallError, Connection};
use ringleader_protocol::ring::Ring;
use ringleader_protocol::{Connector, ErrorKind, GroupId, Header, Request, Response, ServedAt};

use crate::replica::Reply;

/// Nodes one forwarded request is sent to at most (the preferred leader, a redirect, another
/// replica).
pub const MAX_FORWARD_HOPS: usize = 3;
/// How long a forwarded request waits for its answer.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends requests for groups this node does not host to the nodes that do.
pub trait Forward: Send + Sync + 'static {
    /// Forwards `request` for `group`; the answer to relay to the client.
    fn forward(
        self: Arc<Self>,
        group: GroupId,
        request: Request,
    ) -> Pin<Box<dyn Future<Output = Reply> + Send>>;
}

/// The forwarder over a connector (real TCP, or turmoil's in the simulation).
pub struct Forwarder<C: Connector> {
    connector: C,
    self_id: NodeId,
    ring: Ring,
    max_frame_bytes: usize,
    state: Mutex<ForwardState>,
}

#[derive(Default)]
struct ForwardState {
    /// One open connection per node.
    connections: BTreeMap<NodeId, Connection>,
    /// The node last seen leading each group.
    leaders: BTreeMap<GroupId, NodeId>,
}

impl<C: Connector> Forwarder<C> {
    pub fn new(connector: C, self_id: NodeId, ring: Ring, max_frame_bytes: usize) -> Self {
        Forwarder {
            connector,
            self_id,
            ring,
            max_frame_bytes,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ForwardState> {
        // A panic while holding the lock leaves only caches behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The nodes to try for `group`, best first: the cached leader, the preferred leader, the
    /// other replicas.
    fn candidates(&self, group: GroupId) -> Vec<NodeId> {
        let Some(shard) = self.ring.shard(group) else {
            return Vec::new();
        };
        let cached_leader = self.state().leaders.get(&group).copied();
        let mut order = Vec::with_capacity(shard.replicas.len());
        let preferred = cached_leader.into_iter().chain([shard.preferred_leader]);
        for node in preferred.chain(shard.replicas.iter().copied()) {
            if node != self.self_id && !order.contains(&node) {
                order.push(node);
            }
        }
        order
    }

    async fn connection(&self, node: NodeId) -> Result<Connection, String> {
        if let Some(open) = self
            .state()
            .connections
            .get(&node)
            .filter(|c| !c.is_closed())
        {
            return Ok(open.clone());
        }
        let addr = self
            .ring
            .spec()
            .nodes
            .get(&node)
            .ok_or_else(|| format!("node {node} is not on the ring"))?;
        let opened = tokio::time::timeout(
            FORWARD_TIMEOUT,
            Connection::open(&self.connector, addr, self.max_frame_bytes),
        )
        .await
        .map_err(|_| format!("connecting to node {node} at {addr} timed out"))??;
        self.state().connections.insert(node, opened.clone());
        Ok(opened)
    }

    async fn forward_to_group(self: Arc<Self>, group: GroupId, request: Request) -> Reply {
        let header = Header {
            group,
            epoch: self.ring.epoch(),
        };
        let mut queue = self.candidates(group);
        queue.reverse();
        let mut tried = Vec::new();
        let mut last_failure = format!("no node holds group {group}");
        while let Some(node) = queue.pop() {
            if tried.len() == MAX_FORWARD_HOPS {
                break;
            }
            if tried.contains(&node) {
                continue;
            }
            tried.push(node);
            let connection = match self.connection(node).await {
                Ok(connection) => connection,
                Err(error) => {
                    last_failure = error;
                    continue;
                }
            };
            let answer =
                tokio::time::timeout(FORWARD_TIMEOUT, connection.call_in(header, request.clone()))
                    .await;
            match answer {
                Ok(Ok((
                    Response::NotLeader {
                        leader: Some(leader),
                        ..
                    },
                    _,
                ))) => {
                    tracing::debug!(group, from = node, to = leader, "forwarding: redirected");
                    self.state().leaders.insert(group, leader);
                    queue.push(leader);
                }
                Ok(Ok((Response::NotLeader { leader: None, .. }, _))) => {
                    // Between leaders (an election, a hand-over): another replica may know.
                    // A redirect is never relayed: the client did not send to that node.
                    self.state().leaders.remove(&group);
                    last_failure = format!("node {node} knows no leader of group {group}");
                }
                Ok(Ok((response, receipt))) => {
                    let receipt = receipt.map(|mut receipt| {
                        receipt.forwarded_by.get_or_insert(self.self_id);
                        receipt
                    });
                    // Stale and session reads may be served by any replica: only what a leader
                    // serves says who leads.
                    let by_leader = receipt.is_some_and(|receipt| {
                        !matches!(receipt.served_at, ServedAt::Stale | ServedAt::Session)
                    });
                    if let Some(receipt) = receipt.filter(|_| by_leader) {
                        self.state().leaders.insert(group, receipt.node);
                    }
                    return Reply { response, receipt };
                }
                Ok(Err(CallError::NotSent)) => {
                    self.state().connections.remove(&node);
                    last_failure = format!("the connection to node {node} closed");
                }
                Ok(Err(CallError::Lost)) | Err(_) => {
                    self.state().connections.remove(&node);
                    // The request may have reached the node: a write's outcome is unknown.
                    return Reply::from(Response::Error {
                        kind: if request.is_write() {
                            ErrorKind::Unknown
                        } else {
                            ErrorKind::Unavailable
                        },
                        message: format!(
                            "forwarded to node {node} for group {group}; no answer came back"
                        ),
                    });
                }
            }
        }
        Reply::from(Response::Error {
            kind: ErrorKind::Unavailable,
            message: format!(
                "node {} holds no replica of group {group} and could not forward the request \
                 (tried nodes {tried:?}): {last_failure}",
                self.self_id
            ),
        })
    }
}

impl<C: Connector> Forward for Forwarder<C> {
    fn forward(
        self: Arc<Self>,
        group: GroupId,
        request: Request,
    ) -> Pin<Box<dyn Future<Output = Reply> + Send>> {
        Box::pin(self.forward_to_group(group, request))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ringleader_protocol::ring::RingSpec;
    use ringleader_protocol::{
        decode_frame, encode_frame, Handshake, ReadConsistency, Receipt, RequestFrame,
        ResponseFrame, Role, TokioConnector, HANDSHAKE_BYTES,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A node that answers every request with `answer`, listening on a free port.
    async fn fake_node(answer: Response) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut handshake = [0u8; HANDSHAKE_BYTES];
                    stream.read_exact(&mut handshake).await?;
                    stream
                        .write_all(&Handshake::new(Role::Client).encode())
                        .await?;
                    loop {
                        let len = stream.read_u32().await? as usize;
                        let mut body = vec![0u8; len];
                        stream.read_exact(&mut body).await?;
                        let frame: RequestFrame = decode_frame(&body).unwrap();
                        let receipt = matches!(answer, Response::Value(_)).then_some(Receipt {
                            served_at: ServedAt::Linearizable,
                            node: 3,
                            term: 1,
                            index: 1,
                            staleness_bound_ms: Some(0),
                            forwarded_by: None,
                        });
                        let out = encode_frame(&ResponseFrame {
                            receipt,
                            ..ResponseFrame::new(frame.id, answer.clone())
                        })
                        .unwrap();
                        stream.write_u32(out.len() as u32).await?;
                        stream.write_all(&out).await?;
                    }
                    #[allow(unreachable_code)]
                    std::io::Result::Ok(())
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_replica_that_knows_no_leader_is_skipped_and_never_relayed_as_a_redirect() {
        let no_leader = Response::NotLeader {
            leader: None,
            leader_addr: None,
        };
        // Group 0 lives on nodes 3, 1 and 4 (the ring's placement, pinned forever); node 2
        // holds no replica and forwards. Node 3, the preferred leader (tried first), and node 4
        // answer "no leader known"; node 1 serves.
        let mut addrs = BTreeMap::new();
        for node in [1, 3, 4] {
            let answer = if node == 1 {
                Response::Value(None)
            } else {
                no_leader.clone()
            };
            addrs.insert(node, fake_node(answer).await);
        }
        addrs.insert(2, "127.0.0.1:9".to_string());
        let ring = Ring::new(RingSpec {
            replicas: 3,
            ..RingSpec::new(addrs, 1)
        })
        .unwrap();
        let group = 0;
        assert_eq!(ring.shard(group).unwrap().replicas, vec![3, 1, 4]);
        assert_eq!(ring.shard(group).unwrap().preferred_leader, 3);
        let forwarder = Arc::new(Forwarder::new(TokioConnector, 2, ring, 1 << 20));
        let get = Request::Get {
            key: b"k".to_vec(),
            consistency: ReadConsistency::Linearizable,
        };
        let reply = forwarder.clone().forward(group, get.clone()).await;
        assert_eq!(reply.response, Response::Value(None));
        assert_eq!(reply.receipt.and_then(|r| r.forwarded_by), Some(2));
        // Nobody leads: Unavailable (the client retries), not a NotLeader to relay.
        let mut silent = BTreeMap::new();
        for node in [1, 3, 4] {
            silent.insert(node, fake_node(no_leader.clone()).await);
        }
        silent.insert(2, "127.0.0.1:9".to_string());
        let ring = Ring::new(RingSpec {
            replicas: 3,
            ..RingSpec::new(silent, 1)
        })
        .unwrap();
        let forwarder = Arc::new(Forwarder::new(TokioConnector, 2, ring, 1 << 20));
        let reply = forwarder.forward(group, get).await;
        assert!(
            matches!(&reply.response, Response::Error { kind: ErrorKind::Unavailable, message } if message.contains("knows no leader")),
            "{:?}",
            reply.response
        );
    }
}
