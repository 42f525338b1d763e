//! The access model, proven on the wire: every row of RabbitMQ's permission
//! table (allowed and refused), topic permissions, `user-id` validation,
//! vhost isolation, vhost access (530), login failures, `guest` from a
//! non-loopback address, vhost and user limits, and vhost deletion.
//!
//! The same tests run against in-process Lepus and against RabbitMQ 3.10
//! (`LEPUS_TEST_EXTERNAL=127.0.0.1:5672`; users and vhosts are then made
//! through its management API, see `common/access.rs`). Every expected reply
//! (code, class/method, text) is what RabbitMQ 3.10.8 sends.
//!
//! Each test has its own vhost `tst-<test>` and users `tst-<test>-<role>`,
//! so they run in parallel against one RabbitMQ. Each checked expectation
//! prints one `ACCESS|broker|row|case|reply|ok` line (`...|expected: ..|
//! got: ..|FAIL` when it fails; run with `--nocapture` to see them):
//! together they are the permission matrix.

mod common;

use common::access::*;
use common::*;
use std::net::SocketAddr;

/// Every test user's password.
const PASSWORD: &str = "tst-secret";

/// One test's broker, set-up and vhost.
struct World {
    b: Broker,
    s: Setup,
    vhost: String,
}

impl World {
    /// A broker with vhost `tst-<test>`.
    fn new(test: &str) -> World {
        let b = start_broker();
        let mut s = Setup::new(&b, test);
        let vhost = s.name("");
        s.add_vhost(&vhost);
        World { b, s, vhost }
    }

    /// User `tst-<test>-<role>` (password [`PASSWORD`]) with these
    /// expressions in the vhost; returns its name.
    fn user(&mut self, role: &str, configure: &str, write: &str, read: &str) -> String {
        let name = self.s.name(role);
        self.s.add_user(&name, Some(PASSWORD), &[]);
        self.s.set_permissions(&name, &self.vhost, configure, write, read);
        name
    }

    /// An administrator of the vhost (everything allowed), for the set-up.
    fn admin(&mut self) -> Raw {
        let admin = self.user("admin", ".*", ".*", ".*");
        self.open(&admin)
    }

    /// `user`'s connection to the vhost, channel 1 open.
    fn open(&self, user: &str) -> Raw {
        open(self.b.addr, user, PASSWORD, &self.vhost)
    }

    /// RabbitMQ's text for a refused permission check.
    fn denied(&self, kind: &str, name: &str, user: &str) -> String {
        format!(
            "ACCESS_REFUSED - access to {kind} '{name}' in vhost '{}' refused for user '{user}'",
            self.vhost
        )
    }

    /// RabbitMQ's text for a refused topic permission check.
    fn topic_denied(&self, key: &str, exchange: &str, user: &str) -> String {
        format!(
            "ACCESS_REFUSED - access to topic '{key}' in exchange '{exchange}' in vhost '{}' refused for user '{user}'",
            self.vhost
        )
    }
}

/// The harness stores its Lepus users' passwords in RabbitMQ's format: the
/// test vector from RabbitMQ's documentation (salt 908DC60A, "test12").
#[test]
fn harness_hashes_passwords_as_rabbitmq_does() {
    let hash = sha256_with_salt([0x90, 0x8D, 0xC6, 0x0A], "test12");
    assert_eq!(base64(&hash.salted), "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR");
    assert_eq!(base64(b"guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
}

// ---------------------------------------------------------------------------
// Method arguments
// ---------------------------------------------------------------------------

fn exchange_declare(name: &str, kind: &str, passive: bool, args: &[(&str, Field)]) -> Vec<u8> {
    Args::new()
        .u16(0)
        .shortstr(name)
        .shortstr(kind)
        .bits(&[passive, false, false, false, false])
        .table(args)
        .build()
}

fn exchange_delete(name: &str) -> Vec<u8> {
    Args::new().u16(0).shortstr(name).bits(&[false, false]).build()
}

fn queue_declare(name: &str, passive: bool, args: &[(&str, Field)]) -> Vec<u8> {
    Args::new().u16(0).shortstr(name).bits(&[passive, false, false, false, false]).table(args).build()
}

fn queue_delete(name: &str) -> Vec<u8> {
    Args::new().u16(0).shortstr(name).bits(&[false, false, false]).build()
}

fn queue_bind(queue: &str, exchange: &str, key: &str) -> Vec<u8> {
    Args::new().u16(0).shortstr(queue).shortstr(exchange).shortstr(key).bits(&[false]).table(&[]).build()
}

fn queue_unbind(queue: &str, exchange: &str, key: &str) -> Vec<u8> {
    Args::new().u16(0).shortstr(queue).shortstr(exchange).shortstr(key).table(&[]).build()
}

/// exchange.bind and exchange.unbind have the same arguments.
fn exchange_bind(destination: &str, source: &str, key: &str) -> Vec<u8> {
    Args::new().u16(0).shortstr(destination).shortstr(source).shortstr(key).bits(&[false]).table(&[]).build()
}

fn queue_purge(name: &str) -> Vec<u8> {
    Args::new().u16(0).shortstr(name).bits(&[false]).build()
}

fn basic_get(queue: &str) -> Vec<u8> {
    Args::new().u16(0).shortstr(queue).bits(&[true]).build()
}

fn str_arg(s: &str) -> Field {
    Field::LongStr(s.as_bytes().to_vec())
}

/// Declares (actively) exchange `name` of `kind` on channel 1, which must succeed.
fn make_exchange(raw: &mut Raw, name: &str, kind: &str) {
    call(raw, 1, 40, 10, &exchange_declare(name, kind, false, &[]), 11).expect("exchange.declare");
}

/// Declares (actively) queue `name` on channel 1, which must succeed.
fn make_queue(raw: &mut Raw, name: &str) {
    call(raw, 1, 50, 10, &queue_declare(name, false, &[]), 11).expect("queue.declare");
}

/// Puts channel 1 in confirm mode.
fn confirm(raw: &mut Raw) {
    call(raw, 1, 85, 10, &Args::new().bits(&[false]).build(), 11).expect("confirm.select");
}

/// Publishes on channel 1 (in confirm mode): `Ok` is the broker's basic.ack.
fn publish(raw: &mut Raw, exchange: &str, key: &str, body: &str) -> Result<Vec<u8>, CloseInfo> {
    raw.send(&publish_frames(1, exchange, key, body.as_bytes()));
    answer(raw, 1, 60, 80)
}

// ---------------------------------------------------------------------------
// configure: declare and delete
// ---------------------------------------------------------------------------

#[test]
fn exchange_declare_needs_configure() {
    let mut w = World::new("exchange-declare");
    let ok = w.user("ok", "^x$", "", "");
    let no = w.user("no", "^other$", ".*", ".*");
    let row = "exchange.declare";
    let mut r = w.open(&ok);
    allowed(
        row,
        "configure on the exchange",
        &call(&mut r, 1, 40, 10, &exchange_declare("x", "direct", false, &[]), 11),
    );
    let mut r = w.open(&no);
    let got = call(&mut r, 1, 40, 10, &exchange_declare("y", "direct", false, &[]), 11);
    refused(row, "no configure on the exchange", &got, 40, 10, &w.denied("exchange", "y", &no));
}

#[test]
fn queue_declare_needs_configure() {
    let mut w = World::new("queue-declare");
    let ok = w.user("ok", "^q$", "", "");
    let no = w.user("no", "^other$", ".*", ".*");
    let row = "queue.declare";
    let mut r = w.open(&ok);
    allowed(row, "configure on the queue", &call(&mut r, 1, 50, 10, &queue_declare("q", false, &[]), 11));
    let mut r = w.open(&no);
    let got = call(&mut r, 1, 50, 10, &queue_declare("p", false, &[]), 11);
    refused(row, "no configure on the queue", &got, 50, 10, &w.denied("queue", "p", &no));
}

#[test]
fn exchange_delete_needs_configure() {
    let mut w = World::new("exchange-delete");
    let mut admin = w.admin();
    make_exchange(&mut admin, "x", "direct");
    let ok = w.user("ok", "^x$", "", "");
    let no = w.user("no", "^other$", ".*", ".*");
    let row = "exchange.delete";
    let mut r = w.open(&no);
    let got = call(&mut r, 1, 40, 20, &exchange_delete("x"), 21);
    refused(row, "no configure on the exchange", &got, 40, 20, &w.denied("exchange", "x", &no));
    let mut r = w.open(&ok);
    allowed(row, "configure on the exchange", &call(&mut r, 1, 40, 20, &exchange_delete("x"), 21));
}

#[test]
fn queue_delete_needs_configure() {
    let mut w = World::new("queue-delete");
    let mut admin = w.admin();
    make_queue(&mut admin, "q");
    let ok = w.user("ok", "^q$", "", "");
    let no = w.user("no", "^other$", ".*", ".*");
    let row = "queue.delete";
    let mut r = w.open(&no);
    let got = call(&mut r, 1, 50, 40, &queue_delete("q"), 41);
    refused(row, "no configure on the queue", &got, 50, 40, &w.denied("queue", "q", &no));
    let mut r = w.open(&ok);
    allowed(row, "configure on the queue", &call(&mut r, 1, 50, 40, &queue_delete("q"), 41));
}

#[test]
fn queue_declare_with_dead_letter_exchange_needs_write_on_it_and_read_on_the_queue() {
    let mut w = World::new("dlx");
    let ok = w.user("ok", "^q-", "^dlx$", "^q-");
    let no_write = w.user("nowrite", "^q-", "^other$", "^q-");
    let no_read = w.user("noread", "^q-", "^dlx$", "^other$");
    let row = "queue.declare x-dead-letter-exchange";
    let dlx = [("x-dead-letter-exchange", str_arg("dlx"))];
    let mut r = w.open(&ok);
    let got = call(&mut r, 1, 50, 10, &queue_declare("q-ok", false, &dlx), 11);
    allowed(row, "configure+read on the queue, write on the DLX", &got);
    let mut r = w.open(&no_write);
    let got = call(&mut r, 1, 50, 10, &queue_declare("q-nowrite", false, &dlx), 11);
    refused(row, "no write on the DLX", &got, 50, 10, &w.denied("exchange", "dlx", &no_write));
    let mut r = w.open(&no_read);
    let got = call(&mut r, 1, 50, 10, &queue_declare("q-noread", false, &dlx), 11);
    refused(row, "no read on the queue", &got, 50, 10, &w.denied("queue", "q-noread", &no_read));
}

#[test]
fn exchange_declare_with_alternate_exchange_needs_write_on_it_and_read_on_the_exchange() {
    let mut w = World::new("ae");
    let ok = w.user("ok", "^x-", "^ae$", "^x-");
    let no_write = w.user("nowrite", "^x-", "^other$", "^x-");
    let no_read = w.user("noread", "^x-", "^ae$", "^other$");
    let row = "exchange.declare alternate-exchange";
    let ae = [("alternate-exchange", str_arg("ae"))];
    let mut r = w.open(&ok);
    let got = call(&mut r, 1, 40, 10, &exchange_declare("x-ok", "fanout", false, &ae), 11);
    allowed(row, "configure+read on the exchange, write on the AE", &got);
    let mut r = w.open(&no_write);
    let got = call(&mut r, 1, 40, 10, &exchange_declare("x-nowrite", "fanout", false, &ae), 11);
    refused(row, "no write on the AE", &got, 40, 10, &w.denied("exchange", "ae", &no_write));
    let mut r = w.open(&no_read);
    let got = call(&mut r, 1, 40, 10, &exchange_declare("x-noread", "fanout", false, &ae), 11);
    refused(row, "no read on the exchange", &got, 40, 10, &w.denied("exchange", "x-noread", &no_read));
}

// ---------------------------------------------------------------------------
// bindings: write on the destination, read on the source
// ---------------------------------------------------------------------------

/// queue.bind (50,20) or queue.unbind (50,50): allowed, no write on the
/// queue, no read on the exchange.
fn queue_binding_row(test: &str, row: &str, method: u16) {
    let mut w = World::new(test);
    let mut admin = w.admin();
    make_exchange(&mut admin, "x", "direct");
    make_queue(&mut admin, "q");
    if method == 50 {
        call(&mut admin, 1, 50, 20, &queue_bind("q", "x", "k"), 21).expect("queue.bind");
    }
    let ok = w.user("ok", "", "^q$", "^x$");
    let no_write = w.user("nowrite", ".*", "^other$", ".*");
    let no_read = w.user("noread", ".*", ".*", "^other$");
    let args = if method == 20 { queue_bind("q", "x", "k") } else { queue_unbind("q", "x", "k") };
    let mut r = w.open(&no_write);
    let got = call(&mut r, 1, 50, method, &args, method + 1);
    refused(row, "no write on the queue", &got, 50, method, &w.denied("queue", "q", &no_write));
    let mut r = w.open(&no_read);
    let got = call(&mut r, 1, 50, method, &args, method + 1);
    refused(row, "no read on the exchange", &got, 50, method, &w.denied("exchange", "x", &no_read));
    let mut r = w.open(&ok);
    allowed(row, "write on the queue, read on the exchange", &call(&mut r, 1, 50, method, &args, method + 1));
}

#[test]
fn queue_bind_needs_write_on_the_queue_and_read_on_the_exchange() {
    queue_binding_row("queue-bind", "queue.bind", 20);
}

#[test]
fn queue_unbind_needs_write_on_the_queue_and_read_on_the_exchange() {
    queue_binding_row("queue-unbind", "queue.unbind", 50);
}

/// exchange.bind (40,30) or exchange.unbind (40,40): allowed, no write on
/// the destination, no read on the source.
fn exchange_binding_row(test: &str, row: &str, method: u16) {
    let mut w = World::new(test);
    let mut admin = w.admin();
    make_exchange(&mut admin, "src", "direct");
    make_exchange(&mut admin, "dst", "fanout");
    if method == 40 {
        call(&mut admin, 1, 40, 30, &exchange_bind("dst", "src", "k"), 31).expect("exchange.bind");
    }
    let ok = w.user("ok", "", "^dst$", "^src$");
    let no_write = w.user("nowrite", ".*", "^other$", ".*");
    let no_read = w.user("noread", ".*", ".*", "^other$");
    let args = exchange_bind("dst", "src", "k");
    // exchange.bind-ok is 31, exchange.unbind-ok is 51.
    let ok_method = if method == 30 { 31 } else { 51 };
    let mut r = w.open(&no_write);
    let got = call(&mut r, 1, 40, method, &args, ok_method);
    refused(row, "no write on the destination", &got, 40, method, &w.denied("exchange", "dst", &no_write));
    let mut r = w.open(&no_read);
    let got = call(&mut r, 1, 40, method, &args, ok_method);
    refused(row, "no read on the source", &got, 40, method, &w.denied("exchange", "src", &no_read));
    let mut r = w.open(&ok);
    allowed(
        row,
        "write on the destination, read on the source",
        &call(&mut r, 1, 40, method, &args, ok_method),
    );
}

#[test]
fn exchange_bind_needs_write_on_the_destination_and_read_on_the_source() {
    exchange_binding_row("exchange-bind", "exchange.bind", 30);
}

#[test]
fn exchange_unbind_needs_write_on_the_destination_and_read_on_the_source() {
    exchange_binding_row("exchange-unbind", "exchange.unbind", 40);
}

// ---------------------------------------------------------------------------
// publish: write on the exchange
// ---------------------------------------------------------------------------

#[test]
fn basic_publish_needs_write_on_the_exchange() {
    let mut w = World::new("publish");
    let mut admin = w.admin();
    make_exchange(&mut admin, "x", "fanout");
    let ok = w.user("ok", "", "^x$", "");
    let no = w.user("no", ".*", "^other$", ".*");
    let row = "basic.publish";
    let mut r = w.open(&ok);
    confirm(&mut r);
    allowed(row, "write on the exchange", &publish(&mut r, "x", "k", "m"));
    let mut r = w.open(&no);
    confirm(&mut r);
    let got = publish(&mut r, "x", "k", "m");
    refused(row, "no write on the exchange", &got, 60, 40, &w.denied("exchange", "x", &no));
}

#[test]
fn basic_publish_to_the_default_exchange_needs_write_on_amq_default() {
    let mut w = World::new("publish-default");
    let mut admin = w.admin();
    make_queue(&mut admin, "q");
    let ok = w.user("ok", "", "^amq\\.default$", "");
    // '^$' would match the name '' but the default exchange is checked as amq.default.
    let no = w.user("no", ".*", "^$", ".*");
    let row = "basic.publish (default exchange)";
    let mut r = w.open(&ok);
    confirm(&mut r);
    allowed(row, "write on amq.default", &publish(&mut r, "", "q", "m"));
    let mut r = w.open(&no);
    confirm(&mut r);
    let got = publish(&mut r, "", "q", "m");
    refused(row, "write '^$' only", &got, 60, 40, &w.denied("exchange", "amq.default", &no));
}

// ---------------------------------------------------------------------------
// read on the queue: get, consume, purge
// ---------------------------------------------------------------------------

/// `class.method` on queue `q`, which needs read on it: allowed and refused.
fn queue_read_row(
    test: &str,
    row: &str,
    (class, method): (u16, u16),
    args: fn(&str) -> Vec<u8>,
    ok_method: u16,
) {
    let mut w = World::new(test);
    let mut admin = w.admin();
    make_queue(&mut admin, "q");
    let ok = w.user("ok", "", "", "^q$");
    let no = w.user("no", ".*", ".*", "^other$");
    let mut r = w.open(&no);
    let got = call(&mut r, 1, class, method, &args("q"), ok_method);
    refused(row, "no read on the queue", &got, class, method, &w.denied("queue", "q", &no));
    let mut r = w.open(&ok);
    allowed(row, "read on the queue", &call(&mut r, 1, class, method, &args("q"), ok_method));
}

#[test]
fn basic_get_needs_read_on_the_queue() {
    // The queue is empty: the allowed answer is get-empty (60,72).
    queue_read_row("get", "basic.get", (60, 70), basic_get, 72);
}

#[test]
fn basic_consume_needs_read_on_the_queue() {
    queue_read_row("consume", "basic.consume", (60, 20), |q| basic_consume_args(q, "tag", true), 21);
}

#[test]
fn queue_purge_needs_read_on_the_queue() {
    queue_read_row("purge", "queue.purge", (50, 30), queue_purge, 31);
}

// ---------------------------------------------------------------------------
// passive declares; '' matches nothing
// ---------------------------------------------------------------------------

#[test]
fn passive_declares_check_nothing() {
    let mut w = World::new("passive");
    let mut admin = w.admin();
    make_exchange(&mut admin, "x", "direct");
    make_queue(&mut admin, "q");
    let none = w.user("none", "", "", "");
    let row = "passive declare";
    let mut r = w.open(&none);
    allowed(
        row,
        "exchange, no permission at all",
        &call(&mut r, 1, 40, 10, &exchange_declare("x", "direct", true, &[]), 11),
    );
    allowed(row, "queue, no permission at all", &call(&mut r, 1, 50, 10, &queue_declare("q", true, &[]), 11));
    // A missing queue is not found (404), not refused: nothing is checked first.
    let got = call(&mut r, 1, 50, 10, &queue_declare("missing", true, &[]), 11);
    let expected =
        format!("channel.close 404 (50,10) \"NOT_FOUND - no queue 'missing' in vhost '{}'\"", w.vhost);
    row_result(row, "missing queue, no permission at all", &expected, &got);
}

/// Checks `got` against `expected` as [`describe`] prints it.
fn row_result(r: &str, case: &str, expected: &str, got: &Result<Vec<u8>, CloseInfo>) {
    let got = match got {
        Ok(_) => "ok".to_string(),
        Err(c) => describe(c),
    };
    common::access::row(r, case, expected, &got);
}

#[test]
fn empty_permission_matches_nothing() {
    let mut w = World::new("empty");
    let none = w.user("none", "", "", "");
    let row = "'' matches nothing";
    // A permission, even all '', opens the vhost.
    let mut r = w.open(&none);
    let got = call(&mut r, 1, 40, 10, &exchange_declare("x", "direct", false, &[]), 11);
    refused(row, "configure '' on exchange.declare", &got, 40, 10, &w.denied("exchange", "x", &none));
    let got = call(&mut r, 1, 50, 10, &queue_declare("q", false, &[]), 11);
    refused(row, "configure '' on queue.declare", &got, 50, 10, &w.denied("queue", "q", &none));
    confirm(&mut r);
    let got = publish(&mut r, "", "q", "m");
    refused(
        row,
        "write '' on the default exchange",
        &got,
        60,
        40,
        &w.denied("exchange", "amq.default", &none),
    );
    let got = call(&mut r, 1, 60, 70, &basic_get("amq.rabbitmq.trace"), 72);
    refused(row, "read '' on basic.get", &got, 60, 70, &w.denied("queue", "amq.rabbitmq.trace", &none));
}

// ---------------------------------------------------------------------------
// topic permissions
// ---------------------------------------------------------------------------

#[test]
fn topic_permission_limits_publishing_routing_keys() {
    let mut w = World::new("topic-write");
    let mut admin = w.admin();
    make_exchange(&mut admin, "tx", "topic");
    make_exchange(&mut admin, "free", "topic");
    let u = w.user("u", "", ".*", ".*");
    w.s.set_topic_permissions(&u, &w.vhost, "tx", "^allowed\\.", ".*");
    let row = "topic write";
    let mut r = w.open(&u);
    confirm(&mut r);
    allowed(row, "routing key matches the write expression", &publish(&mut r, "tx", "allowed.1", "m"));
    allowed(row, "exchange without a topic permission", &publish(&mut r, "free", "denied.1", "m"));
    let got = publish(&mut r, "tx", "denied.1", "m");
    refused(
        row,
        "routing key outside the write expression",
        &got,
        60,
        40,
        &w.topic_denied("denied.1", "tx", &u),
    );
}

#[test]
fn topic_permission_limits_binding_keys() {
    let mut w = World::new("topic-read");
    let mut admin = w.admin();
    make_exchange(&mut admin, "tx", "topic");
    make_queue(&mut admin, "q");
    make_exchange(&mut admin, "dst", "fanout");
    let u = w.user("u", "", "^(q|dst)$", "^tx$");
    w.s.set_topic_permissions(&u, &w.vhost, "tx", ".*", "^allowed\\.");
    let row = "topic read (bindings)";
    let mut r = w.open(&u);
    allowed(
        row,
        "binding key matches the read expression",
        &call(&mut r, 1, 50, 20, &queue_bind("q", "tx", "allowed.#"), 21),
    );
    let got = call(&mut r, 1, 50, 20, &queue_bind("q", "tx", "denied.#"), 21);
    refused(
        row,
        "binding key outside the read expression",
        &got,
        50,
        20,
        &w.topic_denied("denied.#", "tx", &u),
    );
    let got = call(&mut r, 1, 50, 50, &queue_unbind("q", "tx", "denied.#"), 51);
    let text = w.topic_denied("denied.#", "tx", &u);
    refused(row, "queue.unbind, key outside the read expression", &got, 50, 50, &text);
    let got = call(&mut r, 1, 40, 30, &exchange_bind("dst", "tx", "denied.#"), 31);
    refused(row, "exchange.bind from it, key outside the read expression", &got, 40, 30, &text);
    let got = call(&mut r, 1, 40, 30, &exchange_bind("dst", "tx", "allowed.#"), 31);
    allowed(row, "exchange.bind from it, key matches the read expression", &got);
}

#[test]
fn topic_permission_expands_username_and_vhost() {
    let mut w = World::new("topic-vars");
    let mut admin = w.admin();
    make_exchange(&mut admin, "tx", "topic");
    make_queue(&mut admin, "q");
    let u = w.user("u", "", ".*", ".*");
    w.s.set_topic_permissions(&u, &w.vhost, "tx", "^{username}\\.", "^{vhost}\\.");
    let row = "topic {username}/{vhost}";
    let mine = format!("{u}.1");
    let vhost_key = format!("{}.1", w.vhost);
    let mut r = w.open(&u);
    confirm(&mut r);
    allowed(row, "publish with the user's name", &publish(&mut r, "tx", &mine, "m"));
    let got = publish(&mut r, "tx", "other.1", "m");
    refused(row, "publish without the user's name", &got, 60, 40, &w.topic_denied("other.1", "tx", &u));
    allowed(
        row,
        "bind with the vhost's name",
        &call(&mut r, 1, 50, 20, &queue_bind("q", "tx", &vhost_key), 21),
    );
    let got = call(&mut r, 1, 50, 20, &queue_bind("q", "tx", &mine), 21);
    refused(row, "bind without the vhost's name", &got, 50, 20, &w.topic_denied(&mine, "tx", &u));
}

// ---------------------------------------------------------------------------
// vhosts: isolation and access
// ---------------------------------------------------------------------------

fn lapin_uri(addr: SocketAddr, user: &str, vhost: &str) -> String {
    format!("amqp://{user}:{PASSWORD}@{addr}/{vhost}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_are_isolated() {
    use lapin::options::*;
    let mut w = World::new("isolation");
    let other = w.s.name("other");
    w.s.add_vhost(&other);
    let u = w.user("u", ".*", ".*", ".*");
    w.s.set_permissions(&u, &other, ".*", ".*", ".*");
    let row_name = "vhost isolation";
    let mut queues = Vec::new();
    for (vhost, body) in [(&w.vhost, "in-first"), (&other, "in-other")] {
        let conn = within(
            "lapin connect",
            lapin::Connection::connect(
                &lapin_uri(w.b.addr, &u, vhost),
                lapin::ConnectionProperties::default(),
            ),
        )
        .await
        .expect("lapin opens the vhost");
        let ch = within("channel", conn.create_channel()).await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        ch.queue_declare("q", QueueDeclareOptions::default(), Default::default())
            .await
            .expect("queue.declare");
        ch.exchange_declare(
            &format!("only-in-{body}"),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            Default::default(),
        )
        .await
        .expect("exchange.declare");
        publish_confirmed(&ch, "", "q", body, Default::default()).await;
        queues.push((conn, ch, body));
    }
    for (conn, ch, body) in &queues {
        let got = drain(ch, "q").await;
        row(
            row_name,
            &format!("queue 'q' in the vhost holding {body}"),
            &format!("[{body:?}]"),
            &format!("{got:?}"),
        );
        let theirs = if *body == "in-first" { "only-in-in-other" } else { "only-in-in-first" };
        let ch2 = conn.create_channel().await.expect("channel");
        let got = ch2
            .exchange_declare(
                theirs,
                lapin::ExchangeKind::Fanout,
                ExchangeDeclareOptions { passive: true, ..Default::default() },
                Default::default(),
            )
            .await;
        let code = got.as_ref().err().and_then(lapin_reply_code);
        row(row_name, "the other vhost's exchange is not here", "Some(404)", &format!("{code:?}"));
    }
}

#[test]
fn no_permission_on_the_vhost_refuses_connection_open() {
    let mut w = World::new("vhost-access");
    let u = w.s.name("u");
    w.s.add_user(&u, Some(PASSWORD), &[]);
    let row = "connection.open";
    let expect_530 = |vhost: &str| {
        format!(
            "connection.close 530 (10,40) \"NOT_ALLOWED - access to vhost '{vhost}' refused for user '{u}'\""
        )
    };
    let got = login(w.b.addr, Mechanism::Plain, &u, PASSWORD, &w.vhost, true);
    common::access::row(row, "no permission on the vhost", &expect_530(&w.vhost), &format!("{got:?}"));
    w.s.set_permissions(&u, &w.vhost, ".*", ".*", ".*");
    let got = login(w.b.addr, Mechanism::Plain, &u, PASSWORD, &w.vhost, true);
    common::access::row(row, "a permission on the vhost", "connection.open-ok", &format!("{got:?}"));
    w.s.clear_permissions(&u, &w.vhost);
    let got = login(w.b.addr, Mechanism::Plain, &u, PASSWORD, &w.vhost, true);
    common::access::row(row, "permission cleared", &expect_530(&w.vhost), &format!("{got:?}"));
    let admin = w.s.name("administrator");
    w.s.add_user(&admin, Some(PASSWORD), &["administrator"]);
    let got = login(w.b.addr, Mechanism::Plain, &admin, PASSWORD, &w.vhost, true);
    let expected = format!(
        "connection.close 530 (10,40) \"NOT_ALLOWED - access to vhost '{}' refused for user '{admin}'\"",
        w.vhost
    );
    common::access::row(row, "administrator tag, no permission on the vhost", &expected, &format!("{got:?}"));
    // A real client sees the same refusal.
    let uri = lapin_uri(w.b.addr, &u, &w.vhost);
    let got = runtime().block_on(async {
        match within("lapin connect", lapin::Connection::connect(&uri, Default::default())).await {
            Ok(_) => "connected".to_string(),
            Err(e) => format!("{:?} {}", lapin_reply_code(&e), lapin_reply_text(&e)),
        }
    });
    let expected = format!("Some(530) NOT_ALLOWED - access to vhost '{}' refused for user '{u}'", w.vhost);
    common::access::row(row, "lapin, no permission on the vhost", &expected, &got);
    let missing = w.s.name("missing");
    let got = login(w.b.addr, Mechanism::Plain, &u, PASSWORD, &missing, true);
    let expected = format!("connection.close 530 (10,40) \"NOT_ALLOWED - vhost {missing} not found\"");
    common::access::row(row, "vhost does not exist", &expected, &format!("{got:?}"));
}

// ---------------------------------------------------------------------------
// login
// ---------------------------------------------------------------------------

/// What a refused login gets with the `authentication_failure_close` capability.
fn login_refused(mechanism: Mechanism) -> String {
    let name = if mechanism == Mechanism::Plain { "PLAIN" } else { "AMQPLAIN" };
    format!(
        "connection.close 403 (0,0) \"ACCESS_REFUSED - Login was refused using authentication mechanism {name}. \
         For details see the broker logfile.\""
    )
}

/// Wrong password, unknown user, user without a password, with PLAIN and
/// AMQPLAIN, with `authentication_failure_close` (403 close) or without it
/// (dropped socket); and the right password logs in with both.
fn login_failures(test: &str, capability: bool) {
    let mut w = World::new(test);
    let u = w.user("u", ".*", ".*", ".*");
    let nopass = w.s.name("nopass");
    w.s.add_user(&nopass, None, &[]);
    w.s.set_permissions(&nopass, &w.vhost, ".*", ".*", ".*");
    let unknown = w.s.name("unknown");
    let row_name = if capability { "login (authentication_failure_close)" } else { "login (no capability)" };
    let cases: Vec<(Mechanism, &str, String, &str)> = [Mechanism::Plain, Mechanism::AmqPlain]
        .into_iter()
        .flat_map(|m| {
            [
                (m, "wrong password", u.clone(), "wrong"),
                (m, "unknown user", unknown.clone(), PASSWORD),
                (m, "user without a password, empty password", nopass.clone(), ""),
                (m, "user without a password, some password", nopass.clone(), PASSWORD),
            ]
        })
        .collect();
    // RabbitMQ waits 3 s before a silent drop: the cases run side by side.
    let (addr, vhost) = (w.b.addr, w.vhost.clone());
    let outcomes: Vec<(Mechanism, &str, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(m, what, user, pass)| {
                let vhost = &vhost;
                scope.spawn(move || {
                    (*m, *what, format!("{:?}", login(addr, *m, user, pass, vhost, capability)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("login thread")).collect()
    });
    for (m, what, got) in outcomes {
        let expected =
            if capability { login_refused(m) } else { "socket closed without connection.close".into() };
        common::access::row(row_name, &format!("{m:?}, {what}"), &expected, &got);
    }
    for m in [Mechanism::Plain, Mechanism::AmqPlain] {
        let got = format!("{:?}", login(addr, m, &u, PASSWORD, &vhost, capability));
        common::access::row(row_name, &format!("{m:?}, right password"), "connection.open-ok", &got);
    }
}

#[test]
fn failed_login_with_authentication_failure_close_is_a_403_close() {
    login_failures("login-close", true);
}

#[test]
fn failed_login_without_the_capability_drops_the_socket() {
    login_failures("login-drop", false);
}

/// This machine's first non-loopback IPv4 address, if it has one (the
/// source address of a route; nothing is sent).
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    ["192.0.2.1:9", "10.255.255.254:9", "172.31.255.254:9", "192.168.255.254:9", "8.8.8.8:53"]
        .into_iter()
        .find_map(|target| {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
            socket.connect(target).ok()?;
            let ip = socket.local_addr().ok()?.ip();
            (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
        })
}

#[test]
fn guest_is_refused_from_a_non_loopback_address() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("skipped: this machine has no non-loopback IPv4 address to connect from");
        return;
    };
    // Lepus must listen on that address too (the default test broker is on loopback).
    let b = if external() {
        start_broker()
    } else {
        start_broker_with(|c| c.listen = vec![SocketAddr::from(([0, 0, 0, 0], 0))])
    };
    let addr = SocketAddr::new(ip, b.addr.port());
    let row_name = "guest from a non-loopback address";
    for capability in [true, false] {
        let got = format!("{:?}", login(addr, Mechanism::Plain, "guest", "guest", "/", capability));
        let expected = if capability {
            login_refused(Mechanism::Plain)
        } else {
            "socket closed without connection.close".into()
        };
        common::access::row(row_name, &format!("from {ip}, capability {capability}"), &expected, &got);
    }
    let loopback = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), b.addr.port());
    let got = format!("{:?}", login(loopback, Mechanism::Plain, "guest", "guest", "/", true));
    common::access::row(row_name, "from loopback", "connection.open-ok", &got);
}

// ---------------------------------------------------------------------------
// limits
// ---------------------------------------------------------------------------

#[test]
fn vhost_max_connections() {
    let mut w = World::new("vhost-max-conns");
    let u = w.user("u", ".*", ".*", ".*");
    w.s.set_vhost_limits(&w.vhost, Some(1), None);
    let row_name = "vhost max-connections";
    let mut first = w.open(&u);
    let got = format!("{:?}", login(w.b.addr, Mechanism::Plain, &u, PASSWORD, &w.vhost, true));
    let expected = format!(
        "connection.close 530 (10,40) \"NOT_ALLOWED - access to vhost '{}' refused for user '{u}': connection limit (1) is reached\"",
        w.vhost
    );
    common::access::row(row_name, "second connection, limit 1", &expected, &got);
    first.close();
    let got = await_login(w.b.addr, &u, &w.vhost);
    common::access::row(row_name, "a new connection once the first closed", "connection.open-ok", &got);
}

/// Logs in as `user` until the broker lets it open `vhost` (a limit just
/// made free: RabbitMQ forgets a closed connection asynchronously, and
/// nothing announces it), bounded by [`SAFETY`]; returns the last outcome.
fn await_login(addr: SocketAddr, user: &str, vhost: &str) -> String {
    let deadline = std::time::Instant::now() + SAFETY;
    loop {
        let got = format!("{:?}", login(addr, Mechanism::Plain, user, PASSWORD, vhost, true));
        if got == "connection.open-ok" || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn vhost_max_queues() {
    let mut w = World::new("vhost-max-queues");
    let u = w.user("u", ".*", ".*", ".*");
    w.s.set_vhost_limits(&w.vhost, None, Some(1));
    let row_name = "vhost max-queues";
    let mut r = w.open(&u);
    allowed(row_name, "first queue, limit 1", &call(&mut r, 1, 50, 10, &queue_declare("q1", false, &[]), 11));
    let got = call(&mut r, 1, 50, 10, &queue_declare("q2", false, &[]), 11);
    let expected = format!(
        "channel.close 406 (50,10) \"PRECONDITION_FAILED - cannot declare queue 'q2': queue limit in vhost '{}' (1) is reached\"",
        w.vhost
    );
    row_result(row_name, "second queue, limit 1", &expected, &got);
    allowed(
        row_name,
        "redeclaring the first queue",
        &call(&mut r, 1, 50, 10, &queue_declare("q1", false, &[]), 11),
    );
    call(&mut r, 1, 50, 40, &queue_delete("q1"), 41).expect("queue.delete");
    let got = call(&mut r, 1, 50, 10, &queue_declare("q2", false, &[]), 11);
    allowed(row_name, "second queue once the first is deleted", &got);
}

#[test]
fn user_max_connections() {
    let mut w = World::new("user-max-conns");
    let u = w.user("u", ".*", ".*", ".*");
    w.s.set_user_limits(&u, Some(1), None);
    let row_name = "user max-connections";
    let mut first = w.open(&u);
    let got = format!("{:?}", login(w.b.addr, Mechanism::Plain, &u, PASSWORD, &w.vhost, true));
    let expected = format!(
        "connection.close 530 (10,40) \"NOT_ALLOWED - connection refused for user '{u}': user connection limit (1) is reached\""
    );
    common::access::row(row_name, "second connection, limit 1", &expected, &got);
    // Counted over all vhosts.
    let other = w.s.name("other");
    w.s.add_vhost(&other);
    w.s.set_permissions(&u, &other, ".*", ".*", ".*");
    let got = format!("{:?}", login(w.b.addr, Mechanism::Plain, &u, PASSWORD, &other, true));
    common::access::row(row_name, "second connection, to another vhost", &expected, &got);
    first.close();
    let got = await_login(w.b.addr, &u, &w.vhost);
    common::access::row(row_name, "a new connection once the first closed", "connection.open-ok", &got);
}

#[test]
fn user_max_channels() {
    let mut w = World::new("user-max-chans");
    let u = w.user("u", ".*", ".*", ".*");
    w.s.set_user_limits(&u, None, Some(1));
    let row_name = "user max-channels";
    let expected = format!(
        "connection.close 530 (0,0) \"NOT_ALLOWED - number of channels opened for user '{u}' has reached the maximum allowed user limit of (1)\""
    );
    let channel_open = Args::new().shortstr("").build();
    let mut other = match login(w.b.addr, Mechanism::Plain, &u, PASSWORD, &w.vhost, true) {
        Login::Open(raw) => raw,
        got => panic!("{u} could not open a connection: {got:?}"),
    };
    // `open` opens channel 1.
    let mut r = w.open(&u);
    let got = call(&mut other, 1, 20, 10, &channel_open, 11);
    row_result(row_name, "a channel on another connection, limit 1", &expected, &got);
    let got = call(&mut r, 2, 20, 10, &channel_open, 11);
    row_result(row_name, "second channel on the same connection, limit 1", &expected, &got);
}

// ---------------------------------------------------------------------------
// user-id
// ---------------------------------------------------------------------------

#[test]
fn user_id_property_must_name_the_user() {
    let mut w = World::new("user-id");
    let mut admin = w.admin();
    make_queue(&mut admin, "q");
    let u = w.user("u", "", ".*", "");
    let row_name = "basic.publish user-id";
    let mut r = w.open(&u);
    confirm(&mut r);
    let with_user_id = |r: &mut Raw, user_id: &str| {
        let mut frames = method_frame(1, 60, 40, &basic_publish_args("", "q", false));
        // Property flag 0x0010: user-id, a short string.
        frames.extend(header_frame(1, 1, 0x0010, &Args::new().shortstr(user_id).build()));
        frames.extend(body_frame(1, b"m"));
        r.send(&frames);
        answer(r, 1, 60, 80)
    };
    allowed(row_name, "user-id is the user's name", &with_user_id(&mut r, &u));
    let got = with_user_id(&mut r, "someone-else");
    let expected = format!(
        "channel.close 406 (60,40) \"PRECONDITION_FAILED - user_id property set to 'someone-else' but authenticated user was '{u}'\""
    );
    row_result(row_name, "user-id names another user", &expected, &got);
}

// ---------------------------------------------------------------------------
// vhost deletion
// ---------------------------------------------------------------------------

#[test]
fn deleting_a_vhost_closes_its_connections_and_removes_everything() {
    let mut w = World::new("vhost-delete");
    let u = w.user("u", ".*", ".*", ".*");
    // A bystander vhost, whose connection must not notice.
    let other = w.s.name("bystander");
    w.s.add_vhost(&other);
    w.s.set_permissions(&u, &other, ".*", ".*", ".*");
    let row_name = "vhost deletion";
    let mut r = w.open(&u);
    let durable =
        Args::new().u16(0).shortstr("q").bits(&[false, true, false, false, false]).table(&[]).build();
    call(&mut r, 1, 50, 10, &durable, 11).expect("durable queue.declare");
    let durable_x = Args::new()
        .u16(0)
        .shortstr("x")
        .shortstr("fanout")
        .bits(&[false, true, false, false, false])
        .table(&[])
        .build();
    call(&mut r, 1, 40, 10, &durable_x, 11).expect("durable exchange.declare");
    confirm(&mut r);
    // Persistent (delivery-mode 2) message.
    let mut frames = method_frame(1, 60, 40, &basic_publish_args("", "q", false));
    frames.extend(header_frame(1, 4, 0x1000, &[2]));
    frames.extend(body_frame(1, b"kept"));
    r.send(&frames);
    answer(&mut r, 1, 60, 80).expect("publish confirmed");
    let mut bystander = open(w.b.addr, &u, PASSWORD, &other);

    let vhost = w.vhost.clone();
    w.s.delete_vhost(&vhost);
    let close = r.expect_close_info();
    r.send_method(0, 10, 51, &[]);
    // RabbitMQ closes them on its vhost_deleted event ("is deleted") or, when
    // its vhost_down event comes first, with "is down"; Lepus says "is deleted".
    let deleted = format!("connection.close 320 (0,0) \"CONNECTION_FORCED - vhost '{vhost}' is deleted\"");
    let down = format!("connection.close 320 (0,0) \"CONNECTION_FORCED - vhost '{vhost}' is down\"");
    row_one_of(row_name, "open connection on the vhost", &[&deleted, &down], &describe(&close));
    bystander.ping(1);
    common::access::row(row_name, "connection on another vhost", "still open", "still open");

    let got = format!("{:?}", login(w.b.addr, Mechanism::Plain, &u, PASSWORD, &vhost, true));
    let expected = format!("connection.close 530 (10,40) \"NOT_ALLOWED - vhost {vhost} not found\"");
    common::access::row(row_name, "connection.open after the deletion", &expected, &got);

    if !external() {
        // Lepus only: a restart on the same data directory brings nothing back.
        drop(bystander);
        w.b.restart();
        w.s.reattach(&w.b);
        let topology = w.b.registry().expect("in-process broker").load();
        let back = if topology.vhosts.contains_key(&vhost) { "back" } else { "gone" };
        common::access::row(row_name, "after a restart: the vhost", "gone", back);
        // Its durable queue was not recovered into any vhost either.
        let mut holding: Vec<&String> = topology
            .vhosts
            .iter()
            .filter(|(_, v)| v.queues.contains_key(b"q".as_slice()))
            .map(|(n, _)| n)
            .collect();
        holding.sort();
        common::access::row(
            row_name,
            "after a restart: vhosts with a queue 'q'",
            "[]",
            &format!("{holding:?}"),
        );
    }
    // Made again under the same name, the vhost is empty.
    w.s.add_vhost(&vhost);
    if !external() {
        // Until users are durable, the restart forgot them.
        w.s.add_user(&u, Some(PASSWORD), &[]);
    }
    w.s.set_permissions(&u, &vhost, ".*", ".*", ".*");
    let mut r = open(w.b.addr, &u, PASSWORD, &vhost);
    let got = call(&mut r, 1, 50, 10, &queue_declare("q", true, &[]), 11);
    let expected = format!("channel.close 404 (50,10) \"NOT_FOUND - no queue 'q' in vhost '{vhost}'\"");
    row_result(row_name, "the queue, in the vhost made again", &expected, &got);
    let got = call(&mut r, 1, 40, 10, &exchange_declare("x", "fanout", true, &[]), 11);
    let expected = format!("channel.close 404 (40,10) \"NOT_FOUND - no exchange 'x' in vhost '{vhost}'\"");
    row_result(row_name, "the exchange, in the vhost made again", &expected, &got);
    // The same durable queue declared again: none of the old messages.
    let held = |r: &mut Raw| {
        let ok = call(r, 1, 50, 10, &durable, 11).expect("durable queue.declare");
        let mut c = Cursor::new(&ok);
        let _name = c.shortstr();
        format!("{} messages", c.u32())
    };
    common::access::row(row_name, "the queue declared again holds", "0 messages", &held(&mut r));
    if !external() {
        // And a restart brings none of them back into it.
        drop(r);
        w.b.restart();
        w.s.reattach(&w.b);
        w.s.add_vhost(&vhost);
        w.s.add_user(&u, Some(PASSWORD), &[]);
        w.s.set_permissions(&u, &vhost, ".*", ".*", ".*");
        let mut r = open(w.b.addr, &u, PASSWORD, &vhost);
        common::access::row(
            row_name,
            "the queue declared again, after a restart",
            "0 messages",
            &held(&mut r),
        );
    }
}
