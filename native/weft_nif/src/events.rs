//! The transport's [`Sink`] in the VM ([`NifSink`]): node events and log
//! lines go to `weft_server`, poller wake-ups to the poller processes, and
//! received frames to [`messages`], which delivers them.

use crate::messages::{self, caller};
use once_cell::sync::Lazy;
use parking_lot::RwLock;
use rustler::sys::enif_send;
use rustler::types::LocalPid;
use rustler::{Atom, Encoder, Env, OwnedEnv, Term};
use weft_core::membership::Notice;
use weft_core::{DownReason, LaneKey, Level, Refusal};
use weft_transport::{Delivery, FrameBuffer, Sink};

mod atoms {
    rustler::atoms! {
        weft_nif, nodeup, nodedown, log, weft_poll, wake, refused, joined,
        connection_closed, heartbeat_timeout, left, removed, restarted, this_node_left,
        forgotten, stopped, bad_cookie, unexpected_node, unknown_lane, duplicate, unavailable,
        detached, bad_spec, version, full,
        debug, info, notice, warning, error,
        peer, channel, lane,
        membership, join, leave, up, down, message, dropped,
        term, atom_limit, malformed, room,
    }
}

/// Where panics are reported; set by the most recent start.
static PANIC_PID: Lazy<RwLock<Option<LocalPid>>> = Lazy::new(|| RwLock::new(None));

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
    /// The process that watches send queues for room (`weft_room`).
    room_watcher: RwLock<Option<LocalPid>>,
}

impl NifSink {
    pub fn new(events: LocalPid) -> Self {
        *PANIC_PID.write() = Some(events);
        NifSink {
            events,
            pollers: RwLock::new(Vec::new()),
            room_watcher: RwLock::new(None),
        }
    }

    /// `pid` watches send queues for room: [`Sink::room`] sends it
    /// `{weft_nif, room}` (a restarted watcher replaces the one that died).
    pub fn set_room_watcher(&self, pid: LocalPid) {
        if *self.room_watcher.read() != Some(pid) {
            *self.room_watcher.write() = Some(pid);
        }
    }

    /// Whether a process watches send queues for room yet.
    pub fn has_room_watcher(&self) -> bool {
        self.room_watcher.read().is_some()
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

impl Sink for NifSink {
    fn deliver(&self, _peer: &str, body: &[u8]) -> Delivery {
        messages::deliver(body)
    }

    fn flush_deliveries(&self) -> u64 {
        messages::flush_deliveries()
    }

    fn frame_buffer(&self, len: usize) -> Option<Box<dyn FrameBuffer>> {
        messages::frame_buffer(len)
    }

    fn deliver_buffer(&self, _peer: &str, body: Box<dyn FrameBuffer>) -> Delivery {
        messages::deliver_buffer(body)
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
            DownReason::Stopped => atoms::stopped(),
            DownReason::Removed => atoms::removed(),
            DownReason::Restarted => atoms::restarted(),
            DownReason::ThisNodeLeft => atoms::this_node_left(),
            DownReason::Forgotten => atoms::forgotten(),
            DownReason::Dropped => atoms::dropped(),
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
                Refusal::Full => atoms::full().encode(env),
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

    fn joined(&self, peer: &str) {
        let peer = peer.to_string();
        self.event(move |env| {
            (atoms::weft_nif(), atoms::joined(), node_atom(env, &peer)).encode(env)
        });
    }

    fn this_node_left(&self) {
        self.event(|env| (atoms::weft_nif(), atoms::this_node_left()).encode(env));
    }

    fn log(&self, level: Level, text: &str, peer: Option<&str>, lane: Option<&LaneKey>) {
        send_log(&self.events, level, text, peer, lane);
    }

    fn membership(&self, notice: &Notice) {
        self.membership_event(notice);
    }

    fn wake_poller(&self, index: usize) {
        let pid = self.pollers.read().get(index).copied().flatten();
        if let Some(pid) = pid {
            send_built(&pid, |env| (atoms::weft_poll(), atoms::wake()).encode(env));
        }
    }

    fn room(&self) {
        // (a scheduler thread outside a call that made its environment
        // known cannot send; no path gives bytes back there, and the
        // watcher also looks now and then)
        if messages::caller().is_null() && rustler::thread::is_scheduler_thread() {
            debug_assert!(false, "room rung on a scheduler thread without a caller");
            return;
        }
        let pid = *self.room_watcher.read();
        if let Some(pid) = pid {
            send_built(&pid, |env| (atoms::weft_nif(), atoms::room()).encode(env));
        }
    }
}

impl NifSink {
    /// `{weft_nif, membership, Event}` to `weft_server`, which hands it to
    /// the `weft_membership` process of the `callback` overlay.
    fn membership_event(&self, notice: &Notice) {
        let notice = notice.clone();
        self.event(move |env| {
            let event = match &notice {
                Notice::Join(spec) => {
                    (atoms::join(), crate::convert::encode_spec(env, spec)).encode(env)
                }
                Notice::Leave => atoms::leave().encode(env),
                Notice::Up(spec) => (
                    atoms::up(),
                    node_atom(env, &spec.name),
                    crate::convert::encode_spec(env, spec),
                )
                    .encode(env),
                Notice::Down(peer) => (atoms::down(), node_atom(env, peer)).encode(env),
                Notice::Message { from, payload } => {
                    // Decoded here, under the same bounds on new atoms and
                    // funs as a data message: a peer's membership message
                    // must not fill the atom table either.
                    let msg = match messages::decode_whole(env, payload) {
                        Ok(term) => (atoms::term(), term).encode(env),
                        Err(Delivery::AtomLimit) => {
                            (atoms::refused(), atoms::atom_limit(), payload.len()).encode(env)
                        }
                        Err(_) => (atoms::refused(), atoms::malformed(), payload.len()).encode(env),
                    };
                    (atoms::message(), node_atom(env, from), msg).encode(env)
                }
            };
            (atoms::weft_nif(), atoms::membership(), event).encode(env)
        });
    }

    fn event(&self, build: impl for<'a> FnOnce(Env<'a>) -> Term<'a>) {
        send_built(&self.events, build);
    }
}

fn node_atom<'a>(env: Env<'a>, name: &str) -> Term<'a> {
    messages::name_term(env, name)
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
