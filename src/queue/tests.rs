//! Unit tests of the queue's own rules.

use super::*;
use crate::amqp::field::{FieldTable, FieldValue, ShortStr};
use crate::ids::{QueueId, ShardId};
use crate::queue::QueueStats;

fn queue(args: &[(&'static str, FieldValue)], now_ms: u64) -> Queue {
    let mut arguments = FieldTable::new();
    for (k, v) in args {
        arguments.insert(ShortStr::from_static(k), v.clone());
    }
    let meta = QueueMeta {
        queue: QueueRef { id: QueueId(1), shard: ShardId(0) },
        name: ShortStr::from_static("q"),
        durable: false,
        exclusive_owner: None,
        auto_delete: false,
        arguments,
        stats: QueueStats::default(),
    };
    Queue::new(Arc::new(meta), Arc::from("/"), now_ms)
}

#[test]
fn x_expires_counts_from_creation_not_from_the_clock_origin() {
    // Created long after the shard started: the timer starts now.
    let mut q = queue(&[("x-expires", FieldValue::I32(100))], 10_000);
    q.set_clock(10_050);
    assert!(!q.expire(), "50 ms after creation it is still wanted");
    q.set_clock(10_100);
    assert!(q.expire(), "100 ms unused: delete it");
}

#[test]
fn a_touch_restarts_x_expires() {
    let mut q = queue(&[("x-expires", FieldValue::I32(100))], 0);
    q.set_clock(90);
    q.touch();
    q.set_clock(150);
    assert!(!q.expire());
    q.set_clock(190);
    assert!(q.expire());
}
