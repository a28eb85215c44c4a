//! Incoming connections that were refused or timed out: counted by reason,
//! and logged at most once per source address per [`WINDOW`], so that a
//! flood of bad connections cannot drown the log (or push OTP's logger into
//! dropping lines). What was held back is logged as one summary line when
//! the window ends.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One log line per source address per window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Addresses tracked one by one; past this, all others share one entry.
const MAX_SOURCES: usize = 1024;
/// Lines logged per window over all sources together: past this, a
/// refusal from a new source is held with those of "other addresses" (so
/// many sources cannot drown the log either).
pub const MAX_LINES: u32 = 20;

#[derive(Debug)]
struct Source {
    since: Instant,
    held: u64,
}

/// Counts and rate-limited logging of refused incoming connections.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    /// `None`: every address past [`MAX_SOURCES`], or past [`MAX_LINES`].
    sources: Mutex<HashMap<Option<IpAddr>, Source>>,
    /// Lines logged in the current window (over all sources), and when the
    /// window started.
    lines: Mutex<Option<(Instant, u32)>>,
}

impl Refusals {
    /// Count a refusal of `reason` from `ip`; returns the line to log now,
    /// if this source has not had one in this window.
    pub fn record(
        &self,
        now: Instant,
        ip: IpAddr,
        reason: &'static str,
        text: &str,
    ) -> Option<String> {
        *self.counts.lock().entry(reason).or_insert(0) += 1;
        let mut sources = self.sources.lock();
        let mut key = if sources.contains_key(&Some(ip)) || sources.len() < MAX_SOURCES {
            Some(ip)
        } else {
            None
        };
        // A line from this source would go out now: within the budget of
        // the window over all sources, or held with the other addresses.
        let would_log = sources
            .get(&key)
            .is_none_or(|s| now.duration_since(s.since) >= WINDOW);
        if key.is_some() && would_log && !self.take_line(now) {
            key = None;
        }
        match sources.get_mut(&key) {
            Some(s) if now.duration_since(s.since) < WINDOW => {
                s.held += 1;
                None
            }
            Some(s) => {
                let held = std::mem::take(&mut s.held);
                s.since = now;
                Some(with_held(text, held, key))
            }
            None => {
                sources.insert(
                    key,
                    Source {
                        since: now,
                        held: 0,
                    },
                );
                Some(text.to_string())
            }
        }
    }

    /// One line of the window's budget, if any is left.
    fn take_line(&self, now: Instant) -> bool {
        let mut lines = self.lines.lock();
        match &mut *lines {
            Some((since, n)) if now.duration_since(*since) < WINDOW => {
                *n += 1;
                *n <= MAX_LINES
            }
            other => {
                *other = Some((now, 1));
                true
            }
        }
    }

    /// Summaries of what was held back in windows that have ended; forgets
    /// quiet sources.
    pub fn flush(&self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        self.sources.lock().retain(|key, s| {
            if now.duration_since(s.since) < WINDOW {
                return true;
            }
            if s.held > 0 {
                let from = match key {
                    Some(ip) => format!("from {ip}"),
                    None => "from other addresses".to_string(),
                };
                out.push(format!(
                    "refused {} more incoming connections {from} in the last {} s (see weft:info())",
                    s.held,
                    WINDOW.as_secs()
                ));
            }
            false
        });
        out
    }

    /// Count a refusal of `reason` without logging it.
    pub fn count(&self, reason: &'static str) {
        *self.counts.lock().entry(reason).or_insert(0) += 1;
    }

    /// Refusals so far, by reason.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        self.counts.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }
}

fn with_held(text: &str, held: u64, key: Option<IpAddr>) -> String {
    match (held, key) {
        (0, _) => text.to_string(),
        (n, Some(_)) => format!("{text} ({n} more from this address in the last window)"),
        (n, None) => format!("{text} ({n} more from other addresses in the last window)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_per_window_and_every_refusal_counted() {
        let r = Refusals::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut lines = 0;
        for i in 0..1000u64 {
            let t = t0 + Duration::from_millis(i);
            lines += r.record(t, a, "bad_cookie", "refused").is_some() as u32;
            lines += r.record(t, b, "timeout", "timed out").is_some() as u32;
        }
        assert_eq!(lines, 2);
        assert_eq!(r.counts(), vec![("bad_cookie", 1000), ("timeout", 1000)]);
        assert!(r.flush(t0 + Duration::from_secs(1)).is_empty());
        let summary = r.flush(t0 + WINDOW + Duration::from_secs(1));
        assert_eq!(summary.len(), 2);
        assert!(
            summary.iter().all(|l| l.contains("999 more")),
            "{summary:?}"
        );
        // a source seen again after its window logs again
        assert!(r.record(t0 + WINDOW * 3, a, "bad_cookie", "x").is_some());
    }

    #[test]
    fn many_sources_share_one_entry_past_the_bound() {
        let r = Refusals::default();
        let t = Instant::now();
        let mut lines = 0;
        for i in 0..5000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            lines += r.record(t, ip, "timeout", "x").is_some() as u32;
        }
        // MAX_LINES sources have their line, one more for all the others
        assert_eq!(lines, MAX_LINES + 1);
        assert!(r.sources.lock().len() <= MAX_SOURCES + 1);
        assert_eq!(r.counts(), vec![("timeout", 5000)]);
        // the others are summed up when the window ends
        let summary = r.flush(t + WINDOW);
        assert!(
            summary.iter().any(|l| l.contains("from other addresses")),
            "{summary:?}"
        );
        // and a new window has its budget again
        let ip = IpAddr::from([10, 9, 9, 9]);
        assert!(r.record(t + WINDOW * 2, ip, "timeout", "x").is_some());
    }
}
