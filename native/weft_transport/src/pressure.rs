//! The machine's CPU pressure, read for the pollers' linger
//! ([`weft_core::placement::Pressure`], [`weft_core::placement::Linger`]).
//!
//! One [`CpuPressure`] is shared by a transport's pollers. A poller asks
//! it after each round whether the CPUs are contended; at most once per
//! [`PRESSURE_PERIOD`] one of them (whichever asks first) reads
//! `/proc/pressure/cpu` (one `pread` of a file kept open) and feeds the
//! count to the policy. Where the kernel has no pressure stall
//! information (before Linux 4.20, or booted with `psi=0`) the file is
//! missing or cannot be read: the CPUs then never count as contended, and
//! pollers linger as configured; so too, until the transport restarts,
//! after a read that fails or does not parse. The pressure is the whole
//! machine's (inside a container, the host's): work of other programs
//! also shortens the linger.

use parking_lot::Mutex;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use weft_core::lane::Micros;
use weft_core::placement::{Pressure, PRESSURE_PERIOD};

/// Where Linux publishes the CPU pressure of the whole machine.
const PRESSURE_FILE: &str = "/proc/pressure/cpu";

/// Whether the machine's CPUs are contended, sampled lazily.
pub struct CpuPressure {
    origin: Instant,
    /// The open file and the policy; `None` once the file failed.
    source: Mutex<Option<(File, Pressure)>>,
    /// When the next sample is due, on `origin`'s clock.
    next_due: AtomicU64,
    contended: AtomicBool,
}

impl CpuPressure {
    /// Reads the machine's file, if it has one that reads.
    pub fn new() -> CpuPressure {
        // (non-blocking: a FIFO put there must not hang the start)
        let source = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(PRESSURE_FILE)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
            .filter(|f| read_total(f).is_some())
            .map(|f| (f, Pressure::new()));
        CpuPressure::with(source)
    }

    fn with(source: Option<(File, Pressure)>) -> CpuPressure {
        CpuPressure {
            origin: Instant::now(),
            next_due: AtomicU64::new(if source.is_some() { 0 } else { u64::MAX }),
            source: Mutex::new(source),
            contended: AtomicBool::new(false),
        }
    }

    /// Whether the machine's pressure is read at all.
    pub fn available(&self) -> bool {
        self.source.lock().is_some()
    }

    /// Whether the CPUs are contended at `at`; samples when one is due and
    /// no other poller is sampling.
    pub fn contended(&self, at: Instant) -> bool {
        let now = at.saturating_duration_since(self.origin).as_micros() as Micros;
        if now >= self.next_due.load(Ordering::Relaxed) {
            if let Some(mut source) = self.source.try_lock() {
                self.sample(&mut source, now);
            }
        }
        self.contended.load(Ordering::Relaxed)
    }

    fn sample(&self, source: &mut Option<(File, Pressure)>, now: Micros) {
        let Some((file, pressure)) = source.as_mut() else {
            return;
        };
        if !pressure.due(now) {
            return;
        }
        match read_total(file) {
            Some(total) => {
                let contended = pressure.sample(now, total);
                self.contended.store(contended, Ordering::Relaxed);
                self.next_due
                    .store(now + PRESSURE_PERIOD, Ordering::Relaxed);
            }
            None => {
                *source = None;
                self.contended.store(false, Ordering::Relaxed);
                self.next_due.store(u64::MAX, Ordering::Relaxed);
            }
        }
    }
}

impl Default for CpuPressure {
    fn default() -> Self {
        CpuPressure::new()
    }
}

/// The `some` line's `total=` (microseconds), from the start of the file.
fn read_total(file: &File) -> Option<u64> {
    let mut buf = [0u8; 256];
    let n = file.read_at(&mut buf, 0).ok()?;
    some_total(&buf[..n])
}

/// `total=` of the first line, which must be the `some` one:
/// `some avg10=0.03 avg60=2.93 avg300=8.46 total=3163270397`.
fn some_total(text: &[u8]) -> Option<u64> {
    let line = text.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "some" {
        return None;
    }
    fields.find_map(|f| f.strip_prefix("total="))?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_some_total_and_nothing_else() {
        let file = b"some avg10=0.03 avg60=2.93 avg300=8.46 total=3163270397\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(some_total(file), Some(3_163_270_397));
        assert_eq!(some_total(b"some total=5"), Some(5));
        for bad in [
            &b""[..],
            b"full avg10=0.00 total=7\nsome total=5\n",
            b"some avg10=0.03 avg60=2.93",
            b"some total=",
            b"some total=-1",
            b"some total=99999999999999999999999",
            b"some total=12x",
            b"\xff\xfe total=1",
        ] {
            assert_eq!(some_total(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_the_file_the_cpus_never_count_as_contended() {
        let p = CpuPressure::with(None);
        assert!(!p.available());
        assert!(!p.contended(Instant::now()));
    }

    #[test]
    fn a_file_that_stops_reading_is_dropped() {
        // A file that reads as something else than the pressure.
        let path = std::env::temp_dir().join(format!("weft-pressure-{}", std::process::id()));
        std::fs::write(&path, b"not pressure\n").unwrap();
        let p = CpuPressure::with(Some((File::open(&path).unwrap(), Pressure::new())));
        std::fs::remove_file(&path).unwrap();
        assert!(p.available());
        assert!(!p.contended(Instant::now()));
        assert!(!p.available());
    }

    #[test]
    fn the_machine_file_is_used_when_it_reads() {
        let p = CpuPressure::new();
        let reads = std::fs::read(PRESSURE_FILE).is_ok_and(|b| some_total(&b).is_some());
        assert_eq!(p.available(), reads);
        let _ = p.contended(Instant::now());
        assert_eq!(p.available(), reads);
    }
}
