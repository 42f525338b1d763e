//! Topic-exchange matching: a word trie over binding patterns.
//!
//! # What it owns
//! [`TopicTrie`] owns, for one topic exchange, the set of binding patterns
//! and the values (destinations) bound under each. It knows nothing about
//! binding arguments or binding identity: the caller ([`super::table`])
//! inserts a value once per distinct `(pattern, destination)` and removes it
//! when the last such binding goes.
//!
//! # Why a trie
//! A publish costs one [`TopicTrie::route`]. A trie whose edges are pattern
//! words (a literal word, `*`, or `#`) makes that cost depend on the number
//! of routing-key words and on how many edges actually match, not on the
//! number of bindings: with 1,000 bindings a key such as `a.b.c` visits a
//! handful of nodes. This is the same shape RabbitMQ uses
//! (`rabbit_db_topic_exchange.erl`: edge table keyed by (node, word),
//! walked by literal word, then `*`, then `#`).
//!
//! Nodes live in one arena `Vec` (ids are `u32`), emptied nodes are pruned
//! on removal and their slots reused. A node's literal children are a short
//! vector (linear scan of a few words beats hashing) that turns into a hash
//! map once it has more than [`FEW_CHILDREN_MAX`] entries. `*` and `#`
//! children are dedicated fields, so a routing-key word that happens to be
//! `*` or `#` is matched only by wildcard edges, never twice.
//!
//! # Semantics (RabbitMQ 4.x, `rabbit_db_topic_exchange.erl`)
//! * Keys and patterns split on every `.`; empty words are real words:
//!   `a..b` is `a`, ``, `b`; `.a` is ``, `a`; `a.` is `a`, ``.
//! * The empty string is zero words (not one empty word): the empty routing
//!   key is matched by `#` (and `#.#`, and the empty pattern) but not by `*`.
//! * `*` matches exactly one word, which may be empty. `#` matches zero or
//!   more words, anywhere in the pattern. Everything else matches byte-exactly
//!   (no case folding, no UTF-8 interpretation).
//! * No validation of patterns: any byte string (≤ 255 bytes, the shortstr
//!   limit) is a valid binding key.
//!
//! Adjacent `#` words are collapsed on insert (`#.#` is stored at the node
//! of `#`): they match exactly the same keys, and collapsing removes the
//! redundant paths that would otherwise multiply the walk.
//!
//! # Cost
//! `route` recurses once per trie edge taken (depth ≤ pattern words ≤ 256)
//! and allocates nothing. A `#` node reached with `n` words left is tried at
//! each of the `n + 1` split points, so patterns with several *separated*
//! `#` (e.g. `#.a.#.a.#`) cost polynomially more on long keys — the same
//! walk RabbitMQ does; there is no memoisation because that would need
//! per-publish scratch memory.

use crate::routing::FastMap;

/// Literal children of a node are kept in a vector up to this many entries,
/// then moved to a hash map. Beyond ~8 short words, hashing one word is
/// cheaper than comparing against all of them.
pub const FEW_CHILDREN_MAX: usize = 8;

const ROOT: u32 = 0;

/// One word of a binding pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternWord<'a> {
    Literal(&'a [u8]),
    /// `*`: exactly one word.
    Star,
    /// `#`: zero or more words.
    Hash,
}

/// Iterates the words of a pattern, collapsing runs of `#` into one.
#[derive(Debug, Clone, Copy)]
struct PatternWords<'a> {
    rest: Option<&'a [u8]>,
    prev_hash: bool,
}

impl<'a> PatternWords<'a> {
    fn new(pattern: &'a [u8]) -> Self {
        PatternWords { rest: first_words(pattern), prev_hash: false }
    }
}

impl<'a> Iterator for PatternWords<'a> {
    type Item = PatternWord<'a>;

    fn next(&mut self) -> Option<PatternWord<'a>> {
        loop {
            let (word, tail) = split_word(self.rest?);
            self.rest = tail;
            let parsed = match word {
                b"*" => PatternWord::Star,
                b"#" => PatternWord::Hash,
                _ => PatternWord::Literal(word),
            };
            let is_hash = parsed == PatternWord::Hash;
            if is_hash && self.prev_hash {
                continue;
            }
            self.prev_hash = is_hash;
            return Some(parsed);
        }
    }
}

/// The remaining words of a key: `None` is "no words", `Some(s)` is the
/// words of `s` split on `.` (at least one, possibly empty).
fn first_words(key: &[u8]) -> Option<&[u8]> {
    if key.is_empty() {
        None
    } else {
        Some(key)
    }
}

/// Splits off the first word of a non-exhausted key.
#[inline]
fn split_word(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&b| b == b'.') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

#[derive(Debug, Clone)]
enum Children {
    Few(Vec<(Box<[u8]>, u32)>),
    Many(FastMap<Box<[u8]>, u32>),
}

impl Children {
    #[inline]
    fn get(&self, word: &[u8]) -> Option<u32> {
        match self {
            Children::Few(v) => v.iter().find(|(w, _)| **w == *word).map(|&(_, id)| id),
            Children::Many(m) => m.get(word).copied(),
        }
    }

    fn insert(&mut self, word: &[u8], id: u32) {
        match self {
            Children::Few(v) if v.len() < FEW_CHILDREN_MAX => v.push((word.into(), id)),
            Children::Few(v) => {
                let mut m: FastMap<Box<[u8]>, u32> = v.drain(..).collect();
                m.insert(word.into(), id);
                *self = Children::Many(m);
            }
            Children::Many(m) => {
                m.insert(word.into(), id);
            }
        }
    }

    fn remove(&mut self, word: &[u8]) {
        match self {
            Children::Few(v) => v.retain(|(w, _)| **w != *word),
            Children::Many(m) => {
                m.remove(word);
                if m.len() <= FEW_CHILDREN_MAX / 2 {
                    *self = Children::Few(m.drain().collect());
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Children::Few(v) => v.is_empty(),
            Children::Many(m) => m.is_empty(),
        }
    }
}

#[derive(Debug, Clone)]
struct Node<V> {
    literals: Children,
    star: Option<u32>,
    hash: Option<u32>,
    /// Values bound at this node, each with its insertion count (several
    /// patterns can share a node after `#` collapsing).
    values: Vec<(V, u32)>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node { literals: Children::Few(Vec::new()), star: None, hash: None, values: Vec::new() }
    }

    fn has_children(&self) -> bool {
        self.star.is_some() || self.hash.is_some() || !self.literals.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty() && !self.has_children()
    }
}

/// A word trie of topic binding patterns, each carrying values `V`
/// (destinations). See the module docs for semantics and cost.
#[derive(Debug, Clone)]
pub struct TopicTrie<V> {
    nodes: Vec<Node<V>>,
    free: Vec<u32>,
    len: usize,
}

impl<V: Copy + Eq> Default for TopicTrie<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Copy + Eq> TopicTrie<V> {
    pub fn new() -> Self {
        TopicTrie { nodes: vec![Node::new()], free: Vec::new(), len: 0 }
    }

    /// Number of live `(pattern, value)` insertions (with multiplicity).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of live trie nodes, root included (for tests and metrics).
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Binds `value` under `pattern`. Inserting the same pair twice keeps a
    /// count; it must then be removed twice.
    pub fn insert(&mut self, pattern: &[u8], value: V) {
        let mut id = ROOT;
        for word in PatternWords::new(pattern) {
            let existing = match word {
                PatternWord::Literal(w) => self.nodes[id as usize].literals.get(w),
                PatternWord::Star => self.nodes[id as usize].star,
                PatternWord::Hash => self.nodes[id as usize].hash,
            };
            id = match existing {
                Some(child) => child,
                None => {
                    let child = self.alloc_node();
                    let node = &mut self.nodes[id as usize];
                    match word {
                        PatternWord::Literal(w) => node.literals.insert(w, child),
                        PatternWord::Star => node.star = Some(child),
                        PatternWord::Hash => node.hash = Some(child),
                    }
                    child
                }
            };
        }
        let values = &mut self.nodes[id as usize].values;
        match values.iter_mut().find(|(v, _)| *v == value) {
            Some((_, count)) => *count += 1,
            None => values.push((value, 1)),
        }
        self.len += 1;
    }

    /// Removes one insertion of `value` under `pattern`; prunes nodes left
    /// empty. Returns false if it was not there.
    pub fn remove(&mut self, pattern: &[u8], value: V) -> bool {
        let removed = self.remove_at(ROOT, PatternWords::new(pattern), value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_at(&mut self, id: u32, mut words: PatternWords<'_>, value: V) -> bool {
        let Some(word) = words.next() else {
            let values = &mut self.nodes[id as usize].values;
            let Some(pos) = values.iter().position(|(v, _)| *v == value) else {
                return false;
            };
            values[pos].1 -= 1;
            if values[pos].1 == 0 {
                values.swap_remove(pos);
            }
            return true;
        };
        let node = &self.nodes[id as usize];
        let child = match word {
            PatternWord::Literal(w) => node.literals.get(w),
            PatternWord::Star => node.star,
            PatternWord::Hash => node.hash,
        };
        let Some(child) = child else {
            return false;
        };
        if !self.remove_at(child, words, value) {
            return false;
        }
        if self.nodes[child as usize].is_empty() {
            let node = &mut self.nodes[id as usize];
            match word {
                PatternWord::Literal(w) => node.literals.remove(w),
                PatternWord::Star => node.star = None,
                PatternWord::Hash => node.hash = None,
            }
            self.nodes[child as usize] = Node::new();
            self.free.push(child);
        }
        true
    }

    fn alloc_node(&mut self) -> u32 {
        match self.free.pop() {
            Some(id) => id,
            None => {
                // 4 G nodes would take > 300 GiB: memory runs out first.
                let id = u32::try_from(self.nodes.len()).expect("trie node ids fit in u32");
                self.nodes.push(Node::new());
                id
            }
        }
    }

    /// Calls `visit` for every value bound under a pattern matching
    /// `routing_key`. A value is reported once per matching node it is bound
    /// at, so the same destination can be reported several times (bound with
    /// several matching patterns); the caller deduplicates. No allocation.
    pub fn route<F: FnMut(V)>(&self, routing_key: &[u8], mut visit: F) {
        self.walk(ROOT, first_words(routing_key), &mut visit);
    }

    fn walk<F: FnMut(V)>(&self, id: u32, rest: Option<&[u8]>, visit: &mut F) {
        let node = &self.nodes[id as usize];
        match rest {
            None => {
                for &(v, _) in &node.values {
                    visit(v);
                }
                if let Some(h) = node.hash {
                    self.walk_hash(h, None, visit);
                }
            }
            Some(s) => {
                let (word, tail) = split_word(s);
                if let Some(child) = node.literals.get(word) {
                    self.walk(child, tail, visit);
                }
                if let Some(child) = node.star {
                    self.walk(child, tail, visit);
                }
                if let Some(h) = node.hash {
                    self.walk_hash(h, rest, visit);
                }
            }
        }
    }

    /// `#` reached with `rest` words left: it swallows 0, 1, … all of them.
    fn walk_hash<F: FnMut(V)>(&self, id: u32, mut rest: Option<&[u8]>, visit: &mut F) {
        let node = &self.nodes[id as usize];
        if !node.has_children() {
            // Trailing `#`: matches whatever is left, no need to iterate.
            for &(v, _) in &node.values {
                visit(v);
            }
            return;
        }
        loop {
            self.walk(id, rest, visit);
            match rest {
                None => return,
                Some(s) => rest = split_word(s).1,
            }
        }
    }
}

/// Reference matcher: does topic `pattern` match `key`? A direct,
/// allocation-using transcription of the semantics in the module docs, used
/// as the oracle for the trie in tests. Not for the hot path.
pub fn topic_matches(pattern: &[u8], key: &[u8]) -> bool {
    fn words(s: &[u8]) -> Vec<&[u8]> {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split(|&b| b == b'.').collect()
        }
    }
    fn go(p: &[&[u8]], k: &[&[u8]]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&b"#", p_rest)) => (0..=k.len()).any(|skip| go(p_rest, &k[skip..])),
            Some((&b"*", p_rest)) => !k.is_empty() && go(p_rest, &k[1..]),
            Some((w, p_rest)) => k.first() == Some(w) && go(p_rest, &k[1..]),
        }
    }
    go(&words(pattern), &words(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::field::{FieldTable, ShortStr};
    use crate::ids::ExchangeKind;
    use crate::routing::BindingTable;
    use proptest::prelude::*;

    fn routed(trie: &TopicTrie<u32>, key: &str) -> Vec<u32> {
        let mut out = Vec::new();
        trie.route(key.as_bytes(), |v| out.push(v));
        out.sort_unstable();
        out.dedup();
        out
    }

    fn trie_of(patterns: &[&str]) -> TopicTrie<u32> {
        let mut t = TopicTrie::new();
        for (i, p) in patterns.iter().enumerate() {
            t.insert(p.as_bytes(), i as u32);
        }
        t
    }

    #[test]
    fn split_treats_empty_key_as_zero_words() {
        // rabbit_db_topic_exchange.erl: split_topic_key_binary(<<>>) -> [].
        assert_eq!(first_words(b""), None);
        assert_eq!(split_word(b"a"), (&b"a"[..], None));
        assert_eq!(split_word(b"a."), (&b"a"[..], Some(&b""[..])));
        assert_eq!(split_word(b".a"), (&b""[..], Some(&b"a"[..])));
    }

    #[test]
    fn pattern_words_collapse_adjacent_hashes_only() {
        let w: Vec<_> = PatternWords::new(b"#.#.a.#.*.#.#").collect();
        use PatternWord::*;
        assert_eq!(w, vec![Hash, Literal(b"a"), Hash, Star, Hash]);
        assert_eq!(PatternWords::new(b"").count(), 0);
        let w: Vec<_> = PatternWords::new(b"..").collect();
        assert_eq!(w, vec![Literal(b""), Literal(b""), Literal(b"")]);
    }

    #[test]
    fn reference_matcher_edge_cases() {
        // Split rules of rabbit_db_topic_exchange.erl (empty key = zero
        // words, empty words are words) and cases of its _SUITE.
        let matching = [
            ("#", ""),
            ("#", "a"),
            ("#", "a.b.c"),
            ("#.#", ""),
            ("#.#", "a.b"),
            ("", ""),
            ("*", "a"),
            ("*.*", "."),
            ("*.*", "a."),
            ("a.#.b", "a.b"),
            ("a.#.b", "a.x.y.b"),
            ("a..b", "a..b"),
            ("a.*.b", "a..b"),
            ("#.c", "c"),
            (".#", ".0.a.b.c"),
            ("#.*.#", "x"),
        ];
        let not_matching = [
            ("*", ""),
            ("*", "."),
            ("", "."),
            ("", "a"),
            ("*.*", "a"),
            ("a.#.b", "a.b.c"),
            (".*", ".0.a.b.c"),
            ("#.*.#", ""),
            ("a", "A"),
        ];
        for (p, k) in matching {
            assert!(topic_matches(p.as_bytes(), k.as_bytes()), "{p:?} ~ {k:?}");
        }
        for (p, k) in not_matching {
            assert!(!topic_matches(p.as_bytes(), k.as_bytes()), "{p:?} !~ {k:?}");
        }
    }

    #[test]
    fn trie_matches_suite_examples() {
        // rabbit_db_topic_exchange_SUITE.erl: topic_match_hash_middle.
        let t = trie_of(&["#.c", "#.b.c", "a.#.d", "#.*.#"]);
        assert_eq!(routed(&t, "a.b.c"), vec![0, 1, 3]);
        assert_eq!(routed(&t, "c"), vec![0, 3]);
        assert_eq!(routed(&t, "x.y.b.c"), vec![0, 1, 3]);
        assert_eq!(routed(&t, "a.d"), vec![2, 3]);
        assert_eq!(routed(&t, "a.b.c.d"), vec![2, 3]);
        assert_eq!(routed(&t, "x"), vec![3]);
        assert_eq!(routed(&t, ""), Vec::<u32>::new());
        // topic_match_overlapping_filters.
        let t = trie_of(&["a.b", "a.b.#", "a.b.c", "a.b.*", "a.b.d", "a.*.*", "a.*.#", "*.b.c"]);
        assert_eq!(routed(&t, "a.b.c"), vec![1, 2, 3, 5, 6, 7]);
        assert_eq!(routed(&t, "a.b"), vec![0, 1, 6]);
    }

    #[test]
    fn empty_key_and_empty_pattern() {
        let t = trie_of(&["#", "", "*", "#.#", "."]);
        assert_eq!(routed(&t, ""), vec![0, 1, 3]);
        assert_eq!(routed(&t, "a"), vec![0, 2, 3]);
        assert_eq!(routed(&t, "."), vec![0, 3, 4]);
    }

    #[test]
    fn wildcard_words_in_key_are_not_double_counted() {
        let t = trie_of(&["*", "#"]);
        let mut out = Vec::new();
        t.route(b"*", |v| out.push(v));
        out.sort_unstable();
        assert_eq!(out, vec![0, 1]);
    }

    #[test]
    fn remove_prunes_nodes_and_keeps_counts() {
        let mut t = TopicTrie::new();
        t.insert(b"a.b.c", 1u32);
        t.insert(b"a.b.c", 1u32);
        t.insert(b"a.#.#", 2u32);
        t.insert(b"a.#", 2u32); // same node as a.#.#
        assert_eq!(t.len(), 4);
        assert!(t.remove(b"a.b.c", 1));
        assert_eq!(routed(&t, "a.b.c"), vec![1, 2]);
        assert!(t.remove(b"a.b.c", 1));
        assert!(!t.remove(b"a.b.c", 1));
        assert!(t.remove(b"a.#", 2));
        assert_eq!(routed(&t, "a.b.c"), vec![2]);
        assert!(t.remove(b"a.#.#", 2));
        assert!(t.is_empty());
        assert_eq!(t.node_count(), 1, "only the root is left");
        assert!(!t.remove(b"x.y", 3));
    }

    #[test]
    fn children_switch_between_vec_and_map() {
        let mut t = TopicTrie::new();
        let n = (FEW_CHILDREN_MAX * 3) as u32;
        for i in 0..n {
            t.insert(format!("w{i}.x").as_bytes(), i);
        }
        for i in 0..n {
            assert_eq!(routed(&t, &format!("w{i}.x")), vec![i]);
        }
        for i in 0..n - 1 {
            assert!(t.remove(format!("w{i}.x").as_bytes(), i));
        }
        assert_eq!(routed(&t, &format!("w{}.x", n - 1)), vec![n - 1]);
        assert_eq!(t.node_count(), 3);
    }

    #[test]
    fn long_keys_255_bytes() {
        let many_words = vec!["a"; 128].join("."); // 255 bytes, 128 words
        assert_eq!(many_words.len(), 255);
        let one_word = "z".repeat(255);
        let dots = ".".repeat(255); // 256 empty words
        let t = trie_of(&[&many_words, &one_word, "#", &dots, "a.#.a", "*.#"]);
        assert_eq!(routed(&t, &many_words), vec![0, 2, 4, 5]);
        assert_eq!(routed(&t, &one_word), vec![1, 2, 5]);
        assert_eq!(routed(&t, &dots), vec![2, 3, 5]);
    }

    // Property: for random patterns and keys over a small alphabet (with the
    // empty word, `*` and `#`), the trie — bare and behind a BindingTable —
    // routes to exactly the destinations the reference matcher selects
    // binding by binding, each once, also after random unbinds and
    // destination removals; removing everything prunes the trie to its root.

    /// Words of the generated patterns and keys.
    const WORDS: [&str; 6] = ["a", "b", "", "ab", "*", "#"];

    fn join(words: &[usize]) -> String {
        let parts: Vec<&str> = words.iter().map(|&i| WORDS[i]).collect();
        parts.join(".")
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(0..WORDS.len(), 0..6).prop_map(|w| join(&w))
    }

    fn key() -> impl Strategy<Value = String> {
        // Mostly literal words (incl. the empty word); some `*`/`#`, which
        // in a routing key are plain words.
        prop::collection::vec(prop_oneof![5 => 0..4usize, 1 => 4..6usize], 0..7).prop_map(|w| join(&w))
    }

    fn expected(live: &[(u32, String)], key: &str) -> Vec<u32> {
        let mut e: Vec<u32> = live
            .iter()
            .filter(|(_, p)| topic_matches(p.as_bytes(), key.as_bytes()))
            .map(|(d, _)| *d)
            .collect();
        e.sort_unstable();
        e.dedup();
        e
    }

    fn table_route(t: &BindingTable<u32>, key: &str) -> (Vec<u32>, usize) {
        let mut out = Vec::new();
        let header = crate::message::encoded_header(None);
        t.route(key.as_bytes(), &crate::message::RouteProperties::new(&header), &mut out);
        let emitted = out.len();
        out.sort_unstable();
        (out, emitted)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn trie_routing_equals_reference_matcher(
            binds in prop::collection::vec((0u32..6, pattern()), 0..24),
            keys in prop::collection::vec(key(), 1..8),
            removals in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let none = FieldTable::new();
            let mut table = BindingTable::new(ExchangeKind::Topic);
            let mut trie = TopicTrie::new();
            let mut live: Vec<(u32, String)> = Vec::new();
            for (d, p) in &binds {
                let added = table.bind(*d, &ShortStr::copy_from_str(p), &none);
                prop_assert_eq!(&added, &Ok(!live.contains(&(*d, p.clone()))));
                if added == Ok(true) {
                    trie.insert(p.as_bytes(), *d);
                    live.push((*d, p.clone()));
                }
            }
            let check = |table: &BindingTable<u32>,
                         trie: &TopicTrie<u32>,
                         live: &[(u32, String)]|
             -> Result<(), TestCaseError> {
                for key in &keys {
                    let want = expected(live, key);
                    let (got, emitted) = table_route(table, key);
                    prop_assert_eq!(emitted, got.len(), "duplicate for {:?}", key);
                    prop_assert_eq!(&got, &want, "table, key {:?}", key);
                    prop_assert_eq!(routed(trie, key), want, "trie, key {:?}", key);
                }
                Ok(())
            };
            check(&table, &trie, &live)?;
            for (i, r) in removals.iter().enumerate() {
                if live.is_empty() {
                    break;
                }
                let (d, p) = live[r.index(live.len())].clone();
                if i % 4 == 3 {
                    let gone: Vec<_> = live.iter().filter(|(d2, _)| *d2 == d).cloned().collect();
                    live.retain(|(d2, _)| *d2 != d);
                    prop_assert_eq!(table.remove_destination(d), gone.len());
                    for (d2, p2) in gone {
                        prop_assert!(trie.remove(p2.as_bytes(), d2));
                    }
                } else {
                    live.retain(|b| *b != (d, p.clone()));
                    prop_assert!(table.unbind(d, &ShortStr::copy_from_str(&p), &none));
                    prop_assert!(!table.unbind(d, &ShortStr::copy_from_str(&p), &none));
                    prop_assert!(trie.remove(p.as_bytes(), d));
                }
                check(&table, &trie, &live)?;
            }
            prop_assert_eq!(table.len(), live.len());
            for (d, p) in &live {
                prop_assert!(table.unbind(*d, &ShortStr::copy_from_str(p), &none));
                prop_assert!(trie.remove(p.as_bytes(), *d));
            }
            prop_assert!(table.is_empty() && trie.is_empty());
            prop_assert_eq!(trie.node_count(), 1, "trie pruned back to the root");
        }
    }
}
