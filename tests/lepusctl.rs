//! `lepusctl`, the binary, run as an operator runs it: its output and its
//! exit codes (sysexits, as rabbitmqctl's) against a real management API.
//!
//! The broker is Lepus started by the harness (its management listener), or
//! the external one of `LEPUS_TEST_EXTERNAL` with its API at
//! `LEPUS_TEST_EXTERNAL_HTTP` (RabbitMQ 3.10: `127.0.0.1:5672` and
//! `http://127.0.0.1:15672`, guest/guest), the reference the same tests must
//! pass against. Every object created is named `ctl-…`.
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_lepusctl");

/// How long a test waits for the API to show something the broker already
/// did (RabbitMQ's statistics lag by up to its 5 s collection interval).
const VISIBLE_WITHIN: Duration = Duration::from_secs(15);

/// One finished `lepusctl` run.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs lepusctl with `args` and nothing from the environment that could
/// point it elsewhere; `stdin` is given to it.
fn run_with(url: Option<&str>, args: &[&str], stdin: &str) -> Run {
    run_env(url, args, stdin, &[])
}

/// As [`run_with`], with `env` set.
fn run_env(url: Option<&str>, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("LEPUSCTL_USERNAME")
        .env_remove("LEPUSCTL_PASSWORD")
        .envs(env.iter().copied());
    match url {
        Some(url) => command.env("LEPUSCTL_URL", url),
        None => command.env_remove("LEPUSCTL_URL"),
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lepusctl starts");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("stdin written");
    }
    let out = child.wait_with_output().expect("lepusctl finishes");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ctl(args: &[&str]) -> Run {
    run_with(None, args, "")
}

/// A broker and its management API's base URL.
struct Api {
    broker: common::Broker,
    url: String,
}

impl Api {
    fn start() -> Api {
        let broker = common::start_broker();
        let url = broker
            .management_url()
            .expect("a management API (LEPUS_TEST_EXTERNAL_HTTP for an external broker)");
        Api { broker, url }
    }

    fn run(&self, args: &[&str]) -> Run {
        run_with(Some(&self.url), args, "")
    }

    /// Runs and requires exit 0.
    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, 0, "lepusctl {args:?} failed: {run:?}");
        run
    }

    /// `list KIND --format json` (plus `extra`) as rows.
    fn rows(&self, kind: &str, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["list", kind, "--format", "json"];
        args.extend_from_slice(extra);
        let run = self.ok(&args);
        match serde_json::from_str(&run.stdout) {
            Ok(Value::Array(rows)) => rows,
            other => panic!("list {kind}: not a JSON array: {other:?} from {:?}", run.stdout),
        }
    }

    /// Polls `list KIND` until a row satisfies `found` (statistics lag).
    fn await_row(&self, kind: &str, extra: &[&str], found: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + VISIBLE_WITHIN;
        loop {
            if let Some(row) = self.rows(kind, extra).into_iter().find(&found) {
                return row;
            }
            assert!(Instant::now() < deadline, "no matching {kind} within {VISIBLE_WITHIN:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn name(prefix: &str) -> String {
    format!("ctl-{}", common::unique(prefix))
}

fn has_name(rows: &[Value], name: &str) -> bool {
    rows.iter().any(|row| row.get("name").and_then(Value::as_str) == Some(name))
}

// ---------------------------------------------------------------- no broker

#[test]
fn bad_command_lines_exit_64() {
    for args in
        [&[][..], &["lisst", "queues"], &["list", "widgets"], &["set_permissions", "u"], &["--port", "x"]]
    {
        let run = ctl(args);
        assert_eq!(run.code, 64, "lepusctl {args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "usage errors go to stderr: {run:?}");
    }
}

#[test]
fn help_states_the_exit_codes() {
    let run = ctl(&["--help"]);
    assert_eq!(run.code, 0);
    for line in ["64  usage", "65  data error", "69  unavailable", "77  no permission"] {
        assert!(run.stdout.contains(line), "--help lacks {line:?}: {}", run.stdout);
    }
}

#[test]
fn unreachable_broker_exits_69() {
    let run = ctl(&["--host", "no-such-host.invalid", "status"]);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(run.stderr.starts_with("Error: cannot reach http://no-such-host.invalid:15672"), "{run:?}");
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let run = run_with(Some(&format!("http://127.0.0.1:{port}")), &["list", "queues"], "");
    assert_eq!(run.code, 69, "{run:?}");
}

/// A broker that accepts the connection and never answers: 75, try again.
#[test]
fn a_silent_broker_times_out_with_75() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", silent.local_addr().expect("addr"));
    let started = Instant::now();
    let run = run_with(Some(&url), &["--timeout", "1", "list", "queues"], "");
    assert_eq!(run.code, 75, "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    drop(silent);
}

#[test]
fn bad_input_exits_65_before_any_request() {
    // Port 9 (discard) would refuse: 65 proves the input was refused first.
    let url = Some("http://127.0.0.1:9");
    let run = run_with(url, &["declare", "queue", "ctl-q", "--arguments", "{bad"], "");
    assert_eq!((run.code, run.stderr.contains("--arguments is not valid JSON")), (65, true), "{run:?}");
    let run = run_with(url, &["set_policy", "ctl-p", ".*", "[1"], "");
    assert_eq!(run.code, 65, "{run:?}");
    let run = run_with(url, &["import_definitions", "-"], "{not json");
    assert_eq!(run.code, 65, "{run:?}");
    let run = run_with(url, &["import_definitions", "/nonexistent/ctl-defs.json"], "");
    assert_eq!(run.code, 66, "{run:?}");
    let run = run_with(Some("ftp://127.0.0.1"), &["status"], "");
    assert_eq!(run.code, 64, "{run:?}");
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let run = ctl(&["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {run:?}");
        assert!(run.stdout.contains("set_topic_permissions"), "{shell} completion lacks the commands");
    }
}

// ---------------------------------------------------------------- against the API

#[test]
fn wrong_credentials_exit_77_with_the_reason() {
    let api = Api::start();
    let run = api.run(&["--password", "ctl-wrong", "status"]);
    assert_eq!(run.code, 77, "{run:?}");
    assert_eq!(run.stderr.trim(), "Error: Login failed");
    let unknown = [("LEPUSCTL_USERNAME", "ctl-nobody"), ("LEPUSCTL_PASSWORD", "x")];
    let run = run_env(Some(&api.url), &["list", "queues"], "", &unknown);
    assert_eq!(run.code, 77, "the environment's credentials are used: {run:?}");
    let run = run_env(Some(&api.url), &["list", "queues"], "", &[("LEPUSCTL_PASSWORD", "guest")]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn status_names_the_product_and_node() {
    let api = Api::start();
    let run = api.ok(&["status"]);
    for field in ["Product ", "Node ", "Listeners ", "Objects "] {
        assert!(run.stdout.lines().any(|l| l.starts_with(field)), "no {field:?} in {}", run.stdout);
    }
    if !common::external() {
        let shards = run.stdout.lines().filter(|l| l.starts_with("Shard ")).count();
        assert_eq!(shards, 2, "one line per shard of the harness's broker: {}", run.stdout);
    }
    let json: Value = serde_json::from_str(&api.ok(&["status", "--format", "json"]).stdout).expect("JSON");
    assert!(json.get("node").and_then(Value::as_str).is_some_and(|n| !n.is_empty()), "{json}");
}

#[test]
fn queue_lifecycle_with_publish_get_and_purge() {
    let api = Api::start();
    let q = name("q");
    api.ok(&["declare", "queue", &q, "--arguments", r#"{"x-max-length": 10}"#]);
    let table = api.ok(&["list", "queues", "name", "arguments"]).stdout;
    let line = table.lines().find(|l| l.starts_with(&q)).unwrap_or_else(|| panic!("{q} not in {table}"));
    assert!(line.ends_with(r#"{"x-max-length":10}"#), "{line}");
    let tsv = api.ok(&["list", "queues", "--format", "tsv", "--columns", "name,durable"]).stdout;
    assert_eq!(tsv.lines().next(), Some("name\tdurable"));
    assert!(tsv.lines().any(|l| l == format!("{q}\ttrue")), "{tsv}");

    let published = api.ok(&["publish", "--routing-key", &q, "--payload", "ctl-body-1"]);
    assert_eq!(published.stdout.trim(), "Message published");
    let got = api.ok(&["get", &q, "--format", "json"]).stdout;
    let messages: Value = serde_json::from_str(&got).expect("JSON");
    assert_eq!(messages[0]["payload"], "ctl-body-1", "{got}");
    assert_eq!(messages[0]["routing_key"], q.as_str());
    // ack_requeue_true (the default) left it there; purge removes it.
    api.ok(&["purge_queue", &q]);
    let after = api.ok(&["get", &q, "--ackmode", "ack_requeue_false"]).stdout;
    assert!(!after.contains("ctl-body-1"), "purged, yet: {after}");

    api.ok(&["delete", "queue", &q]);
    assert!(!has_name(&api.rows("queues", &[]), &q));
    let again = api.run(&["delete", "queue", &q]);
    assert_eq!(again.code, 65, "{again:?}");
    assert!(again.stderr.starts_with("Error: Not Found"), "{again:?}");
    api.ok(&["delete", "queue", &q, "--if-exists"]);
    let missing = api.run(&["purge_queue", &q]);
    assert_eq!(missing.code, 65, "{missing:?}");
}

#[test]
fn exchanges_and_bindings() {
    let api = Api::start();
    let (x, q) = (name("x"), name("q"));
    api.ok(&["declare", "exchange", &x, "--type", "topic"]);
    api.ok(&["declare", "queue", &q, "--durable", "false"]);
    let bind = ["--source", &x, "--destination", &q, "--routing-key", "ctl.#"];
    api.ok(&[&["declare", "binding"][..], &bind].concat());
    let bindings = api.rows("bindings", &[]);
    assert!(
        bindings.iter().any(|b| b["source"] == x.as_str()
            && b["destination"] == q.as_str()
            && b["routing_key"] == "ctl.#"),
        "{bindings:?}"
    );
    let routed = api.ok(&["publish", "-e", &x, "-k", "ctl.a", "--payload", "p"]).stdout;
    assert_eq!(routed.trim(), "Message published");
    let unrouted = api.ok(&["publish", "-e", &x, "-k", "other", "--payload", "p"]).stdout;
    assert_eq!(unrouted.trim(), "Message published but NOT routed");

    api.ok(&[&["delete", "binding"][..], &bind].concat());
    let again = api.run(&[&["delete", "binding"][..], &bind].concat());
    assert_eq!(again.code, 65, "{again:?}");
    api.ok(&[&["delete", "binding", "--if-exists"][..], &bind].concat());
    let exchanges = api.rows("exchanges", &[]);
    let row = exchanges.iter().find(|e| e["name"] == x.as_str()).expect("declared exchange listed");
    assert_eq!(row["type"], "topic");
    api.ok(&["delete", "exchange", &x]);
    api.ok(&["delete", "queue", &q]);
    assert!(!has_name(&api.rows("exchanges", &[]), &x));
}

#[test]
fn users_vhosts_and_permissions() {
    let api = Api::start();
    let (user, vhost) = (name("user"), name("vh"));
    api.ok(&["add_vhost", &vhost, "--description", "ctl test"]);
    assert!(has_name(&api.rows("vhosts", &[]), &vhost));
    // The password from stdin, as rabbitmqctl reads it when not given.
    let added = run_with(Some(&api.url), &["add_user", &user, "--tags", "management"], "ctl-secret\n");
    assert_eq!(added.code, 0, "{added:?}");
    let dup = api.run(&["add_user", &user, "x"]);
    assert_eq!(
        (dup.code, dup.stderr.trim()),
        (65, format!("Error: User \"{user}\" already exists").as_str())
    );
    api.ok(&["-p", &vhost, "set_permissions", &user, "^ctl-", ".*", ".*"]);
    api.ok(&["-p", &vhost, "set_topic_permissions", &user, "amq.topic", "^w", "^r"]);
    let perms = api.rows("permissions", &["-p", &vhost]);
    assert!(perms.iter().any(|p| p["user"] == user.as_str() && p["configure"] == "^ctl-"), "{perms:?}");
    let topic = api.rows("topic_permissions", &["-p", &vhost]);
    assert!(topic.iter().any(|p| p["user"] == user.as_str() && p["write"] == "^w"), "{topic:?}");

    // The user logs in with the stdin password, then with a changed one.
    let as_user = |password: &str| api.run(&["-u", &user, "--password", password, "list", "vhosts"]);
    assert_eq!(as_user("ctl-secret").code, 0);
    api.ok(&["change_password", &user, "ctl-secret-2"]);
    assert_eq!(as_user("ctl-secret").code, 77);
    assert_eq!(as_user("ctl-secret-2").code, 0);
    api.ok(&["set_user_tags", &user, "monitoring", "policymaker"]);
    let users = api.rows("users", &[]);
    let row = users.iter().find(|u| u["name"] == user.as_str()).expect("user listed");
    assert!(row["tags"].to_string().contains("policymaker"), "{row}");
    assert_eq!(as_user("ctl-secret-2").code, 0, "set_user_tags kept the password");

    api.ok(&["-p", &vhost, "clear_topic_permissions", &user]);
    api.ok(&["-p", &vhost, "clear_permissions", &user]);
    assert!(api.rows("permissions", &["-p", &vhost]).iter().all(|p| p["user"] != user.as_str()));
    api.ok(&["delete_user", &user]);
    let again = api.run(&["delete_user", &user]);
    assert_eq!(
        (again.code, again.stderr.trim()),
        (67, format!("Error: User \"{user}\" does not exist").as_str())
    );
    assert_eq!(api.run(&["change_password", &user, "x"]).code, 67);
    api.ok(&["delete_user", &user, "--if-exists"]);
    api.ok(&["delete_vhost", &vhost]);
    assert_eq!(api.run(&["delete_vhost", &vhost]).code, 65);
}

#[test]
fn policies_and_operator_policies() {
    let api = Api::start();
    let policy = name("policy");
    for (set, clear, kind) in [
        ("set_policy", "clear_policy", "policies"),
        ("set_operator_policy", "clear_operator_policy", "operator_policies"),
    ] {
        let pattern = format!("^{policy}");
        api.ok(&[set, &policy, &pattern, r#"{"max-length": 5}"#, "--apply-to", "queues", "--priority", "3"]);
        let rows = api.rows(kind, &[]);
        let row =
            rows.iter().find(|p| p["name"] == policy.as_str()).unwrap_or_else(|| panic!("{kind}: {rows:?}"));
        assert_eq!((row["definition"]["max-length"].as_u64(), row["priority"].as_i64()), (Some(5), Some(3)));
        assert_eq!(row["apply-to"], "queues");
        api.ok(&[clear, &policy]);
        assert_eq!(api.run(&[clear, &policy]).code, 65, "{clear} of a missing policy");
        api.ok(&[clear, &policy, "--if-exists"]);
    }
}

#[test]
fn every_kind_lists_in_every_format() {
    let api = Api::start();
    let kinds = [
        "queues",
        "exchanges",
        "bindings",
        "connections",
        "channels",
        "consumers",
        "users",
        "vhosts",
        "permissions",
        "topic_permissions",
        "policies",
        "operator_policies",
        "parameters",
        "vhost_limits",
        "user_limits",
        "nodes",
    ];
    for kind in kinds {
        api.rows(kind, &[]);
        api.rows(kind, &["--all-vhosts"]);
        assert_eq!(api.run(&["list", kind, "--format", "tsv"]).code, 0, "{kind} tsv");
        assert_eq!(api.run(&["list", kind]).code, 0, "{kind} table");
    }
    let exchanges = api.ok(&["list", "exchanges", "--no-headers", "--format", "tsv", "name"]).stdout;
    assert!(exchanges.lines().any(|l| l == "amq.topic"), "{exchanges}");
    assert!(!exchanges.lines().any(|l| l == "name"), "--no-headers: {exchanges}");
    let nodes = api.rows("nodes", &[]);
    assert!(nodes.first().and_then(|n| n["name"].as_str()).is_some(), "{nodes:?}");
}

#[test]
fn definitions_export_and_import() {
    let api = Api::start();
    let (q, imported) = (name("q"), name("imported"));
    api.ok(&["declare", "queue", &q]);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("defs.json");
    let file_arg = file.to_str().expect("utf-8 path");
    api.ok(&["export_definitions", file_arg]);
    let defs: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("written")).expect("JSON");
    assert!(has_name(defs["queues"].as_array().expect("queues"), &q), "export lacks {q}");
    let stdout: Value =
        serde_json::from_str(&api.ok(&["export_definitions"]).stdout).expect("JSON on stdout");
    assert!(stdout.get("vhosts").is_some());

    let import = format!(
        r#"{{"queues": [{{"name": "{imported}", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {{}}}}]}}"#
    );
    let run = run_with(Some(&api.url), &["import_definitions", "-"], &import);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(has_name(&api.rows("queues", &[]), &imported));
    api.ok(&["delete", "queue", &q]);
    api.ok(&["delete", "queue", &imported]);
}

#[test]
fn close_connection_closes_it() {
    let api = Api::start();
    let broker = &api.broker;
    let rt = common::runtime();
    let name = name("conn");
    let conn = rt.block_on(async {
        let props = lapin::ConnectionProperties::default().with_connection_name(name.clone().into());
        lapin::Connection::connect(&common::amqp_uri(broker), props).await.expect("connects")
    });
    let row =
        api.await_row("connections", &[], |c| c["client_properties"]["connection_name"] == name.as_str());
    let conn_name = row["name"].as_str().expect("connection name").to_owned();
    let (closed, on_close) = std::sync::mpsc::channel();
    conn.on_error(move |error| {
        let _ = closed.send(error.to_string());
    });
    api.ok(&["close_connection", &conn_name, "ctl test closing"]);
    let error = on_close.recv_timeout(common::SAFETY).expect("the connection is closed by the broker");
    assert!(error.contains("CONNECTION_FORCED") && error.contains("ctl test closing"), "{error}");
    // (Not `conn_name` again: RabbitMQ still lists a closed connection for a
    // moment and answers 204.)
    assert_eq!(api.run(&["close_connection", &format!("{name} (never opened)")]).code, 65);
}

// ---------------------------------------------------------------- HTTPS

/// A test CA and a `localhost` server certificate it signed, as PEM files in
/// `dir`: `ca.pem`, `server.pem`, `server.key`.
fn write_pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "ctl-test-ca");
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA self-signs");
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).expect("CA signs");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write CA");
    std::fs::write(dir.join("server.pem"), leaf_cert.pem()).expect("write cert");
    std::fs::write(dir.join("server.key"), leaf_key.serialize_pem()).expect("write key");
}

/// `--https --cacert` reaches a management API served over TLS; without the
/// CA (webpki roots only) or over plain HTTP it cannot connect: 69.
#[test]
fn https_with_cacert() {
    if common::external() {
        return; // RabbitMQ's management listener here is plain HTTP.
    }
    let pki = tempfile::tempdir().expect("temp dir");
    write_pki(pki.path());
    let data = tempfile::Builder::new().prefix("lepus-test-").tempdir().expect("data dir");
    let mut tls = lepus::config::TlsConfig::new(pki.path().join("server.pem"), pki.path().join("server.key"));
    tls.listen = vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))];
    let mut config = lepus::Config { tls: Some(tls), ..common::in_process_config(data.path()) };
    config.management.https = true;
    let server = lepus::Server::start(config).expect("lepus starts with HTTPS management");
    let port = server.management_addrs()[0].port().to_string();
    let ca = pki.path().join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");

    let trusted = ctl(&["--https", "--cacert", ca, "--host", "localhost", "--port", &port, "list", "users"]);
    // Until GET /api/users lands on main the API answers 404 (65): past TLS either way.
    assert!(matches!(trusted.code, 0 | 65), "{trusted:?}");
    assert!(!trusted.stderr.contains("cannot reach"), "{trusted:?}");
    let untrusted = ctl(&["--https", "--host", "localhost", "--port", &port, "list", "users"]);
    assert_eq!(untrusted.code, 69, "{untrusted:?}");
    assert!(untrusted.stderr.contains("cannot reach https://localhost"), "{untrusted:?}");
    let plain = ctl(&["--host", "localhost", "--port", &port, "--timeout", "5", "list", "users"]);
    assert!(matches!(plain.code, 69 | 75), "plain HTTP to the HTTPS port: {plain:?}");
}
