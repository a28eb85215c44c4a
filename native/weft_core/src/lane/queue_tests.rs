//! Tests of the send queue policy, without sockets: unit tests, and a
//! property test that drives the queue as the transport's lane does.

use super::*;
use crate::frame::{PartedLayout, INTERLEAVE_MAX, PART_BYTES};
use proptest::prelude::*;
use std::collections::HashMap;

/// A test frame: an id, its body size, a header of 5 bytes; or in parts
/// (as [`crate::frame::PartedLayout`] lays them out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct F {
    id: u32,
    body: usize,
    parted: bool,
}

const HEADER: usize = 5;

impl F {
    fn layout(&self) -> Option<PartedLayout> {
        self.parted.then_some(PartedLayout {
            body_len: self.body,
        })
    }
}

impl Payload for F {
    fn body_len(&self) -> usize {
        self.body
    }
    fn wire_len(&self) -> usize {
        match self.layout() {
            Some(l) => l.wire_len(),
            None => HEADER + self.body,
        }
    }
    fn next_boundary(&self, sent: usize) -> Option<usize> {
        self.layout().map(|l| l.next_boundary(sent))
    }
    fn at_boundary(&self, sent: usize) -> bool {
        self.layout().is_some_and(|l| l.at_boundary(sent))
    }
}

fn small(id: u32) -> F {
    F {
        id,
        body: 8,
        parted: false,
    }
}

fn large(id: u32) -> F {
    F {
        id,
        body: DIRECT_MAX + 1,
        parted: false,
    }
}

/// A frame of 3.5 parts, in parts.
fn in_parts(id: u32) -> F {
    F {
        id,
        body: 3 * PART_BYTES + PART_BYTES / 2,
        parted: true,
    }
}

/// Bytes a writer offers of a batch (as the transport's does): each frame
/// to its end, at most [`BATCH_BYTES`] in all, except that the frame in
/// parts that ends a batch goes to the end of its part.
fn offered(b: &Batch<F>) -> usize {
    let mut offered = 0;
    for (f, s) in b.iter() {
        if offered == BATCH_BYTES {
            break;
        }
        offered += match f.next_boundary(s) {
            Some(end) => end - s,
            None => (f.wire_len() - s).min(BATCH_BYTES - offered),
        };
    }
    offered
}

/// Write one batch, the socket taking `take` bytes at most; the ids of
/// the frames it wrote to (in order).
fn write_one(q: &mut SendQueue<F>, take: usize) -> Vec<u32> {
    let Step::Write(mut b) = q.flush(true) else {
        return vec![];
    };
    let ids = b.iter().map(|(f, _)| f.id).collect();
    let take = take.min(offered(&b));
    let blocked = take < offered(&b);
    b.wrote(take);
    let _ = q.put_back(b, blocked);
    ids
}

/// Flush everything (a socket that takes all), returning ids in wire
/// order.
fn drain(q: &mut SendQueue<F>) -> Vec<u32> {
    let mut out = Vec::new();
    while let Step::Write(mut b) = q.flush(true) {
        out.extend(b.iter().map(|(f, _)| f.id));
        let all = offered(&b);
        b.wrote(all);
        let (next, _) = q.put_back(b, false);
        if next == Flush::Done {
            break;
        }
    }
    out
}

fn ids(q: &mut SendQueue<F>, pushes: &[(F, Option<Sender>)]) -> Vec<u32> {
    for (f, s) in pushes {
        assert!(matches!(q.push(0, *f, *s, false), Pushed::Queued));
    }
    drain(q)
}

#[test]
fn small_frames_pass_large_ones_of_other_senders_only() {
    let mut q = SendQueue::new();
    let order = ids(
        &mut q,
        &[
            (large(b'a'.into()), Some(1)),
            (large(b'b'.into()), Some(2)),
            (small(b'c'.into()), Some(3)), // passes both
            (small(b'A'.into()), Some(1)), // passes b only
            (small(b'n'.into()), None),    // unknown sender: last
            (small(b'C'.into()), Some(3)), // nothing to pass
            (large(b'd'.into()), Some(4)),
            (large(b'e'.into()), Some(5)), // large: never passes
            (small(b'D'.into()), Some(4)), // passes e, not d
        ],
    );
    let order: Vec<u8> = order.into_iter().map(|i| i as u8).collect();
    assert_eq!(order, b"caAbnCdDe".to_vec());
    assert_eq!(q.queued(), Counts::default());
}

/// A frame in parts stops between parts; there, small frames of other
/// senders go first, as they would ahead of a large frame not started.
/// Its own sender's frames and control frames wait for its end.
#[test]
fn small_frames_of_other_senders_go_between_parts() {
    let mut q = SendQueue::new();
    assert!(matches!(
        q.push(0, in_parts(1), Some(1), true),
        Pushed::Queued
    ));
    // One batch: the parted frame and its first part, then it stops.
    assert_eq!(write_one(&mut q, usize::MAX), vec![1]);
    for (id, s) in [(2, Some(2)), (3, Some(1)), (4, Some(3)), (5, None)] {
        assert!(matches!(q.push(100, small(id), s, true), Pushed::Queued));
    }
    // 2 goes between the first and the second part; 3 (its sender's)
    // keeps 4 and 5 behind the end of frame 1.
    assert_eq!(drain(&mut q), vec![2, 1, 1, 1, 3, 4, 5]);

    // Frames that queue while a part is being written go first when it
    // ends (put back between parts).
    let mut q = SendQueue::new();
    assert!(matches!(
        q.push(0, in_parts(1), Some(1), true),
        Pushed::Queued
    ));
    let Step::Write(mut b) = q.flush(true) else {
        panic!("a batch")
    };
    for id in [2, 3] {
        assert!(matches!(
            q.push(100, small(id), Some(2), true),
            Pushed::Queued
        ));
    }
    b.wrote(offered(&b));
    let _ = q.put_back(b, false);
    assert_eq!(drain(&mut q), vec![2, 3, 1, 1, 1]);

    // A write that stops inside a part: nothing passes until it ends.
    let mut q = SendQueue::new();
    assert!(matches!(
        q.push(0, in_parts(1), Some(1), true),
        Pushed::Queued
    ));
    assert_eq!(write_one(&mut q, 1000), vec![1]);
    assert!(matches!(
        q.push(100, small(2), Some(2), true),
        Pushed::Queued
    ));
    assert_eq!(write_one(&mut q, usize::MAX), vec![1]);
    assert_eq!(drain(&mut q), vec![2, 1, 1, 1]);
}

/// At each boundary a frame in parts is passed at most MAX_PASSES times,
/// and the frames that may go between parts are those a receiver takes
/// there: at most INTERLEAVE_MAX bytes.
#[test]
fn passing_between_parts_is_bounded() {
    let mut q = SendQueue::new();
    assert!(matches!(
        q.push(0, in_parts(1), Some(1), true),
        Pushed::Queued
    ));
    assert_eq!(write_one(&mut q, usize::MAX), vec![1]);
    let n = MAX_PASSES + 5;
    for id in 0..n {
        assert!(matches!(
            q.push(100, small(10 + id), Some(2), true),
            Pushed::Queued
        ));
    }
    let first: Vec<u32> = drain(&mut q)
        .into_iter()
        .take(MAX_PASSES as usize + 1)
        .collect();
    let expect: Vec<u32> = (0..MAX_PASSES).map(|i| 10 + i).chain([1]).collect();
    assert_eq!(first, expect);

    let mut q = SendQueue::new();
    assert!(matches!(
        q.push(0, in_parts(1), Some(1), true),
        Pushed::Queued
    ));
    assert_eq!(write_one(&mut q, usize::MAX), vec![1]);
    let big = F {
        id: 2,
        body: INTERLEAVE_MAX + 1,
        parted: false,
    };
    assert!(big.body <= DIRECT_MAX);
    assert!(matches!(q.push(100, big, Some(2), true), Pushed::Queued));
    assert_eq!(drain(&mut q), vec![1, 1, 1, 2]);
}

/// A new connection: frames that started on the old one leave (counted),
/// the others stay, laid out again.
#[test]
fn frames_started_on_an_old_connection_leave_on_a_new_one() {
    let mut q = SendQueue::new();
    assert!(matches!(
        q.push(0, in_parts(1), Some(1), true),
        Pushed::Queued
    ));
    assert_eq!(write_one(&mut q, 100), vec![1]);
    assert!(matches!(
        q.push(100, small(2), Some(2), true),
        Pushed::Queued
    ));
    assert!(matches!(
        q.push(200, in_parts(3), Some(3), true),
        Pushed::Queued
    ));
    let lost = q.reconnected(|f| f.parted = false);
    assert_eq!(lost, Counts::one(&in_parts(1)));
    assert_eq!(q.queued().frames, 2);
    let Step::Write(b) = q.flush(true) else {
        panic!("a batch")
    };
    let got: Vec<F> = b.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        got,
        vec![
            small(2),
            F {
                parted: false,
                ..in_parts(3)
            }
        ]
    );
}

#[test]
fn a_large_frame_is_passed_a_bounded_number_of_times() {
    let mut q = SendQueue::new();
    let smalls = MAX_PASSES + 10;
    let mut pushes = vec![(large(1000), Some(1))];
    pushes.extend((0..smalls).map(|i| (small(i), Some(2))));
    let order = ids(&mut q, &pushes);
    assert_eq!(order.iter().position(|&i| i == 1000), Some(64));
    let rest: Vec<u32> = order.into_iter().filter(|&i| i != 1000).collect();
    assert_eq!(rest, (0..smalls).collect::<Vec<_>>());
}

#[test]
fn an_idle_lane_writes_directly_a_stream_queues() {
    let mut q = SendQueue::new();
    // Unconnected: queued.
    assert!(matches!(q.push(0, small(1), None, false), Pushed::Queued));
    assert_eq!(drain(&mut q), vec![1]);
    // Idle, connected, sparse: direct.
    let Pushed::Write(d) = q.push(1000, small(2), None, true) else {
        panic!("not direct")
    };
    // Meanwhile others queue behind it, and no flush starts.
    assert!(matches!(q.push(1001, small(3), None, true), Pushed::Queued));
    assert!(matches!(q.flush(true), Step::Idle));
    assert_eq!(q.wrote_direct(1002, d, Some(HEADER + 8)), Some(small(2)));
    assert_eq!(drain(&mut q), vec![3]);
    // A push soon after the previous one queues: a stream.
    assert!(matches!(
        q.push(1002 + STREAM_GAP - 1, small(4), None, true),
        Pushed::Queued
    ));
    assert_eq!(drain(&mut q), vec![4]);
    // Large frames are never written by their sender.
    assert!(matches!(
        q.push(1_000_000, large(5), None, true),
        Pushed::Queued
    ));
    assert_eq!(drain(&mut q), vec![5]);
    // After a gap, direct again.
    assert!(matches!(
        q.push(2_000_000, small(6), None, true),
        Pushed::Write(_)
    ));
}

#[test]
fn a_partial_direct_write_goes_first_a_failed_one_queues() {
    let mut q = SendQueue::new();
    let Pushed::Write(d) = q.push(0, small(1), Some(1), true) else {
        panic!("not direct")
    };
    assert!(matches!(q.push(1, small(2), Some(2), true), Pushed::Queued));
    assert_eq!(q.wrote_direct(2, d, Some(3)), None);
    let Step::Write(mut b) = q.flush(true) else {
        panic!("no batch")
    };
    let v: Vec<(u32, usize)> = b.iter().map(|(f, s)| (f.id, s)).collect();
    assert_eq!(v, vec![(1, 3), (2, 0)]);
    // The socket takes the rest of the first frame and 2 bytes.
    b.wrote(HEADER + 8 - 3 + 2);
    let (next, written) = q.put_back(b, true);
    assert_eq!(next, Flush::Blocked);
    assert_eq!(
        written,
        Counts {
            frames: 1,
            bytes: 8
        }
    );
    assert_eq!(
        q.queued(),
        Counts {
            frames: 1,
            bytes: 8
        }
    );
    // A started frame is never passed nor dropped.
    assert!(matches!(
        q.push(1000, large(3), Some(3), true),
        Pushed::Queued
    ));
    assert!(matches!(
        q.push(1000, small(4), Some(4), true),
        Pushed::Queued
    ));
    let gone: Vec<u32> = std::iter::from_fn(|| q.pop_oldest())
        .map(|f| f.id)
        .collect();
    assert_eq!(gone, vec![4, 3]);
    assert_eq!(drain(&mut q), vec![2]);

    // Nothing written: queued as if just pushed (small passes large).
    let mut q = SendQueue::new();
    let Pushed::Write(d) = q.push(0, small(1), Some(1), true) else {
        panic!("not direct")
    };
    assert!(matches!(q.push(1, large(2), Some(2), true), Pushed::Queued));
    assert_eq!(q.wrote_direct(2, d, None), None);
    assert_eq!(drain(&mut q), vec![1, 2]);
}

/// A writer that the socket refused waits for it to be writable again,
/// unless a flush came while it wrote: that flush may have been the
/// socket's news that it had room (one edge, taken by another thread,
/// not repeated), so the writer tries again. Found as a stall of one
/// `QUIET` (200 ms) in `make demo`, when a lane's connection moved between
/// pollers while writing (`bench/RESULTS.md`, 2026-12-07 15:36).
#[test]
fn a_flush_refused_while_a_batch_is_out_is_not_lost() {
    let mut q = SendQueue::new();
    for id in 0..3 {
        assert!(matches!(q.push(0, large(id), None, true), Pushed::Queued));
    }
    // Blocked with no flush meanwhile: wait for the socket.
    let Step::Write(mut b) = q.flush(true) else {
        panic!("no batch")
    };
    b.wrote(10);
    assert_eq!(q.put_back(b, true).0, Flush::Blocked);
    // A flush while the batch is out finds a writer (and does nothing);
    // the writer, refused by the socket, tries again instead of waiting.
    let Step::Write(mut b) = q.flush(true) else {
        panic!("no batch")
    };
    assert!(matches!(q.flush(true), Step::Idle));
    b.wrote(10);
    assert_eq!(q.put_back(b, true).0, Flush::More);
    // Once only: the next refusal waits again.
    let Step::Write(mut b) = q.flush(true) else {
        panic!("no batch")
    };
    b.wrote(0);
    assert_eq!(q.put_back(b, true).0, Flush::Blocked);
    // A flush during a direct write leaves nothing behind: the direct
    // writer asks for a flush itself when frames are left.
    let mut q = SendQueue::new();
    let Pushed::Write(d) = q.push(0, small(1), None, true) else {
        panic!("not direct")
    };
    assert!(matches!(q.flush(true), Step::Idle));
    assert_eq!(q.wrote_direct(1, d, Some(2)), None);
    let Step::Write(mut b) = q.flush(true) else {
        panic!("no batch")
    };
    b.wrote(0);
    assert_eq!(q.put_back(b, true).0, Flush::Blocked);
}

#[test]
fn batches_are_bounded_in_frames_bytes_and_slices() {
    let mut q = SendQueue::new();
    for i in 0..100 {
        let _ = q.push(0, small(i), None, false);
    }
    let Step::Write(b) = q.flush(true) else {
        panic!()
    };
    assert_eq!(b.len(), BATCH_FRAMES);
    let _ = q.put_back(b, false);
    // Bytes: a frame that reaches the bound is the last one.
    let mut q = SendQueue::new();
    for i in 0..4 {
        let body = BATCH_BYTES / 2 - 100;
        let _ = q.push(
            0,
            F {
                id: i,
                body,
                parted: false,
            },
            None,
            false,
        );
    }
    let Step::Write(b) = q.flush(true) else {
        panic!()
    };
    assert_eq!(b.len(), 3);
    let _ = q.put_back(b, false);
    // Slices: frames of many parts.
    #[derive(Clone, Copy)]
    struct Many(usize);
    impl Payload for Many {
        fn body_len(&self) -> usize {
            10
        }
        fn wire_len(&self) -> usize {
            15
        }
        fn slices(&self) -> usize {
            self.0
        }
    }
    let mut q = SendQueue::new();
    for _ in 0..3 {
        let _ = q.push(0, Many(400), None, false);
    }
    let Step::Write(b) = q.flush(true) else {
        panic!()
    };
    assert_eq!(b.len(), 2);
    let _ = q.put_back(b, false);
    let mut q = SendQueue::new();
    let _ = q.push(0, Many(5000), None, false);
    let Step::Write(b) = q.flush(true) else {
        panic!()
    };
    assert_eq!(b.len(), 1, "a frame alone may have more slices");
    let _ = q.put_back(b, false);
}

#[test]
fn stop_refuses_then_closes_or_drops() {
    let mut q = SendQueue::new();
    let _ = q.push(0, small(1), None, false);
    let _ = q.push(0, small(2), None, false);
    q.stop();
    assert!(matches!(
        q.push(0, small(3), None, true),
        Pushed::Refused(_)
    ));
    assert!(q.has_work());
    // Connected: written, then close.
    assert_eq!(drain(&mut q), vec![1, 2]);
    assert!(matches!(q.flush(true), Step::Close));
    // Unconnected: dropped.
    let mut q = SendQueue::new();
    let _ = q.push(0, small(1), None, false);
    q.stop();
    assert!(matches!(
        q.flush(false),
        Step::Dropped(Counts {
            frames: 1,
            bytes: 8
        })
    ));
    assert!(matches!(q.flush(false), Step::Idle));
}

/// A lane's fences and waits do not count: dropping them makes no room,
/// and dropping a wait would break the order, so they stay.
#[test]
fn pop_oldest_leaves_the_frames_that_do_not_count() {
    #[derive(Debug)]
    struct C(u32, bool);
    impl Payload for C {
        fn body_len(&self) -> usize {
            8
        }
        fn wire_len(&self) -> usize {
            13
        }
        fn counts(&self) -> bool {
            self.1
        }
    }
    let mut q = SendQueue::new();
    let _ = q.push(0, C(0, false), None, false);
    let _ = q.push(0, C(1, true), None, false);
    q.push_front(C(2, false));
    assert_eq!(q.pop_oldest().map(|c| c.0), Some(1));
    assert!(q.pop_oldest().is_none());
    assert_eq!(q.queued(), Counts::default());
    let Step::Write(b) = q.flush(true) else {
        panic!()
    };
    let ids: Vec<u32> = b.iter().map(|(c, _)| c.0).collect();
    assert_eq!(ids, [2, 0]);
}

#[test]
fn pop_oldest_takes_unstarted_frames_from_the_front() {
    let mut q = SendQueue::new();
    for i in 0..5 {
        let _ = q.push(0, small(i), None, false);
    }
    let gone: Vec<u32> = (0..2)
        .filter_map(|_| q.pop_oldest())
        .map(|f| f.id)
        .collect();
    assert_eq!(gone, vec![0, 1]);
    assert_eq!(q.queued().frames, 3);
    // A failed write loses its batch.
    let Step::Write(b) = q.flush(true) else {
        panic!()
    };
    assert_eq!(
        q.lost(b),
        Counts {
            frames: 3,
            bytes: 24
        }
    );
    assert_eq!(q.queued(), Counts::default());
    assert!(!q.is_busy());
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
    f: F,
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
        parts in any::<bool>(),
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
                    let f = F {
                        id: next_id,
                        body: size,
                        parted: parts && crate::frame::is_parted(size),
                    };
                    known.insert(next_id, Known {
                        sender: s,
                        seq: next_seq[s as usize],
                        body: size,
                        pushed_at: next_id,
                        f,
                    });
                    next_id += 1;
                    next_seq[s as usize] += 1;
                    pushed.add(size);
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
                        written.add(f.body);
                    }
                }
                Op::Flush { take } => match q.flush(true) {
                    Step::Write(mut b) => {
                        let offered = offered(&b);
                        let take = take.min(offered);
                        let mut left = take;
                        for (f, s) in b.iter() {
                            if left == 0 {
                                break;
                            }
                            let n = (f.next_boundary(s).unwrap_or(f.wire_len()) - s).min(left);
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
                        dropped.add(f.body);
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

        // The wire is whole frames, one after another, except that whole
        // frames of at most INTERLEAVE_MAX bytes may come between the
        // parts of a frame in parts (one at a time). `order`: the order in
        // which frames end, which is the order a receiver delivers them.
        let mut order: Vec<u32> = Vec::new();
        let mut got: HashMap<u32, usize> = HashMap::new();
        // A frame cut in the middle (of itself or of a part), and the frame
        // in parts in progress.
        let mut mid: Option<u32> = None;
        let mut open: Option<u32> = None;
        for &(id, n) in &wire {
            let f = known[&id].f;
            if let Some(m) = mid {
                prop_assert_eq!(m, id, "a frame cut in the middle by another");
            } else if let Some(p) = open.filter(|p| *p != id) {
                prop_assert!(!f.parted && f.body <= INTERLEAVE_MAX,
                             "frame {} between the parts of {}", id, p);
            }
            let g = got.entry(id).or_default();
            *g += n;
            prop_assert!(*g <= f.wire_len());
            if *g == f.wire_len() {
                order.push(id);
                mid = None;
                if open == Some(id) {
                    open = None;
                }
            } else if f.parted {
                open = Some(id);
                mid = (!f.at_boundary(*g)).then_some(id);
            } else {
                mid = Some(id);
            }
        }
        prop_assert!(mid.is_none() && open.is_none(), "a frame is cut short");
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
        // A large frame is passed at most MAX_PASSES times (in parts: at
        // each boundary): frames pushed after it and written before it.
        for (i, id) in order.iter().enumerate() {
            let k = &known[id];
            if k.body > DIRECT_MAX {
                let passed = order[..i]
                    .iter()
                    .filter(|o| known[o].pushed_at > k.pushed_at)
                    .count();
                let stops = k.f.layout().map_or(1, |l| l.parts() + 1);
                prop_assert!(passed <= MAX_PASSES as usize * stops, "passed {} times", passed);
            }
        }
    }
}
