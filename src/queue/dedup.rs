//! Message deduplication, as LavinMQ offers it: `x-message-deduplication:
//! true` on a queue (a duplicate is not enqueued) or an exchange (a
//! duplicate is not routed).
//!
//! # What it owns
//! [`DedupSettings`], read from declare arguments, and [`Deduper`], one
//! bounded cache of the identifiers seen. A queue owns the deduper of its
//! arguments (so queue-level deduplication is exact: every message for the
//! queue reaches its owner shard); exchange-level deduplication keeps one
//! deduper per exchange on each shard (`broker::ShardCtx`), so it catches
//! duplicates published through connections of the same shard only.
//!
//! # Semantics (LavinMQ 2.x `deduplication.cr`, its exchange and queue)
//! * The identifier is the value of the header `x-deduplication-header`
//!   (another header with the argument `x-deduplication-header`). A message
//!   without it is never a duplicate.
//! * The cache holds at most `x-cache-size` identifiers (default 128; here at
//!   most [`CACHE_ENTRIES_MAX`]); when full, the oldest is forgotten.
//! * An identifier is remembered for `x-cache-ttl` ms (argument; default:
//!   until evicted), or for the message's own `x-cache-ttl` header.
//! * A duplicate is confirmed (basic.ack) like any accepted publish; on an
//!   exchange it is unroutable (returned if mandatory).
//!
//! # Cost
//! Nothing unless enabled (an `Option` checked per publish). Enabled: the
//! property flags say whether the message has headers; if so, its headers
//! are decoded, the identifier hashed (a keyed 64-bit hash, so a crafted
//! identifier cannot collide with another) and looked up once. The cache
//! stores the 64-bit hash and an expiry, never the identifier.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use crate::amqp::field::{FieldTable, FieldValue, ShortStr};
use crate::amqp::properties::ContentHeader;
use crate::message::{Message, FLAG_HEADERS};

use super::IdHasher;

/// The header holding the identifier when `x-deduplication-header` is not
/// given; also the argument that names another one.
pub const DEFAULT_HEADER: &str = "x-deduplication-header";

/// Identifiers a cache holds when `x-cache-size` is not given (LavinMQ's).
pub const CACHE_SIZE_DEFAULT: u32 = 128;

/// The largest `x-cache-size` accepted: an entry costs 16 bytes in the map
/// (plus its spare room) and 8 in the order, so a full cache holds about
/// 40 MiB at most. A larger size is refused at declare.
pub const CACHE_ENTRIES_MAX: u32 = 1 << 20;

/// The message header that sets one message's time in the cache (ms).
const MESSAGE_TTL_HEADER: &[u8] = b"x-cache-ttl";

/// No expiry.
const NEVER: u64 = u64::MAX;

/// Deduplication settings of a queue or exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupSettings {
    /// The header holding the identifier.
    pub header: ShortStr,
    /// Identifiers kept at most.
    pub cache_size: u32,
    /// How long an identifier is kept (ms); `None`: until evicted.
    pub ttl_ms: Option<u64>,
}

impl DedupSettings {
    /// The settings of declare arguments already checked with
    /// [`check_arguments`]; `None` unless `x-message-deduplication` is true.
    pub fn from_arguments(arguments: &FieldTable) -> Option<DedupSettings> {
        if arguments.get(b"x-message-deduplication").and_then(FieldValue::as_bool) != Some(true) {
            return None;
        }
        let number = |key: &[u8]| arguments.get(key).and_then(FieldValue::as_i64);
        let header = match arguments.get(DEFAULT_HEADER.as_bytes()) {
            Some(FieldValue::LongStr(name)) => {
                ShortStr::from_bytes(bytes::Bytes::copy_from_slice(name.as_bytes())).ok()
            }
            _ => None,
        };
        Some(DedupSettings {
            header: header.unwrap_or_else(|| ShortStr::from_static(DEFAULT_HEADER)),
            cache_size: number(b"x-cache-size")
                .map_or(CACHE_SIZE_DEFAULT, |n| n.clamp(1, i64::from(CACHE_ENTRIES_MAX)) as u32),
            ttl_ms: number(b"x-cache-ttl").map(|n| n.max(0) as u64),
        })
    }
}

/// Checks the deduplication arguments of a queue or exchange declare:
/// `Err((argument, reason))`, the reason rendered as RabbitMQ renders
/// argument errors (Erlang terms).
pub fn check_arguments(arguments: &FieldTable) -> Result<(), (&'static str, String)> {
    if let Some(v) = arguments.get(b"x-message-deduplication") {
        if v.as_bool().is_none() {
            return Err(("x-message-deduplication", format!("{{unacceptable_type,{}}}", v.type_name())));
        }
    }
    if let Some(v) = arguments.get(b"x-cache-size") {
        let n = integer(v).map_err(|r| ("x-cache-size", r))?;
        if n < 1 {
            let term = if n == 0 { "value_zero" } else { "value_negative" };
            return Err(("x-cache-size", format!("{{{term},{n}}}")));
        }
        if n > i64::from(CACHE_ENTRIES_MAX) {
            return Err(("x-cache-size", format!("{{value_too_large,{n}}}")));
        }
    }
    if let Some(v) = arguments.get(b"x-cache-ttl") {
        let n = integer(v).map_err(|r| ("x-cache-ttl", r))?;
        if n < 0 {
            return Err(("x-cache-ttl", format!("{{value_negative,{n}}}")));
        }
    }
    if let Some(v) = arguments.get(DEFAULT_HEADER.as_bytes()) {
        match v {
            FieldValue::LongStr(name) if name.len() <= 255 => {}
            FieldValue::LongStr(_) => return Err(("x-deduplication-header", "value_too_long".into())),
            other => {
                let reason = format!("{{unacceptable_type,{}}}", other.type_name());
                return Err(("x-deduplication-header", reason));
            }
        }
    }
    Ok(())
}

fn integer(v: &FieldValue) -> Result<i64, String> {
    v.as_i64().ok_or_else(|| format!("\"expected integer, got {}\"", v.type_name()))
}

/// The identifiers one queue or exchange has seen, at most `cache_size`,
/// oldest forgotten first.
#[derive(Debug)]
pub struct Deduper {
    settings: DedupSettings,
    /// Hash of an identifier → when it is forgotten (ms on the caller's
    /// clock; [`NEVER`]).
    expiry: HashMap<u64, u64, BuildHasherDefault<IdHasher>>,
    /// The hashes in `expiry`, oldest first (the same set).
    order: VecDeque<u64>,
    /// Keyed per cache: identifiers are the client's choice.
    keys: ahash::RandomState,
}

impl Deduper {
    /// An empty cache; it grows to `settings.cache_size` as identifiers come.
    pub fn new(settings: DedupSettings) -> Deduper {
        Deduper {
            settings,
            expiry: HashMap::default(),
            order: VecDeque::new(),
            keys: ahash::RandomState::new(),
        }
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &DedupSettings {
        &self.settings
    }

    /// Identifiers held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// True if `message` carries an identifier seen and not yet forgotten
    /// at `now_ms`; otherwise the identifier (if any) is remembered from now.
    pub fn is_duplicate(&mut self, message: &Message, now_ms: u64) -> bool {
        if message.property_flags() & FLAG_HEADERS == 0 {
            return false;
        }
        let Ok(header) = ContentHeader::decode(message.header_bytes()) else {
            return false;
        };
        let Some(headers) = header.properties.headers.as_ref() else {
            return false;
        };
        let Some(identifier) = headers.get(self.settings.header.as_bytes()) else {
            return false;
        };
        let mut h = self.keys.build_hasher();
        identifier.hash_into(&mut h);
        let ttl_ms = match headers.get(MESSAGE_TTL_HEADER).and_then(FieldValue::as_i64) {
            Some(ms) if ms >= 0 => Some(ms as u64),
            _ => self.settings.ttl_ms,
        };
        self.check_and_remember(h.finish(), now_ms, ttl_ms)
    }

    /// The cache itself, by identifier hash.
    fn check_and_remember(&mut self, key: u64, now_ms: u64, ttl_ms: Option<u64>) -> bool {
        let forget_at = ttl_ms.map_or(NEVER, |t| now_ms.saturating_add(t));
        if let Some(at) = self.expiry.get_mut(&key) {
            if *at > now_ms {
                return true;
            }
            // Expired: seen anew; it keeps its place in the eviction order.
            *at = forget_at;
            return false;
        }
        while self.order.len() >= self.settings.cache_size as usize {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.expiry.remove(&oldest);
                }
                None => break,
            }
        }
        self.expiry.insert(key, forget_at);
        self.order.push_back(key);
        // Our invariant: the two hold the same set, within the limit.
        assert!(self.order.len() == self.expiry.len() && self.order.len() <= CACHE_ENTRIES_MAX as usize);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field::LongStr;

    fn settings(size: u32, ttl_ms: Option<u64>) -> DedupSettings {
        DedupSettings { header: ShortStr::from_static(DEFAULT_HEADER), cache_size: size, ttl_ms }
    }

    fn args(entries: &[(&str, FieldValue)]) -> FieldTable {
        let mut t = FieldTable::new();
        for (k, v) in entries {
            t.insert(ShortStr::copy_from_str(k), v.clone());
        }
        t
    }

    #[test]
    fn oldest_identifier_is_forgotten_when_full() {
        let mut d = Deduper::new(settings(2, None));
        assert!(!d.check_and_remember(1, 0, None));
        assert!(!d.check_and_remember(2, 0, None));
        assert!(d.check_and_remember(1, 0, None));
        assert!(!d.check_and_remember(3, 0, None), "evicts 1");
        assert_eq!(d.len(), 2);
        assert!(!d.check_and_remember(1, 0, None), "1 was forgotten");
        assert!(d.check_and_remember(3, 0, None));
    }

    #[test]
    fn identifiers_expire_after_their_ttl() {
        let mut d = Deduper::new(settings(10, Some(100)));
        assert!(!d.check_and_remember(7, 1_000, Some(100)));
        assert!(d.check_and_remember(7, 1_099, Some(100)));
        assert!(!d.check_and_remember(7, 1_100, Some(100)), "expired at 1100");
        assert!(d.check_and_remember(7, 1_150, Some(100)), "remembered again from 1100");
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn arguments() {
        let on = ("x-message-deduplication", FieldValue::Bool(true));
        assert_eq!(DedupSettings::from_arguments(&args(&[])), None);
        let s = DedupSettings::from_arguments(&args(std::slice::from_ref(&on))).expect("enabled");
        assert_eq!(s, settings(CACHE_SIZE_DEFAULT, None));
        let custom = args(&[
            on.clone(),
            ("x-cache-size", FieldValue::I32(5)),
            ("x-cache-ttl", FieldValue::I64(250)),
            ("x-deduplication-header", FieldValue::LongStr(LongStr::copy_from_str("id"))),
        ]);
        assert_eq!(check_arguments(&custom), Ok(()));
        let s = DedupSettings::from_arguments(&custom).expect("enabled");
        assert_eq!((s.header.as_bytes(), s.cache_size, s.ttl_ms), (&b"id"[..], 5, Some(250)));
        let bad = |k: &str, v: FieldValue| check_arguments(&args(&[on.clone(), (k, v)])).map_err(|e| e.1);
        assert_eq!(bad("x-cache-size", FieldValue::I32(0)), Err("{value_zero,0}".into()));
        let too_large = i64::from(CACHE_ENTRIES_MAX) + 1;
        assert_eq!(
            bad("x-cache-size", FieldValue::I64(too_large)),
            Err(format!("{{value_too_large,{too_large}}}"))
        );
        assert_eq!(
            bad("x-cache-ttl", FieldValue::LongStr(LongStr::copy_from_str("1"))),
            Err("\"expected integer, got longstr\"".into())
        );
        assert_eq!(
            bad("x-deduplication-header", FieldValue::I32(1)),
            Err("{unacceptable_type,signedint}".into())
        );
        assert_eq!(
            bad("x-message-deduplication", FieldValue::I32(1)),
            Err("{unacceptable_type,signedint}".into())
        );
    }
}
