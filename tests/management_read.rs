//! The management API's read side over real HTTP, against a broker that real
//! AMQP clients use: the objects they make (connections, channels,
//! consumers, queues, exchanges, bindings) appear with RabbitMQ's field
//! names and truthful values, their counters and rates move as they
//! publish, get and ack, a management user sees only its own vhosts and
//! connections while a monitor sees everything, a DELETE of a connection
//! closes it with 320, and the node, overview and health checks answer in
//! RabbitMQ 3.10's shapes.
//!
//! The tests that do not restart or look inside the broker also run against
//! RabbitMQ (`LEPUS_TEST_EXTERNAL=127.0.0.1:5672
//! LEPUS_TEST_EXTERNAL_HTTP=http://127.0.0.1:15672`), the reference for the
//! shapes; the waits are long enough for its 5-second statistics interval.

mod common;

use std::time::{Duration, Instant};

use common::access::Setup;
use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::Value;

/// How long a value may take to reach the API (RabbitMQ's statistics
/// interval is 5 s; Lepus's in these tests is 100 ms).
const STATS_WAIT: Duration = Duration::from_secs(20);

fn broker() -> Broker {
    if external() {
        start_broker()
    } else {
        start_broker_with(fast_stats)
    }
}

/// A blocking HTTP call: (status, body as JSON or Null).
fn http(
    method: &str,
    url: &str,
    credentials: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    tokio::task::block_in_place(|| {
        let mut request = ureq::request(method, url);
        if let Some((user, password)) = credentials {
            use base64::Engine as _;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request = request.set("Authorization", &format!("Basic {token}"));
        }
        for (k, v) in headers {
            request = request.set(k, v);
        }
        let (status, text) = match request.call() {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{method} {url}: {e}"),
        };
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    })
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

struct Api {
    base: String,
}

impl Api {
    fn new(b: &Broker) -> Api {
        let base = b.management_url().expect("management API");
        // LEPUS_TEST_EXTERNAL_HTTP may be host:port (as tests/common/access.rs reads it).
        let base = if base.starts_with("http") { base } else { format!("http://{base}") };
        Api { base: base.trim_end_matches('/').to_owned() }
    }

    fn get_as(&self, path: &str, user: &str, password: &str) -> (u16, Value) {
        http("GET", &format!("{}{path}", self.base), Some((user, password)), &[])
    }

    /// GET as guest, which must answer 200.
    fn get(&self, path: &str) -> Value {
        let (status, body) = self.get_as(path, "guest", "guest");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Polls `path` until `pick` finds something, or panics with the last answer.
    fn wait_for<T>(&self, what: &str, path: &str, mut pick: impl FnMut(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + STATS_WAIT;
        loop {
            let body = self.get(path);
            if let Some(found) = pick(&body) {
                return found;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what} in GET {path}: {body:#}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `text` with the regex metacharacters escaped.
fn regex_quote(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if ".^$*+?()[]{}|\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn items(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// A lapin connection that names itself `name` (client property
/// `connection_name`, which the API shows in `client_properties`).
async fn named_conn(b: &Broker, name: &str) -> lapin::Connection {
    let props = lapin::ConnectionProperties::default().with_connection_name(name.to_owned().into());
    within("lapin connect", lapin::Connection::connect(&amqp_uri(b), props)).await.expect("lapin connects")
}

fn conn_named<'v>(list: &'v [Value], name: &str) -> Option<&'v Value> {
    list.iter().find(|c| c["client_properties"]["connection_name"] == name)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_and_a_consumer_appear_everywhere_with_their_counts() {
    let b = broker();
    let api = Api::new(&b);
    let name = unique("mgr-read.conn");
    let queue = unique("mgr-read.q");
    let conn = named_conn(&b, &name).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    ch.basic_qos(7, BasicQosOptions::default()).await.expect("qos");
    ch.queue_declare(&queue, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    const N: u64 = 7;
    for i in 0..N {
        let confirm = ch
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        confirm.await.expect("confirmed");
    }

    // The connection, with the fields rabbitmqadmin v2 requires.
    // (RabbitMQ lists a new connection before its first statistics.)
    let c = api.wait_for("the connection", "/api/connections", |v| {
        conn_named(&items(v), &name).filter(|c| c.get("recv_oct").is_some()).cloned()
    });
    for field in [
        "name",
        "node",
        "protocol",
        "user",
        "connected_at",
        "client_properties",
        "vhost",
        "peer_host",
        "peer_port",
        "host",
        "port",
        "channels",
        "channel_max",
        "frame_max",
        "timeout",
        "recv_oct",
        "send_oct",
        "state",
        "type",
        "auth_mechanism",
        "ssl",
    ] {
        assert!(c.get(field).is_some(), "connection field {field}: {c:#}");
    }
    assert_eq!(c["protocol"], "AMQP 0-9-1");
    assert_eq!(
        (c["user"].as_str(), c["vhost"].as_str(), c["type"].as_str()),
        (Some("guest"), Some("/"), Some("network"))
    );
    assert_eq!(c["ssl"], false);
    assert_eq!(c["auth_mechanism"], "PLAIN");
    let conn_name = c["name"].as_str().expect("name").to_owned();
    let peer = format!("{}:{}", c["peer_host"].as_str().unwrap_or(""), c["peer_port"]);
    assert!(conn_name.starts_with(&format!("{peer} -> ")), "name {conn_name} is peer -> local");
    assert_eq!(
        c["client_properties"]["capabilities"]["publisher_confirms"], true,
        "client properties as a JSON table"
    );
    let one = api.get(&format!("/api/connections/{}", enc(&conn_name)));
    assert_eq!(one["name"], conn_name);

    // Its channel: confirm mode, prefetch, and the N publishes.
    let channel = api.wait_for(
        "the channel's N publishes",
        &format!("/api/connections/{}/channels", enc(&conn_name)),
        |v| items(v).into_iter().find(|ch| ch["message_stats"]["publish"] == N),
    );
    assert_eq!(channel["name"], format!("{conn_name} (1)"));
    assert_eq!(channel["number"], 1);
    assert_eq!(channel["connection_details"]["name"], conn_name);
    assert_eq!(channel["connection_details"]["peer_port"], c["peer_port"]);
    assert_eq!((channel["confirm"].as_bool(), channel["transactional"].as_bool()), (Some(true), Some(false)));
    assert_eq!(channel["prefetch_count"], 7);
    assert_eq!(channel["message_stats"]["confirm"], N);
    assert_eq!(channel["messages_unconfirmed"], 0);
    for field in
        ["vhost", "user", "state", "consumer_count", "messages_unacknowledged", "global_prefetch_count"]
    {
        assert!(channel.get(field).is_some(), "channel field {field}: {channel:#}");
    }
    let same = api.get(&format!("/api/channels/{}", enc(&format!("{conn_name} (1)"))));
    assert_eq!(same["number"], 1);

    // The queue: N ready, N published.
    let path = format!("/api/queues/%2F/{}", enc(&queue));
    // (RabbitMQ's queue statistics arrive in parts: wait for all of them.)
    let q = api.wait_for("the queue's N messages", &path, |q| {
        let complete = q["messages_ready"] == N
            && q["message_stats"]["publish"] == N
            && q["message_bytes_ready"].is_u64();
        complete.then(|| q.clone())
    });
    assert_eq!(q["message_stats"]["publish"], N);
    assert_eq!((q["messages"].as_u64(), q["messages_unacknowledged"].as_u64()), (Some(N), Some(0)));
    assert_eq!(q["type"], "classic");
    if !external() {
        assert_eq!(q["state"], "running", "(RabbitMQ leaves it out until the queue's first statistics)");
    }
    assert_eq!(
        (q["durable"].as_bool(), q["auto_delete"].as_bool(), q["exclusive"].as_bool()),
        (Some(false), Some(false), Some(false))
    );
    assert_eq!(q["message_bytes_ready"], 2 * N, "bodies m0..m6");
    assert!(q.get("messages_ready_details").is_some() && q.get("memory").is_some(), "{q:#}");

    // The overview counts them too (a fresh broker: exactly; RabbitMQ: at least).
    let overview = api.wait_for("the overview's publishes", "/api/overview", |o| {
        (o["message_stats"]["publish"].as_u64() >= Some(N)).then(|| o.clone())
    });
    if !external() {
        assert_eq!(overview["message_stats"]["publish"], N);
        assert_eq!(overview["queue_totals"]["messages_ready"], N);
        assert_eq!(overview["object_totals"]["connections"], 1);
        assert_eq!(overview["object_totals"]["queues"], 1);
    }
    for field in [
        "management_version",
        "rabbitmq_version",
        "cluster_name",
        "node",
        "listeners",
        "exchange_types",
        "rates_mode",
    ] {
        assert!(overview.get(field).is_some(), "overview field {field}");
    }

    // A consumer: N delivered needing an ack, then acked.
    let mut consumer = ch
        .basic_consume(&queue, "mgr-read-tag", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let found = api.wait_for("the consumer", "/api/consumers", |v| {
        items(v)
            .into_iter()
            .find(|c| c["consumer_tag"] == "mgr-read-tag" && c["queue"]["name"] == queue.as_str())
    });
    assert_eq!(found["queue"]["vhost"], "/");
    assert_eq!(found["ack_required"], true);
    assert_eq!(found["exclusive"], false);
    assert_eq!(found["channel_details"]["connection_name"], conn_name);
    assert_eq!(found["channel_details"]["number"], 1);
    assert_eq!(found["activity_status"], "up");
    if !external() {
        // The effective consumer timeout (RabbitMQ 3.12+'s field): the node's default.
        assert_eq!(found["consumer_timeout"], 1_800_000);
    }
    api.wait_for("N unacked on the queue", &path, |q| (q["messages_unacknowledged"] == N).then_some(()));
    use futures_lite::StreamExt as _;
    for _ in 0..N {
        let delivery = within("a delivery", consumer.next()).await.expect("delivery").expect("no error");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let q = api.wait_for("N acked", &path, |q| {
        (q["message_stats"]["ack"] == N && q["messages"] == 0).then(|| q.clone())
    });
    assert_eq!(q["message_stats"]["deliver"], N);
    assert_eq!(q["message_stats"]["deliver_get"], N);
    assert_eq!(q["messages"], 0);
    assert_eq!(q["consumers"], 1);
    let channel = api.wait_for(
        "the channel's acks",
        &format!("/api/channels/{}", enc(&format!("{conn_name} (1)"))),
        |ch| (ch["message_stats"]["ack"] == N).then(|| ch.clone()),
    );
    assert_eq!(channel["consumer_count"], 1);
    assert_eq!(channel["message_stats"]["deliver"], N);

    // disable_stats leaves the counters out.
    let bare = api.get(&format!("{path}?disable_stats=true"));
    assert!(bare.get("message_stats").is_none(), "{bare:#}");
    let _ = conn.close(200, "bye").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rates_are_messages_per_second_over_the_last_interval() {
    let b = broker();
    let api = Api::new(&b);
    let queue = unique("mgr-read.rate");
    let (conn, ch) = lapin_channel(&b).await;
    ch.queue_declare(&queue, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    // A steady publisher, ~100 messages per second, while the test looks.
    let publisher = {
        let ch = ch.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            loop {
                let _ = ch
                    .basic_publish(
                        "",
                        &queue,
                        BasicPublishOptions::default(),
                        b"r",
                        BasicProperties::default(),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let path = format!("/api/queues/%2F/{}", enc(&queue));
    let rate = api.wait_for("a publish rate", &path, |q| {
        q["message_stats"]["publish_details"]["rate"].as_f64().filter(|&r| r > 0.0)
    });
    assert!((5.0..=200.0).contains(&rate), "about 100/s published, the API says {rate}/s");
    let ready_rate = api.wait_for("a growing queue", &path, |q| {
        q["messages_ready_details"]["rate"].as_f64().filter(|&r| r > 0.0)
    });
    assert!(ready_rate <= 200.0, "{ready_rate}");
    let overview_rate = api.wait_for("the node's publish rate", "/api/overview", |o| {
        o["message_stats"]["publish_details"]["rate"].as_f64().filter(|&r| r > 0.0)
    });
    assert!(overview_rate <= 400.0, "{overview_rate}");
    publisher.abort();
    // Stopped: the rate falls back to 0.
    api.wait_for("the rate back at 0", &path, |q| {
        (q["message_stats"]["publish_details"]["rate"] == 0.0).then_some(())
    });
    let _ = conn.close(200, "bye").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn management_users_see_their_vhosts_and_connections_and_monitors_see_all() {
    let b = broker();
    let api = Api::new(&b);
    let mut setup = Setup::new(&b, "mgr-tags");
    let vhost = setup.name("vh");
    setup.add_vhost(&vhost);
    setup.set_permissions("guest", &vhost, ".*", ".*", ".*");
    let mgmt = setup.name("mgmt");
    let mon = setup.name("mon");
    setup.add_user(&mgmt, Some("pw"), &["management"]);
    setup.add_user(&mon, Some("pw"), &["monitoring"]);
    setup.set_permissions(&mgmt, "/", ".*", ".*", ".*");

    // guest: a queue and a connection in the other vhost.
    let hidden_queue = unique("mgr-read.hidden");
    let uri = format!("amqp://guest:guest@{}/{}", b.addr, enc(&vhost));
    let guest_name = unique("mgr-read.guest");
    let props = lapin::ConnectionProperties::default().with_connection_name(guest_name.clone().into());
    let guest = within("connect", lapin::Connection::connect(&uri, props)).await.expect("guest connects");
    let gch = guest.create_channel().await.expect("channel");
    gch.queue_declare(&hidden_queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    // mgmt: a connection of its own in "/".
    let own_name = unique("mgr-read.own");
    let uri = format!("amqp://{mgmt}:pw@{}/%2f", b.addr);
    let props = lapin::ConnectionProperties::default().with_connection_name(own_name.clone().into());
    let own = within("connect", lapin::Connection::connect(&uri, props)).await.expect("mgmt connects");
    let _own_ch = own.create_channel().await.expect("channel");

    // The monitor sees both connections; the management user only its own.
    let all = api.wait_for("both connections", "/api/connections", |v| {
        let list = items(v);
        (conn_named(&list, &guest_name).is_some() && conn_named(&list, &own_name).is_some()).then_some(list)
    });
    let guest_conn = conn_named(&all, &guest_name).expect("guest's").clone();
    let (status, seen) = api.get_as("/api/connections", &mon, "pw");
    assert_eq!(status, 200);
    assert!(conn_named(&items(&seen), &guest_name).is_some(), "monitoring sees every connection");
    let (status, seen) = api.get_as("/api/connections", &mgmt, "pw");
    assert_eq!(status, 200);
    let seen = items(&seen);
    assert!(conn_named(&seen, &own_name).is_some(), "its own connection: {seen:#?}");
    assert!(conn_named(&seen, &guest_name).is_none(), "not guest's: {seen:#?}");
    let (_, channels) = api.get_as("/api/channels", &mgmt, "pw");
    assert!(
        items(&channels).iter().all(|c| c["user"] == mgmt.as_str()),
        "only its own channels: {channels:#}"
    );
    let guest_path = format!("/api/connections/{}", enc(guest_conn["name"].as_str().unwrap_or("")));
    let (status, _) = api.get_as(&guest_path, &mgmt, "pw");
    assert_eq!(status, 401, "another user's connection is not the management user's to see");
    let (status, _) = http("DELETE", &format!("{}{guest_path}", api.base), Some((&mgmt, "pw")), &[]);
    assert_eq!(status, 401, "nor to close");

    // Queues: only the vhosts it has a permission in.
    let (_, queues) = api.get_as("/api/queues", &mgmt, "pw");
    assert!(items(&queues).iter().all(|q| q["vhost"] == "/"), "{queues:#}");
    let (status, body) = api.get_as(&format!("/api/queues/{}", enc(&vhost)), &mgmt, "pw");
    assert_eq!((status, body["error"].as_str()), (401, Some("not_authorised")));
    // A monitor sees every connection, but a vhost's objects only where it
    // has a permission (RabbitMQ 3.10's rule); an administrator sees all.
    let (_, queues) = api.get_as("/api/queues", &mon, "pw");
    assert!(items(&queues).iter().all(|q| q["name"] != hidden_queue.as_str()), "{queues:#}");
    let (status, body) = api.get_as(&format!("/api/queues/{}", enc(&vhost)), &mon, "pw");
    assert_eq!((status, body["reason"].as_str()), (401, Some("User not authorised to access virtual host")));
    let (_, queues) = api.get_as("/api/queues", "guest", "guest");
    assert!(
        items(&queues).iter().any(|q| q["name"] == hidden_queue.as_str()),
        "the administrator sees every vhost"
    );
    let (_, exchanges) = api.get_as("/api/exchanges", &mgmt, "pw");
    assert!(items(&exchanges).iter().all(|x| x["vhost"] == "/"));
    let (_, bindings) = api.get_as("/api/bindings", &mgmt, "pw");
    assert!(items(&bindings).iter().all(|x| x["vhost"] == "/"));

    // The node is for monitors; the overview is for everyone, scoped.
    let (status, body) = api.get_as("/api/nodes", &mgmt, "pw");
    assert_eq!((status, body["reason"].as_str()), (401, Some("Not monitor user")));
    let (status, nodes) = api.get_as("/api/nodes", &mon, "pw");
    assert_eq!(status, 200);
    assert_eq!(items(&nodes).len(), 1);
    let (status, overview) = api.get_as("/api/overview", &mgmt, "pw");
    assert_eq!(status, 200);
    assert!(
        overview.get("listeners").is_none() && overview.get("node").is_none(),
        "node facts are for monitors"
    );
    let (status, _) = http("GET", &format!("{}/api/overview", api.base), None, &[]);
    assert_eq!(status, 401);
    let (status, _) = api.get_as("/api/queues", &mgmt, "wrong");
    assert_eq!(status, 401);

    let _ = own.close(200, "bye").await;
    let _ = guest.close(200, "bye").await;
    setup.delete_user(&mgmt);
    setup.delete_user(&mon);
    setup.delete_vhost(&vhost);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_parameters_sort_filter_page_and_project_a_real_list() {
    let b = broker();
    let api = Api::new(&b);
    let prefix = unique("mgr-read.list");
    let (conn, ch) = lapin_channel(&b).await;
    for (i, suffix) in ["c", "a", "b"].into_iter().enumerate() {
        let name = format!("{prefix}-{suffix}");
        ch.queue_declare(&name, QueueDeclareOptions::default(), FieldTable::default())
            .await
            .expect("declare");
        for _ in 0..i {
            let _ = ch
                .basic_publish("", &name, BasicPublishOptions::default(), b"x", BasicProperties::default())
                .await;
        }
    }
    let path = format!(
        "/api/queues?page=1&page_size=2&name={}&sort=name&sort_reverse=true&columns=name,messages",
        enc(&prefix)
    );
    // (RabbitMQ lists a new queue before its first statistics.)
    let page = api.wait_for("the page", &path, |v| v["items"][1].get("messages").map(|_| v.clone()));
    assert_eq!(
        (page["filtered_count"].as_u64(), page["item_count"].as_u64(), page["page_count"].as_u64()),
        (Some(3), Some(2), Some(2))
    );
    let names: Vec<&str> =
        page["items"].as_array().into_iter().flatten().filter_map(|q| q["name"].as_str()).collect();
    assert_eq!(names, [format!("{prefix}-c"), format!("{prefix}-b")]);
    let first = &page["items"][0];
    assert_eq!(first.as_object().map(|o| o.len()), Some(2), "only the columns asked for: {first}");
    // Sorting by a counter, once the counts are in.
    let sorted = api.wait_for(
        "sorted by messages",
        &format!("/api/queues?page=1&name={}&sort=messages&columns=name,messages", enc(&prefix)),
        |v| {
            let counts: Vec<u64> =
                v["items"].as_array().into_iter().flatten().filter_map(|q| q["messages"].as_u64()).collect();
            (counts == [0, 1, 2]).then(|| v.clone())
        },
    );
    assert_eq!(sorted["items"][2]["name"], format!("{prefix}-b"));
    let (status, body) = api.get_as("/api/queues?page=0", "guest", "guest");
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_pagination_parameters")));
    let _ = conn.close(200, "bye").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_connection_closes_it_with_320_and_the_given_reason() {
    let b = broker();
    let api = Api::new(&b);
    let mut raw = tokio::task::block_in_place(|| {
        let mut raw = Raw::connect(b.addr);
        raw.handshake();
        raw
    });
    let port = raw.stream.local_addr().expect("local address").port();
    let c = api.wait_for("the raw connection", "/api/connections", |v| {
        items(v).into_iter().find(|c| c["peer_port"] == port)
    });
    let name = c["name"].as_str().expect("name").to_owned();
    let url = format!("{}/api/connections/{}", api.base, enc(&name));
    let (status, _) = http("DELETE", &url, Some(("guest", "guest")), &[("X-Reason", "mgr test says bye")]);
    assert_eq!(status, 204);
    let close = tokio::task::block_in_place(|| {
        raw.expect_connection_close(320, "CONNECTION_FORCED - mgr test says bye")
    });
    assert_eq!(close.reply_text, "CONNECTION_FORCED - mgr test says bye");
    api.wait_for("the connection gone", "/api/connections", |v| {
        items(v).iter().all(|c| c["peer_port"] != port).then_some(())
    });
    let (status, _) = http("DELETE", &url, Some(("guest", "guest")), &[]);
    assert_eq!(status, 404, "gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn exchanges_and_bindings_are_listed_as_rabbitmq_lists_them() {
    let b = broker();
    let api = Api::new(&b);
    let queue = unique("mgr-read.bq");
    let exchange = unique("mgr-read.bx");
    let (conn, ch) = lapin_channel(&b).await;
    ch.queue_declare(&queue, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    ch.exchange_declare(
        &exchange,
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    ch.queue_bind(&queue, &exchange, "a.#", QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    ch.queue_bind(&queue, &exchange, "", QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    let mut args = FieldTable::default();
    args.insert("x-mgr".into(), AMQPValue::LongString("y".into()));
    ch.queue_bind(&queue, &exchange, "k", QueueBindOptions::default(), args).await.expect("bind");

    let x = api.get(&format!("/api/exchanges/%2F/{}", enc(&exchange)));
    assert_eq!(
        (x["type"].as_str(), x["durable"].as_bool(), x["internal"].as_bool()),
        (Some("topic"), Some(false), Some(false))
    );
    assert_eq!(x["vhost"], "/");
    let default = api.get("/api/exchanges/%2F/amq.default");
    assert_eq!((default["name"].as_str(), default["type"].as_str()), (Some(""), Some("direct")));

    let listed = items(&api.get(&format!("/api/bindings/%2F/e/{}/q/{}", enc(&exchange), enc(&queue))));
    let keys: Vec<(&str, &str)> = listed
        .iter()
        .map(|b| (b["routing_key"].as_str().unwrap_or("?"), b["properties_key"].as_str().unwrap_or("?")))
        .collect();
    assert!(keys.contains(&("a.#", "a.%23")), "{keys:?}");
    assert!(keys.contains(&("", "~")), "{keys:?}");
    let with_args = listed.iter().find(|b| b["routing_key"] == "k").expect("the binding with arguments");
    assert_eq!(with_args["arguments"]["x-mgr"], "y");
    assert!(with_args["properties_key"].as_str().is_some_and(|k| k.starts_with("k~")), "{with_args}");
    assert_eq!(
        (with_args["source"].as_str(), with_args["destination_type"].as_str()),
        (Some(exchange.as_str()), Some("queue"))
    );

    // The queue's bindings start with the default exchange's implicit one.
    let of_queue = items(&api.get(&format!("/api/queues/%2F/{}/bindings", enc(&queue))));
    assert_eq!(of_queue.len(), 4, "{of_queue:#?}");
    assert_eq!(of_queue[0]["source"], "");
    assert_eq!(of_queue[0]["routing_key"], queue.as_str());
    assert_eq!(of_queue[0]["properties_key"], queue.as_str());
    let source = items(&api.get(&format!("/api/exchanges/%2F/{}/bindings/source", enc(&exchange))));
    assert_eq!(source.len(), 3);
    let all = items(&api.get("/api/bindings/%2F"));
    assert!(all.iter().any(|b| b["source"] == "" && b["destination"] == queue.as_str()));
    // A policy that matches the queue shows in its fields.
    let policy = unique("mgr-read.pol");
    let body = serde_json::json!({
        "pattern": format!("^{}$", regex_quote(&queue)),
        "definition": {"max-length": 10},
        "apply-to": "queues",
    })
    .to_string();
    let policy_url = format!("{}/api/policies/%2F/{}", api.base, enc(&policy));
    let status = tokio::task::block_in_place(|| {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode("guest:guest");
        match ureq::put(&policy_url)
            .set("Authorization", &format!("Basic {token}"))
            .set("Content-Type", "application/json")
            .send_string(&body)
        {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("PUT {policy_url}: {e}"),
        }
    });
    assert!(status == 201 || status == 204, "policy stored: {status}");
    let q = api.wait_for("the policy on the queue", &format!("/api/queues/%2F/{}", enc(&queue)), |q| {
        (q["policy"] == policy.as_str()).then(|| q.clone())
    });
    assert_eq!(q["effective_policy_definition"]["max-length"], 10);
    assert_eq!(q["operator_policy"], Value::Null);
    let (status, _) = http("DELETE", &policy_url, Some(("guest", "guest")), &[]);
    assert_eq!(status, 204);
    let (status, _) = api.get_as("/api/exchanges/%2F/no-such-exchange-mgr", "guest", "guest");
    assert_eq!(status, 404);
    let (status, _) =
        api.get_as(&format!("/api/queues/%2F/{}", enc(&unique("mgr-read.none"))), "guest", "guest");
    assert_eq!(status, 404);
    let _ = ch.queue_delete(&queue, QueueDeleteOptions::default()).await;
    let _ = ch.exchange_delete(&exchange, ExchangeDeleteOptions::default()).await;
    let _ = conn.close(200, "bye").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_and_the_health_checks_answer_in_rabbitmqs_shapes() {
    let b = broker();
    let api = Api::new(&b);
    let nodes = items(&api.get("/api/nodes"));
    let node = nodes.first().expect("one node").clone();
    // Every field rabbitmqadmin v2 deserialises.
    for field in [
        "name",
        "uptime",
        "run_queue",
        "processors",
        "os_pid",
        "fd_total",
        "proc_total",
        "mem_limit",
        "mem_alarm",
        "disk_free_limit",
        "disk_free_alarm",
        "rates_mode",
        "enabled_plugins",
        "type",
        "running",
        "mem_used",
        "fd_used",
        "sockets_total",
        "sockets_used",
        "proc_used",
        "disk_free",
        "partitions",
        "applications",
        "contexts",
    ] {
        assert!(node.get(field).is_some(), "node field {field}: {node:#}");
    }
    let name = node["name"].as_str().expect("name").to_owned();
    assert_eq!(api.get(&format!("/api/nodes/{}", enc(&name)))["name"], name.as_str());
    assert!(node["os_pid"].is_string(), "a string, as RabbitMQ");
    assert!(node["fd_used"].as_u64() > Some(0) && node["fd_total"].as_u64() >= node["fd_used"].as_u64());
    assert!(node["mem_used"].as_u64() > Some(0));
    if !external() {
        assert_eq!(node["os_pid"], std::process::id().to_string(), "the broker runs in this process");
        assert_eq!(node["being_drained"], false);
        let server = b.server().expect("in-process");
        assert_eq!(node["mem_limit"], server.resource_limits().memory_budget_bytes());
        let shards = api.wait_for("both shards' loops", &format!("/api/nodes/{}", enc(&name)), |n| {
            let shards = n["lepus_shards"].as_array()?.clone();
            shards.iter().all(|s| s["turns"].as_u64() > Some(0)).then_some(shards)
        });
        assert_eq!(shards.len(), 2);
        for (i, s) in shards.iter().enumerate() {
            assert_eq!(s["shard"], i);
            let busy = s["busy_share"].as_f64().expect("busy share");
            assert!((0.0..=1.0).contains(&busy), "{s}");
            for field in [
                "turns_per_sec",
                "turn_p99_us",
                "ring_occupancy",
                "ring_capacity",
                "connections",
                "queues",
                "held_publishers",
            ] {
                assert!(s.get(field).is_some(), "shard field {field}: {s}");
            }
        }
    }

    let check = |path: &str| api.get_as(&format!("/api/health/checks/{path}"), "guest", "guest");
    assert_eq!(check("alarms"), (200, serde_json::json!({"status": "ok"})));
    assert_eq!(check("local-alarms"), (200, serde_json::json!({"status": "ok"})));
    assert_eq!(check("virtual-hosts"), (200, serde_json::json!({"status": "ok"})));
    let port = b.addr.port();
    assert_eq!(
        check(&format!("port-listener/{port}")),
        (200, serde_json::json!({"status": "ok", "port": port}))
    );
    let (status, body) = check("port-listener/1");
    assert_eq!(
        (status, body["status"].as_str(), body["reason"].as_str()),
        (503, Some("failed"), Some("No active listener"))
    );
    assert_eq!(body["missing"], 1);
    assert!(items(&body["ports"]).contains(&serde_json::json!(port)));
    assert_eq!(check("port-listener/abc").0, 400);
    assert_eq!(
        check("protocol-listener/amqp"),
        (200, serde_json::json!({"status": "ok", "protocol": "amqp"}))
    );
    let (status, body) = check("protocol-listener/mqtt");
    assert_eq!((status, body["missing"].as_str()), (503, Some("mqtt")));
    assert_eq!(check("certificate-expiration/1/days").0, 200, "no expiring certificate");
    let (status, body) = check("certificate-expiration/1/fortnights");
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    assert_eq!(check("certificate-expiration/x/days").0, 400);
    assert_eq!(check("node-is-quorum-critical").0, 200);

    if !external() {
        // An alarm fails the alarm checks, and shows on the node.
        let server = b.server().expect("in-process");
        let limits = server.resource_limits();
        let budget = limits.memory_budget_bytes();
        limits.set_memory_budget_bytes(1);
        let (status, body) = check("alarms");
        limits.set_memory_budget_bytes(budget);
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["alarms"][0]["resource"], "memory");
        assert_eq!(check("local-alarms").0, 200, "cleared");
    }
}

/// A publisher that closes right after publishing still counts in full: the
/// shard keeps its closed channels' counters, so the overview's totals never
/// lose the part after the channel's last snapshot (the default 1 s
/// interval here, so the close almost always falls between two snapshots).
#[tokio::test(flavor = "multi_thread")]
async fn a_channel_closed_right_after_publishing_is_counted_in_full() {
    if external() {
        return;
    }
    let b = start_broker();
    let api = Api::new(&b);
    const N: u64 = 250;
    let conn = named_conn(&b, &unique("mgr-read.short")).await;
    let ch = conn.create_channel().await.expect("channel");
    for i in 0..N {
        let body = format!("m{i}");
        let publish = ch.basic_publish(
            "",
            "no-such-queue",
            lapin::options::BasicPublishOptions::default(),
            body.as_bytes(),
            lapin::BasicProperties::default(),
        );
        publish.await.expect("published").await.expect("routed or dropped");
    }
    conn.close(200, "bye").await.expect("closed");
    let published = api.wait_for("all publishes in the overview", "/api/overview", |o| {
        o["message_stats"]["publish"].as_u64().filter(|&n| n >= N)
    });
    assert_eq!(published, N);
    let dropped = api.wait_for("the unroutable drops", "/api/overview", |o| {
        o["message_stats"]["drop_unroutable"].as_u64().filter(|&n| n >= N)
    });
    assert_eq!(dropped, N);
}

/// A quorum queue's held dead letters (at-least-once, nowhere to go) are
/// `messages_dlx` and `message_bytes_dlx`, and count in `messages` though
/// not in `messages_ready`, as RabbitMQ 3.10 shows them; a classic queue
/// has no such fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_shows_its_held_dead_letters() {
    let b = broker();
    let api = Api::new(&b);
    let (queue, classic) = (unique("mgr-read.alo"), unique("mgr-read.classic"));
    let (_conn, ch) = lapin_channel(&b).await;
    let mut args = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(s.into());
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(0));
    args.insert("x-overflow".into(), text("reject-publish"));
    args.insert("x-dead-letter-exchange".into(), text(&unique("mgr-read.nowhere")));
    args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(&queue, durable, args).await.expect("declare");
    ch.queue_declare(&classic, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for body in ["held-0", "held-1"] {
        let persistent = BasicProperties::default().with_delivery_mode(2);
        let confirm = ch
            .basic_publish("", &queue, BasicPublishOptions::default(), body.as_bytes(), persistent)
            .await
            .expect("publish");
        assert!(confirm.await.expect("confirmed").is_ack());
    }
    let path = format!("/api/queues/%2F/{}", enc(&queue));
    let q = api.wait_for("two held dead letters", &path, |q| (q["messages_dlx"] == 2).then(|| q.clone()));
    assert_eq!(
        (&q["messages"], &q["messages_ready"], &q["message_bytes_dlx"], &q["message_bytes"]),
        (&serde_json::json!(2), &serde_json::json!(0), &serde_json::json!(12), &serde_json::json!(12)),
        "{q:#}"
    );
    let c = api.get(&format!("/api/queues/%2F/{}", enc(&classic)));
    assert!(c.get("messages_dlx").is_none() && c.get("message_bytes_dlx").is_none(), "{c:#}");
}
