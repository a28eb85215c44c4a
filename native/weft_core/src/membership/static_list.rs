//! A static list: the members are the nodes configured (plus any joined
//! explicitly), and nothing is gossiped. Strangers are refused. The whole
//! overlay is this file: the peer table, dialing, backoff, collisions and
//! failure detection come from the rest of the core unchanged.

use super::{Cx, Effect, Membership};
use crate::spec::NodeSpec;
use crate::types::{DownReason, Millis};
use crate::wire::Refusal;
use std::collections::BTreeMap;

/// Keeps connections to a fixed set of nodes.
#[derive(Debug)]
pub struct StaticList {
    /// Name -> what is known of it (a contact until its handshake).
    members: BTreeMap<String, NodeSpec>,
    /// The list is handed to the peer table at the first timeout.
    started: bool,
    /// Members found running another overlay, dropped until then (ms):
    /// still in the list (they are admitted if they dial in, fixed), and
    /// kept again once the time has passed.
    parked: BTreeMap<String, Millis>,
}

/// How long a member found running another overlay is left alone before
/// it is dialed again, in milliseconds.
pub const PARKED_FOR: Millis = 30_000;

impl StaticList {
    /// Members `nodes` (contacts: incarnation 0 is fine).
    pub fn new(nodes: Vec<NodeSpec>) -> Self {
        StaticList {
            members: nodes.into_iter().map(|s| (s.name.clone(), s)).collect(),
            started: false,
            parked: BTreeMap::new(),
        }
    }
}

impl Membership for StaticList {
    fn join(&mut self, cx: &mut Cx<'_>, contact: NodeSpec) {
        if contact.name != cx.local.name {
            self.members.insert(contact.name.clone(), contact.clone());
            cx.push(Effect::Contact(contact));
        }
    }

    fn leave(&mut self, cx: &mut Cx<'_>) {
        self.members.clear();
        cx.push(Effect::Leave);
    }

    fn remove(&mut self, cx: &mut Cx<'_>, name: &str) {
        if self.members.remove(name).is_some() {
            cx.push(Effect::Drop {
                name: name.to_string(),
                reason: DownReason::Removed,
            });
        }
    }

    fn admit(&mut self, cx: &mut Cx<'_>, spec: &NodeSpec, _inbound: bool) -> Result<(), Refusal> {
        if spec.incarnation == 0 {
            return Err(Refusal::BadSpec("incarnation 0".into()));
        }
        if !self.members.contains_key(&spec.name) {
            // Not in the list: for good (the dialer stops, and `sync_join`
            // answers at once).
            return Err(Refusal::Detached);
        }
        self.members.insert(spec.name.clone(), spec.clone());
        self.parked.remove(&spec.name);
        cx.push(Effect::Keep(spec.clone()));
        Ok(())
    }

    fn on_dial_refused(
        &mut self,
        _cx: &mut Cx<'_>,
        _peer: &str,
        _refusal: &Refusal,
        _control: bool,
        _reason: &str,
    ) -> bool {
        false
    }

    fn on_peer_up(&mut self, _cx: &mut Cx<'_>, _peer: &str) {}

    fn on_peer_down(&mut self, _cx: &mut Cx<'_>, _peer: &str) {}

    fn on_message(&mut self, _cx: &mut Cx<'_>, _from: &str, _payload: &[u8]) {}

    fn on_timeout(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        let due: Vec<String> = self
            .parked
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.parked.remove(&name);
            if let Some(spec) = self.members.get(&name) {
                cx.push(Effect::Keep(spec.clone()));
            }
        }
        if !self.started {
            self.started = true;
            for spec in self.members.values() {
                cx.push(Effect::Keep(spec.clone()));
            }
        }
    }

    fn overlay(&self) -> (&'static str, u8) {
        ("static", 2)
    }

    fn forget(&mut self, cx: &mut Cx<'_>, name: &str) {
        if self.members.contains_key(name) {
            self.parked.insert(name.to_string(), cx.now + PARKED_FOR);
            cx.push(Effect::Drop {
                name: name.to_string(),
                reason: DownReason::other_overlay(),
            });
        }
    }

    fn next_deadline(&self) -> Option<Millis> {
        let parked = self.parked.values().min().copied();
        if !self.started {
            Some(0)
        } else {
            parked
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::lane::LaneKey;
    use crate::node::testing::spec;
    use crate::node::Node;
    use crate::types::Timing;

    #[test]
    fn dials_the_list_refuses_strangers_and_gossips_nothing() {
        let t = Timing::default();
        let mut a = Node::with_overlay(
            spec("x@h", 5, 1),
            t.clone(),
            1,
            Box::new(StaticList::new(vec![spec("b@h", 0, 2)])),
        );
        assert_eq!(a.next_deadline(), Some(0));
        a.on_timeout(0);
        let acts: Vec<Action> = std::iter::from_fn(|| a.poll_action()).collect();
        assert!(acts
            .iter()
            .any(|x| matches!(x, Action::Dial { peer, .. } if peer == "b@h")));
        let control = LaneKey::control();
        assert_eq!(
            a.on_hello(1, 1, &spec("c@h", 3, 3), &control),
            Err(Refusal::Detached)
        );
        // b's dial wins over ours (b's name is the smaller one)
        assert!(a.on_hello(1, 2, &spec("b@h", 7, 2), &control).is_ok());
        assert_eq!(a.up_peers(), ["b@h"]);
        let acts: Vec<Action> = std::iter::from_fn(|| a.poll_action()).collect();
        assert!(acts.iter().any(|x| matches!(x, Action::PeerUp { .. })));
        assert!(!acts.iter().any(|x| matches!(
            x,
            Action::Send {
                msg: crate::wire::Control::Membership(_),
                ..
            }
        )));
        // silent for longer than the timeout: down, by the same detector
        a.on_timeout(1 + t.heartbeat_timeout + 1);
        assert!(a.up_peers().is_empty());
    }

    /// A member found running another overlay is dropped, then dialed
    /// again once [`PARKED_FOR`] has passed: it stays in the list.
    #[test]
    fn a_member_of_another_overlay_is_parked_not_removed() {
        let t = Timing::default();
        let mut a = Node::with_overlay(
            spec("x@h", 5, 1),
            t,
            1,
            Box::new(StaticList::new(vec![spec("b@h", 0, 2)])),
        );
        a.on_timeout(0);
        crate::node::testing::drain(&mut a);
        let control = LaneKey::control();
        assert!(a.on_hello(1, 2, &spec("b@h", 7, 2), &control).is_ok());
        crate::node::testing::drain(&mut a);
        // a full-mesh message (tag 1) from a member of this static list
        a.on_control(2, "b@h", 2, crate::wire::Control::Membership(vec![1, 0]));
        let acts = crate::node::testing::drain(&mut a);
        assert!(acts
            .iter()
            .any(|x| matches!(x, Action::Unroute { peer } if peer == "b@h")));
        a.on_timeout(10_000);
        assert!(!crate::node::testing::drain(&mut a)
            .iter()
            .any(|x| matches!(x, Action::Dial { .. })));
        a.on_timeout(2 + PARKED_FOR);
        assert!(crate::node::testing::drain(&mut a)
            .iter()
            .any(|x| matches!(x, Action::Dial { peer, .. } if peer == "b@h")));
    }
}
