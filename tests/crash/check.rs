//! What a trial observed ([`History`]) and the rules it must satisfy ([`check`]),
//! with the checker's own tests on made-up histories.

use std::collections::{BTreeMap, BTreeSet};

use crate::{body_of, parse_body, queue_of, seq_of};

/// One delivery as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Got {
    pub seq: u64,
    pub queue: usize,
    pub redelivered: bool,
}

/// Everything a trial observed.
#[derive(Debug, Default)]
pub struct History {
    /// Every seq handed to `basic.publish` (it may have reached the broker
    /// even if the call then failed).
    pub published: BTreeSet<u64>,
    /// Seqs whose publisher confirm (basic.ack) arrived before the stop.
    pub confirmed: BTreeSet<u64>,
    /// Seqs the broker nacked.
    pub nacked: BTreeSet<u64>,
    /// Deliveries before the stop, in the order the consumer handled them.
    pub before: Vec<Got>,
    /// Deliveries after the restart.
    pub after: Vec<Got>,
    /// Graceful stops only: seqs whose ack was followed by a completed
    /// synchronous round trip on the consumer's channel before SIGTERM was
    /// sent, so the broker had surely received it.
    pub acked_before_stop: Option<BTreeSet<u64>>,
    /// Problems seen along the way (corrupt bodies, a client error before the
    /// stop, a durable queue missing after the restart, a bad exit status).
    pub problems: Vec<String>,
}

/// At most 10 seqs, in hex, and how many there are.
pub fn some(seqs: impl IntoIterator<Item = u64>) -> String {
    let seqs: Vec<u64> = seqs.into_iter().collect();
    let shown: Vec<String> = seqs.iter().take(10).map(|s| format!("{s:#x}")).collect();
    let more = if seqs.len() > shown.len() { ", ..." } else { "" };
    format!("{} [{}{more}]", seqs.len(), shown.join(", "))
}

/// The rules; returns every violation.
/// - Every delivered seq was published, to the queue it came from; the first
///   delivery of a seq before the stop has redelivered=false, and no seq is
///   delivered twice before the stop (nothing is requeued then).
/// - None lost: every confirmed seq was delivered, before or after the stop.
/// - No seq is delivered twice after the restart.
/// - A seq delivered before the stop and again after the restart (its ack
///   was not recorded, or it was not acked) comes back with redelivered=true.
/// - Graceful stop: a seq whose ack the broker surely received never comes back.
/// - Unconfirmed seqs may or may not come back.
pub fn check(h: &History) -> Vec<String> {
    let mut violations = h.problems.clone();
    let mut count_before: BTreeMap<u64, usize> = BTreeMap::new();
    for got in &h.before {
        *count_before.entry(got.seq).or_default() += 1;
    }
    let mut count_after: BTreeMap<u64, usize> = BTreeMap::new();
    for got in &h.after {
        *count_after.entry(got.seq).or_default() += 1;
    }
    let all = || h.before.iter().chain(&h.after);
    let phantom: BTreeSet<u64> = all().map(|g| g.seq).filter(|s| !h.published.contains(s)).collect();
    if !phantom.is_empty() {
        violations.push(format!("delivered but never published: {}", some(phantom)));
    }
    let misrouted: BTreeSet<u64> = all().filter(|g| g.queue != queue_of(g.seq)).map(|g| g.seq).collect();
    if !misrouted.is_empty() {
        violations.push(format!("delivered from the wrong queue: {}", some(misrouted)));
    }
    let twice_before = count_before.iter().filter(|(_, &n)| n > 1).map(|(&s, _)| s);
    let twice_before: Vec<u64> = twice_before.collect();
    if !twice_before.is_empty() {
        violations.push(format!("delivered twice before the stop: {}", some(twice_before)));
    }
    let flagged_first: BTreeSet<u64> = h.before.iter().filter(|g| g.redelivered).map(|g| g.seq).collect();
    if !flagged_first.is_empty() {
        violations.push(format!("redelivered=true on a first delivery: {}", some(flagged_first)));
    }
    let lost: Vec<u64> = h
        .confirmed
        .iter()
        .copied()
        .filter(|s| !count_before.contains_key(s) && !count_after.contains_key(s))
        .collect();
    if !lost.is_empty() {
        violations.push(format!("LOST: confirmed but never delivered: {}", some(lost)));
    }
    let twice_after: Vec<u64> = count_after.iter().filter(|(_, &n)| n > 1).map(|(&s, _)| s).collect();
    if !twice_after.is_empty() {
        violations.push(format!("delivered twice after the restart: {}", some(twice_after)));
    }
    let unflagged: BTreeSet<u64> = h
        .after
        .iter()
        .filter(|g| !g.redelivered && count_before.contains_key(&g.seq))
        .map(|g| g.seq)
        .collect();
    if !unflagged.is_empty() {
        violations.push(format!(
            "delivered before the stop and again after the restart without redelivered=true: {}",
            some(unflagged)
        ));
    }
    if let Some(acked) = &h.acked_before_stop {
        let back: BTreeSet<u64> = h.after.iter().map(|g| g.seq).filter(|s| acked.contains(s)).collect();
        if !back.is_empty() {
            violations.push(format!("acked before the graceful stop, yet delivered again: {}", some(back)));
        }
    }
    violations
}

// ---------------------------------------------------------------------------
// The checker on made-up histories (these run without a broker)
// ---------------------------------------------------------------------------

fn got(seq: u64, redelivered: bool) -> Got {
    Got { seq, queue: queue_of(seq), redelivered }
}

/// Published 1..=6, confirmed 1..=4; 1 and 2 acked before the stop; 3
/// delivered, not acked, back redelivered; 4 first delivered after the
/// restart; 5 unconfirmed and gone, 6 unconfirmed and kept.
fn good_history() -> History {
    History {
        published: (1..=6).collect(),
        confirmed: (1..=4).collect(),
        before: vec![got(1, false), got(2, false), got(3, false)],
        after: vec![got(3, true), got(4, false), got(6, false)],
        acked_before_stop: Some([1, 2].into()),
        ..History::default()
    }
}

fn violations_after(change: impl FnOnce(&mut History)) -> Vec<String> {
    let mut history = good_history();
    change(&mut history);
    check(&history)
}

#[test]
fn checker_accepts_a_good_history() {
    assert_eq!(check(&good_history()), Vec::<String>::new());
}

#[test]
fn checker_flags_each_broken_rule() {
    type Change = fn(&mut History);
    let cases: [(&str, Change); 8] = [
        ("LOST", |h| h.after.retain(|g| g.seq != 4)),
        ("without redelivered=true", |h| h.after[0].redelivered = false),
        ("twice after the restart", |h| h.after.push(got(4, true))),
        ("never published", |h| h.after.push(got(99, false))),
        ("acked before the graceful stop", |h| h.after.push(got(1, true))),
        ("twice before the stop", |h| h.before.push(got(2, false))),
        ("first delivery", |h| h.before[0].redelivered = true),
        ("wrong queue", |h| h.after[1].queue ^= 1),
    ];
    for (expected, change) in cases {
        let violations = violations_after(change);
        assert!(
            violations.len() == 1 && violations[0].contains(expected),
            "expected one violation mentioning {expected:?}, got {violations:?}"
        );
    }
}

#[test]
fn bodies_carry_their_seq_and_corruption_is_caught() {
    for seq in [0, 1, seq_of(1, 7), seq_of(0, 12_345)] {
        let mut body = body_of(seq);
        assert_eq!(parse_body(&body), Ok(seq));
        let last = body.len() - 1;
        body[last] ^= 1;
        assert!(parse_body(&body).is_err(), "a flipped bit in seq {seq:#x}'s body is caught");
        assert!(parse_body(&body[..last]).is_err(), "a truncated body of seq {seq:#x} is caught");
    }
}
