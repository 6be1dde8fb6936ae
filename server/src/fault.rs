//! `ringleader fault partition|isolate|delay|heal|show`: tells the nodes of a running cluster to
//! drop or delay their peer (Raft) traffic, for experiments on a real local cluster (see
//! docs/faults.md). Client traffic is never touched, so clients on each side of a partition
//! keep reaching their node (`--pin` one to see what it answers).
//!
//! A node accepts fault rules only when it was started with `--allow-faults`, and only from a
//! connection that proved knowledge of the cluster secret (the `Admin` handshake role, see
//! `ringleader_node::auth`). The command opens one such connection per endpoint, asks each
//! node for its rules (which names its id and the voters), computes what each node must be told
//! and tells it. A rule is per node and in memory only: a partition is told to both sides (each
//! drops what crosses the cut, both ways), and a restarted node has no rules.
//!
//! Exit codes: 0 every endpoint was told; 2 any endpoint could not be reached, refused (no
//! `--allow-faults`), or failed authentication; the others were told anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use ringleader_node::auth::{self, AuthError, ClusterSecret};
use ringleader_protocol::admin::{AdminRequest, AdminResponse, FaultRules, MAX_ADMIN_FRAME_BYTES};
use ringleader_protocol::{decode_frame, encode_frame, Handshake, Role, HANDSHAKE_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::{parse_address, parse_timeout};

/// The directory `cluster up` uses when given none: where the cluster is looked for without
/// `--dir`.
const DEFAULT_CLUSTER_DIR: &str = "./ringleader-data";

#[derive(Args)]
pub struct FaultArgs {
    #[command(subcommand)]
    action: FaultAction,
    /// A `cluster up` directory: the nodes' addresses and the cluster secret are taken from it
    /// unless --endpoints and --cluster-secret-file say otherwise [default: ./ringleader-data].
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// Every node's address (HOST:PORT), comma-separated [default: from --dir].
    #[arg(long, global = true, env = "RINGLEADER_ENDPOINTS", value_delimiter = ',', value_parser = parse_address)]
    endpoints: Option<Vec<String>>,
    /// The cluster secret file the nodes were started with [default: DIR/cluster-secret].
    #[arg(long, global = true, env = "RINGLEADER_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Give up on a node after this long: milliseconds, or with a unit (500ms, 5s).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_timeout)]
    timeout: Duration,
}

#[derive(Subcommand, Clone)]
enum FaultAction {
    /// Cut peer traffic between two sides (node ids, comma-separated), both ways: every node of
    /// one side drops what it would send to, or receives from, the other. Cuts add up.
    Partition {
        #[arg(value_parser = parse_ids)]
        side_a: NodeIds,
        #[arg(value_parser = parse_ids)]
        side_b: NodeIds,
    },
    /// Cut NODE from every other voter (a partition of {NODE} from the rest).
    Isolate { node: u64 },
    /// Hold every peer message NODE sends for DURATION (200ms, 1s) before it leaves; what NODE
    /// receives is not delayed. 0 removes the delay.
    Delay {
        node: u64,
        #[arg(value_parser = parse_delay)]
        duration: Duration,
    },
    /// Remove every rule from every node.
    Heal,
    /// Print every node's rules.
    Show,
}

/// Node ids, as given on the command line (`2,3`).
#[derive(Debug, Clone)]
struct NodeIds(Vec<u64>);

/// `1` or `2,3`.
fn parse_ids(text: &str) -> std::result::Result<NodeIds, String> {
    text.split(',')
        .map(|id| {
            id.trim()
                .parse::<u64>()
                .map_err(|_| format!("{id:?} is not a node id (give ids like 1 or 2,3)"))
        })
        .collect::<std::result::Result<Vec<u64>, String>>()
        .map(NodeIds)
}

/// `200ms`, `1s`, `0`.
fn parse_delay(text: &str) -> std::result::Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_timeout(text)
}

/// Why one node was not told.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("{0}")]
    Handshake(String),
    #[error(
        "the node did not prove knowledge of the cluster secret: is the secret file the one this \
         cluster was started with?"
    )]
    WrongSecret,
    #[error(
        "the node closed the connection during authentication (it has no cluster secret, or \
         refused the proof: a wrong secret file?)"
    )]
    ClosedDuringAuth,
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("undecodable answer: {0}")]
    Decode(String),
    #[error("refused: {0}")]
    Refused(String),
}

/// One authenticated admin connection to a node.
struct AdminConnection {
    stream: TcpStream,
    /// The node's id, as its handshake names it.
    node: u64,
}

impl AdminConnection {
    async fn open(addr: &str, secret: &ClusterSecret) -> Result<Self, AdminError> {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(AdminError::Connect)?;
        let nonce = auth::fresh_nonce();
        let mut opening = [0u8; HANDSHAKE_BYTES + auth::NONCE_BYTES];
        opening[..HANDSHAKE_BYTES].copy_from_slice(&Handshake::new(Role::Admin).encode());
        opening[HANDSHAKE_BYTES..].copy_from_slice(&nonce);
        stream.write_all(&opening).await?;
        let mut reply = [0u8; HANDSHAKE_BYTES];
        stream.read_exact(&mut reply).await?;
        let handshake =
            Handshake::decode(&reply).map_err(|e| AdminError::Handshake(e.to_string()))?;
        handshake
            .check_version()
            .map_err(|e| AdminError::Handshake(e.to_string()))?;
        let Role::Peer { node_id: node } = handshake.role else {
            return Err(AdminError::Handshake(format!(
                "answered as {:?}, not as a node",
                handshake.role
            )));
        };
        match auth::initiate_admin(&mut stream, secret, node, nonce).await {
            Ok(()) => Ok(AdminConnection { stream, node }),
            Err(AuthError::BadTag) => Err(AdminError::WrongSecret),
            Err(AuthError::Io(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(AdminError::ClosedDuringAuth)
            }
            Err(AuthError::Io(error)) => Err(AdminError::Io(error)),
            Err(other) => Err(AdminError::Handshake(other.to_string())),
        }
    }

    async fn call(&mut self, request: &AdminRequest) -> Result<FaultRules, AdminError> {
        let body = encode_frame(request).map_err(AdminError::Decode)?;
        let length =
            u32::try_from(body.len()).map_err(|_| AdminError::Decode("too long".into()))?;
        self.stream.write_all(&length.to_be_bytes()).await?;
        self.stream.write_all(&body).await?;
        let mut length = [0u8; 4];
        self.stream.read_exact(&mut length).await?;
        let length = u32::from_be_bytes(length) as usize;
        if length > MAX_ADMIN_FRAME_BYTES {
            return Err(AdminError::Decode(format!(
                "an answer of {length} bytes (the limit is {MAX_ADMIN_FRAME_BYTES})"
            )));
        }
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await?;
        match decode_frame::<AdminResponse>(&body).map_err(AdminError::Decode)? {
            AdminResponse::Faults(rules) => Ok(rules),
            AdminResponse::Refused { message } => Err(AdminError::Refused(message)),
        }
    }
}

/// Opens an authenticated connection and reads the node's rules, within `timeout`.
async fn reach(
    addr: &str,
    secret: &ClusterSecret,
    timeout: Duration,
) -> Result<(AdminConnection, FaultRules), AdminError> {
    tokio::time::timeout(timeout, async {
        let mut connection = AdminConnection::open(addr, secret).await?;
        let rules = connection.call(&AdminRequest::FaultShow).await?;
        Ok((connection, rules))
    })
    .await
    .map_err(|_| AdminError::Timeout(timeout))?
}

/// Where the cluster is: its nodes' addresses and the secret file; what `--endpoints` and
/// `--cluster-secret-file` do not say is taken from the `cluster up` directory.
fn locate(args: &FaultArgs) -> Result<(Vec<String>, PathBuf)> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CLUSTER_DIR));
    let endpoints = match &args.endpoints {
        Some(endpoints) => endpoints.clone(),
        None => crate::cluster::node_addresses(&dir).with_context(|| {
            "finding the cluster's nodes (give --dir DIR of `cluster up`, or --endpoints)"
        })?,
    };
    let secret = args
        .cluster_secret_file
        .clone()
        .unwrap_or_else(|| dir.join(auth::SECRET_FILE_NAME));
    Ok((endpoints, secret))
}

/// What each node (by id) must be told, after the rules were read from `voters`.
fn plan(action: &FaultAction, voters: &BTreeSet<u64>) -> Result<BTreeMap<u64, Vec<AdminRequest>>> {
    let check = |ids: &BTreeSet<u64>| -> Result<()> {
        if let Some(unknown) = ids.iter().find(|id| !voters.contains(id)) {
            bail!(
                "node {unknown} is not a voter of this cluster (voters: {})",
                join(voters)
            );
        }
        Ok(())
    };
    let cut = |a: BTreeSet<u64>, b: BTreeSet<u64>| -> Result<BTreeMap<u64, Vec<AdminRequest>>> {
        check(&a)?;
        check(&b)?;
        if a.is_empty() || b.is_empty() {
            bail!("both sides of a partition need at least one node");
        }
        if let Some(both) = a.intersection(&b).next() {
            bail!("node {both} is on both sides of the partition");
        }
        let mut told = BTreeMap::new();
        for (side, other) in [(&a, &b), (&b, &a)] {
            for node in side {
                told.insert(
                    *node,
                    vec![AdminRequest::FaultCut {
                        peers: other.iter().copied().collect(),
                    }],
                );
            }
        }
        Ok(told)
    };
    Ok(match action {
        FaultAction::Partition { side_a, side_b } => cut(
            side_a.0.iter().copied().collect(),
            side_b.0.iter().copied().collect(),
        )?,
        FaultAction::Isolate { node } => cut(
            [*node].into_iter().collect(),
            voters.iter().copied().filter(|v| v != node).collect(),
        )?,
        FaultAction::Delay { node, duration } => {
            check(&[*node].into_iter().collect())?;
            let delay_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
            [(*node, vec![AdminRequest::FaultDelay { delay_ms }])].into()
        }
        FaultAction::Heal => voters
            .iter()
            .map(|node| (*node, vec![AdminRequest::FaultHeal]))
            .collect(),
        FaultAction::Show => BTreeMap::new(),
    })
}

fn join(ids: &BTreeSet<u64>) -> String {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    ids.join(",")
}

fn describe(rules: &FaultRules) -> String {
    let mut parts = Vec::new();
    if !rules.cut.is_empty() {
        let cut: BTreeSet<u64> = rules.cut.iter().copied().collect();
        parts.push(format!("cut from {}", join(&cut)));
    }
    if rules.delay_ms > 0 {
        parts.push(format!("sends delayed {} ms", rules.delay_ms));
    }
    if parts.is_empty() {
        "no faults".to_string()
    } else {
        parts.join("; ")
    }
}

/// `ringleader fault ...`.
pub async fn run(args: FaultArgs) -> Result<ExitCode> {
    let (endpoints, secret_path) = locate(&args)?;
    let secret = ClusterSecret::from_file(&secret_path)
        .context("the cluster secret (give --dir DIR of `cluster up`, or --cluster-secret-file)")?;
    let timeout = args.timeout;
    let reached = futures::future::join_all(endpoints.iter().map(|addr| {
        let secret = secret.clone();
        async move { (addr.clone(), reach(addr, &secret, timeout).await) }
    }))
    .await;
    let mut failures: Vec<String> = Vec::new();
    let mut connections: BTreeMap<u64, (String, AdminConnection, FaultRules)> = BTreeMap::new();
    for (addr, result) in reached {
        match result {
            Ok((connection, rules)) => {
                connections.insert(connection.node, (addr, connection, rules));
            }
            Err(error) => failures.push(format!("{addr}: {error}")),
        }
    }
    let voters: BTreeSet<u64> = connections
        .values()
        .flat_map(|(_, _, rules)| rules.voters.iter().copied())
        .collect();
    if connections.is_empty() {
        for failure in &failures {
            eprintln!("{failure}");
        }
        return Err(anyhow!(
            "no node could be told ({} endpoint(s) tried)",
            endpoints.len()
        ));
    }
    let plan = plan(&args.action, &voters)?;
    let told = futures::future::join_all(connections.into_iter().map(
        |(node, (addr, mut connection, rules))| {
            let requests = plan.get(&node).cloned().unwrap_or_default();
            async move {
                let result = tokio::time::timeout(timeout, async {
                    let mut rules = rules;
                    for request in &requests {
                        rules = connection.call(request).await?;
                    }
                    Ok::<_, AdminError>(rules)
                })
                .await
                .map_err(|_| AdminError::Timeout(timeout))
                .and_then(|result| result);
                (node, addr, result)
            }
        },
    ))
    .await;
    let mut reached_nodes = BTreeSet::new();
    for (node, addr, result) in told {
        reached_nodes.insert(node);
        match result {
            Ok(rules) => println!("node {node} ({addr}): {}", describe(&rules)),
            Err(error) => failures.push(format!("node {node} ({addr}): {error}")),
        }
    }
    for node in plan.keys().filter(|node| !reached_nodes.contains(node)) {
        failures.push(format!(
            "node {node} was not reached (not among the endpoints, or down): not told"
        ));
    }
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for failure in &failures {
        eprintln!("{failure}");
    }
    Err(anyhow!("not every node could be told (the others were)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters() -> BTreeSet<u64> {
        [1, 2, 3].into_iter().collect()
    }

    fn cuts(plan: &BTreeMap<u64, Vec<AdminRequest>>, node: u64) -> Vec<u64> {
        match plan.get(&node).map(Vec::as_slice) {
            Some([AdminRequest::FaultCut { peers }]) => peers.clone(),
            other => panic!("node {node}: {other:?}"),
        }
    }

    #[test]
    fn a_partition_is_told_to_both_sides_and_isolate_cuts_one_node_from_the_rest() {
        let plan = plan(
            &FaultAction::Partition {
                side_a: NodeIds(vec![1]),
                side_b: NodeIds(vec![2, 3]),
            },
            &voters(),
        )
        .unwrap();
        assert_eq!(
            (cuts(&plan, 1), cuts(&plan, 2), cuts(&plan, 3)),
            (vec![2, 3], vec![1], vec![1])
        );
        let isolated = super::plan(&FaultAction::Isolate { node: 2 }, &voters()).unwrap();
        assert_eq!(
            (cuts(&isolated, 1), cuts(&isolated, 2), cuts(&isolated, 3)),
            (vec![2], vec![1, 3], vec![2])
        );
    }

    /// clap's own consistency checks (they run only in debug builds, at first parse).
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        crate::cli::Cli::command().debug_assert();
        assert!(parse_ids("2,x").is_err());
        assert_eq!(parse_ids("2,3").unwrap().0, vec![2, 3]);
    }

    #[test]
    fn bad_partitions_are_refused_before_any_node_is_told() {
        for (a, b) in [(vec![1], vec![1, 2]), (vec![1], vec![4]), (vec![], vec![2])] {
            let action = FaultAction::Partition {
                side_a: NodeIds(a),
                side_b: NodeIds(b),
            };
            assert!(plan(&action, &voters()).is_err());
        }
    }
}
