//! Fault rules an operator sets on a running node (`ringleader fault ...`), for experiments on a
//! real local cluster: cut the node off from some peers, or delay what it sends them.
//!
//! Only a node started with `--allow-faults` has an [`InjectedFaults`]; without it there is none
//! (`None`), the admin requests are refused, and the peer paths pay one `Option` check. The
//! rules plug into the same seam the simulation uses ([`crate::faults::TransportFaults`]) for
//! what the node sends, and into the service for what it receives (a cut is dropped both ways,
//! so a partition told to both sides holds even while one side has not been told yet). Client
//! traffic never passes here: clients on either side of a cut keep reaching their node, which
//! is the point of the experiment. The rules live in memory only: a restarted node has none.

use std::collections::BTreeSet;
use std::sync::RwLock;
use std::time::Duration;

use consensus::{Message, NodeId};
use ringleader_protocol::admin::{AdminRequest, AdminResponse, FaultRules};

use crate::faults::TransportFaults;

/// The longest delay a rule may set: longer would only fill the bounded delayed-message pool
/// ([`crate::faults::MAX_DELAYED_MESSAGES`]; copies beyond it are dropped) and make no point a
/// lost message does not make.
pub const MAX_DELAY_MS: u64 = 60_000;

#[derive(Debug, Default)]
struct Rules {
    cut: BTreeSet<NodeId>,
    delay: Duration,
}

/// One node's fault rules, shared by its peer senders and its service.
#[derive(Debug)]
pub struct InjectedFaults {
    self_id: NodeId,
    voters: BTreeSet<NodeId>,
    rules: RwLock<Rules>,
}

impl InjectedFaults {
    /// No rules yet, for node `self_id` of `voters` (itself included).
    pub fn new(self_id: NodeId, voters: BTreeSet<NodeId>) -> Self {
        InjectedFaults {
            self_id,
            voters,
            rules: RwLock::new(Rules::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Rules> {
        // The rules are plain data, consistent after every write: a poisoned lock still holds
        // a valid value.
        self.rules
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether messages from `peer` are dropped on arrival.
    pub fn cuts(&self, peer: NodeId) -> bool {
        self.read().cut.contains(&peer)
    }

    /// Applies an operator's request; the answer carries the rules now in force.
    pub fn apply(&self, request: &AdminRequest) -> AdminResponse {
        {
            let mut rules = self
                .rules
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match request {
                AdminRequest::FaultCut { peers } => {
                    if let Some(unknown) = peers.iter().find(|p| !self.voters.contains(p)) {
                        return refused(format!(
                            "node {unknown} is not a voter of this cluster (voters: {})",
                            join(&self.voters)
                        ));
                    }
                    if peers.contains(&self.self_id) {
                        return refused(format!("node {} cannot be cut from itself", self.self_id));
                    }
                    rules.cut.extend(peers.iter().copied());
                }
                AdminRequest::FaultDelay { delay_ms } => {
                    if *delay_ms > MAX_DELAY_MS {
                        return refused(format!(
                            "a delay of {delay_ms} ms is above the limit of {MAX_DELAY_MS} ms"
                        ));
                    }
                    rules.delay = Duration::from_millis(*delay_ms);
                }
                AdminRequest::FaultHeal => *rules = Rules::default(),
                AdminRequest::FaultShow => {}
            }
            if !matches!(request, AdminRequest::FaultShow) {
                tracing::warn!(
                    cut = %join(&rules.cut),
                    delay_ms = rules.delay.as_millis() as u64,
                    "fault rules changed by an operator (--allow-faults)"
                );
            }
        }
        AdminResponse::Faults(self.show())
    }

    /// The rules in force.
    pub fn show(&self) -> FaultRules {
        let rules = self.read();
        FaultRules {
            node: self.self_id,
            voters: self.voters.iter().copied().collect(),
            cut: rules.cut.iter().copied().collect(),
            delay_ms: rules.delay.as_millis() as u64,
        }
    }
}

fn refused(message: String) -> AdminResponse {
    AdminResponse::Refused { message }
}

fn join(ids: &BTreeSet<NodeId>) -> String {
    let ids: Vec<String> = ids.iter().map(NodeId::to_string).collect();
    ids.join(",")
}

impl TransportFaults for InjectedFaults {
    /// Dropped when its destination is cut off, else one copy after the delay (zero: at once).
    fn fate(&self, message: &Message) -> Vec<Duration> {
        let rules = self.read();
        if rules.cut.contains(&message.to) {
            Vec::new()
        } else {
            vec![rules.delay]
        }
    }

    /// An operator's rules never stop the clock.
    fn clock_stopped(&self, _node: NodeId) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use consensus::MessageBody;

    use super::*;

    fn to(node: NodeId) -> Message {
        Message {
            from: 1,
            to: node,
            term: 1,
            body: MessageBody::TimeoutNow,
        }
    }

    #[test]
    fn cuts_add_up_drop_both_ways_and_heal_clears_everything() {
        let faults = InjectedFaults::new(1, [1, 2, 3].into_iter().collect());
        assert_eq!(faults.fate(&to(2)), vec![Duration::ZERO]);
        faults.apply(&AdminRequest::FaultCut { peers: vec![2] });
        faults.apply(&AdminRequest::FaultCut { peers: vec![3] });
        faults.apply(&AdminRequest::FaultDelay { delay_ms: 200 });
        assert!(faults.fate(&to(2)).is_empty() && faults.fate(&to(3)).is_empty());
        assert!(faults.cuts(2) && faults.cuts(3));
        let AdminResponse::Faults(rules) = faults.apply(&AdminRequest::FaultShow) else {
            panic!("shown")
        };
        assert_eq!((rules.cut, rules.delay_ms), (vec![2, 3], 200));
        faults.apply(&AdminRequest::FaultHeal);
        assert_eq!(faults.fate(&to(2)), vec![Duration::ZERO]);
        assert!(!faults.cuts(2));
    }

    #[test]
    fn a_delay_holds_every_copy_and_a_bad_rule_changes_nothing() {
        let faults = InjectedFaults::new(1, [1, 2, 3].into_iter().collect());
        faults.apply(&AdminRequest::FaultDelay { delay_ms: 200 });
        assert_eq!(faults.fate(&to(3)), vec![Duration::from_millis(200)]);
        for bad in [
            AdminRequest::FaultCut { peers: vec![2, 9] },
            AdminRequest::FaultCut { peers: vec![1] },
            AdminRequest::FaultDelay {
                delay_ms: MAX_DELAY_MS + 1,
            },
        ] {
            assert!(
                matches!(faults.apply(&bad), AdminResponse::Refused { .. }),
                "{bad:?}"
            );
        }
        assert!(!faults.cuts(2), "a refused cut cut nothing");
        assert_eq!(faults.show().delay_ms, 200);
    }
}
