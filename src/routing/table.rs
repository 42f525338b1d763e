//! The binding table of one exchange, for the four built-in exchange types.
//!
//! # What it owns
//! [`BindingTable`] owns every binding whose source is one exchange: the
//! binding identity `(destination, routing key, arguments)` — RabbitMQ's
//! identity for all exchange types, the source being implied — and a routing
//! index chosen by the exchange type. It does not own exchanges, queues or
//! locking; destinations are the caller's ids `D` (queue or exchange).
//!
//! # Data structures
//! * Registry (all kinds): each bound destination gets a small dense *slot*
//!   number (`slot_of`, slots reused through a free list). A slot keeps the
//!   destination's bindings as `routing key → [arguments]`, so identity
//!   checks, [`BindingTable::remove_destination`] (queue deletion) and
//!   listing touch only that destination's bindings.
//! * Routing index, per kind, holding each destination at most once per
//!   "place" so routes need no or cheap deduplication:
//!   - direct: `routing key → destinations` hash map: one lookup per publish;
//!   - fanout: the vector of bound destinations: routing is one memcpy;
//!   - topic: a [`TopicTrie`] holding `(destination, slot)` once per distinct
//!     `(destination, key)`;
//!   - headers: the vector of bindings with pre-parsed `x-match`, evaluated
//!     one by one as RabbitMQ does (no index exists for arbitrary typed
//!     conditions).
//!   - consistent hash: a [`Ring`] of the destinations weighted by their
//!     binding keys, rebuilt when bindings change; one binary search per
//!     publish (see [`super::consistent_hash`]).
//! * Deduplication in `route` (topic, headers): a destination matched by
//!   several bindings is emitted once, using a bitset over slot numbers that
//!   lives on the stack ([`SEEN_SLOTS_MAX`] bits); a destination whose slot
//!   is beyond it (tables with more destinations than that) falls back to a
//!   linear check of what this call already emitted. No heap allocation in
//!   `route` as long as `out` has spare capacity.
//!
//! Binding arguments compare as RabbitMQ stores them: stable-sorted by key
//! (`rabbit_binding.erl` `sort_args/1`), values with their types, so the
//! same arguments in another order are the same binding.

use crate::routing::FastMap;
use std::hash::Hash;

use crate::ids::ExchangeKind;

use super::consistent_hash::{HashOn, Ring};
use super::headers::{headers_match, parse_x_match, XMatch};
use super::topic::TopicTrie;
use crate::amqp::field::{FieldTable, ShortStr};
use crate::message::RouteProperties;

pub use super::headers::BindError;

/// Destinations whose slot is below this are deduplicated in `route` with a
/// stack bitset (512 bytes); beyond it with a linear scan of the output.
pub const SEEN_SLOTS_MAX: usize = 4096;
const SEEN_WORDS: usize = SEEN_SLOTS_MAX / 64;
/// Tables with at most this many slots use a 4-word (32-byte) bitset, so
/// the common small table does not clear 512 bytes per publish.
const SEEN_SLOTS_SMALL: usize = 256;
const _: () = assert!(SEEN_SLOTS_MAX % 64 == 0 && SEEN_SLOTS_SMALL % 64 == 0);
const _: () = assert!(SEEN_SLOTS_SMALL <= SEEN_SLOTS_MAX);

/// A destination with its slot, as stored in the topic and headers indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target<D> {
    dest: D,
    slot: u32,
}

#[derive(Debug, Clone)]
struct HeadersBinding<D> {
    target: Target<D>,
    x_match: XMatch,
    args: FieldTable,
}

#[derive(Debug, Clone)]
enum Index<D> {
    Direct(FastMap<ShortStr, Vec<D>>),
    Fanout(Vec<D>),
    Topic(TopicTrie<Target<D>>),
    Headers(Vec<HeadersBinding<D>>),
    ConsistentHash(Box<Ring<D>>),
}

#[derive(Debug, Clone)]
struct Slot<D> {
    dest: D,
    /// This destination's bindings: routing key → arguments of each binding.
    keys: FastMap<ShortStr, Vec<FieldTable>>,
    /// Number of bindings of this destination (sum of the `keys` lists).
    count: usize,
}

/// Bindings of one exchange to destinations `D` (the caller's id type:
/// queue or exchange). See the module docs for the layout.
#[derive(Debug, Clone)]
pub struct BindingTable<D> {
    kind: ExchangeKind,
    /// Registry by slot number; `None` for a free slot. No trailing `None`.
    slots: Vec<Option<Slot<D>>>,
    /// Free slot numbers below `slots.len()`, reused last-freed first.
    free_slots: Vec<u32>,
    /// Slot of each bound destination.
    slot_of: FastMap<D, u32>,
    index: Index<D>,
    /// Number of bindings.
    len: usize,
}

impl<D: Copy + Eq + Hash + std::fmt::Debug> BindingTable<D> {
    pub fn new(kind: ExchangeKind) -> Self {
        Self::with_index(kind, HashOn::RoutingKey)
    }

    /// The table of an exchange declared with `arguments`; the error is the
    /// 406 text for arguments this kind refuses (consistent hash:
    /// `hash-header`, `hash-property`).
    pub fn for_exchange(kind: ExchangeKind, arguments: &FieldTable) -> Result<Self, String> {
        let hash_on = match kind {
            ExchangeKind::ConsistentHash => HashOn::parse(arguments)?,
            _ => HashOn::RoutingKey,
        };
        Ok(Self::with_index(kind, hash_on))
    }

    fn with_index(kind: ExchangeKind, hash_on: HashOn) -> Self {
        let index = match kind {
            ExchangeKind::Direct => Index::Direct(FastMap::default()),
            ExchangeKind::Fanout => Index::Fanout(Vec::new()),
            ExchangeKind::Topic => Index::Topic(TopicTrie::new()),
            ExchangeKind::Headers => Index::Headers(Vec::new()),
            ExchangeKind::ConsistentHash => Index::ConsistentHash(Box::new(Ring::new(hash_on))),
            // Callers build a delayed exchange's table for its delayed type
            // (`routing::delayed::table_kind`); this arm is never taken.
            ExchangeKind::DelayedMessage => Index::Direct(FastMap::default()),
        };
        BindingTable {
            kind,
            slots: Vec::new(),
            free_slots: Vec::new(),
            slot_of: FastMap::default(),
            index,
            len: 0,
        }
    }

    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// Checks a binding as RabbitMQ's `validate_binding` would, without
    /// adding it: only headers exchanges check anything (`x-match`).
    pub fn validate(&self, args: &FieldTable) -> Result<(), BindError> {
        match self.kind {
            ExchangeKind::Headers => parse_x_match(args).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// Adds a binding; `Ok(false)` if an identical one exists. Identity is
    /// RabbitMQ's for every exchange type: (destination, routing key,
    /// arguments), the source being this exchange; arguments compare after
    /// a stable sort by key. `Err` (headers: invalid `x-match`; consistent
    /// hash: a key that is no weight) carries RabbitMQ's 406 text, and
    /// nothing is added.
    pub fn bind(&mut self, dest: D, routing_key: &ShortStr, args: &FieldTable) -> Result<bool, BindError> {
        let x_match = match self.kind {
            ExchangeKind::Headers => Some(parse_x_match(args)?),
            _ => None,
        };
        let weight = match &self.index {
            Index::ConsistentHash(ring) => ring.check_bind(dest, routing_key.as_bytes())?,
            _ => 0,
        };
        if self.find(dest, routing_key, args).is_some() {
            return Ok(false);
        }
        let (slot, new_dest) = match self.slot_of.get(&dest) {
            Some(&slot) => (slot, false),
            None => (self.alloc_slot(dest), true),
        };
        let entry = self.slot_mut(slot);
        let list = entry.keys.entry(routing_key.clone()).or_default();
        let new_key = list.is_empty();
        list.push(args.clone());
        entry.count += 1;
        self.len += 1;

        let target = Target { dest, slot };
        match &mut self.index {
            Index::Direct(map) => {
                if new_key {
                    map.entry(routing_key.clone()).or_default().push(dest);
                }
            }
            Index::Fanout(dests) => {
                if new_dest {
                    dests.push(dest);
                }
            }
            Index::Topic(trie) => {
                if new_key {
                    trie.insert(routing_key.as_bytes(), target);
                }
            }
            Index::Headers(bindings) => bindings.push(HeadersBinding {
                target,
                x_match: x_match.unwrap_or(XMatch::All),
                args: args.clone(),
            }),
            Index::ConsistentHash(ring) => ring.bind(dest, weight),
        }
        Ok(true)
    }

    /// Removes one binding; false if absent.
    pub fn unbind(&mut self, dest: D, routing_key: &ShortStr, args: &FieldTable) -> bool {
        let Some((slot, pos)) = self.find(dest, routing_key, args) else {
            return false;
        };
        let entry = self.slot_mut(slot);
        let list =
            entry.keys.get_mut(routing_key.as_bytes()).expect("find() returned a binding under this key");
        let removed_args = list.swap_remove(pos);
        let key_gone = list.is_empty();
        if key_gone {
            entry.keys.remove(routing_key.as_bytes());
        }
        entry.count -= 1;
        let dest_gone = entry.count == 0;
        self.len -= 1;

        let target = Target { dest, slot };
        match &mut self.index {
            Index::Direct(map) => {
                if key_gone {
                    remove_from_direct(map, routing_key, dest);
                }
            }
            Index::Fanout(dests) => {
                if dest_gone {
                    dests.retain(|d| *d != dest);
                }
            }
            Index::Topic(trie) => {
                if key_gone {
                    trie.remove(routing_key.as_bytes(), target);
                }
            }
            Index::Headers(bindings) => {
                // Any entry of this destination with equivalent arguments
                // routes identically, whatever its routing key.
                if let Some(i) = bindings
                    .iter()
                    .position(|b| b.target == target && args_equivalent(&b.args, &removed_args))
                {
                    bindings.swap_remove(i);
                }
            }
            Index::ConsistentHash(ring) => ring.unbind(dest, routing_key.as_bytes()),
        }
        if dest_gone {
            self.free_slot(dest, slot);
        }
        true
    }

    /// Removes every binding to `dest`; returns how many.
    pub fn remove_destination(&mut self, dest: D) -> usize {
        let Some(&slot) = self.slot_of.get(&dest) else {
            return 0;
        };
        let Some(entry) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return 0;
        };
        let target = Target { dest, slot };
        match &mut self.index {
            Index::Direct(map) => {
                for key in entry.keys.keys() {
                    remove_from_direct(map, key, dest);
                }
            }
            Index::Fanout(dests) => dests.retain(|d| *d != dest),
            Index::Topic(trie) => {
                for key in entry.keys.keys() {
                    trie.remove(key.as_bytes(), target);
                }
            }
            Index::Headers(bindings) => bindings.retain(|b| b.target != target),
            Index::ConsistentHash(ring) => ring.remove_destination(dest),
        }
        self.len -= entry.count;
        self.free_slot(dest, slot);
        entry.count
    }

    /// Appends each matching destination once to `out`, even when several
    /// of its bindings match. No allocation when `out` has spare capacity.
    ///
    /// `properties` are only decoded by headers exchanges with bindings and
    /// consistent-hash exchanges hashing a header or property;
    /// `routing_key` is ignored by fanout and headers exchanges.
    /// Deduplication covers what this call appends, not what `out` held before.
    pub fn route(&self, routing_key: &[u8], properties: &RouteProperties<'_>, out: &mut Vec<D>) {
        match &self.index {
            Index::Direct(map) => {
                if let Some(dests) = map.get(routing_key) {
                    out.extend_from_slice(dests);
                }
            }
            Index::Fanout(dests) => out.extend_from_slice(dests),
            Index::Topic(trie) => {
                if self.slots.len() <= SEEN_SLOTS_SMALL {
                    let mut c = Collector::<D, { SEEN_SLOTS_SMALL / 64 }>::new(out);
                    trie.route(routing_key, |t| c.push(t));
                } else {
                    let mut c = Collector::<D, SEEN_WORDS>::new(out);
                    trie.route(routing_key, |t| c.push(t));
                }
            }
            Index::Headers(bindings) if bindings.is_empty() => {}
            Index::Headers(bindings) => {
                let headers = properties.get().and_then(|p| p.headers.as_ref());
                if self.slots.len() <= SEEN_SLOTS_SMALL {
                    let mut c = Collector::<D, { SEEN_SLOTS_SMALL / 64 }>::new(out);
                    route_headers(bindings, headers, &mut c);
                } else {
                    let mut c = Collector::<D, SEEN_WORDS>::new(out);
                    route_headers(bindings, headers, &mut c);
                }
            }
            Index::ConsistentHash(ring) => out.extend(ring.route(routing_key, properties)),
        }
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of distinct destinations bound.
    pub fn destination_count(&self) -> usize {
        self.slot_of.len()
    }

    pub fn has_destination(&self, dest: D) -> bool {
        self.slot_of.contains_key(&dest)
    }

    /// Every binding as (destination, routing key, arguments), in no
    /// particular order; arguments as first given to `bind`.
    pub fn bindings(&self) -> impl Iterator<Item = (D, &ShortStr, &FieldTable)> {
        self.slots.iter().flatten().flat_map(|slot| {
            slot.keys.iter().flat_map(move |(key, list)| list.iter().map(move |args| (slot.dest, key, args)))
        })
    }

    /// (slot, position in the key's argument list) of an existing binding.
    fn find(&self, dest: D, routing_key: &ShortStr, args: &FieldTable) -> Option<(u32, usize)> {
        let &slot = self.slot_of.get(&dest)?;
        let entry = self.slots.get(slot as usize)?.as_ref()?;
        let list = entry.keys.get(routing_key.as_bytes())?;
        let pos = list.iter().position(|a| args_equivalent(a, args))?;
        Some((slot, pos))
    }

    /// The live slot of a bound destination (our invariant: `slot_of` and
    /// `slots` agree).
    fn slot_mut(&mut self, slot: u32) -> &mut Slot<D> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut).expect("slot_of points at a live slot")
    }

    fn alloc_slot(&mut self, dest: D) -> u32 {
        let entry = Slot { dest, keys: FastMap::default(), count: 0 };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                let free = self.slots.get_mut(slot as usize).expect("free slots are in range");
                assert!(free.is_none(), "free slot is empty");
                *free = Some(entry);
                slot
            }
            None => {
                // One slot per bound destination: memory runs out first.
                let slot = u32::try_from(self.slots.len()).expect("slot ids fit in u32");
                self.slots.push(Some(entry));
                slot
            }
        };
        self.slot_of.insert(dest, slot);
        slot
    }

    fn free_slot(&mut self, dest: D, slot: u32) {
        self.slot_of.remove(&dest);
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = None;
        }
        // Trailing free slots shrink the table so the small bitset keeps
        // applying after churn; others are reused lowest-last.
        if slot as usize + 1 == self.slots.len() {
            self.slots.pop();
            while let Some(None) = self.slots.last() {
                self.slots.pop();
            }
            let live = self.slots.len();
            self.free_slots.retain(|&s| (s as usize) < live);
        } else {
            self.free_slots.push(slot);
        }
    }
}

fn remove_from_direct<D: Copy + Eq>(map: &mut FastMap<ShortStr, Vec<D>>, key: &ShortStr, dest: D) {
    if let Some(dests) = map.get_mut(key.as_bytes()) {
        if let Some(i) = dests.iter().position(|d| *d == dest) {
            dests.swap_remove(i);
        }
        if dests.is_empty() {
            map.remove(key.as_bytes());
        }
    }
}

fn route_headers<D: Copy + Eq, const W: usize>(
    bindings: &[HeadersBinding<D>],
    headers: Option<&FieldTable>,
    c: &mut Collector<'_, D, W>,
) {
    for b in bindings {
        if !c.seen(b.target) && headers_match(&b.args, b.x_match, headers) {
            c.push(b.target);
        }
    }
}

/// Same arguments up to a stable sort by key (RabbitMQ sorts binding
/// arguments with `lists:keysort/2` before storing them).
fn args_equivalent(a: &FieldTable, b: &FieldTable) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a == b {
        return true;
    }
    let mut xs: Vec<_> = a.iter().collect();
    let mut ys: Vec<_> = b.iter().collect();
    xs.sort_by(|p, q| p.0.as_bytes().cmp(q.0.as_bytes()));
    ys.sort_by(|p, q| p.0.as_bytes().cmp(q.0.as_bytes()));
    xs == ys
}

/// Appends destinations to `out`, each once per route call. `W` words of
/// stack bitset cover slots `0..W*64`; higher slots use a linear check.
struct Collector<'a, D, const W: usize> {
    out: &'a mut Vec<D>,
    base: usize,
    seen: [u64; W],
}

impl<'a, D: Copy + Eq, const W: usize> Collector<'a, D, W> {
    fn new(out: &'a mut Vec<D>) -> Self {
        let base = out.len();
        Collector { out, base, seen: [0; W] }
    }

    #[inline]
    fn seen(&self, t: Target<D>) -> bool {
        let slot = t.slot as usize;
        match self.seen.get(slot / 64) {
            Some(word) => word & (1 << (slot % 64)) != 0,
            None => self.emitted(t.dest),
        }
    }

    #[inline]
    fn push(&mut self, t: Target<D>) {
        let slot = t.slot as usize;
        match self.seen.get_mut(slot / 64) {
            Some(word) => {
                let bit = 1 << (slot % 64);
                if *word & bit != 0 {
                    return;
                }
                *word |= bit;
            }
            None => {
                if self.emitted(t.dest) {
                    return;
                }
            }
        }
        self.out.push(t.dest);
    }

    /// Slow path for slots beyond the bitset: only in tables with more than
    /// `W * 64` destinations.
    #[cold]
    fn emitted(&self, dest: D) -> bool {
        self.out[self.base..].contains(&dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field::{FieldValue, LongStr};
    use crate::amqp::properties::BasicProperties;
    use crate::message::encoded_header as encoded;

    fn k(s: &str) -> ShortStr {
        ShortStr::copy_from_str(s)
    }

    fn args(entries: &[(&str, FieldValue)]) -> FieldTable {
        let mut t = FieldTable::new();
        for (key, v) in entries {
            t.insert(k(key), v.clone());
        }
        t
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::LongStr(LongStr::copy_from_str(v))
    }

    fn none() -> FieldTable {
        FieldTable::new()
    }

    fn route(t: &BindingTable<u32>, key: &str, headers: Option<&FieldTable>) -> Vec<u32> {
        let mut out = Vec::new();
        let header =
            encoded(headers.map(|h| BasicProperties { headers: Some(h.clone()), ..Default::default() }));
        t.route(key.as_bytes(), &RouteProperties::new(&header), &mut out);
        let n = out.len();
        out.sort_unstable();
        out.dedup();
        assert_eq!(out.len(), n, "route emitted a duplicate");
        out
    }

    fn bind(t: &mut BindingTable<u32>, dest: u32, key: &str, a: &FieldTable) -> bool {
        t.bind(dest, &k(key), a).expect("valid binding")
    }

    #[test]
    fn exchange_kind_names() {
        for name in ["direct", "fanout", "topic", "headers"] {
            let kind = ExchangeKind::parse(name.as_bytes()).expect("built-in type");
            assert_eq!(kind.as_str(), name);
        }
        assert_eq!(ExchangeKind::parse(b"Direct"), None);
        for name in ["x-consistent-hash", "x-delayed-message"] {
            let kind = ExchangeKind::parse(name.as_bytes()).expect("built-in plugin type");
            assert_eq!(kind.as_str(), name);
        }
        assert_eq!(ExchangeKind::parse(b"x-random"), None);
    }

    #[test]
    fn direct_exact_key_and_identity() {
        let mut t = BindingTable::new(ExchangeKind::Direct);
        assert!(bind(&mut t, 1, "a", &none()));
        assert!(!bind(&mut t, 1, "a", &none()), "identical binding");
        assert!(bind(&mut t, 1, "b", &none()));
        assert!(bind(&mut t, 2, "a", &none()));
        assert!(bind(&mut t, 3, "", &none()));
        assert_eq!(t.len(), 4);
        assert_eq!(route(&t, "a", None), vec![1, 2]);
        assert_eq!(route(&t, "", None), vec![3]);
        assert_eq!(route(&t, "A", None), Vec::<u32>::new());
        assert_eq!(route(&t, "a.b", None), Vec::<u32>::new());
        assert!(t.unbind(1, &k("a"), &none()));
        assert!(!t.unbind(1, &k("a"), &none()));
        assert_eq!(route(&t, "a", None), vec![2]);
        assert_eq!(route(&t, "b", None), vec![1]);
        let header = encoded(None);
        let properties = RouteProperties::new(&header);
        t.route(b"a", &properties, &mut Vec::new());
        assert!(!properties.were_read(), "a direct exchange never decodes the properties");
    }

    #[test]
    fn arguments_are_part_of_identity_for_every_kind() {
        for kind in [ExchangeKind::Direct, ExchangeKind::Fanout, ExchangeKind::Topic] {
            let mut t = BindingTable::new(kind);
            let a1 = args(&[("p", s("1")), ("q", FieldValue::I32(2))]);
            let a1_reordered = args(&[("q", FieldValue::I32(2)), ("p", s("1"))]);
            let a2 = args(&[("p", s("1")), ("q", FieldValue::I64(2))]);
            assert!(bind(&mut t, 7, "k", &a1));
            assert!(!bind(&mut t, 7, "k", &a1_reordered), "{kind:?}: order-insensitive");
            assert!(bind(&mut t, 7, "k", &a2), "{kind:?}: value types count");
            assert!(bind(&mut t, 7, "k", &none()));
            assert_eq!(t.len(), 3);
            assert_eq!(route(&t, "k", None), vec![7], "{kind:?}: routed once");
            assert!(t.unbind(7, &k("k"), &a1_reordered));
            assert!(t.unbind(7, &k("k"), &none()));
            assert_eq!(route(&t, "k", None), vec![7], "{kind:?}: one binding left");
            assert!(t.unbind(7, &k("k"), &a2));
            assert_eq!(route(&t, "k", None), Vec::<u32>::new());
            assert!(t.is_empty());
            assert!(!t.has_destination(7));
        }
    }

    #[test]
    fn fanout_ignores_key_and_dedups_multi_key_dest() {
        let mut t = BindingTable::new(ExchangeKind::Fanout);
        assert!(bind(&mut t, 1, "x", &none()));
        assert!(bind(&mut t, 1, "y", &none()));
        assert!(bind(&mut t, 2, "", &none()));
        assert_eq!(route(&t, "whatever", None), vec![1, 2]);
        assert!(t.unbind(1, &k("x"), &none()));
        assert_eq!(route(&t, "", None), vec![1, 2]);
        assert_eq!(t.remove_destination(1), 1);
        assert_eq!(route(&t, "", None), vec![2]);
        assert_eq!(t.remove_destination(1), 0);
    }

    #[test]
    fn topic_dedups_and_unbinds_one_of_several() {
        let mut t = BindingTable::new(ExchangeKind::Topic);
        for p in ["a.*", "a.#", "#", "#.#", "*.b"] {
            assert!(bind(&mut t, 1, p, &none()));
        }
        assert!(bind(&mut t, 2, "a.b", &none()));
        assert!(bind(&mut t, 3, "a.b", &none()));
        assert_eq!(route(&t, "a.b", None), vec![1, 2, 3]);
        // Unbinding one of several identical-key bindings leaves the others.
        assert!(t.unbind(2, &k("a.b"), &none()));
        assert_eq!(route(&t, "a.b", None), vec![1, 3]);
        // `#` and `#.#` share a trie node: removing one keeps the other.
        assert!(t.unbind(1, &k("#"), &none()));
        assert_eq!(route(&t, "", None), vec![1]);
        assert!(t.unbind(1, &k("#.#"), &none()));
        assert_eq!(route(&t, "", None), Vec::<u32>::new());
        assert_eq!(route(&t, "x.b", None), vec![1]);
        assert_eq!(t.remove_destination(1), 3);
        assert_eq!(route(&t, "a.b", None), vec![3]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn topic_edge_cases_through_the_table() {
        // Split rules of rabbit_db_topic_exchange.erl: "" is zero words,
        // empty words are words; `*` needs exactly one (possibly empty) word.
        let mut t = BindingTable::new(ExchangeKind::Topic);
        let patterns = ["#", "#.#", "a.#.b", "*.*", "", "*", "a..b", ".a", "a."];
        for (i, p) in patterns.iter().enumerate() {
            assert!(bind(&mut t, i as u32, p, &none()));
        }
        assert_eq!(route(&t, "", None), vec![0, 1, 4]);
        assert_eq!(route(&t, "a", None), vec![0, 1, 5]);
        assert_eq!(route(&t, "a.b", None), vec![0, 1, 2, 3]);
        assert_eq!(route(&t, "a.x.y.b", None), vec![0, 1, 2]);
        assert_eq!(route(&t, "a..b", None), vec![0, 1, 2, 6]);
        assert_eq!(route(&t, ".a", None), vec![0, 1, 3, 7]);
        assert_eq!(route(&t, "a.", None), vec![0, 1, 3, 8]);
        assert_eq!(route(&t, ".", None), vec![0, 1, 3]);
        let long = "x".repeat(255);
        assert!(bind(&mut t, 99, &long, &none()));
        assert_eq!(route(&t, &long, None), vec![0, 1, 5, 99]);
    }

    #[test]
    fn headers_binding_validation_and_routing() {
        let mut t = BindingTable::new(ExchangeKind::Headers);
        let header = encoded(None);
        let properties = RouteProperties::new(&header);
        t.route(b"", &properties, &mut Vec::new());
        assert!(!properties.were_read(), "no bindings, nothing to decode");
        let bad = args(&[("x-match", s("some"))]);
        let err = t.bind(1, &k(""), &bad).expect_err("invalid x-match");
        assert_eq!(err.reply_code(), 406);
        assert_eq!(t.validate(&bad), Err(err));
        assert!(t.is_empty() && !t.has_destination(1));

        let all = args(&[("x-match", s("all")), ("a", s("1")), ("b", s("2"))]);
        let any = args(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]);
        assert!(bind(&mut t, 1, "", &all));
        assert!(bind(&mut t, 2, "", &any));
        assert!(bind(&mut t, 2, "other-key", &any), "key is part of identity");
        assert!(bind(&mut t, 3, "", &none()), "no conditions: matches all");
        let h = args(&[("a", s("1"))]);
        assert_eq!(route(&t, "ignored", Some(&h)), vec![2, 3]);
        let h = args(&[("a", s("1")), ("b", s("2"))]);
        assert_eq!(route(&t, "", Some(&h)), vec![1, 2, 3]);
        assert_eq!(route(&t, "", None), vec![3]);
        assert!(t.unbind(2, &k(""), &any));
        assert_eq!(route(&t, "", Some(&h)), vec![1, 2, 3]);
        assert!(t.unbind(2, &k("other-key"), &any));
        assert_eq!(route(&t, "", Some(&h)), vec![1, 3]);
        // Non-headers exchanges accept any arguments.
        let mut d = BindingTable::<u32>::new(ExchangeKind::Direct);
        assert_eq!(d.bind(1, &k(""), &bad), Ok(true));
    }

    #[test]
    fn bindings_listing_and_destination_queries() {
        let mut t = BindingTable::new(ExchangeKind::Topic);
        let a = args(&[("z", FieldValue::Bool(true))]);
        assert!(bind(&mut t, 1, "a.*", &none()));
        assert!(bind(&mut t, 1, "a.*", &a));
        assert!(bind(&mut t, 2, "#", &none()));
        let mut listed: Vec<(u32, Vec<u8>, usize)> =
            t.bindings().map(|(d, key, args)| (d, key.as_bytes().to_vec(), args.len())).collect();
        listed.sort();
        assert_eq!(listed, vec![(1, b"a.*".to_vec(), 0), (1, b"a.*".to_vec(), 1), (2, b"#".to_vec(), 0)]);
        assert!(t.has_destination(1) && t.has_destination(2) && !t.has_destination(3));
        assert_eq!(t.destination_count(), 2);
        assert_eq!(t.remove_destination(1), 2);
        assert_eq!(t.bindings().count(), 1);
    }

    #[test]
    fn route_appends_without_touching_existing_output() {
        let mut t = BindingTable::new(ExchangeKind::Topic);
        assert!(bind(&mut t, 5, "#", &none()));
        assert!(bind(&mut t, 5, "a", &none()));
        let mut out = Vec::with_capacity(8);
        out.push(5u32); // from an earlier exchange: not deduplicated against
        let ptr = out.as_ptr();
        let header = encoded(None);
        t.route(b"a", &RouteProperties::new(&header), &mut out);
        assert_eq!(out, vec![5, 5]);
        assert_eq!(out.as_ptr(), ptr, "no reallocation with spare capacity");
    }

    #[test]
    fn dedup_beyond_the_stack_bitset() {
        // More destinations than SEEN_SLOTS_MAX: high slots take the linear path.
        let n = (SEEN_SLOTS_MAX + 300) as u32;
        for kind in [ExchangeKind::Topic, ExchangeKind::Headers] {
            let mut t = BindingTable::new(kind);
            for d in 0..n {
                assert!(bind(&mut t, d, "a.b", &none()));
                assert!(bind(&mut t, d, "a.*", &none()));
            }
            let out = route(&t, "a.b", Some(&none()));
            assert_eq!(out.len(), n as usize, "{kind:?}");
        }
    }

    #[test]
    fn slots_are_reused_and_shrink() {
        let mut t = BindingTable::new(ExchangeKind::Topic);
        for d in 0..300u32 {
            assert!(bind(&mut t, d, "x", &none()));
        }
        for d in 0..300u32 {
            assert_eq!(t.remove_destination(d), 1);
        }
        assert!(t.slots.is_empty() && t.free_slots.is_empty());
        assert!(bind(&mut t, 1, "x", &none()));
        assert!(bind(&mut t, 2, "x", &none()));
        assert_eq!(t.remove_destination(1), 1);
        assert!(bind(&mut t, 3, "x", &none()));
        assert_eq!(t.slots.len(), 2, "freed slot 0 reused");
        assert_eq!(route(&t, "x", None), vec![2, 3]);
    }
}
