//! Client-server: servers connect to every member, clients only to the
//! servers, and clients never to each other (Partisan's client-server peer
//! service manager; Meiklejohn et al., "Partisan", USENIX ATC 2019). A
//! message from one client to another goes through a server, which relays
//! it (the frame carries its destination node; the transport does the
//! relaying).
//!
//! Who the members are spreads as in the full mesh: this is the full mesh's
//! anti-entropy gossip ([`FullMesh`]) with a filter on its effects, plus who
//! the servers are. Every membership message carries the set of servers its
//! sender knows (itself included when it is one) in front of the full
//! mesh's own message, so a client learns which members it should connect
//! to as it learns of them:
//!
//! ```text
//! message: role: u8 (0 client, 1 server) | count: u16 | count x str8 server name | full mesh message
//! ```
//!
//! On a client, the full mesh's "keep connections to X" is carried out only
//! for servers; other members are remembered (so one that turns out to be a
//! server is connected to then) but not connected to, and a client refuses
//! a connection from a node it does not know to be a server. A node joins
//! through a server: the contact given to `join` is taken for one until it
//! says what it is (and if it is a client, a client drops it). Only
//! servers' lists of servers are believed, and only servers this node knows
//! from them (or from the server itself) are passed on. On a server every
//! effect passes.

use super::full_mesh::FullMesh;
use super::{Cx, Effect, Membership};
use crate::frame::FrameError;
use crate::spec::{valid_node_name, NodeSpec};
use crate::types::{DownReason, Millis};
use crate::wire::{put_str8, Reader, Refusal};
use std::collections::{BTreeMap, BTreeSet};

/// A node's role in the client-server overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Connects to the servers only.
    Client,
    /// Connects to every member.
    Server,
}

/// The client-server membership.
#[derive(Debug)]
pub struct ClientServer {
    role: Role,
    mesh: FullMesh,
    /// Servers known (this node too, if it is one): each said so itself,
    /// or a server said so. Only these are passed on to others.
    servers: BTreeSet<String>,
    /// Contacts given to `join`, taken for servers here until they say
    /// what they are (never passed on: a mistaken join stays local).
    assumed: BTreeSet<String>,
    /// Clients only: members the full mesh wants kept that are not known to
    /// be servers, held until they are (or dropped).
    held: BTreeMap<String, NodeSpec>,
}

impl ClientServer {
    /// A node of `role`, its members spread by `mesh`.
    pub fn new(role: Role, mesh: FullMesh) -> Self {
        ClientServer {
            role,
            mesh,
            servers: BTreeSet::new(),
            assumed: BTreeSet::new(),
            held: BTreeMap::new(),
        }
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The servers known, this node included if it is one.
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(String::as_str)
    }

    /// Run `f` on the full mesh, then carry out its effects through the
    /// client-server filter.
    fn mesh<R>(&mut self, cx: &mut Cx<'_>, f: impl FnOnce(&mut FullMesh, &mut Cx<'_>) -> R) -> R {
        let mut out = Vec::new();
        let r = {
            let mut inner = Cx {
                now: cx.now,
                local: cx.local,
                peers: cx.peers,
                rng: cx.rng,
                out: &mut out,
            };
            f(&mut self.mesh, &mut inner)
        };
        for e in out {
            self.carry_out(cx, e);
        }
        r
    }

    fn carry_out(&mut self, cx: &mut Cx<'_>, e: Effect) {
        match e {
            Effect::Keep(spec) | Effect::Learned(spec)
                if self.role == Role::Client && !self.is_server(&spec.name) =>
            {
                self.held.insert(spec.name.clone(), spec);
            }
            Effect::Drop { ref name, .. } => {
                self.held.remove(name);
                self.servers.remove(name);
                self.assumed.remove(name);
                cx.push(e);
            }
            Effect::Send { to, payload } => {
                let payload = self.wrap(cx.local, &payload);
                cx.push(Effect::Send { to, payload });
            }
            Effect::Leave => {
                self.held.clear();
                self.servers.clear();
                self.assumed.clear();
                cx.push(Effect::Leave);
            }
            other => cx.push(other),
        }
    }

    fn wrap(&mut self, local: &NodeSpec, inner: &[u8]) -> Vec<u8> {
        if self.role == Role::Server {
            self.servers.insert(local.name.clone());
        }
        let mut out = Vec::with_capacity(3 + 16 * self.servers.len() + inner.len());
        out.push(match self.role {
            Role::Client => 0,
            Role::Server => 1,
        });
        let n = self.servers.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(n as u16).to_be_bytes());
        for s in self.servers.iter().take(n) {
            put_str8(&mut out, s);
        }
        out.extend_from_slice(inner);
        out
    }

    /// Known or taken for a server.
    fn is_server(&self, name: &str) -> bool {
        self.servers.contains(name) || self.assumed.contains(name)
    }

    /// `name` is a server: a client keeps connections to it from now on.
    fn learn_server(&mut self, cx: &mut Cx<'_>, name: &str) {
        self.assumed.remove(name);
        if name == cx.local.name || !self.servers.insert(name.to_string()) {
            return;
        }
        if let Some(spec) = self.held.remove(name) {
            cx.push(Effect::Keep(spec));
        }
    }
}

/// A client-server message's own part: the sender's role and the servers
/// it knows; the rest is the full mesh's message.
fn unwrap(payload: &[u8]) -> Result<(Role, Vec<String>, &[u8]), FrameError> {
    let mut r = Reader::new("client-server message", payload);
    let role = match r.u8()? {
        0 => Role::Client,
        1 => Role::Server,
        _ => return Err(malformed("unknown role")),
    };
    let n = r.u16()? as usize;
    // Each name takes at least 2 bytes: a claimed count is checked against
    // the bytes present before anything is allocated.
    let n = r.count(n, 2)?;
    let mut servers = Vec::with_capacity(n);
    for _ in 0..n {
        let s = r.str8()?;
        if !valid_node_name(&s) {
            return Err(malformed("bad server name"));
        }
        servers.push(s);
    }
    let rest = r.remaining();
    Ok((role, servers, r.bytes(rest)?))
}

fn malformed(detail: &str) -> FrameError {
    FrameError::Malformed {
        what: "client-server message",
        detail: detail.into(),
    }
}

impl Membership for ClientServer {
    fn join(&mut self, cx: &mut Cx<'_>, contact: NodeSpec) {
        // A node joins through a server: it is taken for one (its messages
        // confirm it), so its connections are kept and admitted.
        if contact.name != cx.local.name && !self.servers.contains(&contact.name) {
            self.assumed.insert(contact.name.clone());
        }
        self.mesh(cx, |m, cx| m.join(cx, contact));
    }

    fn leave(&mut self, cx: &mut Cx<'_>) {
        self.mesh(cx, |m, cx| m.leave(cx));
    }

    fn remove(&mut self, cx: &mut Cx<'_>, name: &str) {
        self.mesh(cx, |m, cx| m.remove(cx, name));
    }

    fn admit(&mut self, cx: &mut Cx<'_>, spec: &NodeSpec, inbound: bool) -> Result<(), Refusal> {
        if self.role == Role::Client && inbound && !self.is_server(&spec.name) {
            // Clients never connect to each other: a client that dialed
            // stops (a server not known yet is learnt from gossip, and this
            // node then dials it).
            return Err(Refusal::Detached);
        }
        self.mesh(cx, |m, cx| m.admit(cx, spec, inbound))
    }

    fn on_dial_refused(
        &mut self,
        cx: &mut Cx<'_>,
        peer: &str,
        refusal: &Refusal,
        control: bool,
        reason: &str,
    ) -> bool {
        self.mesh(cx, |m, cx| {
            m.on_dial_refused(cx, peer, refusal, control, reason)
        })
    }

    fn on_peer_up(&mut self, cx: &mut Cx<'_>, peer: &str) {
        self.mesh(cx, |m, cx| m.on_peer_up(cx, peer));
    }

    fn on_peer_down(&mut self, cx: &mut Cx<'_>, peer: &str) {
        self.mesh(cx, |m, cx| m.on_peer_down(cx, peer));
    }

    fn on_message(&mut self, cx: &mut Cx<'_>, from: &str, payload: &[u8]) {
        let (role, servers, inner) = match unwrap(payload) {
            Ok(x) => x,
            Err(e) => return cx.malformed(from, e),
        };
        match role {
            // A server's word on who the servers are is taken.
            Role::Server => {
                self.learn_server(cx, from);
                for s in servers {
                    self.learn_server(cx, &s);
                }
            }
            // A client's list is not (a client may have joined another
            // client by mistake); and a client keeps no client.
            Role::Client => {
                self.servers.remove(from);
                if self.assumed.remove(from) && self.role == Role::Client {
                    cx.log(
                        crate::types::Level::Warning,
                        Some(from),
                        "joined through a client, not a server: dropped (clients do not connect to each other)".into(),
                    );
                    cx.push(Effect::Drop {
                        name: from.to_string(),
                        reason: DownReason::Removed,
                    });
                }
            }
        }
        self.mesh(cx, |m, cx| m.on_message(cx, from, inner));
    }

    fn on_timeout(&mut self, cx: &mut Cx<'_>) {
        self.mesh(cx, |m, cx| m.on_timeout(cx));
    }

    fn overlay(&self) -> (&'static str, u8) {
        ("client_server", 3)
    }

    fn forget(&mut self, cx: &mut Cx<'_>, name: &str) {
        self.held.remove(name);
        self.servers.remove(name);
        self.assumed.remove(name);
        self.mesh(cx, |m, cx| m.forget(cx, name));
    }

    fn next_deadline(&self) -> Option<Millis> {
        self.mesh.next_deadline()
    }

    fn tombstone_count(&self) -> usize {
        self.mesh.tombstone_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::node::Node;
    use crate::types::Timing;

    #[test]
    fn messages_carry_the_servers_and_bad_ones_are_errors() {
        let t = Timing::default();
        let mut cs = ClientServer::new(Role::Server, FullMesh::new(&t));
        cs.servers.insert("s2@h".into());
        let local = NodeSpec {
            name: "s1@h".into(),
            incarnation: 1,
            addrs: vec![],
            channels: vec![],
            max_frame: 1 << 20,
        };
        let m = cs.wrap(&local, b"inner");
        let (role, servers, inner) = unwrap(&m).unwrap();
        assert_eq!(role, Role::Server);
        assert_eq!(servers, ["s1@h", "s2@h"]);
        assert_eq!(inner, b"inner");
        // Every truncation of the header, a bad role, a huge count, a bad
        // name: errors, no panic.
        for cut in 0..m.len() - 5 {
            assert!(unwrap(&m[..cut]).is_err(), "cut at {cut}");
        }
        assert!(unwrap(&[2, 0, 0]).is_err());
        assert!(unwrap(&[0, 0xff, 0xff, 1, b'x']).is_err());
        assert!(unwrap(&[0, 0, 1, 3, b'a', b'b', b'c']).is_err());
        assert_eq!(unwrap(&[0, 0, 0]).unwrap(), (Role::Client, vec![], &[][..]));
    }

    fn node(name: &str, port: u16, role: Role) -> Node {
        let t = Timing::default();
        let spec = NodeSpec {
            name: name.into(),
            incarnation: u64::from(port),
            max_frame: 1 << 20,
            addrs: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
            channels: vec![],
        };
        Node::with_overlay(
            spec,
            t.clone(),
            u64::from(port),
            Box::new(ClientServer::new(role, FullMesh::new(&t))),
        )
    }

    #[test]
    fn a_client_refuses_unknown_nodes_and_keeps_servers_it_learns_of() {
        let mut c = node("x1@h", 10, Role::Client);
        let control = crate::lane::LaneKey::control();
        let other_client = node("x2@h", 11, Role::Client).local().clone();
        assert_eq!(
            c.on_hello(1, 1, &other_client, &control),
            Err(Refusal::Detached)
        );
        // A server tells it of another server and of a client.
        let s1 = node("s1@h", 20, Role::Server).local().clone();
        c.join(0, s1.clone());
        while c.poll_action().is_some() {}
        let r = c.on_hello(1, 2, &s1, &control);
        assert!(r.is_ok(), "{r:?}");
        while c.poll_action().is_some() {}
        let s2 = node("s2@h", 21, Role::Server).local().clone();
        let view =
            crate::membership::full_mesh::encode(&crate::membership::full_mesh::Message::View {
                view: crate::membership::full_mesh::View {
                    members: vec![s1.clone(), s2.clone(), other_client.clone()],
                    tombstones: vec![],
                },
                reply: false,
            });
        let mut server = ClientServer::new(Role::Server, FullMesh::new(&Timing::default()));
        server.servers.insert("s2@h".into());
        let mut payload = vec![3];
        payload.extend(server.wrap(&s1, &view));
        c.on_control(1, "s1@h", 2, crate::wire::Control::Membership(payload));
        let mut acts: Vec<Action> = std::iter::from_fn(|| c.poll_action()).collect();
        // Learned from gossip, a node with a smaller name is dialed after
        // one reconnect_min_backoff (it is most likely dialing us).
        c.on_timeout(1 + Timing::default().reconnect_min_backoff);
        acts.extend(std::iter::from_fn(|| c.poll_action()));
        let dials: Vec<&str> = acts
            .iter()
            .filter_map(|a| match a {
                Action::Dial { peer, .. } => Some(peer.as_str()),
                _ => None,
            })
            .collect();
        assert!(dials.contains(&"s2@h"), "{acts:?}");
        assert!(!dials.contains(&"x2@h"), "{acts:?}");
        // s2, now known as a server, may dial in; c2 still may not.
        assert!(c.on_hello(1, 3, &s2, &control).is_ok());
        assert_eq!(
            c.on_hello(1, 4, &other_client, &control),
            Err(Refusal::Detached)
        );
    }

    #[test]
    fn a_client_joined_through_a_client_drops_it_and_does_not_spread_it() {
        let mut c = node("x1@h", 10, Role::Client);
        // (a smaller name: its dial wins the collision with ours)
        let other = node("a2@h", 11, Role::Client).local().clone();
        c.join(0, other.clone());
        while c.poll_action().is_some() {}
        let control = crate::lane::LaneKey::control();
        assert!(c.on_hello(1, 7, &other, &control).is_ok());
        while c.poll_action().is_some() {}
        // a2 says it is a client, naming "y@h" as a server: not believed
        let mut a2 = ClientServer::new(Role::Client, FullMesh::new(&Timing::default()));
        a2.servers.insert("y@h".into());
        let digest =
            crate::membership::full_mesh::encode(&crate::membership::full_mesh::Message::Digest(0));
        let mut payload = vec![3];
        payload.extend(a2.wrap(&other, &digest));
        c.on_control(2, "a2@h", 7, crate::wire::Control::Membership(payload));
        let acts: Vec<Action> = std::iter::from_fn(|| c.poll_action()).collect();
        assert!(
            acts.iter()
                .any(|a| matches!(a, Action::Unroute { peer } if peer == "a2@h")),
            "{acts:?}"
        );
        assert!(!acts
            .iter()
            .any(|a| matches!(a, Action::Dial { peer, .. } if peer == "y@h")));
    }
}
