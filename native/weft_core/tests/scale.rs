//! A 1,000-node full mesh in the simulator: every node joins through one
//! seed until every node sees 999 peers up; then one node fails silently
//! (it stops answering) until every other node has declared it down.
//! Production timing (`Timing::default()`: heartbeat 1 s, timeout 5 s,
//! gossip 1 s), the real handshake, control lanes only.
//!
//! Runs in release builds only (`cargo test --release`): a debug build is
//! some 20 times slower.

use std::time::Instant;
use weft_core::sim::Sim;
use weft_core::Timing;

/// Nodes (`WEFT_SIM_NODES` overrides, for experiments).
fn n() -> usize {
    std::env::var("WEFT_SIM_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[test]
#[cfg_attr(debug_assertions, ignore = "release builds only: cargo test --release")]
fn a_thousand_nodes_join_through_one_seed_and_detect_a_silent_failure() {
    let n = n();
    let wall = Instant::now();
    let mut sim = Sim::new(1000, Timing::default(), (1, 5));
    sim.set_trace(false);
    for k in 0..n {
        sim.add_node(&format!("n{k}@h"), "cookie", &[]);
    }
    for k in 1..n {
        sim.join(k, 0);
    }
    let mut joined_at = None;
    while sim.now() < 120_000 {
        sim.run_for(100);
        if (0..n).all(|i| sim.up_count(i) == n - 1) {
            joined_at = Some(sim.now());
            break;
        }
    }
    let joined_at = joined_at.unwrap_or_else(|| {
        let least = (0..n).map(|i| sim.up_count(i)).min();
        panic!("no full mesh after 120 s: least peers up {least:?}")
    });
    let join_wall = wall.elapsed();
    println!("joined: {:?}, {} events", sim.carried, sim.events);
    // One handshake (4 frames) per pair: the node with the larger name
    // waits for the other's dial instead of colliding with it.
    assert_eq!(sim.carried.handshake_frames, 4 * (n * (n - 1) / 2) as u64);
    // Every pair came up once each way, and nothing went down.
    assert_eq!(sim.seen.iter().filter(|s| s.up).count(), n * (n - 1));
    assert!(sim.seen.iter().all(|s| s.up));

    let victim = n / 2;
    let name = sim.name(victim).to_string();
    let t = sim.now();
    sim.crash(victim, false);
    let mut detected_at = None;
    while sim.now() < t + 30_000 {
        sim.run_for(100);
        if (0..n)
            .filter(|i| *i != victim)
            .all(|i| !sim.sees_up(i, &name))
        {
            detected_at = Some(sim.now());
            break;
        }
    }
    let detected_at = detected_at.expect("everyone declares the silent node down");
    let downs: Vec<u64> = sim
        .seen
        .iter()
        .filter(|s| !s.up)
        .map(|s| s.at - t)
        .collect();
    assert_eq!(downs.len(), n - 1);
    assert!(sim.seen.iter().filter(|s| !s.up).all(|s| s.peer == name));
    // Last heard at most one heartbeat interval (plus latency) before the
    // crash; down once silent for more than the 5 s timeout.
    assert!(
        downs.iter().all(|d| (3_990..=5_010).contains(d)),
        "{:?}",
        (downs.iter().min(), downs.iter().max())
    );
    println!("all: {:?}", sim.carried);
    println!(
        "{n} nodes: full mesh at {joined_at} ms virtual ({:.1} s wall), \
         silent failure detected by all at +{} ms virtual; \
         {} events, total wall {:.1} s",
        join_wall.as_secs_f64(),
        detected_at - t,
        sim.events,
        wall.elapsed().as_secs_f64()
    );
}
