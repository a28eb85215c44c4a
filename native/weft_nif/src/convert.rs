//! Terms <-> Rust values: the start options, node specs, and `info`.

use crate::messages::name_term;
use rustler::types::LocalPid;
use rustler::{Atom, Encoder, Env, NifResult, Term};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use weft_core::{ChannelSpec, NodeSpec, PeerStatus, Timing};
use weft_transport::{Info, IoMode, LaneState, Overlay, SmallMessages, TransportConfig};

mod atoms {
    rustler::atoms! {
        name, listen_addrs, channels, parallelism, ip, port, incarnation,         send_queue_limit, send_queue_total_limit, drop_oldest, wait, waited, parked, max_members, forget_down_after, infinity,
        refused, refused_connections, queued, waiting, dropped_frames, tombstones,
        node, listen, advertise, affinity, shared_lane, cookie, max_frame_size,
        heartbeat_interval, heartbeat_timeout, reconnect_min_backoff,
        reconnect_max_backoff, gossip_interval, event_pid, io, pollers, schedulers, threads, auto, poll_linger_us, poll_linger_busy_us, thread, scheduler,
        dropped,
        peers, state, up, connecting, down, connected, lane, local, remote,
        queued_frames, queued_bytes, sent_frames, sent_bytes, recv_frames, recv_bytes, recv_waits,
        undefined, protocol, capabilities, overlay, full_mesh, static_ = "static",
        client_server, role, server, client, relayed, callback, cpu_contended,
        receiving, frames, claimed_bytes, claim_limit, small_messages, own, changing,
        large_frame_pool, pool, limit, idle_bytes, in_use_bytes, allocated, reused,
    }
}

/// A proper list's elements (rustler's list decoder panics on an improper
/// list; `enif_get_list_length` refuses one).
fn list(t: Term) -> Option<Vec<Term>> {
    t.list_length().ok()?;
    t.decode::<Vec<Term>>().ok()
}

fn get<'a>(map: Term<'a>, key: Atom) -> Option<Term<'a>> {
    map.map_get(key).ok()
}

/// An integer in range: never truncated (rustler's narrow decoders may
/// wrap; decode wide, then check).
fn int<T: TryFrom<i64>>(t: Term) -> Option<T> {
    T::try_from(t.decode::<i64>().ok()?).ok()
}

fn decode_ip(t: Term) -> Option<IpAddr> {
    let parts = rustler::types::tuple::get_tuple(t).ok()?;
    match parts.len() {
        4 => {
            let o: Vec<u8> = parts.into_iter().map(int).collect::<Option<_>>()?;
            Some(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])))
        }
        8 => {
            let seg: Vec<u16> = parts.into_iter().map(int).collect::<Option<_>>()?;
            let seg: [u16; 8] = seg.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(seg)))
        }
        _ => None,
    }
}

fn decode_addr(t: Term) -> Option<SocketAddr> {
    let (ip, port): (Term, Term) = t.decode().ok()?;
    Some(SocketAddr::new(decode_ip(ip)?, int::<u16>(port)?))
}

fn encode_ip<'a>(env: Env<'a>, ip: IpAddr) -> Term<'a> {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            (o[0], o[1], o[2], o[3]).encode(env)
        }
        IpAddr::V6(v) => {
            let parts: Vec<Term> = v.segments().iter().map(|s| s.encode(env)).collect();
            rustler::types::tuple::make_tuple(env, &parts)
        }
    }
}

/// `#{ip => Ip, port => Port}`, as in `listen_addrs`.
fn addr_map(env: Env, a: SocketAddr) -> Term {
    Term::map_from_pairs(
        env,
        &[
            (atoms::ip(), encode_ip(env, a.ip())),
            (atoms::port(), a.port().encode(env)),
        ],
    )
    .expect("map of distinct keys")
}

/// `{Ip, Port}`.
pub fn ip_port(env: Env, a: SocketAddr) -> Term {
    (encode_ip(env, a.ip()), a.port()).encode(env)
}

fn atom_text(t: Term) -> Option<String> {
    t.atom_to_string().ok()
}

fn ms(map: Term, key: Atom, name: &'static str) -> Result<u64, &'static str> {
    get(map, key).and_then(int::<u64>).ok_or(name)
}

/// A count of milliseconds or `infinity` (`None`).
fn ms_or_infinity(map: Term, key: Atom, name: &'static str) -> Result<Option<u64>, &'static str> {
    match get(map, key) {
        None => Err(name),
        Some(t) if t.decode::<Atom>().ok() == Some(atoms::infinity()) => Ok(None),
        Some(t) => int::<u64>(t).map(Some).ok_or(name),
    }
}

/// The start options as `weft_config` validated them.
/// On error, names the option that did not decode.
pub fn decode_config(opts: Term) -> Result<(TransportConfig, LocalPid), &'static str> {
    let node = get(opts, atoms::node()).and_then(atom_text).ok_or("node")?;
    let listen = get(opts, atoms::listen())
        .and_then(decode_addr)
        .ok_or("listen")?;
    let advertise = match get(opts, atoms::advertise()) {
        None => vec![],
        Some(t) => list(t)
            .and_then(|v| v.into_iter().map(decode_addr).collect::<Option<Vec<_>>>())
            .ok_or("advertise")?,
    };
    let channels = get(opts, atoms::channels())
        .and_then(list)
        .and_then(|v| {
            v.into_iter()
                .map(|x| x.decode::<(Term, Term)>().ok())
                .collect::<Option<Vec<_>>>()
        })
        .and_then(|v| {
            v.into_iter()
                .map(|(n, p)| {
                    Some(ChannelSpec {
                        name: atom_text(n)?,
                        parallelism: int::<u16>(p).filter(|p| (1..=256).contains(p))?,
                    })
                })
                .collect::<Option<Vec<_>>>()
        })
        .filter(|v| v.len() <= weft_core::spec::MAX_CHANNELS)
        .ok_or("channels")?;
    let drop_oldest = match get(opts, atoms::drop_oldest()) {
        None => vec![],
        Some(t) => list(t)
            .and_then(|v| v.into_iter().map(atom_text).collect::<Option<Vec<_>>>())
            .ok_or("drop_oldest")?,
    };
    let wait = match get(opts, atoms::wait()) {
        None => vec![],
        Some(t) => list(t)
            .and_then(|v| v.into_iter().map(atom_text).collect::<Option<Vec<_>>>())
            .ok_or("wait")?,
    };
    let overlay = match get(opts, atoms::overlay()).ok_or("overlay")? {
        o if o.decode::<Atom>().ok() == Some(atoms::full_mesh()) => Overlay::FullMesh,
        // (the module and its arguments stay in Erlang: weft_membership)
        o if o.decode::<Atom>().ok() == Some(atoms::callback()) => Overlay::Callback {
            protocol: String::new(),
        },
        o => {
            let (tag, arg): (Atom, Term) = o.decode().map_err(|_| "overlay")?;
            if tag == atoms::static_() {
                let members = list(arg)
                    .and_then(|v| v.into_iter().map(decode_spec).collect::<Option<Vec<_>>>())
                    .ok_or("overlay")?;
                Overlay::Static(members)
            } else if tag == atoms::callback() {
                // (the module and its arguments stay in Erlang: weft_membership)
                let protocol = arg.atom_to_string().map_err(|_| "overlay")?;
                Overlay::Callback { protocol }
            } else if tag == atoms::client_server() {
                let role = get(arg, atoms::role()).and_then(|r| r.decode::<Atom>().ok());
                match role {
                    Some(r) if r == atoms::server() => Overlay::ClientServer { server: true },
                    Some(r) if r == atoms::client() => Overlay::ClientServer { server: false },
                    _ => return Err("overlay"),
                }
            } else {
                return Err("overlay");
            }
        }
    };
    let affinity = get(opts, atoms::affinity())
        .and_then(|t| t.decode::<bool>().ok())
        .ok_or("affinity")?;
    // (without `share`, a channel's shared lane connects but carries
    // nothing, and `share_wait` has nothing to wait for: see
    // `weft_core::share`)
    let shared_lane = get(opts, atoms::shared_lane())
        .and_then(|t| t.decode::<bool>().ok())
        .ok_or("shared_lane")?;
    let capabilities = if shared_lane {
        weft_core::Capabilities::SUPPORTED
    } else {
        weft_core::Capabilities::SUPPORTED
            .without(weft_core::Capabilities::SHARE)
            .without(weft_core::Capabilities::SHARE_WAIT)
    };
    let cookie = get(opts, atoms::cookie())
        .and_then(|t| t.decode::<rustler::Binary>().ok())
        .map(|b| b.as_slice().to_vec())
        .ok_or("cookie")?;
    let max_frame_size = ms(opts, atoms::max_frame_size(), "max_frame_size")?;
    if !(1..=weft_core::spec::MAX_FRAME_LIMIT).contains(&max_frame_size) {
        return Err("max_frame_size");
    }
    // Every key is required: weft_config fills in the defaults (the only
    // place they live), so a missing key is a bug, not a default.
    let send_queue_limit = get(opts, atoms::send_queue_limit())
        .and_then(int::<u64>)
        .filter(|n| *n > 0)
        .ok_or("send_queue_limit")?;
    let max_members = get(opts, atoms::max_members())
        .and_then(int::<usize>)
        .filter(|n| (1..=65536).contains(n))
        .ok_or("max_members")?;
    let send_queue_total_limit = get(opts, atoms::send_queue_total_limit())
        .and_then(int::<u64>)
        .filter(|n| *n > 0)
        .ok_or("send_queue_total_limit")?;
    let timing = Timing {
        heartbeat_interval: ms(opts, atoms::heartbeat_interval(), "heartbeat_interval")?,
        heartbeat_timeout: ms(opts, atoms::heartbeat_timeout(), "heartbeat_timeout")?,
        reconnect_min_backoff: ms(
            opts,
            atoms::reconnect_min_backoff(),
            "reconnect_min_backoff",
        )?,
        reconnect_max_backoff: ms(
            opts,
            atoms::reconnect_max_backoff(),
            "reconnect_max_backoff",
        )?,
        gossip_interval: ms(opts, atoms::gossip_interval(), "gossip_interval")?,
        forget_after: ms_or_infinity(opts, atoms::forget_down_after(), "forget_down_after")?,
        // Not a user option: the core's own constant.
        ..Timing::default()
    };
    let io = match get(opts, atoms::io()).and_then(|t| t.decode::<Atom>().ok()) {
        Some(a) if a == atoms::auto() => IoMode::Auto,
        Some(a) if a == atoms::schedulers() => IoMode::Schedulers,
        Some(a) if a == atoms::threads() => IoMode::Threads,
        _ => return Err("io"),
    };
    let pollers = get(opts, atoms::pollers())
        .and_then(int::<usize>)
        .filter(|n| (1..=64).contains(n))
        .ok_or("pollers")?;
    let poll_linger = get(opts, atoms::poll_linger_us())
        .and_then(int::<u64>)
        .filter(|us| *us <= 1_000_000)
        .map(std::time::Duration::from_micros)
        .ok_or("poll_linger_us")?;
    let poll_linger_busy = get(opts, atoms::poll_linger_busy_us())
        .and_then(int::<u64>)
        .filter(|us| *us <= 1_000_000)
        .map(std::time::Duration::from_micros)
        .ok_or("poll_linger_busy_us")?;
    let pid = get(opts, atoms::event_pid())
        .and_then(|t| t.decode::<LocalPid>().ok())
        .ok_or("event_pid")?;
    Ok((
        TransportConfig {
            node,
            listen,
            advertise,
            channels,
            overlay,
            affinity,
            cookie,
            capabilities,
            max_frame_size,
            send_queue_limit,
            send_queue_total_limit,
            max_members,
            max_pending_handshakes: weft_transport::MAX_PENDING_HANDSHAKES,
            large_frame_claims: weft_transport::frame_reader::CLAIMS_LIMIT,
            drop_oldest,
            wait,
            timing,
            io,
            pollers,
            poll_linger,
            poll_linger_busy,
            stage: None,
        },
        pid,
    ))
}

/// The `large_frame_pool` option: bytes of idle buffers of received large
/// frames kept for reuse (0 to 2^40).
pub fn large_frame_pool(opts: Term) -> Result<usize, &'static str> {
    get(opts, atoms::large_frame_pool())
        .and_then(int::<usize>)
        .filter(|n| *n <= 1 << 40)
        .ok_or("large_frame_pool")
}

/// `#{name, listen_addrs => [#{ip, port}], channels => [#{name, parallelism}],
/// incarnation, max_frame_size}`.
pub fn encode_spec<'a>(env: Env<'a>, s: &NodeSpec) -> Term<'a> {
    let addrs: Vec<Term> = s.addrs.iter().map(|a| addr_map(env, *a)).collect();
    let channels: Vec<Term> = s
        .channels
        .iter()
        .map(|c| {
            Term::map_from_pairs(
                env,
                &[
                    (atoms::name(), name_term(env, &c.name)),
                    (atoms::parallelism(), c.parallelism.encode(env)),
                ],
            )
            .expect("map of distinct keys")
        })
        .collect();
    Term::map_from_pairs(
        env,
        &[
            (atoms::name(), name_term(env, &s.name)),
            (atoms::listen_addrs(), addrs.encode(env)),
            (atoms::channels(), channels.encode(env)),
            (atoms::incarnation(), s.incarnation.encode(env)),
            (atoms::max_frame_size(), s.max_frame.encode(env)),
        ],
    )
    .expect("map of distinct keys")
}

/// A spec as `node_spec()` returns it; only `name` and `listen_addrs` are
/// needed (the handshake tells the rest). `None` unless it is valid.
pub fn decode_spec(t: Term) -> Option<NodeSpec> {
    let name = get(t, atoms::name()).and_then(atom_text)?;
    let addrs = list(get(t, atoms::listen_addrs())?)?
        .into_iter()
        .map(|a| {
            let ip = decode_ip(get(a, atoms::ip())?)?;
            let port = int::<u16>(get(a, atoms::port())?)?;
            Some(SocketAddr::new(ip, port))
        })
        .collect::<Option<Vec<_>>>()?;
    let channels = match get(t, atoms::channels()) {
        None => vec![],
        Some(c) => list(c)?
            .into_iter()
            .map(|c| {
                Some(ChannelSpec {
                    name: get(c, atoms::name()).and_then(atom_text)?,
                    parallelism: int::<u16>(get(c, atoms::parallelism())?)?,
                })
            })
            .collect::<Option<Vec<_>>>()?,
    };
    // What the user hands us is a contact, not an incarnation: the
    // handshake tells the real one.
    let spec = NodeSpec {
        name,
        incarnation: 0,
        addrs,
        channels,
        max_frame: 0,
    };
    spec.validate(true).ok()?;
    Some(spec)
}

/// The capabilities a lane's connection agreed on, as atoms (none while it
/// is not connected).
fn capability_names(env: Env, n: Option<weft_core::Negotiated>) -> NifResult<Term> {
    let names = n.map(|n| n.caps.names()).unwrap_or_default();
    let atoms = names
        .iter()
        .map(|s| Atom::from_str(env, s))
        .collect::<NifResult<Vec<Atom>>>()?;
    Ok(atoms.encode(env))
}

fn opt_addr(env: Env, a: Option<SocketAddr>) -> Term {
    match a {
        Some(a) => ip_port(env, a),
        None => atoms::undefined().encode(env),
    }
}

fn counts<'a>(env: Env<'a>, pairs: &[(&'static str, u64)]) -> NifResult<Term<'a>> {
    let mut m = Term::map_new(env);
    for (k, v) in pairs {
        m = m.map_put(Atom::from_str(env, k)?, *v)?;
    }
    Ok(m)
}

/// The `weft:info()` map.
pub fn encode_info<'a>(env: Env<'a>, i: &Info) -> NifResult<Term<'a>> {
    let mut peers = Term::map_new(env);
    for p in &i.peers {
        let mut channels = Term::map_new(env);
        let mut names: Vec<&str> = Vec::new();
        for l in &p.lanes {
            if !names.contains(&l.key.channel.as_str()) {
                names.push(&l.key.channel);
            }
        }
        for ch in names {
            let lanes: Vec<Term> = p
                .lanes
                .iter()
                .filter(|l| l.key.channel == ch)
                .map(|l| {
                    let state = match l.state {
                        LaneState::Connected => atoms::connected(),
                        LaneState::Connecting => atoms::connecting(),
                        LaneState::Down => atoms::down(),
                    };
                    Term::map_from_pairs(
                        env,
                        &[
                            (atoms::lane(), l.key.index.encode(env)),
                            (atoms::state(), state.encode(env)),
                            (atoms::local(), opt_addr(env, l.local)),
                            (atoms::remote(), opt_addr(env, l.remote)),
                            (atoms::queued_frames(), l.queued_frames.encode(env)),
                            (atoms::queued_bytes(), l.queued_bytes.encode(env)),
                            (atoms::sent_frames(), l.sent_frames.encode(env)),
                            (atoms::sent_bytes(), l.sent_bytes.encode(env)),
                            (atoms::recv_frames(), l.recv_frames.encode(env)),
                            (atoms::recv_bytes(), l.recv_bytes.encode(env)),
                            (atoms::recv_waits(), l.recv_waits.encode(env)),
                            (atoms::dropped_frames(), l.dropped_frames.encode(env)),
                            (
                                atoms::io(),
                                if l.on_thread {
                                    atoms::thread()
                                } else {
                                    atoms::scheduler()
                                }
                                .encode(env),
                            ),
                            (
                                atoms::protocol(),
                                match l.negotiated {
                                    Some(n) => n.version.encode(env),
                                    None => atoms::undefined().encode(env),
                                },
                            ),
                            (atoms::capabilities(), capability_names(env, l.negotiated)?),
                            (atoms::shared_lane(), l.shared_lane.encode(env)),
                            (
                                atoms::small_messages(),
                                match l.small_messages {
                                    SmallMessages::Own => atoms::own(),
                                    SmallMessages::SharedLane => atoms::shared_lane(),
                                    SmallMessages::Changing => atoms::changing(),
                                }
                                .encode(env),
                            ),
                        ],
                    )
                })
                .collect::<NifResult<_>>()?;
            channels = channels.map_put(name_term(env, ch), lanes)?;
        }
        let status = match p.status {
            PeerStatus::Up => atoms::up(),
            PeerStatus::Connecting => atoms::connecting(),
            PeerStatus::Down => atoms::down(),
        };
        let max_frame = match p.max_frame {
            Some(m) => m.encode(env),
            None => atoms::undefined().encode(env),
        };
        let peer = Term::map_from_pairs(
            env,
            &[
                (atoms::state(), status.encode(env)),
                (atoms::incarnation(), p.incarnation.encode(env)),
                (atoms::queued_bytes(), p.queued_bytes.encode(env)),
                (atoms::waiting(), p.waiting.encode(env)),
                (atoms::max_frame_size(), max_frame),
                (atoms::channels(), channels),
            ],
        )?;
        // One odd entry never breaks the whole map.
        peers = peers.map_put(name_term(env, &p.name), peer)?;
    }
    let addrs: Vec<Term> = i.listen_addrs.iter().map(|a| addr_map(env, *a)).collect();
    let queue = Term::map_from_pairs(
        env,
        &[
            (atoms::queued_bytes(), i.queued_bytes),
            (atoms::send_queue_limit(), i.send_queue_limit),
            (atoms::send_queue_total_limit(), i.send_queue_total_limit),
            (atoms::waited(), i.waited),
            (atoms::parked(), i.parked),
        ],
    )?;
    let receiving = Term::map_from_pairs(
        env,
        &[
            (atoms::frames(), i.receiving_frames),
            (atoms::claimed_bytes(), i.receiving_claimed),
            (atoms::claim_limit(), i.receiving_claim_limit),
        ],
    )?;
    let p = crate::messages::RECV_POOL.stats();
    let pool = Term::map_from_pairs(
        env,
        &[
            (atoms::limit(), crate::messages::RECV_POOL.limit() as u64),
            (atoms::idle_bytes(), p.idle_bytes),
            (atoms::in_use_bytes(), p.in_use_bytes),
            (atoms::allocated(), p.allocated),
            (atoms::reused(), p.reused),
        ],
    )?;
    let receiving = receiving.map_put(atoms::pool().encode(env), pool)?;
    Term::map_from_pairs(
        env,
        &[
            (atoms::node(), name_term(env, &i.node)),
            (atoms::incarnation(), i.incarnation.encode(env)),
            (atoms::listen_addrs(), addrs.encode(env)),
            (atoms::dropped(), counts(env, &i.dropped)?),
            (atoms::refused(), counts(env, &i.refused)?),
            (
                atoms::refused_connections(),
                counts(env, &i.refused_connections)?,
            ),
            (atoms::queued(), queue),
            (atoms::receiving(), receiving),
            (atoms::tombstones(), i.tombstones.encode(env)),
            (atoms::relayed(), i.relayed.encode(env)),
            (atoms::overlay(), name_term(env, i.overlay)),
            (
                atoms::cpu_contended(),
                match i.cpu_contended {
                    Some(c) => c.encode(env),
                    None => atoms::undefined().encode(env),
                },
            ),
            (atoms::peers(), peers),
        ],
    )
}
