//! The NIF's two ends of the message path.
//!
//! **Sending** (`weft_nif:send/4`, called from `src/weft.erl`): [`send`]
//! picks nothing itself. It turns the lane argument into a [`Choice`], the
//! payload (an iovec from `erlang:term_to_iovec/1`) into a [`Body`], copied
//! when small and pinned where it is when large (all the `unsafe` of the send
//! path is in [`body_of`]), and hands both to
//! [`weft_transport::Transport::send`] (routes, then the lane writer), on
//! the calling scheduler. It returns at once: `ok` or `{error, Reason}`.
//!
//! **Delivering** (called by the transport's pollers through the `Sink`
//! that `events.rs` implements): a received frame goes straight to its
//! destination process with `enif_send` ([`deliver`], [`deliver_buffer`]);
//! no Erlang process stands in between. Small messages are decoded as they
//! are read and sent together, up to [`HOLD_MAX`] at a time, at the end of
//! the poller's round ([`flush_deliveries`]): a receiver that runs on
//! another scheduler is then woken once per batch rather than once per
//! message (measured in `bench/RESULTS.md`, "deliveries in batches"). Large frames are read into a buffer
//! ([`frame_buffer`]: from [`RECV_POOL`], handed to the VM as a resource
//! binary, or a refc binary) and decoded by [`etf`], so the large binaries
//! in them reach the destination without another copy.
//!
//! Sends into the VM happen on two kinds of threads: the transport's own (no
//! caller environment) and the BEAM's schedulers, inside a NIF call (a
//! poller round, a send that wakes a poller). `enif_send` and
//! `enif_whereis_pid` want the calling process's environment on a scheduler
//! thread; [`with_caller`] makes it known for the duration of such a call.

use crate::{atoms, etf, not_started, running};
use rustler::sys::{enif_send, ErlNifEnv};
use rustler::types::LocalPid;
use rustler::{
    Atom, Binary, Encoder, Env, ListIterator, NifResult, OwnedBinary, OwnedEnv, ResourceArc, Term,
};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ptr;
use std::sync::atomic::{AtomicI64, Ordering};
use weft_etf::room::Room;
use weft_etf::Builder;
use weft_transport::recv_pool::{BufferPool, PooledBuffer};
use weft_transport::{Body, Choice, Delivery, FrameBuffer, SendError, Sender};

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
    let (choice, body, sender) = match send_args(env, lane, payload) {
        Ok(args) => args,
        Err(bad) => return Ok(bad),
    };
    let sent = queue(env, node, channel, |node, channel_name| {
        r.transport
            .send(Some(sender), node, channel_name, choice, body)
    });
    Ok(send_result(env, sent, channel))
}

/// The lane choice, body and sender of a send (`send/4`, `park/4`), or
/// the `{error, {badarg, Arg}}` to answer.
pub(crate) fn send_args<'a>(
    env: Env<'a>,
    lane: Term<'a>,
    payload: Term<'a>,
) -> Result<(Choice, Body, Sender), Term<'a>> {
    // A hash (of the partition key or destination), or `{index, Key}`.
    let choice = match lane
        .decode::<i64>()
        .ok()
        .and_then(|h| u32::try_from(h).ok())
    {
        Some(h) => Choice::Hash(h),
        None => match lane.decode::<(Atom, u64)>() {
            Ok((tag, i)) if tag == atoms::index() => Choice::Index(i),
            _ => return Err((atoms::error(), (rustler::types::atom::badarg(), lane)).encode(env)),
        },
    };
    let Some(body) = body_of(payload) else {
        return Err((atoms::error(), (rustler::types::atom::badarg(), payload)).encode(env));
    };
    // The calling process, for ordering: its small messages may pass large
    // ones that other processes queued, never its own.
    let sender = {
        use std::hash::{Hash, Hasher};
        let mut h = weft_core::types::FastHasher::default();
        env.pid().hash(&mut h);
        h.finish()
    };
    Ok((choice, body, sender))
}

/// Run `f` (a send or a park, which may write and wake a poller) with the
/// text of `node` and `channel`, the calling process's environment for
/// the sends it makes; one that took long (a slow or preempted writev)
/// tells the scheduler, so that its sender yields sooner and others get
/// their turn.
pub(crate) fn queue<R>(env: Env, node: Atom, channel: Atom, f: impl FnOnce(&str, &str) -> R) -> R {
    let started = std::time::Instant::now();
    let result = with_names(env, node, channel, |node, channel| {
        with_caller(env, || f(node, channel))
    });
    let us = started.elapsed().as_micros() as u64;
    if us >= 10 {
        rustler::schedule::consume_timeslice(env, (us / 10).min(100) as i32);
    }
    result
}

/// `ok` or `{error, Reason}` for a send's result.
pub(crate) fn send_result<'a>(
    env: Env<'a>,
    sent: Result<(), SendError>,
    channel: Atom,
) -> Term<'a> {
    match sent {
        Ok(()) => atoms::ok().encode(env),
        Err(SendError::UnknownChannel(_)) => {
            (atoms::error(), (atoms::unknown_channel(), channel)).encode(env)
        }
        Err(SendError::TooLarge { size, max }) => {
            (atoms::error(), (atoms::too_large(), size, max)).encode(env)
        }
        Err(SendError::Overloaded) => (atoms::error(), atoms::overloaded()).encode(env),
    }
}

thread_local! {
    // The text of the node and channel atoms of this thread's last send:
    // a sender sends to the same node and channel again and again, and an
    // atom's text never changes while the VM runs.
    static NAMES: RefCell<[Name; 2]> = const { RefCell::new([(None, String::new()), (None, String::new())]) };
}

/// An atom (the term) and its text.
type Name = (Option<rustler::sys::ErlNifTerm>, String);

/// Call `f` with the text of the atoms `node` and `channel`, looked up
/// once per thread while they stay the same.
///
/// Names travel as Latin-1 atoms (the VM's NIF interface of OTP 25 reads
/// no other), so an atom with a character past Latin-1 names no member and
/// no channel: its text is the empty string, which no name is. The send
/// then counts as `not_member`, or answers `unknown_channel`, as for any
/// other name that is not there.
fn with_names<R>(env: Env, node: Atom, channel: Atom, f: impl FnOnce(&str, &str) -> R) -> R {
    let text = |slot: &mut Name, atom: Atom| {
        let raw = Some(atom.as_c_arg());
        if slot.0 != raw {
            slot.1 = atom_text(env, atom);
            slot.0 = raw;
        }
    };
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        let [n, c] = &mut *names;
        text(n, node);
        text(c, channel);
        f(&n.1, &c.1)
    })
}

/// The text of `atom`, or the empty string (which names nothing) when it
/// has characters past Latin-1 (see [`with_names`]).
pub(crate) fn atom_text(env: Env, atom: Atom) -> String {
    atom.to_term(env).atom_to_string().unwrap_or_default()
}

/// Small messages held back at most, per thread: past this many, they go
/// out before the next is decoded. At about 1 us to decode each, a message
/// waits at most some 0.3 ms for the batch it is in.
pub const HOLD_MAX: usize = 256;

/// Small messages decoded and not sent yet: where to, and the message, in
/// an environment of their own.
struct Held {
    env: OwnedEnv,
    sends: Vec<(rustler::sys::ErlNifPid, rustler::sys::ErlNifTerm)>,
}

thread_local! {
    static HELD: RefCell<Held> = RefCell::new(Held { env: OwnedEnv::new(), sends: Vec::new() });
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
pub(crate) fn caller() -> *mut ErlNifEnv {
    CALLER.with(|c| c.get())
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
    let (pid, msg) = match addressed(term) {
        Ok(x) => x,
        Err(d) => return d,
    };
    // enif_send fails only when the process is gone.
    if unsafe { enif_send(caller(), pid.as_c_arg(), env.as_c_arg(), msg.as_c_arg()) } != 0 {
        Delivery::Delivered
    } else {
        Delivery::NoDestination
    }
}

/// The local process `{Dest, Msg}` goes to, and `Msg`; or why it goes
/// nowhere (not such a term: `Malformed`; nobody there: `NoDestination`).
fn addressed(term: Term) -> Result<(LocalPid, Term), Delivery> {
    let Ok((dest, msg)) = term.decode::<(Term, Term)>() else {
        return Err(Delivery::Malformed);
    };
    if !dest.is_atom() && !dest.is_pid() {
        return Err(Delivery::Malformed);
    }
    match resolve(dest) {
        Some(pid) => Ok((pid, msg)),
        None => Err(Delivery::NoDestination),
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
    fn grow(&mut self, len: usize) -> bool {
        // (enif_realloc_binary: fails without touching the binary)
        self.0.realloc(len)
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// How many more atoms received messages may create: the room left in the
/// VM's atom table above a reserve, as `weft_server` last measured it
/// (`atom_room/2`, every second), less what was taken since (see
/// [`Room`]). A full atom table ends the VM, and peers pass only the
/// cookie check: a peer could otherwise send new atoms until it does.
static ATOM_ROOM: Room = Room::new(0);

/// Step 1 of a measurement of the atom table (see [`Room::mark`]).
pub fn atom_room_mark() -> i64 {
    ATOM_ROOM.mark()
}

/// Step 3: `free` entries above the reserve were counted after `mark`.
pub fn set_atom_room(free: i64, mark: i64) {
    ATOM_ROOM.set(free, mark);
}

/// How many more external functions (`fun M:F/A`) new to the VM received
/// messages may create, for the life of the VM. Decoding one adds an entry
/// to the VM's export table, which never shrinks and, full (524,288
/// entries in OTP 25), ends the VM; OTP 25 does not say how full it is. A
/// node that knows the functions it is sent spends none of this.
static EXPORT_ROOM: AtomicI64 = AtomicI64::new(100_000);

/// The external term format's tags of an external fun and a local fun.
const EXPORT_EXT: u8 = 113;
const NEW_FUN_EXT: u8 = 112;

/// At most how many atoms and how many external functions decoding `body`
/// may create (see [`new_entries_bound`]).
struct NewEntries {
    atoms: usize,
    exports: usize,
}

/// At most how many atoms decoding `body` may create: the distinct atom
/// names in it that the node does not have, plus, for each subterm only
/// the VM decodes (pids, references, funs, atoms outside ASCII), one per 3
/// of its bytes (a new atom takes a tag, a length and a character); when
/// the parser does not handle `body` (compressed, very deep), one per 3 of
/// its bytes. Each external function (`EXPORT_EXT`) counts as one new
/// export entry (unparsed, each `EXPORT_EXT` tag byte does).
fn new_entries_bound(env: Env, body: &[u8]) -> NewEntries {
    struct Count<'e> {
        env: Env<'e>,
        seen: HashSet<Vec<u8>>,
        n: usize,
        exports: usize,
    }
    impl Builder for Count<'_> {
        type Term = ();
        fn int(&mut self, _: i64) -> Option<()> {
            Some(())
        }
        fn float(&mut self, _: f64) -> Option<()> {
            Some(())
        }
        fn atom(&mut self, name: &[u8]) -> Option<()> {
            if Atom::existing_from_bytes(self.env, name).is_err() && self.seen.insert(name.to_vec())
            {
                self.n += 1;
            }
            Some(())
        }
        fn nil(&mut self) -> Option<()> {
            Some(())
        }
        fn string(&mut self, _: &[u8]) -> Option<()> {
            Some(())
        }
        fn tuple(&mut self, _: Vec<()>) -> Option<()> {
            Some(())
        }
        fn list(&mut self, _: Vec<()>, _: ()) -> Option<()> {
            Some(())
        }
        fn binary(&mut self, _: usize, _: &[u8]) -> Option<()> {
            Some(())
        }
        fn map(&mut self, _: Vec<()>, _: Vec<()>) -> Option<()> {
            Some(())
        }
        fn foreign(&mut self, encoded: &[u8]) -> Option<()> {
            self.n += encoded.len() / 3 + 1;
            // An external fun is one; a local fun may hold some in its free
            // variables (bounded by its EXPORT_EXT tag bytes).
            self.exports += match encoded.first() {
                Some(&EXPORT_EXT) => 1,
                Some(&NEW_FUN_EXT) => encoded.iter().filter(|&&b| b == EXPORT_EXT).count(),
                _ => 0,
            };
            Some(())
        }
    }
    let mut c = Count {
        env,
        seen: HashSet::new(),
        n: 0,
        exports: 0,
    };
    match weft_etf::decode(body, &mut c) {
        Some(()) => NewEntries {
            atoms: c.n,
            exports: c.exports,
        },
        None => NewEntries {
            atoms: body.len() / 3 + 1,
            exports: body.iter().filter(|&&b| b == EXPORT_EXT).count(),
        },
    }
}

/// Take `n` of `room`; whether there was that much. (One exchange, never a
/// subtraction undone later.)
fn take(room: &AtomicI64, n: i64) -> bool {
    if n == 0 {
        return true;
    }
    room.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
        (r >= n).then_some(r - n)
    })
    .is_ok()
}

/// A name that came from the network (a node's, a channel's) as an atom
/// when the node has that atom or its atom table has room for it (see
/// [`ATOM_ROOM`]), else as a binary, so that names a peer makes up cannot
/// fill the table either.
pub fn name_term<'a>(env: Env<'a>, name: &str) -> Term<'a> {
    if let Ok(a) = Atom::existing_from_bytes(env, name.as_bytes()) {
        return a.encode(env);
    }
    if let Some(_taken) = ATOM_ROOM.take(1) {
        if let Ok(a) = Atom::from_str(env, name) {
            return a.encode(env);
        }
    }
    name.encode(env)
}

/// Decode a received frame's body, one term and nothing after it (as
/// `binary_to_term/1` wants). Terms with only atoms the node has decode
/// at once (`binary_to_term` with `safe`). A term with new atoms decodes
/// only while the atom table has room for them ([`new_entries_bound`]);
/// otherwise it is refused ([`Delivery::AtomLimit`]). Peers passed the
/// cookie check: the rest of what they send is trusted as the distribution
/// trusts it.
pub(crate) fn decode_whole<'a>(env: Env<'a>, body: &[u8]) -> Result<Term<'a>, Delivery> {
    if let Some((term, used)) = env.binary_to_term(body) {
        return if used == body.len() {
            Ok(term)
        } else {
            Err(Delivery::Malformed)
        };
    }
    // Refused by `safe`: it names atoms (or functions) new here, or it is
    // malformed.
    let bound = new_entries_bound(env, body);
    let atoms = i64::try_from(bound.atoms).unwrap_or(i64::MAX);
    let exports = i64::try_from(bound.exports).unwrap_or(i64::MAX);
    // Held until the atoms exist (or the decode failed), so that a
    // measurement meanwhile never gives the same room out twice.
    let Some(taken) = ATOM_ROOM.take(atoms) else {
        return Err(Delivery::AtomLimit);
    };
    if !take(&EXPORT_ROOM, exports) {
        taken.give_back();
        return Err(Delivery::AtomLimit);
    }
    let decoded = unsafe { env.binary_to_term_trusted(body) };
    drop(taken);
    match decoded {
        Some((term, used)) if used == body.len() => Ok(term),
        // (The export room is not given back: a decode that fails late may
        // have made entries already. The atom room is measured again
        // within a second anyway.)
        _ => Err(Delivery::Malformed),
    }
}

/// Deliver a small received frame (the external term format of
/// `{Dest, Msg}`, decoded by the VM's `binary_to_term`): decoded and its
/// destination found now, sent with the rest of its batch
/// ([`flush_deliveries`]).
pub fn deliver(body: &[u8]) -> Delivery {
    let (delivery, full) = HELD.with(|cell| {
        let mut held = cell.borrow_mut();
        let Held { env, sends } = &mut *held;
        let delivery = env.run(|env| {
            let term = match decode_whole(env, body) {
                Ok(term) => term,
                Err(d) => return d,
            };
            let (pid, msg) = match addressed(term) {
                Ok(x) => x,
                Err(d) => return d,
            };
            // (a pid is a plain value: copied out of its wrapper)
            sends.push((*pid.as_c_arg(), msg.as_c_arg()));
            Delivery::Delivered
        });
        (delivery, sends.len() >= HOLD_MAX)
    });
    if full {
        send_held();
    }
    delivery
}

thread_local! {
    // Held messages that found no process when sent, until the poller's
    // next flush reports them.
    static LOST: Cell<u64> = const { Cell::new(0) };
}

/// Send the small messages held back on this thread, in order. Returns how
/// many found no destination since the last call (the process ended after
/// it was looked up), including those of batches sent because they were
/// full.
pub fn flush_deliveries() -> u64 {
    send_held();
    LOST.with(|l| l.replace(0))
}

/// Send what is held (counting in `LOST` what found no process).
fn send_held() {
    HELD.with(|cell| {
        let mut held = cell.borrow_mut();
        if held.sends.is_empty() {
            return;
        }
        let mut lost = 0;
        for (pid, msg) in held.sends.drain(..) {
            // A NULL message environment: the message is copied out of the
            // held one (its binaries are shared, not copied), which is
            // cleared once all are sent.
            if unsafe { enif_send(caller(), &pid, ptr::null_mut(), msg) } == 0 {
                lost += 1;
            }
        }
        held.env.clear();
        LOST.with(|l| l.set(l.get() + lost));
    })
}

/// Buffers of received large frames kept for reuse, bounded by the
/// `large_frame_pool` option (bytes of idle buffers; 0: none kept, large
/// frames are read into refc binaries from the VM's allocator). One per
/// VM: its buffers outlive a transport in the messages that hold them.
pub static RECV_POOL: BufferPool = BufferPool::new(0);

/// A large frame's buffer from [`RECV_POOL`], owned by the VM as a
/// resource once delivered: the message's binaries point into it, and the
/// buffer goes back to the pool when the last of them is freed.
pub struct RecvBuffer(PooledBuffer);

#[rustler::resource_impl]
impl rustler::Resource for RecvBuffer {}

/// A buffer for a large frame's body of `len` bytes, or `None` when there
/// is no memory for it (`OwnedBinary::new` would abort the process): from
/// [`RECV_POOL`], or, when it keeps nothing, a refc binary.
pub fn frame_buffer(len: usize) -> Option<Box<dyn FrameBuffer>> {
    if RECV_POOL.limit() > 0 {
        return RECV_POOL
            .take(len)
            .map(|b| Box::new(b) as Box<dyn FrameBuffer>);
    }
    let mut bin = std::mem::MaybeUninit::<rustler::sys::ErlNifBinary>::uninit();
    // SAFETY: enif_alloc_binary fills `bin` when it returns non-zero, and
    // the binary is then owned by the OwnedBinary (released on drop).
    unsafe {
        if rustler::sys::enif_alloc_binary(len, bin.as_mut_ptr()) == 0 {
            return None;
        }
        Some(Box::new(BinaryBuffer(OwnedBinary::from_raw(
            bin.assume_init(),
        ))))
    }
}

/// Deliver a large received frame read into [`frame_buffer`]: decoded by
/// [`etf`], which shares its large binaries instead of copying them.
pub fn deliver_buffer(body: Box<dyn FrameBuffer>) -> Delivery {
    let body = body.into_any();
    let body = match body.downcast::<PooledBuffer>() {
        Ok(pooled) => {
            let res = ResourceArc::new(RecvBuffer(*pooled));
            return with_msg_env(|env| deliver_frame(env, res.make_binary(env, |r| r.0.bytes())));
        }
        Err(other) => other,
    };
    let body = match body.downcast::<BinaryBuffer>() {
        Ok(b) => b.0,
        Err(other) => {
            let bytes = other.downcast::<Vec<u8>>().map(|v| *v).unwrap_or_default();
            return deliver(&bytes);
        }
    };
    with_msg_env(|env| deliver_frame(env, body.release(env)))
}

/// Decode `frame` (a large frame's body, as a binary) and send it.
fn deliver_frame<'a>(env: Env<'a>, frame: Binary<'a>) -> Delivery {
    let share_min = etf::share_threshold(frame.len());
    match etf::decode(env, frame, share_min)
        .ok_or(())
        .or_else(|()| decode_whole(env, frame.as_slice()))
    {
        Ok(t) => send_decoded(env, t),
        Err(d) => d,
    }
}
