//! The send queue of one lane: which frame goes on the wire next, and who
//! writes it. Pure policy: no socket, lock or clock (time is an argument).
//!
//! The transport's lane is a writer around a [`SendQueue`]: it holds the
//! queue under its lock, asks it what to do with every frame pushed and
//! every flush, writes what it is told to outside the lock, and reports
//! back how many bytes the socket took.
//!
//! Policy, in the order a frame meets it:
//! - **Direct or queued** ([`SendQueue::push`]): a frame is written by its
//!   sender at once ([`Pushed::Write`]) when the lane can be written, no
//!   writer holds frames, nothing waits, the body is at most
//!   [`DIRECT_MAX`] bytes (a larger copy would run long on the sender's
//!   thread), and the previous push was not less than [`STREAM_GAP`] ago (a
//!   stream is better served by batching: many frames per system call, not
//!   one per frame on the sender's thread). Otherwise it is queued.
//! - **Small passes large**: a queued frame of at most [`DIRECT_MAX`] bytes
//!   whose sender is known goes ahead of the large frames at the end of the
//!   queue that *other* senders pushed and that have not started on the
//!   wire; each large frame is passed at most [`MAX_PASSES`] times, so a
//!   steady stream of small frames cannot hold it back for ever. Frames of
//!   one sender keep their order, and so do frames of unknown senders
//!   (control frames), which nothing passes. The promise is Erlang's: order
//!   holds per sender and destination, not across senders.
//! - **Batches** ([`SendQueue::flush`]): a writer takes at most
//!   [`BATCH_FRAMES`] frames, about [`BATCH_BYTES`] bytes and
//!   [`MAX_SLICES`] slices for one vectored write; what is left of them
//!   goes back to the front, in order ([`SendQueue::put_back`]), where
//!   nothing passes a frame that started on the wire.
//! - **Drop oldest** ([`SendQueue::pop_oldest`]): unstarted frames leave
//!   from the front, one by one, until the caller has room.
//!
//! While a writer holds frames (a direct write or a batch), new frames
//! queue behind them, so frames leave in the order the policy gave them.
//! The queue outlives connections: a lane that reconnects keeps what was
//! queued. Every frame pushed is, in the end, written (counted by
//! [`SendQueue::put_back`] or returned by [`SendQueue::wrote_direct`]),
//! dropped (handed back or counted), or still queued
//! ([`SendQueue::queued`]).

use std::collections::VecDeque;

/// Microseconds from any origin (the caller's clock).
pub type Micros = u64;

/// Who pushed a frame, as far as ordering goes: frames with the same
/// sender leave in the order they were pushed. Two senders that share a
/// value only lose the chance to pass each other.
pub type Sender = u64;

/// Frames taken for one write by a flush.
pub const BATCH_FRAMES: usize = 64;

/// Bytes one flush offers to one write, so that a flush (on a scheduler,
/// in the default mode) stays short even with a large frame queued.
pub const BATCH_BYTES: usize = 1 << 20;

/// Frames whose body is larger than this are never written by the sender
/// itself (the copy into the socket buffer would run long on the sender's
/// thread), and are passed by small frames of other senders.
pub const DIRECT_MAX: usize = 64 * 1024;

/// Slices in one vectored write (Linux's `IOV_MAX` is 1024).
pub const MAX_SLICES: usize = 1024;

/// How many small frames may go ahead of one large frame.
pub const MAX_PASSES: u32 = 64;

/// A push this soon after the previous one is part of a stream: it queues,
/// so the writer batches many frames per system call. Sparse sends
/// (request and reply, heartbeats) stay direct, which saves a thread
/// wake-up.
pub const STREAM_GAP: Micros = 40;

/// What the queue needs to know of a frame.
pub trait Payload {
    /// Bytes of the body: what the send-queue bounds and counters count.
    fn body_len(&self) -> usize;
    /// Bytes on the wire: header and body.
    fn wire_len(&self) -> usize;
    /// Slices a vectored write of the whole frame needs (header and body
    /// parts).
    fn slices(&self) -> usize {
        2
    }
}

/// Frames and their body bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// How many frames.
    pub frames: u64,
    /// Their body bytes.
    pub bytes: u64,
}

impl Counts {
    /// One frame: `f`.
    pub fn one(f: &impl Payload) -> Counts {
        Counts {
            frames: 1,
            bytes: f.body_len() as u64,
        }
    }

    fn add(&mut self, body: usize) {
        self.frames += 1;
        self.bytes += body as u64;
    }

    fn sub(&mut self, c: Counts) {
        self.frames -= c.frames;
        self.bytes -= c.bytes;
    }
}

/// A frame in the queue; `sent` bytes of it (header first) are on the wire.
struct Entry<T> {
    item: T,
    sent: usize,
    sender: Option<Sender>,
    /// How many frames went ahead of this one.
    passed: u32,
}

impl<T: Payload> Entry<T> {
    /// May a small frame from `sender` go ahead of this one?
    fn passable_by(&self, sender: Sender) -> bool {
        self.sent == 0
            && self.item.body_len() > DIRECT_MAX
            && self.passed < MAX_PASSES
            && self.sender.is_some_and(|s| s != sender)
    }

    fn unsent(&self) -> usize {
        self.item.wire_len() - self.sent
    }
}

/// A frame its sender writes itself, now, while the queue holds back every
/// other writer; hand it back with [`SendQueue::wrote_direct`].
#[must_use = "a direct write must be reported with wrote_direct"]
pub struct Direct<T>(Entry<T>);

impl<T> Direct<T> {
    /// The frame to write (from its first byte).
    pub fn item(&self) -> &T {
        &self.0.item
    }
}

/// What became of a pushed frame.
#[must_use]
pub enum Pushed<T> {
    /// Write it now (one non-blocking write), then report with
    /// [`SendQueue::wrote_direct`].
    Write(Direct<T>),
    /// Queued: a flush should be asked for.
    Queued,
    /// The lane is stopped: the frame is handed back, dropped.
    Refused(T),
}

/// What a flush should do now.
#[must_use]
pub enum Step<T> {
    /// Nothing: a writer holds frames (it looks again when it ends), the
    /// lane waits for a connection, or nothing waits.
    Idle,
    /// Write this batch (one vectored write), then report with
    /// [`SendQueue::put_back`] or [`SendQueue::lost`].
    Write(Batch<T>),
    /// Stopped and everything written: close the connection.
    Close,
    /// Stopped with no connection: everything queued was dropped.
    Dropped(Counts),
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Nothing left to write for now.
    Done,
    /// The socket is full: flush again once it is writable.
    Blocked,
    /// A batch went out and more is queued: flush again soon.
    More,
}

/// Frames taken off the queue for one write. The writer owns them while it
/// writes, without the queue's lock.
#[must_use = "a batch must go back with put_back or lost"]
pub struct Batch<T> {
    frames: VecDeque<Entry<T>>,
    written: Counts,
}

impl<T: Payload> Batch<T> {
    /// The frames, in order, each with how many of its bytes are already on
    /// the wire (header first).
    pub fn iter(&self) -> impl Iterator<Item = (&T, usize)> {
        self.frames.iter().map(|e| (&e.item, e.sent))
    }

    /// Frames not completely written yet.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether every frame is written.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The socket took `n` more bytes, from the front: frames it completed
    /// leave the batch (dropped here, outside the queue's lock) and are
    /// counted when the batch goes back.
    pub fn wrote(&mut self, mut n: usize) {
        while n > 0 {
            let Some(f) = self.frames.front_mut() else {
                debug_assert!(false, "{n} bytes written beyond the batch");
                return;
            };
            let unsent = f.unsent();
            if n < unsent {
                f.sent += n;
                return;
            }
            n -= unsent;
            let f = self.frames.pop_front().expect("front exists");
            self.written.add(f.item.body_len());
        }
    }
}

/// The send queue of one lane; see the module documentation.
pub struct SendQueue<T> {
    queue: VecDeque<Entry<T>>,
    /// A writer holds frames taken off the queue (a direct write or a
    /// batch).
    busy: bool,
    stopped: bool,
    /// When the previous frame was pushed, or a direct write ended.
    last_push: Option<Micros>,
    /// Frames queued or held by a batch, not yet written or dropped.
    queued: Counts,
}

impl<T> Default for SendQueue<T> {
    fn default() -> Self {
        SendQueue {
            queue: VecDeque::new(),
            busy: false,
            stopped: false,
            last_push: None,
            queued: Counts::default(),
        }
    }
}

impl<T: Payload> SendQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// A frame from `sender` (`None`: unknown, never passes nor is
    /// passed), pushed at `now`. `writable`: the lane has a connection it
    /// can write to now.
    pub fn push(
        &mut self,
        now: Micros,
        item: T,
        sender: Option<Sender>,
        writable: bool,
    ) -> Pushed<T> {
        if self.stopped {
            return Pushed::Refused(item);
        }
        let streaming = self
            .last_push
            .is_some_and(|t| now.saturating_sub(t) < STREAM_GAP);
        self.last_push = Some(now);
        let entry = Entry {
            item,
            sent: 0,
            sender,
            passed: 0,
        };
        if writable
            && !self.busy
            && self.queue.is_empty()
            && !streaming
            && entry.item.body_len() <= DIRECT_MAX
        {
            // Other writers keep out while the sender writes: their frames
            // queue behind this one.
            self.busy = true;
            return Pushed::Write(Direct(entry));
        }
        self.enqueue(entry);
        Pushed::Queued
    }

    /// Queue `e` where the policy puts it: a small frame of a known sender
    /// before the unstarted large frames of other senders at the end.
    fn enqueue(&mut self, e: Entry<T>) {
        self.queued.add(e.item.body_len());
        let at = match e.sender {
            Some(s) if e.item.body_len() <= DIRECT_MAX => {
                let mut at = self.queue.len();
                while at > 0 && self.queue[at - 1].passable_by(s) {
                    at -= 1;
                    self.queue[at].passed += 1;
                }
                at
            }
            _ => self.queue.len(),
        };
        self.queue.insert(at, e);
    }

    /// A direct write ended at `now`: the socket took `written` bytes
    /// (`None`: it took nothing, full or failed). The frame comes back when
    /// it is all written (count it sent); else what is left goes first, or
    /// (nothing written) is queued as if just pushed.
    pub fn wrote_direct(&mut self, now: Micros, d: Direct<T>, written: Option<usize>) -> Option<T> {
        self.busy = false;
        // A stream counts from the end of this write: a write that took
        // long (the thread was preempted) is not followed by another direct
        // one at once.
        self.last_push = Some(now);
        let mut e = d.0;
        match written {
            Some(n) if n >= e.item.wire_len() => Some(e.item),
            Some(n) => {
                // Partly written: before anything queued meanwhile.
                e.sent = n;
                self.queued.add(e.item.body_len());
                self.queue.push_front(e);
                None
            }
            None => {
                self.enqueue(e);
                None
            }
        }
    }

    /// What a flush does now; `writable`: the lane has a connection it can
    /// write to. A batch holds the queue's front, at most [`BATCH_FRAMES`]
    /// frames, [`BATCH_BYTES`] bytes (its last frame may go past them: the
    /// writer offers no more) and [`MAX_SLICES`] slices (unless its one
    /// frame has more); frames left in the queue can still be passed.
    pub fn flush(&mut self, writable: bool) -> Step<T> {
        if self.busy {
            return Step::Idle;
        }
        if !writable {
            if self.stopped && !self.queue.is_empty() {
                let dropped = self.queued;
                self.queue.clear();
                self.queued = Counts::default();
                return Step::Dropped(dropped);
            }
            // Unconnected: the queue waits for a connection.
            return Step::Idle;
        }
        if self.queue.is_empty() {
            return if self.stopped {
                Step::Close
            } else {
                Step::Idle
            };
        }
        let (mut n, mut bytes, mut slices) = (0, 0, 0);
        while n < self.queue.len() && n < BATCH_FRAMES && bytes < BATCH_BYTES {
            let f = &self.queue[n];
            let s = f.item.slices();
            if n > 0 && slices + s > MAX_SLICES {
                break;
            }
            slices += s;
            bytes += f.unsent();
            n += 1;
        }
        self.busy = true;
        Step::Write(Batch {
            frames: self.queue.drain(..n).collect(),
            written: Counts::default(),
        })
    }

    /// The write of `batch` ended; `blocked`: the socket took less than it
    /// was offered. What is left of the batch goes back to the front, in
    /// order. Returns what to do next and the frames the batch completed.
    pub fn put_back(&mut self, batch: Batch<T>, blocked: bool) -> (Flush, Counts) {
        self.busy = false;
        self.queued.sub(batch.written);
        for f in batch.frames.into_iter().rev() {
            self.queue.push_front(f);
        }
        let next = if blocked {
            Flush::Blocked
        } else if self.has_work() {
            Flush::More
        } else {
            Flush::Done
        };
        (next, batch.written)
    }

    /// The write of `batch` failed: its frames are lost with the
    /// connection. Returns them, counted (frames that [`Batch::wrote`]
    /// completed before stay written).
    pub fn lost(&mut self, batch: Batch<T>) -> Counts {
        self.busy = false;
        self.queued.sub(batch.written);
        let mut lost = Counts::default();
        for f in &batch.frames {
            lost.add(f.item.body_len());
        }
        self.queued.sub(lost);
        lost
    }

    /// Remove the oldest frame that has not started on the wire and that
    /// no writer holds (`overload => drop_oldest`: the caller drops frames
    /// this way until there is room).
    pub fn pop_oldest(&mut self) -> Option<T> {
        // Only the front can have started (what is left of a write goes
        // back there).
        let i = self.queue.iter().position(|f| f.sent == 0)?;
        let f = self.queue.remove(i).expect("index in range");
        self.queued.sub(Counts {
            frames: 1,
            bytes: f.item.body_len() as u64,
        });
        Some(f.item)
    }

    /// Take no more frames; what is queued is still written (if the lane
    /// is connected, else dropped by the next flush), then [`Step::Close`].
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Whether [`SendQueue::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether a writer holds frames (a flush asked now would find nothing
    /// to do; the writer looks at the queue again when it ends).
    pub fn is_busy(&self) -> bool {
        self.busy
    }

    /// Whether a flush has something to do: frames wait, or the lane is
    /// stopped (close, or drop).
    pub fn has_work(&self) -> bool {
        !self.queue.is_empty() || self.stopped
    }

    /// Frames queued or held by a writer's batch, and their body bytes
    /// (a direct write's frame is not counted).
    pub fn queued(&self) -> Counts {
        self.queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn small(id: u32) -> F {
        F { id, body: 8 }
    }

    fn large(id: u32) -> F {
        F {
            id,
            body: DIRECT_MAX + 1,
        }
    }

    /// Flush everything (a socket that takes all), returning ids in wire
    /// order.
    fn drain(q: &mut SendQueue<F>) -> Vec<u32> {
        let mut out = Vec::new();
        while let Step::Write(mut b) = q.flush(true) {
            out.extend(b.iter().map(|(f, _)| f.id));
            let all: usize = b.iter().map(|(f, s)| f.wire_len() - s).sum();
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
            let _ = q.push(0, F { id: i, body }, None, false);
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
}
