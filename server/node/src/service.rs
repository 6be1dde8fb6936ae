//! The listening side of a node: accepts connections, reads the handshake, and serves either a
//! client (request frames in, response frames out, pipelined) or a peer (Raft messages in).
//!
//! Every resource is bounded (see [`crate::budget`]): connections still in their handshake, client
//! connections and each peer's connections have separate budgets, so clients can never lock the
//! peers out; large client frames are paid for from a shared byte budget before they are
//! buffered; a connection idle too long, or too slow to finish a started frame, is closed. A
//! peer must prove it knows the cluster secret ([`crate::auth`]) before it gets the peer role;
//! so must an operator tool before it may send admin requests (fault rules, see
//! [`crate::injected`]), which a node started without `--allow-faults` refuses.
//! A malformed or oversized frame is answered with an `Invalid` error and the connection is
//! closed; it never reaches the node, so it can never be half-applied.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use consensus::NodeId;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use ringleader_protocol::admin::{AdminRequest, AdminResponse, MAX_ADMIN_FRAME_BYTES};
use ringleader_protocol::{
    decode_frame, encode_frame, frame_codec, ErrorKind, Handshake, Header, Limits, RequestFrame,
    Response, ResponseFrame, Role, HANDSHAKE_BYTES, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::codec::Framed;

use crate::auth;
use crate::budget::{
    ByteBudget, ConnRegistry, Frame, FrameCodec, FrameError, NetConfig, Shed, Ticket,
};
use crate::chunk::{Reassembler, MAX_PEER_FRAME_BYTES};
use crate::forward::Forward;
use crate::host::{HeldBytes, NodeInput};
use crate::injected::InjectedFaults;
use crate::network::Network;
use crate::replica::Reply;
use crate::router::{Route, Router};

/// A request being answered: by this node's replica, or forwarded to another node.
type InFlight = std::pin::Pin<Box<dyn std::future::Future<Output = (u64, u64, Reply)> + Send>>;

/// A frame's wait for its share of the queued-request budget.
type PayingFor =
    std::pin::Pin<Box<dyn std::future::Future<Output = tokio::sync::OwnedSemaphorePermit> + Send>>;

/// Requests one client connection may have in flight; the server stops reading beyond it.
pub const MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION: usize = 256;
/// Answers written to a client's socket before one flush, at most.
const MAX_ANSWERS_PER_FLUSH: usize = 64;

/// Authenticated admin connections served at once; past it a new one is closed after its
/// authentication (an operator tool opens one per node and command).
pub const MAX_ADMIN_CONNECTIONS: usize = 4;

/// What every connection task shares.
struct Shared {
    self_id: NodeId,
    peer_ids: BTreeSet<NodeId>,
    limits: Limits,
    net: NetConfig,
    router: Router,
    forwarder: Arc<dyn Forward>,
    node: mpsc::Sender<NodeInput>,
    clients: Arc<ConnRegistry>,
    peers: BTreeMap<NodeId, Arc<ConnRegistry>>,
    client_frame_budget: ByteBudget,
    /// Bytes of requests received and not yet handled by the node (see
    /// [`NetConfig::queued_request_budget_bytes`]).
    queued_request_budget: ByteBudget,
    peer_reassembly_budgets: BTreeMap<NodeId, ByteBudget>,
    total_reassembly_budget: ByteBudget,
    /// The operator's fault rules; `None` unless the node runs with `--allow-faults`.
    faults: Option<Arc<InjectedFaults>>,
    admins: Arc<Semaphore>,
}

/// What the listening side needs to know about its node.
pub struct ServiceConfig {
    pub self_id: NodeId,
    /// Every voter, this node included.
    pub peer_ids: BTreeSet<NodeId>,
    pub limits: Limits,
    pub net: NetConfig,
    /// Which group each request and peer message is for.
    pub router: Router,
    /// Sends requests for groups this node does not host to nodes that do.
    pub forwarder: Arc<dyn Forward>,
    /// The operator's fault rules (`--allow-faults`), shared with the peer senders; `None`:
    /// admin fault requests are refused.
    pub faults: Option<Arc<InjectedFaults>>,
}

/// Accepts connections until `shutdown` flips to true.
pub async fn accept_loop<N: Network>(
    network: N,
    mut listener: N::Listener,
    config: ServiceConfig,
    node: mpsc::Sender<NodeInput>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ServiceConfig {
        self_id,
        peer_ids,
        limits,
        net,
        router,
        forwarder,
        faults,
    } = config;
    let others = || peer_ids.iter().copied().filter(move |id| *id != self_id);
    let shared = Arc::new(Shared {
        self_id,
        peers: others()
            .map(|id| {
                (
                    id,
                    ConnRegistry::new(net.max_connections_per_peer, Shed::Oldest),
                )
            })
            .collect(),
        peer_reassembly_budgets: others()
            .map(|id| (id, ByteBudget::new(net.peer_reassembly_budget_bytes)))
            .collect(),
        total_reassembly_budget: ByteBudget::new(net.total_reassembly_budget_bytes),
        clients: ConnRegistry::new(net.max_client_connections, Shed::OldestIdle),
        client_frame_budget: ByteBudget::new(net.client_frame_budget_bytes),
        queued_request_budget: ByteBudget::new(net.queued_request_budget_bytes),
        peer_ids,
        limits,
        net,
        router,
        forwarder,
        node,
        faults,
        admins: Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS)),
    });
    let handshaking = Arc::new(Semaphore::new(shared.net.max_handshaking_connections));
    loop {
        // Accepting never waits for a budget: a connection the budgets cannot take is closed
        // (or sheds another) once it is known what it is, so the listen backlog never fills up
        // with peers stuck behind clients.
        let (stream, remote) = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            accepted = network.accept(&mut listener) => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = handshaking.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "too many connections in their handshake: closed at once");
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_connection(stream, remote, &shared, permit, shutdown).await;
        });
    }
}

async fn serve_connection<S>(
    mut stream: S,
    remote: SocketAddr,
    shared: &Shared,
    handshake_permit: tokio::sync::OwnedSemaphorePermit,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = shared.net.handshake_timeout;
    let role = match tokio::time::timeout(timeout, handshake(&mut stream, remote, shared)).await {
        Ok(Some(role)) => role,
        Ok(None) => return,
        Err(_) => {
            tracing::debug!(%remote, "handshake timed out: closed");
            return;
        }
    };
    drop(handshake_permit);
    match role {
        Role::Client => {
            let ticket = match shared.clients.admit() {
                Ok(ticket) => ticket,
                Err(full) => {
                    tracing::debug!(%remote, "client refused: {full}");
                    let mut framed = Framed::new(stream, client_codec(shared, None));
                    let _ = framed
                        .send(error_frame(
                            0,
                            ErrorKind::Unavailable,
                            format!("the node has too many client connections ({}) and none is idle: retry later", full.max),
                        ))
                        .await;
                    return;
                }
            };
            serve_client(stream, remote, shared, ticket, shutdown).await
        }
        Role::Peer { node_id } => {
            let Some(registry) = shared.peers.get(&node_id) else {
                return;
            };
            let Ok(ticket) = registry.admit() else {
                return;
            };
            serve_peer(stream, remote, node_id, shared, ticket).await
        }
        Role::Admin => {
            let Ok(_permit) = shared.admins.clone().try_acquire_owned() else {
                tracing::warn!(%remote, "too many admin connections: closed");
                return;
            };
            serve_admin(stream, remote, shared).await
        }
    }
}

/// Reads the handshake and, for a peer, runs the authentication. `None`: close the connection.
async fn handshake<S>(stream: &mut S, remote: SocketAddr, shared: &Shared) -> Option<Role>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut bytes = [0u8; HANDSHAKE_BYTES];
    stream.read_exact(&mut bytes).await.ok()?;
    let handshake = match Handshake::decode(&bytes) {
        Ok(handshake) => handshake,
        Err(error) => {
            tracing::debug!(%remote, %error, "refused a connection");
            return None;
        }
    };
    // Answer with our version either way, so the other side can say what is wrong.
    let reply = Handshake::new(Role::Peer {
        node_id: shared.self_id,
    })
    .encode();
    if stream.write_all(&reply).await.is_err() || handshake.version != PROTOCOL_VERSION {
        return None;
    }
    let node_id = match handshake.role {
        Role::Client => return Some(Role::Client),
        Role::Peer { node_id } => node_id,
        Role::Admin => {
            let Some(secret) = &shared.net.cluster_secret else {
                tracing::warn!(%remote, "refused an admin connection: this node has no cluster secret");
                return None;
            };
            return match auth::accept_admin(stream, secret, shared.self_id).await {
                Ok(()) => Some(Role::Admin),
                Err(error) => {
                    tracing::warn!(%remote, %error, "refused an admin connection that failed authentication");
                    None
                }
            };
        }
    };
    if node_id == shared.self_id {
        // Two processes configured with the same id would each think they are the other's
        // voter: say so loudly (once: the connection is closed right away).
        tracing::warn!(%remote, node_id, "another process claims this node's own id: refused its peer connection (is a node misconfigured or started twice?)");
        return None;
    }
    // Only configured voters may speak Raft (and get the peer budgets).
    if !shared.peer_ids.contains(&node_id) {
        tracing::warn!(%remote, node_id, "refused a peer connection from an unknown node");
        return None;
    }
    let Some(secret) = &shared.net.cluster_secret else {
        tracing::warn!(%remote, node_id, "refused a peer connection: this node has no cluster secret");
        return None;
    };
    match auth::accept(stream, secret, node_id, shared.self_id).await {
        Ok(()) => Some(handshake.role),
        Err(error) => {
            tracing::warn!(%remote, node_id, %error, "refused a peer connection that failed authentication");
            None
        }
    }
}

fn client_codec(shared: &Shared, ticket: Option<&Ticket>) -> FrameCodec {
    let codec = FrameCodec::new(
        shared.limits.max_frame_bytes,
        shared.net.small_frame_bytes,
        Some(shared.client_frame_budget.clone()),
    );
    match ticket {
        Some(ticket) => codec.with_slot(ticket.slot.clone()),
        None => codec,
    }
}

/// Why a connection's watchdog closes it, if it does.
fn overdue(codec: &FrameCodec, ticket: &Ticket, net: &NetConfig) -> Option<String> {
    if let Some(started) = codec.frame_started_at() {
        if started.elapsed() > net.frame_deadline {
            return Some(format!(
                "a frame was not completed within {} ms of its first byte",
                net.frame_deadline.as_millis()
            ));
        }
    } else if ticket.slot.is_idle() && ticket.slot.idle_for() > net.idle_timeout {
        return Some(format!(
            "idle for more than {} ms",
            net.idle_timeout.as_millis()
        ));
    }
    None
}

async fn serve_peer<S>(
    stream: S,
    remote: SocketAddr,
    peer_id: NodeId,
    shared: &Shared,
    ticket: Ticket,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let self_id = shared.self_id;
    let (Some(peer_budget), total_budget) = (
        shared.peer_reassembly_budgets.get(&peer_id),
        shared.total_reassembly_budget.clone(),
    ) else {
        return;
    };
    let mut reassembler = Reassembler::new(peer_id, peer_budget.clone(), total_budget);
    let codec = FrameCodec::new(MAX_PEER_FRAME_BYTES, 0, None).with_slot(ticket.slot.clone());
    let mut framed = Framed::new(stream, codec);
    let mut watchdog = tokio::time::interval(shared.net.check_interval);
    loop {
        let frame = tokio::select! {
            frame = framed.next() => frame,
            _ = ticket.slot.evicted() => {
                tracing::debug!(peer = peer_id, %remote, "a newer connection from this peer replaced this one");
                return;
            }
            _ = watchdog.tick() => {
                if let Some(why) = overdue(framed.codec(), &ticket, &shared.net) {
                    tracing::info!(peer = peer_id, %remote, "closing a peer connection: {why}");
                    return;
                }
                continue;
            }
        };
        let bytes = match frame {
            None => return,
            Some(Ok(frame)) => frame.bytes,
            Some(Err(error)) => {
                tracing::warn!(peer = peer_id, %error, "bad peer frame: closing");
                return;
            }
        };
        let envelopes = match reassembler.push(&bytes) {
            Ok(envelopes) => envelopes,
            Err(error) => {
                tracing::warn!(peer = peer_id, %error, "undecodable peer frame: closing");
                return;
            }
        };
        // One frame holds one message, or the coalesced heartbeats of many groups.
        for envelope in envelopes {
            // A message for a group with no replica here (a peer running a newer placement) is
            // dropped: Raft tolerates lost messages.
            if !shared.router.hosts(envelope.group) {
                tracing::warn!(
                    peer = peer_id,
                    group = envelope.group,
                    "a peer message for a group this node does not host: dropped"
                );
                continue;
            }
            let crate::chunk::Envelope { group, message } = envelope;
            // An operator's cut (`--allow-faults`) drops what arrives from across it, as a
            // network partition would.
            if shared.faults.as_ref().is_some_and(|f| f.cuts(peer_id)) {
                continue;
            }
            if message.from != peer_id || message.to != self_id {
                tracing::warn!(
                    peer = peer_id,
                    from = message.from,
                    to = message.to,
                    "misaddressed peer message: closing"
                );
                return;
            }
            ticket.slot.in_flight.store(1, Ordering::Relaxed);
            let sent = shared.node.send(NodeInput::Peer { group, message }).await;
            ticket.slot.in_flight.store(0, Ordering::Relaxed);
            if sent.is_err() {
                return;
            }
        }
    }
}

/// Answers an authenticated operator's admin requests, one at a time, until it hangs up or
/// stays idle past the idle timeout.
async fn serve_admin<S>(stream: S, remote: SocketAddr, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, frame_codec(MAX_ADMIN_FRAME_BYTES));
    loop {
        let frame = match tokio::time::timeout(shared.net.idle_timeout, framed.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) | Err(_) => return,
            Ok(Some(Err(error))) => {
                tracing::debug!(%remote, %error, "bad admin frame: closing");
                return;
            }
        };
        let response = match decode_frame::<AdminRequest>(&frame) {
            Err(error) => AdminResponse::Refused {
                message: format!("malformed admin request: {error}"),
            },
            Ok(request) => match &shared.faults {
                None => AdminResponse::Refused {
                    message: format!(
                        "node {} was not started with --allow-faults: fault injection is off",
                        shared.self_id
                    ),
                },
                Some(faults) => {
                    tracing::info!(%remote, ?request, "admin request");
                    faults.apply(&request)
                }
            },
        };
        let Ok(body) = encode_frame(&response) else {
            return;
        };
        if framed.send(Bytes::from(body)).await.is_err() {
            return;
        }
    }
}

fn error_frame(id: u64, kind: ErrorKind, message: String) -> Bytes {
    let frame = ResponseFrame::new(id, Response::Error { kind, message });
    Bytes::from(encode_frame(&frame).unwrap_or_default())
}

async fn serve_client<S>(
    stream: S,
    remote: SocketAddr,
    shared: &Shared,
    ticket: Ticket,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, client_codec(shared, Some(&ticket)));
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    // A frame read and waiting for its share of the queued-request budget. The wait is one
    // branch of the loop, not an await inside one: answers in flight (forwarded requests hold
    // budget until they are answered) keep being polled and sent while it lasts.
    let mut paying: Option<(Frame, PayingFor)> = None;
    let mut reading = true;
    let mut watchdog = tokio::time::interval(shared.net.check_interval);
    let node = &shared.node;
    let router = &shared.router;
    loop {
        ticket
            .slot
            .in_flight
            .store(in_flight.len(), Ordering::Relaxed);
        if !reading && in_flight.is_empty() && paying.is_none() {
            break;
        }
        tokio::select! {
            biased;
            Some(answered) = in_flight.next(), if !in_flight.is_empty() => {
                // Every answer ready now goes out with ONE flush (one `write` on the socket for
                // a pipelining client, instead of one per answer).
                let mut next = Some(answered);
                let mut fed = 0;
                let mut failed = false;
                while let Some((id, group, reply)) = next.take() {
                    let Reply { response, receipt } = reply;
                    let header = Header { group, epoch: router.ring().epoch() };
                    let frame = ResponseFrame { id, header, response, receipt };
                    let Ok(body) = encode_frame(&frame) else { failed = true; break };
                    if framed.feed(Bytes::from(body)).await.is_err() {
                        failed = true;
                        break;
                    }
                    fed += 1;
                    if fed < MAX_ANSWERS_PER_FLUSH {
                        next = in_flight.next().now_or_never().flatten();
                    }
                }
                ticket.slot.touch();
                if failed || framed.flush().await.is_err() {
                    break;
                }
            }
            _ = shutdown.changed(), if reading => {
                // Finish what is in flight, read nothing more.
                reading = false;
            }
            _ = ticket.slot.evicted(), if reading => {
                let _ = framed.send(error_frame(0, ErrorKind::Unavailable, format!(
                    "connection closed: the node has {} client connections and sheds the least recently active idle one",
                    shared.net.max_client_connections
                ))).await;
                tracing::debug!(%remote, "shed an idle client connection");
                reading = false;
            }
            _ = watchdog.tick(), if reading => {
                if let Some(why) = overdue(framed.codec(), &ticket, &shared.net) {
                    tracing::debug!(%remote, "closing a client connection: {why}");
                    let _ = framed.send(error_frame(0, ErrorKind::Invalid, format!("connection closed: {why}"))).await;
                    reading = false;
                }
            }
            frame = framed.next(), if reading && paying.is_none() && in_flight.len() < MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION => {
                match frame {
                    None => reading = false,
                    Some(Err(error)) => {
                        // Oversized length, no memory budget left or a broken stream: refuse the
                        // frame whole, then close.
                        let kind = match error {
                            FrameError::BudgetExhausted { .. } => ErrorKind::Unavailable,
                            _ => ErrorKind::Invalid,
                        };
                        let _ = framed.send(error_frame(0, kind, format!("bad frame: {error}"))).await;
                        reading = false;
                    }
                    // Paid for before it is decoded and handed on; until then this connection
                    // reads nothing more (TCP pushes back on the client).
                    Some(Ok(frame)) => {
                        let take = Box::pin(shared.queued_request_budget.take(frame.bytes.len()));
                        paying = Some((frame, take));
                    }
                }
            }
            held = async {
                match paying.as_mut() {
                    Some((_, take)) => take.await,
                    None => std::future::pending().await,
                }
            }, if paying.is_some() => {
                let Some((frame, _)) = paying.take() else { continue };
                // `held` is kept until the node has handled the request: while the node is
                // behind, the requests waiting for it stay within the budget.
                let decoded = decode_frame::<RequestFrame>(&frame.bytes);
                // The frame's share of the frame budget is returned here: the request is now
                // as large as its own fields, covered by `held`.
                drop(frame);
                let RequestFrame { id, header, request } = match decoded {
                    Ok(frame) => frame,
                    Err(error) => {
                        let _ = framed.send(error_frame(0, ErrorKind::Invalid, format!("malformed request: {error}"))).await;
                        reading = false;
                        continue;
                    }
                };
                let route = match router.route(&header, &request) {
                    Ok(route) => route,
                    Err(response) => {
                        let refusal = ResponseFrame {
                            id,
                            header: Header { group: header.group, epoch: router.ring().epoch() },
                            response,
                            receipt: None,
                        };
                        if let Ok(body) = encode_frame(&refusal) {
                            let _ = framed.send(Bytes::from(body)).await;
                        }
                        continue;
                    }
                };
                ticket.slot.in_flight.store(in_flight.len() + 1, Ordering::Relaxed);
                match route {
                    Route::Local(group) => {
                        let (reply, answer) = oneshot::channel();
                        let input = NodeInput::Client { group, request, reply, held: HeldBytes::new(held) };
                        if node.send(input).await.is_err() {
                            let _ = framed.send(error_frame(id, ErrorKind::ShuttingDown, "the node stopped".into())).await;
                            break;
                        }
                        in_flight.push(Box::pin(async move {
                            // The node dropped the request: it may have been proposed already.
                            let reply = answer.await.unwrap_or_else(|_| Reply::from(Response::Error {
                                kind: ErrorKind::Unknown,
                                message: "the node stopped before answering".into(),
                            }));
                            (id, group, reply)
                        }) as InFlight);
                    }
                    Route::Remote(group) => {
                        if let Err(message) = request.check(&shared.limits) {
                            let _ = framed.send(error_frame(id, ErrorKind::Invalid, message)).await;
                            continue;
                        }
                        let forwarded = shared.forwarder.clone().forward(group, request);
                        in_flight.push(Box::pin(async move {
                            let reply = forwarded.await;
                            drop(held);
                            (id, group, reply)
                        }) as InFlight);
                    }
                }
                // One request per turn: a connection with many requests queued in its socket
                // would otherwise run one after another for a whole scheduling budget while the
                // node's loop and the peer connections (heartbeats) wait for a thread. Under a
                // flood of clients that starved the leader of its followers (it lost
                // leadership); see server/tests/overload.rs.
                tokio::task::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use consensus::{Message, MessageBody};
    use ringleader_protocol::TokioConnector;
    use ringleader_protocol::{Request, ResponseFrame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::auth::{self, ClusterSecret};

    const SECRET: &[u8] = b"the service tests' cluster secret";

    struct Harness {
        addr: String,
        node_inputs: mpsc::Receiver<NodeInput>,
        _shutdown: watch::Sender<bool>,
    }

    /// Node 1 of voters {1, 2}, listening on a free port, with `net`.
    async fn start(net: NetConfig) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let nodes = [(1, addr.clone()), (2, "127.0.0.1:9".to_string())];
        let spec = ringleader_protocol::ring::RingSpec::new(nodes.into_iter().collect(), 1);
        let ring = ringleader_protocol::ring::Ring::new(spec).expect("ring");
        serve_as_node_1(listener, ring, net)
    }

    /// Node 1's service on `listener`, routing by `ring`, forwarding what it does not host.
    fn serve_as_node_1(
        listener: tokio::net::TcpListener,
        ring: ringleader_protocol::ring::Ring,
        net: NetConfig,
    ) -> Harness {
        let addr = listener.local_addr().unwrap().to_string();
        let (inputs, node_inputs) = mpsc::channel(64);
        let (shutdown, shutdown_receiver) = watch::channel(false);
        tokio::spawn(accept_loop(
            TokioConnector,
            listener,
            ServiceConfig {
                self_id: 1,
                peer_ids: [1, 2].into_iter().collect(),
                limits: Limits::default(),
                net,
                router: Router::new(ring.clone(), 1),
                forwarder: Arc::new(crate::forward::Forwarder::new(
                    TokioConnector,
                    1,
                    ring,
                    Limits::default().max_frame_bytes,
                )),
                faults: None,
            },
            inputs,
            shutdown_receiver,
        ));
        Harness {
            addr,
            node_inputs,
            _shutdown: shutdown,
        }
    }

    fn net() -> NetConfig {
        NetConfig {
            cluster_secret: Some(ClusterSecret::from_bytes(SECRET.to_vec()).unwrap()),
            check_interval: Duration::from_millis(20),
            ..NetConfig::default()
        }
    }

    async fn client(addr: &str) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(&Handshake::new(Role::Client).encode())
            .await
            .unwrap();
        let mut reply = [0u8; HANDSHAKE_BYTES];
        stream.read_exact(&mut reply).await.unwrap();
        stream
    }

    /// Reads until the node closes the connection; returns the error it sent first, if any.
    async fn closed_with(stream: &mut TcpStream) -> Option<String> {
        let mut bytes = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
            .await
            .expect("the node closed the connection")
            .ok()?;
        let body = bytes.get(4..)?;
        match decode_frame::<ResponseFrame>(body).ok()?.response {
            Response::Error { message, .. } => Some(message),
            _ => None,
        }
    }

    /// A peer connection claiming `node_id`, authenticated with `secret`.
    async fn peer(addr: &str, node_id: NodeId, secret: &[u8]) -> Result<TcpStream, String> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let nonce = auth::fresh_nonce();
        stream
            .write_all(&Handshake::new(Role::Peer { node_id }).encode())
            .await
            .unwrap();
        stream.write_all(&nonce).await.unwrap();
        let mut reply = [0u8; HANDSHAKE_BYTES];
        stream
            .read_exact(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        let secret = ClusterSecret::from_bytes(secret.to_vec()).unwrap();
        auth::initiate(&mut stream, &secret, node_id, 1, nonce)
            .await
            .map_err(|e| e.to_string())?;
        Ok(stream)
    }

    fn heartbeat(from: NodeId, to: NodeId) -> Message {
        Message {
            from,
            to,
            term: 1,
            body: MessageBody::Heartbeat {
                commit: 0,
                sent_tick: 0,
                read_ctx: None,
                freshness: None,
            },
        }
    }

    async fn send_peer_message(stream: &mut TcpStream, message: &Message) {
        for frame in crate::chunk::encode_message(message).unwrap() {
            stream
                .write_all(&(frame.len() as u32).to_be_bytes())
                .await
                .unwrap();
            stream.write_all(&frame).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_started_frame_must_complete_within_the_deadline() {
        let h = start(NetConfig {
            frame_deadline: Duration::from_millis(200),
            ..net()
        })
        .await;
        let mut stream = client(&h.addr).await;
        stream.write_all(&1000u32.to_be_bytes()).await.unwrap();
        stream.write_all(&[0; 10]).await.unwrap();
        let error = closed_with(&mut stream).await.unwrap();
        assert!(error.contains("not completed within 200 ms"), "{error}");
    }

    #[tokio::test]
    async fn an_idle_client_is_closed_after_the_idle_timeout() {
        let h = start(NetConfig {
            idle_timeout: Duration::from_millis(200),
            ..net()
        })
        .await;
        let mut stream = client(&h.addr).await;
        let error = closed_with(&mut stream).await.unwrap();
        assert!(error.contains("idle for more than 200 ms"), "{error}");
    }

    #[tokio::test]
    async fn a_full_client_budget_sheds_the_oldest_idle_client_and_peers_still_get_in() {
        let mut h = start(NetConfig {
            max_client_connections: 2,
            ..net()
        })
        .await;
        let mut first = client(&h.addr).await;
        let _second = client(&h.addr).await;
        let mut third = client(&h.addr).await;
        let error = closed_with(&mut first).await.unwrap();
        assert!(
            error.contains("sheds the least recently active idle one"),
            "{error}"
        );
        // The newcomer is served.
        let request = RequestFrame::new(1, Request::Status);
        let body = encode_frame(&request).unwrap();
        third
            .write_all(&(body.len() as u32).to_be_bytes())
            .await
            .unwrap();
        third.write_all(&body).await.unwrap();
        let input = tokio::time::timeout(Duration::from_secs(5), h.node_inputs.recv())
            .await
            .unwrap();
        assert!(matches!(input, Some(NodeInput::Client { .. })));
        // Clients at their limit do not keep a peer out.
        let mut peer = peer(&h.addr, 2, SECRET).await.unwrap();
        send_peer_message(&mut peer, &heartbeat(2, 1)).await;
        let input = tokio::time::timeout(Duration::from_secs(5), h.node_inputs.recv())
            .await
            .unwrap();
        assert!(matches!(input, Some(NodeInput::Peer { message: m, .. }) if m == heartbeat(2, 1)));
    }

    #[tokio::test]
    async fn large_client_frames_past_the_shared_budget_are_refused_with_a_clear_error() {
        let h = start(NetConfig {
            client_frame_budget_bytes: 3 * 1024 * 1024,
            ..net()
        })
        .await;
        let mut holder = client(&h.addr).await;
        holder
            .write_all(&(2u32 * 1024 * 1024).to_be_bytes())
            .await
            .unwrap();
        holder.write_all(&[0; 1024]).await.unwrap();
        // Let the node read the first header before the second.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut refused = client(&h.addr).await;
        refused
            .write_all(&(2u32 * 1024 * 1024).to_be_bytes())
            .await
            .unwrap();
        let error = closed_with(&mut refused).await.unwrap();
        assert!(
            error.contains("memory budget for buffered frames is exhausted"),
            "{error}"
        );
        drop(holder);
    }

    #[tokio::test]
    async fn a_peer_without_the_secret_gets_no_peer_role() {
        let mut h = start(net()).await;
        // The wrong secret: the node's own proof does not verify, and it never hears a frame.
        let error = peer(&h.addr, 2, b"not the cluster secret at all")
            .await
            .unwrap_err();
        assert!(error.contains("did not prove knowledge"), "{error}");
        // A claimed peer that skips authentication and sends a frame anyway: closed unheard.
        let mut stream = TcpStream::connect(&h.addr).await.unwrap();
        stream
            .write_all(&Handshake::new(Role::Peer { node_id: 2 }).encode())
            .await
            .unwrap();
        stream.write_all(&[0; auth::NONCE_BYTES]).await.unwrap();
        let mut reply = [0u8; HANDSHAKE_BYTES + auth::NONCE_BYTES + auth::TAG_BYTES];
        stream.read_exact(&mut reply).await.unwrap();
        let _ = stream.write_all(&[0; auth::TAG_BYTES]).await;
        // ... and then a well-formed Raft message, as if it were node 2.
        for frame in crate::chunk::encode_message(&heartbeat(2, 1)).unwrap() {
            let _ = stream.write_all(&(frame.len() as u32).to_be_bytes()).await;
            let _ = stream.write_all(&frame).await;
        }
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "closed");
        // A node id claiming to be this node: closed at once.
        let mut stream = TcpStream::connect(&h.addr).await.unwrap();
        stream
            .write_all(&Handshake::new(Role::Peer { node_id: 1 }).encode())
            .await
            .unwrap();
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "closed");
        assert_eq!(rest.len(), HANDSHAKE_BYTES, "only the handshake answer");
        assert!(
            h.node_inputs.try_recv().is_err(),
            "nothing reached the node"
        );
        // With no secret configured, even the right secret does not make a peer.
        let h = start(NetConfig {
            cluster_secret: None,
            ..net()
        })
        .await;
        assert!(peer(&h.addr, 2, SECRET).await.is_err());
    }

    #[tokio::test]
    async fn an_authenticated_peer_sends_a_message_larger_than_a_peer_frame() {
        let mut h = start(net()).await;
        let mut stream = peer(&h.addr, 2, SECRET).await.unwrap();
        let message = Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::InstallSnapshot {
                snapshot: consensus::Snapshot {
                    meta: consensus::SnapshotMeta {
                        last_index: 9,
                        last_term: 1,
                        voters: vec![1, 2],
                    },
                    data: vec![5; 17 * 1024 * 1024],
                },
            },
        };
        send_peer_message(&mut stream, &message).await;
        let input = tokio::time::timeout(Duration::from_secs(20), h.node_inputs.recv())
            .await
            .unwrap();
        assert!(matches!(input, Some(NodeInput::Peer { message: m, .. }) if m == message));
    }

    /// A message for a group this node does not host is dropped, and the connection goes on
    /// carrying group 0's messages.
    #[tokio::test]
    async fn a_peer_message_for_another_group_is_dropped_and_the_connection_goes_on() {
        let mut h = start(net()).await;
        let mut stream = peer(&h.addr, 2, SECRET).await.unwrap();
        let foreign = crate::chunk::Envelope {
            group: 7,
            message: heartbeat(2, 1),
        };
        for frame in crate::chunk::encode_envelope(&foreign).unwrap() {
            stream
                .write_all(&(frame.len() as u32).to_be_bytes())
                .await
                .unwrap();
            stream.write_all(&frame).await.unwrap();
        }
        let mut ours = heartbeat(2, 1);
        ours.term = 2;
        send_peer_message(&mut stream, &ours).await;
        let input = tokio::time::timeout(Duration::from_secs(20), h.node_inputs.recv())
            .await
            .unwrap();
        assert!(
            matches!(&input, Some(NodeInput::Peer { message: m, .. }) if *m == ours),
            "the first message to reach the node is group 0's (term 2), not group 7's"
        );
    }

    /// Node 2 stand-in: takes client connections and answers every request `Written`, as a
    /// leader of a group node 1 does not host would answer node 1's forwards.
    async fn answering_node(listener: tokio::net::TcpListener) {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hello = [0u8; HANDSHAKE_BYTES];
                stream.read_exact(&mut hello).await?;
                stream
                    .write_all(&Handshake::new(Role::Peer { node_id: 2 }).encode())
                    .await?;
                loop {
                    let mut length = [0u8; 4];
                    stream.read_exact(&mut length).await?;
                    let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
                    stream.read_exact(&mut body).await?;
                    let request: RequestFrame = decode_frame(&body).expect("a request frame");
                    let answer = ResponseFrame {
                        id: request.id,
                        header: request.header,
                        response: Response::Written { version: 1 },
                        receipt: None,
                    };
                    let body = encode_frame(&answer).expect("encode");
                    stream.write_all(&(body.len() as u32).to_be_bytes()).await?;
                    stream.write_all(&body).await?;
                }
                #[allow(unreachable_code)]
                Ok::<(), std::io::Error>(())
            });
        }
    }

    /// A forwarded request holds its share of the queued-request budget until its answer
    /// arrives, and only the connection's loop polls that answer. When the loop waited for
    /// budget inside its read branch, a connection pipelining more forwarded requests than the
    /// budget covers waited for ever (and, the budget's waiters being served in order, so did
    /// every other connection): a node that did not host the key's group stalled. Now the wait is
    /// a branch of the loop and the answers keep flowing.
    #[tokio::test]
    async fn pipelined_forwarded_requests_past_the_queued_budget_are_all_answered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let node_2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node_2_addr = node_2.local_addr().unwrap().to_string();
        tokio::spawn(answering_node(node_2));
        // Eight shards, one replica each: node 1 hosts some, node 2 the others.
        let nodes = [(1, addr.clone()), (2, node_2_addr)];
        let spec = ringleader_protocol::ring::RingSpec {
            replicas: 1,
            ..ringleader_protocol::ring::RingSpec::new(nodes.into_iter().collect(), 8)
        };
        let ring = ringleader_protocol::ring::Ring::new(spec).expect("ring");
        let remote_group = (0..8)
            .find(|group| {
                ring.shard(*group)
                    .is_some_and(|shard| !shard.replicas.contains(&1))
            })
            .expect("a group node 1 does not host");
        let key = (0..)
            .map(|i| format!("k{i}"))
            .find(|key| ring.shard_for_key(key.as_bytes()) == remote_group)
            .unwrap();
        let put_in_remote_group = |id| {
            encode_frame(&RequestFrame {
                id,
                header: Header {
                    group: remote_group,
                    epoch: ring.epoch(),
                },
                request: Request::Put {
                    key: key.clone().into_bytes(),
                    value: vec![7u8; 1000],
                    session: None,
                    ack: ringleader_protocol::WriteAck::Majority,
                },
            })
            .unwrap()
        };
        let frame_bytes = put_in_remote_group(0).len();
        let node_1 = serve_as_node_1(
            listener,
            ring.clone(),
            NetConfig {
                // Room for three requests waiting at once.
                queued_request_budget_bytes: 3 * frame_bytes,
                ..net()
            },
        );
        let mut stream = client(&node_1.addr).await;
        const REQUESTS: u64 = 20;
        for id in 1..=REQUESTS {
            let body = put_in_remote_group(id);
            stream
                .write_all(&(body.len() as u32).to_be_bytes())
                .await
                .unwrap();
            stream.write_all(&body).await.unwrap();
        }
        let mut answered = Vec::new();
        for _ in 0..REQUESTS {
            let answer = tokio::time::timeout(Duration::from_secs(10), async {
                let mut length = [0u8; 4];
                stream.read_exact(&mut length).await.unwrap();
                let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
                stream.read_exact(&mut body).await.unwrap();
                decode_frame::<ResponseFrame>(&body).unwrap()
            })
            .await
            .unwrap_or_else(|_| panic!("stalled after {} answers", answered.len()));
            assert!(
                matches!(answer.response, Response::Written { .. }),
                "{answer:?}"
            );
            answered.push(answer.id);
        }
        answered.sort_unstable();
        assert_eq!(answered, (1..=REQUESTS).collect::<Vec<_>>());
    }
}
