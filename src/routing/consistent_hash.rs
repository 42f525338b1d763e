//! The consistent-hash exchange (`x-consistent-hash`): a hash ring of the
//! bound destinations, weighted by their binding keys.
//!
//! # Semantics (RabbitMQ's `rabbitmq_consistent_hash_exchange`)
//! * The binding key is the destination's weight: an integer of at least 1
//!   (`"+3"` is 3; `"abc"`, `" 3"` and `""` are refused with 406 "The
//!   binding key must be an integer: <<\"abc\">>", `"0"` and `"-1"` with
//!   "The binding key must be greater than 0"). Weights above `u32::MAX`
//!   count as `u32::MAX`.
//! * A destination is on the ring once, with the weight of its first
//!   binding; further bindings to it (other keys or arguments) are kept and
//!   listed but add nothing to the ring, as in the plugin. Unbinding one of
//!   them keeps the destination with the weight of the oldest one left
//!   (the plugin drops the destination from the ring altogether).
//! * What is hashed: the routing key; or, with the exchange argument
//!   `hash-header`, the value of that message header; or, with
//!   `hash-property`, the message property `message_id`, `correlation_id`
//!   or `timestamp` (its decimal digits). Both arguments at once, or
//!   another property, are refused at declare (406, the plugin's texts).
//! * Every message without the header or property goes to one and the same
//!   destination, as in RabbitMQ 3.10, which hashes the atom `undefined`
//!   for it (Lepus hashes a fixed marker of its own, so which destination
//!   that is differs from RabbitMQ's).
//!
//! # The ring
//! ```text
//!   members: [q1 w=1] [q2 w=2]        points (sorted by position):
//!            budget = POINTS_PER_MEMBER × 2, shared by weight
//!   0 ──●q2──●q1──●q2──●q2──●q1── … ──●q2── 2^64
//!        ▲ hash(key) → first point at or after it (wrapping)
//! ```
//! Each destination gets a share of [`RING_POINTS_PER_MEMBER`] × members
//! points proportional to its weight (at least one), so a weight of 1000
//! costs no more memory than a weight of 1 and the share of keys tracks the
//! weights closely. A point's position is a hash of the destination and the
//! point's number, so it never depends on the other destinations: binding or
//! unbinding one destination moves only the keys of the points that come or
//! go, and only those points are computed and merged into the sorted ring
//! when bindings change (never per message); routing is one hash of the key
//! and one binary search,
//! O(log points). Positions and key hashes use a fixed function
//! ([`RingHasher`], FNV-1a with a 64-bit finaliser): the same key goes to the
//! same destination for as long as the bindings are the same, across
//! restarts too (queue ids are kept).

use std::hash::{Hash, Hasher};

use crate::amqp::field::{FieldTable, FieldValue, ShortStr};
use crate::amqp::properties::BasicProperties;
use crate::message::RouteProperties;

use super::headers::BindError;

/// Destinations one consistent-hash exchange may have on its ring; a bind
/// past it is refused (406).
pub const RING_MEMBERS_MAX: usize = 4096;

/// Points per destination while the ring is below [`RING_POINTS_SPREAD_MAX`]
/// (from 64 destinations on, each gets fewer). Points fall at random, so a
/// destination's share of the hash space is off its weight's share by about
/// 1/√points: within 5 % at 2048 points (a simulation of 5 rings of 3 and
/// of 10), 8 % with 100 destinations (1310 points each).
pub const RING_POINTS_PER_MEMBER: usize = 2048;

/// Points shared out by weight; past `RING_POINTS_SPREAD_MAX /
/// RING_POINTS_PER_MEMBER` destinations each gets fewer.
pub const RING_POINTS_SPREAD_MAX: usize = 1 << 17;

/// Points one ring may hold: the spread plus the one point every destination
/// gets however small its share (16 bytes each: about 2 MiB at most).
pub const RING_POINTS_MAX: usize = RING_POINTS_SPREAD_MAX + RING_MEMBERS_MAX;

const _: () = assert!(RING_POINTS_MAX <= u32::MAX as usize);
const _: () = assert!(RING_POINTS_PER_MEMBER >= 1 && RING_POINTS_SPREAD_MAX >= RING_POINTS_PER_MEMBER);

/// What a consistent-hash exchange hashes, from its declare arguments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HashOn {
    /// The routing key (no `hash-header` or `hash-property`).
    #[default]
    RoutingKey,
    /// The value of this message header.
    Header(ShortStr),
    /// One of the message properties the plugin knows.
    Property(HashProperty),
}

/// The message properties `hash-property` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashProperty {
    MessageId,
    CorrelationId,
    Timestamp,
}

impl HashOn {
    /// Reads `hash-header` / `hash-property`; the error is the 406 text
    /// (RabbitMQ's where it has one).
    pub fn parse(arguments: &FieldTable) -> Result<HashOn, String> {
        let text = |key: &str| match arguments.get(key.as_bytes()) {
            None => Ok(None),
            Some(FieldValue::LongStr(s)) => Ok(Some(s.as_bytes())),
            // RabbitMQ fails with an internal error (541) here.
            Some(other) => Err(format!("{key} must be a longstr, not {}", other.type_name())),
        };
        match (text("hash-header")?, text("hash-property")?) {
            (None, None) => Ok(HashOn::RoutingKey),
            (Some(_), Some(_)) => Err("hash-header and hash-property are mutually exclusive".into()),
            (Some(header), None) => match ShortStr::from_bytes(bytes::Bytes::copy_from_slice(header)) {
                Ok(name) => Ok(HashOn::Header(name)),
                // A header name longer than a short string can never match.
                Err(_) => Err("hash-header is longer than 255 bytes".into()),
            },
            (None, Some(property)) => match property {
                b"message_id" => Ok(HashOn::Property(HashProperty::MessageId)),
                b"correlation_id" => Ok(HashOn::Property(HashProperty::CorrelationId)),
                b"timestamp" => Ok(HashOn::Property(HashProperty::Timestamp)),
                other => Err(format!("Unsupported property: {}", String::from_utf8_lossy(other))),
            },
        }
    }

    /// True when routing reads the message's properties.
    pub fn needs_properties(&self) -> bool {
        !matches!(self, HashOn::RoutingKey)
    }

    /// The hash of what this exchange hashes in a message; when the message
    /// lacks the header or property, the hash of a fixed marker, so that all
    /// such messages go to one destination.
    pub fn hash_of(&self, routing_key: &[u8], properties: Option<&BasicProperties>) -> u64 {
        self.hash_present(routing_key, properties).unwrap_or_else(|| {
            let mut h = RingHasher::default();
            h.write(MISSING_MARKER);
            h.finish()
        })
    }

    fn hash_present(&self, routing_key: &[u8], properties: Option<&BasicProperties>) -> Option<u64> {
        let mut h = RingHasher::default();
        match self {
            HashOn::RoutingKey => h.write(routing_key),
            HashOn::Header(name) => {
                let value = properties?.headers.as_ref()?.get(name.as_bytes())?;
                value.hash_into(&mut h);
            }
            HashOn::Property(property) => {
                let p = properties?;
                match property {
                    HashProperty::MessageId => h.write(p.message_id.as_ref()?.as_bytes()),
                    HashProperty::CorrelationId => h.write(p.correlation_id.as_ref()?.as_bytes()),
                    // The plugin hashes the decimal text of the timestamp.
                    HashProperty::Timestamp => h.write(p.timestamp?.to_string().as_bytes()),
                }
            }
        }
        Some(h.finish())
    }
}

/// What is hashed for a message without the header or property hashed
/// (RabbitMQ hashes `undefined`; the NUL keeps it apart from any text).
const MISSING_MARKER: &[u8] = b"\0undefined";

/// Reads a binding key as a weight, as the plugin does (Erlang's
/// `list_to_integer`: an optional sign, then digits).
pub fn parse_weight(key: &[u8]) -> Result<u32, BindError> {
    let not_integer = || BindError::WeightNotInteger { key: key.to_vec() };
    let (negative, digits) = match key.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, key),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(not_integer());
    }
    let mut weight: u32 = 0;
    for d in digits {
        weight = weight.saturating_mul(10).saturating_add(u32::from(d - b'0'));
    }
    if negative || weight == 0 {
        return Err(BindError::WeightNotPositive);
    }
    Ok(weight)
}

/// One destination on the ring.
#[derive(Debug, Clone)]
struct Member<D> {
    dest: D,
    /// The weights of its bindings, oldest first; the first one counts.
    weights: Vec<u32>,
    /// Hash of the destination: where its points are placed.
    seed: u64,
    /// Its points on the ring are the ones numbered `0..placed`.
    placed: u32,
}

/// One point of the ring. Ordered by position first: the ring is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    position: u64,
    /// Index into the ring's `members`.
    member: u32,
    /// Which of its member's points (its position is a hash of the member
    /// and this number alone).
    number: u32,
}

/// The weighted hash ring of one consistent-hash exchange (see the module
/// docs). `D` is the caller's destination id.
#[derive(Debug, Clone, Default)]
pub struct Ring<D> {
    hash_on: HashOn,
    members: Vec<Member<D>>,
    /// Sorted: by position, then member and number.
    points: Vec<Point>,
}

impl<D: Copy + Eq + Hash> Ring<D> {
    /// An empty ring hashing what `hash_on` says.
    pub fn new(hash_on: HashOn) -> Self {
        Ring { hash_on, members: Vec::new(), points: Vec::new() }
    }

    /// What this ring hashes.
    pub fn hash_on(&self) -> &HashOn {
        &self.hash_on
    }

    /// Checks that a binding with this key may be added (a weight, and room
    /// on the ring for a new destination).
    pub fn check_bind(&self, dest: D, key: &[u8]) -> Result<u32, BindError> {
        let weight = parse_weight(key)?;
        if self.members.len() >= RING_MEMBERS_MAX && !self.members.iter().any(|m| m.dest == dest) {
            return Err(BindError::RingFull { members_max: RING_MEMBERS_MAX });
        }
        Ok(weight)
    }

    /// Adds a binding of `dest` with `weight` (from [`Ring::check_bind`]).
    pub fn bind(&mut self, dest: D, weight: u32) {
        match self.members.iter_mut().find(|m| m.dest == dest) {
            // Only the first binding of a destination places it.
            Some(member) => member.weights.push(weight),
            None => {
                let mut h = RingHasher::default();
                dest.hash(&mut h);
                self.members.push(Member { dest, weights: vec![weight], seed: h.finish(), placed: 0 });
                self.place(None);
            }
        }
    }

    /// Removes one binding of `dest` whose key was `key`.
    pub fn unbind(&mut self, dest: D, key: &[u8]) {
        let weight = parse_weight(key).unwrap_or(1);
        let Some(i) = self.members.iter().position(|m| m.dest == dest) else {
            return;
        };
        let member = &mut self.members[i];
        let first = member.weights.first().copied();
        if let Some(at) = member.weights.iter().rposition(|&w| w == weight) {
            member.weights.remove(at);
        }
        if member.weights.is_empty() {
            self.members.remove(i);
            self.place(Some(i));
        } else if member.weights.first().copied() != first {
            self.place(None);
        }
    }

    /// Removes `dest` and all its bindings.
    pub fn remove_destination(&mut self, dest: D) {
        if let Some(i) = self.members.iter().position(|m| m.dest == dest) {
            self.members.remove(i);
            self.place(Some(i));
        }
    }

    /// The destination of a message, if the ring has members and the
    /// message has what is hashed (its properties are decoded only to hash
    /// a header or property).
    #[inline]
    pub fn route(&self, routing_key: &[u8], properties: &RouteProperties<'_>) -> Option<D> {
        if self.points.is_empty() {
            return None;
        }
        let decoded = if self.hash_on.needs_properties() { properties.get() } else { None };
        let hash = self.hash_on.hash_of(routing_key, decoded);
        let at = self.points.partition_point(|point| point.position < hash);
        let point = self.points.get(at).or_else(|| self.points.first())?;
        self.members.get(point.member as usize).map(|m| m.dest)
    }

    /// Number of points on the ring.
    pub fn point_count(&self) -> usize {
        self.points.len()
    }

    /// Brings the points in line with the members' shares after a member
    /// came, went (`removed`: the index it had) or changed weight. A point's
    /// position depends on its member and number alone, so only the points
    /// that come or go are computed; the others stay where they are.
    /// O(points + added × log added), on the control path: binding 4096
    /// queues one by one is 4096 passes over at most [`RING_POINTS_MAX`]
    /// points, not 4096 sorts of them.
    fn place(&mut self, removed: Option<usize>) {
        let shares = self.shares();
        let shrunk = self.members.iter().zip(&shares).any(|(m, &share)| share < m.placed);
        if removed.is_some() || shrunk {
            let removed = removed.map_or(u32::MAX, |r| r as u32);
            self.points.retain_mut(|point| {
                if point.member == removed {
                    return false;
                }
                if point.member > removed {
                    point.member -= 1;
                }
                point.number < shares[point.member as usize]
            });
        }
        let mut added = Vec::new();
        for (index, (member, &share)) in self.members.iter_mut().zip(&shares).enumerate() {
            for number in member.placed..share {
                let position = mix(member.seed ^ mix(u64::from(number) + 1));
                added.push(Point { position, member: index as u32, number });
            }
            member.placed = share;
        }
        added.sort_unstable();
        merge_sorted(&mut self.points, &added);
        // Our invariant: the spread plus at most one extra point per member.
        assert!(self.points.len() <= RING_POINTS_MAX, "ring over its limit");
        if self.points.capacity() > self.points.len() + self.points.len() / 4 {
            self.points.shrink_to_fit();
        }
    }

    /// Each member's number of points: [`RING_POINTS_PER_MEMBER`] × members
    /// (at most [`RING_POINTS_SPREAD_MAX`]) shared by weight, at least one.
    fn shares(&self) -> Vec<u32> {
        let total: u128 = self.members.iter().map(|m| u128::from(m.weights[0])).sum();
        let budget = (RING_POINTS_PER_MEMBER * self.members.len()).min(RING_POINTS_SPREAD_MAX) as u128;
        // A share is at most the budget, which fits in u32 (asserted above).
        self.members
            .iter()
            .map(|m| (u128::from(m.weights[0]) * budget / total.max(1)).max(1) as u32)
            .collect()
    }
}

/// Merges `added` (sorted) into `points` (sorted) in place, from the back.
fn merge_sorted(points: &mut Vec<Point>, added: &[Point]) {
    let Some(&filler) = added.first() else {
        return;
    };
    let mut from = points.len();
    // Exact: a full ring stays within the memory its limit gives.
    points.reserve_exact(added.len());
    points.resize(from + added.len(), filler);
    let mut to = points.len();
    for &point in added.iter().rev() {
        while from > 0 && points[from - 1] > point {
            points[to - 1] = points[from - 1];
            from -= 1;
            to -= 1;
        }
        points[to - 1] = point;
        to -= 1;
    }
}

/// The fixed hash of the ring: FNV-1a over the bytes, then a 64-bit
/// finaliser so that short keys spread over the whole ring. Not keyed: the
/// same key must land on the same point in every run.
#[derive(Debug, Clone, Copy)]
pub struct RingHasher(u64);

impl Default for RingHasher {
    fn default() -> Self {
        RingHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for RingHasher {
    fn finish(&self) -> u64 {
        mix(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A 64-bit finaliser (Stafford's mix 13): every input bit moves about
/// half the output bits.
#[inline]
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field::LongStr;
    use crate::ids::ExchangeKind;
    use crate::routing::table::BindingTable;

    /// The properties of a message without any.
    fn no_props() -> RouteProperties<'static> {
        static EMPTY: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
        RouteProperties::new(EMPTY.get_or_init(|| crate::message::encoded_header(None)))
    }

    fn route_with(ring: &Ring<u32>, key: &[u8], props: &BasicProperties) -> Option<u32> {
        let header = crate::message::encoded_header(Some(props.clone()));
        ring.route(key, &RouteProperties::new(&header))
    }

    fn counts(ring: &Ring<u32>, keys: u32, members: usize) -> Vec<u32> {
        let mut out = vec![0u32; members];
        for k in 0..keys {
            let dest = ring.route(format!("key-{k}").as_bytes(), &no_props()).expect("routed");
            out[dest as usize] += 1;
        }
        out
    }

    #[test]
    fn weights_are_parsed_as_the_plugin_does() {
        assert_eq!(parse_weight(b"1"), Ok(1));
        assert_eq!(parse_weight(b"+3"), Ok(3));
        assert_eq!(parse_weight(b"007"), Ok(7));
        assert_eq!(parse_weight(b"99999999999999999999"), Ok(u32::MAX));
        assert_eq!(parse_weight(b"0"), Err(BindError::WeightNotPositive));
        assert_eq!(parse_weight(b"-2"), Err(BindError::WeightNotPositive));
        for bad in [&b"abc"[..], b"", b" 3", b"3 ", b"+", b"1.5"] {
            assert_eq!(parse_weight(bad), Err(BindError::WeightNotInteger { key: bad.to_vec() }));
        }
        let text = parse_weight(b"abc").unwrap_err().to_string();
        assert_eq!(text, "The binding key must be an integer: <<\"abc\">>");
    }

    #[test]
    fn hash_arguments() {
        let mut args = FieldTable::new();
        assert_eq!(HashOn::parse(&args), Ok(HashOn::RoutingKey));
        args.insert(
            ShortStr::copy_from_str("hash-property"),
            FieldValue::LongStr(LongStr::copy_from_str("app_id")),
        );
        assert_eq!(HashOn::parse(&args), Err("Unsupported property: app_id".into()));
        args.insert(ShortStr::copy_from_str("hash-header"), FieldValue::LongStr(LongStr::copy_from_str("h")));
        assert_eq!(HashOn::parse(&args), Err("hash-header and hash-property are mutually exclusive".into()));
        args.remove(b"hash-property");
        assert_eq!(HashOn::parse(&args), Ok(HashOn::Header(ShortStr::copy_from_str("h"))));
    }

    #[test]
    fn share_of_keys_follows_the_weights() {
        let mut ring = Ring::new(HashOn::RoutingKey);
        for (dest, weight) in [(0u32, 1u32), (1, 2), (2, 3)] {
            ring.bind(dest, weight);
        }
        let got = counts(&ring, 60_000, 3);
        for (dest, expected) in [(0usize, 10_000f64), (1, 20_000.0), (2, 30_000.0)] {
            let off = (f64::from(got[dest]) - expected).abs() / expected;
            assert!(off < 0.1, "destination {dest}: {} keys, expected about {expected}", got[dest]);
        }
    }

    #[test]
    fn a_new_member_takes_keys_only_for_itself() {
        let mut ring = Ring::new(HashOn::RoutingKey);
        ring.bind(0u32, 1);
        ring.bind(1, 1);
        let before: Vec<u32> =
            (0..5000).map(|k| ring.route(format!("k{k}").as_bytes(), &no_props()).expect("routed")).collect();
        ring.bind(2, 1);
        let mut moved_elsewhere = 0;
        for (k, old) in before.iter().enumerate() {
            let new = ring.route(format!("k{k}").as_bytes(), &no_props()).expect("routed");
            if new != *old && new != 2 {
                moved_elsewhere += 1;
            }
        }
        assert_eq!(moved_elsewhere, 0, "keys moved between the old members");
        ring.remove_destination(2);
        let after: Vec<u32> =
            (0..5000).map(|k| ring.route(format!("k{k}").as_bytes(), &no_props()).expect("routed")).collect();
        assert_eq!(before, after, "same bindings, same routes");
    }

    #[test]
    fn later_bindings_of_a_destination_do_not_add_weight() {
        let mut ring = Ring::new(HashOn::RoutingKey);
        ring.bind(0u32, 1);
        ring.bind(0, 3);
        ring.bind(1, 1);
        let got = counts(&ring, 20_000, 2);
        assert!(got[0].abs_diff(got[1]) < 2_000, "{got:?}");
        // Unbinding the first binding leaves the second one's weight.
        ring.unbind(0, b"1");
        let got = counts(&ring, 20_000, 2);
        assert!(got[0] > 2 * got[1], "{got:?}");
        ring.unbind(0, b"3");
        assert_eq!(counts(&ring, 100, 2), vec![0, 100]);
    }

    #[test]
    fn messages_without_the_header_all_go_to_one_destination() {
        let mut ring = Ring::new(HashOn::Header(ShortStr::copy_from_str("h")));
        ring.bind(1u32, 1);
        ring.bind(2u32, 1);
        ring.bind(3u32, 1);
        let missing = ring.route(b"k", &no_props());
        assert!(missing.is_some());
        let mut props = BasicProperties::default();
        for key in [&b"a"[..], b"b", b"c", b"d"] {
            assert_eq!(ring.route(key, &no_props()), missing);
            assert_eq!(route_with(&ring, key, &props), missing);
        }
        ring.unbind(2, b"1");
        ring.unbind(3, b"1");
        let mut headers = FieldTable::new();
        headers.insert(ShortStr::copy_from_str("h"), FieldValue::I32(5));
        props.headers = Some(headers);
        assert_eq!(route_with(&ring, b"k", &props), Some(1));
    }

    #[test]
    fn the_ring_stays_within_its_limit() {
        // Filled in one go: binding one by one passes over the ring each time.
        let mut ring = Ring::new(HashOn::RoutingKey);
        for dest in 0..RING_MEMBERS_MAX as u32 {
            let weight = if dest == 0 { u32::MAX } else { 1 };
            ring.members.push(Member { dest, weights: vec![weight], seed: u64::from(dest), placed: 0 });
        }
        ring.place(None);
        assert!(ring.point_count() <= RING_POINTS_MAX);
        assert_eq!(
            ring.check_bind(u32::MAX, b"1"),
            Err(BindError::RingFull { members_max: RING_MEMBERS_MAX })
        );
        assert_eq!(ring.check_bind(5, b"1"), Ok(1), "a bound destination may bind again");
    }

    /// The points `ring`'s members would have on a ring built from nothing.
    fn placed_from_nothing(ring: &Ring<u32>) -> Vec<Point> {
        let members = ring.members.iter().map(|m| Member { placed: 0, ..m.clone() }).collect();
        let mut fresh = Ring { hash_on: HashOn::RoutingKey, members, points: Vec::new() };
        fresh.place(None);
        fresh.points
    }

    #[test]
    fn a_ring_changed_step_by_step_is_the_ring_built_from_nothing() {
        // Binds, unbinds and removals in a fixed pseudo-random order, through
        // the full spread (64 members) and past it, with weights that move
        // every member's share.
        let mut ring = Ring::new(HashOn::RoutingKey);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |below: u64| {
            state = mix(state.wrapping_add(0x9e37_79b9_7f4a_7c15));
            state % below
        };
        let mut members_max = 0;
        for step in 0..160 {
            let dest = next(120) as u32;
            let weight = 1 + next(4) as u32;
            match next(10) {
                0 => ring.unbind(dest, weight.to_string().as_bytes()),
                1 => ring.remove_destination(dest),
                _ => ring.bind(dest, weight),
            }
            members_max = members_max.max(ring.members.len());
            // A wrong step stays wrong: checking every fourth keeps the
            // debug build's sorts of the ring built from nothing short.
            if step % 4 != 3 {
                continue;
            }
            assert_eq!(ring.points, placed_from_nothing(&ring), "step {step}");
            for member in &ring.members {
                let on_ring =
                    ring.points.iter().filter(|p| ring.members[p.member as usize].dest == member.dest);
                assert_eq!(on_ring.count(), member.placed as usize);
            }
        }
        assert!(
            members_max > RING_POINTS_SPREAD_MAX / RING_POINTS_PER_MEMBER,
            "{members_max} members at most"
        );
    }

    fn table_route(t: &BindingTable<u32>, key: &str) -> Vec<u32> {
        let mut out = Vec::new();
        t.route(key.as_bytes(), &no_props(), &mut out);
        out
    }

    fn k(s: &str) -> ShortStr {
        ShortStr::copy_from_str(s)
    }

    fn none() -> FieldTable {
        FieldTable::new()
    }

    #[test]
    fn consistent_hash_bindings_are_weights() {
        let mut t = BindingTable::<u32>::new(ExchangeKind::ConsistentHash);
        let err = t.bind(1, &k("abc"), &none()).expect_err("not a weight");
        assert_eq!(err.reply_code(), 406);
        assert_eq!(err.to_string(), "The binding key must be an integer: <<\"abc\">>");
        assert!(t.is_empty() && !t.has_destination(1), "nothing added");
        assert!(t.bind(1, &k("1"), &none()).expect("weight"));
        assert!(t.bind(2, &k("1"), &none()).expect("weight"));
        let properties = no_props();
        t.route(b"k", &properties, &mut Vec::new());
        assert!(!properties.were_read(), "hashing the routing key decodes nothing");
        let routed: Vec<u32> = (0..200).flat_map(|i| table_route(&t, &format!("k{i}"))).collect();
        assert_eq!(routed.len(), 200, "every key goes to exactly one destination");
        assert!(routed.contains(&1) && routed.contains(&2));
        assert_eq!(table_route(&t, "k7"), table_route(&t, "k7"));
        assert_eq!(t.remove_destination(2), 1);
        assert!(t.unbind(1, &k("1"), &none()));
        assert_eq!(table_route(&t, "k7"), Vec::<u32>::new());
        let mut args = FieldTable::new();
        args.insert(k("hash-property"), FieldValue::LongStr(LongStr::copy_from_str("message_id")));
        let mut t = BindingTable::<u32>::for_exchange(ExchangeKind::ConsistentHash, &args).expect("valid");
        assert!(t.bind(1, &k("1"), &none()).expect("weight"));
        let properties = no_props();
        t.route(b"k", &properties, &mut Vec::new());
        assert!(properties.were_read(), "hashing a property decodes them");
    }
}
