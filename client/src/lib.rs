//! The async Rust client for ringleader.
//!
//! Give it any node addresses; it learns the cluster's ring (which shard holds a key, and which
//! nodes replicate each shard) from one of them, sends each request straight to the leader of its
//! key's shard, follows redirects and ring changes, retries through elections until a per-request
//! deadline, and makes writes exactly-once with a session per shard and sequence numbers, so a
//! retried write is never applied twice. [`Client::scan`] reads a key prefix over every shard.
//!
//! ```no_run
//! use ringleader_client::{Client, ClientConfig, Expect, CasOutcome};
//!
//! # async fn example() -> Result<(), ringleader_client::Error> {
//! let client = Client::new(ClientConfig::new(vec![
//!     "127.0.0.1:7001".into(), "127.0.0.1:7002".into(), "127.0.0.1:7003".into(),
//! ]))?;
//! let version = client.put("greeting", "hello").await?;
//! let current = client.get("greeting").await?.expect("just written");
//! assert_eq!(current.value, b"hello");
//! assert_eq!(current.version, version);
//! match client.cas("greeting", Expect::Version(version), "hello again").await? {
//!     CasOutcome::Swapped { version } => println!("now at version {version}"),
//!     CasOutcome::Mismatch { current } => println!("someone else wrote first: {current:?}"),
//! }
//! # Ok(())
//! # }
//! ```

//!
//! The wire protocol itself (handshake, frames, requests and responses, limits) lives in the
//! `ringleader-protocol` crate, shared with the node; this crate re-exports only the types an
//! application uses with [`Client`].

mod client;
mod error;
mod routing;

pub use client::{CasOutcome, Client, ClientConfig, Read, ReadLevel, Scanned, Written};
pub use error::{Error, Result};
pub use ringleader_protocol::message::MAX_SCAN_LIMIT;
pub use ringleader_protocol::net::{Connector, TokioConnector};
pub use ringleader_protocol::ring::{Ring, RingSpec};
pub use ringleader_protocol::{
    Expect, GroupId, GroupStatus, NodeStatus, Receipt, ReplicaStatus, ServedAt, Versioned,
    WriteAck, ONLY_GROUP,
};
