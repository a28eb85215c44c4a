//! Two and three transports on loopback: join, deliver on every channel,
//! per-lane order, lane counts, wrong cookie, oversized frames, leave.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_core::{ChannelSpec, LaneKey, Level, NodeSpec, Timing};
use weft_transport::{IoMode, LaneState, Outcome, Sink, Transport, TransportConfig};

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Msg(String, Vec<u8>),
    Up(String),
    Down(String),
    Log(String),
}

struct TestSink(Mutex<Sender<Ev>>, Mutex<Vec<Sender<()>>>);

impl Sink for TestSink {
    fn wake_poller(&self, index: usize) {
        if let Some(tx) = self.1.lock().unwrap().get(index) {
            let _ = tx.send(());
        }
    }
    fn deliver(&self, peer: &str, body: &[u8]) -> bool {
        let _ = self
            .0
            .lock()
            .unwrap()
            .send(Ev::Msg(peer.into(), body.to_vec()));
        true
    }
    fn peer_up(&self, peer: &str) {
        let _ = self.0.lock().unwrap().send(Ev::Up(peer.into()));
    }
    fn peer_down(&self, peer: &str, _reason: &str) {
        let _ = self.0.lock().unwrap().send(Ev::Down(peer.into()));
    }
    fn log(&self, level: Level, text: &str, _p: Option<&str>, _l: Option<&LaneKey>) {
        if level >= Level::Warning {
            let _ = self.0.lock().unwrap().send(Ev::Log(text.into()));
        }
    }
}

fn node(name: &str, cookie: &str, max_frame: u64) -> (Transport, Receiver<Ev>) {
    let (t, rx, _) = node_in(name, cookie, max_frame, IoMode::Threads);
    (t, rx)
}

/// What drives the pollers that the embedding program drives (the BEAM's
/// schedulers in the NIF): here, a thread each, woken by the sink.
struct Drivers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Drivers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn node_in(
    name: &str,
    cookie: &str,
    max_frame: u64,
    io: IoMode,
) -> (Transport, Receiver<Ev>, Drivers) {
    let (tx, rx) = channel();
    let config = TransportConfig {
        node: name.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: vec![],
        channels: vec![
            ChannelSpec {
                name: "default".into(),
                parallelism: 1,
            },
            ChannelSpec {
                name: "vnode".into(),
                parallelism: 4,
            },
        ],
        affinity: true,
        cookie: cookie.as_bytes().to_vec(),
        max_frame_size: max_frame,
        timing: Timing {
            heartbeat_interval: 100,
            heartbeat_timeout: 1000,
            reconnect_min_backoff: 20,
            reconnect_max_backoff: 200,
            gossip_interval: 200,
        },
        io,
        pollers: 2,
        poll_linger: Duration::from_micros(50),
    };
    let sink = Arc::new(TestSink(Mutex::new(tx), Mutex::new(Vec::new())));
    let t = Transport::start(config, sink.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for p in t.pollers() {
        let (wtx, wrx) = channel();
        sink.1.lock().unwrap().push(wtx);
        let (p, stop) = (p.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) && !p.is_stopped() {
                match p.poll() {
                    Outcome::Busy => {}
                    Outcome::Linger => std::thread::yield_now(),
                    Outcome::Idle => {
                        if p.try_idle() {
                            let _ = wrx.recv_timeout(Duration::from_millis(20));
                        }
                    }
                }
            }
        }));
    }
    (t, rx, Drivers { stop, threads })
}

fn contact(t: &Transport) -> NodeSpec {
    let mut s = t.local_spec();
    s.epoch = 0;
    s
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn all_lanes_connected(t: &Transport, peer: &str) -> bool {
    t.info().is_some_and(|i| {
        i.peers
            .iter()
            .any(|p| p.name == peer && p.lanes.iter().all(|l| l.state == LaneState::Connected))
    })
}

fn recv_msgs(rx: &Receiver<Ev>, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ev::Msg(p, b)) => out.push((p, b)),
            Ok(_) => {}
            Err(_) => panic!("got {} of {n} messages", out.len()),
        }
    }
    out
}

#[test]
fn join_deliver_and_order_on_threads() {
    join_deliver_and_order(IoMode::Threads);
}

#[test]
fn join_deliver_and_order_on_driven_pollers() {
    join_deliver_and_order(IoMode::Schedulers);
}

#[test]
fn join_deliver_and_order_in_auto_mode() {
    join_deliver_and_order(IoMode::Auto);
}

fn join_deliver_and_order(io: IoMode) {
    let (a, _arx, _da) = node_in("a@h", "c", 1 << 20, io);
    let (b, brx, _db) = node_in("b@h", "c", 1 << 20, io);
    a.join(contact(&b));
    wait_for("mesh", || {
        a.up_peers() == ["b@h"] && b.up_peers() == ["a@h"]
    });
    wait_for("lanes", || {
        all_lanes_connected(&a, "b@h") && all_lanes_connected(&b, "a@h")
    });
    // one socket per lane, mirrored on both sides
    let ia = a.info().unwrap();
    let ib = b.info().unwrap();
    let la = &ia.peers[0].lanes;
    let lb = &ib.peers[0].lanes;
    assert_eq!(la.len(), 6); // control + default + 4 vnode
    for x in la {
        let y = lb.iter().find(|y| y.key == x.key).unwrap();
        assert_eq!(x.local, y.remote);
        assert_eq!(x.remote, y.local);
    }
    let mut locals: Vec<_> = la.iter().map(|l| l.local).collect();
    locals.dedup();
    assert_eq!(locals.len(), 6, "every lane has its own socket");

    // per-key order over 4 lanes
    for i in 0..2000u32 {
        let key = i % 7;
        let body = [key.to_be_bytes(), i.to_be_bytes()].concat();
        a.send(None, "b@h", "vnode", key, body).unwrap();
    }
    let got = recv_msgs(&brx, 2000);
    let mut last = [None::<u32>; 7];
    for (peer, body) in got {
        assert_eq!(peer, "a@h");
        let key = u32::from_be_bytes(body[0..4].try_into().unwrap()) as usize;
        let seq = u32::from_be_bytes(body[4..8].try_into().unwrap());
        if let Some(prev) = last[key] {
            assert!(seq > prev, "key {key}: {seq} after {prev}");
        }
        last[key] = Some(seq);
    }
    // unknown channel, too large, not a member
    assert!(a.send(None, "b@h", "nope", 0, vec![1]).is_err());
    assert!(a.send(None, "b@h", "default", 0, vec![0; 2 << 20]).is_err());
    assert!(a.send(None, "zz@h", "default", 0, vec![1]).is_ok());
    assert_eq!(a.info().unwrap().dropped_not_member, 1);
    a.stop();
    b.stop();
}

#[test]
fn gossip_makes_a_full_mesh() {
    let (a, _x) = node("a@h", "c", 1 << 20);
    let (b, _y) = node("b@h", "c", 1 << 20);
    let (c, _z) = node("c@h", "c", 1 << 20);
    b.join(contact(&a));
    c.join(contact(&a));
    wait_for("mesh", || {
        a.up_peers() == ["b@h", "c@h"]
            && b.up_peers() == ["a@h", "c@h"]
            && c.up_peers() == ["a@h", "b@h"]
    });
    // stop one: the others see it down
    c.stop();
    wait_for("down", || {
        a.up_peers() == ["b@h"] && b.up_peers() == ["a@h"]
    });
    // leave: removed on the other side
    b.leave();
    wait_for("leave", || {
        a.up_peers().is_empty() && b.up_peers().is_empty()
    });
    std::thread::sleep(Duration::from_millis(600));
    assert!(a.up_peers().is_empty(), "late gossip must not bring b back");
}

#[test]
fn wrong_cookie_is_refused() {
    let (a, _x) = node("a@h", "one", 1 << 20);
    let (b, brx) = node("b@h", "two", 1 << 20);
    a.join(contact(&b));
    std::thread::sleep(Duration::from_millis(500));
    assert!(a.up_peers().is_empty() && b.up_peers().is_empty());
    a.send(None, "b@h", "default", 0, b"secret".to_vec())
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let evs: Vec<Ev> = brx.try_iter().collect();
    assert!(!evs.iter().any(|e| matches!(e, Ev::Msg(..) | Ev::Up(_))));
    assert!(
        evs.iter()
            .any(|e| matches!(e, Ev::Log(t) if t.contains("cookie"))),
        "{evs:?}"
    );
}

#[test]
fn oversized_frame_closes_only_its_connection() {
    let (a, _x) = node("a@h", "c", 8 << 20);
    let (b, brx) = node("b@h", "c", 1 << 20);
    a.join(contact(&b));
    wait_for("lanes", || {
        all_lanes_connected(&a, "b@h") && all_lanes_connected(&b, "a@h")
    });
    a.send(None, "b@h", "vnode", 1, vec![7; 2 << 20]).unwrap();
    for i in 0..10u8 {
        a.send(None, "b@h", "default", 0, vec![i]).unwrap();
    }
    let got = recv_msgs(&brx, 10);
    assert!(got.iter().all(|(_, b)| b.len() == 1));
    assert_eq!(a.up_peers(), ["b@h"]);
    // the lane comes back and carries messages again
    wait_for("lane back", || {
        all_lanes_connected(&a, "b@h") && all_lanes_connected(&b, "a@h")
    });
    a.send(None, "b@h", "vnode", 1, vec![9; 100]).unwrap();
    let got = recv_msgs(&brx, 1);
    assert_eq!(got[0].1.len(), 100);
}

fn logs_until(rx: &Receiver<Ev>, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Ev::Log(t)) = rx.recv_timeout(Duration::from_millis(50)) {
            if t.contains(needle) {
                return true;
            }
        }
    }
    false
}

#[test]
fn unexpected_node_is_refused() {
    let (a, arx) = node("a@h", "c", 1 << 20);
    let (b, brx) = node("b@h", "c", 1 << 20);
    let mut wrong = contact(&b);
    wrong.name = "zz@h".into();
    a.join(wrong);
    assert!(logs_until(
        &brx,
        "unexpected node: expected zz@h, reached b@h"
    ));
    assert!(logs_until(&arx, "unexpected node"));
    assert!(a.up_peers().is_empty() && b.up_peers().is_empty());
}

#[test]
fn stray_clients_and_other_versions_are_refused() {
    use std::io::{Read, Write};
    let (b, brx) = node("b@h", "c", 1 << 20);
    let addr = b.local_spec().addrs[0];
    // Not weft at all.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(logs_until(&brx, "refused incoming connection"));
    // A weft hello of a future protocol version.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut body = b"WEFT".to_vec();
    body.extend_from_slice(&99u16.to_be_bytes());
    body.extend_from_slice(&[0; 16]);
    s.write_all(&weft_core::frame::header(
        weft_core::FrameKind::Handshake,
        body.len(),
    ))
    .unwrap();
    s.write_all(&body).unwrap();
    assert!(logs_until(&brx, "protocol version 99 is not supported"));
    // The acceptor closed the connection without a word of data.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    assert!(b.up_peers().is_empty());
}

fn lane_on_thread(t: &Transport, peer: &str, channel: &str, index: u16) -> Option<bool> {
    let info = t.info()?;
    let p = info.peers.iter().find(|p| p.name == peer)?;
    let l = p
        .lanes
        .iter()
        .find(|l| l.key.channel == channel && l.key.index == index)?;
    Some(l.on_thread)
}

#[test]
fn auto_mode_moves_bulk_lanes_to_threads_and_back_in_order() {
    let (a, _arx, _da) = node_in("a@h", "c", 8 << 20, IoMode::Auto);
    let (b, brx, _db) = node_in("b@h", "c", 8 << 20, IoMode::Auto);
    a.join(contact(&b));
    wait_for("lanes", || {
        all_lanes_connected(&a, "b@h") && all_lanes_connected(&b, "a@h")
    });
    // affinity: key 0 always picks the same vnode lane; find which
    let lane = (0..4u16)
        .find(|i| lane_on_thread(&a, "b@h", "vnode", *i).is_some())
        .unwrap();
    assert_eq!(lane_on_thread(&a, "b@h", "vnode", lane), Some(false));
    // small, then large, then small frames, in one stream on one lane
    let mut sent = Vec::new();
    for i in 0..300u32 {
        let size = if (100..200).contains(&i) && i % 10 == 0 {
            300_000
        } else {
            8
        };
        let mut body = vec![0u8; size];
        body[..4].copy_from_slice(&i.to_be_bytes());
        a.send(None, "b@h", "vnode", 0, body.clone()).unwrap();
        sent.push(body);
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let got: Vec<Vec<u8>> = recv_msgs(&brx, 300).into_iter().map(|(_, b)| b).collect();
    assert_eq!(got.len(), sent.len());
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert!(g == s, "message {i} out of order or damaged");
    }
    // the lane that carried bulk is on a thread now, on both sides (or
    // was: it goes back after a quiet period)
    let key = |t: &Transport, peer: &str| {
        (0..4u16)
            .filter_map(|i| {
                let info = t.info()?;
                let p = info.peers.iter().find(|p| p.name == peer)?;
                let l = p
                    .lanes
                    .iter()
                    .find(|l| l.key.channel == "vnode" && l.key.index == i)?;
                (l.sent_bytes + l.recv_bytes > 1_000_000).then_some(i)
            })
            .next()
            .unwrap()
    };
    let (ka, kb) = (key(&a, "b@h"), key(&b, "a@h"));
    // back on the schedulers' pollers once quiet
    wait_for("back after quiet", || {
        lane_on_thread(&a, "b@h", "vnode", ka) == Some(false)
            && lane_on_thread(&b, "a@h", "vnode", kb) == Some(false)
    });
    // and a second burst moves it again, still delivering everything
    for i in 0..20u32 {
        let mut body = vec![0u8; 500_000];
        body[..4].copy_from_slice(&i.to_be_bytes());
        a.send(None, "b@h", "vnode", 0, body).unwrap();
    }
    let mut moved = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while n < 20 && Instant::now() < deadline {
        moved |= lane_on_thread(&a, "b@h", "vnode", ka) == Some(true)
            || lane_on_thread(&b, "a@h", "vnode", kb) == Some(true);
        if let Ok(Ev::Msg(_, body)) = brx.recv_timeout(Duration::from_millis(10)) {
            assert_eq!(u32::from_be_bytes(body[..4].try_into().unwrap()), n);
            n += 1;
        }
    }
    assert_eq!(n, 20);
    assert!(moved, "the bulk lane moved to a thread");
    a.stop();
    b.stop();
}
