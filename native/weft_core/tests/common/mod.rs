//! What the simulation tests share.

use weft_core::Timing;

/// Fast timing for simulations: heartbeats every 100 ms, down after
/// 500 ms of silence, redials from 20 to 400 ms, gossip every 200 ms.
pub fn timing() -> Timing {
    Timing {
        heartbeat_interval: 100,
        heartbeat_timeout: 500,
        reconnect_min_backoff: 20,
        reconnect_max_backoff: 400,
        gossip_interval: 200,
        forget_after: None,
        tombstone_ttl: 60_000,
    }
}
