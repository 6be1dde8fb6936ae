//! The client's typed errors.

use std::time::Duration;

/// What a client call can fail with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// No answer within the request timeout. For a write, `maybe_applied` says whether it was
    /// sent at least once: then it may have taken effect (its session makes a retry safe).
    #[error("no answer within {} ms (last problem: {last_problem}){}", timeout.as_millis(), if *.maybe_applied { "; outcome unknown: the write may have been applied" } else { "" })]
    Timeout {
        timeout: Duration,
        maybe_applied: bool,
        last_problem: String,
    },
    /// No endpoint accepted a connection, round after round, for the client's connect-retry
    /// window: the request was never sent, so it was certainly not applied.
    #[error("every endpoint refused the connection (last: {last_problem}); the request was not sent, so it was certainly not applied")]
    Unreachable { last_problem: String },
    /// The request breaks a limit or is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The write's session expired before a retry reached the cluster: outcome unknown.
    #[error("the session expired; the write's outcome is unknown")]
    SessionExpired,
    /// The node reported an internal failure.
    #[error("server error: {0}")]
    Server(String),
    /// The node's disk is full: the write was certainly not applied. Reads keep working, and
    /// writes succeed again once space is freed on that node.
    #[error("disk full on node {node}: {message}")]
    DiskFull { node: String, message: String },
    /// A write acknowledged by every replica (`WriteAck::All`) committed — it is durable on a
    /// majority and will not be lost — but not every replica applied it in time.
    #[error("written, but not on every replica in time: {0}")]
    NotOnAllReplicas(String),
    /// A pinned client ([`crate::ClientConfig::pinned`]) asked a node that does not lead; it
    /// follows no redirect. The request was not applied.
    #[error("{addr} is not the leader ({}) and the client is pinned to it", match (leader, leader_addr) {
        (Some(id), Some(at)) => format!("node {id} at {at} is"),
        (Some(id), None) => format!("node {id} is"),
        _ => "it knows no leader".to_string(),
    })]
    NotLeader {
        addr: String,
        leader: Option<u64>,
        leader_addr: Option<String>,
    },
    /// No endpoint was given.
    #[error("no endpoints configured")]
    NoEndpoints,
}

impl Error {
    /// Whether the operation may have taken effect although it returned an error.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Error::Timeout {
                maybe_applied: true,
                ..
            } | Error::SessionExpired
        )
    }
}

/// The client's result type.
pub type Result<T> = std::result::Result<T, Error>;
