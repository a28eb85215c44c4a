//! The built-in overlays other than the full mesh, in the simulator (the
//! real handshake, peer table and failure detector, seeded): the static
//! list with a member that starts late and one that never starts, and
//! client-server with two servers and three clients.

use std::sync::Arc;
use weft_core::membership::client_server::{ClientServer, Role};
use weft_core::membership::full_mesh::FullMesh;
use weft_core::membership::static_list::StaticList;
use weft_core::sim::{MakeMembership, Sim};
use weft_core::{NodeSpec, Timing};

mod common;
use common::timing;

const CH: &[(&str, u16)] = &[("default", 1), ("vnode", 4)];

fn contact(name: &str, i: usize) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        incarnation: 0,
        addrs: vec![Sim::addr_of(i)],
        channels: vec![],
        max_frame: 0,
    }
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn static_list_with_a_late_member_and_one_that_never_starts() {
    for seed in 1..=5 {
        let mut sim = Sim::new(seed, timing(), (1, 5));
        // s0..s3 and "never" (index 4: an address nobody listens on) are
        // the list; s3 starts 3 s late.
        let names = ["s0@h", "s1@h", "s2@h", "s3@h", "never@h"];
        let list: Vec<NodeSpec> = names
            .iter()
            .enumerate()
            .map(|(i, n)| contact(n, i))
            .collect();
        let make = |me: &'static str| -> MakeMembership {
            let others: Vec<NodeSpec> = list.iter().filter(|s| s.name != me).cloned().collect();
            Arc::new(move |_t: &Timing| Box::new(StaticList::new(others.clone())) as _)
        };
        for n in &names[..3] {
            sim.add_node_with(n, "cookie", CH, Some(make(n)));
        }
        // the first `k` of the list see each other up, and no one else
        let assert_mesh = |sim: &Sim, k: usize, when: &str| {
            for i in 0..k {
                let want: Vec<&str> = names[..k]
                    .iter()
                    .copied()
                    .filter(|n| *n != names[i])
                    .collect();
                assert_eq!(
                    sim.up(i),
                    sorted(&want),
                    "seed {seed}: {when}, {}",
                    names[i]
                );
            }
        };
        sim.run_for(3000);
        assert_mesh(&sim, 3, "before s3");
        sim.add_node_with("s3@h", "cookie", CH, Some(make("s3@h")));
        sim.run_for(3000);
        assert_mesh(&sim, 4, "after s3");
        sim.check_lanes().unwrap();
        // a stranger is refused: the list is the membership
        let stranger = sim.add_node("x@h", "cookie", CH);
        sim.join(stranger, 0);
        sim.run_for(2000);
        assert!(sim.up(stranger).is_empty(), "seed {seed}");
        assert!(!sim.sees_up(0, "x@h"));
    }
}

#[test]
fn client_server_clients_connect_to_servers_only() {
    for seed in 1..=5 {
        let mut sim = Sim::new(seed, timing(), (1, 5));
        let make = |role: Role| -> MakeMembership {
            Arc::new(move |t: &Timing| Box::new(ClientServer::new(role, FullMesh::new(t))) as _)
        };
        let servers = ["s0@h", "s1@h"];
        let clients = ["c0@h", "c1@h", "c2@h"];
        for s in servers {
            sim.add_node_with(s, "cookie", CH, Some(make(Role::Server)));
        }
        for c in clients {
            sim.add_node_with(c, "cookie", CH, Some(make(Role::Client)));
        }
        // s1 and every client join through s0; the clients learn of s1
        // from s0's gossip and connect to it too.
        for i in 1..5 {
            sim.join(i, 0);
        }
        sim.run_for(5000);
        let all: Vec<&str> = servers.iter().chain(clients.iter()).copied().collect();
        for (i, s) in servers.iter().enumerate() {
            let want: Vec<&str> = all.iter().copied().filter(|n| n != s).collect();
            assert_eq!(sim.up(i), sorted(&want), "seed {seed}: server {s}");
        }
        for (k, c) in clients.iter().enumerate() {
            assert_eq!(sim.up(2 + k), sorted(&servers), "seed {seed}: client {c}");
        }
        sim.check_lanes().unwrap();
        // a server fails: clients keep the other
        sim.crash(0, false);
        sim.run_for(3000);
        for k in 0..3 {
            assert_eq!(
                sim.up(2 + k),
                sorted(&["s1@h"]),
                "seed {seed}: after s0 failed"
            );
        }
        // no client ever saw another client up
        assert!(sim
            .seen
            .iter()
            .all(|s| !(s.node.starts_with('c') && s.peer.starts_with('c'))));
    }
}
