//! The client: finds the leader, retries, and makes writes exactly-once.
//!
//! Every write carries a session (an id the cluster assigns when the client registers, before its
//! first write, and a per-client sequence number), so the client can resend a write after a
//! timeout or a lost connection, to the same node or to a new leader, and the replicated state
//! machine applies it once (Raft thesis §6.3). A redirect
//! (`NotLeader` with the leader's address) is followed at once; "no leader yet" is retried with a
//! short backoff; everything stops at the per-request deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use ringleader_protocol::connection::{Answer, CallError, Connection};
use ringleader_protocol::net::{Connector, TokioConnector};
use ringleader_protocol::{
    ErrorKind, Expect, Limits, NodeStatus, ReadConsistency, Receipt, Request, Response, ServedAt,
    Session, Versioned, WriteAck,
};

/// How a client behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Node addresses (`host:port`); any of them will do, the client finds the leader.
    pub endpoints: Vec<String>,
    /// A call gives up after this long, retries included.
    pub request_timeout: Duration,
    /// One attempt at one node gives up after this long; the client then drops that connection
    /// and tries another node (a leader that went silent without closing the connection).
    pub attempt_timeout: Duration,
    /// One connection attempt gives up after this long.
    pub connect_timeout: Duration,
    /// Pause before retrying when no leader is known.
    pub retry_backoff: Duration,
    /// When every endpoint refuses the connection (nothing listens, or the connect times out),
    /// the client keeps trying for this long and then gives up with [`Error::Unreachable`]
    /// instead of waiting out the whole request timeout: a request that was never sent cannot
    /// have been applied, and a cluster whose every node is down will not answer soon. Long
    /// enough to ride over a node restarting.
    pub connect_retry_window: Duration,
    /// Request size limits, checked before sending.
    pub limits: Limits,
    /// Talk to the one endpoint given and no other: no leader discovery, no redirects. A
    /// `NotLeader` answer becomes [`Error::NotLeader`] instead of a redirect. This is what a
    /// client stuck on one side of a network partition sees (`ringleader ... --pin`); it needs
    /// exactly one endpoint.
    pub pinned: bool,
}

impl ClientConfig {
    /// Defaults: 5 s request timeout, 2 s per attempt, 1 s connect timeout, 50 ms retry backoff,
    /// 1 s connect-retry window.
    pub fn new(endpoints: Vec<String>) -> Self {
        ClientConfig {
            endpoints,
            request_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(50),
            connect_retry_window: Duration::from_secs(1),
            limits: Limits::default(),
            pinned: false,
        }
    }
}

/// How fresh a read must be (see `docs/consistency.md` for each level's guarantee and price).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadLevel {
    /// The leader confirms it still leads before answering (a heartbeat round).
    #[default]
    Linearizable,
    /// The leader answers alone while its lease holds (assumes bounded clock drift).
    Lease,
    /// Any replica that has applied this client's session position: read-your-writes and
    /// monotonic reads.
    Session,
    /// Any replica's local state, possibly stale; refused when it may be older than
    /// `max_staleness`.
    Stale { max_staleness: Option<Duration> },
}

/// A read's answer and its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub value: Option<Versioned>,
    pub receipt: Option<Receipt>,
}

/// A put's new version and its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub version: u64,
    pub receipt: Option<Receipt>,
}

/// The result of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The expectation held; the key now has this version.
    Swapped { version: u64 },
    /// The expectation did not hold; the key's current state.
    Mismatch { current: Option<Versioned> },
}

struct Routing {
    /// The address believed to lead.
    leader: Option<String>,
    /// Next endpoint to try when no leader is known.
    next_endpoint: usize,
    connections: BTreeMap<String, Connection>,
}

/// A ringleader client. Cheap to clone; clones share connections and the session.
#[derive(Clone)]
pub struct Client<C: Connector = TokioConnector> {
    config: Arc<ClientConfig>,
    connector: C,
    routing: Arc<Mutex<Routing>>,
    session: Arc<Mutex<SessionState>>,
    /// The session position (see [`Client::session_position`]).
    position: Arc<AtomicU64>,
}

/// Writes whose outcome stayed unknown are remembered (so the cluster keeps their outcome, and so
/// a session whose first write never arrived still gets created) for at most this many.
const MAX_UNKNOWN_WRITES_REMEMBERED: usize = 256;

/// The exactly-once session: the id the cluster gave it (none until registered), the next
/// sequence number, and the writes not yet answered. `first_unacked_seq` is the smallest of
/// `in_flight` and `unknown`.
struct SessionState {
    client_id: Option<u64>,
    next_seq: u64,
    /// Writes being sent right now (never forgotten while in flight).
    in_flight: BTreeSet<u64>,
    /// Writes whose call ended with an unknown outcome, most recent last (bounded).
    unknown: BTreeSet<u64>,
}

impl SessionState {
    fn new(client_id: Option<u64>) -> Self {
        SessionState {
            client_id,
            next_seq: 1,
            in_flight: BTreeSet::new(),
            unknown: BTreeSet::new(),
        }
    }

    fn first_unacked_seq(&self) -> u64 {
        let in_flight = self.in_flight.first().copied().unwrap_or(self.next_seq);
        let unknown = self.unknown.first().copied().unwrap_or(self.next_seq);
        in_flight.min(unknown)
    }
}

impl Client<TokioConnector> {
    /// A client over real TCP. Connections are opened lazily, on the first request.
    pub fn new(config: ClientConfig) -> Result<Self> {
        Self::with_connector(config, TokioConnector)
    }
}

impl<C: Connector> Client<C> {
    /// A client over any [`Connector`] (turmoil's simulated network, say).
    pub fn with_connector(config: ClientConfig, connector: C) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        if config.pinned && config.endpoints.len() != 1 {
            return Err(Error::Invalid(format!(
                "a pinned client talks to exactly one endpoint; {} were given",
                config.endpoints.len()
            )));
        }
        Ok(Client {
            config: Arc::new(config),
            connector,
            routing: Arc::new(Mutex::new(Routing {
                leader: None,
                next_endpoint: 0,
                connections: BTreeMap::new(),
            })),
            session: Arc::new(Mutex::new(SessionState::new(None))),
            position: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Reads a key, linearizably.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Versioned>> {
        Ok(self.read(key, ReadLevel::Linearizable).await?.value)
    }

    /// Reads a key at the given level; the answer comes with its receipt.
    pub async fn read(&self, key: impl Into<Vec<u8>>, level: ReadLevel) -> Result<Read> {
        let consistency = match level {
            ReadLevel::Linearizable => ReadConsistency::Linearizable,
            ReadLevel::Lease => ReadConsistency::Lease,
            ReadLevel::Session => ReadConsistency::Session {
                min_index: self.session_position(),
            },
            ReadLevel::Stale { max_staleness } => ReadConsistency::Stale {
                max_staleness_ms: max_staleness.map(|d| d.as_millis() as u64),
            },
        };
        let request = Request::Get {
            key: key.into(),
            consistency,
        };
        match self.call(request).await? {
            (Response::Value(value), receipt) => Ok(Read { value, receipt }),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Sets a key; returns its new version.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<u64> {
        Ok(self.put_with(key, value, WriteAck::Majority).await?.version)
    }

    /// Sets a key, acknowledged as `ack` asks; returns its new version and the receipt.
    pub async fn put_with(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        ack: WriteAck,
    ) -> Result<Written> {
        let (key, value) = (key.into(), value.into());
        let answer = self
            .write(|session| Request::Put {
                key: key.clone(),
                value: value.clone(),
                session: Some(session),
                ack,
            })
            .await?;
        match answer {
            (Response::Written { version }, receipt) => Ok(Written { version, receipt }),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Deletes a key; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<bool> {
        Ok(self.delete_with(key, WriteAck::Majority).await?.0)
    }

    /// Deletes a key, acknowledged as `ack` asks (not [`WriteAck::Leader`]); returns whether it
    /// existed, and the receipt.
    pub async fn delete_with(
        &self,
        key: impl Into<Vec<u8>>,
        ack: WriteAck,
    ) -> Result<(bool, Option<Receipt>)> {
        let key = key.into();
        match self
            .write(|session| Request::Delete {
                key: key.clone(),
                session: Some(session),
                ack,
            })
            .await?
        {
            (Response::Deleted { existed }, receipt) => Ok((existed, receipt)),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Sets `key` to `new_value` if `expect` holds.
    pub async fn cas(
        &self,
        key: impl Into<Vec<u8>>,
        expect: Expect,
        new_value: impl Into<Vec<u8>>,
    ) -> Result<CasOutcome> {
        Ok(self
            .cas_with(key, expect, new_value, WriteAck::Majority)
            .await?
            .0)
    }

    /// Sets `key` to `new_value` if `expect` holds, acknowledged as `ack` asks (not
    /// [`WriteAck::Leader`]); the outcome comes with its receipt.
    pub async fn cas_with(
        &self,
        key: impl Into<Vec<u8>>,
        expect: Expect,
        new_value: impl Into<Vec<u8>>,
        ack: WriteAck,
    ) -> Result<(CasOutcome, Option<Receipt>)> {
        let (key, new_value) = (key.into(), new_value.into());
        match self
            .write(|session| Request::Cas {
                key: key.clone(),
                expect: expect.clone(),
                new_value: new_value.clone(),
                session: Some(session),
                ack,
            })
            .await?
        {
            (Response::Written { version }, receipt) => {
                Ok((CasOutcome::Swapped { version }, receipt))
            }
            (Response::CasMismatch { current }, receipt) => {
                Ok((CasOutcome::Mismatch { current }, receipt))
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// The client's session position: the highest log index its replies have shown it (a
    /// write it made, a value it read). A [`ReadLevel::Session`] read is served only by a
    /// replica that has applied at least this far, so the client reads its own writes and
    /// never goes back in time, whichever replica answers.
    pub fn session_position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    /// Asks one node (not the leader) for its status. A node that refuses the connection gives
    /// [`Error::Unreachable`]; one that does not answer in time, [`Error::Timeout`].
    pub async fn status_of(&self, addr: &str) -> Result<NodeStatus> {
        let timeout = self.config.request_timeout;
        let response = tokio::time::timeout(timeout, async {
            let connection = self
                .connection(addr)
                .await
                .map_err(|last_problem| Error::Unreachable { last_problem })?;
            connection
                .call(Request::Status)
                .await
                .map_err(|e| Error::Timeout {
                    timeout,
                    maybe_applied: false,
                    last_problem: format!("{addr}: {e}"),
                })
        })
        .await;
        match response {
            Ok(Ok((Response::Status(status), _))) => Ok(*status),
            Ok(Ok((other, _))) => Err(unexpected(other)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::Timeout {
                timeout,
                maybe_applied: false,
                last_problem: format!("{addr} did not answer"),
            }),
        }
    }

    /// The session id writes carry; `None` before the first write registers one.
    pub fn client_id(&self) -> Option<u64> {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .client_id
    }

    /// Opens a session with the cluster (one log entry) unless one is open already.
    async fn ensure_session(&self) -> Result<u64> {
        if let Some(client_id) = self
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .client_id
        {
            return Ok(client_id);
        }
        let client_id = match self.call(Request::RegisterSession).await? {
            (Response::SessionRegistered { client_id }, _) => client_id,
            (other, _) => return Err(unexpected(other)),
        };
        // Concurrent first writes may both register: the first id stored wins, the other
        // session is simply never used (and expires).
        let mut state = self.session.lock().unwrap_or_else(|p| p.into_inner());
        Ok(*state.client_id.get_or_insert(client_id))
    }

    async fn write(&self, make: impl Fn(Session) -> Request) -> Result<Answer> {
        let session = loop {
            let client_id = self.ensure_session().await?;
            let mut state = self.session.lock().unwrap_or_else(|p| p.into_inner());
            if state.client_id != Some(client_id) {
                continue; // renewed meanwhile: register again
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            state.in_flight.insert(seq);
            break Session {
                client_id,
                seq,
                first_unacked_seq: state.first_unacked_seq(),
            };
        };
        let result = self.call(make(session)).await;
        let mut state = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if state.client_id == Some(session.client_id) {
            // A definite answer lets the cluster forget this write's outcome; an unknown one is
            // kept unacknowledged (bounded), so the cluster keeps its outcome for a retry.
            state.in_flight.remove(&session.seq);
            if result.as_ref().is_err_and(Error::outcome_unknown) {
                state.unknown.insert(session.seq);
                while state.unknown.len() > MAX_UNKNOWN_WRITES_REMEMBERED {
                    state.unknown.pop_first();
                }
            }
            if matches!(result, Err(Error::SessionExpired)) {
                // The cluster forgot this session: the next write registers a new one.
                *state = SessionState::new(None);
            }
        }
        result
    }

    async fn connection(&self, addr: &str) -> std::result::Result<Connection, String> {
        if let Some(existing) = self
            .routing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .connections
            .get(addr)
        {
            if !existing.is_closed() {
                return Ok(existing.clone());
            }
        }
        let opened = tokio::time::timeout(
            self.config.connect_timeout,
            Connection::open(&self.connector, addr, self.config.limits.max_frame_bytes),
        )
        .await
        .map_err(|_| format!("connect to {addr} timed out"))??;
        self.routing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .connections
            .insert(addr.to_string(), opened.clone());
        Ok(opened)
    }

    fn target(&self) -> String {
        let mut routing = self.routing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(leader) = &routing.leader {
            return leader.clone();
        }
        let endpoints = &self.config.endpoints;
        let addr = endpoints[routing.next_endpoint % endpoints.len()].clone();
        routing.next_endpoint += 1;
        addr
    }

    fn forget(&self, addr: &str, drop_connection: bool) {
        let mut routing = self.routing.lock().unwrap_or_else(|p| p.into_inner());
        if routing.leader.as_deref() == Some(addr) {
            routing.leader = None;
        }
        if drop_connection {
            routing.connections.remove(addr);
        }
    }

    /// Sends `request` to the leader, following redirects and retrying until the deadline.
    ///
    /// `maybe_applied` stays false while every attempt failed before the request left this
    /// process (a refused or timed-out connect, a connection closed before it took the request):
    /// then the error says the request was certainly not applied. When every endpoint refuses
    /// connections for [`ClientConfig::connect_retry_window`], the call fails early with
    /// [`Error::Unreachable`] rather than waiting out the request timeout.
    async fn call(&self, request: Request) -> Result<Answer> {
        request.check(&self.config.limits).map_err(Error::Invalid)?;
        let timeout = self.config.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut maybe_applied = false;
        let mut last_problem = String::from("no attempt finished");
        // Endpoints that refused a connection since the last connection that worked, and since
        // when every endpoint has been refusing (a whole round failed to connect).
        let mut refused: BTreeSet<String> = BTreeSet::new();
        let mut all_refusing_since: Option<tokio::time::Instant> = None;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                if !maybe_applied && all_refusing_since.is_some() {
                    return Err(Error::Unreachable { last_problem });
                }
                return Err(Error::Timeout {
                    timeout,
                    maybe_applied: maybe_applied && request.is_write(),
                    last_problem,
                });
            }
            let addr = self.target();
            let connected = tokio::time::timeout(deadline - now, self.connection(&addr))
                .await
                .unwrap_or_else(|_| Err(format!("connect to {addr} timed out")));
            let connection = match connected {
                Ok(connection) => {
                    refused.clear();
                    all_refusing_since = None;
                    connection
                }
                Err(problem) => {
                    // Nothing was sent: this attempt cannot have applied the request.
                    last_problem = problem;
                    self.forget(&addr, true);
                    refused.insert(addr);
                    if self.config.endpoints.iter().all(|e| refused.contains(e)) {
                        let since = *all_refusing_since.get_or_insert(now);
                        if !maybe_applied && now - since >= self.config.connect_retry_window {
                            return Err(Error::Unreachable { last_problem });
                        }
                        refused.clear(); // the next round
                    }
                    tokio::time::sleep(self.config.retry_backoff).await;
                    continue;
                }
            };
            let now = tokio::time::Instant::now();
            let attempt_timeout = deadline
                .saturating_duration_since(now)
                .min(self.config.attempt_timeout);
            let response =
                match tokio::time::timeout(attempt_timeout, connection.call(request.clone())).await
                {
                    Err(_elapsed) => {
                        maybe_applied = true;
                        last_problem = format!(
                            "{addr} did not answer within {} ms",
                            attempt_timeout.as_millis()
                        );
                        self.forget(&addr, true);
                        continue;
                    }
                    Ok(Err(CallError::NotSent)) => {
                        last_problem =
                            format!("{addr}: connection closed before the request was sent");
                        self.forget(&addr, true);
                        tokio::time::sleep(self.config.retry_backoff).await;
                        continue;
                    }
                    Ok(Err(CallError::Lost)) => {
                        maybe_applied = true;
                        last_problem = format!("{addr}: connection lost before the answer");
                        self.forget(&addr, true);
                        tokio::time::sleep(self.config.retry_backoff).await;
                        continue;
                    }
                    Ok(Ok(response)) => response,
                };
            let (response, receipt) = response;
            match response {
                Response::NotLeader {
                    leader_addr,
                    leader,
                } if self.config.pinned => {
                    return Err(Error::NotLeader {
                        addr,
                        leader,
                        leader_addr,
                    });
                }
                Response::NotLeader {
                    leader_addr,
                    leader,
                } => {
                    last_problem = match (leader, &leader_addr) {
                        (Some(id), Some(at)) => {
                            format!("{addr} is not the leader (node {id} at {at} is)")
                        }
                        (Some(id), None) => format!("{addr} is not the leader (node {id} is)"),
                        (None, _) => format!("{addr} knows no leader yet"),
                    };
                    let redirected = {
                        let mut routing = self.routing.lock().unwrap_or_else(|p| p.into_inner());
                        routing.leader = leader_addr.filter(|leader_addr| *leader_addr != addr);
                        routing.leader.is_some()
                    };
                    if !redirected {
                        tokio::time::sleep(self.config.retry_backoff).await;
                    }
                }
                Response::Error { kind, message } => match kind {
                    ErrorKind::Unavailable | ErrorKind::ShuttingDown => {
                        // A node shutting down may have had the write in flight.
                        maybe_applied |= kind == ErrorKind::ShuttingDown;
                        last_problem = format!("{addr}: {message}");
                        self.forget(&addr, kind == ErrorKind::ShuttingDown);
                        tokio::time::sleep(self.config.retry_backoff).await;
                    }
                    ErrorKind::Unknown => {
                        // Proposed but not known to commit: resend with the same session.
                        maybe_applied = true;
                        last_problem = format!("{addr}: {message}");
                        self.forget(&addr, false);
                        tokio::time::sleep(self.config.retry_backoff).await;
                    }
                    ErrorKind::Invalid => return Err(Error::Invalid(message)),
                    ErrorKind::AckTimeout => return Err(Error::NotOnAllReplicas(message)),
                    ErrorKind::SessionExpired => return Err(Error::SessionExpired),
                    ErrorKind::Internal => return Err(Error::Server(message)),
                    ErrorKind::DiskFull => {
                        return Err(Error::DiskFull {
                            node: addr,
                            message,
                        })
                    }
                },
                answer => {
                    if let Some(receipt) = &receipt {
                        self.position.fetch_max(receipt.index, Ordering::AcqRel);
                    }
                    // Only the leader serves writes and linearizable reads; a replica that
                    // answered a stale or session read is not thereby the leader.
                    let from_leader = receipt.as_ref().is_none_or(|r| {
                        !matches!(r.served_at, ServedAt::Stale | ServedAt::Session)
                    });
                    if from_leader {
                        self.routing
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .leader = Some(addr);
                    }
                    return Ok((answer, receipt));
                }
            }
        }
    }
}

fn unexpected(response: Response) -> Error {
    Error::Server(format!("unexpected response {response:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address where nothing listens.
    fn refused_addr() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        addr
    }

    // Paused time: the deadline and the retry window are virtual, so "before the deadline" is
    // exact and costs no wall-clock wait.
    #[tokio::test(start_paused = true)]
    async fn refused_everywhere_fails_within_the_retry_window_and_is_certainly_not_applied() {
        let mut config = ClientConfig::new(vec![refused_addr(), refused_addr()]);
        config.request_timeout = Duration::from_secs(600);
        let client = Client::new(config).unwrap();
        let started = tokio::time::Instant::now();
        let error = client.put("k", "v").await.unwrap_err();
        assert!(
            matches!(error, Error::Unreachable { .. }),
            "a typed error: {error:?}"
        );
        assert!(
            !error.outcome_unknown(),
            "never sent, so certainly not applied"
        );
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "failed fast, not at the request deadline"
        );
        assert!(
            error.to_string().contains("certainly not applied"),
            "{error}"
        );
    }

    // --- Retry, redirect and session logic against fake nodes (no sockets, virtual time). ---

    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::codec::Framed;

    use ringleader_protocol::{
        decode_frame, encode_frame, frame_codec, Handshake, RequestFrame, ResponseFrame, Role,
        HANDSHAKE_BYTES,
    };

    /// How the fake node at an address answers a request: `Some(answer)`, or `None` to close
    /// the connection after reading it (the request reached the node, its answer never came).
    type Script = Arc<dyn Fn(&str, &Request) -> Option<Response> + Send + Sync>;

    /// A [`Connector`] whose every address is a fake node run by a script, over an in-memory
    /// pipe: it records every request a node received, in order.
    #[derive(Clone)]
    struct FakeCluster {
        script: Script,
        received: Arc<Mutex<Vec<(String, Request)>>>,
    }

    impl FakeCluster {
        fn new(
            script: impl Fn(&str, &Request) -> Option<Response> + Send + Sync + 'static,
        ) -> Self {
            FakeCluster {
                script: Arc::new(script),
                received: Arc::default(),
            }
        }

        fn received(&self) -> Vec<(String, Request)> {
            self.received.lock().unwrap().clone()
        }

        /// The sessions of the writes received, in order.
        fn write_sessions(&self) -> Vec<Session> {
            self.received()
                .into_iter()
                .filter_map(|(_, request)| session_of(&request))
                .collect()
        }

        fn client(&self, endpoints: &[&str]) -> Client<FakeCluster> {
            let mut config = ClientConfig::new(endpoints.iter().map(|e| e.to_string()).collect());
            config.request_timeout = Duration::from_secs(1);
            config.attempt_timeout = Duration::from_millis(300);
            Client::with_connector(config, self.clone()).unwrap()
        }
    }

    impl Connector for FakeCluster {
        type Stream = tokio::io::DuplexStream;
        async fn connect(&self, addr: &str) -> std::io::Result<Self::Stream> {
            let (client_end, node_end) = tokio::io::duplex(64 * 1024);
            tokio::spawn(fake_node(addr.to_string(), node_end, self.clone()));
            Ok(client_end)
        }
    }

    async fn fake_node(addr: String, mut stream: tokio::io::DuplexStream, cluster: FakeCluster) {
        let mut hello = [0u8; HANDSHAKE_BYTES];
        if stream.read_exact(&mut hello).await.is_err() {
            return;
        }
        let reply = Handshake::new(Role::Peer { node_id: 0 }).encode();
        if stream.write_all(&reply).await.is_err() {
            return;
        }
        let mut framed = Framed::new(stream, frame_codec(Limits::default().max_frame_bytes));
        while let Some(Ok(bytes)) = framed.next().await {
            let frame: RequestFrame = decode_frame(&bytes).unwrap();
            cluster
                .received
                .lock()
                .unwrap()
                .push((addr.clone(), frame.request.clone()));
            let Some(response) = (cluster.script)(&addr, &frame.request) else {
                return; // drop the connection with the request unanswered
            };
            let body = encode_frame(&ResponseFrame::new(frame.id, response)).unwrap();
            if framed.send(Bytes::from(body)).await.is_err() {
                return;
            }
        }
    }

    fn session_of(request: &Request) -> Option<Session> {
        match request {
            Request::Put { session, .. }
            | Request::Delete { session, .. }
            | Request::Cas { session, .. } => *session,
            _ => None,
        }
    }

    fn refusal(kind: ErrorKind) -> Response {
        Response::Error {
            kind,
            message: format!("fake {kind:?}"),
        }
    }

    fn registered(client_id: u64) -> Option<Response> {
        Some(Response::SessionRegistered { client_id })
    }

    /// Pinned to "a": its NotLeader answer is the result, the leader it names ("b") is never
    /// contacted, and a stale read "a" can answer is answered by "a".
    #[tokio::test(start_paused = true)]
    async fn a_pinned_client_follows_no_redirect() {
        let cluster = FakeCluster::new(|addr, request| match (addr, request) {
            (
                "a",
                Request::Get {
                    consistency: ReadConsistency::Stale { .. },
                    ..
                },
            ) => Some(Response::Value(None)),
            ("a", _) => Some(Response::NotLeader {
                leader: Some(2),
                leader_addr: Some("b".into()),
            }),
            _ => Some(Response::Written { version: 3 }),
        });
        let mut config = ClientConfig::new(vec!["a".into()]);
        config.pinned = true;
        let client = Client::with_connector(config, cluster.clone()).unwrap();
        let error = client.get("k").await.unwrap_err();
        assert_eq!(
            error,
            Error::NotLeader {
                addr: "a".into(),
                leader: Some(2),
                leader_addr: Some("b".into())
            }
        );
        assert!(error.to_string().contains("node 2 at b is"), "{error}");
        let stale = ReadLevel::Stale {
            max_staleness: None,
        };
        assert_eq!(
            client.read("k", stale).await.map(|read| read.value),
            Ok(None)
        );
        assert!(
            cluster.received().iter().all(|(addr, _)| addr == "a"),
            "only the pinned endpoint was asked: {:?}",
            cluster.received()
        );
        let mut two = ClientConfig::new(vec!["a".into(), "b".into()]);
        two.pinned = true;
        assert!(matches!(
            Client::with_connector(two, cluster.clone()),
            Err(Error::Invalid(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn follows_a_redirect_to_a_leader_it_was_not_configured_with() {
        // "b" leads but is not among the endpoints: only the redirect from "a" leads there.
        let cluster = FakeCluster::new(|addr, request| match (addr, request) {
            ("b", Request::RegisterSession) => registered(7),
            ("b", _) => Some(Response::Written { version: 3 }),
            ("a", _) => Some(Response::NotLeader {
                leader: Some(2),
                leader_addr: Some("b".into()),
            }),
            _ => Some(Response::NotLeader {
                leader: None,
                leader_addr: None,
            }),
        });
        let client = cluster.client(&["a", "c"]);
        assert_eq!(client.put("k", "v1").await, Ok(3));
        assert_eq!(client.put("k", "v2").await, Ok(3));
        let addrs: Vec<String> = cluster.received().into_iter().map(|(a, _)| a).collect();
        // Redirected once, then the leader is remembered: no request to a follower again.
        assert_eq!(addrs, ["a", "b", "b", "b"]);
        let seqs: Vec<(u64, u64)> = cluster
            .write_sessions()
            .iter()
            .map(|s| (s.client_id, s.seq))
            .collect();
        assert_eq!(seqs, [(7, 1), (7, 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_unavailable_until_it_succeeds_or_the_deadline_and_says_not_applied() {
        // Unavailable three times, then the write goes through.
        let refusals = Arc::new(AtomicU64::new(3));
        let left = refusals.clone();
        let cluster = FakeCluster::new(move |_, request| match request {
            Request::RegisterSession => registered(1),
            _ if left.load(Ordering::SeqCst) > 0 => {
                left.fetch_sub(1, Ordering::SeqCst);
                Some(refusal(ErrorKind::Unavailable))
            }
            _ => Some(Response::Written { version: 9 }),
        });
        assert_eq!(cluster.client(&["a"]).put("k", "v").await, Ok(9));
        assert_eq!(cluster.write_sessions().len(), 4, "3 refusals, 1 success");

        // Unavailable for ever: retried until the deadline, and certainly not applied.
        let cluster = FakeCluster::new(|_, request| match request {
            Request::RegisterSession => registered(1),
            _ => Some(refusal(ErrorKind::Unavailable)),
        });
        let error = cluster.client(&["a"]).put("k", "v").await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Timeout {
                    maybe_applied: false,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(!error.outcome_unknown());
        let attempts = cluster.write_sessions().len();
        // 1 s of deadline at a 50 ms backoff: about 20 attempts, all of them the same write.
        assert!(attempts >= 10, "retried {attempts} times only");
        assert!(cluster.write_sessions().iter().all(|s| s.seq == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn registers_a_new_session_after_the_cluster_expired_the_old_one() {
        let next_id = Arc::new(AtomicU64::new(1));
        let cluster = FakeCluster::new(move |_, request| match request {
            Request::RegisterSession => registered(next_id.fetch_add(1, Ordering::SeqCst)),
            _ => match session_of(request) {
                Some(session) if session.client_id == 1 => Some(refusal(ErrorKind::SessionExpired)),
                _ => Some(Response::Written { version: 4 }),
            },
        });
        let client = cluster.client(&["a"]);
        let error = client.put("k", "v").await.unwrap_err();
        assert_eq!(error, Error::SessionExpired);
        assert!(
            error.outcome_unknown(),
            "an expired session's write may have applied"
        );
        assert_eq!(client.client_id(), None, "the expired session is dropped");
        assert_eq!(client.put("k", "v").await, Ok(4));
        assert_eq!(client.client_id(), Some(2));
        let sessions = cluster.write_sessions();
        let last = sessions.last().unwrap();
        assert_eq!(
            (last.client_id, last.seq, last.first_unacked_seq),
            (2, 1, 1),
            "a fresh session starts at sequence 1"
        );
        let registrations = cluster
            .received()
            .iter()
            .filter(|(_, r)| matches!(r, Request::RegisterSession))
            .count();
        assert_eq!(registrations, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn maybe_applied_is_set_once_a_write_may_have_reached_a_node() {
        // The node takes the write but never learns whether it committed (`Unknown`), for ever.
        let cluster = FakeCluster::new(|_, request| match (request, session_of(request)) {
            (Request::RegisterSession, _) => registered(5),
            (_, Some(session)) if session.seq == 1 => Some(refusal(ErrorKind::Unknown)),
            _ => Some(Response::Written { version: 8 }),
        });
        let client = cluster.client(&["a"]);
        let error = client.put("k", "v").await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Timeout {
                    maybe_applied: true,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.outcome_unknown());
        let sessions = cluster.write_sessions();
        assert!(sessions.len() >= 2, "resent");
        assert!(
            sessions.iter().all(|s| s.seq == 1),
            "every resend is the same write (same session and sequence)"
        );
        // The next write keeps the unknown one unacknowledged, so the cluster keeps its outcome.
        assert_eq!(client.put("k", "w").await, Ok(8));
        let last = *cluster.write_sessions().last().unwrap();
        assert_eq!((last.seq, last.first_unacked_seq), (2, 1));

        // The connection drops after the node read the write: the write may have applied.
        let cluster = FakeCluster::new(|_, request| match request {
            Request::RegisterSession => registered(5),
            _ => None,
        });
        let error = cluster.client(&["a"]).put("k", "v").await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Timeout {
                    maybe_applied: true,
                    ..
                }
            ),
            "{error:?}"
        );
    }
}
