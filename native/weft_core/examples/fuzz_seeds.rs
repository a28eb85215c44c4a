//! Writes the seeds of the `control`, `handshake` and `frame_header` fuzz
//! targets (`fuzz/seeds/<target>/`) with the real encoders:
//! `cargo run -p weft_core --example fuzz_seeds` from the repository root.

use std::net::SocketAddr;
use weft_core::frame::encode_header;
use weft_core::membership::full_mesh::{encode, Message, Tombstone, View};
use weft_core::wire::{encode_control, encode_handshake, Control, Handshake, Refusal};
use weft_core::{Capabilities, ChannelSpec, Extensions, FrameKind, LaneKey, NodeSpec};

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
        Control::Stopping,
        Control::Membership(encode(&Message::JoinCheck(0x0123_4567_89ab_cdef))),
        Control::Membership(encode(&Message::JoinConfirmed(u64::MAX))),
    ];
    for (i, c) in controls.iter().enumerate() {
        write(
            "fuzz/seeds/control",
            &format!("seed-{i:03}"),
            &encode_control(c),
        );
    }
    let hello = encode_handshake(&Handshake::Hello {
        nonce: [1; 32],
        versions: vec![3],
        caps: Capabilities::SUPPORTED,
    });
    let challenge = encode_handshake(&Handshake::Challenge {
        nonce: [2; 32],
        version: 3,
    });
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
        caps: Capabilities::SUPPORTED,
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
    // `left`, unsigned and signed (with no valid proof)
    hs.push(frames(&[
        challenge.clone(),
        encode_handshake(&Handshake::Refuse(Refusal::Left)),
    ]));
    hs.push(frames(&[
        challenge.clone(),
        encode_handshake(&Handshake::SignedRefuse {
            refusal: Refusal::Left,
            proof: [5; 32],
        }),
    ]));
    // a hello of protocol 2 (no versions, no capabilities), and one whose
    // versions this node does not speak
    let mut v2 = b"WEFT\x00\x02\x00".to_vec();
    v2.extend_from_slice(&[1; 32]);
    hs.push(frames(&[v2]));
    hs.push(frames(&[encode_handshake(&Handshake::Hello {
        nonce: [1; 32],
        versions: vec![7, 9],
        caps: Capabilities(u64::MAX),
    })]));
    for (i, h) in hs.iter().enumerate() {
        write("fuzz/seeds/handshake", &format!("seed-{i:03}"), h);
    }
    let ext = |f: &dyn Fn(&mut Extensions)| {
        let mut e = Extensions::default();
        f(&mut e);
        e
    };
    let exts = [
        Extensions::default(),
        ext(&|e| e.seq = Some(7)),
        ext(&|e| e.ack = Some(u64::MAX)),
        ext(&|e| e.trace = Some([0xab; 16])),
        ext(&|e| e.origin = Some("a@127.0.0.1".into())),
        ext(&|e| e.destination = Some(format!("{}@h", "d".repeat(200)))),
        ext(&|e| {
            e.seq = Some(1 << 33);
            e.ack = Some(0);
            e.trace = Some([1; 16]);
            e.origin = Some("a@h".into());
            e.destination = Some("b@h".into());
        }),
    ];
    let mut headers: Vec<Vec<u8>> = Vec::new();
    for (i, e) in exts.iter().enumerate() {
        let kind = [FrameKind::Data, FrameKind::Control, FrameKind::Handshake][i % 3];
        headers.push(encode_header(kind, 100 * i, e).unwrap().to_vec());
    }
    // an unknown entry (skipped), an unknown critical one (refused), an
    // extension block longer than its frame, a header format of 1
    headers.push(vec![
        0, 0, 0, 10, 0x81, 0, 7, 0x40, 5, b'c', b'l', b'o', b'c', b'k',
    ]);
    headers.push(vec![0, 0, 0, 6, 0x81, 0, 3, 0x90, 1, 0]);
    headers.push(vec![0, 0, 0, 4, 0x81, 0, 3, 1, 1, 5]);
    headers.push(vec![0, 0, 0, 1, 0x11]);
    for (i, h) in headers.iter().enumerate() {
        write("fuzz/seeds/frame_header", &format!("seed-{i:03}"), h);
    }
    println!("wrote fuzz/seeds/control, fuzz/seeds/handshake and fuzz/seeds/frame_header");
}
