//! The management API's writes over real HTTP, each checked by its effect
//! on a real AMQP client (lapin): a user made over HTTP logs in, a
//! permission set over HTTP allows or refuses a declare, a queue PUT is
//! declarable passively, a message published over HTTP is consumed over
//! AMQP, a get leaves the count its ackmode says, a definitions upload
//! comes back out. Statuses and error bodies are the ones RabbitMQ 3.10.8
//! answered to the same requests (quoted in comments where they matter).
//!
//! Every request goes through HTTP, so the suite also runs against
//! RabbitMQ: `LEPUS_TEST_EXTERNAL=127.0.0.1:5672
//! LEPUS_TEST_EXTERNAL_HTTP=http://127.0.0.1:15672`; every name it creates
//! there starts with `mgw-`.

mod common;

use base64::Engine as _;
use common::*;
use lapin::options::{BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::{json, Value};

/// One HTTP answer.
struct Answer {
    status: u16,
    body: String,
    location: Option<String>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A client of the API as one user.
struct Api {
    base: String,
    user: String,
    password: String,
}

impl Api {
    fn new(broker: &Broker, user: &str, password: &str) -> Api {
        let base = broker.management_url().expect("management API on");
        Api { base, user: user.into(), password: password.into() }
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.password));
        let request = ureq::request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Basic {token}"))
            .set("Content-Type", "application/json");
        let outcome = match body {
            Some(body) => request.send_string(body),
            None => request.call(),
        };
        let response = match outcome {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = response.status();
        let location = response.header("location").map(str::to_owned);
        Answer { status, body: response.into_string().unwrap_or_default(), location }
    }

    fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None)
    }

    fn put(&self, path: &str, body: Value) -> Answer {
        self.call("PUT", path, Some(&body.to_string()))
    }

    fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(&body.to_string()))
    }

    fn delete(&self, path: &str) -> Answer {
        self.call("DELETE", path, None)
    }
}

/// A name for this suite (`mgw-` so it is ours on a shared RabbitMQ).
fn name(what: &str) -> String {
    unique(what).replacen("lepus-it.", "mgw-", 1)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn status_and_body(a: &Answer) -> (u16, Value) {
    (a.status, if a.body.is_empty() { Value::Null } else { a.json() })
}

async fn connect_as(
    broker: &Broker,
    user: &str,
    password: &str,
    vhost: &str,
) -> lapin::Result<lapin::Connection> {
    let uri = format!("amqp://{}:{}@{}/{}", enc(user), enc(password), broker.addr, enc(vhost));
    within("lapin connect", lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())).await
}

async fn passive_declare(conn: &lapin::Connection, queue: &str) -> lapin::Result<u32> {
    let ch = conn.create_channel().await?;
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    let q = ch.queue_declare(queue, options, FieldTable::default()).await?;
    Ok(q.message_count())
}

#[test]
fn a_user_and_permissions_made_over_http_govern_amqp() {
    let broker = start_broker();
    let admin = Api::new(&broker, "guest", "guest");
    let (user, vhost) = (name("user"), name("vhost"));
    let (u, v) = (enc(&user), enc(&vhost));

    // RabbitMQ: 201 then 204.
    assert_eq!(
        admin.put(&format!("/api/vhosts/{v}"), json!({"description": "d", "tags": "a,b"})).status,
        201
    );
    assert_eq!(admin.put(&format!("/api/vhosts/{v}"), json!({"description": "d2"})).status, 204);
    let got = admin.get(&format!("/api/vhosts/{v}")).json();
    assert_eq!((got["name"].as_str(), got["description"].as_str()), (Some(vhost.as_str()), Some("d2")));
    // RabbitMQ replaces the metadata on update: the tags are gone.
    assert_eq!(got["tags"], json!([]));

    // RabbitMQ: {"error":"bad_request","reason":"tags_not_present"}.
    let a = admin.put(&format!("/api/users/{u}"), json!({"password": "pw"}));
    assert_eq!(status_and_body(&a), (400, json!({"error": "bad_request", "reason": "tags_not_present"})));
    assert_eq!(
        admin.put(&format!("/api/users/{u}"), json!({"password": "pw", "tags": "management,x"})).status,
        201
    );
    assert_eq!(
        admin.put(&format!("/api/users/{u}"), json!({"password": "pw", "tags": ["management"]})).status,
        204
    );
    let got = admin.get(&format!("/api/users/{u}")).json();
    assert_eq!(got["tags"], json!(["management"]));
    assert_eq!(got["hashing_algorithm"], "rabbit_password_hashing_sha256");

    let rt = runtime();
    rt.block_on(async {
        // No permission in the vhost yet: the login into it is refused.
        assert!(connect_as(&broker, &user, "pw", &vhost).await.is_err(), "no permission yet");
        // RabbitMQ: {"error":"bad_request","reason":"[{key_missing,read}]"}.
        let a = admin.put(&format!("/api/permissions/{v}/{u}"), json!({"configure": ".*", "write": ".*"}));
        assert_eq!(
            status_and_body(&a),
            (400, json!({"error": "bad_request", "reason": "[{key_missing,read}]"}))
        );
        // RabbitMQ: {"error":"bad_request","reason":"vhost_or_user_not_found"}.
        let a = admin.put(
            &format!("/api/permissions/{v}/{}", enc(&name("nobody"))),
            json!({"configure": ".*", "write": ".*", "read": ".*"}),
        );
        assert_eq!(
            status_and_body(&a),
            (400, json!({"error": "bad_request", "reason": "vhost_or_user_not_found"}))
        );
        let a = admin.put(
            &format!("/api/permissions/{v}/{u}"),
            json!({"configure": "^mgw-allowed", "write": ".*", "read": ".*"}),
        );
        assert_eq!(a.status, 201);
        let conn = connect_as(&broker, &user, "pw", &vhost).await.expect("the permission lets the user in");
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare("mgw-allowed-q", QueueDeclareOptions::default(), FieldTable::default())
            .await
            .expect("configure ^mgw-allowed allows this declare");
        let refused =
            ch.queue_declare("mgw-other-q", QueueDeclareOptions::default(), FieldTable::default()).await;
        assert!(refused.is_err(), "configure ^mgw-allowed refuses mgw-other-q");
        let _ = conn.close(200, "bye").await;

        // The permission as GET shows it, and in the lists.
        let p = admin.get(&format!("/api/permissions/{v}/{u}")).json();
        assert_eq!(
            p,
            json!({"user": user, "vhost": vhost, "configure": "^mgw-allowed", "write": ".*", "read": ".*"})
        );
        let listed = admin.get(&format!("/api/users/{u}/permissions")).json();
        assert_eq!(listed.as_array().map(Vec::len), Some(1));
        // RabbitMQ gave the vhost's creator (guest) full permissions too.
        let listed = admin.get(&format!("/api/vhosts/{v}/permissions")).json();
        assert!(listed.as_array().is_some_and(|l| l.iter().any(|p| p["user"] == "guest")), "{listed}");

        // Deleting the permission locks the user out again.
        assert_eq!(admin.delete(&format!("/api/permissions/{v}/{u}")).status, 204);
        assert_eq!(admin.delete(&format!("/api/permissions/{v}/{u}")).status, 404);
        assert!(connect_as(&broker, &user, "pw", &vhost).await.is_err(), "permission deleted");

        // A password given as a hash (RabbitMQ's format) logs in.
        let hash = lepus_hash("pw2");
        let a = admin.put(
            &format!("/api/users/{u}"),
            json!({"password_hash": hash, "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""}),
        );
        assert_eq!(a.status, 204);
        admin.put(
            &format!("/api/permissions/{v}/{u}"),
            json!({"configure": ".*", "write": ".*", "read": ".*"}),
        );
        assert!(connect_as(&broker, &user, "pw2", &vhost).await.is_ok(), "the hashed password logs in");
        assert!(connect_as(&broker, &user, "pw", &vhost).await.is_err(), "the old password no longer does");
    });

    // A user with no permission anywhere is listed as such; bulk delete.
    let loner = name("loner");
    assert_eq!(
        admin.put(&format!("/api/users/{}", enc(&loner)), json!({"password": "x", "tags": ""})).status,
        201
    );
    let without = admin.get("/api/users/without-permissions").json();
    assert!(without.as_array().is_some_and(|l| l.iter().any(|x| x["name"] == loner.as_str())), "{without}");
    assert_eq!(admin.post("/api/users/bulk-delete", json!({"users": [loner]})).status, 204);
    assert_eq!(admin.get(&format!("/api/users/{}", enc(&loner))).status, 404);

    assert_eq!(admin.delete(&format!("/api/users/{u}")).status, 204);
    assert_eq!(admin.delete(&format!("/api/users/{u}")).status, 404);
    assert_eq!(admin.delete(&format!("/api/vhosts/{v}")).status, 204);
    // RabbitMQ: {"error":"Object Not Found","reason":"Not Found"}.
    let a = admin.delete(&format!("/api/vhosts/{v}"));
    assert_eq!(status_and_body(&a), (404, json!({"error": "Object Not Found", "reason": "Not Found"})));
}

/// A RabbitMQ password hash of `password` (salt ‖ SHA-256(salt ‖ password),
/// base64), computed here independently of the broker.
fn lepus_hash(password: &str) -> String {
    use sha2::Digest as _;
    let salt = [1u8, 2, 3, 4];
    let mut h = sha2::Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&h.finalize());
    base64::engine::general_purpose::STANDARD.encode(out)
}

#[test]
fn tag_rules_are_rabbitmqs() {
    let broker = start_broker();
    let admin = Api::new(&broker, "guest", "guest");
    let (mgmt, pm, vhost, hidden) = (name("mgmt"), name("pm"), name("vh"), name("hidden"));
    for (user, tags) in [(&mgmt, "management"), (&pm, "policymaker")] {
        assert_eq!(
            admin.put(&format!("/api/users/{}", enc(user)), json!({"password": "pw", "tags": tags})).status,
            201
        );
    }
    for v in [&vhost, &hidden] {
        assert_eq!(admin.put(&format!("/api/vhosts/{}", enc(v)), json!({})).status, 201);
    }
    for user in [&mgmt, &pm] {
        let p = json!({"configure": ".*", "write": ".*", "read": ".*"});
        assert_eq!(admin.put(&format!("/api/permissions/{}/{}", enc(&vhost), enc(user)), p).status, 201);
    }
    let m = Api::new(&broker, &mgmt, "pw");
    let not_admin = json!({"error": "not_authorised", "reason": "Not administrator user"});
    // RabbitMQ: 401 {"error":"not_authorised","reason":"Not administrator user"} for each.
    assert_eq!(status_and_body(&m.get("/api/users")), (401, not_admin.clone()));
    assert_eq!(status_and_body(&m.get("/api/permissions")), (401, not_admin.clone()));
    assert_eq!(
        status_and_body(&m.put("/api/users/mgw-x", json!({"password": "p", "tags": ""}))),
        (401, not_admin.clone())
    );
    assert_eq!(
        status_and_body(&m.put(&format!("/api/vhosts/{}", enc(&name("v"))), json!({}))),
        (401, not_admin.clone())
    );
    assert_eq!(status_and_body(&m.get("/api/definitions")), (401, not_admin.clone()));
    // A management user sees the vhosts it has a permission in, only.
    let seen: Vec<String> = m
        .get("/api/vhosts")
        .json()
        .as_array()
        .map(|l| l.iter().filter_map(|v| v["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    assert_eq!(seen, vec![vhost.clone()]);
    assert_eq!(m.get(&format!("/api/vhosts/{}", enc(&hidden))).status, 401);
    // Policies: management reads, policymaker writes.
    let policy = json!({"pattern": "^mgw-none$", "definition": {"max-length": 1}});
    let path = format!("/api/policies/{}/{}", enc(&vhost), enc(&name("pol")));
    // RabbitMQ: 401 {"error":"not_authorised","reason":"User not authorised to access object"}.
    assert_eq!(
        status_and_body(&m.put(&path, policy.clone())),
        (401, json!({"error": "not_authorised", "reason": "User not authorised to access object"}))
    );
    let p = Api::new(&broker, &pm, "pw");
    assert_eq!(p.put(&path, policy.clone()).status, 201);
    assert_eq!(p.put(&path, policy).status, 204);
    // A single policy is for policymakers; the list for anyone who sees
    // the vhost (RabbitMQ: 401 "User not authorised to access object", 200).
    assert_eq!(m.get(&path).status, 401);
    assert_eq!(p.get(&path).status, 200);
    let listed = m.get(&format!("/api/policies/{}", enc(&vhost))).json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(m.get("/api/parameters").status, 401);
    assert_eq!(p.delete(&path).status, 204);

    // Without permissions in a vhost, the operations that run over AMQP
    // as the caller are refused as RabbitMQ refuses them.
    let none = json!({"configure": "^$", "write": "^$", "read": "^$"});
    assert_eq!(admin.put(&format!("/api/permissions/{}/{}", enc(&vhost), enc(&mgmt)), none).status, 204);
    let q = name("q");
    let qp = format!("/api/queues/{}/{}", enc(&vhost), enc(&q));
    // RabbitMQ: 401 {"error":"not_authorised","reason":"Access refused."}.
    let refused = json!({"error": "not_authorised", "reason": "Access refused."});
    assert_eq!(status_and_body(&m.put(&qp, json!({}))), (401, refused.clone()));
    assert_eq!(admin.put(&qp, json!({})).status, 201);
    assert_eq!(status_and_body(&m.delete(&format!("{qp}/contents"))), (401, refused.clone()));
    // RabbitMQ: 401 with the AMQP text for a get.
    let a =
        m.post(&format!("{qp}/get"), json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}));
    let reason =
        format!("ACCESS_REFUSED - access to queue '{q}' in vhost '{vhost}' refused for user '{mgmt}'");
    assert_eq!(status_and_body(&a), (401, json!({"error": "not_authorised", "reason": reason})));
    // RabbitMQ: 400 with "403 " and the AMQP text for a publish.
    let a = m.post(
        &format!("/api/exchanges/{}/amq.topic/publish", enc(&vhost)),
        json!({"properties": {}, "routing_key": "k", "payload": "p", "payload_encoding": "string"}),
    );
    let reason = format!(
        "403 ACCESS_REFUSED - access to exchange 'amq.topic' in vhost '{vhost}' refused for user '{mgmt}'"
    );
    assert_eq!(status_and_body(&a), (400, json!({"error": "bad_request", "reason": reason})));
    // An administrator without a permission in the vhost: RabbitMQ: 401
    // "Access refused." too.
    assert_eq!(admin.delete(&format!("/api/permissions/{}/guest", enc(&vhost))).status, 204);
    assert_eq!(status_and_body(&admin.put(&qp, json!({}))), (401, refused));

    for user in [&mgmt, &pm] {
        admin.delete(&format!("/api/users/{}", enc(user)));
    }
    for v in [&vhost, &hidden] {
        admin.delete(&format!("/api/vhosts/{}", enc(v)));
    }
}

#[test]
fn queues_and_exchanges_are_declared_and_deleted_as_amqp_does() {
    let broker = start_broker();
    let admin = Api::new(&broker, "guest", "guest");
    let (q, x) = (name("q"), name("x"));
    let (qp, xp) = (format!("/api/queues/%2F/{}", enc(&q)), format!("/api/exchanges/%2F/{}", enc(&x)));
    assert_eq!(admin.put(&qp, json!({"durable": true})).status, 201);
    assert_eq!(admin.put(&qp, json!({"durable": true})).status, 204);
    // RabbitMQ: the inequivalent-arg text without "PRECONDITION_FAILED - ".
    let a = admin.put(&qp, json!({"durable": false}));
    let reason = format!(
        "inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'false' but current is 'true'"
    );
    assert_eq!(status_and_body(&a), (400, json!({"error": "bad_request", "reason": reason})));
    let bad = format!("/api/queues/%2F/{}", enc(&name("bad")));
    let a = admin.put(&bad, json!({"arguments": {"x-max-length": "x"}}));
    assert_eq!(a.status, 400);
    assert!(
        a.json()["reason"].as_str().is_some_and(|r| r.contains("invalid arg 'x-max-length'")),
        "{}",
        a.body
    );

    // RabbitMQ: 400 "unknown exchange type 'bogus'" (or "invalid exchange
    // type 'bogus'" once that Erlang atom exists).
    let a = admin.put(&xp, json!({"type": "bogus"}));
    assert_eq!((a.status, a.json()["error"].as_str()), (400, Some("bad_request")));
    let reason = a.json()["reason"].as_str().map(str::to_owned).unwrap_or_default();
    assert!(reason.ends_with("exchange type 'bogus'"), "{reason}");
    assert_eq!(admin.put(&xp, json!({"type": "direct"})).status, 201);
    assert_eq!(admin.put(&xp, json!({"type": "direct"})).status, 204);
    let a = admin.put(&xp, json!({"type": "fanout"}));
    assert_eq!(a.status, 400);

    let rt = runtime();
    rt.block_on(async {
        let conn = lapin_conn(&broker).await;
        assert_eq!(passive_declare(&conn, &q).await.expect("the queue PUT made exists"), 0);
        let ch = conn.create_channel().await.expect("channel");
        ch.exchange_declare(
            &x,
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("the exchange PUT made exists");
        // Confirmed: the queue has the message before the HTTP delete.
        ch.confirm_select(lapin::options::ConfirmSelectOptions::default()).await.expect("confirm mode");
        ch.basic_publish("", &q, BasicPublishOptions::default(), b"m", BasicProperties::default())
            .await
            .expect("publish")
            .await
            .expect("confirm");
        // if-empty refuses a queue with a message. RabbitMQ: 400
        // "queue '…' in vhost '/' not empty".
        let a = admin.delete(&format!("{qp}?if-empty=true"));
        let reason = format!("queue '{q}' in vhost '/' not empty");
        assert_eq!(status_and_body(&a), (400, json!({"error": "bad_request", "reason": reason})));
        // Purge empties it.
        assert_eq!(admin.delete(&format!("{qp}/contents")).status, 204);
        assert_eq!(passive_declare(&conn, &q).await.expect("still there"), 0);
        assert_eq!(admin.delete(&format!("{qp}?if-empty=true")).status, 204);
        assert!(passive_declare(&conn, &q).await.is_err(), "deleted over HTTP, gone over AMQP");
        // RabbitMQ: 404 {"error":"Object Not Found","reason":"Not Found"}.
        assert_eq!(
            status_and_body(&admin.delete(&qp)),
            (404, json!({"error": "Object Not Found", "reason": "Not Found"}))
        );
        assert_eq!(admin.delete(&format!("{qp}/contents")).status, 404);
        assert_eq!(admin.delete(&xp).status, 204);
        assert_eq!(admin.delete(&xp).status, 404);
        let _ = conn.close(200, "bye").await;
    });
}

#[test]
fn publish_get_and_bindings_over_http_meet_amqp() {
    let broker = start_broker();
    let admin = Api::new(&broker, "guest", "guest");
    let (q, x) = (name("q"), name("x"));
    let (qe, xe) = (enc(&q), enc(&x));
    assert_eq!(admin.put(&format!("/api/queues/%2F/{qe}"), json!({})).status, 201);
    assert_eq!(admin.put(&format!("/api/exchanges/%2F/{xe}"), json!({"type": "direct"})).status, 201);
    // RabbitMQ: 201, Location "<queue>/<properties_key>" (relative).
    let a = admin.post(&format!("/api/bindings/%2F/e/{xe}/q/{qe}"), json!({"routing_key": "a b/c~d%"}));
    assert_eq!(a.status, 201);
    assert_eq!(a.location.as_deref(), Some(format!("{qe}/a%2Bb%252Fc%257Ed%2525").as_str()));
    let binding = admin.get(&format!("/api/bindings/%2F/e/{xe}/q/{qe}/a%2Bb%252Fc%257Ed%2525")).json();
    assert_eq!(binding["routing_key"], "a b/c~d%");
    assert_eq!(binding["properties_key"], "a+b%2Fc%7Ed%25");
    // RabbitMQ: 404 {"error":"not_found","reason":"no exchange '…' in vhost '/'"}.
    let nox = name("nox");
    let a = admin.post(&format!("/api/bindings/%2F/e/{}/q/{qe}", enc(&nox)), json!({"routing_key": "k"}));
    let reason = format!("no exchange '{nox}' in vhost '/'");
    assert_eq!(status_and_body(&a), (404, json!({"error": "not_found", "reason": reason})));

    let publish = |key: &str, payload: Value, encoding: &str| {
        admin.post(
            &format!("/api/exchanges/%2F/{xe}/publish"),
            json!({"properties": {"delivery_mode": 2, "headers": {"h": 1}, "message_id": "m1"},
                   "routing_key": key, "payload": payload, "payload_encoding": encoding}),
        )
    };
    // RabbitMQ: {"routed":true}, {"routed":false}.
    assert_eq!(publish("a b/c~d%", json!("one"), "string").json(), json!({"routed": true}));
    assert_eq!(publish("elsewhere", json!("lost"), "string").json(), json!({"routed": false}));
    assert_eq!(publish("a b/c~d%", json!("dHdv"), "base64").json(), json!({"routed": true}));
    // RabbitMQ: {"error":"bad_request","reason":"[{key_missing,payload_encoding}]"}.
    let a = admin.post(
        &format!("/api/exchanges/%2F/{xe}/publish"),
        json!({"properties": {}, "routing_key": "k", "payload": "p"}),
    );
    assert_eq!(
        status_and_body(&a),
        (400, json!({"error": "bad_request", "reason": "[{key_missing,payload_encoding}]"}))
    );
    // RabbitMQ: {"error":"bad_request","reason":["not_base64","!!"]}.
    assert_eq!(
        status_and_body(&publish("k", json!("!!"), "base64")),
        (400, json!({"error": "bad_request", "reason": ["not_base64", "!!"]}))
    );
    assert_eq!(publish("a b/c~d%", json!("three"), "string").json(), json!({"routed": true}));

    let get = |count: u64, ackmode: &str| {
        admin.post(
            &format!("/api/queues/%2F/{qe}/get"),
            json!({"count": count, "ackmode": ackmode, "encoding": "auto", "truncate": 50000}),
        )
    };
    let rt = runtime();
    rt.block_on(async {
        let conn = lapin_conn(&broker).await;
        assert_eq!(passive_declare(&conn, &q).await.expect("queue"), 3);
        // ack_requeue_true: seen, all back.
        let got = get(2, "ack_requeue_true").json();
        assert_eq!(got[0]["payload"], "one");
        assert_eq!(got[0]["payload_encoding"], "string");
        assert_eq!(got[0]["payload_bytes"], 3);
        assert_eq!(got[0]["redelivered"], false);
        assert_eq!(got[0]["exchange"], x.as_str());
        assert_eq!(got[0]["routing_key"], "a b/c~d%");
        assert_eq!(got[0]["message_count"], 2);
        assert_eq!(
            got[0]["properties"],
            json!({"delivery_mode": 2, "headers": {"h": 1}, "message_id": "m1"})
        );
        assert_eq!(got[1]["payload"], "two");
        assert_eq!(passive_declare(&conn, &q).await.expect("queue"), 3);
        // reject_requeue_true: back too, now redelivered.
        let got = get(1, "reject_requeue_true").json();
        assert_eq!(got[0]["redelivered"], true);
        assert_eq!(passive_declare(&conn, &q).await.expect("queue"), 3);
        // ack_requeue_false and reject_requeue_false take one each.
        assert_eq!(get(1, "ack_requeue_false").json().as_array().map(Vec::len), Some(1));
        assert_eq!(passive_declare(&conn, &q).await.expect("queue"), 2);
        assert_eq!(get(1, "reject_requeue_false").json().as_array().map(Vec::len), Some(1));
        assert_eq!(passive_declare(&conn, &q).await.expect("queue"), 1);
        // RabbitMQ: {"error":"bad_request","reason":"[{key_missing,encoding}]"}.
        let a = admin
            .post(&format!("/api/queues/%2F/{qe}/get"), json!({"count": 1, "ackmode": "ack_requeue_true"}));
        assert_eq!(
            status_and_body(&a),
            (400, json!({"error": "bad_request", "reason": "[{key_missing,encoding}]"}))
        );

        // The last one, consumed over AMQP, with its properties.
        let ch = conn.create_channel().await.expect("channel");
        let mut consumer = ch
            .basic_consume(
                &q,
                "c",
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        use futures_lite::StreamExt as _;
        let delivery = within("the HTTP-published message", consumer.next()).await.expect("one").expect("ok");
        assert_eq!(delivery.data, b"three");
        assert_eq!(delivery.properties.message_id().as_ref().map(|s| s.as_str()), Some("m1"));
        assert_eq!(delivery.properties.delivery_mode(), &Some(2));

        // Unbinding over HTTP stops the routing.
        let path = format!("/api/bindings/%2F/e/{xe}/q/{qe}/a%2Bb%252Fc%257Ed%2525");
        assert_eq!(admin.delete(&path).status, 204);
        assert_eq!(admin.delete(&path).status, 404);
        assert_eq!(publish("a b/c~d%", json!("four"), "string").json(), json!({"routed": false}));

        // Exchange-to-exchange, with arguments in the key.
        let x2 = name("x2");
        assert_eq!(
            admin.put(&format!("/api/exchanges/%2F/{}", enc(&x2)), json!({"type": "fanout"})).status,
            201
        );
        let a = admin.post(
            &format!("/api/bindings/%2F/e/{xe}/e/{}", enc(&x2)),
            json!({"routing_key": "k2", "arguments": {"a": 1}}),
        );
        assert_eq!(a.status, 201);
        let location = a.location.expect("a Location");
        assert!(location.starts_with(&format!("{}/k2~", enc(&x2))), "{location}");
        let path = format!("/api/bindings/%2F/e/{xe}/e/{location}");
        assert_eq!(admin.get(&path).json()["arguments"], json!({"a": 1}));
        assert_eq!(admin.delete(&path).status, 204);
        admin.delete(&format!("/api/exchanges/%2F/{}", enc(&x2)));

        let ch2 = conn.create_channel().await.expect("channel");
        assert!(ch2.basic_get(&q, BasicGetOptions { no_ack: true }).await.expect("get").is_none());
        let _ = conn.close(200, "bye").await;
    });
    admin.delete(&format!("/api/queues/%2F/{qe}"));
    admin.delete(&format!("/api/exchanges/%2F/{xe}"));
}

#[test]
fn definitions_round_trip_and_limits_apply() {
    let broker = start_broker();
    let admin = Api::new(&broker, "guest", "guest");
    let (vhost, user, q, x) = (name("dvh"), name("duser"), name("dq"), name("dx"));
    let doc = json!({
        "users": [{"name": user, "password_hash": lepus_hash("pw"), "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["management"]}],
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}],
        "policies": [{"vhost": vhost, "name": "mgw-pol", "pattern": "^mgw-none$", "apply-to": "queues", "definition": {"max-length": 5}, "priority": 0}],
        "queues": [{"name": q, "vhost": vhost, "durable": true, "auto_delete": false, "arguments": {}}],
        "exchanges": [{"name": x, "vhost": vhost, "type": "topic", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}],
        "bindings": [{"source": x, "vhost": vhost, "destination": q, "destination_type": "queue", "routing_key": "a.#", "arguments": {}}],
    });
    // RabbitMQ: 204.
    assert_eq!(admin.post("/api/definitions", doc).status, 204);
    // RabbitMQ: {"error":"bad_request","reason":"failed_to_parse_json"}.
    let a = admin.call("POST", "/api/definitions", Some("nonsense"));
    assert_eq!(status_and_body(&a), (400, json!({"error": "bad_request", "reason": "failed_to_parse_json"})));

    let out = admin.get("/api/definitions").json();
    let has = |section: &str, key: &str, value: &str| {
        out[section].as_array().is_some_and(|l| l.iter().any(|i| i[key] == value))
    };
    assert!(has("users", "name", &user) && has("vhosts", "name", &vhost), "{out}");
    assert!(has("queues", "name", &q) && has("exchanges", "name", &x) && has("policies", "name", "mgw-pol"));
    assert!(has("bindings", "routing_key", "a.#") && has("permissions", "user", &user));
    let v = enc(&vhost);
    let per_vhost = admin.get(&format!("/api/definitions/{v}")).json();
    assert_eq!(
        per_vhost["queues"],
        json!([{"name": q, "durable": true, "auto_delete": false, "arguments": {}}])
    );

    // Per-vhost upload, multipart as the web UI sends it.
    let q2 = name("dq2");
    let boundary = "mgwBoundary7";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.json\"\r\n\
Content-Type: application/json\r\n\r\n{}\r\n--{boundary}--\r\n",
        json!({"queues": [{"name": q2, "durable": true, "auto_delete": false, "arguments": {}}]})
    );
    let token = base64::engine::general_purpose::STANDARD.encode("guest:guest");
    let r = ureq::post(&format!("{}/api/definitions/{v}", admin.base))
        .set("Authorization", &format!("Basic {token}"))
        .set("Content-Type", &format!("multipart/form-data; boundary={boundary}"))
        .send_string(&form);
    assert_eq!(r.map(|r| r.status()).unwrap_or_else(|e| panic!("{e}")), 204);

    let rt = runtime();
    rt.block_on(async {
        // The imported user logs in; the queues exist (the shards made them).
        let conn = connect_as(&broker, &user, "pw", &vhost).await.expect("imported user logs in");
        assert_eq!(passive_declare(&conn, &q).await.expect("imported queue"), 0);
        assert_eq!(passive_declare(&conn, &q2).await.expect("multipart-imported queue"), 0);
        let _ = conn.close(200, "bye").await;

        // A vhost limit set over HTTP refuses the next connection.
        // RabbitMQ: 204 for each.
        assert_eq!(admin.put(&format!("/api/vhost-limits/{v}/max-connections"), json!({"value": 0})).status, 204);
        let limits = admin.get(&format!("/api/vhost-limits/{v}")).json();
        assert_eq!(limits, json!([{"vhost": vhost, "value": {"max-connections": 0}}]));
        assert!(connect_as(&broker, &user, "pw", &vhost).await.is_err(), "max-connections 0");
        assert_eq!(admin.delete(&format!("/api/vhost-limits/{v}/max-connections")).status, 204);
        assert!(connect_as(&broker, &user, "pw", &vhost).await.is_ok(), "limit cleared");
        // RabbitMQ: 400 "Validation failed\n\nUnrecognised terms [{<<\"max-bogus\">>,10}] in limits\n".
        let a = admin.put(&format!("/api/vhost-limits/{v}/max-bogus"), json!({"value": 10}));
        assert_eq!(
            status_and_body(&a),
            (400, json!({"error": "bad_request", "reason": "Validation failed\n\nUnrecognised terms [{<<\"max-bogus\">>,10}] in limits\n"}))
        );
        // A user limit.
        let u = enc(&user);
        assert_eq!(admin.put(&format!("/api/user-limits/{u}/max-connections"), json!({"value": 0})).status, 204);
        assert_eq!(admin.get(&format!("/api/user-limits/{u}")).json(), json!([{"user": user, "value": {"max-connections": 0}}]));
        assert!(connect_as(&broker, &user, "pw", &vhost).await.is_err(), "user max-connections 0");
        assert_eq!(admin.delete(&format!("/api/user-limits/{u}/max-connections")).status, 204);
    });
    // The aliveness test. RabbitMQ: {"status":"ok"}.
    assert_eq!(admin.get("/api/aliveness-test/%2F").json(), json!({"status": "ok"}));
    assert_eq!(admin.get(&format!("/api/aliveness-test/{}", enc(&name("novh")))).status, 404);

    assert_eq!(admin.delete(&format!("/api/users/{}", enc(&user))).status, 204);
    assert_eq!(admin.delete(&format!("/api/vhosts/{v}")).status, 204);
}

#[test]
fn policies_and_parameters_are_checked_and_stored() {
    let broker = start_broker();
    let admin = Api::new(&broker, "guest", "guest");
    let vhost = name("pvh");
    let v = enc(&vhost);
    assert_eq!(admin.put(&format!("/api/vhosts/{v}"), json!({})).status, 201);
    let path = format!("/api/policies/{v}/p1");
    let policy =
        json!({"pattern": "^mgw", "definition": {"max-length": 10}, "priority": 1, "apply-to": "queues"});
    assert_eq!(admin.put(&path, policy.clone()).status, 201);
    assert_eq!(admin.put(&path, policy).status, 204);
    // RabbitMQ: the policy back with its vhost and name.
    assert_eq!(
        admin.get(&path).json(),
        json!({"vhost": vhost, "name": "p1", "pattern": "^mgw", "apply-to": "queues", "definition": {"max-length": 10}, "priority": 1})
    );
    // RabbitMQ's reasons, HTML-escaped as it sends them.
    let a =
        admin.put(&format!("/api/policies/{v}/p2"), json!({"pattern": "x", "definition": {"bogus-key": 10}}));
    assert_eq!(
        status_and_body(&a),
        (
            400,
            json!({"error": "bad_request", "reason": "Validation failed\n\n[{&lt;&lt;\"bogus-key\"&gt;&gt;,10}] are not recognised policy settings\n"})
        )
    );
    let a = admin.put(
        &format!("/api/policies/{v}/p2"),
        json!({"pattern": "x", "definition": {"max-length": 1}, "apply-to": "nope"}),
    );
    assert_eq!(
        status_and_body(&a),
        (
            400,
            json!({"error": "bad_request", "reason": "Validation failed\n\napply-to 'nope' unrecognised; should be 'queues', 'exchanges' or 'all'\n"})
        )
    );
    let a = admin.put(&format!("/api/policies/{v}/p2"), json!({"definition": {"max-length": 1}}));
    assert_eq!(
        status_and_body(&a),
        (400, json!({"error": "bad_request", "reason": "[{key_missing,pattern}]"}))
    );
    let a = admin.put(
        &format!("/api/policies/{}/p2", enc(&name("novh"))),
        json!({"pattern": "x", "definition": {"max-length": 1}}),
    );
    assert_eq!(status_and_body(&a), (404, json!({"error": "not_found", "reason": "vhost_not_found"})));
    assert_eq!(admin.delete(&format!("/api/policies/{v}/nope")).status, 404);
    assert_eq!(admin.delete(&path).status, 204);

    // Operator policies: stored as RabbitMQ stores them, listed as parameters.
    let op = format!("/api/operator-policies/{v}/op1");
    assert_eq!(
        admin
            .put(&op, json!({"pattern": "^mgw", "definition": {"max-length": 10}, "apply-to": "queues"}))
            .status,
        201
    );
    assert_eq!(
        admin.get(&format!("/api/operator-policies/{v}")).json(),
        json!([{"vhost": vhost, "name": "op1", "pattern": "^mgw", "apply-to": "queues", "definition": {"max-length": 10}, "priority": 0}])
    );
    let params = admin.get("/api/parameters/operator_policy").json();
    assert!(
        params
            .as_array()
            .is_some_and(|l| l.iter().any(|p| p["name"] == "op1" && p["vhost"] == vhost.as_str())),
        "{params}"
    );
    assert_eq!(admin.delete(&op).status, 204);

    // Global parameters.
    let g = format!("/api/global-parameters/{}", enc(&name("g")));
    assert_eq!(admin.put(&g, json!({"value": {"x": 1}})).status, 201);
    assert_eq!(admin.get(&g).json()["value"], json!({"x": 1}));
    assert_eq!(admin.delete(&g).status, 204);
    assert_eq!(admin.delete(&g).status, 404);
    admin.delete(&format!("/api/vhosts/{v}"));
}
