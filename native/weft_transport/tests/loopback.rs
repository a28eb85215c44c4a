//! Two and three transports on loopback: join, deliver on every channel,
//! per-lane order, lane counts, wrong cookie, oversized frames, leave, the
//! per-message stage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_core::{ChannelSpec, DownReason, LaneKey, Level, NodeSpec, Refusal, Timing};
use weft_transport::{
    Delivery, DropReason, Envelope, IoMode, LaneState, Outcome, Sink, Stage, Transport,
    TransportConfig, Verdict,
};

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Msg(String, Vec<u8>),
    Up(String),
    Down(String),
    Refused(String, Refusal),
    Joined(String),
    ThisNodeLeft,
    Log(String),
}

struct TestSink(Mutex<Sender<Ev>>, Mutex<Vec<Sender<()>>>);

thread_local! {
    // Deliveries held back until the poller flushes, as the NIF's sink
    // holds them: every test here checks that they all come out, in order.
    static HELD: std::cell::RefCell<Vec<(String, Vec<u8>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Sink for TestSink {
    fn flush_deliveries(&self) -> u64 {
        let held = HELD.with(|h| std::mem::take(&mut *h.borrow_mut()));
        let mut lost = 0;
        for (peer, body) in held {
            // A destination that ended between lookup and send.
            if body == b"gone-late" {
                lost += 1;
                continue;
            }
            let _ = self.0.lock().unwrap().send(Ev::Msg(peer, body));
        }
        lost
    }
    fn wake_poller(&self, index: usize) {
        if let Some(tx) = self.1.lock().unwrap().get(index) {
            let _ = tx.send(());
        }
    }
    fn deliver(&self, peer: &str, body: &[u8]) -> Delivery {
        // What the NIF's sink finds in a frame that is not a {Dest, Msg}
        // term, or names nobody.
        match body {
            b"malformed" => return Delivery::Malformed,
            b"nobody" => return Delivery::NoDestination,
            b"new-atoms" => return Delivery::AtomLimit,
            _ => {}
        }
        HELD.with(|h| h.borrow_mut().push((peer.into(), body.to_vec())));
        Delivery::Delivered
    }
    fn deliver_buffer(&self, peer: &str, body: Box<dyn weft_transport::FrameBuffer>) -> Delivery {
        // Large frames at once, as the NIF's sink: after what was held.
        let _ = self
            .0
            .lock()
            .unwrap()
            .send(Ev::Msg(peer.into(), body.bytes().to_vec()));
        Delivery::Delivered
    }
    fn peer_up(&self, peer: &str) {
        let _ = self.0.lock().unwrap().send(Ev::Up(peer.into()));
    }
    fn peer_down(&self, peer: &str, _reason: &DownReason) {
        let _ = self.0.lock().unwrap().send(Ev::Down(peer.into()));
    }
    fn refused(&self, peer: &str, r: &Refusal) {
        let _ = self
            .0
            .lock()
            .unwrap()
            .send(Ev::Refused(peer.into(), r.clone()));
    }
    fn joined(&self, peer: &str) {
        let _ = self.0.lock().unwrap().send(Ev::Joined(peer.into()));
    }
    fn this_node_left(&self) {
        let _ = self.0.lock().unwrap().send(Ev::ThisNodeLeft);
    }
    fn log(&self, level: Level, text: &str, p: Option<&str>, _l: Option<&LaneKey>) {
        if p == Some(STALLER) && text == "node up" {
            // (the driver logs it: held as if it were busy)
            std::thread::sleep(STALL);
        }
        if level >= Level::Notice {
            let _ = self.0.lock().unwrap().send(Ev::Log(text.into()));
        }
    }
}

/// A peer whose "node up" line holds the driver that logs it for
/// [`STALL`] (the sink sleeps), as a slow step of the driver would.
const STALLER: &str = "stall@h";
const STALL: Duration = Duration::from_millis(1500);

fn node(name: &str, cookie: &str, max_frame: u64) -> (Transport, Receiver<Ev>) {
    let (t, rx, _) = node_in(name, cookie, max_frame, IoMode::Threads);
    (t, rx)
}

/// What drives the pollers that the embedding program drives (the BEAM's
/// schedulers in the NIF): here, a thread each, woken by the sink.
struct Drivers {
    stop: Arc<AtomicBool>,
    /// While set, the pollers are not driven: the node reads nothing, as
    /// if it were frozen (its tokio side, handshakes and timers, runs on).
    pause: Arc<AtomicBool>,
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
    node_with(name, cookie, max_frame, io, |_| {})
}

fn node_with(
    name: &str,
    cookie: &str,
    max_frame: u64,
    io: IoMode,
    tune: impl FnOnce(&mut TransportConfig),
) -> (Transport, Receiver<Ev>, Drivers) {
    let (tx, rx) = channel();
    let mut config = TransportConfig {
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
        overlay: weft_transport::Overlay::FullMesh,
        affinity: true,
        cookie: cookie.as_bytes().to_vec(),
        capabilities: weft_core::Capabilities::SUPPORTED,
        max_frame_size: max_frame,
        send_queue_limit: 64 << 20,
        send_queue_total_limit: 256 << 20,
        max_members: 1024,
        max_pending_handshakes: weft_transport::MAX_PENDING_HANDSHAKES,
        large_frame_claims: weft_transport::frame_reader::CLAIMS_LIMIT,
        drop_oldest: vec![],
        wait: vec![],
        timing: Timing {
            heartbeat_interval: 100,
            heartbeat_timeout: 1000,
            reconnect_min_backoff: 20,
            reconnect_max_backoff: 200,
            gossip_interval: 200,
            ..Timing::default()
        },
        io,
        pollers: 2,
        poll_linger: Duration::from_micros(50),
        poll_linger_busy: Duration::from_micros(20),
        stage: None,
    };
    tune(&mut config);
    let sink = Arc::new(TestSink(Mutex::new(tx), Mutex::new(Vec::new())));
    let t = Transport::start(config, sink.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for p in t.pollers() {
        let (wtx, wrx) = channel();
        sink.1.lock().unwrap().push(wtx);
        let (p, stop, pause) = (p.clone(), stop.clone(), pause.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) && !p.is_stopped() {
                if pause.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
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
    (
        t,
        rx,
        Drivers {
            stop,
            pause,
            threads,
        },
    )
}

fn contact(t: &Transport) -> NodeSpec {
    let mut s = t.local_spec();
    s.incarnation = 0;
    s.max_frame = 0;
    s
}

/// A frame as a raw peer writes it: header and body.
fn frame(kind: weft_core::FrameKind, body: &[u8]) -> Vec<u8> {
    [weft_core::frame::header(kind, body.len()).as_slice(), body].concat()
}

/// A raw peer named `name` (incarnation 7) that has authenticated its
/// control lane to `b` (cookie "c"), with the handshake's nonce `nonce`.
fn raw_control(b: &Transport, name: &str, nonce: u8) -> std::net::TcpStream {
    raw_control_with(b, name, nonce, None)
}

/// [`raw_control`] over a socket whose receive buffer is `rcvbuf` bytes
/// (set before it connects, so the window it offers stays that small).
fn raw_control_with(
    b: &Transport,
    name: &str,
    nonce: u8,
    rcvbuf: Option<usize>,
) -> std::net::TcpStream {
    raw_lane(b, name, nonce, rcvbuf, LaneKey::control())
}

/// [`raw_control_with`] for any lane; dialed again while `b` refuses it as
/// a duplicate (`b` dials the raw peer's lanes too, and fails: nothing
/// listens at the address the raw peer gives).
fn raw_lane(
    b: &Transport,
    name: &str,
    nonce: u8,
    rcvbuf: Option<usize>,
    lane: LaneKey,
) -> std::net::TcpStream {
    let mut s = None;
    wait_for("a lane that is not a duplicate", || {
        s = try_raw_lane(b, name, nonce, rcvbuf, lane.clone());
        s.is_some()
    });
    s.unwrap()
}

fn try_raw_lane(
    b: &Transport,
    name: &str,
    nonce: u8,
    rcvbuf: Option<usize>,
    lane: LaneKey,
) -> Option<std::net::TcpStream> {
    use std::io::Write;
    use weft_core::handshake::HandshakeError;
    use weft_core::handshake::{Dialer, DialerStep};
    use weft_core::{Capabilities, FrameKind};
    let b_spec = b.local_spec();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).unwrap();
    }
    sock.connect(&b_spec.addrs[0].into()).unwrap();
    let mut s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut me = b_spec.clone();
    me.name = name.into();
    me.incarnation = 7;
    me.addrs = vec!["127.0.0.1:1".parse().unwrap()];
    let (mut d, hello) = Dialer::new(
        b"c",
        me,
        &b_spec.name,
        lane,
        Capabilities::SUPPORTED,
        [nonce; 32],
    );
    s.write_all(&frame(FrameKind::Handshake, &hello)).unwrap();
    loop {
        let body = read_frame(&mut s).unwrap();
        match d.on_frame(&body) {
            Ok(DialerStep::Send(m)) => s.write_all(&frame(FrameKind::Handshake, &m)).unwrap(),
            Ok(DialerStep::Done(..)) => return Some(s),
            Err(HandshakeError::Refused(Refusal::Duplicate)) => return None,
            Err(e) => panic!("{e}"),
        }
    }
}

/// The next frame's body on a raw peer's socket (`None`: it ended).
fn read_frame(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut h = [0u8; 5];
    s.read_exact(&mut h).ok()?;
    let (_, len) = weft_core::frame::parse_header(&h, 1 << 20).ok()?;
    let mut body = vec![0; len];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn dropped(t: &Transport, reason: &str) -> u64 {
    let info = t.info().unwrap();
    info.dropped.iter().find(|(k, _)| *k == reason).unwrap().1
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `a` joins `b` (named "a@h" and "b@h"); wait until every lane is
/// connected both ways.
fn join_and_connect(a: &Transport, b: &Transport) {
    a.join(contact(b));
    wait_for("lanes", || {
        all_lanes_connected(a, "b@h") && all_lanes_connected(b, "a@h")
    });
}

fn all_lanes_connected(t: &Transport, peer: &str) -> bool {
    t.info().is_some_and(|i| {
        i.peers
            .iter()
            .any(|p| p.name == peer && p.lanes.iter().all(|l| l.state == LaneState::Connected))
    })
}

/// Silent while frozen (`Drivers::pause`), and patient: only its peer
/// gives up on it.
fn patient(c: &mut TransportConfig) {
    c.timing.heartbeat_interval = 300_000;
    c.timing.heartbeat_timeout = 600_000;
    c.timing.gossip_interval = 300_000;
}

/// Whether every lane of `t`'s channel `vnode` to b@h sends its small
/// messages on the channel's shared lane.
fn on_the_shared_lane(t: &Transport) -> bool {
    let info = t.info().unwrap();
    let p = info.peers.iter().find(|p| p.name == "b@h").unwrap();
    p.lanes
        .iter()
        .filter(|l| l.key.channel == "vnode" && !l.shared_lane)
        .all(|l| l.small_messages == weft_transport::SmallMessages::SharedLane)
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

/// Small messages that the sink holds back go to their destination before
/// a large one read after them on the same lane (the sink delivers large
/// frames at once): one sender's order holds across sizes, on every kind
/// of poller.
#[test]
fn held_back_small_messages_go_before_a_later_large_one() {
    for io in [IoMode::Schedulers, IoMode::Threads, IoMode::Auto] {
        let (a, _arx, _da) = node_in("a@h", "c", 1 << 20, io);
        let (b, brx, _db) = node_in("b@h", "c", 1 << 20, io);
        // Sent before the lanes are up: they queue, and go out in large
        // batches that the receiver reads many frames at a time.
        a.join(contact(&b));
        let large = weft_transport::frame_reader::LARGE_FRAME;
        for i in 0..300u32 {
            let mut body = vec![0u8; if i % 10 == 9 { large + 1 } else { 8 }];
            body[..4].copy_from_slice(&i.to_be_bytes());
            a.send(Some(1), "b@h", "default", 0, body).unwrap();
        }
        let got = recv_msgs(&brx, 300);
        let order: Vec<u32> = got
            .iter()
            .map(|(_, b)| u32::from_be_bytes(b[..4].try_into().unwrap()))
            .collect();
        assert_eq!(order, (0..300).collect::<Vec<_>>(), "{io:?}");
    }
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
    assert_eq!(la.len(), 7); // control + default + 4 vnode + vnode's shared lane
    for x in la {
        let y = lb.iter().find(|y| y.key == x.key).unwrap();
        assert_eq!(x.local, y.remote);
        assert_eq!(x.remote, y.local);
    }
    let mut locals: Vec<_> = la.iter().map(|l| l.local).collect();
    locals.dedup();
    assert_eq!(locals.len(), 7, "every lane has its own socket");

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
    assert_eq!(dropped(&a, "not_member"), 1);
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
    let (a, arx) = node("a@h", "one", 1 << 20);
    let (b, brx) = node("b@h", "two", 1 << 20);
    a.join(contact(&b));
    // the dialer is told, and reports it to whoever waits for the node
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match arx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ev::Refused(p, Refusal::BadCookie)) if p == "b@h" => break,
            Ok(Ev::Up(_)) | Ok(Ev::Msg(..)) => panic!("joined with a wrong cookie"),
            _ => assert!(Instant::now() < deadline, "no refusal reported"),
        }
    }
    assert!(logs_until(&brx, "cookie"));
    assert!(a.up_peers().is_empty() && b.up_peers().is_empty());
    let info = b.info().unwrap();
    assert!(info
        .refused_connections
        .iter()
        .any(|(k, n)| *k == "bad_cookie" && *n >= 1));
}

/// A client that fails the handshake and sends data anyway gets nothing
/// delivered: no application frame is read before the proofs check out.
#[test]
fn data_after_a_refused_handshake_is_never_delivered() {
    use std::io::{Read, Write};
    use weft_core::wire::{decode_handshake, encode_handshake};
    use weft_core::Handshake;
    let (b, brx) = node("b@h", "secret", 1 << 20);
    let addr = b.local_spec().addrs[0];
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = encode_handshake(&Handshake::Hello {
        nonce: [1; 32],
        versions: weft_core::frame::SUPPORTED_VERSIONS.to_vec(),
        caps: weft_core::Capabilities::SUPPORTED,
    });
    s.write_all(&frame(weft_core::FrameKind::Handshake, &hello))
        .unwrap();
    let challenge = read_frame(&mut s).unwrap();
    assert!(matches!(
        decode_handshake(&challenge),
        Ok(Handshake::Challenge { .. })
    ));
    let mut me = b.local_spec();
    me.name = "intruder@h".into();
    let auth = encode_handshake(&Handshake::Auth {
        from: me,
        to: "b@h".into(),
        lane: LaneKey {
            channel: "default".into(),
            index: 0,
        },
        proof: [7; 32],
    });
    s.write_all(&frame(weft_core::FrameKind::Handshake, &auth))
        .unwrap();
    // a data frame right behind the auth, as if it had been accepted
    let _ = s.write_all(&frame(
        weft_core::FrameKind::Data,
        b"\x83\x68\x02\x64\x00\x01x\x64\x00\x01y",
    ));
    let answer = read_frame(&mut s).unwrap();
    assert_eq!(
        decode_handshake(&answer),
        Ok(Handshake::Refuse(Refusal::Refused)),
        "before authentication, a refusal says nothing more"
    );
    // the connection ends, and nothing was delivered
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    assert!(logs_until(&brx, "cookie"));
    assert!(!brx.try_iter().any(|e| matches!(e, Ev::Msg(..))));
}

/// The bytes that used to kill the VM: a hello (protocol versions 1 to 3)
/// claiming a 2^40-byte name. The node lives, refuses the connection, and
/// still works.
#[test]
fn a_hello_claiming_a_huge_name_is_refused_and_the_node_lives() {
    use std::io::{Read, Write};
    let (a, _arx) = node("a@h", "c", 1 << 20);
    let (b, brx) = node("b@h", "c", 1 << 20);
    let addr = b.local_spec().addrs[0];
    for version in [1u8, 2, 3] {
        for len in [
            [0xfd, 0, 0, 0, 0, 0, 1, 0, 0],
            [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            let mut bytes = vec![0, 0, 0, 0x11, 0, 0x57, 0x45, 0x46, 0x54, 0, version, 0];
            bytes.extend_from_slice(&len);
            assert_eq!(bytes.len(), 21);
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&bytes).unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            // at most the list of versions this node speaks
            assert!(buf.len() < 64, "{} bytes back", buf.len());
        }
    }
    assert!(logs_until(&brx, "refused incoming connection"));
    a.join(contact(&b));
    wait_for("up", || a.up_peers() == ["b@h"]);
}

/// Peers tell each other their frame limits at the handshake: the sender
/// refuses what the receiver would refuse, instead of breaking a lane.
#[test]
fn the_sender_refuses_what_the_receiver_would() {
    let (a, _x) = node("a@h", "c", 8 << 20);
    let (b, brx) = node("b@h", "c", 1 << 20);
    join_and_connect(&a, &b);
    assert_eq!(
        a.send(None, "b@h", "vnode", 1, vec![7; 2 << 20]),
        Err(weft_transport::SendError::TooLarge {
            size: 2 << 20,
            max: 1 << 20
        })
    );
    for i in 0..10u8 {
        a.send(None, "b@h", "vnode", 1, vec![i]).unwrap();
    }
    let got = recv_msgs(&brx, 10);
    assert!(got.iter().all(|(_, b)| b.len() == 1));
    assert_eq!(a.up_peers(), ["b@h"]);
    assert!(all_lanes_connected(&a, "b@h"));
    let info = a.info().unwrap();
    assert!(info
        .refused
        .iter()
        .any(|(k, n)| *k == "too_large" && *n == 1));
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
    use std::io::Write;
    let (b, brx) = node("b@h", "c", 1 << 20);
    let addr = b.local_spec().addrs[0];
    // Not weft at all.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(logs_until(&brx, "refused incoming connection"));
    // A weft hello of a future protocol version: the acceptor says which
    // versions it speaks, and closes.
    let mut body = b"WEFT".to_vec();
    body.extend_from_slice(&99u16.to_be_bytes());
    body.extend_from_slice(&[0; 16]);
    assert_eq!(
        hello_answer(addr, &body),
        Ok(weft_core::Handshake::Versions(
            weft_core::frame::SUPPORTED_VERSIONS.to_vec()
        ))
    );
    // (logged once per source and window: this one is counted)
    wait_for("counted", || {
        let info = b.info().unwrap();
        let n = |r: &str| {
            info.refused_connections
                .iter()
                .find(|(k, _)| *k == r)
                .map(|x| x.1)
        };
        n("version") == Some(1) && n("protocol") == Some(1)
    });
    assert!(b.up_peers().is_empty());
}

/// Send a handshake frame of `body` to `addr` as the first frame of a new
/// connection; the answer, read until the acceptor closes.
fn hello_answer(
    addr: std::net::SocketAddr,
    body: &[u8],
) -> Result<weft_core::Handshake, weft_core::FrameError> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let frame = weft_core::frame::header(weft_core::FrameKind::Handshake, body.len());
    s.write_all(&[&frame[..], body].concat()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let (_, len) = weft_core::frame::parse_header(buf[..5].try_into().unwrap(), 1024)?;
    weft_core::wire::decode_handshake(&buf[5..5 + len])
}

/// A node of protocol 2 (one version in its hello, no capabilities) is
/// told the versions this node speaks, and the refusal is logged with both.
#[test]
fn a_protocol_2_hello_is_refused_naming_the_versions() {
    let (b, brx) = node("b@h", "c", 1 << 20);
    let mut hello = b"WEFT\x00\x02\x00".to_vec();
    hello.extend_from_slice(&[5; 32]);
    assert_eq!(
        hello_answer(b.local_spec().addrs[0], &hello),
        Ok(weft_core::Handshake::Versions(vec![3]))
    );
    assert!(logs_until(
        &brx,
        "peer speaks protocol versions [2], this node [3]"
    ));
}

/// Both ends of a connection know what its handshake negotiated.
#[test]
fn connections_know_what_they_negotiated() {
    let (a, _arx) = node("a@h", "c", 1 << 20);
    let (b, _brx) = node("b@h", "c", 1 << 20);
    join_and_connect(&a, &b);
    for (t, peer) in [(&a, "b@h"), (&b, "a@h")] {
        let n = t.negotiated(peer, &LaneKey::control()).unwrap();
        assert_eq!(n.version, 3);
        assert_eq!(n.caps, weft_core::Capabilities::SUPPORTED);
    }
}

/// A frame whose header carries extensions that both ends agreed on is
/// read, and its body delivered as any other; one carrying extensions the
/// receiver did not agree on costs its connection, and is not delivered.
#[test]
fn extensions_are_read_if_negotiated_and_refused_if_not() {
    use weft_core::{Capabilities, Extensions, FrameKind};
    let ext = Extensions {
        seq: Some(41),
        ack: Some(40),
        trace: Some([3; 16]),
        origin: Some("a@h".into()),
        destination: Some("b@h".into()),
        skipped: 0,
    };
    let vnode0 = LaneKey {
        channel: "vnode".into(),
        index: 0,
    };
    let (a, _arx) = node("a@h", "c", 1 << 20);
    let (b, brx) = node("b@h", "c", 1 << 20);
    join_and_connect(&a, &b);
    assert!(a.negotiated("b@h", &vnode0).unwrap().allows(&ext));
    let lane = a.lane("b@h", &vnode0).unwrap();
    lane.push_extended(FrameKind::Data, &ext, b"with ext".to_vec().into(), None)
        .unwrap();
    assert_eq!(
        recv_msgs(&brx, 1),
        [("a@h".to_string(), b"with ext".to_vec())]
    );

    // c offers no capabilities: nothing may carry extensions to it
    let (c, crx, _dc) = node_with("c@h", "c", 1 << 20, IoMode::Threads, |c| {
        c.capabilities = Capabilities::NONE
    });
    a.join(contact(&c));
    wait_for("lanes", || all_lanes_connected(&a, "c@h"));
    let n = a.negotiated("c@h", &vnode0).unwrap();
    assert_eq!(n.caps, Capabilities::NONE);
    assert!(!n.allows(&ext));
    let traced = Extensions {
        trace: Some([1; 16]),
        ..Default::default()
    };
    let lane = a.lane("c@h", &vnode0).unwrap();
    lane.push_extended(FrameKind::Data, &traced, b"traced".to_vec().into(), None)
        .unwrap();
    assert!(logs_until(&crx, "not negotiated"));
    wait_for("counted", || dropped(&c, "malformed") == 1);
    assert!(!crx
        .try_iter()
        .any(|e| matches!(e, Ev::Msg(_, ref m) if m == b"traced")));
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
    join_and_connect(&a, &b);
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

/// Messages sent right after `join`, before the node is even dialed, wait
/// for it: none is lost, on a one-lane and a four-lane channel.
#[test]
fn messages_sent_right_after_join_wait_for_the_node() {
    for io in [IoMode::Threads, IoMode::Schedulers] {
        let (a, _x, _da) = node_in("a@h", "c", 1 << 20, io);
        let (b, brx, _db) = node_in("b@h", "c", 1 << 20, io);
        a.join(contact(&b));
        for i in 0..200u32 {
            a.send(None, "b@h", "default", i, i.to_be_bytes().to_vec())
                .unwrap();
            a.send(None, "b@h", "vnode", i, i.to_be_bytes().to_vec())
                .unwrap();
        }
        let got = recv_msgs(&brx, 400);
        assert_eq!(got.len(), 400);
        assert_eq!(dropped(&a, "not_member"), 0);
    }
}

/// A message for a node that `join` was called for waits until the node is
/// given up on, and is then counted.
#[test]
fn messages_for_an_unreachable_node_are_counted_when_it_is_given_up() {
    let (a, _x) = node("a@h", "c", 1 << 20);
    // Nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ghost = NodeSpec {
        name: "ghost@h".into(),
        incarnation: 0,
        addrs: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
        channels: vec![],
        max_frame: 0,
    };
    a.join(ghost);
    for i in 0..50u32 {
        a.send(None, "ghost@h", "default", i, vec![1; 100]).unwrap();
    }
    // Dropped when the node is given up on (or, sent after that, at once).
    wait_for("given up", || {
        dropped(&a, "node_down") + dropped(&a, "not_member") == 50
    });
    assert_eq!(a.info().unwrap().queued_bytes, 0);
}

/// A receiver that stops reading (frozen) is declared down by the sender;
/// what was queued for it then is dropped and counted. Every message the
/// sender accepted is delivered or counted: sent = delivered + dropped.
/// A frame from an authenticated peer that is not a message is counted
/// (`malformed`, apart from `no_destination`), its connection closed with a
/// logged reason naming the peer; the lane reconnects and carries on.
#[test]
fn a_malformed_data_frame_is_counted_logged_and_closes_its_connection() {
    let (a, _arx) = node("a@h", "c", 1 << 20);
    let (b, brx) = node("b@h", "c", 1 << 20);
    join_and_connect(&a, &b);
    a.send(None, "b@h", "default", 0, b"nobody".to_vec())
        .unwrap();
    wait_for("no_destination", || dropped(&b, "no_destination") == 1);
    // Held back by the sink, then its process was gone: counted the same.
    a.send(None, "b@h", "default", 0, b"gone-late".to_vec())
        .unwrap();
    wait_for("no_destination", || dropped(&b, "no_destination") == 2);
    assert_eq!(dropped(&b, "malformed"), 0);
    a.send(None, "b@h", "default", 0, b"malformed".to_vec())
        .unwrap();
    wait_for("malformed", || dropped(&b, "malformed") == 1);
    assert_eq!(dropped(&b, "no_destination"), 2);
    assert!(logs_until(&brx, "malformed data frame"));
    // The lane comes back: a message sent until one arrives gets through.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        a.send(None, "b@h", "default", 0, b"after".to_vec())
            .unwrap();
        if brx
            .recv_timeout(Duration::from_millis(50))
            .is_ok_and(|e| matches!(e, Ev::Msg(_, ref m) if m == b"after"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the lane never came back");
    }
}

/// A peer that sends a bad frame on each of its connections, again and
/// again, is warned about once per window (10 s), not once per connection:
/// the first warning comes at once, naming the peer, and every bad frame
/// is counted (`malformed`).
#[test]
fn bad_frames_on_connection_after_connection_give_a_bounded_number_of_warnings() {
    let (a, _arx) = node("a@h", "c", 1 << 20);
    let (b, brx) = node("b@h", "c", 1 << 20);
    join_and_connect(&a, &b);
    let closes = 10;
    wait_for("bad frames", || {
        // one at a time: each closes the lane, which reconnects
        if a.send(None, "b@h", "default", 0, b"malformed".to_vec())
            .is_ok()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        dropped(&b, "malformed") >= closes
    });
    let warnings: Vec<String> = brx
        .try_iter()
        .filter_map(|e| match e {
            Ev::Log(t) if t.starts_with("closing connection") => Some(t),
            _ => None,
        })
        .collect();
    assert!(warnings[0].contains("malformed data frame"), "{warnings:?}");
    // one, or two if the test outlasted a window
    assert!(warnings.len() <= 2, "{warnings:?}");
}

/// A peer that comes and goes again and again (here: stopped and started
/// 5 times in a row) is logged as up, and as down, once per window (10 s),
/// not once per time: a peer that knows the cookie could otherwise flood
/// the log by reconnecting. Subscribers still get every nodeup/nodedown.
#[test]
fn a_peer_that_comes_and_goes_is_logged_once_per_window() {
    let (a, arx) = node("a@h", "c", 1 << 20);
    let times = 5;
    for _ in 0..times {
        let (b, _brx) = node("b@h", "c", 1 << 20);
        join_and_connect(&a, &b);
        b.stop();
        wait_for("down", || a.up_peers().is_empty());
    }
    let events: Vec<Ev> = arx.try_iter().collect();
    let ups = events.iter().filter(|e| matches!(e, Ev::Up(_))).count();
    let lines = |needle: &str| {
        events
            .iter()
            .filter(|e| matches!(e, Ev::Log(t) if t.contains(needle)))
            .count()
    };
    assert_eq!(ups, times);
    // once, or twice if the test outlasted a window
    assert!((1..=2).contains(&lines("node up")), "{events:?}");
    assert!((1..=2).contains(&lines("node down")), "{events:?}");
}

/// A message the sink refuses because decoding it would create atoms
/// while the atom table is near its limit is counted (`atom_limit`) and
/// logged, and, unlike a malformed frame, its connection stays: the
/// messages behind it on the same lane arrive, in order.
#[test]
fn a_message_refused_for_its_atoms_is_counted_and_its_connection_stays() {
    let (a, _arx) = node("a@h", "c", 1 << 20);
    let (b, brx) = node("b@h", "c", 1 << 20);
    join_and_connect(&a, &b);
    for _ in 0..3 {
        a.send(None, "b@h", "default", 0, b"new-atoms".to_vec())
            .unwrap();
    }
    a.send(None, "b@h", "default", 0, b"behind".to_vec())
        .unwrap();
    let mut logged = false;
    loop {
        match brx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ev::Log(text)) if text.contains("dropped.atom_limit") => logged = true,
            Ok(Ev::Msg(_, m)) if m == b"behind" => break,
            Ok(_) => {}
            Err(_) => panic!("the message behind never arrived"),
        }
    }
    assert!(logged, "no warning before the message behind");
    assert_eq!(dropped(&b, "atom_limit"), 3);
    assert_eq!(dropped(&b, "malformed"), 0);
}

/// A connection that replaces one of the same lane (the sender gave up on
/// the old one and redialed) is read only once the old one has been read
/// to its end: one sender's messages on a lane arrive in the order sent,
/// across the replacement (some may be lost with the old connection).
#[test]
fn a_replaced_connection_is_read_to_its_end_before_its_successor() {
    let (a, _arx, _da) = node_in("a@h", "c", 1 << 20, IoMode::Threads);
    let (b, brx, db) = node_with("b@h", "c", 1 << 20, IoMode::Schedulers, patient);
    join_and_connect(&a, &b);
    // B stops reading; A sends numbered messages until it has given up on
    // B and reconnected at least once, then some more.
    db.pause.store(true, Ordering::SeqCst);
    let conn_of = |t: &Transport| {
        t.info().and_then(|i| {
            i.peers.iter().find(|p| p.name == "b@h").and_then(|p| {
                p.lanes
                    .iter()
                    .find(|l| l.key.channel == "default")
                    .and_then(|l| l.local.zip(l.remote))
            })
        })
    };
    let first = conn_of(&a).expect("connected");
    let mut seq = 0u32;
    let mut send_some = |n: u32| {
        for _ in 0..n {
            let _ = a.send(Some(1), "b@h", "default", 0, seq.to_be_bytes().to_vec());
            seq += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while conn_of(&a).is_none_or(|c| c == first) {
        assert!(Instant::now() < deadline, "A never reconnected");
        send_some(20);
    }
    for _ in 0..20 {
        send_some(20);
    }
    db.pause.store(false, Ordering::SeqCst);
    // Everything that arrives, until nothing has for a while.
    // (A still gives up on the silent B now and then: other events go on.)
    let mut got = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_millis(2500) {
        if let Ok(Ev::Msg(_, m)) = brx.recv_timeout(Duration::from_millis(100)) {
            got.push(u32::from_be_bytes(m[..4].try_into().unwrap()));
            last = Instant::now();
        }
    }
    assert!(!got.is_empty());
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "out of order: {:?}",
        got.windows(2).find(|w| w[0] >= w[1])
    );
    assert!(got.iter().any(|&s| s > 0) && *got.last().unwrap() > got[0]);
}

#[test]
fn every_accepted_message_is_delivered_or_counted() {
    delivered_or_counted(false, |a, _| {
        a.send(None, "b@h", "default", 0, vec![5; 1000]).is_ok()
    });
}

/// The same over a channel's lanes and their shared lane, with a large
/// message now and then: lanes leave the shared lane while the receiver is
/// frozen. A lane holds what it sends until its fence is written, so what
/// a wait holds back at the receiver never waits for a fence that the
/// sender dropped when it gave up on the receiver (`share_wait`).
#[test]
fn every_accepted_message_is_delivered_or_counted_across_the_shared_lane() {
    delivered_or_counted(true, |a, i| {
        let len = if i % 97 == 0 { 70_000 } else { 1000 };
        let key = weft_transport::Choice::Index(i % 8);
        a.send(Some(i % 8), "b@h", "vnode", key, vec![5; len])
            .is_ok()
    });
}

/// `warm`: first, the lanes of `vnode` move to its shared lane.
fn delivered_or_counted(warm: bool, send: impl Fn(&Transport, u64) -> bool) {
    // The sender gives up on a silent peer after 1 s and redials only much
    // later; the receiver never gives up on its own, and reads what reached
    // it once it thaws (a connection closed by the sender is read to its end).
    let (a, _x, _da) = node_with("a@h", "c", 1 << 20, IoMode::Threads, |c| {
        c.timing.reconnect_min_backoff = 60_000;
        c.timing.reconnect_max_backoff = 60_000;
    });
    let (b, brx, db) = node_with("b@h", "c", 1 << 20, IoMode::Schedulers, patient);
    join_and_connect(&a, &b);
    if warm {
        let mut sent = 0;
        wait_for("vnode's lanes on its shared lane", || {
            for k in 0..4 {
                let key = weft_transport::Choice::Index(k);
                a.send(Some(k), "b@h", "vnode", key, vec![1; 10]).unwrap();
                sent += 1;
            }
            on_the_shared_lane(&a)
        });
        recv_msgs(&brx, sent);
    }
    db.pause.store(true, Ordering::SeqCst);
    let mut accepted = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Send until the sender declares the receiver down, and a little more.
    let mut after_down = 0;
    while after_down < 100 {
        assert!(Instant::now() < deadline, "never declared down");
        for _ in 0..100 {
            if send(&a, accepted) {
                accepted += 1;
            }
        }
        if a.up_peers().is_empty() {
            after_down += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        dropped(&a, "node_down") > 0,
        "the queue at node-down was counted"
    );
    db.pause.store(false, Ordering::SeqCst);
    let mut delivered = 0u64;
    let lost = |a: &Transport| {
        let info = a.info().unwrap();
        info.dropped.iter().map(|(_, n)| n).sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        delivered += brx.try_iter().filter(|e| matches!(e, Ev::Msg(..))).count() as u64;
        if delivered + lost(&a) >= accepted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "accepted {accepted}, delivered {delivered}, dropped {}",
            lost(&a)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(delivered + lost(&a), accepted);
    assert!(delivered > 0);
}

/// The `i`-th message of a stream to b@h: on `default` and on each lane of
/// `vnode` in turn. Whether it was accepted.
fn send_nth(a: &Transport, i: u64) -> bool {
    let (channel, choice) = if i.is_multiple_of(2) {
        ("default", 0)
    } else {
        ("vnode", i as u32)
    };
    a.send(None, "b@h", channel, choice, vec![5; 100]).is_ok()
}

/// A receiver that stops mid-stream closes gracefully: it stops writing,
/// reads on until the sender closes its end, and delivers what the sender
/// wrote before it heard of the stop; the sender counts what it had not
/// written. Every accepted message is delivered or counted, exactly, on one
/// lane and on many (the socket buffers hold tens of thousands of them).
#[test]
fn a_stopping_receiver_delivers_what_was_written_before_it_closed() {
    let (a, _x, _da) = node_in("a@h", "c", 1 << 20, IoMode::Threads);
    let (b, brx, db) = node_in("b@h", "c", 1 << 20, IoMode::Schedulers);
    join_and_connect(&a, &b);
    let stopper = std::thread::spawn(move || {
        let mut seen = 0;
        while seen < 20_000 {
            if let Ok(Ev::Msg(..)) = brx.recv_timeout(Duration::from_secs(20)) {
                seen += 1;
            }
        }
        b.stop();
        drop(db);
        seen + brx.try_iter().filter(|e| matches!(e, Ev::Msg(..))).count() as u64
    });
    let mut accepted = 0u64;
    let mut i = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stopper.is_finished() || !a.up_peers().is_empty() {
        assert!(Instant::now() < deadline, "never declared down");
        accepted += send_nth(&a, i) as u64;
        i += 1;
    }
    let delivered = stopper.join().unwrap();
    let lost = |a: &Transport| {
        let info = a.info().unwrap();
        info.dropped.iter().map(|(_, n)| n).sum::<u64>()
    };
    wait_for("accounted", || delivered + lost(&a) >= accepted);
    assert_eq!(
        delivered + lost(&a),
        accepted,
        "accepted {accepted}, delivered {delivered}"
    );
}

/// A sender that stops mid-stream writes out what it had queued before it
/// closes: every message it accepted is delivered, but for the one send in
/// progress as the stop began, which may find its lane stopped (it is
/// counted then, on the stopped transport).
#[test]
fn a_stopping_sender_writes_out_its_queues_first() {
    let (a, _x, _da) = node_in("a@h", "c", 1 << 20, IoMode::Schedulers);
    let (b, brx, _db) = node_in("b@h", "c", 1 << 20, IoMode::Threads);
    join_and_connect(&a, &b);
    let a = Arc::new(a);
    let sender = {
        let a = a.clone();
        std::thread::spawn(move || {
            let (mut accepted, mut i) = (0u64, 0u64);
            while a.is_running() {
                accepted += send_nth(&a, i) as u64;
                i += 1;
            }
            accepted
        })
    };
    let mut delivered = 0u64;
    while delivered < 20_000 {
        if let Ok(Ev::Msg(..)) = brx.recv_timeout(Duration::from_secs(20)) {
            delivered += 1;
        }
    }
    a.stop();
    let accepted = sender.join().unwrap();
    // all but the one in progress, then a quiet while for it
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match brx.recv_timeout(Duration::from_millis(200)) {
            Ok(Ev::Msg(..)) => delivered += 1,
            Ok(_) => {}
            Err(_) if delivered + 1 >= accepted => break,
            Err(_) => {}
        }
    }
    assert!(
        delivered <= accepted && accepted - delivered <= 1,
        "accepted {accepted}, delivered {delivered}"
    );
}

/// Send queues are bounded: past the per-peer bound a send is refused with
/// `Overloaded` (memory stays under the bound plus one message), or, on a
/// channel configured with `drop_oldest`, the oldest queued messages go and
/// are counted.
#[test]
fn send_queues_are_bounded() {
    // (larger than what one flush takes off the queue at once, 1 MiB)
    let limit = 4 << 20;
    let (a, _x, _da) = node_with("a@h", "c", 1 << 20, IoMode::Threads, |c| {
        c.send_queue_limit = limit;
        c.drop_oldest = vec!["vnode".into()];
        c.timing.heartbeat_timeout = 600_000;
    });
    let (b, _brx, db) = node_with("b@h", "c", 1 << 20, IoMode::Schedulers, |c| {
        c.timing.heartbeat_timeout = 600_000;
    });
    join_and_connect(&a, &b);
    db.pause.store(true, Ordering::SeqCst);
    // The socket buffers fill first, then the queue, up to the bound.
    let mut refused = false;
    for _ in 0..100_000 {
        match a.send(None, "b@h", "default", 0, vec![1; 1000]) {
            Ok(()) => {}
            Err(weft_transport::SendError::Overloaded) => {
                refused = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused, "never refused");
    let info = a.info().unwrap();
    assert!(info.queued_bytes <= limit + 1000, "{}", info.queued_bytes);
    // drop_oldest: the channel's own oldest messages make room.
    db.pause.store(false, Ordering::SeqCst);
    wait_for("drained", || a.info().unwrap().queued_bytes == 0);
    db.pause.store(true, Ordering::SeqCst);
    for _ in 0..20_000 {
        a.send(None, "b@h", "vnode", 0, vec![3; 1000]).unwrap();
    }
    let info = a.info().unwrap();
    assert!(info.queued_bytes <= limit + 1000, "{}", info.queued_bytes);
    let overflow = dropped(&a, "overflow");
    assert!(overflow > 0);
    // other lanes of the channel make room from lane 0's queue: sends to
    // them are never refused while the channel has queued messages to drop
    for i in 0..3000u64 {
        a.send(
            None,
            "b@h",
            "vnode",
            weft_transport::Choice::Index(1 + i % 3),
            vec![4; 1000],
        )
        .unwrap();
    }
    assert!(dropped(&a, "overflow") > overflow);
    db.pause.store(false, Ordering::SeqCst);
}

/// Incoming connections that never finish their handshake are bounded:
/// past the bound, new ones are closed at once and counted; memory per
/// pending connection grows with what it sent, not with what it claims.
#[test]
fn pending_handshakes_are_bounded() {
    use std::io::Write;
    let (b, _brx, _db) = node_with("b@h", "c", 1 << 20, IoMode::Threads, |c| {
        c.max_pending_handshakes = 8;
    });
    let addr = b.local_spec().addrs[0];
    let n = 8 + 50;
    let mut held = Vec::new();
    for _ in 0..n {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        // a header claiming a first frame, and nothing more
        let _ = s.write_all(&weft_core::frame::header(
            weft_core::FrameKind::Handshake,
            200,
        ));
        held.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = b.info().unwrap();
        // (refused, or, once the oldest are 500 ms old, making room by
        // ending one of them)
        let count = |k: &str| {
            info.refused_connections
                .iter()
                .find(|(r, _)| *r == k)
                .map_or(0, |(_, c)| *c)
        };
        if count("too_many_handshakes") + count("evicted") >= 50 {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", info.refused_connections);
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
    // and the node still takes a real join
    let (a, _arx) = node("a@h", "c", 1 << 20);
    a.join(contact(&b));
    wait_for("up", || a.up_peers() == ["b@h"]);
}

/// A silent connection from `from` to `to` (a first frame header claiming
/// 200 bytes, and nothing more).
fn silent_from(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
) -> std::io::Result<socket2::Socket> {
    use std::io::Write;
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&std::net::SocketAddr::new(from, 0).into())?;
    s.connect(&to.into())?;
    let mut w: &socket2::Socket = &s;
    let _ = w.write_all(&weft_core::frame::header(
        weft_core::FrameKind::Handshake,
        200,
    ));
    Ok(s)
}

/// One source that keeps every handshake slot taken (silent connections,
/// a new one as soon as one is closed) cannot lock other sources out: a
/// newcomer from an address holding fewer slots ends one of its
/// handshakes. And silent connections from the peer's own address (one
/// host) are ended once 500 ms old, so the peer's join still goes
/// through while they are held.
#[test]
fn a_flood_of_silent_connections_does_not_lock_out_a_peer() {
    let (b, _brx, _db) = node_with("b@h", "c", 1 << 20, IoMode::Threads, |c| {
        c.max_pending_handshakes = 8;
    });
    let addr = b.local_spec().addrs[0];
    let stop = Arc::new(AtomicBool::new(false));
    // another address of the loopback interface: another source
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
            let mut held = std::collections::VecDeque::new();
            while !stop.load(Ordering::SeqCst) {
                if let Ok(s) = silent_from(other, addr) {
                    held.push_back(s);
                }
                if held.len() > 64 {
                    held.pop_front();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    wait_for("the flood takes every slot", || {
        b.info()
            .unwrap()
            .refused_connections
            .iter()
            .any(|(k, c)| (*k == "too_many_handshakes" || *k == "evicted") && *c >= 20)
    });
    let (a, _arx) = node("a@h", "c", 1 << 20);
    a.join(contact(&b));
    wait_for("up through the flood", || a.up_peers() == ["b@h"]);
    stop.store(true, Ordering::SeqCst);
    flood.join().unwrap();

    // silent connections from the same address as the peer, held open
    let (c, _crx, _dc) = node_with("c@h", "c", 1 << 20, IoMode::Threads, |c| {
        c.max_pending_handshakes = 8;
    });
    let caddr = c.local_spec().addrs[0];
    let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let held: Vec<_> = (0..8)
        .filter_map(|_| silent_from(local, caddr).ok())
        .collect();
    assert_eq!(held.len(), 8);
    let (d, _drx) = node("d@h", "c", 1 << 20);
    d.join(contact(&c));
    wait_for("up past silent connections", || d.up_peers() == ["c@h"]);
    let evicted = c
        .info()
        .unwrap()
        .refused_connections
        .iter()
        .find(|(k, _)| *k == "evicted")
        .map_or(0, |(_, n)| *n);
    assert!(evicted >= 1, "{:?}", c.info().unwrap().refused_connections);
    drop(held);
}

/// Drops every second application message sent on `default` (a fault).
struct DropEverySecondSent(AtomicU64);

impl Stage for DropEverySecondSent {
    fn on_send(&self, m: &Envelope<'_>) -> Verdict {
        if m.channel != "default" {
            return Verdict::Pass;
        }
        // `default` has one lane (unknown until the peer's plan is).
        assert!(matches!(m.lane, None | Some(0)), "{m:?}");
        assert_eq!((m.peer, m.sender), ("b@h", Some(1)));
        if self.0.fetch_add(1, Ordering::Relaxed) % 2 == 1 {
            Verdict::Drop(DropReason::Fault)
        } else {
            Verdict::Pass
        }
    }
}

/// Filters out the `n`th message received on `default` (counting from 0).
struct DropOneReceived(AtomicU64, u64);

impl Stage for DropOneReceived {
    fn on_receive(&self, m: &Envelope<'_>) -> Verdict {
        if m.channel == "default" && self.0.fetch_add(1, Ordering::Relaxed) == self.1 {
            Verdict::Drop(DropReason::Filtered)
        } else {
            Verdict::Pass
        }
    }
}

/// A stage on the sender drops every second message, one on the receiver
/// drops one message: each is counted under its reason, everything else is
/// delivered, in order, and sent = delivered + dropped. Messages sent
/// right after `join` (waiting for the peer's plan) and large messages
/// (read into buffers of their own) go through the stage too.
#[test]
fn a_stage_drops_on_send_and_on_receive_and_every_drop_is_counted() {
    for io in [IoMode::Threads, IoMode::Schedulers] {
        let (a, _arx, _da) = node_with("a@h", "c", 1 << 20, io, |c| {
            c.stage = Some(Arc::new(DropEverySecondSent(AtomicU64::new(0))));
        });
        let (b, brx, _db) = node_with("b@h", "c", 1 << 20, io, |c| {
            c.stage = Some(Arc::new(DropOneReceived(AtomicU64::new(0), 5)));
        });
        a.join(contact(&b));
        const N: u32 = 200;
        for i in 0..N {
            if i == 20 {
                wait_for("lanes", || {
                    all_lanes_connected(&a, "b@h") && all_lanes_connected(&b, "a@h")
                });
            }
            // Every tenth message large enough to be read into a buffer of
            // its own.
            let size = if i % 10 == 4 { 300_000 } else { 16 };
            let mut body = vec![0u8; size];
            body[..4].copy_from_slice(&i.to_be_bytes());
            a.send(Some(1), "b@h", "default", 0, body).unwrap();
        }
        // Control traffic (heartbeats) goes around the stage.
        let got = recv_msgs(&brx, (N / 2 - 1) as usize);
        let seqs: Vec<u32> = got
            .iter()
            .map(|(_, b)| u32::from_be_bytes(b[..4].try_into().unwrap()))
            .collect();
        // Sent: the even ones; received: all of them but the sixth.
        let mut expected: Vec<u32> = (0..N).step_by(2).collect();
        expected.remove(5);
        assert_eq!(seqs, expected);
        assert_eq!(got.iter().filter(|(_, b)| b.len() == 300_000).count(), 20);
        assert_eq!(dropped(&a, "fault"), u64::from(N / 2));
        assert_eq!(dropped(&a, "filtered"), 0);
        wait_for("the receiver's count", || dropped(&b, "filtered") == 1);
        assert_eq!(dropped(&b, "fault"), 0);
        let lost = |t: &Transport| {
            t.info()
                .unwrap()
                .dropped
                .iter()
                .map(|(_, n)| n)
                .sum::<u64>()
        };
        assert_eq!(seqs.len() as u64 + lost(&a) + lost(&b), u64::from(N));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            brx.try_iter().all(|e| !matches!(e, Ev::Msg(..))),
            "nothing more"
        );
        a.stop();
        b.stop();
    }
}

/// The client-server overlay at the wire: two clients and a server. The
/// clients connect to the server only; a message from one client to the
/// other goes to the server with the destination and origin in its header,
/// the server passes it on, and it arrives in order, large and small. A
/// frame for a node the server has no connection to is counted there.
#[test]
fn client_server_relays_between_clients_in_order() {
    use weft_transport::Overlay;
    let server = |c: &mut TransportConfig| c.overlay = Overlay::ClientServer { server: true };
    let client = |c: &mut TransportConfig| c.overlay = Overlay::ClientServer { server: false };
    let (s, _srx, _ds) = node_with("s@h", "c", 1 << 22, IoMode::Threads, server);
    let (c1, _c1rx, _d1) = node_with("c1@h", "c", 1 << 22, IoMode::Threads, client);
    let (c2, c2rx, _d2) = node_with("c2@h", "c", 1 << 22, IoMode::Threads, client);
    c1.join(contact(&s));
    c2.join(contact(&s));
    wait_for("clients up with the server", || {
        s.up_peers() == ["c1@h", "c2@h"] && c1.up_peers() == ["s@h"] && c2.up_peers() == ["s@h"]
    });
    wait_for("lanes", || {
        all_lanes_connected(&c1, "s@h") && all_lanes_connected(&s, "c2@h")
    });
    // the clients never connect to each other, whatever they heard
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(c1.up_peers(), ["s@h"]);
    assert!(c1.info().unwrap().peers.iter().all(|p| p.name == "s@h"));
    // 300 messages on one lane, every tenth 100 KiB (read into its own
    // buffer, relayed from there)
    let bodies: Vec<Vec<u8>> = (0..300u32)
        .map(|i| {
            let mut b = i.to_be_bytes().to_vec();
            if i % 10 == 0 {
                b.resize(100 * 1024, 7);
            }
            b
        })
        .collect();
    for b in &bodies {
        c1.send(Some(1), "c2@h", "vnode", 5u32, b.clone()).unwrap();
    }
    let got = recv_msgs(&c2rx, 300);
    assert!(got.iter().all(|(p, _)| p == "s@h"));
    let got: Vec<Vec<u8>> = got.into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, bodies);
    assert_eq!(c1.info().unwrap().relayed, 300);
    wait_for("server counted", || s.info().unwrap().relayed == 300);
    assert_eq!(dropped(&c1, "not_member"), 0);
    // for a node the server does not know: counted there as no route
    c1.send(Some(1), "nobody@h", "vnode", 5u32, b"x".to_vec())
        .unwrap();
    wait_for("no route counted", || dropped(&s, "no_route") == 1);
    assert_eq!(s.info().unwrap().overlay, "client_server");
}

/// A lane that leaves its channel's shared lane for its own connection
/// (capability `share_wait`) holds nothing back: with the receiver reading
/// nothing, the sender writes the large message at once, behind a wait.
/// When the receiver reads again, it meets the wait before the fence (the
/// shared lane has others' backlog to read first), stops reading that lane
/// until the fence comes, and every key's order holds.
#[test]
fn a_lane_leaving_the_shared_lane_waits_at_the_receiver() {
    use weft_transport::{Choice, SmallMessages};
    let (a, _arx, _da) = node_with("a@h", "c", 1 << 22, IoMode::Threads, patient);
    // (one poller: B reads its connections in turn, a bounded amount each)
    let (b, brx, db) = node_with("b@h", "c", 1 << 22, IoMode::Schedulers, |c| {
        patient(c);
        c.pollers = 1;
    });
    join_and_connect(&a, &b);
    let vnode_lanes = |t: &Transport, peer: &str| -> Vec<weft_transport::LaneInfo> {
        let i = t.info().unwrap();
        let p = i.peers.iter().find(|p| p.name == peer).unwrap();
        let mut ls: Vec<_> = p
            .lanes
            .iter()
            .filter(|l| l.key.channel == "vnode" && !l.shared_lane)
            .cloned()
            .collect();
        ls.sort_by_key(|l| l.key.index);
        ls
    };
    let msg = |key: u8, seq: u32, len: usize| {
        let mut m = vec![0u8; len.max(5)];
        m[0] = key;
        m[1..5].copy_from_slice(&seq.to_be_bytes());
        m
    };
    let seqs = std::cell::Cell::new([0u32; 4]);
    let send = |key: u8, len: usize| {
        let mut s = seqs.get();
        let m = msg(key, s[key as usize], len);
        s[key as usize] += 1;
        seqs.set(s);
        a.send(
            Some(u64::from(key) + 1),
            "b@h",
            "vnode",
            Choice::Index(key.into()),
            m,
        )
        .unwrap();
    };
    // Small messages: the four lanes move to the shared lane.
    let mut delivered = 0;
    wait_for("the lanes on the shared lane", || {
        for key in 0..4 {
            send(key, 100);
        }
        delivered += 4;
        on_the_shared_lane(&a)
    });
    let got = recv_msgs(&brx, delivered);
    assert_eq!(got.len(), delivered);
    // B reads nothing. Keys 1-3 put 60 KB each on the shared lane, key 0
    // some small messages, then a large one: it leaves the shared lane.
    db.pause.store(true, Ordering::SeqCst);
    let mut next = seqs.get();
    for _ in 0..600 {
        for key in 1..4 {
            send(key, 100);
        }
    }
    for _ in 0..50 {
        send(0, 100);
    }
    // (the smallest message that may not share: read in one turn, so that
    // without the wait it would overtake the shared lane's backlog)
    send(0, 64 * 1024);
    for _ in 0..50 {
        send(0, 100);
    }
    let sent: u32 = seqs.get().iter().zip(next).map(|(s, n)| s - n).sum();
    // Nothing held at the sender: lane 0 is on its own connection and has
    // written the large message (no answer can come from B now).
    wait_for("lane 0 written out", || {
        let l = &vnode_lanes(&a, "b@h")[0];
        l.small_messages == SmallMessages::Own && l.queued_frames == 0
    });
    db.pause.store(false, Ordering::SeqCst);
    // Every message, in order per key.
    for (_, m) in recv_msgs(&brx, sent as usize) {
        let key = m[0] as usize;
        let seq = u32::from_be_bytes(m[1..5].try_into().unwrap());
        assert_eq!(seq, next[key], "key {key}");
        next[key] += 1;
    }
    assert_eq!(next, seqs.get());
    // B met the wait before the fence, and waited.
    let waits: u64 = vnode_lanes(&b, "a@h").iter().map(|l| l.recv_waits).sum();
    assert_eq!(waits, 1, "waits that stopped B's reads");
    a.stop();
    b.stop();
}

/// The sender gives up on a frozen receiver and connects again while the
/// receiver still holds unread messages of the earlier connections, on
/// every lane of a channel and its shared lane. The receiver reads what
/// the sender sent before it gave up (on any lane) before what it sent
/// since: per key, messages arrive in the order sent (some are lost with
/// the give-up, counted by the sender).
#[test]
fn what_came_before_the_sender_gave_up_is_read_first() {
    let (a, _arx, _da) = node_in("a@h", "c", 1 << 20, IoMode::Threads);
    let (b, brx, db) = node_with("b@h", "c", 1 << 20, IoMode::Schedulers, patient);
    join_and_connect(&a, &b);
    let mut seq = [0u32; 8];
    let mut send = |a: &Transport, n: usize| {
        for i in 0..n {
            let key = i % 8;
            let len = if seq[key] % 50 == 49 { 70_000 } else { 200 };
            let mut m = vec![0u8; len];
            m[0] = key as u8;
            m[1..5].copy_from_slice(&seq[key].to_be_bytes());
            let choice = weft_transport::Choice::Index(key as u64);
            if a.send(Some(key as u64), "b@h", "vnode", choice, m).is_ok() {
                seq[key] += 1;
            }
        }
    };
    // The lanes on the shared lane first.
    wait_for("vnode's lanes on its shared lane", || {
        send(&a, 8);
        on_the_shared_lane(&a)
    });
    // B reads nothing; A sends until it has given up on B and is up with
    // it again (B's tokio side answers), then some more.
    db.pause.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut was_down = false;
    while !(was_down && a.up_peers() == ["b@h"] && all_lanes_connected(&a, "b@h")) {
        assert!(
            Instant::now() < deadline,
            "A never gave up on B and came back"
        );
        send(&a, 200);
        was_down |= a.up_peers().is_empty();
        std::thread::sleep(Duration::from_millis(2));
    }
    for _ in 0..20 {
        send(&a, 200);
        std::thread::sleep(Duration::from_millis(2));
    }
    db.pause.store(false, Ordering::SeqCst);
    // Everything that arrives, until nothing has for a while: per key, in
    // the order sent.
    let mut next = [0u32; 8];
    let mut got = 0;
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_millis(2500) {
        if let Ok(Ev::Msg(_, m)) = brx.recv_timeout(Duration::from_millis(100)) {
            let key = m[0] as usize;
            let s = u32::from_be_bytes(m[1..5].try_into().unwrap());
            assert!(s >= next[key], "key {key}: {s} after {}", next[key] - 1);
            next[key] = s + 1;
            got += 1;
            last = Instant::now();
        }
    }
    assert!(got > 0);
    assert!(
        dropped(&a, "node_down") > 0,
        "A gave up with messages queued"
    );
}

/// A peer's newest control connection, which waits to be read until the
/// older one it replaced has ended (at most `DRAIN`, 2 s, when the peer
/// keeps the older one open), still shows that the peer is alive: bytes
/// arriving on it count as heard, so a heartbeat timeout shorter than
/// that wait (1 s here) does not declare the peer down. The peer here is
/// a raw client that authenticates as `x@h`, keeps its first control
/// connection open and silent, and sends heartbeats on a second one.
#[test]
fn a_control_connection_waiting_behind_an_older_one_keeps_its_peer_up() {
    use std::io::Write;
    use weft_core::wire::encode_control;
    use weft_core::{Control, FrameKind};
    let (b, brx) = node("b@h", "c", 1 << 20);
    let dial = |nonce: u8| raw_control(&b, "x@h", nonce);
    let heartbeat = frame(FrameKind::Control, &encode_control(&Control::Heartbeat));
    let mut first = dial(1);
    first.write_all(&heartbeat).unwrap();
    let mut seen = Vec::new();
    wait_for("x@h up", || {
        seen.extend(brx.try_iter());
        seen.contains(&Ev::Up("x@h".into()))
    });
    let mut second = dial(2);
    // Past the heartbeat timeout, and past DRAIN, after which the first
    // connection has ended at b and the second is read.
    let until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < until {
        second.write_all(&heartbeat).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        seen.extend(brx.try_iter());
        assert!(
            !seen.contains(&Ev::Down("x@h".into())),
            "x@h declared down while it sent heartbeats: {seen:?}"
        );
    }
    drop(first);
}

/// The events `rx` gets until one matches `until` (10 s at most), in order.
fn events_until(rx: &Receiver<Ev>, until: impl Fn(&Ev) -> bool) -> Vec<Ev> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) => {
                let done = until(&ev);
                got.push(ev);
                if done {
                    return got;
                }
            }
            Err(_) => panic!("timed out; got {got:?}"),
        }
    }
}

/// The reviewer's race over real connections: a removes b while b reads
/// nothing (its pollers paused), and b then joins a, which it still takes
/// for up. The join is not confirmed: b first reads the removal, leaves
/// (`this_node_left`) and, joined again as a new incarnation (as
/// `weft_server` does for a waiting `sync_join`), is confirmed (`joined`)
/// once a has taken it back; both then see each other up.
#[test]
fn a_join_racing_a_removal_is_confirmed_only_after_it() {
    let (a, arx, _da) = node_with("a@h", "c", 1 << 20, IoMode::Schedulers, patient);
    let (b, brx, db) = node_with("b@h", "c", 1 << 20, IoMode::Schedulers, patient);
    join_and_connect(&a, &b);
    let old = b.local_spec().incarnation;
    db.pause.store(true, Ordering::SeqCst);
    a.remove("b@h");
    wait_for("a to drop b", || a.up_peers().is_empty());
    assert_eq!(b.up_peers(), ["a@h"], "b has read nothing");
    b.join(contact(&a));
    db.pause.store(false, Ordering::SeqCst);
    let before = events_until(&brx, |e| *e == Ev::ThisNodeLeft);
    assert!(
        !before.iter().any(|e| matches!(e, Ev::Joined(_))),
        "{before:?}"
    );
    assert_ne!(b.local_spec().incarnation, old);
    b.join(contact(&a));
    events_until(&brx, |e| *e == Ev::Joined("a@h".into()));
    assert_eq!(b.up_peers(), ["a@h"]);
    wait_for("a to take b back", || a.up_peers() == ["b@h"]);
    // and a plain join through a member that is up is confirmed too
    a.join(contact(&b));
    events_until(&arx, |e| *e == Ev::Joined("b@h".into()));
}

/// A peer that sends join checks and reads none of the answers cannot make
/// this node queue answers without bound: membership messages wait only
/// while the control lane has at most `ANSWERS_QUEUED_MAX` bytes queued,
/// counted as the send-queue bounds count (a million checks queued 102 MB
/// of answers before). The peer offers a 4 KiB window.
#[test]
fn join_checks_from_a_peer_that_reads_nothing_queue_a_bounded_amount() {
    use std::io::Write;
    use weft_core::wire::encode_control;
    use weft_core::{Control, FrameKind};
    use weft_transport::counters::PER_MESSAGE;
    use weft_transport::routes::ANSWERS_QUEUED_MAX;
    let (b, brx) = node("b@h", "c", 1 << 20);
    let mut x = raw_control_with(&b, "x@h", 1, Some(4096));
    let heartbeat = frame(FrameKind::Control, &encode_control(&Control::Heartbeat));
    x.write_all(&heartbeat).unwrap();
    wait_for("x@h up", || {
        brx.try_iter().any(|e| e == Ev::Up("x@h".into()))
    });
    // 600,000 answers: about 10 MB on the wire, past what the kernel's
    // buffers take, and many times the bound in queued frames.
    const CHECKS: u64 = 600_000;
    // (full mesh's tag 1, then a join check: 3 and a token)
    let check = frame(
        FrameKind::Control,
        &encode_control(&Control::Membership(
            [1, 3, 0, 0, 0, 0, 0, 0, 0, 42].to_vec(),
        )),
    );
    let batch: Vec<u8> = check.repeat(10_000);
    for _ in 0..CHECKS / 10_000 {
        x.write_all(&batch).unwrap();
    }
    x.write_all(&heartbeat).unwrap();
    // (None while the driver is too busy answering to give a snapshot)
    let control = |t: &Transport| {
        let info = t.info()?;
        let Some(p) = info.peers.into_iter().find(|p| p.name == "x@h") else {
            panic!("x@h is gone: {:?}", brx.try_iter().collect::<Vec<_>>());
        };
        p.lanes.into_iter().find(|l| l.key.is_control())
    };
    // (a debug build on a busy machine takes a while over them)
    let deadline = Instant::now() + Duration::from_secs(120);
    while control(&b).is_none_or(|l| l.recv_frames <= CHECKS) {
        assert!(Instant::now() < deadline, "b did not read every check");
        std::thread::sleep(Duration::from_millis(20));
    }
    // (a snapshot asked for after the last check was read comes after the
    // driver has answered the checks before it)
    let mut last = None;
    wait_for("a snapshot", || {
        last = control(&b);
        last.is_some()
    });
    let l = last.unwrap();
    // (the bound is looked at before each push while the writer takes
    // frames out and writes them: 5 KiB over it were seen)
    let counted = l.queued_bytes + l.queued_frames * PER_MESSAGE;
    assert!(
        counted <= ANSWERS_QUEUED_MAX + 64 * 1024,
        "{} frames, {} bytes queued for a peer that reads nothing",
        l.queued_frames,
        l.queued_bytes
    );
    drop(x);
}

/// A raw peer `x@h` ([`raw_control_with`]) that sent `b` a heartbeat and
/// that `b` has up; with the frame of a heartbeat, to send more.
fn raw_peer_up(
    b: &Transport,
    brx: &Receiver<Ev>,
    rcvbuf: Option<usize>,
) -> (std::net::TcpStream, Vec<u8>) {
    use std::io::Write;
    use weft_core::wire::encode_control;
    use weft_core::{Control, FrameKind};
    let mut x = raw_control_with(b, "x@h", 1, rcvbuf);
    let heartbeat = frame(FrameKind::Control, &encode_control(&Control::Heartbeat));
    x.write_all(&heartbeat).unwrap();
    wait_for("x@h up", || {
        brx.try_iter().any(|e| e == Ev::Up("x@h".into()))
    });
    (x, heartbeat)
}

/// A full mesh view (tag 1) of no members and 4,096 tombstones of 250-byte
/// names (over a megabyte): a push (0), or one that asks for the
/// receiver's view in return (1, `reply`).
fn tombstones_view(reply: bool) -> Vec<u8> {
    let mut view = vec![1u8, u8::from(reply), 0, 0, 0, 0];
    view.extend_from_slice(&4096u32.to_be_bytes());
    for i in 0..4096u64 {
        let name = format!("t{i:05}@{}", "h".repeat(243));
        view.push(name.len() as u8);
        view.extend_from_slice(name.as_bytes());
        view.extend_from_slice(&(i + 1).to_be_bytes());
        view.extend_from_slice(&600_000u32.to_be_bytes());
    }
    view
}

/// The bound on membership messages does not stop a join check's answer
/// behind a view of over a megabyte: b's view holds 4,096 tombstones of
/// 250-byte names (pushed by a raw peer), and a joins b. The answer, small,
/// goes past the bound while few frames are queued (it was dropped after
/// the view, and a's join never confirmed).
#[test]
fn a_join_is_confirmed_behind_a_view_over_the_bound() {
    use std::io::Write;
    use weft_core::wire::encode_control;
    use weft_core::{Control, FrameKind};
    let (b, brx) = node("b@h", "c", 1 << 24);
    let mut x = raw_control(&b, "x@h", 1);
    let heartbeat = frame(FrameKind::Control, &encode_control(&Control::Heartbeat));
    x.write_all(&heartbeat).unwrap();
    wait_for("x@h up", || {
        brx.try_iter().any(|e| e == Ev::Up("x@h".into()))
    });
    let view = tombstones_view(false);
    assert!(view.len() > 1 << 20);
    x.write_all(&frame(
        FrameKind::Control,
        &encode_control(&Control::Membership(view)),
    ))
    .unwrap();
    x.write_all(&heartbeat).unwrap();
    wait_for("b to take the tombstones", || {
        b.info().is_some_and(|i| i.tombstones == 4096)
    });
    let (a, arx) = node("a@h", "c", 1 << 24);
    a.join(contact(&b));
    events_until(&arx, |e| *e == Ev::Joined("b@h".into()));
    drop(x);
}

/// A membership message that does not decode, from a peer that proved the
/// cookie, closes its control connection and is counted as `malformed`, as
/// a malformed data frame is (it was only logged before).
#[test]
fn a_malformed_membership_message_is_counted_and_closes_its_connection() {
    use std::io::{Read, Write};
    use weft_core::wire::encode_control;
    use weft_core::{Control, FrameKind};
    let (b, brx) = node("b@h", "c", 1 << 20);
    let (mut x, _) = raw_peer_up(&b, &brx, None);
    assert_eq!(dropped(&b, "malformed"), 0);
    // full mesh (1), then a message kind it does not have (99)
    x.write_all(&frame(
        FrameKind::Control,
        &encode_control(&Control::Membership(vec![1, 99])),
    ))
    .unwrap();
    wait_for("counted", || dropped(&b, "malformed") == 1);
    // b closed the connection: x reads to its end
    x.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rest = Vec::new();
    let _ = x.read_to_end(&mut rest);
    assert!(logs_until(&brx, "bad membership message"));
}

/// A raw peer x, up at `a`, that offers a 4 KiB window on lane default/0
/// and reads nothing; `a` queues 8 MiB for it there, then x leaves (its own
/// tombstone: full mesh 1, a push 0, no members, one tombstone, x@h,
/// incarnation 7, 600 s), so `a` stops x's lanes, which write out what
/// they hold (they cannot) without closing their connections first.
/// Returns x's control and data sockets and how many messages `a` took.
fn a_stopped_lane_holding_frames(
    a: &Transport,
    arx: &Receiver<Ev>,
) -> (std::net::TcpStream, std::net::TcpStream, usize) {
    use std::io::Write;
    use weft_core::wire::encode_control;
    use weft_core::{Control, FrameKind};
    let (mut x, _) = raw_peer_up(a, arx, None);
    let lane = LaneKey {
        channel: "default".into(),
        index: 0,
    };
    let data = raw_lane(a, "x@h", 2, Some(4096), lane);
    wait_for("x's lane default/0", || {
        a.info().is_some_and(|i| {
            i.peers.iter().any(|p| {
                p.name == "x@h"
                    && p.lanes.iter().any(|l| {
                        l.key.channel == "default"
                            && l.key.index == 0
                            && l.state == LaneState::Connected
                    })
            })
        })
    });
    let mut accepted = 0;
    for _ in 0..128 {
        if a.send(None, "x@h", "default", 0, vec![7u8; 64 * 1024])
            .is_ok()
        {
            accepted += 1;
        }
    }
    assert!(accepted > 64, "{accepted} accepted");
    let mut leave = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3];
    leave.extend_from_slice(b"x@h");
    leave.extend_from_slice(&7u64.to_be_bytes());
    leave.extend_from_slice(&600_000u32.to_be_bytes());
    x.write_all(&frame(
        FrameKind::Control,
        &encode_control(&Control::Membership(leave)),
    ))
    .unwrap();
    wait_for("x to leave", || a.up_peers().is_empty());
    (x, data, accepted)
}

/// A stopped lane whose connection ends (a reset) while it still holds
/// frames drops and counts them (`node_down`). Before, nothing flushed the
/// lane again: its frames stayed queued for ever, neither sent nor
/// counted.
#[test]
fn a_stopped_lane_that_loses_its_connection_counts_what_it_held() {
    let (a, arx) = node("a@h", "c", 1 << 20);
    let (x, data, accepted) = a_stopped_lane_holding_frames(&a, &arx);
    // A reset (linger 0): the end of the connection is an error at a.
    socket2::Socket::from(data)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(x);
    wait_for("what the lane held to be counted", || {
        a.info().is_some_and(|i| i.queued_bytes == 0)
    });
    let lost = dropped(&a, "node_down") + dropped(&a, "connection_lost");
    assert!(lost > 0, "nothing counted of {accepted}");
}

/// A stopped lane whose peer closes its end (as a weft peer does once it
/// has nothing more to write on a lane it stopped) while it still reads
/// writes out what it holds before it closes: every message reaches the
/// peer, none is dropped. (Closing on the peer's end of stream dropped
/// all but what the socket buffers held, counted as `node_down`.)
#[test]
fn a_stopped_lane_writes_out_to_a_peer_that_closed_its_end() {
    let (a, arx) = node("a@h", "c", 1 << 20);
    let (_x, mut data, accepted) = a_stopped_lane_holding_frames(&a, &arx);
    data.shutdown(std::net::Shutdown::Write).unwrap();
    data.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut frames = 0;
    while read_frame(&mut data).is_some() {
        frames += 1;
    }
    assert_eq!(frames, accepted, "frames read before a closed");
    assert_eq!(dropped(&a, "node_down"), 0);
    assert!(a.info().is_some_and(|i| i.queued_bytes == 0));
}

/// A stopped lane that writes nothing for `WRITE_OUT_STALL` (its peer
/// reads nothing, and keeps the connection open) gives up: it closes the
/// connection and drops and counts what it held (`node_down`). Before, a
/// peer removed while frozen held 128 MiB queued at the remover for ever.
#[test]
fn a_stopped_lane_that_writes_nothing_gives_up() {
    use weft_transport::lane_writer::WRITE_OUT_STALL;
    let (a, arx) = node("a@h", "c", 1 << 20);
    let (_x, _data, accepted) = a_stopped_lane_holding_frames(&a, &arx);
    let deadline = Instant::now() + 4 * WRITE_OUT_STALL;
    while a.info().is_none_or(|i| i.queued_bytes > 0) {
        assert!(
            Instant::now() < deadline,
            "the stopped lane holds its frames"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        dropped(&a, "node_down") > 0,
        "nothing counted of {accepted}"
    );
}

/// A peer that knows the cookie and floods its control connection cannot
/// grow what waits for the driver: the poller hands over at most
/// `EVENTS_MAX` events and `BYTES_MAX` bytes of a connection at a time and
/// reads it again once the driver has taken them (1.9 million events
/// were in flight at once after 3 million heartbeats before), and a
/// heartbeat while one is on its way is not handed over. Nothing else is
/// lost: every frame is read, every join confirmation taken, and the peer
/// stays up.
#[test]
fn a_control_flood_queues_a_bounded_amount_for_the_driver() {
    use std::io::Write;
    use weft_core::wire::encode_control;
    use weft_core::{Control, FrameKind};
    use weft_transport::backlog::{BYTES_MAX, EVENTS_MAX};
    let (b, brx) = node("b@h", "c", 1 << 20);
    let (mut x, heartbeat) = raw_peer_up(&b, &brx, None);
    // (full mesh's tag 1, then a confirmation, 4, of a join check b never
    // made: the core takes it and does nothing)
    let confirmed = frame(
        FrameKind::Control,
        &encode_control(&Control::Membership(
            [1, 4, 0, 0, 0, 0, 0, 0, 0, 42].to_vec(),
        )),
    );
    let read = |t: &Transport| {
        let info = t.info().unwrap();
        let Some(p) = info.peers.into_iter().find(|p| p.name == "x@h") else {
            panic!("x@h is gone: {:?}", brx.try_iter().collect::<Vec<_>>());
        };
        let l = p.lanes.into_iter().find(|l| l.key.is_control()).unwrap();
        l.recv_frames
    };
    // (a debug build on a busy machine takes a while over them)
    let read_all = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while read(&b) < n {
            assert!(Instant::now() < deadline, "b did not read every frame");
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_for("the driver to take every event", || {
            b.driver_queued().events == 0
        });
    };
    // a million heartbeats: one at a time on its way
    const HEARTBEATS: u64 = 1_000_000;
    let beats = heartbeat.repeat(100_000);
    for _ in 0..HEARTBEATS / 100_000 {
        x.write_all(&beats).unwrap();
    }
    read_all(1 + HEARTBEATS);
    let q = b.driver_queued();
    assert_eq!(q.most_events, 1, "heartbeats in flight at once");
    // 200,000 membership messages, all for the driver: EVENTS_MAX at most
    const CONFIRMATIONS: u64 = 200_000;
    let confirmations = confirmed.repeat(10_000);
    for _ in 0..CONFIRMATIONS / 10_000 {
        x.write_all(&confirmations).unwrap();
    }
    x.write_all(&heartbeat).unwrap();
    read_all(2 + HEARTBEATS + CONFIRMATIONS);
    let q = b.driver_queued();
    assert!(
        q.most_events <= EVENTS_MAX && q.most_bytes <= BYTES_MAX,
        "{} events, {} bytes were in flight to the driver at once",
        q.most_events,
        q.most_bytes
    );
    assert!(
        !brx.try_iter().any(|e| e == Ev::Down("x@h".into())),
        "x@h went down"
    );
    assert_eq!(b.up_peers(), ["x@h"]);
    drop(x);
}

/// A peer that sends and never reads makes this node queue no heartbeats
/// behind what it cannot write: a heartbeat is queued only onto an empty
/// control lane (one every `heartbeat_interval` was queued for ever
/// before: 134 bytes a second as the bounds count, at the default 1 s).
/// x (a raw peer offering a 4 KiB window) sends b views of over a
/// megabyte asking for b's in return, and reads none: b's control lane to
/// x fills. b heartbeats every 10 ms; while a, which reads, gets 100 more
/// control frames from b, b's queue to x gains none.
#[test]
fn heartbeats_to_a_peer_that_reads_nothing_queue_a_bounded_amount() {
    use std::io::Write;
    use weft_core::wire::encode_control;
    use weft_core::{Control, FrameKind};
    use weft_transport::routes::ANSWERS_QUEUED_MAX;
    let quick_and_patient = |c: &mut TransportConfig| {
        patient(c);
        c.timing.heartbeat_interval = 10;
    };
    let (b, brx, _db) = node_with("b@h", "c", 1 << 24, IoMode::Threads, quick_and_patient);
    let (a, _arx, _da) = node_with("a@h", "c", 1 << 24, IoMode::Threads, patient);
    join_and_connect(&a, &b);
    let (mut x, _) = raw_peer_up(&b, &brx, Some(4096));
    let view = frame(
        FrameKind::Control,
        &encode_control(&Control::Membership(tombstones_view(true))),
    );
    // (b's answers, over a megabyte each, past what the kernel's buffers
    // take: the rest waits on the lane)
    for _ in 0..8 {
        x.write_all(&view).unwrap();
    }
    let to = |t: &Transport, peer: &str| {
        let info = t.info().unwrap();
        let p = info.peers.into_iter().find(|p| p.name == peer).unwrap();
        p.lanes.into_iter().find(|l| l.key.is_control()).unwrap()
    };
    wait_for("b's control lane to x to fill", || {
        to(&b, "x@h").queued_bytes >= ANSWERS_QUEUED_MAX
    });
    let before = to(&b, "x@h").queued_frames;
    let heard = to(&a, "b@h").recv_frames;
    wait_for("100 heartbeats from b at a", || {
        to(&a, "b@h").recv_frames >= heard + 100
    });
    let after = to(&b, "x@h").queued_frames;
    assert!(
        after <= before + 1,
        "{} frames queued for x, {before} before 100 heartbeats",
        after
    );
    assert!(b.up_peers().contains(&"x@h".to_string()));
    drop(x);
}

/// A full-mesh view (tag 1, a push) of `n` members as a peer with the
/// cookie may send them at the bounds: 240-byte names, one address and 8
/// channels each (335 bytes: 21 MB for `MAX_VIEW_MEMBERS`), all of
/// incarnation `incarnation`.
fn members_view(n: usize, incarnation: u64) -> Vec<u8> {
    use weft_core::membership::full_mesh::{encode, Message, View};
    let members = (0..n)
        .map(|i| NodeSpec {
            name: format!("m{i:05}@{}", "h".repeat(233)),
            incarnation,
            addrs: vec!["127.0.0.1:1".parse().unwrap()],
            channels: (0..8)
                .map(|c| ChannelSpec {
                    name: format!("chan{c}"),
                    parallelism: 4,
                })
                .collect(),
            max_frame: 1 << 20,
        })
        .collect();
    let view = View {
        members,
        tombstones: vec![],
    };
    [&[1u8][..], &encode(&Message::View { view, reply: false })].concat()
}

/// A peer with the cookie that sends views at the bounds back to back
/// (65,536 members, 21 MB each) does not make the heartbeats between a and
/// b, two real peers, come late: neither declares the other down
/// (`heartbeat_interval` 100 ms, `heartbeat_timeout` 1 s). Before, each
/// view took b 855 ms here (debug build; 155 ms in a release build: each
/// member decoded, checked and dropped), and b saw a go down. With views
/// read in place (about 200 ms here, 30 ms in a release build), b still
/// went down at a: b's driver took a view, then a's heartbeats, then the
/// next view, and sent no heartbeat meanwhile (see `Driver::run`).
#[test]
fn views_at_the_bounds_back_to_back_keep_real_peers_up() {
    use std::io::Write;
    use weft_core::membership::full_mesh::MAX_VIEW_MEMBERS;
    use weft_core::wire::encode_control;
    use weft_core::{Control, FrameKind};
    let (b, brx, _db) = node_with("b@h", "c", 1 << 25, IoMode::Threads, |_| {});
    let (a, arx, _da) = node_with("a@h", "c", 1 << 25, IoMode::Threads, |_| {});
    join_and_connect(&a, &b);
    let (mut x, _) = raw_peer_up(&b, &brx, None);
    let view = frame(
        FrameKind::Control,
        &encode_control(&Control::Membership(members_view(MAX_VIEW_MEMBERS, 9))),
    );
    const VIEWS: u64 = 10;
    // (0 once x is gone from b's lanes)
    let taken = |t: &Transport| {
        let info = t.info().unwrap();
        info.peers
            .into_iter()
            .find(|p| p.name == "x@h")
            .and_then(|p| p.lanes.into_iter().find(|l| l.key.is_control()))
            .map_or(0, |l| l.recv_frames)
    };
    let x_up = |t: &Transport| t.up_peers().contains(&"x@h".to_string());
    let before = taken(&b);
    let start = Instant::now();
    // (x heartbeats before each view, as a peer does; on a busy machine
    // the views may still come more than `heartbeat_timeout` apart, and b
    // then rightly declares x down and closes its connection: the flood
    // ends there, and a and b must still be up)
    let heartbeat = frame(FrameKind::Control, &encode_control(&Control::Heartbeat));
    let mut sent = 0;
    for _ in 0..VIEWS {
        match x.write_all(&heartbeat).and_then(|_| x.write_all(&view)) {
            Ok(()) => sent += 1,
            Err(e) => {
                eprintln!("x closed after {sent} views: {e}");
                break;
            }
        }
    }
    let x_down = |e: &Ev| matches!(e, Ev::Down(p) if p == "x@h");
    let deadline = Instant::now() + Duration::from_secs(120);
    while (sent == VIEWS && x_up(&b) && taken(&b) < before + VIEWS) || b.driver_queued().events > 0
    {
        assert!(Instant::now() < deadline, "b did not take every view");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    eprintln!(
        "{VIEWS} views of {} bytes taken in {:?} ({:?} each)",
        view.len(),
        took,
        took / VIEWS as u32
    );
    let downs = |rx: &Receiver<Ev>| {
        rx.try_iter()
            .filter(|e| matches!(e, Ev::Down(_)))
            .collect::<Vec<_>>()
    };
    let at_b = downs(&brx);
    if sent < VIEWS || !x_up(&b) {
        assert!(
            at_b.iter().any(x_down),
            "x's connection closed, and x not down at b: {at_b:?}"
        );
    }
    let at_b: Vec<_> = at_b.into_iter().filter(|e| !x_down(e)).collect();
    assert_eq!(at_b, [], "at b");
    assert_eq!(downs(&arx), [], "at a");
    assert!(
        b.up_peers().contains(&"a@h".to_string()),
        "{:?}",
        b.up_peers()
    );
    assert!(
        a.up_peers().contains(&"b@h".to_string()),
        "{:?}",
        a.up_peers()
    );
    drop(x);
}

/// A heartbeat that came in time is not taken for silence because the
/// driver was busy when it came: b's driver is held for 1.5 s (its sink
/// sleeps as it logs a peer up), past a's `heartbeat_timeout` at b (1 s),
/// while a's heartbeats wait for it. Once free, b's deadline for a has
/// passed, and b sees it before it takes what waits; told when the oldest
/// message waiting came, it does not declare a down. (a waits longer for
/// b, which was silent for real.)
#[test]
fn a_heartbeat_waiting_for_a_busy_driver_is_not_late() {
    let (b, brx, _db) = node_with("b@h", "c", 1 << 20, IoMode::Threads, |_| {});
    let (a, arx, _da) = node_with("a@h", "c", 1 << 20, IoMode::Threads, |c| {
        c.timing.heartbeat_timeout = 5000;
    });
    join_and_connect(&a, &b);
    let stalled = Instant::now();
    let _staller = raw_control(&b, STALLER, 1);
    assert!(stalled.elapsed() >= STALL, "the driver was not held");
    // (a second timeout's worth after the stall)
    std::thread::sleep(Duration::from_millis(1000));
    // (the staller sends no heartbeats: it goes down, as it should)
    let downs = |rx: &Receiver<Ev>| {
        rx.try_iter()
            .filter(|e| matches!(e, Ev::Down(p) if p != STALLER))
            .collect::<Vec<_>>()
    };
    assert_eq!(downs(&brx), [], "at b");
    assert_eq!(downs(&arx), [], "at a");
    assert!(b.up_peers().contains(&"a@h".to_string()));
}
