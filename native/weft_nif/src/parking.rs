//! Senders that wait for room (channels with `overload => wait`): their
//! messages park in the transport (`weft_transport::routes::Routes::park`,
//! in the order of `weft_core::admission`), and go when `weft_room` calls
//! `admit/0` after the transport rang its bell.
//!
//! `park/4` answers `ok` (it went after all), `{parked, Ticket, Id}` or an
//! error as `send/4`'s. The waiting process then gets `{weft_room, Id,
//! Result}` (`Result`: `ok` or `{error, Reason}`) once its message went.
//! `unpark/1` takes it out: `cancelled` (it will not go, and no message
//! comes) or `sent` (the message is in the caller's mailbox already: it is
//! sent while the parked messages are locked), or `{error, not_started}`
//! when the transport it was parked in is gone (weft stopped, or stopped
//! and started again: its parked messages went with it, unsent). A `Ticket` that is dropped
//! (its process died) takes its message out too.

use crate::messages::{queue, send_args, send_result, with_caller};
use crate::{atoms, not_started, running};
use rustler::types::LocalPid;
use rustler::{Atom, Encoder, Env, NifResult, ResourceArc, Term};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use weft_transport::routes::{Parking, Waiter};

/// Parked messages admitted per `admit/0` call at most (each a send and a
/// message), so that a call stays short.
const ADMIT_MAX: usize = 256;

/// Ids of parked messages, unique for the VM's life (across restarts of
/// the transport, so that a late drop never takes out another's).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Held by the process whose message is parked.
pub struct Ticket {
    id: u64,
    /// The transport it is parked in (its guard's id).
    transport: u64,
}

#[rustler::resource_impl]
impl rustler::Resource for Ticket {}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(r) = running().filter(|r| r.guard == self.transport) {
            r.transport.unpark(self.id);
        }
    }
}

/// Whom `admit/0` tells: the parked message's process and id.
struct Parked {
    pid: LocalPid,
    id: u64,
}

/// Milliseconds on a clock of this VM's NIF, and a random draw.
fn now_and_draw(id: u64) -> (u64, u64) {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let ms = ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64;
    (
        ms,
        std::collections::hash_map::RandomState::new().hash_one(id),
    )
}

/// Send, or park the message until there is room for it (see the module
/// documentation).
#[rustler::nif]
fn park<'a>(
    env: Env<'a>,
    node: Atom,
    channel: Atom,
    lane: Term<'a>,
    payload: Term<'a>,
) -> NifResult<Term<'a>> {
    let Some(r) = running() else {
        return Ok(not_started(env));
    };
    // (`weft_room' hears the bell; it says so itself at each `admit/0')
    if !r.sink.has_room_watcher() {
        if let Some(room) = env.whereis_pid(atoms::weft_room()) {
            r.sink.set_room_watcher(room);
        }
    }
    let (choice, body, sender) = match send_args(env, lane, payload) {
        Ok(args) => args,
        Err(bad) => return Ok(bad),
    };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (now_ms, draw) = now_and_draw(id);
    let waiter: Waiter = Arc::new(Parked { pid: env.pid(), id });
    let parked = queue(env, node, channel, |node, channel_name| {
        let ticket = (id, now_ms, draw);
        r.transport.park(
            Some(sender),
            node,
            channel_name,
            choice,
            body,
            waiter,
            ticket,
        )
    });
    Ok(match parked {
        Ok(Parking::Parked) => {
            let ticket = ResourceArc::new(Ticket {
                id,
                transport: r.guard,
            });
            (atoms::parked(), ticket, id).encode(env)
        }
        Ok(Parking::Sent) => atoms::ok().encode(env),
        Err(e) => send_result(env, Err(e), channel),
    })
}

/// Send the parked messages that fit now, telling their processes; the
/// caller (`weft_room`) is rung when there may be room for more. Returns
/// `{Sent, Parked, Again}`: how many went, how many still wait, and
/// whether to call again at once.
#[rustler::nif]
fn admit(env: Env) -> Term {
    let Some(r) = running() else {
        return not_started(env);
    };
    r.sink.set_room_watcher(env.pid());
    let channel = atoms::undefined();
    let (sent, left, again) = with_caller(env, || {
        r.transport.admit(ADMIT_MAX, |waiter, result| {
            if let Some(p) = waiter.downcast_ref::<Parked>() {
                let result = send_result(env, result, channel);
                let _ = env.send(&p.pid, (atoms::weft_room(), p.id, result));
            }
        })
    });
    (sent, left, again).encode(env)
}

/// Take a parked message out (see the module documentation).
#[rustler::nif]
fn unpark(env: Env, ticket: ResourceArc<Ticket>) -> Term {
    // (weft stopped, or stopped and started again since: the transport it
    // was parked in is gone, and its parked messages with it)
    let Some(r) = running().filter(|r| r.guard == ticket.transport) else {
        return not_started(env);
    };
    if r.transport.unpark(ticket.id) {
        atoms::cancelled().encode(env)
    } else {
        atoms::sent().encode(env)
    }
}
