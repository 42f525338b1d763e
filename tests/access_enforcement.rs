//! The access model enforced over real sockets: login against the users of
//! the topology snapshot, vhost access and the connection, channel and queue
//! limits, and each permission check where RabbitMQ 3.10 makes it, with its
//! reply codes and texts (each text below was read from RabbitMQ 3.10.8 set
//! up the same way with rabbitmqctl).
//!
//! In-process only: the users and permissions are set through
//! `Server::change_access`, which an external broker does not have.

mod common;

use common::*;
use lepus::access::{
    AccessChange, PasswordHash, Permission, TopicPermission, User, UserLimits, VhostSettings,
};

/// The vhost the tests' user works in.
const VHOST: &str = "enf-v";

/// A broker with the default user (guest, every permission on "/"), and in
/// `enf-v`: `u` (password `p`) whose names must start with c- (configure),
/// w- (write, plus amq.topic and amq.default) and r- (read, plus amq.topic),
/// with topic permissions on amq.topic; `nop` (password `p`) with no
/// permission; `certonly` without password; `boss`, an impersonator with
/// every permission.
struct Fixture {
    server: lepus::Server,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

fn user(name: &str, password: Option<&str>, tags: &[&str]) -> AccessChange {
    AccessChange::PutUser(User {
        name: name.into(),
        password: password.map(PasswordHash::new_sha256),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        limits: UserLimits::default(),
    })
}

fn permission(user: &str, configure: &str, write: &str, read: &str) -> AccessChange {
    AccessChange::SetPermission {
        user: user.into(),
        vhost: VHOST.into(),
        permission: Permission { configure: configure.into(), write: write.into(), read: read.into() },
    }
}

fn fixture() -> Option<Fixture> {
    if external() {
        return None;
    }
    let dir = tempfile::Builder::new().prefix("lepus-enf-").tempdir().expect("temporary data dir");
    let server = lepus::Server::start(in_process_config(dir.path())).expect("lepus starts");
    server.create_vhost(VHOST, lepus::access::VhostSettings::default()).expect("vhost created");
    let changes = [
        user("u", Some("p"), &[]),
        user("nop", Some("p"), &[]),
        user("certonly", None, &[]),
        user("boss", Some("p"), &["impersonator"]),
        permission("u", "^c-", "^w-|^amq\\.topic$|^amq\\.default$", "^r-|^amq\\.topic$"),
        permission("certonly", ".*", ".*", ".*"),
        permission("boss", ".*", ".*", ".*"),
        AccessChange::SetTopicPermission {
            user: "u".into(),
            vhost: VHOST.into(),
            exchange: "amq.topic".into(),
            permission: TopicPermission {
                write: "^w\\.{username}\\.".into(),
                read: "^r\\.{vhost}\\.".into(),
            },
        },
    ];
    for change in &changes {
        server.change_access(change).expect("fixture change");
    }
    let addr = server.local_addrs()[0];
    Some(Fixture { server, addr, _dir: dir })
}

/// A raw connection logged in as `user`/`password` with the
/// `authentication_failure_close` capability, up to connection.open.
fn login(f: &Fixture, user: &str, password: &str) -> Raw {
    let mut raw = Raw::connect(f.addr);
    raw.send_protocol_header();
    raw.read_start();
    raw.send_start_ok("PLAIN", format!("\0{user}\0{password}").as_bytes(), true);
    let (cm, fm, hb) = raw.read_tune();
    raw.send_tune_ok(cm, fm, hb);
    raw
}

/// Logged in as `user` (password "p"), `vhost` open, channel 1 open.
fn open(f: &Fixture, user: &str) -> Raw {
    let mut raw = login(f, user, "p");
    raw.send_open(VHOST);
    raw.expect_method(0, 10, 41);
    raw.open_channel(1);
    raw
}

fn refused_text(kind: &str, name: &str, user: &str) -> String {
    format!("ACCESS_REFUSED - access to {kind} '{name}' in vhost '{VHOST}' refused for user '{user}'")
}

/// Sends one method on channel 1 and expects channel.close 403 with `text`
/// naming (class, method).
fn expect_refused(raw: &mut Raw, (class, method): (u16, u16), args: &[u8], text: &str) {
    raw.send_method(1, class, method, args);
    let close = raw.expect_channel_close(1, 403, text);
    assert_eq!(close.reply_text, text);
    assert_eq!((close.failing_class, close.failing_method), (class, method), "{close:?}");
}

fn declare_args(name: &str, passive: bool, arguments: &[(&str, Field)]) -> Vec<u8> {
    Args::new().u16(0).shortstr(name).bits(&[passive, false, false, false, false]).table(arguments).build()
}

fn exchange_declare_args(name: &str, kind: &str, passive: bool, arguments: &[(&str, Field)]) -> Vec<u8> {
    Args::new()
        .u16(0)
        .shortstr(name)
        .shortstr(kind)
        .bits(&[passive, false, false, false, false])
        .table(arguments)
        .build()
}

fn bind_args(queue: &str, exchange: &str, key: &str) -> Vec<u8> {
    Args::new().u16(0).shortstr(queue).shortstr(exchange).shortstr(key).bits(&[false]).table(&[]).build()
}

/// queue.unbind has no no-wait bit.
fn unbind_args(queue: &str, exchange: &str, key: &str) -> Vec<u8> {
    Args::new().u16(0).shortstr(queue).shortstr(exchange).shortstr(key).table(&[]).build()
}

fn exchange_bind_args(destination: &str, source: &str, key: &str) -> Vec<u8> {
    Args::new().u16(0).shortstr(destination).shortstr(source).shortstr(key).bits(&[false]).table(&[]).build()
}

/// As guest (every permission on "/"), declares in `enf-v` what the tests
/// need: guest gets every permission there first.
fn prepare(f: &Fixture, queues: &[&str], exchanges: &[(&str, &str)]) {
    f.server.change_access(&permission("guest", ".*", ".*", ".*")).expect("guest permission");
    let mut raw = login(f, "guest", "guest");
    raw.send_open(VHOST);
    raw.expect_method(0, 10, 41);
    raw.open_channel(1);
    for queue in queues {
        raw.send_method(1, 50, 10, &declare_args(queue, false, &[]));
        raw.expect_method(1, 50, 11);
    }
    for (exchange, kind) in exchanges {
        raw.send_method(1, 40, 10, &exchange_declare_args(exchange, kind, false, &[]));
        raw.expect_method(1, 40, 11);
    }
}

#[test]
fn failed_logins_answer_as_rabbitmq() {
    let Some(f) = fixture() else { return };
    let text = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.";
    for (response, caps) in [
        (&b"\0u\0wrong"[..], true),
        (b"\0nobody\0p", true),
        (b"\0certonly\0", true),
        (b"\0certonly\0anything", true),
        (b"\0u\0wrong", false),
    ] {
        let mut raw = Raw::connect(f.addr);
        raw.send_protocol_header();
        let start = raw.read_start();
        assert_eq!(start.mechanisms, "PLAIN AMQPLAIN", "no EXTERNAL over plain TCP");
        raw.send_start_ok("PLAIN", response, caps);
        if caps {
            let close = raw.expect_connection_close(403, text);
            assert_eq!(close.reply_text, text);
        } else {
            raw.expect_eof();
        }
    }
    // EXTERNAL is not offered without TLS: the socket closes without a word.
    let mut raw = Raw::connect(f.addr);
    raw.send_protocol_header();
    raw.read_start();
    raw.send_start_ok("EXTERNAL", b"", true);
    raw.expect_eof();
    // The hash in the snapshot is what counts: a new password works at once.
    f.server.change_access(&user("u", Some("new"), &[])).expect("new password");
    let mut raw = login(&f, "u", "new");
    raw.send_open(VHOST);
    raw.expect_method(0, 10, 41);
}

#[test]
fn connection_open_needs_a_permission_on_the_vhost() {
    let Some(f) = fixture() else { return };
    let mut raw = login(&f, "nop", "p");
    raw.send_open(VHOST);
    let text = format!("NOT_ALLOWED - access to vhost '{VHOST}' refused for user 'nop'");
    let close = raw.expect_connection_close(530, &text);
    assert_eq!(
        (close.reply_text.as_str(), close.failing_class, close.failing_method),
        (text.as_str(), 10, 40)
    );
    // u has no permission on "/".
    let mut raw = login(&f, "u", "p");
    raw.send_open("/");
    raw.expect_connection_close(530, "NOT_ALLOWED - access to vhost '/' refused for user 'u'");
    let mut raw = login(&f, "u", "p");
    raw.send_open("enf-nowhere");
    raw.expect_connection_close(530, "NOT_ALLOWED - vhost enf-nowhere not found");
}

#[test]
fn vhost_and_user_connection_limits() {
    let Some(f) = fixture() else { return };
    let settings = VhostSettings {
        limits: lepus::access::VhostLimits { max_connections: Some(1), max_queues: None },
        ..Default::default()
    };
    f.server.change_access(&AccessChange::PutVhostSettings(VHOST.into(), settings)).expect("vhost limit");
    let first = open(&f, "u");
    let mut second = login(&f, "u", "p");
    second.send_open(VHOST);
    let text = format!(
        "NOT_ALLOWED - access to vhost '{VHOST}' refused for user 'u': connection limit (1) is reached"
    );
    assert_eq!(second.expect_connection_close(530, &text).reply_text, text);
    // A closed connection gives its place back.
    close(first);
    close(open(&f, "u"));

    f.server
        .change_access(&AccessChange::PutVhostSettings(VHOST.into(), VhostSettings::default()))
        .expect("no limit");
    let limits = UserLimits { max_connections: Some(1), max_channels: None };
    f.server
        .change_access(&AccessChange::PutUser(User {
            name: "u".into(),
            password: Some(PasswordHash::new_sha256("p")),
            tags: vec![],
            limits,
        }))
        .expect("user limit");
    let _first = open(&f, "u");
    let mut second = login(&f, "u", "p");
    second.send_open(VHOST);
    let text = "NOT_ALLOWED - connection refused for user 'u': user connection limit (1) is reached";
    assert_eq!(second.expect_connection_close(530, text).reply_text, text);
}

/// Closes a connection and waits for close-ok: the broker has released it
/// (and given back its places under the limits) before it answers.
fn close(mut raw: Raw) {
    raw.send_method(0, 10, 50, &Args::new().u16(200).shortstr("").u16(0).u16(0).build());
    raw.expect_method(0, 10, 51);
}

#[test]
fn user_channel_limit_closes_the_connection() {
    let Some(f) = fixture() else { return };
    let limits = UserLimits { max_connections: None, max_channels: Some(2) };
    let u = User { name: "u".into(), password: Some(PasswordHash::new_sha256("p")), tags: vec![], limits };
    f.server.change_access(&AccessChange::PutUser(u)).expect("user limit");
    let mut raw = open(&f, "u");
    raw.open_channel(2);
    // Closing a channel gives its place back.
    raw.send_method(2, 20, 40, &Args::new().u16(200).shortstr("").u16(0).u16(0).build());
    raw.expect_method(2, 20, 41);
    raw.open_channel(3);
    raw.send_method(4, 20, 10, &Args::new().shortstr("").build());
    let text = "NOT_ALLOWED - number of channels opened for user 'u' has reached the maximum allowed user limit of (2)";
    let close = raw.expect_connection_close(530, text);
    assert_eq!((close.reply_text.as_str(), close.failing_class, close.failing_method), (text, 0, 0));
}

#[test]
fn vhost_queue_limit() {
    let Some(f) = fixture() else { return };
    let limits = lepus::access::VhostLimits { max_connections: None, max_queues: Some(1) };
    let settings = VhostSettings { limits, ..Default::default() };
    f.server.change_access(&AccessChange::PutVhostSettings(VHOST.into(), settings)).expect("queue limit");
    let mut raw = open(&f, "u");
    raw.send_method(1, 50, 10, &declare_args("c-1", false, &[]));
    raw.expect_method(1, 50, 11);
    // Redeclaring an existing queue is no new queue.
    raw.send_method(1, 50, 10, &declare_args("c-1", false, &[]));
    raw.expect_method(1, 50, 11);
    raw.send_method(1, 50, 10, &declare_args("c-2", false, &[]));
    let text = format!(
        "PRECONDITION_FAILED - cannot declare queue 'c-2': queue limit in vhost '{VHOST}' (1) is reached"
    );
    assert_eq!(raw.expect_channel_close(1, 406, &text).reply_text, text);
}

#[test]
fn declares_and_deletes_need_configure() {
    let Some(f) = fixture() else { return };
    prepare(&f, &["r-q"], &[]);
    let mut raw = open(&f, "u");
    // Passive declares check nothing.
    raw.send_method(1, 50, 10, &declare_args("r-q", true, &[]));
    raw.expect_method(1, 50, 11);
    raw.send_method(1, 40, 10, &exchange_declare_args("amq.direct", "direct", true, &[]));
    raw.expect_method(1, 40, 11);
    raw.send_method(1, 50, 10, &declare_args("c-ok", false, &[]));
    raw.expect_method(1, 50, 11);
    expect_refused(&mut raw, (50, 10), &declare_args("x-q", false, &[]), &refused_text("queue", "x-q", "u"));
    raw.open_channel(1);
    // A server-named queue is checked under its generated name.
    raw.send_method(1, 50, 10, &declare_args("", false, &[]));
    let close = raw.expect_channel_close(1, 403, "ACCESS_REFUSED - access to queue 'amq.gen-");
    assert!(close.reply_text.ends_with(&format!("' in vhost '{VHOST}' refused for user 'u'")), "{close:?}");
    raw.open_channel(1);
    expect_refused(
        &mut raw,
        (40, 10),
        &exchange_declare_args("x-e", "direct", false, &[]),
        &refused_text("exchange", "x-e", "u"),
    );
    raw.open_channel(1);
    let delete_exchange = Args::new().u16(0).shortstr("x-e").bits(&[false, false]).build();
    expect_refused(&mut raw, (40, 20), &delete_exchange, &refused_text("exchange", "x-e", "u"));
    raw.open_channel(1);
    // Checked before the queue is looked up: a missing queue is refused too.
    let delete_queue = Args::new().u16(0).shortstr("r-nothing").bits(&[false, false, false]).build();
    expect_refused(&mut raw, (50, 40), &delete_queue, &refused_text("queue", "r-nothing", "u"));
}

#[test]
fn dead_letter_and_alternate_exchanges_are_checked_at_declare() {
    let Some(f) = fixture() else { return };
    let mut raw = open(&f, "u");
    let dlx = |name: &str| vec![("x-dead-letter-exchange", Field::LongStr(name.as_bytes().to_vec()))];
    // Read on the queue comes first (c-dl is not readable).
    expect_refused(
        &mut raw,
        (50, 10),
        &declare_args("c-dl", false, &dlx("w-x")),
        &refused_text("queue", "c-dl", "u"),
    );
    raw.open_channel(1);
    f.server.change_access(&permission("u", "^c-", "^w-", "^r-|^c-")).expect("read c-");
    let mut raw = open(&f, "u");
    expect_refused(
        &mut raw,
        (50, 10),
        &declare_args("c-dl", false, &dlx("x-x")),
        &refused_text("exchange", "x-x", "u"),
    );
    raw.open_channel(1);
    raw.send_method(1, 50, 10, &declare_args("c-dl", false, &dlx("w-x")));
    raw.expect_method(1, 50, 11);
    let ae = |name: &str| vec![("alternate-exchange", Field::LongStr(name.as_bytes().to_vec()))];
    expect_refused(
        &mut raw,
        (40, 10),
        &exchange_declare_args("c-ae", "direct", false, &ae("x-x")),
        &refused_text("exchange", "x-x", "u"),
    );
    raw.open_channel(1);
    raw.send_method(1, 40, 10, &exchange_declare_args("c-ae", "direct", false, &ae("w-x")));
    raw.expect_method(1, 40, 11);
}

#[test]
fn bindings_need_write_on_the_destination_and_read_on_the_source() {
    let Some(f) = fixture() else { return };
    prepare(&f, &["w-q", "r-q"], &[("w-e", "direct"), ("r-e", "direct")]);
    let mut raw = open(&f, "u");
    expect_refused(&mut raw, (50, 20), &bind_args("r-q", "r-e", "k"), &refused_text("queue", "r-q", "u"));
    raw.open_channel(1);
    expect_refused(&mut raw, (50, 20), &bind_args("w-q", "w-e", "k"), &refused_text("exchange", "w-e", "u"));
    raw.open_channel(1);
    raw.send_method(1, 50, 20, &bind_args("w-q", "r-e", "k"));
    raw.expect_method(1, 50, 21);
    expect_refused(&mut raw, (50, 50), &unbind_args("r-q", "r-e", "k"), &refused_text("queue", "r-q", "u"));
    raw.open_channel(1);
    raw.send_method(1, 50, 50, &unbind_args("w-q", "r-e", "k"));
    raw.expect_method(1, 50, 51);
    expect_refused(
        &mut raw,
        (40, 30),
        &exchange_bind_args("r-e", "r-e", "k"),
        &refused_text("exchange", "r-e", "u"),
    );
    raw.open_channel(1);
    expect_refused(
        &mut raw,
        (40, 30),
        &exchange_bind_args("w-e", "w-e", "k"),
        &refused_text("exchange", "w-e", "u"),
    );
    raw.open_channel(1);
    raw.send_method(1, 40, 30, &exchange_bind_args("w-e", "r-e", "k"));
    raw.expect_method(1, 40, 31);
}

#[test]
fn publish_needs_write_and_consuming_needs_read() {
    let Some(f) = fixture() else { return };
    prepare(&f, &["w-q", "r-q"], &[("w-e", "fanout"), ("r-e", "fanout")]);
    let mut raw = open(&f, "u");
    // A run of publishes to a writable exchange, then one that is not.
    for _ in 0..3 {
        raw.send(&publish_frames(1, "w-e", "k", b"x"));
    }
    raw.send(&publish_frames(1, "r-e", "k", b"x"));
    let text = refused_text("exchange", "r-e", "u");
    let close = raw.expect_channel_close(1, 403, &text);
    assert_eq!(
        (close.reply_text.as_str(), close.failing_class, close.failing_method),
        (text.as_str(), 60, 40)
    );
    raw.open_channel(1);
    // In a transaction too, at publish, not at commit.
    raw.send_method(1, 90, 10, &[]);
    raw.expect_method(1, 90, 11);
    raw.send(&publish_frames(1, "w-e", "k", b"x"));
    raw.send(&publish_frames(1, "r-e", "k", b"x"));
    raw.expect_channel_close(1, 403, &text);
    raw.open_channel(1);
    // Checked before the exchange is looked up.
    raw.send(&publish_frames(1, "x-none", "k", b"x"));
    raw.expect_channel_close(1, 403, &refused_text("exchange", "x-none", "u"));
    raw.open_channel(1);
    f.server.change_access(&permission("u", "^c-", "^w-", "^r-")).expect("no amq.default");
    raw.open_channel(2);
    raw.send(&publish_frames(2, "", "r-q", b"x"));
    raw.expect_channel_close(2, 403, &refused_text("exchange", "amq.default", "u"));
    let get = |queue: &str| Args::new().u16(0).shortstr(queue).bits(&[true]).build();
    expect_refused(&mut raw, (60, 70), &get("w-q"), &refused_text("queue", "w-q", "u"));
    raw.open_channel(1);
    expect_refused(
        &mut raw,
        (60, 20),
        &basic_consume_args("w-q", "t", true),
        &refused_text("queue", "w-q", "u"),
    );
    raw.open_channel(1);
    let purge = Args::new().u16(0).shortstr("w-q").bits(&[false]).build();
    expect_refused(&mut raw, (50, 30), &purge, &refused_text("queue", "w-q", "u"));
    raw.open_channel(1);
    raw.send_method(1, 60, 70, &get("r-q"));
    raw.expect_method(1, 60, 72);
}

#[test]
fn topic_permissions_check_routing_and_binding_keys() {
    let Some(f) = fixture() else { return };
    prepare(&f, &["w-q"], &[]);
    let mut raw = open(&f, "u");
    raw.send(&publish_frames(1, "amq.topic", "w.u.ok", b"x"));
    raw.send(&publish_frames(1, "amq.topic", "w.other.no", b"x"));
    let text = format!("ACCESS_REFUSED - access to topic 'w.other.no' in exchange 'amq.topic' in vhost '{VHOST}' refused for user 'u'");
    assert_eq!(raw.expect_channel_close(1, 403, &text).reply_text, text);
    raw.open_channel(1);
    raw.send_method(1, 50, 20, &bind_args("w-q", "amq.topic", &format!("r.{VHOST}.x")));
    raw.expect_method(1, 50, 21);
    let text = format!("ACCESS_REFUSED - access to topic 'r.other.x' in exchange 'amq.topic' in vhost '{VHOST}' refused for user 'u'");
    expect_refused(&mut raw, (50, 20), &bind_args("w-q", "amq.topic", "r.other.x"), &text);
}

#[test]
fn user_id_must_be_the_user_unless_impersonator() {
    let Some(f) = fixture() else { return };
    prepare(&f, &["w-q"], &[]);
    let publish = |raw: &mut Raw, user_id: &str| {
        let mut frames = method_frame(1, 60, 40, &basic_publish_args("", "w-q", false));
        let props = Args::new().shortstr(user_id).build();
        frames.extend(header_frame(1, 1, 0x0010, &props));
        frames.extend(body_frame(1, b"x"));
        raw.send(&frames);
    };
    let mut raw = open(&f, "u");
    publish(&mut raw, "u");
    publish(&mut raw, "bob");
    let text = "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'u'";
    assert_eq!(raw.expect_channel_close(1, 406, text).reply_text, text);
    let mut boss = open(&f, "boss");
    publish(&mut boss, "bob");
    boss.send_method(1, 50, 10, &declare_args("w-q", true, &[]));
    let ok = boss.expect_method(1, 50, 11);
    let mut ok = Cursor::new(&ok);
    assert_eq!((ok.shortstr(), ok.u32()), ("w-q".to_owned(), 2), "both allowed publishes arrived");
}

#[test]
fn permissions_changed_apply_to_channels_opened_later() {
    let Some(f) = fixture() else { return };
    let mut raw = open(&f, "u");
    raw.send_method(1, 50, 10, &declare_args("c-a", false, &[]));
    raw.expect_method(1, 50, 11);
    f.server
        .change_access(&AccessChange::ClearPermission { user: "u".into(), vhost: VHOST.into() })
        .expect("clear");
    raw.open_channel(2);
    raw.send_method(2, 50, 10, &declare_args("c-b", false, &[]));
    raw.expect_channel_close(2, 403, &refused_text("queue", "c-b", "u"));
}

#[test]
fn an_empty_queue_name_without_a_declared_queue_is_404_before_any_check() {
    let Some(f) = fixture() else { return };
    let mut raw = open(&f, "u");
    let get = Args::new().u16(0).shortstr("").bits(&[true]).build();
    raw.send_method(1, 60, 70, &get);
    let text = "NOT_FOUND - no previously declared queue";
    assert_eq!(raw.expect_channel_close(1, 404, text).reply_text, text);
}
