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

mod convert;
mod deliver;
mod etf;

use convert::{decode_config, decode_spec, encode_info, encode_spec, ip_port};
use deliver::NifSink;
use once_cell::sync::Lazy;
use parking_lot::RwLock;
use rustler::{Atom, Binary, Encoder, Env, ListIterator, NifResult, OwnedEnv, ResourceArc, Term};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use weft_transport::{Body, Choice, Outcome, Poller, SendError, Transport};

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
        stopped,
    }
}

/// The running transport and the guard id that owns it.
struct Running {
    transport: Transport,
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
            // Stopping waits for threads: never on a scheduler thread.
            std::thread::spawn(move || drop(r));
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
    if running().is_some() {
        return Ok((atoms::error(), atoms::already_started()).encode(env));
    }
    let (config, event_pid) = match decode_config(opts) {
        Ok(x) => x,
        Err(key) => {
            return Ok((
                atoms::error(),
                (atoms::bad_option(), Atom::from_str(env, key)?),
            )
                .encode(env))
        }
    };
    let listen = config.listen;
    let sink = Arc::new(NifSink::new(event_pid));
    deliver::install_panic_hook();
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
                guard: id,
            }));
            Ok((atoms::ok(), ResourceArc::new(Guard { id }), pollers).encode(env))
        }
        Err(weft_transport::StartError::Listen(_, e)) => Ok((
            atoms::error(),
            (
                atoms::listen(),
                ip_port(env, listen),
                deliver::io_error_atom(env, &e),
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
        deliver::with_caller(env, || r.transport.stop());
    }
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
    deliver::with_caller(env, || match p.poll() {
        Outcome::Busy => {
            rustler::schedule::consume_timeslice(env, 10);
            atoms::more()
        }
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
fn leave1(env: Env, node: Atom) -> NifResult<Term> {
    let name = node.to_term(env).atom_to_string()?;
    Ok(match running() {
        Some(r) => {
            r.transport.remove(&name);
            atoms::ok().encode(env)
        }
        None => not_started(env),
    })
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
    // atom is shown as text rather than break the whole list.
    let terms: Vec<Term> = names
        .iter()
        .map(|n| match Atom::from_str(env, n) {
            Ok(a) => a.encode(env),
            Err(_) => n.as_str().encode(env),
        })
        .collect();
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

/// Payloads up to this size are copied into the lane queue (cheaper than
/// pinning them); larger ones are pinned where they are and written from
/// there.
const COPY_LIMIT: usize = 64 * 1024;

/// Holds the binaries of a large payload while the transport writes them.
struct PinnedPayload(#[allow(dead_code)] OwnedEnv);

/// The frame body for `payload`: a binary, or a flat list of binaries as
/// `erlang:term_to_iovec/1` returns it. Refc binaries in a large payload are
/// not copied: a process-independent environment holds a reference to each
/// until the last byte is written.
fn body_of(payload: Term) -> Option<Body> {
    let mut parts: Vec<Binary> = Vec::new();
    if let Ok(bin) = payload.decode::<Binary>() {
        parts.push(bin);
    } else {
        // (rustler's list iterator panics on an improper list)
        payload.list_length().ok()?;
        for item in payload.decode::<ListIterator>().ok()? {
            parts.push(item.decode::<Binary>().ok()?);
        }
    }
    let total: usize = parts.iter().map(|b| b.len()).sum();
    if total <= COPY_LIMIT {
        let mut v = Vec::with_capacity(total);
        for b in &parts {
            v.extend_from_slice(b.as_slice());
        }
        return Some(Body::from(v));
    }
    // Copying the terms into the environment copies only the small (heap)
    // binaries; refc binaries gain a reference. Neither moves afterwards.
    let env = OwnedEnv::new();
    let saved = env.save(payload);
    let raw: Vec<(*const u8, usize)> = env.run(|e| {
        let t = saved.load(e);
        let bins: Vec<Binary> = match t.decode::<Binary>() {
            Ok(b) => vec![b],
            Err(_) => t
                .decode::<ListIterator>()
                .map(|l| l.filter_map(|x| x.decode::<Binary>().ok()).collect())
                .unwrap_or_default(),
        };
        bins.iter()
            .map(|b| (b.as_slice().as_ptr(), b.len()))
            .collect()
    });
    // SAFETY: the slices point into binaries held by `env`, which the body
    // owns; Erlang binaries are immutable and do not move while referenced.
    let slices = raw
        .into_iter()
        .map(|(ptr, len)| unsafe { std::slice::from_raw_parts(ptr, len) });
    Some(unsafe { Body::pinned(slices, Box::new(PinnedPayload(env))) })
}

/// Queue a message (the encoded `{Dest, Msg}`) for `node` on `channel`.
/// Small payloads are copied; large ones are pinned, not copied, so this
/// returns quickly whatever the size.
#[rustler::nif]
fn send<'a>(
    env: Env<'a>,
    node: Atom,
    channel: Atom,
    lane: Term<'a>,
    payload: Term<'a>,
) -> NifResult<Term<'a>> {
    let Some(r) = running() else {
        return Ok(not_started(env));
    };
    // A hash (of the partition key or destination), or `{index, Key}`.
    let choice = match lane
        .decode::<i64>()
        .ok()
        .and_then(|h| u32::try_from(h).ok())
    {
        Some(h) => Choice::Hash(h),
        None => match lane.decode::<(Atom, u64)>() {
            Ok((tag, i)) if tag == atoms::index() => Choice::Index(i),
            _ => return Ok((atoms::error(), (rustler::types::atom::badarg(), lane)).encode(env)),
        },
    };
    let Some(body) = body_of(payload) else {
        return Ok((atoms::error(), (rustler::types::atom::badarg(), payload)).encode(env));
    };
    let node = node.to_term(env).atom_to_string()?;
    let channel_name = channel.to_term(env).atom_to_string()?;
    // The calling process, for ordering: its small messages may pass large
    // ones that other processes queued, never its own.
    let sender = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        env.pid().hash(&mut h);
        h.finish()
    };
    // Queuing may wake a poller: a message from this process.
    let started = std::time::Instant::now();
    let sent = deliver::with_caller(env, || {
        r.transport
            .send(Some(sender), &node, &channel_name, choice, body)
    });
    // A send that wrote for long (a slow or preempted writev) tells the
    // scheduler, so that its sender yields sooner and others get their turn.
    let us = started.elapsed().as_micros() as u64;
    if us >= 10 {
        rustler::schedule::consume_timeslice(env, (us / 10).min(100) as i32);
    }
    Ok(match sent {
        Ok(()) => atoms::ok().encode(env),
        Err(SendError::UnknownChannel(_)) => {
            (atoms::error(), (atoms::unknown_channel(), channel)).encode(env)
        }
        Err(SendError::TooLarge { size, max }) => {
            (atoms::error(), (atoms::too_large(), size, max)).encode(env)
        }
        Err(SendError::Overloaded) => (atoms::error(), atoms::overloaded()).encode(env),
    })
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

/// Count what `weft` dropped or refused itself (sends to this node).
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
