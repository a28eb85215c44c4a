//! Rate-limited log lines, for what a remote party can make happen once
//! per connection or per frame: at most one line per key (a source
//! address, a peer) per [`WINDOW`], and at most [`MAX_LINES`] lines per
//! window over all keys, so that a flood cannot drown the log (or push
//! OTP's logger into dropping lines). The first line of a key comes at
//! once; what is held back after it is counted, and told either with the
//! key's next line or, when the window ends, by a summary
//! ([`Limiter::flush`]).
//!
//! Time is passed in, so that the behaviour is tested without sleeping.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// One log line per key per window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Keys tracked one by one; past this, all others share one entry.
pub const MAX_KEYS: usize = 1024;
/// Lines logged per window over all keys together: past this, an event
/// of a new key is held with those of the "others" (so that many keys
/// cannot drown the log either).
pub const MAX_LINES: u32 = 20;

#[derive(Debug)]
struct Entry {
    since: Instant,
    held: u64,
}

/// A line to log now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Events of the same key (or of the others) held back since its last
    /// line, to tell with this one.
    pub held: u64,
    /// The line speaks for the others (every key past [`MAX_KEYS`], or
    /// past [`MAX_LINES`]), not for its own key alone.
    pub others: bool,
}

/// What was held back in a window that ended: for a key, or for the others
/// (`None`), and how many.
pub type Held<K> = (Option<K>, u64);

/// At most one line per key per [`WINDOW`], [`MAX_LINES`] over all keys.
#[derive(Debug)]
pub struct Limiter<K> {
    /// `None`: every key past [`MAX_KEYS`], or past [`MAX_LINES`].
    keys: Mutex<HashMap<Option<K>, Entry>>,
    /// Lines logged in the current window (over all keys), and when the
    /// window started.
    lines: Mutex<Option<(Instant, u32)>>,
    /// Lines per window over all keys ([`MAX_LINES`] by default).
    max_lines: u32,
}

impl<K> Default for Limiter<K> {
    fn default() -> Self {
        Limiter {
            keys: Mutex::new(HashMap::new()),
            lines: Mutex::new(None),
            max_lines: MAX_LINES,
        }
    }
}

impl<K> Limiter<K> {
    /// A limiter of at most `n` lines per window over all keys.
    pub fn with_max_lines(n: u32) -> Self {
        Limiter {
            max_lines: n,
            ..Self::default()
        }
    }
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// An event of `key` at `now`: `Some` when its line is to be logged
    /// now, `None` when it is held back (counted, for a later line).
    pub fn record(&self, now: Instant, key: &K) -> Option<Pass> {
        let mut keys = self.keys.lock();
        let mut key = Some(key.clone());
        if !keys.contains_key(&key) && keys.len() >= MAX_KEYS {
            key = None;
        }
        // A line for this key would go out now: within the budget of the
        // window over all keys, or held with the others.
        let would_log = keys
            .get(&key)
            .is_none_or(|s| now.duration_since(s.since) >= WINDOW);
        if key.is_some() && would_log && !self.take_line(now) {
            key = None;
        }
        let others = key.is_none();
        match keys.get_mut(&key) {
            Some(s) if now.duration_since(s.since) < WINDOW => {
                s.held += 1;
                None
            }
            Some(s) => {
                let held = std::mem::take(&mut s.held);
                s.since = now;
                Some(Pass { held, others })
            }
            None => {
                keys.insert(
                    key,
                    Entry {
                        since: now,
                        held: 0,
                    },
                );
                Some(Pass { held: 0, others })
            }
        }
    }

    /// One line of the window's budget, if any is left.
    fn take_line(&self, now: Instant) -> bool {
        let mut lines = self.lines.lock();
        match &mut *lines {
            Some((since, n)) if now.duration_since(*since) < WINDOW => {
                *n += 1;
                *n <= self.max_lines
            }
            other => {
                *other = Some((now, 1));
                true
            }
        }
    }

    /// What was held back in windows that have ended, one entry per key
    /// that held some; forgets the keys whose window ended.
    pub fn flush(&self, now: Instant) -> Vec<Held<K>> {
        let mut out = Vec::new();
        self.keys.lock().retain(|key, s| {
            if now.duration_since(s.since) < WINDOW {
                return true;
            }
            if s.held > 0 {
                out.push((key.clone(), s.held));
            }
            false
        });
        out
    }

    /// Keys tracked now (the others' entry included).
    pub fn tracked(&self) -> usize {
        self.keys.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_first_event_of_a_key_passes_at_once_and_the_rest_are_counted() {
        let l = Limiter::<&str>::default();
        let t0 = Instant::now();
        let first = l.record(t0, &"a");
        assert_eq!(
            first,
            Some(Pass {
                held: 0,
                others: false
            })
        );
        // the rest of the window: held back, whatever the rate
        for i in 1..10_000 {
            assert_eq!(l.record(at(t0, i), &"a"), None);
        }
        // another key has its own line
        assert!(l.record(at(t0, 5), &"b").is_some());
        // nothing to summarise while the windows run
        assert!(l.flush(at(t0, 9_999)).is_empty());
        // the next event after the window passes, telling what was held
        assert_eq!(
            l.record(t0 + WINDOW, &"a"),
            Some(Pass {
                held: 9_999,
                others: false
            })
        );
        // b's window ended with nothing held: no summary, b forgotten
        assert!(l.flush(t0 + WINDOW + Duration::from_millis(5)).is_empty());
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn what_is_held_is_summarised_when_the_window_ends() {
        let l = Limiter::<u32>::default();
        let t0 = Instant::now();
        assert!(l.record(t0, &1).is_some());
        for i in 1..=5 {
            assert!(l.record(at(t0, i), &1).is_none());
        }
        assert!(l.flush(at(t0, 9_999)).is_empty());
        assert_eq!(l.flush(t0 + WINDOW), vec![(Some(1), 5)]);
        // summarised once: forgotten, and the next event passes at once
        assert!(l.flush(t0 + WINDOW * 2).is_empty());
        assert_eq!(l.tracked(), 0);
        assert_eq!(
            l.record(t0 + WINDOW * 2, &1),
            Some(Pass {
                held: 0,
                others: false
            })
        );
    }

    #[test]
    fn lines_over_all_keys_are_bounded_per_window() {
        let l = Limiter::<u32>::default();
        let t0 = Instant::now();
        let mut passed = Vec::new();
        for k in 0..100u32 {
            if let Some(p) = l.record(at(t0, k as u64), &k) {
                passed.push(p);
            }
        }
        // MAX_LINES keys have their line, one more for all the others
        assert_eq!(passed.len(), MAX_LINES as usize + 1);
        assert!(passed.last().unwrap().others);
        assert!(passed[..MAX_LINES as usize].iter().all(|p| !p.others));
        let summary = l.flush(t0 + WINDOW * 2);
        assert_eq!(summary, vec![(None, 100 - MAX_LINES as u64 - 1)]);
        // a new window has its budget again
        assert!(l.record(t0 + WINDOW * 3, &1000).is_some_and(|p| !p.others));
    }

    #[test]
    fn keys_tracked_are_bounded() {
        let l = Limiter::<u32>::default();
        let t0 = Instant::now();
        for k in 0..5 * MAX_KEYS as u32 {
            // a window each (no line budget in the way): all pass or are
            // held with the others once the table is full
            let _ = l.record(t0 + WINDOW * k, &k);
            assert!(l.tracked() <= MAX_KEYS + 1);
        }
    }
}
