//! Sets of sequence numbers as inclusive ranges, each tagged with the segment
//! of the record that named it: which messages of a queue were settled or
//! delivered, as read back from the log.

use std::collections::BTreeMap;

/// How many ranges before the candidate a lookup also checks (ranges of
/// different records may overlap: a message delivered twice).
const LOOKBACK: usize = 4;

/// Inclusive ranges of sequence numbers, each with a tag.
#[derive(Debug, Default, Clone)]
pub struct SeqRanges {
    /// first -> (last, tag)
    map: BTreeMap<u64, (u64, u32)>,
}

impl SeqRanges {
    /// Adds `first..=last` named by a record in segment `tag`; joins the
    /// range before it when adjacent with the same tag.
    pub fn insert(&mut self, first: u64, last: u64, tag: u32) {
        if first > last {
            return;
        }
        if let Some((_, (l, t))) = self.map.range_mut(..=first).next_back() {
            if *t == tag && l.saturating_add(1) >= first {
                *l = (*l).max(last);
                return;
            }
        }
        self.map.insert(first, (last, tag));
    }

    /// Sets `first..=last` to `tag`, replacing what earlier ranges said of
    /// those numbers (the latest word counts). Ranges only ever set this way
    /// never overlap.
    pub fn overwrite(&mut self, first: u64, last: u64, tag: u32) {
        if first > last {
            return;
        }
        if let Some((&f, &(l, t))) = self.map.range(..first).next_back() {
            if l >= first {
                self.map.insert(f, (first - 1, t));
                if l > last {
                    self.map.insert(last + 1, (l, t));
                }
            }
        }
        let inside: Vec<u64> = self.map.range(first..=last).map(|(&f, _)| f).collect();
        for f in inside {
            if let Some((l, t)) = self.map.remove(&f) {
                if l > last {
                    self.map.insert(last + 1, (l, t));
                }
            }
        }
        self.insert(first, last, tag);
    }

    /// The tag of a range holding `seq`.
    pub fn find(&self, seq: u64) -> Option<u32> {
        self.map
            .range(..=seq)
            .rev()
            .take(LOOKBACK)
            .find(|(_, &(last, _))| last >= seq)
            .map(|(_, &(_, tag))| tag)
    }

    /// Forgets the ranges that end before `seq` (read past).
    pub fn drop_before(&mut self, seq: u64) {
        while let Some((&first, &(last, _))) = self.map.first_key_value() {
            if last >= seq {
                break;
            }
            self.map.remove(&first);
        }
    }

    /// Ranges held (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_join_find_and_drop() {
        let mut r = SeqRanges::default();
        r.insert(1, 3, 0);
        r.insert(4, 6, 0);
        r.insert(7, 9, 1);
        r.insert(5, 5, 2);
        assert_eq!(r.len(), 3, "1..=6 joined; 7..=9 and 5..=5 have other tags");
        assert_eq!(r.find(2), Some(0));
        assert_eq!(r.find(6), Some(0), "found behind the overlapping 5..=5");
        assert_eq!(r.find(5), Some(2));
        assert_eq!(r.find(9), Some(1));
        assert_eq!(r.find(10), None);
        assert_eq!(r.find(0), None);
        r.drop_before(7);
        assert_eq!(r.find(2), None);
        assert_eq!(r.find(8), Some(1));
    }

    #[test]
    fn overwrite_lets_the_latest_word_count() {
        let mut r = SeqRanges::default();
        r.overwrite(0, 100, 1);
        for seq in [10, 20, 30, 40, 50, 60] {
            r.overwrite(seq, seq, 2);
        }
        assert_eq!(r.find(55), Some(1), "no lookback limit: ranges never overlap");
        assert_eq!(r.find(50), Some(2));
        assert_eq!(r.find(100), Some(1));
        r.overwrite(5, 95, 3);
        assert_eq!(
            (r.find(4), r.find(5), r.find(50), r.find(95), r.find(96)),
            (Some(1), Some(3), Some(3), Some(3), Some(1))
        );
        r.overwrite(96, 96, 1);
        assert_eq!(r.find(96), Some(1));
        assert_eq!(r.find(101), None);
    }
}
