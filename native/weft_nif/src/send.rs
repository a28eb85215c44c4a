//! The send NIF: `weft:forward/4`'s way into the transport
//! (`weft_nif:send/4`, called from `src/weft.erl`).
//!
//! It picks nothing itself: it turns the lane argument into a
//! [`Choice`], the payload (an iovec from `erlang:term_to_iovec/1`) into a
//! [`Body`], copied when small and pinned where it is when large (all the
//! `unsafe` of the send path is in [`body_of`]), and hands both to
//! [`weft_transport::Transport::send`] (routes, then the lane writer), on
//! the calling scheduler. It returns at once: `ok` or `{error, Reason}`.

use crate::{atoms, deliver, not_started, running};
use rustler::{Atom, Binary, Encoder, Env, ListIterator, NifResult, OwnedEnv, Term};
use weft_transport::{Body, Choice, SendError};

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
