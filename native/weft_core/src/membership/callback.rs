//! A membership decided outside the core: a protocol written in Erlang
//! against the `weft_membership` behaviour (Partisan v3's "membership
//! DSL" idea: the protocol says who the members are and what to tell
//! whom; connections, lanes, heartbeats, reconnects and node events are
//! done for it, as for the built-in overlays).
//!
//! This half only relays. Everything that happens goes out as a
//! [`Notice`] (join and leave requests, peers up and down, the protocol's
//! messages from peers); the outside half answers, whenever it likes, with
//! a decision ([`Membership::on_decision`]): the members it wants
//! connections to, and messages to send (on the control channel, opaque
//! here). Members it adds are kept (dialed, redialed while down); members
//! it takes out are dropped. A node that dials this one is admitted if it
//! passed the handshake (it knows the cookie) and kept while it keeps the
//! connection: protocols with asymmetric views (Cyclon, SCAMP) need the
//! node that chose a neighbour to reach it, whether or not the neighbour
//! chose it back.

use super::{Cx, Effect, Membership, Notice};
use crate::spec::NodeSpec;
use crate::types::{DownReason, Millis};
use crate::wire::Refusal;
use std::collections::BTreeMap;

/// How long a node that refused this one for good (another overlay, or
/// not taking this node as a member) is not dialed again, whatever the
/// protocol decides, in milliseconds.
pub const REFUSED_FOR: Millis = 60_000;

/// The core's half of a membership written outside it.
#[derive(Debug)]
pub struct Callback {
    /// The members the outside half wants, by name.
    wanted: BTreeMap<String, NodeSpec>,
    /// Nodes that refused this one for good, and since when: left out of
    /// the protocol's decisions for [`REFUSED_FOR`] (the protocol is told
    /// they are down), so that a protocol that keeps naming them does not
    /// make the two flap.
    refused: BTreeMap<String, Millis>,
    /// The protocol's name (its Erlang module): every message carries it,
    /// so that nodes running different protocols tell each other apart.
    protocol: String,
    /// Most peers: a node that dials in past it is refused, unless the
    /// protocol wants it.
    max_members: usize,
}

impl Default for Callback {
    fn default() -> Self {
        Callback {
            wanted: BTreeMap::new(),
            refused: BTreeMap::new(),
            protocol: String::new(),
            max_members: super::full_mesh::DEFAULT_MAX_MEMBERS,
        }
    }
}

impl Callback {
    /// No members wanted yet; protocol name empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same, for the protocol named `protocol` (at most 255 bytes are
    /// used).
    pub fn with_protocol(protocol: &str) -> Self {
        let mut end = protocol.len().min(255);
        while !protocol.is_char_boundary(end) {
            end -= 1;
        }
        Callback {
            protocol: protocol[..end].to_string(),
            ..Self::default()
        }
    }

    /// Admit at most `n` peers that dial in (the protocol's own choices
    /// are not bounded here: its code is trusted, its peers are not).
    pub fn with_max_members(mut self, n: usize) -> Self {
        self.max_members = n;
        self
    }

    /// `name` refused this node for good: drop it, tell the protocol it is
    /// down, and leave it out of decisions for a while.
    /// Whether `name` is still left out at `now` (it refused this node for
    /// good less than [`REFUSED_FOR`] ago).
    fn left_out(&self, name: &str, now: Millis) -> bool {
        self.refused
            .get(name)
            .is_some_and(|since| now.saturating_sub(*since) < REFUSED_FOR)
    }

    fn refuse(&mut self, cx: &mut Cx<'_>, name: &str, reason: DownReason) {
        self.wanted.remove(name);
        self.refused.insert(name.to_string(), cx.now);
        cx.push(Effect::Drop {
            name: name.to_string(),
            reason,
        });
        cx.push(Effect::Notify(Notice::Down(name.to_string())));
    }
}

impl Membership for Callback {
    fn join(&mut self, cx: &mut Cx<'_>, contact: NodeSpec) {
        if contact.name != cx.local.name {
            cx.push(Effect::Notify(Notice::Join(contact)));
        }
    }

    fn leave(&mut self, cx: &mut Cx<'_>) {
        self.wanted.clear();
        cx.push(Effect::Leave);
        cx.push(Effect::Notify(Notice::Leave));
    }

    fn remove(&mut self, cx: &mut Cx<'_>, name: &str) {
        if name == cx.local.name {
            return self.leave(cx);
        }
        // Dropped here, the protocol told it is down, and left out of its
        // decisions and of the nodes that may dial in for REFUSED_FOR (it
        // came straight back before). The protocol decides the rest: other
        // nodes hear of it only through its own messages.
        self.refuse(cx, name, DownReason::Removed);
    }

    fn admit(&mut self, cx: &mut Cx<'_>, spec: &NodeSpec, inbound: bool) -> Result<(), Refusal> {
        if spec.incarnation == 0 {
            return Err(Refusal::BadSpec("incarnation 0".into()));
        }
        if inbound && spec.name == cx.local.name {
            return Err(Refusal::Unavailable);
        }
        if inbound && self.left_out(&spec.name, cx.now) {
            // Left out (another overlay, or dropped by the protocol).
            return Err(Refusal::Unavailable);
        }
        if !inbound && !self.wanted.contains_key(&spec.name) {
            // Taken out while dialing.
            return Err(Refusal::Unavailable);
        }
        if inbound
            && !self.wanted.contains_key(&spec.name)
            && !cx.peers.contains(&spec.name)
            && cx.peers.len() >= self.max_members
        {
            let n = self.max_members;
            cx.log(
                crate::types::Level::Warning,
                Some(&spec.name),
                format!("refused: this node has {n} peers (max_members)"),
            );
            return Err(Refusal::Unavailable);
        }
        if self.wanted.contains_key(&spec.name) {
            self.wanted.insert(spec.name.clone(), spec.clone());
        }
        cx.push(Effect::Keep(spec.clone()));
        Ok(())
    }

    fn on_dial_refused(
        &mut self,
        cx: &mut Cx<'_>,
        peer: &str,
        refusal: &Refusal,
        control: bool,
        _reason: &str,
    ) -> bool {
        match refusal {
            // Not taken as a member there (a static list, a client): for
            // good, as far as redialing goes.
            Refusal::Detached | Refusal::Left if control => {
                self.refuse(cx, peer, DownReason::Left);
                true
            }
            _ => false,
        }
    }

    fn on_peer_up(&mut self, cx: &mut Cx<'_>, peer: &str) {
        if let Some(spec) = cx.peers.spec(peer).cloned() {
            cx.push(Effect::Notify(Notice::Up(spec)));
        }
    }

    fn on_peer_down(&mut self, cx: &mut Cx<'_>, peer: &str) {
        cx.push(Effect::Notify(Notice::Down(peer.to_string())));
        if !self.wanted.contains_key(peer) {
            // It dialed us and is gone: nobody here wants it redialed.
            cx.push(Effect::Drop {
                name: peer.to_string(),
                reason: DownReason::ConnectionClosed("closed by peer".into()),
            });
        }
    }

    fn on_message(&mut self, cx: &mut Cx<'_>, from: &str, payload: &[u8]) {
        // protocol name length: u8 | the name | the protocol's message
        let Some((&n, rest)) = payload.split_first() else {
            return cx.malformed(from, NO_PROTOCOL_NAME);
        };
        let n = usize::from(n);
        if rest.len() < n {
            return cx.malformed(from, NO_PROTOCOL_NAME);
        }
        let (theirs, body) = rest.split_at(n);
        if theirs != self.protocol.as_bytes() {
            cx.log(
                crate::types::Level::Warning,
                Some(from),
                format!(
                    "not a member: it runs membership protocol {:?}, this node {:?}",
                    String::from_utf8_lossy(theirs),
                    self.protocol
                ),
            );
            self.refuse(
                cx,
                from,
                DownReason::ConnectionClosed("it runs another membership protocol".into()),
            );
            return;
        }
        cx.push(Effect::Notify(Notice::Message {
            from: from.to_string(),
            payload: body.to_vec(),
        }));
    }

    fn on_timeout(&mut self, _cx: &mut Cx<'_>) {}

    fn overlay(&self) -> (&'static str, u8) {
        ("callback", 4)
    }

    fn forget(&mut self, cx: &mut Cx<'_>, name: &str) {
        self.refuse(cx, name, DownReason::other_overlay());
    }

    fn next_deadline(&self) -> Option<Millis> {
        None
    }

    fn on_decision(
        &mut self,
        cx: &mut Cx<'_>,
        members: Vec<NodeSpec>,
        messages: Vec<(String, Vec<u8>)>,
    ) {
        let now = cx.now;
        self.refused
            .retain(|_, since| now.saturating_sub(*since) < REFUSED_FOR);
        let mut next: BTreeMap<String, NodeSpec> = BTreeMap::new();
        for spec in members {
            if spec.name != cx.local.name && !self.left_out(&spec.name, now) {
                next.insert(spec.name.clone(), spec);
            }
        }
        for name in self.wanted.keys() {
            if !next.contains_key(name) {
                cx.push(Effect::Drop {
                    name: name.clone(),
                    reason: DownReason::Dropped,
                });
            }
        }
        for (name, spec) in next.iter_mut() {
            match self.wanted.get(name) {
                // Known already: keep what the handshake told (a real
                // incarnation) over a contact the protocol passed on.
                Some(known) if spec.incarnation == 0 => *spec = known.clone(),
                Some(_) => {}
                None => cx.push(Effect::Contact(spec.clone())),
            }
        }
        self.wanted = next;
        for (to, payload) in messages {
            let mut tagged = Vec::with_capacity(1 + self.protocol.len() + payload.len());
            tagged.push(self.protocol.len() as u8);
            tagged.extend_from_slice(self.protocol.as_bytes());
            tagged.extend_from_slice(&payload);
            cx.push(Effect::Send {
                to,
                payload: tagged,
            });
        }
    }
}

const NO_PROTOCOL_NAME: &str = "callback message without its protocol name";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::lane::LaneKey;
    use crate::node::testing::{drain as actions, spec};
    use crate::node::Node;
    use crate::types::Timing;

    /// Nodes that dial in are admitted up to `max_members` peers; past it
    /// they are refused (a peer with the cookie could otherwise make up
    /// any number of names), unless the protocol wants them.
    #[test]
    fn nodes_that_dial_in_are_bounded_by_max_members() {
        let t = Timing::default();
        let cb = Callback::with_protocol("p").with_max_members(2);
        let mut a = Node::with_overlay(spec("a@h", 1, 1), t, 1, Box::new(cb));
        let control = LaneKey::control();
        assert!(a.on_hello(1, 1, &spec("b@h", 3, 2), &control).is_ok());
        assert!(a.on_hello(1, 2, &spec("c@h", 3, 3), &control).is_ok());
        assert_eq!(
            a.on_hello(1, 3, &spec("d@h", 3, 4), &control),
            Err(Refusal::Unavailable)
        );
        assert!(actions(&mut a).iter().any(|x| matches!(x,
            Action::Log { text, .. } if text.contains("max_members"))));
        // the protocol's own choice is not bounded here
        // (named before a@h, so that its dial, not a's, is the one kept)
        a.membership_decision(2, vec![spec("Ae@h", 0, 5)], vec![]);
        actions(&mut a);
        let r = a.on_hello(3, 4, &spec("Ae@h", 3, 5), &control);
        assert!(r.is_ok(), "{r:?}");
    }

    /// `leave(Node)` on the callback overlay drops the node here, tells
    /// the protocol, and keeps it from dialing back in for REFUSED_FOR.
    #[test]
    fn a_removed_node_stays_out_for_a_while() {
        let t = Timing::default();
        let mut a = Node::with_overlay(
            spec("a@h", 1, 1),
            t,
            1,
            Box::new(Callback::with_protocol("p")),
        );
        let control = LaneKey::control();
        assert!(a.on_hello(1, 1, &spec("b@h", 3, 2), &control).is_ok());
        actions(&mut a);
        a.remove(2, "b@h");
        let acts = actions(&mut a);
        assert!(acts
            .iter()
            .any(|x| matches!(x, Action::Membership(Notice::Down(n)) if n == "b@h")));
        assert!(a.peers().next().is_none());
        assert_eq!(
            a.on_hello(3, 2, &spec("b@h", 3, 2), &control),
            Err(Refusal::Unavailable)
        );
        assert!(a
            .on_hello(3 + REFUSED_FOR, 3, &spec("b@h", 3, 2), &control)
            .is_ok());
    }

    #[test]
    fn notices_go_out_and_decisions_come_in() {
        let t = Timing::default();
        let mut a = Node::with_overlay(spec("a@h", 1, 1), t.clone(), 1, Box::new(Callback::new()));
        // join: only told to the outside half
        a.join(0, spec("b@h", 0, 2));
        let acts = actions(&mut a);
        assert!(acts
            .iter()
            .any(|x| matches!(x, Action::Membership(Notice::Join(s)) if s.name == "b@h")));
        assert!(!acts.iter().any(|x| matches!(x, Action::Dial { .. })));
        // a decision: b is a member (dialed), a message goes to it
        a.membership_decision(0, vec![spec("b@h", 0, 2)], vec![("b@h".into(), vec![7])]);
        let acts = actions(&mut a);
        assert!(acts
            .iter()
            .any(|x| matches!(x, Action::Dial { peer, .. } if peer == "b@h")));
        assert!(acts
            .iter()
            .any(|x| matches!(x, Action::Send { peer, .. } if peer == "b@h")));
        // c dials in: admitted (it knows the cookie), and up is told
        let control = LaneKey::control();
        assert!(a.on_hello(1, 1, &spec("c@h", 3, 3), &control).is_ok());
        let acts = actions(&mut a);
        assert!(acts
            .iter()
            .any(|x| matches!(x, Action::Membership(Notice::Up(s)) if s.name == "c@h")));
        // a message from c is told as it came
        a.on_control(
            2,
            "c@h",
            1,
            crate::wire::Control::Membership(vec![4, 0, 1, 2]),
        );
        assert!(actions(&mut a).iter().any(|x| matches!(
            x,
            Action::Membership(Notice::Message { from, payload }) if from == "c@h" && payload == &[1, 2]
        )));
        // b taken out: dropped
        a.membership_decision(3, vec![], vec![]);
        let acts = actions(&mut a);
        assert!(
            acts.iter()
                .any(|x| matches!(x, Action::Unroute { peer } if peer == "b@h")),
            "{acts:?}"
        );
    }

    #[test]
    fn a_node_that_refuses_for_good_is_left_out_of_decisions_for_a_while() {
        let t = Timing::default();
        let mut a = Node::with_overlay(spec("a@h", 1, 1), t.clone(), 1, Box::new(Callback::new()));
        a.membership_decision(0, vec![spec("b@h", 0, 2)], vec![]);
        let attempt = actions(&mut a)
            .iter()
            .find_map(|x| match x {
                Action::Dial { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .unwrap();
        a.on_dial_failed(
            1,
            "b@h",
            &LaneKey::control(),
            attempt,
            Some(Refusal::Detached),
            "refused",
        );
        let acts = actions(&mut a);
        assert!(acts
            .iter()
            .any(|x| matches!(x, Action::Membership(Notice::Down(n)) if n == "b@h")));
        // the protocol names it again: not dialed, until REFUSED_FOR passed
        a.membership_decision(10, vec![spec("b@h", 0, 2)], vec![]);
        a.on_timeout(5_000);
        assert!(!actions(&mut a)
            .iter()
            .any(|x| matches!(x, Action::Dial { .. })));
        // nor let in when it dials
        assert_eq!(
            a.on_hello(6_000, 9, &spec("b@h", 3, 2), &LaneKey::control()),
            Err(Refusal::Unavailable)
        );
        a.membership_decision(1 + REFUSED_FOR, vec![spec("b@h", 0, 2)], vec![]);
        assert!(actions(&mut a)
            .iter()
            .any(|x| matches!(x, Action::Dial { peer, .. } if peer == "b@h")));
    }

    #[test]
    fn nodes_running_different_protocols_refuse_each_other() {
        let t = Timing::default();
        let mut a = Node::with_overlay(
            spec("a@h", 1, 1),
            t.clone(),
            1,
            Box::new(Callback::with_protocol("weft_cyclon")),
        );
        // its own messages carry its name
        a.on_hello(0, 1, &spec("c@h", 3, 3), &LaneKey::control())
            .unwrap();
        actions(&mut a);
        a.membership_decision(1, vec![], vec![("c@h".into(), vec![9])]);
        let sent: Vec<Vec<u8>> = actions(&mut a)
            .into_iter()
            .filter_map(|x| match x {
                Action::Send {
                    msg: crate::wire::Control::Membership(m),
                    ..
                } => Some(m),
                _ => None,
            })
            .collect();
        let mut want = vec![4, 11];
        want.extend_from_slice(b"weft_cyclon");
        want.push(9);
        assert_eq!(sent, [want]);
        // a message of another protocol: refused, told as down
        let mut other = vec![4, 5];
        other.extend_from_slice(b"other");
        other.push(1);
        a.on_control(2, "c@h", 1, crate::wire::Control::Membership(other));
        let acts = actions(&mut a);
        assert!(
            acts.iter()
                .any(|x| matches!(x, Action::Membership(Notice::Down(n)) if n == "c@h")),
            "{acts:?}"
        );
        assert!(!acts
            .iter()
            .any(|x| matches!(x, Action::Membership(Notice::Message { .. }))));
    }
}
