//! The `limit` configuration: a plain TCP echo (length-prefixed requests,
//! answered in full) driven by N concurrent clients, each on its own
//! connection, through the same proxy as the transports under test. What it
//! achieves is the ceiling the emulated network allows.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Serve echo requests on `listen` until the process ends.
pub fn serve(listen: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)?;
    let bound = listener.local_addr()?;
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || echo_conn(conn));
        }
    });
    Ok(bound)
}

fn echo_conn(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut len = [0u8; 4];
    let mut buf = Vec::new();
    while s.read_exact(&mut len).is_ok() {
        buf.resize(u32::from_be_bytes(len) as usize, 0);
        if s.read_exact(&mut buf).is_err() {
            return;
        }
        if s.write_all(&len).is_err() || s.write_all(&buf).is_err() {
            return;
        }
    }
}

/// Result of a client run.
#[derive(Debug, Clone)]
pub struct Run {
    pub ops: u64,
    pub seconds: f64,
    /// Round-trip times in microseconds, sorted.
    pub rtts_us: Vec<u64>,
}

impl Run {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    /// The `q` quantile (0..=1) of the round-trip times, in ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.rtts_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.rtts_us.len() - 1) as f64 * q).round() as usize;
        self.rtts_us[i] as f64 / 1000.0
    }
}

/// `clients` connections to `target`, each making `count` round trips of
/// `payload` bytes as fast as it can; `seconds` is the time for all to
/// finish (the latency workload).
pub fn run_count(
    target: SocketAddr,
    clients: usize,
    payload: usize,
    count: u64,
) -> std::io::Result<Run> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        let s = TcpStream::connect(target)?;
        s.set_nodelay(true)?;
        conns.push(s);
    }
    let start = Instant::now();
    let handles: Vec<_> = conns
        .into_iter()
        .map(|mut s| {
            thread::spawn(move || {
                let body = vec![7u8; payload];
                let mut back = vec![0u8; payload];
                let mut len = [0u8; 4];
                let mut rtts = Vec::new();
                for _ in 0..count {
                    let t = Instant::now();
                    if !round_trip(&mut s, &body, &mut len, &mut back) {
                        break;
                    }
                    rtts.push(t.elapsed().as_micros() as u64);
                }
                rtts
            })
        })
        .collect();
    let mut rtts_us: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    let seconds = start.elapsed().as_secs_f64();
    rtts_us.sort_unstable();
    Ok(Run {
        ops: rtts_us.len() as u64,
        seconds,
        rtts_us,
    })
}

/// `clients` connections to `target`, each echoing `payload` bytes in a loop
/// for `duration`.
pub fn run(
    target: SocketAddr,
    clients: usize,
    payload: usize,
    duration: Duration,
) -> std::io::Result<Run> {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let mut s = TcpStream::connect(target)?;
        s.set_nodelay(true)?;
        let (stop, ops) = (stop.clone(), ops.clone());
        handles.push(thread::spawn(move || {
            let body = vec![7u8; payload];
            let mut back = vec![0u8; payload];
            let mut len = [0u8; 4];
            let mut rtts = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if !round_trip(&mut s, &body, &mut len, &mut back) {
                    break;
                }
                if !stop.load(Ordering::Relaxed) {
                    ops.fetch_add(1, Ordering::Relaxed);
                    rtts.push(t.elapsed().as_micros() as u64);
                }
            }
            rtts
        }));
    }
    let start = Instant::now();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    let mut rtts_us: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    rtts_us.sort_unstable();
    Ok(Run {
        ops: ops.load(Ordering::Relaxed),
        seconds,
        rtts_us,
    })
}

/// One echo: a length-prefixed `body` out, the reply back into `back`.
fn round_trip(s: &mut TcpStream, body: &[u8], len: &mut [u8; 4], back: &mut [u8]) -> bool {
    s.write_all(&(body.len() as u32).to_be_bytes()).is_ok()
        && s.write_all(body).is_ok()
        && s.read_exact(len).is_ok()
        && s.read_exact(back).is_ok()
}
