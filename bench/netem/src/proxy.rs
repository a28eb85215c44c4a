//! The delaying proxy: each accepted connection is forwarded to a target,
//! and every chunk read in either direction is written out `delay` later,
//! in order, at most at `rate` bytes per second per direction.
//!
//! Plain threads, not tokio: the tokio timer wheel has a 1 ms resolution,
//! which alone would double a 1 ms round trip, while a parked thread wakes
//! within tens of microseconds. Four threads per proxied connection (a
//! reader and a writer per direction) is cheap at benchmark scale.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Largest chunk moved at once.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight per direction: bounds the proxy's buffering (16 MiB),
/// so a capped link pushes back on the sender as a real one does.
const IN_FLIGHT: usize = 256;

/// How one direction of a link behaves.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// One-way delay (half the round trip).
    pub delay: Duration,
    /// Bytes per second per direction of each connection; `None`: no cap.
    pub rate: Option<u64>,
}

/// Forward connections accepted on `listen` to `target` through `link`.
/// Runs until the process ends.
pub fn serve(listen: SocketAddr, target: SocketAddr, link: Link) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    thread::Builder::new()
        .name(format!("netem-accept-{listen}"))
        .spawn(move || {
            for client in listener.incoming().flatten() {
                let _ = thread::Builder::new()
                    .name("netem-conn".into())
                    .spawn(move || {
                        if let Ok(server) = TcpStream::connect(target) {
                            pipe_pair(client, server, link);
                        }
                    });
            }
        })?;
    Ok(())
}

fn pipe_pair(a: TcpStream, b: TcpStream, link: Link) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (a2, b2) = match (a.try_clone(), b.try_clone()) {
        (Ok(a2), Ok(b2)) => (a2, b2),
        _ => return,
    };
    let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let port = a.local_addr().map(|x| x.port()).unwrap_or(0);
    let (t_up, t_down) = (Trace::open(id, port, "up"), Trace::open(id, port, "down"));
    let up = thread::spawn(move || pipe(a, b2, link, t_up));
    pipe(b, a2, link, t_down);
    let _ = up.join();
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(0);

/// With `WEFT_NETEM_TRACE=DIR`: every chunk each direction of each
/// connection reads (`r`) and writes (`w`), as `r|w MICROS BYTES` lines
/// (microseconds since the Unix epoch) in `DIR/c<ID>-<PORT>-<up|down>.txt`
/// (`PORT`: the proxy's listening port; `up`: from the connecting side).
/// For looking at how busy each flow is over time; flushed every half
/// second, so the last lines of a killed proxy may be missing.
struct Trace {
    out: BufWriter<File>,
    flushed: Instant,
}

impl Trace {
    fn open(id: u64, port: u16, dir: &str) -> Traced {
        static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
        let base = DIR
            .get_or_init(|| std::env::var_os("WEFT_NETEM_TRACE").map(PathBuf::from))
            .as_ref()?;
        let file = File::create(base.join(format!("c{id}-{port}-{dir}.txt"))).ok()?;
        Some(Arc::new(Mutex::new(Trace {
            out: BufWriter::with_capacity(1 << 16, file),
            flushed: Instant::now(),
        })))
    }

    fn note(t: &Traced, kind: char, n: usize) {
        let Some(t) = t else { return };
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(t.out, "{kind} {us} {n}");
        if t.flushed.elapsed() > Duration::from_millis(500) {
            let _ = t.out.flush();
            t.flushed = Instant::now();
        }
    }
}

/// One direction's trace, shared by its reader and writer threads.
type Traced = Option<Arc<Mutex<Trace>>>;

/// Move bytes from `from` to `to`, delayed and capped. The chunks' buffers
/// go back from the writer to the reader and are used again, so that the
/// proxy does not allocate (and fault in) memory for every chunk.
fn pipe(from: TcpStream, to: TcpStream, link: Link, trace: Traced) {
    let (tx, rx) = sync_channel::<(Instant, Vec<u8>, usize)>(IN_FLIGHT);
    let (back_tx, back_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
    let wtrace = trace.clone();
    let writer = thread::spawn(move || write_side(to, rx, back_tx, link, wtrace));
    read_side(from, tx, back_rx, link.delay, trace);
    let _ = writer.join();
}

fn read_side(
    mut from: TcpStream,
    tx: SyncSender<(Instant, Vec<u8>, usize)>,
    back: Receiver<Vec<u8>>,
    delay: Duration,
    trace: Traced,
) {
    loop {
        // (a buffer is CHUNK bytes long; the first `n` are the chunk)
        let mut buf = back.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                Trace::note(&trace, 'r', n);
                if tx.send((Instant::now() + delay, buf, n)).is_err() {
                    break;
                }
            }
        }
    }
    // Dropping `tx` ends the writer once it has written what is queued.
}

fn write_side(
    mut to: TcpStream,
    rx: Receiver<(Instant, Vec<u8>, usize)>,
    back: SyncSender<Vec<u8>>,
    link: Link,
    trace: Traced,
) {
    // With a cap, a chunk may leave no sooner than the previous one's bytes
    // have gone through the "wire".
    let mut wire_free = Instant::now();
    while let Ok((due, buf, n)) = rx.recv() {
        let chunk = &buf[..n];
        let mut at = due;
        if let Some(rate) = link.rate {
            at = at.max(wire_free);
            wire_free = at + Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
        }
        sleep_until(at);
        if to.write_all(chunk).is_err() {
            break;
        }
        Trace::note(&trace, 'w', n);
        // (the reader may have gone: the buffer is then freed)
        let _ = back.try_send(buf);
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Sleep until `t`, to within tens of microseconds.
pub fn sleep_until(t: Instant) {
    precise_timers();
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

/// Ask the kernel to wake this thread's sleeps on time: the default timer
/// slack (50 us) would add to every emulated delay. Once per thread.
fn precise_timers() {
    thread_local!(static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    DONE.with(|done| {
        if !done.replace(true) {
            // SAFETY: PR_SET_TIMERSLACK takes a plain integer and changes
            // only the calling thread's timer slack.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
            }
        }
    });
}
