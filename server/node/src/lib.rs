//! The ringleader node and the library behind the `ringleader` binary.
//!
//! A node, in layers (docs/architecture.md follows one write through them, file by file):
//!
//! - [`service`] accepts client and peer connections; [`router`] tells it which Raft group a
//!   request or a peer's message is for, and [`auth`]/[`budget`] guard the door;
//! - [`host`] is the one task that owns the node's clock and transport, and the [`replica`]s of
//!   the groups the ring places on it ([`forward`] sends on what it does not host); its
//!   [`log_writer`] owns the node's one log and does every write and fsync off the host's loop;
//! - a [`replica`] is one group's Raft and key-value state machine, with no I/O: a write is
//!   proposed, committed and applied there;
//! - [`peer`] tasks carry Raft messages to the other nodes, as [`chunk`]ed envelopes.
//!
//! Networking goes through [`network::Network`], so the jepsen-like simulation runs this same
//! code on turmoil's network and disk. The crates' mirrored types (Raft's and the log's entries
//! and hard states, the protocol's and the state machine's values, conditions and sessions) are
//! converted in one place, [`mapping`]. Replication is explained in `docs/replication.md`.

pub mod auth;
pub mod budget;
pub mod chunk;
pub mod config;
pub mod faults;
pub mod forward;
pub mod host;
pub mod injected;
pub mod lag;
pub mod log_writer;
pub mod mapping;
pub mod network;
pub mod peer;
pub mod planted;
pub mod replica;
pub mod ring_file;
pub mod router;
pub mod service;

pub use config::NodeConfig;
pub use planted::PlantedBug;

use std::io;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::host::{Host, NodeError, NodeInput, NODE_INPUT_QUEUE};
use crate::network::Network;
use crate::peer::PeerSenders;

/// A running node: its tasks, and the handle to stop it.
pub struct RunningNode {
    shutdown: watch::Sender<bool>,
    node_inputs: mpsc::Sender<NodeInput>,
    node_task: tokio::task::JoinHandle<()>,
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: io::Error },
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Peers must authenticate; a node with peers and no secret could never reach them.
    #[error(
        "a cluster of {nodes} nodes needs a cluster secret: pass --cluster-secret-file PATH (or set \
         RINGLEADER_CLUSTER_SECRET_FILE) naming a file with the same secret on every node, e.g. made \
         with `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > PATH && chmod 600 PATH` \
         (`ringleader cluster up` makes one for you)"
    )]
    NoClusterSecret { nodes: usize },
}

/// Opens the node's storage, binds its address and starts its tasks.
pub async fn start<N: Network>(network: N, config: NodeConfig) -> Result<RunningNode, StartError> {
    if config.peers.len() > 1 && config.net.cluster_secret.is_none() {
        return Err(StartError::NoClusterSecret {
            nodes: config.peers.len(),
        });
    }
    let addr = config.addr();
    let listener = network
        .bind(&addr)
        .await
        .map_err(|source| StartError::Listen {
            addr: addr.clone(),
            source,
        })?;
    // An operator's fault rules (`--allow-faults`) use the simulation's seam when the simulation
    // does not (it never sets `allow_faults`; if both were set, the simulation's seam wins for
    // what the node sends).
    let injected = config.net.allow_faults.then(|| {
        Arc::new(injected::InjectedFaults::new(
            config.id,
            config.peers.keys().copied().collect(),
        ))
    });
    let transport_faults = config.transport_faults.clone().or_else(|| {
        injected
            .clone()
            .map(|faults| faults as Arc<dyn faults::TransportFaults>)
    });
    let peers = PeerSenders::start(
        network.clone(),
        config.id,
        &config.peers,
        config.net.cluster_secret.clone(),
    )
    .with_faults(transport_faults);
    let host = Host::open(config.clone(), peers)?;
    let router = router::Router::new(host.ring().clone(), config.id);
    let forwarder = Arc::new(forward::Forwarder::new(
        network.clone(),
        config.id,
        host.ring().clone(),
        config.limits.max_frame_bytes,
    ));
    let (inputs_sender, inputs) = mpsc::channel(NODE_INPUT_QUEUE);
    let (shutdown, shutdown_receiver) = watch::channel(false);
    let node_task = tokio::spawn(host.run(inputs));
    tokio::spawn(service::accept_loop(
        network,
        listener,
        service::ServiceConfig {
            self_id: config.id,
            peer_ids: config.peers.keys().copied().collect(),
            limits: config.limits,
            net: config.net.clone(),
            router,
            forwarder,
            faults: injected,
        },
        inputs_sender.clone(),
        shutdown_receiver,
    ));
    tracing::info!(id = config.id, %addr, dir = %config.data_dir.display(), "node serving");
    Ok(RunningNode {
        shutdown,
        node_inputs: inputs_sender,
        node_task,
    })
}

impl RunningNode {
    /// Graceful stop: stop accepting, let connections finish what is in flight, hand over
    /// leadership, sync the log.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let (done, stopped) = oneshot::channel();
        if self
            .node_inputs
            .send(NodeInput::Shutdown { done })
            .await
            .is_ok()
        {
            let _ = stopped.await;
        }
        let _ = self.node_task.await;
    }

    /// Resolves when the node task ends on its own (a storage failure).
    pub async fn stopped(&mut self) {
        let _ = (&mut self.node_task).await;
    }
}
