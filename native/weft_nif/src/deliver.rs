//! Delivery into the BEAM: received frames go straight to their destination
//! process with `enif_send`; events and log lines go to `weft_server`.
//!
//! Large frames are read into a refc binary and decoded by [`etf`], so the
//! large binaries in them reach the destination without another copy.
//!
//! Sends happen on two kinds of threads: the transport's own (no caller
//! environment) and the BEAM's schedulers, inside a NIF call (a poller round,
//! a send that wakes a poller). `enif_send` and `enif_whereis_pid` want the
//! calling process's environment on a scheduler thread; [`with_caller`]
//! makes it known for the duration of such a call.

use crate::etf;
use once_cell::sync::Lazy;
use parking_lot::RwLock;
use rustler::sys::{enif_send, ErlNifEnv};
use rustler::types::LocalPid;
use rustler::{Atom, Encoder, Env, OwnedBinary, OwnedEnv, Term};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ptr;
use weft_core::{DownReason, LaneKey, Level, Refusal};
use weft_transport::{Delivery, FrameBuffer, Sink};

mod atoms {
    rustler::atoms! {
        weft_nif, nodeup, nodedown, log, weft_poll, wake, refused,
        connection_closed, heartbeat_timeout, left, removed, restarted, this_node_left,
        forgotten, bad_cookie, unexpected_node, unknown_lane, duplicate, unavailable,
        detached, bad_spec, version,
        debug, info, notice, warning, error,
        peer, channel, lane,
    }
}

/// Where panics are reported; set by the most recent start.
static PANIC_PID: Lazy<RwLock<Option<LocalPid>>> = Lazy::new(|| RwLock::new(None));

thread_local! {
    // One message environment per thread, cleared after each send.
    static MSG_ENV: RefCell<OwnedEnv> = RefCell::new(OwnedEnv::new());
    // The environment of the NIF call running on this thread, if any.
    static CALLER: Cell<*mut ErlNifEnv> = const { Cell::new(ptr::null_mut()) };
}

/// Run `f` with `env` (the calling process's) as the environment that sends
/// on this thread use.
pub fn with_caller<R>(env: Env, f: impl FnOnce() -> R) -> R {
    struct Restore(*mut ErlNifEnv);
    impl Drop for Restore {
        fn drop(&mut self) {
            CALLER.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CALLER.with(|c| c.replace(env.as_c_arg())));
    f()
}

/// The caller environment for `enif_send` on this thread (NULL on threads
/// the VM does not manage).
fn caller() -> *mut ErlNifEnv {
    CALLER.with(|c| c.get())
}

/// Build a message in a fresh environment and send it to `to`.
fn send_built(to: &LocalPid, build: impl for<'a> FnOnce(Env<'a>) -> Term<'a>) -> bool {
    let env = OwnedEnv::new();
    env.run(|e| {
        let msg = build(e);
        // SAFETY: `e` is the process-independent environment of `env`, alive
        // for the call; `caller()` is valid on this thread (see with_caller).
        unsafe { enif_send(caller(), to.as_c_arg(), e.as_c_arg(), msg.as_c_arg()) != 0 }
    })
}

/// Sends into the BEAM on behalf of the transport.
pub struct NifSink {
    events: LocalPid,
    /// The process that drives each poller, once it has gone idle.
    pollers: RwLock<Vec<Option<LocalPid>>>,
}

impl NifSink {
    pub fn new(events: LocalPid) -> Self {
        *PANIC_PID.write() = Some(events);
        NifSink {
            events,
            pollers: RwLock::new(Vec::new()),
        }
    }

    /// `pid` drives poller `index`: it is where [`Sink::wake_poller`]
    /// sends `{weft_poll, wake}` (the protocol: `weft_transport::wake`).
    pub fn register_poller(&self, index: usize, pid: LocalPid) {
        if self.pollers.read().get(index).copied().flatten() == Some(pid) {
            return;
        }
        let mut p = self.pollers.write();
        if p.len() <= index {
            p.resize(index + 1, None);
        }
        p[index] = Some(pid);
    }
}

/// The local pid a received destination names: a registered name, or a pid
/// of this node's current incarnation (a pid of an earlier incarnation
/// decodes as a remote pid and matches nothing).
fn resolve(dest: Term) -> Option<LocalPid> {
    if dest.is_atom() {
        let mut pid = std::mem::MaybeUninit::uninit();
        let found =
            unsafe { rustler::sys::enif_whereis_pid(caller(), dest.as_c_arg(), pid.as_mut_ptr()) };
        if found == 0 {
            return None;
        }
        // Initialised by the successful call above.
        return Some(LocalPid::from_c_arg(unsafe { pid.assume_init() }));
    }
    dest.decode::<LocalPid>().ok()
}

/// Send `{Dest, Msg}` (already decoded in `env`) to `Dest`. `Dest` is a
/// name or a pid, anything else is not a message of weft's.
fn send_decoded(env: Env, term: Term) -> Delivery {
    let Ok((dest, msg)) = term.decode::<(Term, Term)>() else {
        return Delivery::Malformed;
    };
    if !dest.is_atom() && !dest.is_pid() {
        return Delivery::Malformed;
    }
    let Some(pid) = resolve(dest) else {
        return Delivery::NoDestination;
    };
    // enif_send fails only when the process is gone.
    if unsafe { enif_send(caller(), pid.as_c_arg(), env.as_c_arg(), msg.as_c_arg()) } != 0 {
        Delivery::Delivered
    } else {
        Delivery::NoDestination
    }
}

/// Run `f` in this thread's message environment, then clear it.
fn with_msg_env<R>(f: impl for<'a> FnOnce(Env<'a>) -> R) -> R {
    MSG_ENV.with(|cell| {
        let mut owned = cell.borrow_mut();
        let r = owned.run(f);
        owned.clear();
        r
    })
}

/// A large frame's body, read straight into a refc binary.
struct BinaryBuffer(OwnedBinary);

impl FrameBuffer for BinaryBuffer {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }
    fn bytes(&self) -> &[u8] {
        self.0.as_slice()
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl Sink for NifSink {
    fn deliver(&self, _peer: &str, body: &[u8]) -> Delivery {
        with_msg_env(|env| {
            // Peers passed the cookie check: trust their terms as the
            // distribution does (atoms may be new here).
            // One term and nothing after it, as `binary_to_term/1` wants.
            match unsafe { env.binary_to_term_trusted(body) } {
                Some((term, used)) if used == body.len() => send_decoded(env, term),
                _ => Delivery::Malformed,
            }
        })
    }

    fn frame_buffer(&self, len: usize) -> Box<dyn FrameBuffer> {
        Box::new(BinaryBuffer(OwnedBinary::new(len)))
    }

    fn deliver_buffer(&self, peer: &str, body: Box<dyn FrameBuffer>) -> Delivery {
        let body = match body.into_any().downcast::<BinaryBuffer>() {
            Ok(b) => b.0,
            Err(other) => {
                let bytes = other.downcast::<Vec<u8>>().map(|v| *v).unwrap_or_default();
                return self.deliver(peer, &bytes);
            }
        };
        with_msg_env(|env| {
            let frame = body.release(env);
            let share_min = etf::share_threshold(frame.len());
            let term = etf::decode(env, frame, share_min).or_else(|| {
                unsafe { env.binary_to_term_trusted(frame.as_slice()) }
                    .filter(|(_, used)| *used == frame.len())
                    .map(|t| t.0)
            });
            term.map_or(Delivery::Malformed, |t| send_decoded(env, t))
        })
    }

    fn peer_up(&self, peer: &str) {
        let peer = peer.to_string();
        self.event(move |env| {
            (atoms::weft_nif(), atoms::nodeup(), node_atom(env, &peer)).encode(env)
        });
    }

    fn peer_down(&self, peer: &str, reason: &DownReason) {
        let peer = peer.to_string();
        let reason = match reason {
            DownReason::ConnectionClosed(_) => atoms::connection_closed(),
            DownReason::HeartbeatTimeout => atoms::heartbeat_timeout(),
            DownReason::Left => atoms::left(),
            DownReason::Removed => atoms::removed(),
            DownReason::Restarted => atoms::restarted(),
            DownReason::ThisNodeLeft => atoms::this_node_left(),
            DownReason::Forgotten => atoms::forgotten(),
        };
        self.event(move |env| {
            (
                atoms::weft_nif(),
                atoms::nodedown(),
                node_atom(env, &peer),
                reason,
            )
                .encode(env)
        });
    }

    fn refused(&self, peer: &str, refusal: &Refusal) {
        let (peer, refusal) = (peer.to_string(), refusal.clone());
        self.event(move |env| {
            let reason = match &refusal {
                Refusal::Refused | Refusal::BadCookie => atoms::bad_cookie().encode(env),
                Refusal::UnexpectedNode { actual, .. } => {
                    (atoms::unexpected_node(), node_atom(env, actual)).encode(env)
                }
                Refusal::UnknownLane => atoms::unknown_lane().encode(env),
                Refusal::Left => atoms::left().encode(env),
                Refusal::Duplicate => atoms::duplicate().encode(env),
                Refusal::Unavailable => atoms::unavailable().encode(env),
                Refusal::Detached => atoms::detached().encode(env),
                Refusal::BadSpec(why) => (atoms::bad_spec(), why.as_str()).encode(env),
                Refusal::Version(vs) => (atoms::version(), vs.clone()).encode(env),
            };
            (
                atoms::weft_nif(),
                atoms::refused(),
                node_atom(env, &peer),
                reason,
            )
                .encode(env)
        });
    }

    fn log(&self, level: Level, text: &str, peer: Option<&str>, lane: Option<&LaneKey>) {
        send_log(&self.events, level, text, peer, lane);
    }

    fn wake_poller(&self, index: usize) {
        let pid = self.pollers.read().get(index).copied().flatten();
        if let Some(pid) = pid {
            send_built(&pid, |env| (atoms::weft_poll(), atoms::wake()).encode(env));
        }
    }
}

impl NifSink {
    fn event(&self, build: impl for<'a> FnOnce(Env<'a>) -> Term<'a>) {
        send_built(&self.events, build);
    }
}

fn node_atom<'a>(env: Env<'a>, name: &str) -> Term<'a> {
    Atom::from_str(env, name)
        .map(|a| a.encode(env))
        .unwrap_or_else(|_| name.encode(env))
}

fn level_atom(level: Level) -> Atom {
    match level {
        Level::Debug => atoms::debug(),
        Level::Info => atoms::info(),
        Level::Notice => atoms::notice(),
        Level::Warning => atoms::warning(),
        Level::Error => atoms::error(),
    }
}

/// `{weft_nif, log, Level, Text, #{peer => _, channel => _, lane => _}}`.
fn send_log(to: &LocalPid, level: Level, text: &str, peer: Option<&str>, lane: Option<&LaneKey>) {
    send_built(to, |env| {
        let mut meta = Term::map_new(env);
        if let Some(p) = peer {
            meta = meta
                .map_put(atoms::peer(), node_atom(env, p))
                .unwrap_or(meta);
        }
        if let Some(l) = lane {
            meta = meta
                .map_put(atoms::channel(), node_atom(env, &l.channel))
                .unwrap_or(meta);
            meta = meta.map_put(atoms::lane(), l.index).unwrap_or(meta);
        }
        (
            atoms::weft_nif(),
            atoms::log(),
            level_atom(level),
            text,
            meta,
        )
            .encode(env)
    });
}

/// Report panics of any weft thread through `logger` (the default hook
/// still prints them). Reporting happens on a fresh thread, since the
/// panicking thread may be a scheduler, which cannot use `send_and_clear`.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = format!("weft: Rust panic: {info}");
            if let Some(pid) = *PANIC_PID.read() {
                let _ = std::thread::Builder::new()
                    .name("weft-panic-report".into())
                    .spawn(move || send_log(&pid, Level::Error, &text, None, None));
            }
            previous(info);
        }));
    });
}

/// An `inet`-style error atom for an I/O error.
pub fn io_error_atom<'a>(env: Env<'a>, e: &std::io::Error) -> Term<'a> {
    use std::io::ErrorKind::*;
    let name = match e.kind() {
        AddrInUse => "eaddrinuse",
        AddrNotAvailable => "eaddrnotavail",
        PermissionDenied => "eacces",
        InvalidInput => "einval",
        _ => return e.to_string().encode(env),
    };
    node_atom(env, name)
}
