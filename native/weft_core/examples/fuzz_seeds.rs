//! Writes the seeds of the `control` and `handshake` fuzz targets
//! (`fuzz/seeds/<target>/`) with the real encoders:
//! `cargo run -p weft_core --example fuzz_seeds` from the repository root.

use std::net::SocketAddr;
use weft_core::membership::full_mesh::{encode, Message, Tombstone, View};
use weft_core::wire::{encode_control, encode_handshake, Control, Handshake, Refusal};
use weft_core::{ChannelSpec, LaneKey, NodeSpec};

fn spec(name: &str, addrs: &[&str], channels: usize) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        incarnation: 0x0123_4567_89ab_cdef,
        addrs: addrs
            .iter()
            .map(|a| a.parse::<SocketAddr>().unwrap())
            .collect(),
        channels: (0..channels)
            .map(|i| ChannelSpec {
                name: format!("ch{i}"),
                parallelism: (i % 4 + 1) as u16,
            })
            .collect(),
        max_frame: 64 << 20,
    }
}

/// Frames as the handshake target reads them: `len: u16 | bytes`, each.
fn frames(fs: &[Vec<u8>]) -> Vec<u8> {
    fs.iter()
        .flat_map(|f| {
            let mut v = (f.len() as u16).to_be_bytes().to_vec();
            v.extend_from_slice(f);
            v
        })
        .collect()
}

fn write(dir: &str, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(format!("{dir}/{name}"), bytes).unwrap();
}

fn main() {
    let a = spec("a@127.0.0.1", &["127.0.0.1:9000", "[::1]:9001"], 3);
    let controls = [
        Control::Heartbeat,
        Control::Membership(encode(&Message::View {
            view: View::default(),
            reply: false,
        })),
        Control::Membership(encode(&Message::View {
            view: View {
                members: vec![a.clone(), spec("b@h", &["10.0.0.2:1"], 0)],
                tombstones: vec![Tombstone {
                    name: "c@h".into(),
                    incarnation: 7,
                    ttl: 600_000,
                }],
            },
            reply: true,
        })),
        Control::Membership(encode(&Message::Digest(0x0123_4567_89ab_cdef))),
    ];
    for (i, c) in controls.iter().enumerate() {
        write(
            "fuzz/seeds/control",
            &format!("seed-{i:03}"),
            &encode_control(c),
        );
    }
    let hello = encode_handshake(&Handshake::Hello { nonce: [1; 32] });
    let challenge = encode_handshake(&Handshake::Challenge { nonce: [2; 32] });
    let auth = encode_handshake(&Handshake::Auth {
        from: a.clone(),
        to: "b@h".into(),
        lane: LaneKey {
            channel: "ch1".into(),
            index: 1,
        },
        proof: [3; 32],
    });
    let welcome = encode_handshake(&Handshake::Welcome {
        from: spec("c@h", &["127.0.0.1:1"], 1),
        proof: [4; 32],
    });
    let refusals = [
        Refusal::Refused,
        Refusal::UnexpectedNode {
            expected: "x@h".into(),
            actual: "y@h".into(),
        },
        Refusal::BadSpec("why".into()),
        Refusal::Version(vec![1, 2]),
    ];
    let mut hs = vec![
        frames(&[hello.clone(), auth.clone()]),
        frames(&[challenge.clone(), welcome]),
        frames(std::slice::from_ref(&hello)),
        frames(&[encode_handshake(&Handshake::Versions(vec![2, 3]))]),
        // the 21 bytes that used to abort the VM, as a body (version 1)
        frames(&[vec![
            0x57, 0x45, 0x46, 0x54, 0, 1, 0, 0xfd, 0, 0, 0, 0, 0, 1, 0, 0,
        ]]),
    ];
    for r in refusals {
        hs.push(frames(&[
            challenge.clone(),
            encode_handshake(&Handshake::Refuse(r)),
        ]));
    }
    for (i, h) in hs.iter().enumerate() {
        write("fuzz/seeds/handshake", &format!("seed-{i:03}"), h);
    }
    println!("wrote fuzz/seeds/control and fuzz/seeds/handshake");
}
