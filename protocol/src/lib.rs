//! The ringleader wire protocol, shared by the client library (`ringleader-client`) and the node
//! (`ringleader-node`), so that neither side depends on the other.
//!
//! A connection opens with a fixed handshake ([`Handshake`]: magic, protocol version, role), then
//! carries length-delimited frames (a `u32` big-endian length, then a bincode body, see
//! [`encode_frame`] / [`decode_frame`]). Every frame is bounded by [`Limits::max_frame_bytes`]; a
//! longer length is refused before any byte of it is buffered. Requests carry an id so a
//! connection can pipeline them; responses may come back in any order.
//!
//! Peer connections (node to node Raft traffic) share the port and the framing; their handshake
//! names the sending node and is followed by an HMAC challenge proving both sides know the
//! cluster secret; their frame bodies (Raft messages, large ones in chunks) are defined by the
//! node. Version 4 added the challenge and the chunks; version 5 the [`Header`] (group and epoch)
//! of every request and response frame; version 6 shaped [`NodeStatus`] for many groups (one
//! [`GroupStatus`] per hosted group) and took the server-only data directory out of it; version 7
//! added sharding: scans, the ring (its epoch checked on every request, a stale one redirected
//! with the current ring), and the forwarding node in receipts.
//!
//! - [`handshake`]: the first bytes of a connection, and why one is refused.
//! - [`frame`]: frame bodies (bincode) and the length-delimited codec.
//! - [`message`]: what a client asks and a node answers, the limits both enforce.
//! - [`connection`]: one pipelined client connection to a node (the client's, and a forwarding
//!   node's).
//! - [`net`]: how connections are opened (a trait, so the simulation can swap in simulated TCP).
//! - [`admin`]: operator requests outside the key-value API (fault rules), on an authenticated
//!   connection role of their own.
//! - [`ring`]: the consistent-hash ring (keys to shards, shards to replica nodes), computed the
//!   same way by the node and the client from a [`ring::RingSpec`].

pub mod admin;
pub mod connection;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod net;
pub mod ring;

pub use frame::{
    decode_frame, decode_large_frame, encode_frame, frame_codec, MAX_LARGE_FRAME_BYTES,
};
pub use handshake::{Handshake, HandshakeError, Role, HANDSHAKE_BYTES, PROTOCOL_VERSION};
pub use message::{
    ErrorKind, Expect, GroupId, GroupStatus, Header, Limits, NodeStatus, ReadConsistency, Receipt,
    ReplicaStatus, Request, RequestFrame, Response, ResponseFrame, ServedAt, Session, Versioned,
    WriteAck, CLIENT_CHOSEN_SESSION_IDS, ONLY_GROUP,
};
pub use net::{Connector, TokioConnector};
