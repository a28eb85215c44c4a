//! `weft-netem`: user-space network emulation for weft's benchmarks (this
//! kernel has no `tc netem`).
//!
//! ```text
//! weft-netem proxy --rtt-ms R [--rate-mbit M] --map LISTEN=TARGET [--map ...]
//!     Forward each LISTEN address to its TARGET, delaying every chunk by R/2
//!     in each direction (order kept) and capping each connection's
//!     direction at M Mbit/s. Prints "ready" once listening; exits when its
//!     standard input closes, so the process that started it cannot leak it.
//! weft-netem limit --rtt-ms R [--rate-mbit M] --clients N --payload BYTES --seconds S [--count C]
//!     Plain TCP echo through the same emulation: prints
//!     "ops_per_sec,p50_ms,p99_ms", the ceiling the network allows.
//!     With --rtt-ms 0, plain loopback without the proxy. With --count, each
//!     client makes C round trips instead of running for S seconds, and
//!     ops_per_sec is all round trips over the time for all to finish.
//! weft-netem accuracy [--rtt-ms R]
//!     How close the emulated round trip is to R with 100-byte messages, and
//!     the proxy's own throughput ceiling (no delay, no cap, 8 MB echoes).
//! ```
//!
//! With `WEFT_NETEM_TRACE=DIR` in its environment, the proxy writes every
//! chunk each direction of each connection reads and writes into `DIR`
//! (`bench/netem_trace.py DIR PORT` reads them: how busy each flow was,
//! per 10 ms, pass by pass).

mod echo;
mod proxy;

use proxy::Link;
use std::net::SocketAddr;
use std::process::exit;
use std::time::Duration;

struct Args {
    rtt_ms: f64,
    rate_mbit: Option<f64>,
    maps: Vec<(SocketAddr, SocketAddr)>,
    clients: usize,
    payload: usize,
    seconds: f64,
    count: u64,
}

fn usage(msg: &str) -> ! {
    eprintln!("weft-netem: {msg}\nusage: weft-netem proxy|limit|accuracy [--rtt-ms R] [--rate-mbit M] [--map L=T] [--clients N] [--payload B] [--seconds S]");
    exit(2)
}

fn parse(args: &[String]) -> Args {
    let mut a = Args {
        rtt_ms: 1.0,
        rate_mbit: None,
        maps: vec![],
        clients: 1,
        payload: 100,
        seconds: 5.0,
        count: 0,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = |v: &str| {
            v.parse::<f64>()
                .unwrap_or_else(|_| usage(&format!("bad number {v}")))
        };
        match flag.as_str() {
            "--rtt-ms" => a.rtt_ms = num(value),
            "--rate-mbit" => a.rate_mbit = Some(num(value)).filter(|r| *r > 0.0),
            "--clients" => a.clients = num(value) as usize,
            "--payload" => a.payload = num(value) as usize,
            "--seconds" => a.seconds = num(value),
            "--count" => a.count = num(value) as u64,
            "--map" => {
                let (l, t) = value
                    .split_once('=')
                    .unwrap_or_else(|| usage("--map takes LISTEN=TARGET"));
                let addr = |s: &str| {
                    s.parse()
                        .unwrap_or_else(|_| usage(&format!("bad address {s}")))
                };
                a.maps.push((addr(l), addr(t)));
            }
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    a
}

fn link(a: &Args) -> Link {
    Link {
        delay: Duration::from_secs_f64(a.rtt_ms / 2000.0),
        rate: a.rate_mbit.map(|m| (m * 1e6 / 8.0) as u64),
    }
}

/// An echo server behind a proxy on loopback; returns the proxy's address.
fn echo_behind_proxy(link: Link) -> SocketAddr {
    let server =
        echo::serve("127.0.0.1:0".parse().unwrap()).unwrap_or_else(|e| usage(&e.to_string()));
    // Bind, note the port, release it, and let the proxy take it.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let front = probe.local_addr().unwrap();
    drop(probe);
    proxy::serve(front, server, link).unwrap_or_else(|e| usage(&e.to_string()));
    front
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        usage("missing command")
    };
    let a = parse(rest);
    match cmd.as_str() {
        "proxy" => {
            if a.maps.is_empty() {
                usage("proxy needs at least one --map");
            }
            for (l, t) in &a.maps {
                proxy::serve(*l, *t, link(&a)).unwrap_or_else(|e| usage(&format!("{l}: {e}")));
            }
            println!("ready");
            // Run until whoever started us closes our standard input.
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        }
        "limit" => {
            // A round trip of 0: plain loopback, no proxy.
            let front = if a.rtt_ms > 0.0 {
                echo_behind_proxy(link(&a))
            } else {
                echo::serve("127.0.0.1:0".parse().unwrap())
                    .unwrap_or_else(|e| usage(&e.to_string()))
            };
            let run = if a.count > 0 {
                echo::run_count(front, a.clients, a.payload, a.count)
            } else {
                echo::run(
                    front,
                    a.clients,
                    a.payload,
                    Duration::from_secs_f64(a.seconds),
                )
            }
            .unwrap_or_else(|e| usage(&e.to_string()));
            println!(
                "{:.2},{:.3},{:.3}",
                run.ops_per_sec(),
                run.quantile_ms(0.5),
                run.quantile_ms(0.99)
            );
        }
        "accuracy" => {
            let front = echo_behind_proxy(link(&a));
            let run = echo::run(front, 1, 100, Duration::from_secs(2))
                .unwrap_or_else(|e| usage(&e.to_string()));
            println!(
                "rtt {:.3} ms emulated: measured p50 {:.3} ms, p99 {:.3} ms (100-byte echo, {} round trips)",
                a.rtt_ms,
                run.quantile_ms(0.5),
                run.quantile_ms(0.99),
                run.ops
            );
            let raw = echo_behind_proxy(Link {
                delay: Duration::ZERO,
                rate: None,
            });
            let run = echo::run(raw, 1, 8 << 20, Duration::from_secs(3))
                .unwrap_or_else(|e| usage(&e.to_string()));
            println!(
                "proxy ceiling: {:.0} MB/s per direction (8 MB echo, no delay, no cap, 1 connection)",
                run.ops_per_sec() * 8.0 * 1.048576
            );
        }
        _ => usage(&format!("unknown command {cmd}")),
    }
}
