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

#[derive(Debug)]
struct Source {
    since: Instant,
    held: u64,
}

/// Counts and rate-limited logging of refused incoming connections.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    /// `None`: every address past [`MAX_SOURCES`].
    sources: Mutex<HashMap<Option<IpAddr>, Source>>,
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
        let key = if sources.contains_key(&Some(ip)) || sources.len() < MAX_SOURCES {
            Some(ip)
        } else {
            None
        };
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
        assert_eq!(lines, MAX_SOURCES as u32 + 1);
        assert!(r.sources.lock().len() <= MAX_SOURCES + 1);
    }
}
