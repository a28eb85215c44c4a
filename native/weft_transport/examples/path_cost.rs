//! The CPU cost of weft's own send and receive paths, for callgrind.
//!
//! Two transports in this process, on loopback, pollers on threads of their
//! own (`io => threads`): node A sends `COUNT` messages of `SIZE` bytes to
//! node B on one channel of `LANES` lanes, at most 256 KiB outstanding, and
//! B's sink counts them. Under callgrind the inclusive instruction count of
//! `Routes::send` (what `Transport::send` calls) plus `Lane::flush`,
//! divided by `COUNT`, is the send path per message (frame
//! header, lane choice, queue, `writev`, counters), and that of the
//! pollers' rounds on B is the receive path (`epoll_wait`, `read`, frame
//! parsing, the per-message stage, the hand-over to the sink). What the NIF
//! adds on top (`term_to_iovec` on the way in, `enif_send` on the way out)
//! is the BEAM's, not counted here.
//!
//! ```text
//! cargo build --profile profiling -p weft_transport --example path_cost
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/profiling/examples/path_cost SIZE COUNT LANES
//! callgrind_annotate --inclusive=yes --threshold=100 /tmp/cg.out \
//!     | grep -E 'Routes::send \[|Lane::flush \[|FrameReader::read \[|Poller::poll \['
//! ```
//!
//! `bench/RESULTS.md` ("Instructions per message") has the figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_core::lane::Choice;
use weft_core::{ChannelSpec, DownReason, LaneKey, Level, NodeSpec, Refusal, Timing};
use weft_transport::{Delivery, FrameBuffer, IoMode, LaneState, Sink, Transport, TransportConfig};

/// Counts what it is given; nothing else. Buffers for large frames are
/// reused, so that their allocation (the BEAM's, in the NIF: a binary,
/// not zeroed) is not counted as weft's.
#[derive(Default)]
struct Counting {
    messages: AtomicU64,
    bytes: AtomicU64,
    buffers: Mutex<Vec<Vec<u8>>>,
    /// Set once the run is over: the peer going down is expected then.
    stopping: std::sync::atomic::AtomicBool,
}

impl Sink for Counting {
    fn deliver(&self, _peer: &str, body: &[u8]) -> Delivery {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        Delivery::Delivered
    }
    fn frame_buffer(&self, len: usize) -> Option<Box<dyn FrameBuffer>> {
        let reused = self.buffers.lock().expect("not poisoned").pop();
        Some(Box::new(
            reused
                .filter(|b| b.len() == len)
                .unwrap_or_else(|| vec![0; len]),
        ))
    }
    fn deliver_buffer(&self, peer: &str, body: Box<dyn FrameBuffer>) -> Delivery {
        let d = self.deliver(peer, body.bytes());
        if let Ok(b) = body.into_any().downcast::<Vec<u8>>() {
            self.buffers.lock().expect("not poisoned").push(*b);
        }
        d
    }
    fn peer_up(&self, _peer: &str) {}
    fn peer_down(&self, _peer: &str, _reason: &DownReason) {}
    fn refused(&self, peer: &str, r: &Refusal) {
        eprintln!("refused by {peer}: {r}");
    }
    fn log(&self, level: Level, text: &str, _p: Option<&str>, _l: Option<&LaneKey>) {
        if level >= Level::Warning && !self.stopping.load(Ordering::Relaxed) {
            eprintln!("{text}");
        }
    }
}

fn node(name: &str, lanes: u16, sink: Arc<Counting>) -> Transport {
    let config = TransportConfig {
        node: name.into(),
        listen: "127.0.0.1:0".parse().expect("an address"),
        advertise: vec![],
        channels: vec![ChannelSpec {
            name: "bench".into(),
            parallelism: lanes,
        }],
        overlay: weft_transport::Overlay::FullMesh,
        affinity: true,
        cookie: b"cost".to_vec(),
        // (PATH_COST_NO_SHARE set: without the shared lane, to compare)
        capabilities: if std::env::var_os("PATH_COST_NO_SHARE").is_some() {
            weft_core::Capabilities::SUPPORTED.without(weft_core::Capabilities::SHARE)
        } else {
            weft_core::Capabilities::SUPPORTED
        },
        max_frame_size: 64 << 20,
        send_queue_limit: 64 << 20,
        send_queue_total_limit: 256 << 20,
        max_members: 16,
        max_pending_handshakes: weft_transport::MAX_PENDING_HANDSHAKES,
        large_frame_claims: weft_transport::frame_reader::CLAIMS_LIMIT,
        drop_oldest: vec![],
        wait: vec![],
        timing: Timing::default(),
        io: IoMode::Threads,
        pollers: 1,
        poll_linger: Duration::from_micros(100),
        poll_linger_busy: Duration::from_micros(30),
        stage: None,
    };
    Transport::start(config, sink).expect("transport starts")
}

fn contact(t: &Transport) -> NodeSpec {
    let mut s = t.local_spec();
    s.incarnation = 0;
    s.max_frame = 0;
    s
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

const USAGE: &str = "usage: path_cost [SIZE COUNT [LANES]]
  SIZE  bytes per message, 1..=67108864 (default 100)
  COUNT messages, at least 1 (default 20000)
  LANES lanes of the channel, 1..=256 (default 1)
With PATH_COST_NO_SHARE in the environment, the lanes do not use the
channel's shared lane.";

/// `(size, count, lanes)` from the command line, or why not.
fn parse(args: &[String]) -> Result<(usize, u64, u16), String> {
    let num = |what: &str, a: &str, lo: u64, hi: u64| -> Result<u64, String> {
        match a.parse::<u64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(format!("{what}: {a:?} is not in {lo}..={hi}")),
        }
    };
    let (size, count, lanes) = match args {
        [] => ("100", "20000", "1"),
        [s, c] => (s.as_str(), c.as_str(), "1"),
        [s, c, l] => (s.as_str(), c.as_str(), l.as_str()),
        _ => return Err("SIZE and COUNT go together".into()),
    };
    Ok((
        num("SIZE", size, 1, 64 << 20)? as usize,
        num("COUNT", count, 1, u64::MAX)?,
        num("LANES", lanes, 1, 256)? as u16,
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (size, count, lanes) = match parse(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let sink_a = Arc::new(Counting::default());
    let sink_b = Arc::new(Counting::default());
    let a = node("a@h", lanes, sink_a.clone());
    let b = node("b@h", lanes, sink_b.clone());
    a.join(contact(&b));
    wait_for("every lane connected", || {
        a.info().is_some_and(|i| {
            i.peers.iter().any(|p| {
                p.name == "b@h"
                    // (control, the lanes, and the shared lane of a
                    // channel of two lanes or more)
                    && p.lanes.len()
                        == 1 + lanes as usize + weft_core::lane::shared_lane(lanes).map_or(0, |_| 1)
                    && p.lanes.iter().all(|l| l.state == LaneState::Connected)
            })
        })
    });
    let body = vec![7u8; size];
    // At most this many bytes outstanding (sent, not yet delivered).
    let window = ((256 << 10) / size.max(1)).max(2) as u64;
    let started = Instant::now();
    for i in 0..count {
        while i - sink_b.messages.load(Ordering::Relaxed) >= window {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        // (a full send queue, with messages of tens of MiB: wait for room)
        loop {
            match a.send(None, "b@h", "bench", Choice::Index(i), body.clone()) {
                Ok(()) => break,
                Err(weft_transport::SendError::Overloaded) => std::thread::yield_now(),
                Err(e) => panic!("send refused: {e:?}"),
            }
        }
    }
    wait_for("every message delivered", || {
        sink_b.messages.load(Ordering::Relaxed) == count
    });
    let took = started.elapsed();
    println!(
        "{count} messages of {size} B on {lanes} lane(s): delivered {} ({} bytes) in {took:?}",
        sink_b.messages.load(Ordering::Relaxed),
        sink_b.bytes.load(Ordering::Relaxed)
    );
    for s in [&sink_a, &sink_b] {
        s.stopping.store(true, Ordering::Relaxed);
    }
    a.stop();
    b.stop();
}
