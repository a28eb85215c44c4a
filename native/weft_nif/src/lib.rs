//! # weft_nif
//!
//! The rustler bindings of weft, and nothing else: Erlang terms to Rust
//! values and back, the one running [`Transport`], and delivery of received
//! messages and events into the BEAM.
//!
//! Every function here returns quickly. Sending copies a small payload into
//! the lane queue and pins a large one where it is (no copy), then returns.
//! Starting, stopping and `info` wait on
//! the transport's threads and run on dirty I/O schedulers. A panic in a NIF
//! becomes an Erlang exception (rustler catches it); a panic on a transport
//! thread ends that task only and is reported through `logger`.
//!
//! - this file: the NIF registrations (start, stop, poll, join, leave,
//!   members, info, counters, test hooks) and the running transport;
//! - `messages.rs`: the NIF's two ends of the message path: the send NIF
//!   (`weft:forward/4`'s way in, payload pinning) and delivery of received
//!   frames to their destination with `enif_send`;
//! - `events.rs`: the transport's `Sink`: events and logs to `weft_server`,
//!   wake-ups of poller processes (see `weft_transport::wake`), received
//!   frames handed to `messages.rs`;
//! - `convert.rs`: terms <-> Rust values (config, specs, info);
//! - `etf.rs`: building VM terms for the in-place decoder of large frames.

mod convert;
mod etf;
mod events;
mod messages;
mod parking;

use convert::{decode_config, decode_spec, encode_info, encode_spec, ip_port};
use events::NifSink;
use once_cell::sync::Lazy;
use parking_lot::RwLock;
use rustler::{Atom, Binary, Encoder, Env, NifResult, ResourceArc, Term};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use weft_transport::{Outcome, Poller, Transport};

mod atoms {
    rustler::atoms! {
        ok,
        error,
        not_started,
        already_started,
        unknown_channel,
        too_large,
        overloaded,
        listen,
        bad_option,
        bad_config,
        advertise,
        bad_spec,
        timeout,
        dropped,
        refused,
        no_destination,
        decoded,
        fallback,
        more,
        linger,
        index,
        wait,
        waited,
        none,
        fits,
        watched,
        stopped,
        parked,
        cancelled,
        sent,
        weft_room,
        undefined,
    }
}

/// The running transport and the guard id that owns it.
struct Running {
    transport: Transport,
    sink: Arc<NifSink>,
    guard: u64,
}

static RUNNING: Lazy<RwLock<Option<Arc<Running>>>> = Lazy::new(|| RwLock::new(None));
static NEXT_GUARD: AtomicU64 = AtomicU64::new(1);

/// Held by `weft_server`: when that process dies without calling `stop`,
/// the garbage collector drops the guard and the transport stops.
pub struct Guard {
    id: u64,
}

#[rustler::resource_impl]
impl rustler::Resource for Guard {}

/// One poller of the running transport, for the process that drives it
/// (`weft_poller`).
pub struct PollerRes {
    poller: Arc<Poller>,
    sink: Arc<NifSink>,
}

#[rustler::resource_impl]
impl rustler::Resource for PollerRes {}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut running = RUNNING.write();
        if running.as_ref().is_some_and(|r| r.guard == self.id) {
            let r = running.take();
            messages::RECV_POOL.set_limit(0);
            // Stopping waits for threads: never on a scheduler thread. A
            // start meanwhile waits for it (`wait_for_stops`), so that the
            // new transport can bind the port the old one is closing.
            *STOPPING.0.lock() += 1;
            std::thread::spawn(move || {
                drop(r);
                *STOPPING.0.lock() -= 1;
                STOPPING.1.notify_all();
            });
        }
    }
}

/// Transports whose guard was collected and which are still stopping (on
/// a thread of their own), and a signal when one is done.
static STOPPING: (parking_lot::Mutex<usize>, parking_lot::Condvar) =
    (parking_lot::Mutex::new(0), parking_lot::Condvar::new());

/// Wait (at most `limit`) until no collected transport is still stopping.
fn wait_for_stops(limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    let mut n = STOPPING.0.lock();
    while *n > 0 {
        if STOPPING.1.wait_until(&mut n, deadline).timed_out() {
            return;
        }
    }
}

fn running() -> Option<Arc<Running>> {
    RUNNING.read().clone()
}

fn not_started(env: Env) -> Term {
    (atoms::error(), atoms::not_started()).encode(env)
}

#[rustler::nif(schedule = "DirtyIo")]
fn start<'a>(env: Env<'a>, opts: Term<'a>) -> NifResult<Term<'a>> {
    // (a dirty I/O scheduler: it may wait)
    wait_for_stops(std::time::Duration::from_secs(5));
    if running().is_some() {
        return Ok((atoms::error(), atoms::already_started()).encode(env));
    }
    let decoded = decode_config(opts)
        .and_then(|(config, pid)| Ok((config, pid, convert::large_frame_pool(opts)?)));
    let (config, event_pid, pool) = match decoded {
        Ok(x) => x,
        Err(key) => {
            return Ok((
                atoms::error(),
                (atoms::bad_option(), Atom::from_str(env, key)?),
            )
                .encode(env))
        }
    };
    messages::RECV_POOL.set_limit(pool);
    let listen = config.listen;
    let sink = Arc::new(NifSink::new(event_pid));
    events::install_panic_hook();
    match Transport::start(config, sink.clone()) {
        Ok(transport) => {
            let id = NEXT_GUARD.fetch_add(1, Ordering::Relaxed);
            let pollers: Vec<ResourceArc<PollerRes>> = transport
                .pollers()
                .iter()
                .map(|p| {
                    ResourceArc::new(PollerRes {
                        poller: p.clone(),
                        sink: sink.clone(),
                    })
                })
                .collect();
            *RUNNING.write() = Some(Arc::new(Running {
                transport,
                sink,
                guard: id,
            }));
            Ok((atoms::ok(), ResourceArc::new(Guard { id }), pollers).encode(env))
        }
        Err(weft_transport::StartError::Listen(_, e)) => Ok((
            atoms::error(),
            (
                atoms::listen(),
                ip_port(env, listen),
                events::io_error_atom(env, &e),
            ),
        )
            .encode(env)),
        Err(weft_transport::StartError::Advertise(a)) => Ok((
            atoms::error(),
            (atoms::bad_config(), atoms::advertise(), ip_port(env, a)),
        )
            .encode(env)),
        Err(e) => Ok((atoms::error(), e.to_string()).encode(env)),
    }
}

#[rustler::nif(schedule = "DirtyIo")]
fn stop(env: Env) -> Atom {
    let r = RUNNING.write().take();
    if let Some(r) = r {
        messages::with_caller(env, || r.transport.stop());
    }
    // A stopped node keeps no idle receive buffers (those of messages
    // still held are freed with them).
    messages::RECV_POOL.set_limit(0);
    atoms::ok()
}

/// One round of a poller (see `weft_transport::poller`), in the calling
/// process (`weft_poller`): `more` (call again), `wait` (wait for a
/// `{weft_poll, wake}` message, then call again) or `stopped`.
#[rustler::nif]
fn poll(env: Env, res: ResourceArc<PollerRes>) -> Atom {
    let p = &res.poller;
    if p.is_stopped() {
        return atoms::stopped();
    }
    let started = std::time::Instant::now();
    messages::with_caller(env, || match charged(env, started, p.poll()) {
        Outcome::Busy => atoms::more(),
        Outcome::Linger => atoms::linger(),
        Outcome::Idle => {
            // Wake-ups go only to an idle poller, to the process that last
            // drove it: make it known before going idle (a restarted
            // process replaces the one that died).
            res.sink.register_poller(p.index(), env.pid());
            if p.try_idle() {
                atoms::wait()
            } else {
                atoms::more()
            }
        }
    })
}

/// Charge the calling process for a poller round that began at `started`:
/// its cost varies with what it moved (a few large frames copy fast,
/// thousands of small ones each cost a delivery), a timeslice being about
/// 1 ms (1 % per 10 us). Returns `outcome`.
fn charged(env: Env, started: std::time::Instant, outcome: Outcome) -> Outcome {
    let percent = (started.elapsed().as_micros() / 10).clamp(1, 100) as i32;
    rustler::schedule::consume_timeslice(env, percent);
    outcome
}

#[rustler::nif]
fn node_spec(env: Env) -> Term {
    match running() {
        Some(r) => encode_spec(env, &r.transport.local_spec()),
        None => not_started(env),
    }
}

#[rustler::nif]
fn join<'a>(env: Env<'a>, spec: Term<'a>) -> Term<'a> {
    let Some(r) = running() else {
        return not_started(env);
    };
    match decode_spec(spec) {
        Some(s) => {
            r.transport.join(s);
            atoms::ok().encode(env)
        }
        None => (atoms::error(), (atoms::bad_spec(), spec)).encode(env),
    }
}

/// The `callback` overlay's decision: connections to `members` (node specs
/// as `join/1` takes them, already checked by `weft_membership`) and
/// `messages` (`[{Node, Binary}]`, on the control channel). `ok`,
/// `{error, badarg}` if either is not what it should be, or
/// `{error, not_started}`.
#[rustler::nif]
fn membership_decision<'a>(env: Env<'a>, members: Term<'a>, messages: Term<'a>) -> Term<'a> {
    let Some(r) = running() else {
        return not_started(env);
    };
    let members: Option<Vec<_>> = members
        .decode::<Vec<Term>>()
        .ok()
        .filter(|v| v.len() <= 65536)
        .and_then(|v| v.into_iter().map(decode_spec).collect());
    let messages: Option<Vec<(String, Vec<u8>)>> = messages
        .decode::<Vec<(Atom, rustler::Binary)>>()
        .ok()
        .filter(|v| v.len() <= 65536)
        .and_then(|v| {
            v.into_iter()
                .map(|(n, b)| Some((n.to_term(env).atom_to_string().ok()?, b.as_slice().to_vec())))
                .collect()
        });
    match (members, messages) {
        (Some(m), Some(msgs)) => {
            r.transport.membership_decision(m, msgs);
            atoms::ok().encode(env)
        }
        _ => (atoms::error(), rustler::types::atom::badarg()).encode(env),
    }
}

#[rustler::nif(name = "leave")]
fn leave0(env: Env) -> Term {
    match running() {
        Some(r) => {
            r.transport.leave();
            atoms::ok().encode(env)
        }
        None => not_started(env),
    }
}

#[rustler::nif(name = "leave")]
fn leave1(env: Env, node: Atom) -> Term {
    // A name past Latin-1 names no member: nothing to remove.
    let name = messages::atom_text(env, node);
    match running() {
        Some(r) => {
            if !name.is_empty() {
                r.transport.remove(&name);
            }
            atoms::ok().encode(env)
        }
        None => not_started(env),
    }
}

fn node_list<'a>(env: Env<'a>, with_self: bool) -> NifResult<Term<'a>> {
    let Some(r) = running() else {
        return Ok(not_started(env));
    };
    let mut names = r.transport.up_peers();
    if with_self {
        names.push(r.transport.local_spec().name);
        names.sort();
    }
    // Names are validated at the handshake; one that still cannot be an
    // atom (or would be a new atom with the atom table near full) is shown
    // as text rather than break the whole list.
    let terms: Vec<Term> = names.iter().map(|n| messages::name_term(env, n)).collect();
    Ok(terms.encode(env))
}

#[rustler::nif]
fn members(env: Env) -> NifResult<Term> {
    node_list(env, true)
}

#[rustler::nif]
fn nodes(env: Env) -> NifResult<Term> {
    node_list(env, false)
}

#[rustler::nif(schedule = "DirtyIo")]
fn info(env: Env) -> NifResult<Term> {
    let Some(r) = running() else {
        return Ok(not_started(env));
    };
    match r.transport.info() {
        Some(i) => encode_info(env, &i),
        // The transport did not answer within a second.
        None => Ok((atoms::error(), atoms::timeout()).encode(env)),
    }
}

/// Count what `weft` dropped or refused itself (sends to this node), and
/// the waits and final refusals of `overload => wait` channels.
#[rustler::nif]
fn count<'a>(env: Env<'a>, kind: Atom, reason: Atom) -> Term<'a> {
    let Some(r) = running() else {
        return not_started(env);
    };
    let c = r.transport.counters();
    let counter = if kind == atoms::dropped() && reason == atoms::no_destination() {
        &c.dropped.no_destination
    } else if kind == atoms::refused() && reason == atoms::unknown_channel() {
        &c.refused.unknown_channel
    } else if kind == atoms::refused() && reason == atoms::overloaded() {
        &c.refused.overloaded
    } else if kind == atoms::waited() && reason == atoms::overloaded() {
        &c.waited
    } else {
        return (
            atoms::error(),
            (rustler::types::atom::badarg(), (kind, reason)),
        )
            .encode(env);
    };
    counter.fetch_add(1, Ordering::Relaxed);
    atoms::ok().encode(env)
}

/// Step 1 of a measurement of the atom table by `weft_server`: a mark to
/// pass to `atom_room/2`, taken before counting the table. Callable
/// whether or not the transport runs.
#[rustler::nif]
fn atom_room_mark() -> i64 {
    messages::atom_room_mark()
}

/// How many more atoms received messages may create: `free`, the atom
/// table's free entries above a reserve, counted after `mark` was taken
/// (`atom_room_mark/0`); what decodes took and had not finished by the
/// mark is subtracted. Returns `ok`; callable whether or not the transport
/// runs.
#[rustler::nif]
fn atom_room(free: i64, mark: i64) -> Atom {
    messages::set_atom_room(free, mark);
    atoms::ok()
}

/// Test hook: decode `bin` (external term format) as a large received frame
/// is decoded, sharing binaries of `share_min` bytes or more.
/// `{decoded, Term}`, or `fallback` when the VM's decoder would take over.
#[rustler::nif(name = "decode_external")]
fn decode_external<'a>(env: Env<'a>, bin: Binary<'a>, share_min: usize) -> Term<'a> {
    match etf::decode(env, bin, share_min) {
        Some(t) => (atoms::decoded(), t).encode(env),
        None => atoms::fallback().encode(env),
    }
}

/// Test hook: panic in a NIF (`nif`) or on a transport thread (`thread`),
/// to check that neither takes the VM down.
#[rustler::nif(name = "debug_panic")]
fn debug_panic(env: Env, where_: Atom) -> NifResult<Term> {
    if where_.to_term(env).atom_to_string()? == "thread" {
        std::thread::spawn(|| panic!("weft debug panic on a background thread"));
        return Ok(atoms::ok().encode(env));
    }
    panic!("weft debug panic in a NIF call");
}

rustler::init!("weft_nif");
