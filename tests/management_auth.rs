//! The management API's front door over real HTTP: Basic credentials
//! against the broker's users, RabbitMQ's tag rules and its error shapes
//! (each status and body below is what RabbitMQ 3.10.8 answered the same
//! request with).

mod common;

use common::*;
use lepus::access::{AccessChange, PasswordHash, User, UserLimits};

fn put_user(broker: &Broker, name: &str, tags: &[&str]) {
    let user = User {
        name: name.into(),
        password: Some(PasswordHash::new_sha256("pw")),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        limits: UserLimits::default(),
    };
    let server = broker.server().expect("in-process broker");
    server.change_access(&AccessChange::PutUser(user)).expect("user stored");
}

/// (status, body) of a GET, with Basic credentials if given.
fn get(url: &str, credentials: Option<(&str, &str)>) -> (u16, String, Option<String>) {
    let mut request = ureq::get(url);
    if let Some((user, password)) = credentials {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request = request.set("Authorization", &format!("Basic {token}"));
    }
    match request.call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default(), None),
        Err(ureq::Error::Status(code, r)) => {
            let challenge = r.header("www-authenticate").map(str::to_owned);
            (code, r.into_string().unwrap_or_default(), challenge)
        }
        Err(e) => panic!("GET {url}: {e}"),
    }
}

#[test]
fn credentials_and_tags_are_checked_as_rabbitmq_checks_them() {
    if external() {
        return;
    }
    let broker = start_broker();
    let base = broker.management_url().expect("management API on");
    put_user(&broker, "none", &[]);
    put_user(&broker, "mgmt", &["management"]);
    let whoami = format!("{base}/api/whoami");

    let (status, body, _) = get(&whoami, Some(("guest", "guest")));
    assert_eq!((status, body.as_str()), (200, r#"{"name":"guest","tags":["administrator"]}"#));
    let (status, body, _) = get(&whoami, Some(("mgmt", "pw")));
    assert_eq!((status, body.as_str()), (200, r#"{"name":"mgmt","tags":["management"]}"#));

    let (status, body, challenge) = get(&whoami, Some(("guest", "wrong")));
    assert_eq!((status, body.as_str()), (401, r#"{"error":"not_authorized","reason":"Login failed"}"#));
    assert_eq!(challenge.as_deref(), Some("Basic realm=\"RabbitMQ Management\""));
    let (status, body, challenge) = get(&whoami, None);
    assert_eq!((status, body.as_str()), (401, ""));
    assert!(challenge.is_some(), "a request without credentials is challenged");

    let (status, body, _) = get(&whoami, Some(("none", "pw")));
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"error":"not_authorised","reason":"Not management user"}"#)
    );

    let (status, body, _) = get(&format!("{base}/api/no-such-thing"), Some(("guest", "guest")));
    assert_eq!((status, body.as_str()), (404, r#"{"error":"Object Not Found","reason":"Not Found"}"#));
}
