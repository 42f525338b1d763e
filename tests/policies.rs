//! Policies and operator policies applied to queues and exchanges, with
//! real clients on a real broker: each key's effect, precedence (priority,
//! operator policy against policy, argument against policy per key),
//! apply-to, a change applied to a queue that holds messages, removal, and
//! a restart.
//!
//! Every test runs in a vhost of its own, `pol-<test>`, so it passes
//! against RabbitMQ 3.10 too (`LEPUS_TEST_EXTERNAL=127.0.0.1:5672`; policies
//! set through its management API on port 15672), where a policy on `/`
//! would reach other suites' queues. What RabbitMQ 3.10.8 did is written
//! beside each expectation; each was checked against it.
//!
//! A policy takes effect asynchronously on both brokers (RabbitMQ casts it
//! to the queue processes; Lepus's shards apply it when they see the new
//! snapshot). So a test that publishes after a change first makes one
//! round trip on the channel that owns the queue (`sync`): on Lepus the
//! publish is then read in a later turn of the queue's shard, which
//! applied the policy first. An effect on messages already queued is
//! awaited by polling the queue's length (AMQP has no event for it).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::access::Setup;
use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use lepus::routing::parameters::{ParameterChange, Policy};
use lepus::routing::policy::{management_fields, EntityKind};
use lepus::routing::topology::Registry;
use serde_json::{json, Value};

/// Where policies are set.
enum Admin {
    Lepus(Arc<Registry>),
    /// RabbitMQ's management API: base URL and `Authorization` value.
    Rabbit {
        base: String,
        auth: String,
    },
}

/// One test's broker, vhost and policy admin.
struct Env {
    b: Broker,
    setup: Setup,
    vhost: String,
    admin: Admin,
}

impl Env {
    fn new(test: &str) -> Env {
        let b = start_broker();
        let mut setup = Setup::new(&b, test);
        let vhost = format!("pol-{test}");
        setup.add_vhost(&vhost);
        setup.set_permissions("guest", &vhost, ".*", ".*", ".*");
        let admin = match b.registry() {
            Some(registry) => Admin::Lepus(registry),
            None => Admin::Rabbit {
                base: format!("http://{}:15672/api", b.addr.ip()),
                auth: format!("Basic {}", common::access::base64(b"guest:guest")),
            },
        };
        Env { b, setup, vhost, admin }
    }

    /// Restarts an in-process broker on its data directory.
    fn restart(&mut self) {
        self.b.restart();
        self.setup.reattach(&self.b);
        if let Some(registry) = self.b.registry() {
            self.admin = Admin::Lepus(registry);
        }
    }

    /// Sets policy `name`; `Err` with RabbitMQ's reason if refused.
    fn try_policy(&self, name: &str, body: Value) -> Result<(), String> {
        match &self.admin {
            Admin::Lepus(registry) => {
                let policy = Policy {
                    vhost: self.vhost.clone(),
                    name: name.into(),
                    pattern: body["pattern"].as_str().unwrap_or("").into(),
                    apply_to: body.get("apply-to").and_then(Value::as_str).unwrap_or("all").into(),
                    definition: body["definition"].clone(),
                    priority: body.get("priority").and_then(Value::as_i64).unwrap_or(0),
                };
                registry.change_parameters(&ParameterChange::SetPolicy(policy)).map_err(|e| e.to_string())
            }
            Admin::Rabbit { .. } => self.http("PUT", &format!("policies/{}/{name}", self.vhost), Some(body)),
        }
    }

    fn policy(&self, name: &str, pattern: &str, apply_to: &str, priority: i64, definition: Value) {
        let body =
            json!({"pattern": pattern, "apply-to": apply_to, "priority": priority, "definition": definition});
        self.try_policy(name, body).expect("policy set");
    }

    fn operator_policy(&self, name: &str, pattern: &str, priority: i64, definition: Value) {
        let body =
            json!({"pattern": pattern, "apply-to": "all", "priority": priority, "definition": definition});
        let result = match &self.admin {
            Admin::Lepus(registry) => registry
                .change_parameters(&ParameterChange::set_operator_policy(&self.vhost, name, body))
                .map_err(|e| e.to_string()),
            Admin::Rabbit { .. } => {
                self.http("PUT", &format!("operator-policies/{}/{name}", self.vhost), Some(body))
            }
        };
        result.expect("operator policy set");
    }

    fn clear_policy(&self, name: &str) {
        let result = match &self.admin {
            Admin::Lepus(registry) => registry
                .change_parameters(&ParameterChange::ClearPolicy {
                    vhost: self.vhost.clone(),
                    name: name.into(),
                })
                .map_err(|e| e.to_string()),
            Admin::Rabbit { .. } => self.http("DELETE", &format!("policies/{}/{name}", self.vhost), None),
        };
        result.expect("policy cleared");
    }

    fn http(&self, method: &str, path: &str, body: Option<Value>) -> Result<(), String> {
        let Admin::Rabbit { base, auth } = &self.admin else { unreachable!("RabbitMQ only") };
        let request = ureq::request(method, &format!("{base}/{path}")).set("Authorization", auth);
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        match response {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(_, r)) => {
                let answer: Value = r.into_json().unwrap_or(Value::Null);
                // RabbitMQ escapes its policy errors as HTML; compared here
                // as Lepus's `PolicyError::reason` gives them.
                let reason = answer["reason"].as_str().unwrap_or_default();
                Err(reason.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
            }
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    /// Whether queue `name` exists, asked without touching it (a passive
    /// declare is a use, which restarts its expiry on both brokers).
    fn queue_exists(&self, name: &str) -> bool {
        match &self.admin {
            Admin::Lepus(registry) => registry
                .load()
                .vhosts
                .get(&self.vhost)
                .is_some_and(|v| v.queues.contains_key(name.as_bytes())),
            Admin::Rabbit { base, auth } => {
                let url = format!("{base}/queues/{}/{name}", self.vhost);
                match ureq::get(&url).set("Authorization", auth).call() {
                    Ok(_) => true,
                    Err(ureq::Error::Status(404, _)) => false,
                    Err(e) => panic!("GET {url}: {e}"),
                }
            }
        }
    }

    /// Waits until queue `name` is gone (polled, bounded).
    async fn await_gone(&self, name: &str) {
        let deadline = Instant::now() + SAFETY;
        while self.queue_exists(name) {
            assert!(Instant::now() < deadline, "queue {name} was not deleted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn channel(&self) -> (lapin::Connection, lapin::Channel) {
        let uri = format!("amqp://guest:guest@{}/{}", self.b.addr, self.vhost);
        let conn =
            within("connect", lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()))
                .await
                .expect("connects to the test's vhost");
        let ch = within("channel", conn.create_channel()).await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        (conn, ch)
    }
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

async fn declare(ch: &lapin::Channel, queue: &str, arguments: FieldTable) {
    ch.queue_declare(queue, QueueDeclareOptions::default(), arguments).await.expect("queue.declare");
}

/// A fanout exchange `name` bound to a queue of the same name + `-sink`.
async fn sink(ch: &lapin::Channel, name: &str) -> String {
    ch.exchange_declare(name, ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .expect("exchange.declare");
    let queue = format!("{name}-sink");
    declare(ch, &queue, FieldTable::default()).await;
    ch.queue_bind(&queue, name, "", QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    queue
}

/// Publishes `bodies` through `exchange` with `key`; returns how many were
/// acked (the rest nacked).
async fn publish(ch: &lapin::Channel, exchange: &str, key: &str, bodies: &[&str]) -> usize {
    let mut acked = 0;
    for body in bodies {
        let confirm = ch
            .basic_publish(
                exchange,
                key,
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        if within("confirm", confirm).await.expect("confirm").is_ack() {
            acked += 1;
        }
    }
    acked
}

/// One round trip on `ch`: its ready count of `queue` (passive declare).
async fn sync(ch: &lapin::Channel, queue: &str) -> u32 {
    let q = ch
        .queue_declare(
            queue,
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    q.message_count()
}

/// Polls `queue`'s ready count until it is `want`.
async fn await_len(ch: &lapin::Channel, queue: &str, want: u32) {
    let deadline = Instant::now() + SAFETY;
    loop {
        let len = sync(ch, queue).await;
        if len == want {
            return;
        }
        assert!(Instant::now() < deadline, "{queue} holds {len} messages, not {want}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

async fn fill(ch: &lapin::Channel, queue: &str, prefix: &str, n: usize) -> usize {
    let all = bodies(prefix, n);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    publish(ch, "", queue, &refs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_max_length_drops_the_head_at_once_and_clearing_restores_the_argument() {
    let env = Env::new("maxlen");
    let (_c, ch) = env.channel().await;
    declare(&ch, "q", args(&[("x-max-length", AMQPValue::LongInt(10))])).await;
    assert_eq!(fill(&ch, "q", "m", 6).await, 6);
    env.policy("limit", "^q$", "queues", 0, json!({"max-length": 2}));
    // RabbitMQ: the queue drops its head to 2 at once: m4, m5 stay.
    await_len(&ch, "q", 2).await;
    assert_eq!(drain(&ch, "q").await, ["m4", "m5"]);
    env.clear_policy("limit");
    sync(&ch, "q").await;
    // RabbitMQ: back to the argument's 10.
    assert_eq!(fill(&ch, "q", "n", 12).await, 12);
    await_len(&ch, "q", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_and_the_policy_resolve_key_by_key() {
    let env = Env::new("perkey");
    let (_c, ch) = env.channel().await;
    let by_argument = sink(&ch, "dlx-arg").await;
    let by_policy = sink(&ch, "dlx-pol").await;
    env.policy(
        "all-q",
        "^q",
        "queues",
        0,
        json!({"max-length": 3, "overflow": "drop-head", "dead-letter-exchange": "dlx-pol"}),
    );
    let int = |n| AMQPValue::LongInt(n);
    declare(&ch, "q-len2", args(&[("x-max-length", int(2))])).await;
    declare(&ch, "q-len5", args(&[("x-max-length", int(5))])).await;
    declare(&ch, "q-reject", args(&[("x-overflow", text("reject-publish"))])).await;
    declare(&ch, "q-dlx", args(&[("x-dead-letter-exchange", text("dlx-arg"))])).await;
    declare(&ch, "q-plain", FieldTable::default()).await;
    // max-length: the smaller of argument and policy (RabbitMQ: 2 and 3).
    assert_eq!(fill(&ch, "q-len2", "a", 5).await, 5);
    assert_eq!(fill(&ch, "q-len5", "b", 5).await, 5);
    assert_eq!((sync(&ch, "q-len2").await, sync(&ch, "q-len5").await), (2, 3));
    // overflow: the argument wins (RabbitMQ: 3 acked, 2 nacked, nothing
    // dead-lettered for the refused ones).
    assert_eq!(fill(&ch, "q-reject", "c", 5).await, 3);
    // dead-letter-exchange: the argument wins; without one, the policy's.
    // The drop-head of q-len2/q-len5 went to dlx-pol: 3 + 2.
    await_len(&ch, &by_policy, 5).await;
    fill(&ch, "q-dlx", "d", 1).await;
    fill(&ch, "q-plain", "e", 1).await;
    for queue in ["q-dlx", "q-plain"] {
        let m = ch.basic_get(queue, BasicGetOptions::default()).await.expect("get").expect("a message");
        m.delivery.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
    }
    await_len(&ch, &by_argument, 1).await;
    await_len(&ch, &by_policy, 6).await;
    assert_eq!(drain(&ch, &by_argument).await, ["d0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_priority_wins_and_an_operator_policy_wins_when_stricter() {
    let env = Env::new("prio");
    let (_c, ch) = env.channel().await;
    declare(&ch, "q", FieldTable::default()).await;
    env.policy("low", "^q", "all", 1, json!({"max-length": 1}));
    env.policy("high", "^q", "all", 2, json!({"max-length": 4}));
    sync(&ch, "q").await;
    // RabbitMQ: "high" applies, 4.
    assert_eq!(fill(&ch, "q", "a", 6).await, 6);
    await_len(&ch, "q", 4).await;
    // RabbitMQ: the operator policy's 2 is stricter and wins at once.
    env.operator_policy("op", ".*", 0, json!({"max-length": 2}));
    await_len(&ch, "q", 2).await;
    // RabbitMQ: an operator value looser than the policy's loses: 4 again.
    env.operator_policy("op", ".*", 0, json!({"max-length": 10, "message-ttl": 60000}));
    sync(&ch, "q").await;
    assert_eq!(fill(&ch, "q", "b", 6).await, 6);
    await_len(&ch, "q", 4).await;
    if let Admin::Lepus(registry) = &env.admin {
        let fields = management_fields(&registry.load(), &env.vhost, "q", EntityKind::Queue).expect("queue");
        assert_eq!(
            Value::Object(fields),
            json!({"policy": "high", "operator_policy": "op",
                   "effective_policy_definition": {"max-length": 4, "message-ttl": 60000}})
        );
    }
    // RabbitMQ: with "high" gone, "low" applies: 1.
    env.clear_policy("high");
    await_len(&ch, "q", 1).await;
    if let Admin::Lepus(registry) = &env.admin {
        registry
            .change_parameters(&ParameterChange::clear_operator_policy(&env.vhost, "op"))
            .expect("cleared");
        let fields = management_fields(&registry.load(), &env.vhost, "q", EntityKind::Queue).expect("queue");
        assert_eq!(fields["operator_policy"], Value::Null);
        assert_eq!(fields["effective_policy_definition"], json!({"max-length": 1}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_to_and_the_alternate_exchange() {
    let env = Env::new("applyto");
    let (_c, ch) = env.channel().await;
    let ae_sink = sink(&ch, "ae").await;
    let ae2_sink = sink(&ch, "ae2").await;
    let direct = ExchangeKind::Direct;
    ch.exchange_declare("ex", direct.clone(), ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .expect("ex");
    let own = args(&[("alternate-exchange", text("ae2"))]);
    ch.exchange_declare("ex-own", direct, ExchangeDeclareOptions::default(), own).await.expect("ex-own");
    declare(&ch, "ex-queue", FieldTable::default()).await;
    env.policy("to-ex", "^ex", "exchanges", 0, json!({"alternate-exchange": "ae", "max-length": 1}));
    sync(&ch, &ae_sink).await;
    // RabbitMQ: the unroutable message goes to the policy's alternate exchange.
    publish(&ch, "ex", "nowhere", &["x1"]).await;
    // RabbitMQ: the exchange's own argument wins over the policy.
    publish(&ch, "ex-own", "nowhere", &["x2"]).await;
    assert_eq!((sync(&ch, &ae_sink).await, sync(&ch, &ae2_sink).await), (1, 1));
    // RabbitMQ: apply-to exchanges leaves the queue "ex-queue" alone.
    assert_eq!(fill(&ch, "ex-queue", "q", 3).await, 3);
    assert_eq!(sync(&ch, "ex-queue").await, 3);
    // RabbitMQ: once it applies to queues only, the exchange has no
    // alternate (the message is dropped) and the queue is cut to 1.
    env.policy("to-ex", "^ex", "queues", 0, json!({"alternate-exchange": "ae", "max-length": 1}));
    await_len(&ch, "ex-queue", 1).await;
    publish(&ch, "ex", "nowhere", &["x3"]).await;
    assert_eq!(sync(&ch, &ae_sink).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_ttl_policy_holds_for_messages_published_after_it() {
    let env = Env::new("ttl");
    let (_c, ch) = env.channel().await;
    declare(&ch, "q", FieldTable::default()).await;
    fill(&ch, "q", "old", 1).await;
    env.policy("ttl", "^q$", "all", 0, json!({"message-ttl": 50}));
    sync(&ch, "q").await;
    fill(&ch, "q", "new", 1).await;
    // Time passing is what is tested here.
    tokio::time::sleep(Duration::from_millis(150)).await;
    // RabbitMQ 3.10.8: the message published before the policy keeps no
    // expiry and is delivered; the one published after it has expired.
    assert_eq!(drain(&ch, "q").await, ["old0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_policy_takes_the_next_dead_letter_and_expires_deletes() {
    let env = Env::new("dlx");
    let (_c, ch) = env.channel().await;
    let dead = sink(&ch, "dlx").await;
    declare(&ch, "q", FieldTable::default()).await;
    declare(&ch, "idle", args(&[("x-expires", AMQPValue::LongInt(600_000))])).await;
    fill(&ch, "q", "m", 2).await;
    let reject = |queue: &'static str| {
        let ch = ch.clone();
        async move {
            let m = ch.basic_get(queue, BasicGetOptions::default()).await.expect("get").expect("message");
            m.delivery.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
        }
    };
    reject("q").await;
    env.policy(
        "dl",
        "^q$",
        "queues",
        0,
        json!({"dead-letter-exchange": "dlx", "dead-letter-routing-key": "k"}),
    );
    sync(&ch, "q").await;
    reject("q").await;
    // RabbitMQ: m0 was dropped (no DLX then), m1 dead-lettered with key "k".
    await_len(&ch, &dead, 1).await;
    let m = ch.basic_get(&dead, BasicGetOptions { no_ack: true }).await.expect("get").expect("dead letter");
    assert_eq!((m.delivery.data.as_slice(), m.delivery.routing_key.as_str()), (&b"m1"[..], "k"));
    // RabbitMQ: expires is the smaller of argument (600 s) and policy.
    env.policy("gone", "^idle$", "queues", 0, json!({"expires": 100}));
    env.await_gone("idle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_with_delivery_limit_skips_classic_queues() {
    let env = Env::new("dlimit");
    let (_c, ch) = env.channel().await;
    env.policy("dl", ".*", "queues", 0, json!({"max-length": 1, "delivery-limit": 5}));
    declare(&ch, "classic", FieldTable::default()).await;
    let quorum = args(&[("x-queue-type", text("quorum"))]);
    ch.queue_declare("quorum", QueueDeclareOptions { durable: true, ..Default::default() }, quorum)
        .await
        .expect("quorum queue");
    // RabbitMQ 3.10.8: a classic queue does not support delivery-limit, so
    // the whole policy does not apply to it (its `policy` is null); the
    // quorum queue takes it.
    assert_eq!(fill(&ch, "classic", "c", 3).await, 3);
    assert_eq!(fill(&ch, "quorum", "q", 3).await, 3);
    await_len(&ch, "quorum", 1).await;
    assert_eq!(sync(&ch, "classic").await, 3);
    if let Admin::Lepus(registry) = &env.admin {
        let topology = registry.load();
        let fields = |name| management_fields(&topology, &env.vhost, name, EntityKind::Queue).expect("queue");
        assert_eq!(fields("classic")["policy"], Value::Null);
        assert_eq!(
            fields("quorum")["effective_policy_definition"],
            json!({"max-length": 1, "delivery-limit": 5})
        );
    }
    ch.queue_delete("quorum", QueueDeleteOptions::default()).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policies_are_refused_with_rabbitmqs_text() {
    let env = Env::new("invalid");
    let refused = |body: Value| env.try_policy("bad", body).expect_err("refused");
    // RabbitMQ 3.10.8's `reason`s for the same PUT /api/policies.
    assert_eq!(
        refused(json!({"pattern": ".*", "definition": {"max-length": -1}})),
        "Validation failed\n\n-1 is not a valid maximum length\n"
    );
    assert_eq!(
        refused(json!({"pattern": ".*", "definition": {"overflow": "foo"}})),
        "Validation failed\n\n<<\"foo\">> is not a valid overflow value\n"
    );
    assert_eq!(
        refused(json!({"pattern": ".*", "apply-to": "streams", "definition": {"max-length": 1}})),
        "Validation failed\n\napply-to 'streams' unrecognised; should be 'queues', 'exchanges' or 'all'\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_survive_a_restart_and_are_exported() {
    if external() {
        return;
    }
    let mut env = Env::new("restart");
    env.policy("limit", "^q$", "queues", 3, json!({"max-length": 2}));
    env.operator_policy("op", ".*", 0, json!({"message-ttl": 600000}));
    {
        let (_c, ch) = env.channel().await;
        ch.queue_declare(
            "q",
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("durable queue");
    }
    env.restart();
    let (_c, ch) = env.channel().await;
    assert_eq!(fill(&ch, "q", "m", 5).await, 5);
    await_len(&ch, "q", 2).await;
    let Admin::Lepus(registry) = &env.admin else { unreachable!() };
    let exported = lepus::definitions::export(&registry.load());
    let policies = exported["policies"].as_array().expect("policies");
    assert!(
        policies.iter().any(|p| p["name"] == "limit" && p["definition"] == json!({"max-length": 2})),
        "{policies:?}"
    );
    let parameters = exported["parameters"].as_array().expect("parameters");
    assert!(
        parameters.iter().any(|p| p["component"] == "operator_policy" && p["name"] == "op"),
        "{parameters:?}"
    );
}
