//! Small types shared by every part of the core. This module imports
//! nothing from the rest of the crate, so any module may use it without
//! creating an import circle.

/// Milliseconds from an origin the driver chooses (its start, or virtual
/// time zero in the simulator). The core never reads a clock: every entry
/// point takes `now: Millis`.
pub type Millis = u64;

/// Identifies one TCP connection; assigned by the driver.
pub type ConnId = u64;

/// A peer's number inside one node: the peer table hands one out when it
/// adds a peer, and the failure detector keeps its per-peer state in a
/// table indexed by it, so that hot paths (every heartbeat) index an array
/// instead of hashing a name. Numbers are small (they are reused once a
/// forgotten peer's removal has been reported) and mean nothing to other
/// nodes.
pub type PeerId = u32;

/// Severity of a log line the core asks the driver to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Detail for debugging.
    Debug,
    /// Routine events (a lane closed, a dial failed once).
    Info,
    /// Membership changes (node up, down, left).
    Notice,
    /// Something a user should look at (refusals, limits reached).
    Warning,
    /// Something broken.
    Error,
}

/// Why a peer stopped being reachable (`nodedown`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// Its control connection closed or failed.
    ConnectionClosed(String),
    /// Nothing heard from it within the heartbeat timeout.
    HeartbeatTimeout,
    /// It left the cluster.
    Left,
    /// It stopped (`weft:stop/0`) and said so; it stays a member and is
    /// redialed, as after a failure.
    Stopped,
    /// It was removed from the cluster (`leave(Node)`).
    Removed,
    /// A new incarnation of it took its place.
    Restarted,
    /// This node left the cluster (or was removed).
    ThisNodeLeft,
    /// It stayed down longer than `forget_after` and was forgotten.
    Forgotten,
    /// The membership protocol took it out of this node's members (a
    /// protocol written in Erlang, the `callback` overlay).
    Dropped,
}

impl DownReason {
    /// It runs another overlay (or membership protocol) than this node.
    pub fn other_overlay() -> DownReason {
        DownReason::ConnectionClosed("it runs another overlay".into())
    }
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::ConnectionClosed(why) => write!(f, "control connection closed: {why}"),
            DownReason::HeartbeatTimeout => write!(f, "no heartbeat within the timeout"),
            DownReason::Left => write!(f, "left the cluster"),
            DownReason::Stopped => write!(f, "it stopped"),
            DownReason::Removed => write!(f, "removed from the cluster"),
            DownReason::Restarted => write!(f, "restarted (new incarnation)"),
            DownReason::ThisNodeLeft => write!(f, "this node left the cluster"),
            DownReason::Forgotten => write!(f, "down too long; forgotten"),
            DownReason::Dropped => write!(f, "taken out of the members by the membership protocol"),
        }
    }
}

/// Timing of the peer service, in milliseconds.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How often a heartbeat goes to every peer that is up.
    pub heartbeat_interval: u64,
    /// A peer silent for longer than this is down.
    pub heartbeat_timeout: u64,
    /// First wait before a redial; doubles on each failure...
    pub reconnect_min_backoff: u64,
    /// ...up to this.
    pub reconnect_max_backoff: u64,
    /// How often the membership gossips.
    pub gossip_interval: u64,
    /// A member down this long is forgotten (no more redials); `None`: never.
    pub forget_after: Option<u64>,
    /// How long a tombstone keeps a departed incarnation out.
    pub tombstone_ttl: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_interval: 1000,
            heartbeat_timeout: 5000,
            reconnect_min_backoff: 100,
            reconnect_max_backoff: 5000,
            gossip_interval: 1000,
            forget_after: None,
            tombstone_ttl: 600_000,
        }
    }
}

/// A hash map with a fixed, fast hasher: iteration order depends only on
/// what was inserted (the simulator's runs stay reproducible), and short
/// keys such as node names hash in a few nanoseconds. Keys come from
/// authenticated peers only, whose number is bounded (`max_members`).
pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildFastHasher>;

/// Builds [`FastHasher`]s.
pub type BuildFastHasher = std::hash::BuildHasherDefault<FastHasher>;

/// The hasher of rustc ("FxHash": a multiply and a rotate per word), with a
/// SplitMix64 finaliser so that the low bits (which pick the bucket) depend
/// on every byte.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(Self::K);
    }
}

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A node name as a key of the core's per-peer tables (peer table, failure
/// detector, membership): names of up to [`Name::INLINE`] bytes, which is
/// most of them, are held in place, so copying one allocates nothing and
/// comparing one follows no pointer (a table of a thousand peers is looked
/// up for every control message). Longer names live on the heap.
///
/// Equal names always have the same representation, so equality is that of
/// the text; hashing and ordering are those of `str`, so a table keyed by
/// `Name` is looked up with a `&str`.
#[derive(Clone, PartialEq, Eq)]
pub struct Name(Repr);

/// How a [`Name`] holds its text (private: equal names must always get the
/// same representation, so only [`Name::new`] makes one).
#[derive(Clone, PartialEq, Eq)]
enum Repr {
    /// At most [`Name::INLINE`] bytes: the text, then zeros.
    Inline { len: u8, bytes: [u8; Name::INLINE] },
    /// Longer than [`Name::INLINE`] bytes.
    Heap(Box<str>),
}

impl Name {
    /// The longest name held in place (the whole is as large as a `String`).
    pub const INLINE: usize = 22;

    /// The name `s`.
    pub fn new(s: &str) -> Self {
        if s.len() <= Self::INLINE {
            let mut bytes = [0u8; Self::INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Name(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Name(Repr::Heap(s.into()))
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("copied from a str")
            }
            Repr::Heap(s) => s,
        }
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name::new(s)
    }
}

impl From<&Name> for String {
    fn from(n: &Name) -> Self {
        n.as_str().to_string()
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name::new(&s)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short and long names alike: the same text, equality, order, and
    /// lookups by `&str` in a table keyed by `Name`.
    #[test]
    fn names_behave_as_their_text() {
        let texts = [
            "",
            "a@h",
            "n123@h",
            "exactly-22-bytes@hostx",
            "twenty-three-bytes@host",
            "a-much-longer-node-name@some.host.example.com",
        ];
        assert_eq!(texts[3].len(), Name::INLINE);
        let mut map: FastMap<Name, usize> = FastMap::default();
        for (i, t) in texts.iter().enumerate() {
            let n = Name::new(t);
            assert_eq!(n.as_str(), *t);
            assert_eq!(n.to_string(), *t);
            map.insert(n, i);
        }
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(map.get(*t), Some(&i));
            for (j, u) in texts.iter().enumerate() {
                assert_eq!(Name::new(t) == Name::new(u), i == j);
                assert_eq!(Name::new(t).cmp(&Name::new(u)), t.cmp(u));
            }
        }
        assert_eq!(map.get("n124@h"), None);
    }
}
