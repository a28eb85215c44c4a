//! A per-message stage: one look at every application message on its way
//! out (once the lane is picked, before it is queued) and on its way in
//! (once its frame is read, before it is delivered).
//!
//! This is where per-message protocols plug in: fault injection and
//! interposition now; tracing, reliable and causal delivery later (their
//! verdicts will grow: delay, duplicate, a header extension to add). A
//! stage sees an [`Envelope`] (who, where, how large), never the bytes, and
//! returns a [`Verdict`]. Control frames (membership, heartbeats) do not go
//! through it.
//!
//! Without a stage installed the transport pays nothing: it keeps an
//! `Option` and tests it, no call and no allocation. A stage is called
//! concurrently from every sending thread and every poller, so it takes
//! `&self` (state goes behind atomics or a lock of its own) and must be
//! quick. A message a stage drops counts as accepted and then dropped,
//! under its [`DropReason`], like any other loss.

use std::fmt;

/// One message as a stage sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The other node: the destination on send, the origin on receive.
    pub peer: &'a str,
    /// The channel the message travels on.
    pub channel: &'a str,
    /// The lane of the channel (`None` on send while the peer's lanes are
    /// not known yet, right after `join`).
    pub lane: Option<u16>,
    /// Bytes of the message body.
    pub size: usize,
    /// Who sent it, as far as ordering goes (`None` on receive, and for
    /// senders that did not say).
    pub sender: Option<u64>,
}

/// Why a stage dropped a message; each reason is a counter of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Fault injection: an interposer lost the message on purpose.
    Fault,
    /// A filter of the application's refused the message.
    Filtered,
}

impl DropReason {
    /// Every reason, in the order counters list them.
    pub const ALL: [DropReason; 2] = [DropReason::Fault, DropReason::Filtered];

    /// The counter's name (`weft:info()`'s `dropped` map).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Fault => "fault",
            DropReason::Filtered => "filtered",
        }
    }
}

/// What becomes of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// On its way, unchanged.
    Pass,
    /// Dropped and counted under the reason.
    Drop(DropReason),
}

/// A per-message stage; both methods pass everything unless overridden.
pub trait Stage: Send + Sync {
    /// A message about to be queued for `m.peer`.
    fn on_send(&self, m: &Envelope<'_>) -> Verdict {
        let _ = m;
        Verdict::Pass
    }

    /// A message from `m.peer`, read and about to be delivered.
    fn on_receive(&self, m: &Envelope<'_>) -> Verdict {
        let _ = m;
        Verdict::Pass
    }
}

impl fmt::Debug for dyn Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stage")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Drops every `n`th message sent to one peer.
    struct EveryNth {
        peer: &'static str,
        n: u64,
        seen: AtomicU64,
    }

    impl Stage for EveryNth {
        fn on_send(&self, m: &Envelope<'_>) -> Verdict {
            if m.peer != self.peer {
                return Verdict::Pass;
            }
            let i = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
            if i.is_multiple_of(self.n) {
                Verdict::Drop(DropReason::Fault)
            } else {
                Verdict::Pass
            }
        }
    }

    fn env(peer: &str) -> Envelope<'_> {
        Envelope {
            peer,
            channel: "default",
            lane: Some(0),
            size: 10,
            sender: None,
        }
    }

    #[test]
    fn the_default_passes_everything_and_a_stage_decides_per_message() {
        struct Nothing;
        impl Stage for Nothing {}
        assert_eq!(Nothing.on_send(&env("a")), Verdict::Pass);
        assert_eq!(Nothing.on_receive(&env("a")), Verdict::Pass);

        let s = EveryNth {
            peer: "b",
            n: 2,
            seen: AtomicU64::new(0),
        };
        let stage: &dyn Stage = &s;
        let verdicts: Vec<Verdict> = (0..4).map(|_| stage.on_send(&env("b"))).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Pass,
                Verdict::Drop(DropReason::Fault),
                Verdict::Pass,
                Verdict::Drop(DropReason::Fault)
            ]
        );
        assert_eq!(stage.on_send(&env("a")), Verdict::Pass);
        assert_eq!(stage.on_receive(&env("b")), Verdict::Pass);
        assert_eq!(format!("{stage:?}"), "Stage");
    }

    #[test]
    fn reasons_have_distinct_names() {
        let names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["fault", "filtered"]);
    }
}
