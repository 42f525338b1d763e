//! Durable access and RabbitMQ definitions files: a real RabbitMQ 3.10
//! export (`tests/data/rabbitmq-3.10-definitions.json`, made with
//! `rabbitmqctl export_definitions` from the reference broker) imports with
//! every entity; Lepus's export imports back into Lepus unchanged; users,
//! permissions and vhosts survive restarts and `kill -9`; the default user
//! and vhost are made on the first start only; deleting a vhost closes its
//! connections (320) and leaves nothing of its queues and messages, on disk
//! or after a restart.
//!
//! The export was made on RabbitMQ 3.10.8 with: `rabbitmqctl add_user` for
//! def-alice (tags administrator and custom-tag), def-bob (monitoring,
//! management; user limits 5 connections, 7 channels), def-admin, and
//! def-nopass (`clear_password`); `add_vhost def-vh1 --description
//! "first def vhost" --tags t1,t2 --default-queue-type classic` with vhost
//! limits 10/20, and def-vh2; permissions, a topic permission with
//! `{username}`/`{vhost}`, a policy (`set_policy --priority 3 --apply-to
//! queues`), a global parameter; through the HTTP API exchanges def-ae,
//! def-main (alternate-exchange def-ae), def-dlx and the internal def-internal,
//! queues with x-max-length, x-message-ttl, x-dead-letter-exchange,
//! x-queue-type, x-max-priority, x-overflow and x-max-length-bytes, and
//! bindings (one exchange-to-exchange, one with headers arguments); then
//! `rabbitmqctl export_definitions` (pretty-printed with sorted keys, nothing
//! removed). RabbitMQ leaves internal exchanges out of its exports, but not
//! the bindings that name them.
//!
//! These tests drive an in-process `lepus::Server` (or the binary, for
//! `kill -9`), so none runs against an external broker.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::BasicProperties;
use lepus::access::{AccessChange, HashAlgorithm};
use lepus::amqp::field::{FieldValue, LongStr};
use serde_json::Value;

#[path = "common/child.rs"]
mod child;

const RABBITMQ_EXPORT: &str = "tests/data/rabbitmq-3.10-definitions.json";

fn rabbitmq_export() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(RABBITMQ_EXPORT)
}

fn start(data_dir: &Path, load: Option<&Path>) -> lepus::Server {
    let mut config = in_process_config(data_dir);
    config.load_definitions = load.map(Path::to_path_buf);
    // Small preallocated segments: the tests read every segment file.
    config.message_log_segment_bytes = 1 << 20;
    lepus::Server::start(config).expect("lepus starts")
}

fn s(text: &str) -> FieldValue {
    FieldValue::LongStr(LongStr::copy_from_str(text))
}

/// Every entity of the RabbitMQ export, as Lepus holds it after the import.
fn assert_rabbitmq_export_imported(server: &lepus::Server) {
    let topology = server.registry().load();
    let access = &topology.access;
    let alice = access.users.get("def-alice").expect("def-alice imported");
    assert_eq!(alice.tags, ["administrator", "custom-tag"], "custom tags kept as given");
    let hash = alice.password.as_ref().expect("def-alice has a password");
    assert_eq!(hash.algorithm, HashAlgorithm::Sha256);
    assert!(hash.verify(b"alicepw") && !hash.verify(b"alicepx"), "RabbitMQ's stored hash verifies here");
    let bob = access.users.get("def-bob").expect("def-bob");
    assert_eq!((bob.limits.max_connections, bob.limits.max_channels), (Some(5), Some(7)));
    assert_eq!(bob.tags, ["monitoring", "management"]);
    assert!(
        access.users.get("def-nopass").expect("def-nopass").password.is_none(),
        "no password: none stored"
    );
    let vh1 = access.vhosts.get("def-vh1").expect("def-vh1");
    assert_eq!((vh1.limits.max_connections, vh1.limits.max_queues), (Some(10), Some(20)));
    assert_eq!(
        (vh1.description.as_str(), vh1.tags.clone()),
        ("first def vhost", vec!["t1".into(), "t2".into()])
    );
    assert_eq!(vh1.default_queue_type.as_deref(), Some("classic"));
    assert!(access.vhosts.contains_key("def-vh2") && topology.vhosts.contains_key("def-vh2"));
    let bob_vh1 = access.permissions.get(&("def-bob".into(), "def-vh1".into())).expect("permission");
    assert_eq!(
        (bob_vh1.configure.as_str(), bob_vh1.write.as_str(), bob_vh1.read.as_str()),
        ("^bob-.*", "", ".*")
    );
    let topic = access
        .topic_permissions
        .get(&("def-bob".into(), "def-vh1".into(), "amq.topic".into()))
        .expect("topic permission");
    assert_eq!((topic.write.as_str(), topic.read.as_str()), ("^{username}\\..*", "^{vhost}\\.read"));
    let policy = topology.parameters.policies.get(&("def-vh1".into(), "def-ttl".into())).expect("policy");
    assert_eq!(
        (policy.pattern.as_str(), policy.apply_to.as_str(), policy.priority),
        ("^ttl\\.", "queues", 3)
    );
    assert_eq!(policy.definition, serde_json::json!({"max-length": 100, "message-ttl": 60000}));
    assert!(topology.parameters.global.contains_key("def-global"));
    let v = topology.vhosts.get("def-vh1").expect("def-vh1 topology");
    let q1 = v.queues.get(b"def-q1".as_slice()).expect("def-vh1/def-q1");
    assert!(q1.durable && !q1.auto_delete);
    assert_eq!(q1.arguments.get(b"x-max-length"), Some(&FieldValue::I64(1000)), "JSON integers are longs");
    assert_eq!(q1.arguments.get(b"x-message-ttl"), Some(&FieldValue::I64(30000)));
    assert_eq!(q1.arguments.get(b"x-dead-letter-exchange"), Some(&s("def-dlx")));
    assert_eq!(q1.arguments.get(b"x-queue-type"), Some(&s("classic")));
    let vh2 = topology.vhosts.get("def-vh2").expect("def-vh2 topology");
    let other_q1 = vh2.queues.get(b"def-q1".as_slice()).expect("the same queue name in def-vh2");
    assert_eq!(other_q1.arguments.get(b"x-overflow"), Some(&s("reject-publish")));
    let main = v.exchanges.get(b"def-main".as_slice()).expect("def-main");
    assert_eq!(main.kind.as_str(), "topic");
    assert_eq!(main.arguments.get(b"alternate-exchange"), Some(&s("def-ae")));
    // RabbitMQ's export leaves internal exchanges out (def-internal), so the
    // two bindings that name it cannot be made; the other three are.
    let bound: usize = v.exchanges.values().filter(|x| !x.name.is_empty()).map(|x| x.bindings.len()).sum();
    assert_eq!(bound, 3, "bindings of def-vh1");
    for (vhost, name) in [("def-vh1", "def-q1"), ("def-vh1", "def-dead"), ("def-vh2", "def-q1")] {
        assert!(server.queue_shard(vhost, name).is_some(), "{vhost}/{name} placed on a shard");
    }
}

/// Publishes through def-main (one routed, one to the alternate exchange)
/// and gets both back: the imported queues exist on their shards.
async fn imported_queues_work(server: &lepus::Server) {
    // def-alice logs in with the password whose hash came in the export.
    let uri = format!("amqp://def-alice:alicepw@{}/def-vh1", server.local_addrs()[0]);
    let conn =
        within("connect", lapin::Connection::connect(&uri, Default::default())).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm");
    let props = BasicProperties::default();
    for key in ["a.b.c", "nowhere"] {
        ch.basic_publish("def-main", key, BasicPublishOptions::default(), key.as_bytes(), props.clone())
            .await
            .expect("publish");
    }
    assert!(within("confirms", ch.wait_for_confirms()).await.expect("confirms").is_empty());
    for (queue, body) in [("def-q1", "a.b.c"), ("def-unrouted", "nowhere")] {
        let got = ch.basic_get(queue, BasicGetOptions { no_ack: true }).await.expect("get");
        assert_eq!(got.expect("a message").delivery.data, body.as_bytes(), "{queue}");
    }
    conn.close(200, "bye").await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_export_imports_with_every_entity_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Some(&rabbitmq_export()));
    assert_rabbitmq_export_imported(&server);
    imported_queues_work(&server).await;
    let before = server.export_definitions();
    server.shutdown();
    let server = start(dir.path(), None);
    assert_rabbitmq_export_imported(&server);
    assert_eq!(server.export_definitions(), before, "the same definitions after a restart");
    server.shutdown();
    // Importing the same file again at the next start changes nothing.
    let server = start(dir.path(), Some(&rabbitmq_export()));
    assert_eq!(server.export_definitions(), before, "a second import of the same file");
}

#[test]
fn lepus_export_imports_back_unchanged() {
    let first = tempfile::tempdir().expect("tempdir");
    let server = start(first.path(), Some(&rabbitmq_export()));
    let exported = server.export_definitions();
    drop(server);
    for key in
        ["users", "vhosts", "permissions", "topic_permissions", "policies", "queues", "exchanges", "bindings"]
    {
        let n = exported[key].as_array().map_or(0, Vec::len);
        assert!(n > 0, "the export has {key}");
    }
    assert_eq!(exported["product_name"], "Lepus");
    let file = first.path().join("export.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&exported).expect("json")).expect("write");
    let second = tempfile::tempdir().expect("tempdir");
    let again = start(second.path(), Some(&file));
    assert_eq!(again.export_definitions(), exported, "Lepus export -> Lepus import -> export");
}

#[test]
fn defaults_are_made_on_the_first_start_only_and_a_deleted_guest_stays_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), None);
    let topology = server.registry().load();
    let guest = topology.access.users.get("guest").expect("the default user");
    assert_eq!(guest.tags, ["administrator"]);
    assert!(guest.password.as_ref().is_some_and(|h| h.verify(b"guest")), "sha256 of default_pass");
    let full = topology.access.permissions.get(&("guest".into(), "/".into())).expect("full permissions on /");
    assert_eq!((full.configure.as_str(), full.write.as_str(), full.read.as_str()), (".*", ".*", ".*"));
    server.registry().change_access(&AccessChange::DeleteUser("guest".into())).expect("delete guest");
    server.delete_vhost("/").expect("delete /");
    server.create_vhost("def-kept", Default::default()).expect("create def-kept");
    server.shutdown();
    let server = start(dir.path(), None);
    let topology = server.registry().load();
    assert!(!topology.access.users.contains_key("guest"), "a deleted default user is not made again");
    assert!(!topology.vhosts.contains_key("/") && !topology.access.vhosts.contains_key("/"), "nor the vhost");
    assert!(topology.vhosts.contains_key("def-kept") && topology.access.vhosts.contains_key("def-kept"));
}

/// Opens a raw connection to `vhost` and a channel on it.
fn raw_on(server: &lepus::Server, vhost: &str) -> Raw {
    let mut raw = Raw::connect(server.local_addrs()[0]);
    raw.send_protocol_header();
    raw.read_start();
    raw.send_start_ok("PLAIN", b"\0guest\0guest", true);
    let (cm, fm, hb) = raw.read_tune();
    raw.send_tune_ok(cm, fm, hb);
    raw.send_open(vhost);
    raw.expect_method(0, 10, 41);
    raw.open_channel(1);
    raw
}

/// Segment files of every shard's message log that contain `needle`.
fn segments_holding(data_dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(shards) = std::fs::read_dir(data_dir.join("messages")) else {
        return found;
    };
    for shard in shards.flatten() {
        for segment in std::fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            let bytes = std::fs::read(segment.path()).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(segment.path());
            }
        }
    }
    found
}

/// Publishes persistent, confirmed messages to a new durable queue in
/// `vhost` over a connection of its own (one per shard, round-robin).
async fn fill_queue(server: &lepus::Server, vhost: &str, queue: &str, body: &[u8]) -> lapin::Connection {
    let uri = format!("amqp://guest:guest@{}/{vhost}", server.local_addrs()[0]);
    let conn =
        within("connect", lapin::Connection::connect(&uri, Default::default())).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(queue, durable, Default::default()).await.expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm");
    let persistent = BasicProperties::default().with_delivery_mode(2);
    for _ in 0..20 {
        ch.basic_publish("", queue, BasicPublishOptions::default(), body, persistent.clone())
            .await
            .expect("publish");
    }
    assert!(within("confirms", ch.wait_for_confirms()).await.expect("confirms").is_empty());
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vhost_closes_its_connections_and_leaves_nothing_of_its_queues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), None);
    server.create_vhost("def-gone", Default::default()).expect("create");
    server.registry().change_access(&guest_may_do_everything_in("def-gone")).expect("permissions");
    let marker = b"def-gone-marker-7f3a91";
    // Two connections, so both shards own a stored queue of the vhost.
    let a = fill_queue(&server, "def-gone", "def-qa", marker).await;
    let b = fill_queue(&server, "def-gone", "def-qb", marker).await;
    // lapin reports how its connections end.
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel::<String>();
    for conn in [&a, &b] {
        let tx = closed_tx.clone();
        conn.on_error(move |e| drop(tx.send(format!("{e:?}"))));
    }
    let owners = [server.queue_shard("def-gone", "def-qa"), server.queue_shard("def-gone", "def-qb")];
    assert_eq!(owners, [Some(0), Some(1)], "one queue per shard");
    assert!(!segments_holding(dir.path(), marker).is_empty(), "the messages are on disk before");
    let mut watcher = raw_on(&server, "def-gone");
    let mut bystander = raw_on(&server, "/");
    server.delete_vhost("def-gone").expect("delete the vhost");
    let close = tokio::task::spawn_blocking(move || {
        let close = watcher.expect_connection_close(320, "CONNECTION_FORCED - vhost 'def-gone' is deleted");
        bystander.ping(1);
        close
    })
    .await
    .expect("the vhost's connection is closed");
    assert_eq!(close.reply_text, "CONNECTION_FORCED - vhost 'def-gone' is deleted", "RabbitMQ 3.10's text");
    assert_eq!((close.failing_class, close.failing_method), (0, 0));
    for _ in [&a, &b] {
        let error = within("lapin sees its connection closed", closed.recv()).await.expect("an error");
        assert!(error.contains("CONNECTION_FORCED - vhost 'def-gone' is deleted"), "{error}");
    }
    assert!(!server.registry().load().vhosts.contains_key("def-gone"));
    // The shards dropped the queues and sealed the segments that held only
    // their messages; the end-of-turn flush removes them.
    let deadline = std::time::Instant::now() + SAFETY;
    while !segments_holding(dir.path(), marker).is_empty() {
        assert!(std::time::Instant::now() < deadline, "segments still hold the deleted vhost's messages");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another vhost's queue, filled once the deleted one's segments are gone
    // (messages of live queues in the same segment would keep it, as after a
    // queue.delete, until compaction).
    let kept = fill_queue(&server, "/", "def-kept", b"kept-body").await;
    drop(kept);
    server.shutdown();
    let server = start(dir.path(), None);
    let topology = server.registry().load();
    assert!(!topology.vhosts.contains_key("def-gone") && !topology.access.vhosts.contains_key("def-gone"));
    assert!(segments_holding(dir.path(), marker).is_empty(), "nothing back after a restart");
    let conn = lapin_conn_addr(server.local_addrs()[0]).await;
    let ch = conn.create_channel().await.expect("channel");
    let kept = ch.queue_declare(
        "def-kept",
        QueueDeclareOptions { passive: true, ..Default::default() },
        Default::default(),
    );
    assert_eq!(
        kept.await.expect("def-kept survives").message_count(),
        20,
        "the other vhost keeps its messages"
    );
}

#[test]
fn users_and_permissions_survive_kill_9() {
    let data = child::TempDir::new("def-kill");
    let mut command = child::lepus();
    command.arg("--listen").arg("127.0.0.1:0").arg("--shards").arg("1").arg("--no-pin");
    command.arg("--data-dir").arg(&data.0).arg("--load-definitions").arg(rabbitmq_export());
    let mut broker = child::Broker::spawn(command, None, SAFETY);
    broker.wait_started().expect("lepus starts");
    broker.signal(libc::SIGKILL);
    broker.wait_exit().expect("killed");
    let output = child::lepus()
        .arg("--data-dir")
        .arg(&data.0)
        .arg("--export-definitions")
        .arg("-")
        .output()
        .expect("lepus --export-definitions");
    assert!(output.status.success(), "export: {}", String::from_utf8_lossy(&output.stderr));
    let doc: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let users: Vec<&str> =
        doc["users"].as_array().expect("users").iter().filter_map(|u| u["name"].as_str()).collect();
    for user in ["def-alice", "def-bob", "def-nopass", "def-admin", "guest"] {
        assert!(users.contains(&user), "{user} survived kill -9: {users:?}");
    }
    let permissions = doc["permissions"].as_array().expect("permissions");
    assert!(permissions
        .iter()
        .any(|p| p["user"] == "def-bob" && p["vhost"] == "def-vh1" && p["configure"] == "^bob-.*"));
    assert_eq!(doc["topic_permissions"].as_array().map(Vec::len), Some(1));
    let vhosts: Vec<&str> =
        doc["vhosts"].as_array().expect("vhosts").iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(vhosts, ["/", "def-vh1", "def-vh2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_imported_into_a_running_broker_are_usable_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), None);
    let doc = serde_json::json!({
        "vhosts": [{"name": "def-live"}],
        "permissions": [{"user": "guest", "vhost": "def-live", "configure": ".*", "write": ".*", "read": ".*"}],
        "exchanges": [{"name": "def-x", "vhost": "def-live", "type": "fanout", "durable": true}],
        "queues": [{"name": "def-a", "vhost": "def-live", "durable": true, "arguments": {}},
                   {"name": "def-b", "vhost": "def-live", "durable": false, "arguments": {}}],
        "bindings": [{"source": "def-x", "vhost": "def-live", "destination": "def-a",
                      "destination_type": "queue", "routing_key": "", "arguments": {}},
                     {"source": "def-x", "vhost": "def-live", "destination": "def-b",
                      "destination_type": "queue", "routing_key": "", "arguments": {}}],
    });
    let imported = server.import_definitions(&doc);
    assert!(imported.skipped.is_empty(), "{:?}", imported.skipped);
    let owners = [server.queue_shard("def-live", "def-a"), server.queue_shard("def-live", "def-b")];
    assert_eq!(owners, [Some(0), Some(1)], "placed round-robin");
    let uri = format!("amqp://guest:guest@{}/def-live", server.local_addrs()[0]);
    let conn =
        within("connect", lapin::Connection::connect(&uri, Default::default())).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm");
    ch.basic_publish("def-x", "", BasicPublishOptions::default(), b"live", BasicProperties::default())
        .await
        .expect("publish");
    assert!(within("confirms", ch.wait_for_confirms()).await.expect("confirms").is_empty());
    for queue in ["def-a", "def-b"] {
        let got = ch.basic_get(queue, BasicGetOptions { no_ack: true }).await.expect("get");
        assert_eq!(got.expect("the fan-out reached the imported queue").delivery.data, b"live", "{queue}");
    }
}

#[test]
fn the_first_start_makes_the_configured_default_vhost_and_none_when_definitions_are_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = in_process_config(dir.path());
    config.default_vhost = "def-home".into();
    config.default_user = "def-admin".into();
    let server = lepus::Server::start(config).expect("start");
    let topology = server.registry().load();
    let vhosts: Vec<&String> = topology.access.vhosts.keys().collect();
    assert_eq!(vhosts, ["def-home"], "RabbitMQ makes the default vhost only");
    let users: Vec<&String> = topology.access.users.keys().collect();
    assert_eq!(users, ["def-admin"]);
    assert!(topology.access.permissions.contains_key(&("def-admin".into(), "def-home".into())));
    drop(server);
    // With load_definitions, a fresh node makes neither (as RabbitMQ 3.10).
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("defs.json");
    std::fs::write(&file, r#"{"vhosts": [{"name": "def-only"}]}"#).expect("write");
    let server = start(&dir.path().join("data"), Some(&file));
    let topology = server.registry().load();
    assert!(topology.access.users.is_empty(), "no default user");
    let vhosts: Vec<&String> = topology.access.vhosts.keys().collect();
    assert_eq!(vhosts, ["def-only"]);
    assert_eq!(topology.vhosts.len(), 1);
}

/// guest's full permissions on `vhost`.
fn guest_may_do_everything_in(vhost: &str) -> AccessChange {
    let all = || ".*".to_owned();
    AccessChange::SetPermission {
        user: "guest".into(),
        vhost: vhost.into(),
        permission: lepus::access::Permission { configure: all(), write: all(), read: all() },
    }
}
