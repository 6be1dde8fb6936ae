//! Which Raft group a request or a peer message belongs to, and whether this node hosts it.
//!
//! Both doors of a node go through the router: the client service asks it where a request
//! goes ([`Router::route`]: the key's shard on the consistent-hash ring, hosted here or
//! elsewhere), and peer serving asks it whether a peer's envelope is for a group hosted here.
//! A request routed by a client with another ring epoch than the node's is refused with the
//! node's ring ([`Response::RingChanged`]), so the client routes again by it; a request without
//! an epoch (a client that does not know the ring) is routed by the node.

use std::collections::BTreeSet;

use ringleader_protocol::ring::Ring;
use ringleader_protocol::{ErrorKind, GroupId, Header, Request, Response};

/// Maps keys to groups and knows the groups this node hosts.
#[derive(Debug, Clone)]
pub struct Router {
    ring: Ring,
    hosted: BTreeSet<GroupId>,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To this node's replica of the group.
    Local(GroupId),
    /// To another node: this one holds no replica of the group.
    Remote(GroupId),
}

impl Route {
    /// The group the request is for.
    pub fn group(self) -> GroupId {
        match self {
            Route::Local(group) | Route::Remote(group) => group,
        }
    }
}

impl Router {
    /// The router of node `id` on `ring`.
    pub fn new(ring: Ring, id: u64) -> Router {
        let hosted = ring.groups_on(id).into_iter().collect();
        Router { ring, hosted }
    }

    /// The ring it routes by.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The group that holds `key`.
    pub fn group_for_key(&self, key: &[u8]) -> GroupId {
        self.ring.shard_for_key(key)
    }

    /// Whether this node hosts a replica of `group`.
    pub fn hosts(&self, group: GroupId) -> bool {
        self.hosted.contains(&group)
    }

    /// Where `request`, sent with `header`, goes (`Status` is always answered here, for all
    /// the node's groups); else the answer that refuses it: the node's ring when the request
    /// was routed by another epoch, an `Invalid` error when it names a group that does not
    /// hold its key or does not exist.
    pub fn route(&self, header: &Header, request: &Request) -> Result<Route, Response> {
        if matches!(request, Request::Status) {
            return Ok(Route::Local(header.group));
        }
        let routed_by_client = header.epoch != 0;
        if routed_by_client && header.epoch != self.ring.epoch() {
            return Err(Response::RingChanged {
                ring: self.ring.spec().clone(),
            });
        }
        let group = match request_key(request) {
            Some(key) => {
                let group = self.group_for_key(key);
                if routed_by_client && header.group != group {
                    return Err(invalid(format!(
                        "the key belongs to group {group} at ring epoch {}, not to group {}",
                        self.ring.epoch(),
                        header.group
                    )));
                }
                group
            }
            // Requests without a key (a session's registration, a scan) are for the header's.
            None => header.group,
        };
        if self.ring.shard(group).is_none() {
            return Err(invalid(format!(
                "unknown group {group}: the ring at epoch {} has groups 0..{}",
                self.ring.epoch(),
                self.ring.shards().len()
            )));
        }
        Ok(if self.hosts(group) {
            Route::Local(group)
        } else {
            Route::Remote(group)
        })
    }
}

fn invalid(message: String) -> Response {
    Response::Error {
        kind: ErrorKind::Invalid,
        message,
    }
}

/// The key a request reads or writes, if it has one.
fn request_key(request: &Request) -> Option<&[u8]> {
    match request {
        Request::Get { key, .. }
        | Request::Put { key, .. }
        | Request::Delete { key, .. }
        | Request::Cas { key, .. } => Some(key),
        Request::RegisterSession | Request::Status | Request::Scan { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ringleader_protocol::ring::RingSpec;
    use ringleader_protocol::ReadConsistency;

    use super::*;

    fn get(key: &[u8]) -> Request {
        Request::Get {
            key: key.to_vec(),
            consistency: ReadConsistency::Linearizable,
        }
    }

    /// A ring of `nodes` nodes, `shards` shards of 3 replicas.
    fn ring(nodes: u64, shards: u32) -> Ring {
        let nodes: BTreeMap<u64, String> = (1..=nodes).map(|id| (id, format!("n{id}:1"))).collect();
        Ring::new(RingSpec {
            replicas: 3,
            ..RingSpec::new(nodes, shards)
        })
        .expect("ring")
    }

    #[test]
    fn one_shard_on_every_node_routes_every_request_to_group_0_here() {
        let router = Router::new(ring(3, 1), 2);
        let header = Header::default();
        assert_eq!(router.route(&header, &get(b"a")), Ok(Route::Local(0)));
        assert_eq!(
            router.route(&header, &Request::RegisterSession),
            Ok(Route::Local(0))
        );
        assert_eq!(router.route(&header, &Request::Status), Ok(Route::Local(0)));
        assert!(router.hosts(0) && !router.hosts(1));
    }

    #[test]
    fn keys_route_to_their_shard_local_or_remote_as_the_ring_places_it() {
        let ring = ring(5, 8);
        for node in 1..=5 {
            let router = Router::new(ring.clone(), node);
            for i in 0..200 {
                let key = format!("key{i}").into_bytes();
                let group = ring.shard_for_key(&key);
                let hosted = ring.groups_on(node).contains(&group);
                let expected = if hosted {
                    Route::Local(group)
                } else {
                    Route::Remote(group)
                };
                assert_eq!(router.route(&Header::default(), &get(&key)), Ok(expected));
            }
        }
    }

    #[test]
    fn a_request_routed_by_another_epoch_gets_the_current_ring() {
        let ring = ring(5, 8);
        let router = Router::new(ring.clone(), 1);
        let stale = Header {
            group: 0,
            epoch: ring.epoch() + 1,
        };
        assert_eq!(
            router.route(&stale, &get(b"a")),
            Err(Response::RingChanged {
                ring: ring.spec().clone()
            })
        );
    }

    #[test]
    fn a_key_sent_to_the_wrong_group_or_a_group_off_the_ring_is_refused() {
        let ring = ring(5, 8);
        let router = Router::new(ring.clone(), 1);
        let group = ring.shard_for_key(b"a");
        let wrong = Header {
            group: (group + 1) % 8,
            epoch: ring.epoch(),
        };
        let refusal = router.route(&wrong, &get(b"a")).unwrap_err();
        assert!(
            matches!(&refusal, Response::Error { kind: ErrorKind::Invalid, message } if message.contains(&format!("belongs to group {group}"))),
            "{refusal:?}"
        );
        let off = Header { group: 8, epoch: 0 };
        let refusal = router.route(&off, &Request::RegisterSession).unwrap_err();
        assert!(
            matches!(&refusal, Response::Error { message, .. } if message.contains("unknown group 8")),
            "{refusal:?}"
        );
    }
}
