//! Lanes: the parallel connections of a channel, and how a message picks one.
//!
//! Two nodes share, per channel both of them have, `min(local, remote)`
//! parallelism lanes, so both sides compute the same plan. Ordering holds per
//! lane, so with affinity a message's lane is a pure function of its
//! partition key (or of its destination when no key is given): messages with
//! the same key stay in order while different keys spread over the lanes.

use crate::spec::{NodeSpec, CONTROL_CHANNEL};

/// One lane of one channel between two nodes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LaneKey {
    /// The channel.
    pub channel: String,
    /// The lane's index within the channel, from 0.
    pub index: u16,
}

impl LaneKey {
    /// The single lane of the control channel.
    pub fn control() -> Self {
        LaneKey {
            channel: CONTROL_CHANNEL.to_string(),
            index: 0,
        }
    }

    /// Whether this lane belongs to the control channel.
    pub fn is_control(&self) -> bool {
        self.channel == CONTROL_CHANNEL
    }
}

/// The lanes two nodes keep between them: the control lane first, then for
/// every channel both have, `min` of their parallelism (in the local order).
pub fn plan(local: &NodeSpec, remote: &NodeSpec) -> Vec<(String, u16)> {
    let mut out = vec![(CONTROL_CHANNEL.to_string(), 1)];
    for ch in &local.channels {
        if let Some(p) = remote.parallelism(&ch.name) {
            out.push((ch.name.clone(), ch.parallelism.min(p).max(1)));
        }
    }
    out
}

/// Every lane of [`plan`], one key each.
pub fn plan_keys(local: &NodeSpec, remote: &NodeSpec) -> Vec<LaneKey> {
    plan(local, remote)
        .into_iter()
        .flat_map(|(channel, n)| {
            (0..n).map(move |index| LaneKey {
                channel: channel.clone(),
                index,
            })
        })
        .collect()
}

/// What picks a message's lane when affinity is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// A hash of the partition key (or of the destination): mixed, then
    /// taken modulo the lane count.
    Hash(u32),
    /// An integer partition key: lane `index % lanes`, so consecutive keys
    /// (vnode indices, shard numbers) spread evenly over the lanes.
    Index(u64),
}

impl From<u32> for Choice {
    fn from(h: u32) -> Choice {
        Choice::Hash(h)
    }
}

/// Pick a lane among `lanes` (> 0).
///
/// With `affinity`, `choice` decides, so equal keys always share a lane.
/// Without it, `round_robin` (a counter the caller bumps) spreads messages
/// evenly.
pub fn pick(lanes: u16, affinity: bool, choice: Choice, round_robin: u64) -> u16 {
    debug_assert!(lanes > 0);
    if lanes <= 1 {
        return 0;
    }
    let n = u64::from(lanes);
    let x = match (affinity, choice) {
        (false, _) => round_robin,
        (true, Choice::Index(i)) => i,
        (true, Choice::Hash(hash)) => {
            // Mix the bits: phash2 values of small integers are close together.
            let mut h = u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 29;
            h
        }
    };
    (x % n) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ChannelSpec;

    fn spec(chs: &[(&str, u16)]) -> NodeSpec {
        NodeSpec {
            name: "n".into(),
            incarnation: 1,
            addrs: vec![],
            max_frame: 1 << 20,
            channels: chs
                .iter()
                .map(|(n, p)| ChannelSpec {
                    name: n.to_string(),
                    parallelism: *p,
                })
                .collect(),
        }
    }

    #[test]
    fn plan_is_symmetric_and_uses_min() {
        let a = spec(&[("default", 1), ("vnode", 16), ("only_a", 2)]);
        let b = spec(&[("vnode", 4), ("default", 3)]);
        let pa = plan(&a, &b);
        assert_eq!(
            pa,
            vec![
                ("$control".to_string(), 1),
                ("default".to_string(), 1),
                ("vnode".to_string(), 4)
            ]
        );
        let mut pb = plan(&b, &a);
        pb.sort();
        let mut pa2 = pa.clone();
        pa2.sort();
        assert_eq!(pa2, pb);
    }

    #[test]
    fn affinity_is_a_function_of_the_key() {
        for key in 0..1000u32 {
            let l = pick(16, true, key.into(), 0);
            assert!(l < 16);
            assert_eq!(l, pick(16, true, key.into(), 12345));
        }
        // and spreads keys over every lane
        let mut seen = [false; 16];
        for key in 0..1000u32 {
            seen[pick(16, true, key.into(), 0) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn round_robin_without_affinity() {
        let lanes: Vec<u16> = (0..8).map(|i| pick(4, false, 99.into(), i)).collect();
        assert_eq!(lanes, vec![0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(pick(1, true, 5.into(), 5), 0);
        // integer keys take lanes in turn
        let lanes: Vec<u16> = (0..20)
            .map(|k| pick(16, true, Choice::Index(k), 0))
            .collect();
        assert_eq!(lanes, (0..20).map(|k| (k % 16) as u16).collect::<Vec<_>>());
        assert_eq!(
            pick(16, true, Choice::Index(u64::MAX), 7),
            (u64::MAX % 16) as u16
        );
    }
}
