//! Which Raft group a request or a peer message belongs to, and whether this node hosts it.
//!
//! Both doors of a node go through the router: the client service asks it which group a
//! request's key lives in (and refuses a request routed to a group that is not the key's), and
//! peer serving asks it whether a peer's envelope is for a group hosted here. Today every key
//! lives in group [`ONLY_GROUP`] and every node hosts it; sharding replaces
//! [`Router::group_for_key`] with a consistent-hash ring and gives the router an epoch that
//! changes when the ring does.

use std::collections::BTreeSet;

use ringleader_protocol::{GroupId, Header, Request, ONLY_GROUP};

/// Maps keys to groups and knows the groups this node hosts.
#[derive(Debug, Clone)]
pub struct Router {
    hosted: BTreeSet<GroupId>,
}

impl Router {
    /// The router of a node that hosts the one group there is today.
    pub fn single_group() -> Router {
        Router {
            hosted: BTreeSet::from([ONLY_GROUP]),
        }
    }

    /// The group that holds `key`.
    pub fn group_for_key(&self, _key: &[u8]) -> GroupId {
        ONLY_GROUP
    }

    /// Whether this node hosts a replica of `group`.
    pub fn hosts(&self, group: GroupId) -> bool {
        self.hosted.contains(&group)
    }

    /// The group `request`, sent with `header`, is for (`Status` too: the node answers it, for
    /// all its groups); the refusal's message if it was routed to a
    /// group that does not hold its key, or that this node does not host.
    pub fn route(&self, header: &Header, request: &Request) -> Result<GroupId, String> {
        let group = match request_key(request) {
            Some(key) => self.group_for_key(key),
            // Requests without a key (status, a session's registration) are for the header's.
            None => header.group,
        };
        if header.group != group || !self.hosts(group) {
            return Err(format!(
                "unknown group {}: this node serves group {ONLY_GROUP} only",
                header.group
            ));
        }
        Ok(group)
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
    use ringleader_protocol::ReadConsistency;

    use super::*;

    fn get(key: &[u8]) -> Request {
        Request::Get {
            key: key.to_vec(),
            consistency: ReadConsistency::Linearizable,
        }
    }

    #[test]
    fn every_request_routes_to_the_only_group() {
        let router = Router::single_group();
        let header = Header::default();
        assert_eq!(router.route(&header, &get(b"a")), Ok(0));
        assert_eq!(router.route(&header, &Request::RegisterSession), Ok(0));
        assert_eq!(router.route(&header, &Request::Status), Ok(0));
        assert!(router.hosts(ONLY_GROUP) && !router.hosts(1));
    }

    #[test]
    fn a_request_routed_to_another_group_is_refused() {
        let router = Router::single_group();
        let elsewhere = Header { group: 3, epoch: 0 };
        for request in [get(b"a"), Request::RegisterSession, Request::Status] {
            let refusal = router.route(&elsewhere, &request).unwrap_err();
            assert!(refusal.contains("unknown group 3"), "{refusal}");
        }
    }
}
