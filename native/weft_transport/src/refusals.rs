//! Incoming connections that were refused or timed out: counted by reason,
//! and logged at most once per source address per [`WINDOW`], so that a
//! flood of bad connections cannot drown the log (or push OTP's logger into
//! dropping lines). What was held back is logged as one summary line when
//! the window ends.

use crate::log_limit::{Limiter, Pass};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

pub use crate::log_limit::{MAX_LINES, WINDOW};

/// Counts and rate-limited logging of refused incoming connections.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    /// One line per source address per window (see [`crate::log_limit`]).
    lines: Limiter<IpAddr>,
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
        self.count(reason);
        self.lines
            .record(now, &ip)
            .map(|pass| with_held(text, pass))
    }

    /// Summaries of what was held back in windows that have ended; forgets
    /// quiet sources.
    pub fn flush(&self, now: Instant) -> Vec<String> {
        self.lines
            .flush(now)
            .into_iter()
            .map(|(key, held)| {
                let from = match key {
                    Some(ip) => format!("from {ip}"),
                    None => "from other addresses".to_string(),
                };
                format!(
                    "refused {held} more incoming connections {from} in the last {} s (see weft:info())",
                    WINDOW.as_secs()
                )
            })
            .collect()
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

fn with_held(text: &str, pass: Pass) -> String {
    match pass {
        Pass { held: 0, .. } => text.to_string(),
        Pass {
            held: n,
            others: false,
        } => format!("{text} ({n} more from this address in the last window)"),
        Pass {
            held: n,
            others: true,
        } => format!("{text} ({n} more from other addresses in the last window)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        assert!(r.lines.tracked() <= crate::log_limit::MAX_KEYS + 1);
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
