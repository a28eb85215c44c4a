//! What a full-mesh view costs the node that takes it, counted in
//! allocations (a counting allocator, per thread, so that tests running
//! alongside do not count): a view costs what it changes, not what it
//! lists. A peer with the cookie may send views of 65,536 members (21 MB
//! here); each member decoded, checked and dropped cost the driver 105-160 ms
//! a view in a release build, and views back to back made real peers
//! declare each other down.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use weft_core::membership::full_mesh::{
    encode, Message, Tombstone, View, MAX_VIEW_DECODES, MAX_VIEW_MEMBERS,
};
use weft_core::{ChannelSpec, Control, LaneKey, Node, NodeSpec, Timing};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn counted() {
    // (not during the thread's teardown)
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: System's allocator, and a thread-local counter that allocates
// nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

fn spec(name: &str, incarnation: u64, port: u16) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        incarnation,
        addrs: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
        channels: vec![ChannelSpec {
            name: "default".into(),
            parallelism: 1,
        }],
        max_frame: 1 << 20,
    }
}

/// A view from `a@h` as its control lane carries it (the full mesh's tag
/// first): `a@h`, then `n - 1` members with 240-byte names, one address
/// and 8 channels (335 bytes each), and `tombstones`.
fn view(n: usize, tombstones: Vec<Tombstone>) -> Control {
    view_of(n, tombstones, |i| {
        let mut s = spec(&format!("m{i:05}@{}", "h".repeat(233)), 9, 9000);
        s.channels = (0..8)
            .map(|c| ChannelSpec {
                name: format!("chan{c}"),
                parallelism: 4,
            })
            .collect();
        s
    })
}

/// A view from `a@h`: `a@h`, then `member(1)` .. `member(n - 1)`.
fn view_of(n: usize, tombstones: Vec<Tombstone>, member: impl Fn(usize) -> NodeSpec) -> Control {
    let mut members = vec![spec("a@h", 5, 1)];
    members.extend((1..n).map(member));
    let m = Message::View {
        view: View {
            members,
            tombstones,
        },
        reply: false,
    };
    Control::Membership([&[1u8][..], &encode(&m)].concat())
}

/// b (up to 1,024 members) takes a view of 65,536 members from a: the
/// first adds 1,023 of them; the same view again adds nothing and
/// allocates next to nothing (a member it has, or has no room for, costs a
/// lookup), also while b holds tombstones (whether a name has one is
/// looked up without a copy of the name). Decoded whole, as before, each
/// view made some 720,000 allocations (11 a member).
#[test]
fn a_view_allocates_for_what_it_changes_not_for_what_it_lists() {
    let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
    b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
        .unwrap();
    let big = view(MAX_VIEW_MEMBERS, vec![]);
    b.on_control(10, "a@h", 1, big.clone());
    assert_eq!(b.peers().count(), 1024);
    while b.poll_action().is_some() {}
    let again = big.clone();
    let n = allocations(|| b.on_control(20, "a@h", 1, again));
    assert!(n < 64, "{n} allocations for a view with nothing new");
    // with a tombstone held
    let gone = Tombstone {
        name: "gone@h".into(),
        incarnation: 3,
        ttl: 60_000,
    };
    b.on_control(30, "a@h", 1, view(1, vec![gone]));
    assert_eq!(b.tombstone_count(), 1);
    while b.poll_action().is_some() {}
    let n = allocations(|| b.on_control(40, "a@h", 1, big));
    assert!(n < 64, "{n} allocations with a tombstone held");
}

/// b with a up, and nothing else to do.
fn b_with_a_up(max_members: usize) -> Node {
    let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1).with_max_members(max_members);
    b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
        .unwrap();
    while b.poll_action().is_some() {}
    b
}

/// Newcomers whose descriptions fail the checks change nothing: a view
/// decodes and checks at most `MAX_VIEW_DECODES` newcomers (65,535 of
/// them with a channel listed twice each made 393,000 allocations, 6 a
/// member; a view of 65,535 with 120 one-byte channels each, 33 MB, cost
/// 1.5 s to 2.3 s in a release build, 100 ms to 120 ms now).
#[test]
fn a_view_decodes_a_bounded_number_of_newcomers() {
    let mut b = b_with_a_up(1024);
    let broken = view_of(MAX_VIEW_MEMBERS, vec![], |i| {
        let mut s = spec(&format!("m{i:05}@h"), 9, 9000);
        s.channels.push(s.channels[0].clone());
        s
    });
    let n = allocations(|| b.on_control(10, "a@h", 1, broken));
    assert!(n < MAX_VIEW_MEMBERS as u64, "{n} allocations");
    assert_eq!(b.peers().count(), 1);
    let logs: Vec<String> = std::iter::from_fn(|| b.poll_action())
        .filter_map(|a| match a {
            weft_core::Action::Log { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    assert!(
        logs.iter()
            .any(|l| l.contains(&format!("{MAX_VIEW_DECODES} invalid member descriptions"))),
        "{logs:?}"
    );
}

/// The newcomers past `MAX_VIEW_DECODES` come with the next views: 3,000
/// valid ones are taken in three.
#[test]
fn newcomers_past_the_decodes_of_a_view_come_with_the_next() {
    let mut b = b_with_a_up(4096);
    let newcomers = view_of(3001, vec![], |i| spec(&format!("m{i:05}@h"), 9, 9000));
    let mut members = vec![];
    let mut logs = vec![];
    for t in [10, 20, 30] {
        b.on_control(t, "a@h", 1, newcomers.clone());
        logs.extend(
            std::iter::from_fn(|| b.poll_action()).filter_map(|a| match a {
                weft_core::Action::Log { text, .. } => Some(text),
                _ => None,
            }),
        );
        members.push(b.peers().count());
    }
    assert_eq!(
        members,
        [1 + MAX_VIEW_DECODES, 1 + 2 * MAX_VIEW_DECODES, 3001]
    );
    // (the log counts the newcomers each view left for later)
    let later: Vec<&String> = logs.iter().filter(|l| l.contains("later views")).collect();
    assert_eq!(later.len(), 2, "{logs:?}");
    assert!(
        later[0].contains("listed 1976 entries of newcomers past the 1024"),
        "{later:?}"
    );
    assert!(later[1].contains("listed 952 entries"), "{later:?}");
}
