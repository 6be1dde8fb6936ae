//! Operator requests that are not part of the key-value API: today, the fault rules of
//! `ringleader fault` (drop or delay a node's peer traffic, for experiments on a real cluster).
//!
//! They travel on their own connection role ([`crate::Role::Admin`]), which must prove knowledge
//! of the cluster secret as a peer does, so an application client can neither send them nor
//! see them as API (the `ringleader-client` crate does not re-export this module). The frames
//! are the usual length-delimited bincode bodies: one [`AdminRequest`] answered by one
//! [`AdminResponse`], in order.

use serde::{Deserialize, Serialize};

/// The largest admin frame either side accepts: a rule names a few node ids.
pub const MAX_ADMIN_FRAME_BYTES: usize = 64 * 1024;

/// An operator's request to one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Drop every peer (Raft) message this node sends to or receives from these nodes, in
    /// addition to those already cut. Client traffic is never touched.
    FaultCut { peers: Vec<u64> },
    /// Hold every peer message this node sends for this long before it is queued (replaces the
    /// previous delay; 0 removes it). What the node receives is not delayed.
    FaultDelay { delay_ms: u64 },
    /// Remove every fault rule of this node.
    FaultHeal,
    /// Only report the node's fault rules.
    FaultShow,
}

/// A node's fault rules, after the request was applied.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FaultRules {
    /// The answering node.
    pub node: u64,
    /// Every voter of the node's cluster, itself included (so a tool can compute "the rest").
    pub voters: Vec<u64>,
    /// Peers whose traffic with this node is dropped, both ways.
    pub cut: Vec<u64>,
    /// How long this node holds each peer message it sends (0: not delayed).
    pub delay_ms: u64,
}

/// A node's answer to an [`AdminRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResponse {
    Faults(FaultRules),
    /// Refused (the node was not started with `--allow-faults`, or the request names no voter
    /// of the cluster); nothing changed.
    Refused {
        message: String,
    },
}
