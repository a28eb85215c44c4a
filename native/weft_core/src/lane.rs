//! Lanes: the parallel connections of a channel, which lane a message
//! takes, and in what order frames leave a lane. Pure policy: no socket,
//! lock or clock (time is an argument).
//!
//! # The lane plan, and which lane a message takes
//!
//! Two nodes share, per channel both of them have, `min(local, remote)`
//! parallelism lanes, so both sides compute the same plan. Ordering holds per
//! lane, so with affinity a message's lane is a pure function of its
//! partition key (or of its destination when no key is given): messages with
//! the same key stay in order while different keys spread over the lanes.
//!
//! # The send queue of one lane
//!
//! Which frame goes on the wire next, and who writes it.
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
//! - **Between parts**: a large frame that goes out in parts
//!   ([`Payload::next_boundary`]; the wire format is
//!   [`crate::frame::PartedLayout`]) is written one part per batch, and
//!   while it stands between two parts it is passed as if unstarted, by
//!   frames of at most [`INTERLEAVE_MAX`] bytes (again at most
//!   [`MAX_PASSES`] at each boundary). A small frame then waits behind at
//!   most one part of a large frame, not all of it.
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

use crate::frame::INTERLEAVE_MAX;
use crate::spec::{NodeSpec, CONTROL_CHANNEL};
use std::collections::VecDeque;

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

/// Every connection of [`plan`], one key each: the lanes of each channel,
/// and after them, for a channel of two lanes or more, its shared lane
/// ([`shared_lane`]).
pub fn plan_keys(local: &NodeSpec, remote: &NodeSpec) -> Vec<LaneKey> {
    plan(local, remote)
        .into_iter()
        .flat_map(|(channel, n)| {
            let shared = shared_lane(n);
            (0..n).chain(shared).map(move |index| LaneKey {
                channel: channel.clone(),
                index,
            })
        })
        .collect()
}

/// The index of the shared lane of a channel of `lanes` lanes (see
/// [`crate::share`]): `lanes` itself, one past the last lane, when there
/// are two lanes or more; none for a single lane, which carries everything
/// on one connection anyway.
pub fn shared_lane(lanes: u16) -> Option<u16> {
    (lanes >= 2).then_some(lanes)
}

/// Whether a channel with `parallelism` lanes here has a connection of
/// index `index` (a lane or the shared lane) for some peer: what an
/// acceptor checks of a hello before it knows the plan.
pub fn index_exists(parallelism: u16, index: u16) -> bool {
    index < parallelism || shared_lane(parallelism).is_some_and(|s| index <= s)
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

// ---------------------------------------------------------------------
// The send queue of one lane.
// ---------------------------------------------------------------------

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
    /// For a frame that goes out in parts: the end of the part that wire
    /// offset `sent` is in (where other frames may go between), at most
    /// [`Payload::wire_len`]. `None`: a frame written whole.
    fn next_boundary(&self, _sent: usize) -> Option<usize> {
        None
    }
    /// Whether wire offset `sent` (started, not finished) is between two
    /// parts of a frame that goes out in parts.
    fn at_boundary(&self, _sent: usize) -> bool {
        false
    }
    /// Whether the frame counts in [`Counts`] (and so in the send-queue
    /// bounds and the lane's counters): every frame but a lane's fences
    /// and waits (see [`crate::share`]), which are the lane's own
    /// bookkeeping and never dropped to make room.
    fn counts(&self) -> bool {
        true
    }
    /// The frame is all on the wire (the socket took its last byte):
    /// called once, by the writer, before the frame leaves the queue's
    /// hands (outside the queue's lock for a batch; see
    /// [`crate::share::Router::written`] for what a fence does with it).
    fn written(&mut self) {}
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
        let mut c = Counts::default();
        c.add_item(f);
        c
    }

    fn add(&mut self, body: usize) {
        self.frames += 1;
        self.bytes += body as u64;
    }

    fn add_item(&mut self, f: &impl Payload) {
        if f.counts() {
            self.add(f.body_len());
        }
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
    /// How many frames went ahead of this one at wire offset `pass_mark`.
    passed: u32,
    pass_mark: usize,
}

impl<T: Payload> Entry<T> {
    fn new(item: T, sender: Option<Sender>) -> Self {
        Entry {
            item,
            sent: 0,
            sender,
            passed: 0,
            pass_mark: 0,
        }
    }

    /// May a small frame of `len` bytes from `sender` go ahead of this one?
    fn passable_by(&self, sender: Sender, len: usize) -> bool {
        let between = self.sent == 0 || (len <= INTERLEAVE_MAX && self.item.at_boundary(self.sent));
        between
            && len <= DIRECT_MAX
            && self.item.body_len() > DIRECT_MAX
            && self.passes() < MAX_PASSES
            && self.sender.is_some_and(|s| s != sender)
    }

    /// Frames that went ahead of this one where it stands now.
    fn passes(&self) -> u32 {
        if self.pass_mark == self.sent {
            self.passed
        } else {
            0
        }
    }

    /// A frame went ahead of this one.
    fn pass(&mut self) {
        if self.pass_mark != self.sent {
            self.pass_mark = self.sent;
            self.passed = 0;
        }
        self.passed += 1;
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
            let mut f = self.frames.pop_front().expect("front exists");
            f.item.written();
            self.written.add_item(&f.item);
        }
    }
}

/// The send queue of one lane; see the module documentation.
pub struct SendQueue<T> {
    queue: VecDeque<Entry<T>>,
    /// A writer holds frames taken off the queue (a direct write or a
    /// batch).
    busy: bool,
    /// A flush came while a writer held frames ([`SendQueue::flush`]
    /// answered [`Step::Idle`]): it may have been asked because the socket
    /// had room again, so the writer does not wait for that news
    /// ([`SendQueue::put_back`]).
    missed: bool,
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
            missed: false,
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
        let entry = Entry::new(item, sender);
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
        self.queued.add_item(&e.item);
        let at = match e.sender {
            Some(s) => {
                let len = e.item.body_len();
                let mut at = self.queue.len();
                while at > 0 && self.queue[at - 1].passable_by(s, len) {
                    at -= 1;
                    self.queue[at].pass();
                }
                at
            }
            None => self.queue.len(),
        };
        self.queue.insert(at, e);
    }

    /// The front frame stopped between two of its parts: the frames queued
    /// right behind it that may pass it go first (in their order).
    fn interleave(&mut self) {
        let Some(front) = self.queue.front() else {
            return;
        };
        if front.sent == 0 || !front.item.at_boundary(front.sent) {
            return;
        }
        let mut k = 1;
        while k < self.queue.len() {
            let (len, sender) = (self.queue[k].item.body_len(), self.queue[k].sender);
            if !sender.is_some_and(|s| self.queue[0].passable_by(s, len)) {
                break;
            }
            self.queue[0].pass();
            k += 1;
        }
        if k > 1 {
            let parted = self.queue.pop_front().expect("front exists");
            self.queue.insert(k - 1, parted);
        }
    }

    /// A direct write ended at `now`: the socket took `written` bytes
    /// (`None`: it took nothing, full or failed). The frame comes back when
    /// it is all written (count it sent); else what is left goes first, or
    /// (nothing written) is queued as if just pushed.
    pub fn wrote_direct(&mut self, now: Micros, d: Direct<T>, written: Option<usize>) -> Option<T> {
        self.busy = false;
        // (the writer asks for a flush whenever frames are left)
        self.missed = false;
        // A stream counts from the end of this write: a write that took
        // long (the thread was preempted) is not followed by another direct
        // one at once.
        self.last_push = Some(now);
        let mut e = d.0;
        match written {
            Some(n) if n >= e.item.wire_len() => {
                e.item.written();
                Some(e.item)
            }
            Some(n) => {
                // Partly written: before anything queued meanwhile.
                e.sent = n;
                self.queued.add_item(&e.item);
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
    /// frame has more); frames left in the queue can still be passed. A
    /// frame in parts ends the batch: the writer offers it to the end of
    /// its current part (past [`BATCH_BYTES`] if need be).
    pub fn flush(&mut self, writable: bool) -> Step<T> {
        if self.busy {
            self.missed = true;
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
            n += 1;
            if f.item.next_boundary(f.sent).is_some() {
                // In parts: to the end of this part (the writer offers no
                // more), and the batch ends there, so that what queues
                // meanwhile may go between.
                break;
            }
            bytes += f.unsent();
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
    ///
    /// Blocked, the writer waits until the socket is writable again; but
    /// not if a flush came while it wrote: that flush may have been the
    /// news that the socket had room (an edge-triggered readiness, taken by
    /// another thread and not repeated), so it is [`Flush::More`] and the
    /// writer tries again (a full socket then refuses it, and tells again
    /// when it has room).
    pub fn put_back(&mut self, batch: Batch<T>, blocked: bool) -> (Flush, Counts) {
        self.busy = false;
        let missed = std::mem::take(&mut self.missed);
        self.queued.sub(batch.written);
        for f in batch.frames.into_iter().rev() {
            self.queue.push_front(f);
        }
        self.interleave();
        let next = if blocked && !missed {
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
        self.missed = false;
        self.queued.sub(batch.written);
        let mut lost = Counts::default();
        for f in &batch.frames {
            lost.add_item(&f.item);
        }
        self.queued.sub(lost);
        lost
    }

    /// Put `item` first, before every queued frame (none of which has
    /// started on the wire: right after [`SendQueue::reconnected`], with no
    /// writer holding frames). For a control frame that must open a new
    /// connection (a wait, see [`crate::share`]); nothing passes it.
    pub fn push_front(&mut self, item: T) {
        debug_assert!(!self.busy && self.queue.iter().all(|e| e.sent == 0));
        let e = Entry::new(item, None);
        self.queued.add_item(&e.item);
        self.queue.push_front(e);
    }

    /// Remove the oldest frame that has not started on the wire, that no
    /// writer holds, and that counts (`overload => drop_oldest`: the
    /// caller drops frames this way until there is room). A frame that
    /// does not count (a lane's fence or wait, see [`crate::share`]) takes
    /// no room, and stays: dropping a wait would let the frames behind it
    /// overtake those before its fence.
    pub fn pop_oldest(&mut self) -> Option<T> {
        // (what is left of a write goes back to the front; a frame in parts
        // may have been passed since)
        let i = self
            .queue
            .iter()
            .position(|f| f.sent == 0 && f.item.counts())?;
        let f = self.queue.remove(i).expect("index in range");
        self.queued.sub(Counts::one(&f.item));
        Some(f.item)
    }

    /// The lane has a new connection: frames that started on the previous
    /// one cannot go on from the middle on this one, so they leave (their
    /// counts are returned: lost with the connection), and `relay` may lay
    /// out again each frame that has not started (for what the new
    /// connection agreed on). Frames a writer holds are not touched: a
    /// writer that wrote them to the old connection calls this again once
    /// it has put them back.
    pub fn reconnected(&mut self, mut relay: impl FnMut(&mut T)) -> Counts {
        let mut lost = Counts::default();
        self.queue.retain_mut(|e| {
            if e.sent > 0 {
                lost.add_item(&e.item);
                return false;
            }
            relay(&mut e.item);
            true
        });
        self.queued.sub(lost);
        lost
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
mod queue_tests;

#[cfg(test)]
mod plan_tests {
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
