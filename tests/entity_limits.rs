//! Node-wide limits on the number of queues, exchanges and bindings, and the
//! memory alarm's hold on new ones: a loop of declares is refused (406 on
//! the channel, RabbitMQ's text for a vhost's `max-queues`) before it can
//! exhaust memory, while redeclares, passive declares, deletes and unbinds
//! go on, and other connections are not disturbed.
//!
//! The limits are Lepus's own (RabbitMQ has none by default, and blocks only
//! publishers during a memory alarm), so every test returns early against an
//! external broker.

mod common;

use common::*;

/// The limits of the brokers started here; small, so loops reach them.
const QUEUES_MAX: usize = 10;
const EXCHANGES_MAX: usize = 12;
const BINDINGS_MAX: usize = 6;

fn small_limits(config: &mut lepus::Config) {
    config.queue_count_max = QUEUES_MAX;
    config.exchange_count_max = EXCHANGES_MAX;
    config.binding_count_max = BINDINGS_MAX;
}

fn raw_with_channel(b: &Broker) -> Raw {
    let mut raw = Raw::connect(b.addr);
    raw.handshake();
    raw.open_channel(1);
    raw
}

/// Sends queue.declare (not passive) of `name`; true if declare-ok came,
/// false if the channel was closed with 406 (whose text is returned through
/// `refusal`), reopening it.
fn try_declare_queue(raw: &mut Raw, name: &str, refusal: &mut String) -> bool {
    raw.send_method(1, 50, 10, &queue_declare_args(name, false, false, false, false));
    try_ok(raw, (50, 11), refusal)
}

fn try_declare_exchange(raw: &mut Raw, name: &str, refusal: &mut String) -> bool {
    let args = Args::new().u16(0).shortstr(name).shortstr("direct").bits(&[false; 5]).table(&[]).build();
    raw.send_method(1, 40, 10, &args);
    try_ok(raw, (40, 11), refusal)
}

fn try_bind(raw: &mut Raw, queue: &str, key: &str, refusal: &mut String) -> bool {
    let args = Args::new()
        .u16(0)
        .shortstr(queue)
        .shortstr("amq.direct")
        .shortstr(key)
        .bits(&[false])
        .table(&[])
        .build();
    raw.send_method(1, 50, 20, &args);
    try_ok(raw, (50, 21), refusal)
}

fn try_ok(raw: &mut Raw, ok: (u16, u16), refusal: &mut String) -> bool {
    let (ch, class, method, args) = raw.read_method().expect("an answer before EOF");
    if (ch, class, method) == (1, ok.0, ok.1) {
        return true;
    }
    assert_eq!((ch, class, method), (1, 20, 40), "expected {ok:?} or channel.close");
    let mut c = Cursor::new(&args);
    assert_eq!(c.u16(), 406, "refusals are 406");
    *refusal = c.shortstr();
    raw.send_method(1, 20, 41, &[]);
    raw.open_channel(1);
    false
}

#[test]
/// Queues are declared until the limit refuses one, with RabbitMQ's text;
/// what exists can still be redeclared and passively declared, and a
/// deleted queue makes room for a new one.
fn queue_declares_past_the_limit_are_refused_406() {
    if external() {
        return;
    }
    let b = start_broker_with(small_limits);
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_channel(&b);
    let mut refusal = String::new();
    let mut declared = Vec::new();
    for i in 0..QUEUES_MAX * 3 {
        let name = format!("limits.q{i}");
        if !try_declare_queue(&mut raw, &name, &mut refusal) {
            assert_eq!(
                refusal,
                format!(
                    "PRECONDITION_FAILED - cannot declare queue '{name}': queue limit in vhost '/' ({QUEUES_MAX}) is reached"
                )
            );
            break;
        }
        declared.push(name);
    }
    assert!(!refusal.is_empty(), "{} declares, none refused", declared.len());
    // The bystanders hold a queue each; the rest were ours.
    assert!(declared.len() <= QUEUES_MAX && declared.len() >= QUEUES_MAX - 2, "{declared:?}");
    assert!(try_declare_queue(&mut raw, &declared[0], &mut refusal), "a redeclare is no new queue");
    assert_eq!(raw.queue_counts(1, &declared[0]), (0, 0), "passive declares go on");
    assert!(!try_declare_queue(&mut raw, "limits.one-more", &mut refusal));
    raw.send_method(
        1,
        50,
        40,
        &Args::new().u16(0).shortstr(&declared[0]).bits(&[false, false, false]).build(),
    );
    raw.expect_method(1, 50, 41);
    assert!(try_declare_queue(&mut raw, "limits.one-more", &mut refusal), "a delete makes room");
    healthy.finish();
}

#[test]
/// The same for exchanges (the 8 standard ones count).
fn exchange_declares_past_the_limit_are_refused_406() {
    if external() {
        return;
    }
    let b = start_broker_with(small_limits);
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_channel(&b);
    let mut refusal = String::new();
    let mut declared = Vec::new();
    for i in 0..EXCHANGES_MAX * 3 {
        let name = format!("limits.x{i}");
        if !try_declare_exchange(&mut raw, &name, &mut refusal) {
            assert_eq!(
                refusal,
                format!(
                    "PRECONDITION_FAILED - cannot declare exchange '{name}': exchange limit in vhost '/' ({EXCHANGES_MAX}) is reached"
                )
            );
            break;
        }
        declared.push(name);
    }
    assert_eq!(declared.len(), EXCHANGES_MAX - 8, "{declared:?} ({refusal})");
    assert!(try_declare_exchange(&mut raw, &declared[0], &mut refusal), "a redeclare is no new exchange");
    raw.send_method(1, 40, 20, &Args::new().u16(0).shortstr(&declared[0]).bits(&[false, false]).build());
    raw.expect_method(1, 40, 21);
    assert!(try_declare_exchange(&mut raw, "limits.x-one-more", &mut refusal), "a delete makes room");
    healthy.finish();
}

#[test]
/// The same for bindings: an existing binding can be bound again, an
/// unbind makes room.
fn binds_past_the_limit_are_refused_406() {
    if external() {
        return;
    }
    let b = start_broker_with(small_limits);
    let healthy = Healthy::start(&b);
    let mut raw = raw_with_channel(&b);
    let mut refusal = String::new();
    assert!(try_declare_queue(&mut raw, "limits.bound", &mut refusal), "{refusal}");
    let mut bound = Vec::new();
    for i in 0..BINDINGS_MAX * 3 {
        let key = format!("k{i}");
        if !try_bind(&mut raw, "limits.bound", &key, &mut refusal) {
            assert_eq!(
                refusal,
                format!(
                    "PRECONDITION_FAILED - cannot bind to exchange 'amq.direct': binding limit in vhost '/' ({BINDINGS_MAX}) is reached"
                )
            );
            break;
        }
        bound.push(key);
    }
    assert_eq!(bound.len(), BINDINGS_MAX, "{bound:?} ({refusal})");
    assert!(try_bind(&mut raw, "limits.bound", &bound[0], &mut refusal), "an existing binding is no new one");
    let unbind = Args::new()
        .u16(0)
        .shortstr("limits.bound")
        .shortstr("amq.direct")
        .shortstr(&bound[0])
        .table(&[])
        .build();
    raw.send_method(1, 50, 50, &unbind);
    raw.expect_method(1, 50, 51);
    assert!(try_bind(&mut raw, "limits.bound", "k-one-more", &mut refusal), "an unbind makes room");
    healthy.finish();
}

#[test]
/// While the memory alarm is raised (a 1-byte budget), no new queue,
/// exchange or binding is created, so a declare loop cannot grow memory
/// past the alarm; what exists can be redeclared, looked up and deleted.
/// Once the alarm clears, declares go through again.
fn the_memory_alarm_holds_new_queues_exchanges_and_bindings() {
    let b = start_broker();
    let Some(resources) = b.resources.clone() else { return };
    let mut raw = raw_with_channel(&b);
    let mut refusal = String::new();
    assert!(try_declare_queue(&mut raw, "alarm.existing", &mut refusal), "{refusal}");
    assert!(try_declare_exchange(&mut raw, "alarm.existing-x", &mut refusal), "{refusal}");
    assert!(try_bind(&mut raw, "alarm.existing", "old", &mut refusal), "{refusal}");

    resources.set_memory_budget_bytes(1);
    assert_eq!(resources.alarms(), lepus::alarm::ALARM_MEMORY, "a 1-byte budget trips at once");
    for i in 0..100 {
        assert!(!try_declare_queue(&mut raw, &format!("alarm.q{i}"), &mut refusal), "queue {i} declared");
    }
    assert!(
        refusal.starts_with(
            "PRECONDITION_FAILED - cannot declare queue 'alarm.q99' in vhost '/': memory alarm raised"
        ),
        "{refusal}"
    );
    assert!(!try_declare_exchange(&mut raw, "alarm.x", &mut refusal));
    assert!(refusal.contains("memory alarm raised"), "{refusal}");
    assert!(!try_bind(&mut raw, "alarm.existing", "new", &mut refusal));
    assert!(refusal.contains("memory alarm raised"), "{refusal}");

    assert!(try_declare_queue(&mut raw, "alarm.existing", &mut refusal), "redeclares go on");
    assert!(try_declare_exchange(&mut raw, "alarm.existing-x", &mut refusal), "redeclares go on");
    assert!(try_bind(&mut raw, "alarm.existing", "old", &mut refusal), "existing bindings go on");
    assert_eq!(raw.queue_counts(1, "alarm.existing"), (0, 0), "passive declares go on");

    resources.set_memory_budget_bytes(u64::MAX);
    assert_eq!(resources.alarms(), 0);
    assert!(try_declare_queue(&mut raw, "alarm.after", &mut refusal), "{refusal}");
    assert!(try_declare_exchange(&mut raw, "alarm.after-x", &mut refusal), "{refusal}");
    assert!(try_bind(&mut raw, "alarm.existing", "new", &mut refusal), "{refusal}");
    raw.close();
}
