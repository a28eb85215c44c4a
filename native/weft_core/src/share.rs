//! The shared lane: small frames of a channel's lanes on one connection.
//!
//! A channel with `n` lanes (`n >= 2`) has `n + 1` connections to a peer
//! that agreed on the capability `share`: its lanes `0..n`, and the
//! *shared lane* (index `n`, see [`crate::lane::plan`]). A lane sends its
//! small frames (data frames of at most [`SHARE_MAX`] bytes, without header
//! extensions) on the shared lane, so that many lanes' small messages leave
//! and arrive in one system call as on a single connection; its large
//! frames (and frames with extensions) go on its own connection, where they
//! hold back no other lane. This is Akka Artery's split of ordinary and
//! large messages into streams, decided per frame instead of per recipient.
//!
//! # Order across two connections
//!
//! Order holds per lane, so a lane uses one connection at a time: its
//! *mode*, [`Mode::Shared`] or [`Mode::Own`]. To change mode it sends a
//! *fence* on the connection it leaves, after its last frame there, and
//! holds its new frames back (queued on its own connection, unwritten)
//! until the peer answers the fence. The peer answers (on the control lane)
//! after it has delivered everything it read before the fence, so every
//! frame the lane sent on the old connection was delivered (or lost with
//! that connection) before the first on the new one is written.
//!
//! - A lane starts in [`Mode::Own`]. It moves to the shared lane the first
//!   time its queue is empty ([`Router::idle`]; the transport asks only
//!   once the shared lane's connection agreed on `share`), and again later
//!   once it has sent no unshareable frame for [`QUIET_US`]. Frames pushed
//!   while that fence is out wait for the answer, then leave on the shared
//!   lane; an unshareable one ends the change at once: the lane stays in
//!   [`Mode::Own`] and writes what it held behind the fence, where the
//!   fence went before them.
//! - In [`Mode::Shared`], the first frame that may not be shared starts a
//!   change to [`Mode::Own`]: that frame, and every frame after it until
//!   the answer, waits one round trip.
//! - A fence whose answer does not come within [`RETRY_US`] (its connection
//!   or the control lane's was replaced, and took it) is sent again with a
//!   new token, on the same connection. The answer to any fence of the
//!   change in progress ends it; an answer to an earlier change's is
//!   ignored.
//! - A lane that stops without waiting for the answer puts what it held on
//!   the connection it was leaving, behind what it sent there.
//!
//! # The peer waits instead (capability `share_wait`)
//!
//! With a peer that agreed on `share_wait` ([`Router::set_peer_waits`]), a
//! change from the shared lane to the lane's own connection holds its
//! frames only until the fence is *written* (the shared lane's socket took
//! it; [`Router::written`]), not until it is answered: then a *wait* for
//! that fence opens the lane's own connection, and the frames follow it at
//! once. The peer reads nothing more from that connection, after the wait,
//! until it has delivered the fence from the shared lane ([`wait_passes`]);
//! so the order holds as before, and the change costs no round trip. The
//! frames behind a wait never depend on a frame still in this node's
//! queues (which a peer given up on drops, and counts): only on bytes that
//! a socket took, as every frame does.
//!
//! The answer still comes. A fence without one is sent again as before,
//! but with the same token (the wait names it): a fence lost with a
//! replaced shared connection would otherwise leave the lane's own
//! connection waiting for ever. Until the answer, a new own connection of
//! the lane starts with the wait again ([`Router::wait_out`]): the peer
//! keeps a wait per connection, the one that carried it, so what follows
//! a wait lost with its connection waits behind the new connection's own.
//! Only one such change is out at a time: the lane goes back to the
//! shared lane only after the answer.
//!
//! The change back to the shared lane is unchanged (held until answered):
//! a wait on the shared lane would hold back every other lane's frames
//! there.
//!
//! # A bound on what one lane puts on the shared lane
//!
//! A frame may take the shared lane only while its lane has at most
//! [`BACKLOG_MAX`] bytes waiting, with it ([`may_share`]): on the shared
//! lane, held behind a fence, or queued on its own connection. A lane that
//! sends faster than the shared lane drains (a flood on one partition key)
//! thus leaves it for its own connection, as for a large frame, and comes
//! back after [`QUIET_US`] without such a frame. So a small frame on the
//! shared lane waits behind at most `BACKLOG_MAX` + [`SHARE_MAX`] bytes of
//! each other lane (plus the batch on the wire), however much any of them
//! sends; without the bound, one lane's flood delayed every other lane's
//! small messages for as long as it took to drain.
//!
//! Pure policy: the transport's lane calls it under its lock, with the time.

use crate::lane::Micros;

/// Largest body a lane sends on the shared lane, in bytes: a frame that
/// may go between the parts of a large one ([`crate::frame::INTERLEAVE_MAX`]).
pub const SHARE_MAX: usize = crate::frame::INTERLEAVE_MAX;

/// Most bytes a lane may have waiting for a frame of it to take the shared
/// lane (64 KiB; see [`may_share`]).
pub const BACKLOG_MAX: usize = 64 * 1024;

/// Whether a frame of `len` body bytes may take the shared lane: it is
/// `small` (a plain data frame of at most [`SHARE_MAX`] bytes, without
/// header extensions), and its lane's `backlog` (the body bytes of its
/// frames not yet written: on the shared lane, held behind a fence, or on
/// its own queue) stays within [`BACKLOG_MAX`] with it.
pub fn may_share(small: bool, backlog: usize, len: usize) -> bool {
    small && len <= SHARE_MAX && backlog.saturating_add(len) <= BACKLOG_MAX
}

/// How long a lane in [`Mode::Own`] must have sent only shareable frames
/// before it goes back to the shared lane, in microseconds (1 s).
pub const QUIET_US: Micros = 1_000_000;

/// How long a fence waits for its answer before it is sent again, in
/// microseconds (1 s).
pub const RETRY_US: Micros = 1_000_000;

/// Which connection a lane's frames take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The channel's shared lane.
    Shared,
    /// The lane's own connection.
    Own,
}

/// Where a frame pushed now goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Onto the shared lane's queue.
    Shared,
    /// Onto the lane's own queue, written as usual.
    Own,
    /// Onto the lane's own queue, not written until the fence is answered.
    Held,
}

/// A fence to send: on the connection of `on`, after every frame the lane
/// put there so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The connection it goes on (the one the lane leaves).
    pub on: Mode,
    /// Its token, which the answer repeats.
    pub token: u64,
    /// Whether the lane is told when the fence is written
    /// ([`Router::written`]): a change the peer waits for
    /// ([`Router::set_peer_waits`]).
    pub wait: bool,
}

/// Whether the peer's wait for the fence `token` of a lane, read on the
/// lane's own connection, lets what follows it be read: the last fence of
/// that lane delivered from the shared lane had that token (capability
/// `share_wait`). Tokens start at a random value per lane's life
/// ([`Router::set_peer_waits`]), so a fence of an earlier life of the lane
/// does not pass a wait of this one; and a lane has at most one such wait
/// out, so the last fence is the only one to look at.
pub fn wait_passes(last_fence: Option<u64>, token: u64) -> bool {
    last_fence == Some(token)
}

/// What an answer to a fence did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Not the fence out now (an old token, or none out): nothing changes.
    Stale,
    /// The lane is in `Mode` now. With [`Mode::Shared`], the frames it held
    /// move to the shared lane's queue, in order; with [`Mode::Own`], they
    /// are written on its own connection.
    Now(Mode),
}

#[derive(Debug, Clone, Copy)]
struct Change {
    to: Mode,
    /// The connection its fences go on (the one the lane leaves).
    on: Mode,
    /// Whether the peer waits for its fence ([`Router::set_peer_waits`]).
    waits: bool,
    /// Whether the lane holds its frames back: until the answer, or, if
    /// the peer waits, until the fence is written.
    holding: bool,
    /// The change's first fence: an answer to it or to any fence sent
    /// again since (they all went on the same connection, after every
    /// frame the lane put there before the change) ends the change.
    first: u64,
    /// Its last fence.
    token: u64,
    sent_at: Micros,
}

/// The mode of one lane and the change in progress, if any.
#[derive(Debug, Clone)]
pub struct Router {
    mode: Mode,
    change: Option<Change>,
    next_token: u64,
    /// Whether the peer waits for a fence on the lane's own connection
    /// ([`Router::set_peer_waits`]).
    peer_waits: bool,
    /// When the last unshareable frame was pushed.
    last_unshareable: Option<Micros>,
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

impl Router {
    /// A lane in [`Mode::Own`], with no change in progress.
    pub fn new() -> Router {
        Router {
            mode: Mode::Own,
            change: None,
            next_token: 1,
            peer_waits: false,
            last_unshareable: None,
        }
    }

    /// A lane in [`Mode::Own`] whose tokens start at `first_token`, which
    /// the caller draws at random: so that, with a peer that waits
    /// ([`Router::set_peer_waits`]), no fence of an earlier life of the
    /// lane passes this one's waits ([`wait_passes`]).
    pub fn starting_at(first_token: u64) -> Router {
        Router {
            next_token: first_token,
            ..Router::new()
        }
    }

    /// Whether the peer agreed on `share_wait` (the lane's own connection
    /// did, the last one while reconnecting): if so, a change to
    /// [`Mode::Own`] that starts from now on holds nothing back (see the
    /// module's docs).
    pub fn set_peer_waits(&mut self, waits: bool) {
        self.peer_waits = waits;
    }

    /// The connection the fences of the change in progress go on, if a
    /// change is in progress (held back or waited for by the peer).
    pub fn fence_out(&self) -> Option<Mode> {
        self.change.map(|c| c.on)
    }

    /// The mode frames are written in now (the one being left, while a
    /// change is in progress).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The token of a change the peer waits for, once its wait was sent
    /// and while its answer has not come: a new connection of the lane
    /// then starts with a wait for it too (the wait sent on the connection
    /// it replaces may have been lost with it, and what follows must still
    /// wait for the fence).
    pub fn wait_out(&self) -> Option<u64> {
        self.change
            .filter(|c| c.waits && !c.holding)
            .map(|c| c.token)
    }

    /// Whether the lane holds its frames back, waiting for an answer.
    pub fn is_holding(&self) -> bool {
        self.change.is_some_and(|c| c.holding)
    }

    /// A change to `to` starts (its first fence) at `now`, on the
    /// connection the lane is on.
    fn start(&mut self, now: Micros, to: Mode) -> Fence {
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        // (the peer waits only for a change to the lane's own connection)
        let waits = self.peer_waits && to == Mode::Own;
        let c = Change {
            to,
            on: self.mode,
            waits,
            holding: true,
            first: token,
            token,
            sent_at: now,
        };
        self.change = Some(c);
        Fence {
            on: c.on,
            token,
            wait: waits,
        }
    }

    /// A frame is pushed at `now`; `shareable` says whether it may take the
    /// shared lane. Returns where it goes, and a fence to send before it
    /// (on the connection the lane leaves).
    pub fn push(&mut self, now: Micros, shareable: bool) -> (Route, Option<Fence>) {
        if !shareable {
            self.last_unshareable = Some(now);
        }
        match (self.change, self.mode) {
            (Some(c), _) if c.to == Mode::Shared && !shareable => {
                // Back to the shared lane no more: the fence went on the own
                // connection, which the lane keeps, so nothing need wait.
                self.change = None;
                (Route::Own, None)
            }
            (Some(c), _) if c.holding => (Route::Held, None),
            // (a change the peer waits for: the lane is on its own
            // connection already)
            (Some(_), mode) => (route(mode), None),
            (None, Mode::Shared) if shareable => (Route::Shared, None),
            (None, Mode::Shared) => {
                let f = self.start(now, Mode::Own);
                (Route::Held, Some(f))
            }
            (None, Mode::Own) => (Route::Own, None),
        }
    }

    /// The lane's own queue is empty at `now` (everything written): in
    /// [`Mode::Own`], with no unshareable frame for [`QUIET_US`] (or none
    /// ever), it starts to the shared lane. Returns the fence to send on its
    /// own connection.
    pub fn idle(&mut self, now: Micros) -> Option<Fence> {
        if self.mode != Mode::Own || self.change.is_some() {
            return None;
        }
        if self
            .last_unshareable
            .is_some_and(|t| now.saturating_sub(t) < QUIET_US)
        {
            return None;
        }
        Some(self.start(now, Mode::Shared))
    }

    /// The fence `token` was written (its socket took it): for a change
    /// the peer waits for, still holding, the lane is on its own
    /// connection from now on, and `true` says that a wait for `token`
    /// goes there now, then the frames it held, in order. Otherwise
    /// (another token, an answer came first, a change that holds until
    /// the answer) nothing changes.
    pub fn written(&mut self, token: u64) -> bool {
        match &mut self.change {
            Some(c) if c.waits && c.holding && token == c.token => {
                c.holding = false;
                self.mode = c.to;
                true
            }
            _ => false,
        }
    }

    /// The peer answered the fence `token`: the change ends if it is one
    /// of the change's fences, the first or one sent again (so a change
    /// ends after one round trip of its connection however long that is;
    /// see [`Router::retry`]).
    pub fn answered(&mut self, token: u64) -> Answered {
        match self.change {
            // (tokens wrap: a change's fences are `first` and those after)
            Some(c) if token.wrapping_sub(c.first) <= c.token.wrapping_sub(c.first) => {
                self.change = None;
                self.mode = c.to;
                Answered::Now(c.to)
            }
            _ => Answered::Stale,
        }
    }

    /// At `now`: a fence out for [`RETRY_US`] without an answer is sent
    /// again, with a new token (returned), on the same connection: for a
    /// fence lost with a connection that was replaced. An answer to the
    /// earlier ones still counts, so a slow connection only adds fences.
    ///
    /// For a change the peer waits for, the fence goes again with the same
    /// token: the wait on the lane's own connection names it.
    pub fn retry(&mut self, now: Micros) -> Option<Fence> {
        let c = self.change.as_mut()?;
        if now.saturating_sub(c.sent_at) < RETRY_US {
            return None;
        }
        c.sent_at = now;
        if !c.waits {
            c.token = self.next_token;
            self.next_token = self.next_token.wrapping_add(1);
        }
        Some(Fence {
            on: c.on,
            token: c.token,
            wait: c.waits,
        })
    }

    /// The lane stops (or its plan changes) without waiting for the
    /// answer: the change in progress, if any, ends, and the lane stays on
    /// the connection it was leaving. Returns that connection: what the
    /// lane held goes there, after everything it sent there before (a
    /// connection keeps its order).
    pub fn release(&mut self) -> Mode {
        self.change = None;
        self.mode
    }
}

/// The route of a frame on a lane in `mode` with no change held back.
fn route(mode: Mode) -> Route {
    match mode {
        Mode::Shared => Route::Shared,
        Mode::Own => Route::Own,
    }
}

#[cfg(test)]
mod tests;
