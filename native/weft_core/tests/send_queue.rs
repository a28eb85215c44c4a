//! Property test of the send queue policy (`weft_core::send_queue`),
//! driven as the transport's lane drives it, without sockets.

use proptest::prelude::*;
use std::collections::HashMap;
use weft_core::send_queue::*;

/// A test frame: an id, its body size, a header of 5 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct F {
    id: u32,
    body: usize,
}

const HEADER: usize = 5;

impl Payload for F {
    fn body_len(&self) -> usize {
        self.body
    }
    fn wire_len(&self) -> usize {
        HEADER + self.body
    }
}

fn add(c: &mut Counts, body: usize) {
    c.frames += 1;
    c.bytes += body as u64;
}

/// One step of a lane's life, as the property test drives it.
#[derive(Debug, Clone)]
enum Op {
    /// Sender `s` (4: unknown) pushes a frame of `size` body bytes;
    /// `writable`: the lane is connected now.
    Push { s: u8, size: usize, writable: bool },
    /// The outstanding direct write of sender `s` (if any) ends, the
    /// socket having taken `take` bytes (`None`: nothing).
    Direct { s: u8, take: Option<usize> },
    /// A flush writes one batch; the socket takes `take` bytes of it.
    Flush { take: usize },
    /// Drop the oldest unstarted frames, up to `n`.
    DropOldest { n: usize },
    /// Time passes.
    Wait { us: u64 },
}

/// Ops, flushes weighing `flushes` (0: none before the end, so
/// that queues grow long and large frames get passed).
fn op(flushes: u32) -> impl Strategy<Value = Op> {
    let size = prop_oneof![
        4 => 0usize..64,
        1 => (DIRECT_MAX - 2)..(DIRECT_MAX + 3),
        1 => (DIRECT_MAX + 3)..(3 * BATCH_BYTES / 2),
    ];
    prop_oneof![
        6 => (0u8..5, size, any::<bool>())
            .prop_map(|(s, size, writable)| Op::Push { s, size, writable }),
        2 => (0u8..5, proptest::option::weighted(0.8, 0usize..200))
            .prop_map(|(s, take)| Op::Direct { s, take }),
        flushes => prop_oneof![0usize..100, 0usize..(2 * BATCH_BYTES)]
            .prop_map(|take| Op::Flush { take }),
        1 => (0usize..4).prop_map(|n| Op::DropOldest { n }),
        1 => (0u64..100).prop_map(|us| Op::Wait { us }),
    ]
}

/// What the model knows of a frame.
struct Known {
    sender: u8,
    /// Its rank among its sender's pushes.
    seq: u32,
    body: usize,
    /// How many frames had been pushed before it.
    pushed_at: u32,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever the interleaving of pushes, direct writes, flushes,
    /// write sizes and drops: the wire carries whole frames one after
    /// another, each sender's frames in the order it pushed them
    /// (dropped ones aside), a large frame is passed at most
    /// MAX_PASSES times, and every frame pushed is written or dropped
    /// once, with bytes that add up.
    #[test]
    fn order_passing_and_accounting_hold(
        ops in (0u32..4).prop_flat_map(|w| proptest::collection::vec(op(w), 1..400)),
        split in any::<bool>(),
    ) {
        let mut q: SendQueue<F> = SendQueue::new();
        let mut now: Micros = 0;
        let mut known: HashMap<u32, Known> = HashMap::new();
        let mut next_seq = [0u32; 5];
        let mut directs: [Option<Direct<F>>; 5] = Default::default();
        // The wire: (frame id, bytes of it) in write order.
        let mut wire: Vec<(u32, usize)> = Vec::new();
        let mut written = Counts::default();
        let mut dropped = Counts::default();
        let mut dropped_ids: Vec<u32> = Vec::new();
        let mut pushed = Counts::default();
        let mut next_id = 0u32;

        let mut run = |op: &Op, q: &mut SendQueue<F>, now: &mut Micros,
                       directs: &mut [Option<Direct<F>>; 5]| {
            match *op {
                Op::Push { s, size, writable } => {
                    // Split: every sender known.
                    let s = if split { s % 4 } else { s };
                    // A sender is one process: one push at a time.
                    if directs[s as usize].is_some() {
                        return;
                    }
                    // Split: sender 0 pushes only large frames, the
                    // others small ones: long runs of passing.
                    let size = match (split, s) {
                        (false, _) => size,
                        (true, 0) => size.max(DIRECT_MAX + 1),
                        (true, _) => size.min(63),
                    };
                    let f = F { id: next_id, body: size };
                    known.insert(next_id, Known {
                        sender: s,
                        seq: next_seq[s as usize],
                        body: size,
                        pushed_at: next_id,
                    });
                    next_id += 1;
                    next_seq[s as usize] += 1;
                    add(&mut pushed, size);
                    let sender = (s < 4).then_some(u64::from(s));
                    match q.push(*now, f, sender, writable) {
                        Pushed::Write(d) => {
                            assert!(size <= DIRECT_MAX);
                            directs[s as usize] = Some(d);
                        }
                        Pushed::Queued => {}
                        Pushed::Refused(_) => unreachable!("never stopped"),
                    }
                }
                Op::Direct { s, take } => {
                    let Some(d) = directs[s as usize].take() else { return };
                    let f = *d.item();
                    let take = take.map(|t| t.min(f.wire_len()));
                    if let Some(t) = take.filter(|t| *t > 0) {
                        wire.push((f.id, t));
                    }
                    if let Some(back) = q.wrote_direct(*now, d, take) {
                        assert_eq!(back, f);
                        add(&mut written, f.body);
                    }
                }
                Op::Flush { take } => match q.flush(true) {
                    Step::Write(mut b) => {
                        let offered: usize = b
                            .iter()
                            .map(|(f, s)| f.wire_len() - s)
                            .sum::<usize>()
                            .min(BATCH_BYTES);
                        let take = take.min(offered);
                        let mut left = take;
                        for (f, s) in b.iter() {
                            if left == 0 {
                                break;
                            }
                            let n = (f.wire_len() - s).min(left);
                            wire.push((f.id, n));
                            left -= n;
                        }
                        b.wrote(take);
                        let (_, w) = q.put_back(b, take < offered);
                        written.frames += w.frames;
                        written.bytes += w.bytes;
                    }
                    Step::Idle => {}
                    Step::Close | Step::Dropped(_) => unreachable!("never stopped"),
                },
                Op::DropOldest { n } => {
                    for f in (0..n).map_while(|_| q.pop_oldest()) {
                        add(&mut dropped, f.body);
                        dropped_ids.push(f.id);
                    }
                }
                Op::Wait { us } => *now += us,
            }
            *now += 1;
        };
        for op in &ops {
            run(op, &mut q, &mut now, &mut directs);
        }
        // The end: every direct write completes, flushes empty the queue.
        for s in 0..5u8 {
            run(&Op::Direct { s, take: Some(usize::MAX) }, &mut q, &mut now, &mut directs);
        }
        let mut rounds = 0;
        while q.has_work() {
            run(&Op::Flush { take: usize::MAX }, &mut q, &mut now, &mut directs);
            rounds += 1;
            prop_assert!(rounds < 100_000, "the queue does not drain");
        }

        // Accounting: pushed = written + dropped, nothing queued.
        prop_assert_eq!(q.queued(), Counts::default());
        prop_assert_eq!(pushed.frames, written.frames + dropped.frames);
        prop_assert_eq!(pushed.bytes, written.bytes + dropped.bytes);

        // The wire is whole frames, one after another.
        let mut order: Vec<u32> = Vec::new();
        let mut cur: Option<(u32, usize)> = None;
        for &(id, n) in &wire {
            let (cid, got) = match cur {
                Some((cid, got)) => {
                    prop_assert_eq!(cid, id, "frames interleave on the wire");
                    (cid, got + n)
                }
                None => (id, n),
            };
            let len = known[&cid].body + HEADER;
            prop_assert!(got <= len);
            if got == len {
                order.push(cid);
                cur = None;
            } else {
                cur = Some((cid, got));
            }
        }
        prop_assert!(cur.is_none(), "a frame is cut short");
        prop_assert_eq!(order.len() as u64, written.frames);
        let mut all: Vec<u32> = order.iter().chain(&dropped_ids).copied().collect();
        all.sort();
        prop_assert_eq!(all, (0..next_id).collect::<Vec<_>>());

        // Per-sender order, dropped frames aside.
        let mut last: HashMap<u8, u32> = HashMap::new();
        for id in &order {
            let k = &known[id];
            if let Some(prev) = last.insert(k.sender, k.seq) {
                prop_assert!(prev < k.seq, "sender {} out of order", k.sender);
            }
        }
        // A large frame is passed at most MAX_PASSES times: frames
        // pushed after it and written before it.
        for (i, id) in order.iter().enumerate() {
            let k = &known[id];
            if k.body > DIRECT_MAX {
                let passed = order[..i]
                    .iter()
                    .filter(|o| known[o].pushed_at > k.pushed_at)
                    .count();
                prop_assert!(passed <= MAX_PASSES as usize, "passed {} times", passed);
            }
        }
    }
}
