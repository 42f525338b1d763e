//! Login: the SASL mechanisms RabbitMQ offers (PLAIN, AMQPLAIN, and EXTERNAL
//! on TLS connections) checked against the users of an [`Access`] snapshot.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::{Access, User};
use crate::amqp::field::{FieldTable, FieldValue};

/// Mechanisms offered in connection.start on a plain TCP connection, in
/// RabbitMQ's order.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";
/// Mechanisms offered on a TLS connection: RabbitMQ offers EXTERNAL on every
/// TLS connection, with or without a client certificate, so that a client
/// without one is refused with a reason instead of finding no mechanism.
pub const MECHANISMS_TLS: &str = "EXTERNAL PLAIN AMQPLAIN";

/// What the connection's transport says about the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    /// Plain TCP.
    Tcp,
    /// TLS without a verified client certificate.
    TlsWithoutCertificate,
    /// TLS with a verified client certificate naming this identity (its CN
    /// or SAN, as configured).
    TlsCertificate(&'a str),
}

impl Transport<'_> {
    /// The mechanisms offered on it.
    pub fn mechanisms(self) -> &'static str {
        match self {
            Transport::Tcp => MECHANISMS,
            _ => MECHANISMS_TLS,
        }
    }
}

/// One start-ok to check.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    /// Mechanism name as sent.
    pub mechanism: &'a [u8],
    /// The SASL response as sent.
    pub response: &'a [u8],
    /// The peer's address.
    pub peer: SocketAddr,
    /// How it is connected.
    pub transport: Transport<'a>,
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The mechanism is not one offered on this connection (RabbitMQ closes
    /// the socket without a word).
    UnknownMechanism(String),
    /// The response could not be parsed (RabbitMQ closes the socket too).
    Malformed,
    /// A login refused: the client gets one text for every reason (RabbitMQ's
    /// "Login was refused…"), the log gets the user and the reason.
    Refused {
        /// User name as sent (escaped if not UTF-8), or "" if none.
        user: String,
        /// Why.
        reason: Refusal,
    },
}

/// Why a login was refused; logged, never told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No such user.
    UnknownUser,
    /// Wrong password.
    WrongPassword,
    /// The user has no password (certificate login only).
    NoPassword,
    /// A loopback-only user connected from elsewhere.
    NotLoopback,
    /// EXTERNAL over TLS without a client certificate.
    NoCertificate,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::UnknownUser => "user does not exist",
            Refusal::WrongPassword => "invalid credentials",
            Refusal::NoPassword => "user has no password (certificate login only)",
            Refusal::NotLoopback => "user can only connect via localhost",
            Refusal::NoCertificate => "connection peer presented no TLS (x.509) certificate",
        })
    }
}

/// Checks a start-ok against the users of `access`; returns the user.
///
/// Names and passwords are compared as the bytes the client sent, never
/// through a lossy conversion: a name that is not UTF-8 names no user and is
/// refused like an unknown one, as RabbitMQ refuses it.
pub fn authenticate(
    access: &Access,
    loopback_users: &[String],
    login: &Login<'_>,
) -> Result<Arc<User>, AuthError> {
    let (name, password) = match (login.mechanism, login.transport) {
        (b"PLAIN", _) => {
            let (user, pass) = parse_plain(login.response)?;
            (user, Some(pass))
        }
        (b"AMQPLAIN", _) => {
            let (user, pass) = parse_amqplain(login.response)?;
            (user, Some(pass))
        }
        (b"EXTERNAL", Transport::TlsCertificate(identity)) => (identity.as_bytes().to_vec(), None),
        (b"EXTERNAL", Transport::TlsWithoutCertificate) => {
            return Err(AuthError::Refused { user: String::new(), reason: Refusal::NoCertificate })
        }
        (other, _) => return Err(AuthError::UnknownMechanism(printable(other))),
    };
    let refused = |reason| AuthError::Refused { user: printable(&name), reason };
    let user = std::str::from_utf8(&name)
        .ok()
        .and_then(|name| access.users.get(name))
        .ok_or_else(|| refused(Refusal::UnknownUser))?;
    if let Some(password) = password {
        let Some(hash) = &user.password else {
            return Err(refused(Refusal::NoPassword));
        };
        if !hash.verify(&password) {
            return Err(refused(Refusal::WrongPassword));
        }
    }
    if loopback_users.iter().any(|u| *u == user.name) && !login.peer.ip().is_loopback() {
        return Err(refused(Refusal::NotLoopback));
    }
    Ok(Arc::clone(user))
}

/// Client bytes for a log line or reply text: UTF-8 as it is, anything else
/// escaped (`\xff`), so that no two different names print alike.
pub fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// PLAIN: `authzid NUL authcid NUL password`.
fn parse_plain(response: &[u8]) -> Result<(Vec<u8>, Vec<u8>), AuthError> {
    let mut parts = response.split(|&b| b == 0);
    let (Some(_authzid), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    Ok((user.to_vec(), pass.to_vec()))
}

/// AMQPLAIN: a field table body (without its length prefix) with LOGIN and
/// PASSWORD as long strings.
fn parse_amqplain(response: &[u8]) -> Result<(Vec<u8>, Vec<u8>), AuthError> {
    let mut framed = BytesMut::with_capacity(response.len() + 4);
    framed.put_u32(u32::try_from(response.len()).map_err(|_| AuthError::Malformed)?);
    framed.extend_from_slice(response);
    let mut bytes: Bytes = framed.freeze();
    let table = FieldTable::decode(&mut bytes).map_err(|_| AuthError::Malformed)?;
    let text = |key: &[u8]| match table.get(key) {
        Some(FieldValue::LongStr(s)) => Some(s.as_bytes().to_vec()),
        _ => None,
    };
    match (text(b"LOGIN"), text(b"PASSWORD")) {
        (Some(user), Some(pass)) => Ok((user, pass)),
        _ => Err(AuthError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{PasswordHash, UserLimits};

    fn access(users: &[(&str, Option<&str>)]) -> Access {
        let mut access = Access::default();
        for (name, password) in users {
            let user = User {
                name: (*name).to_owned(),
                password: password.map(PasswordHash::new_sha256),
                tags: Vec::new(),
                limits: UserLimits::default(),
            };
            access.users.insert(user.name.clone(), Arc::new(user));
        }
        access
    }

    fn login<'a>(mechanism: &'a [u8], response: &'a [u8], peer: &str, transport: Transport<'a>) -> Login<'a> {
        Login { mechanism, response, peer: peer.parse().unwrap(), transport }
    }

    fn check(access: &Access, l: Login<'_>) -> Result<String, AuthError> {
        authenticate(access, &["guest".to_owned()], &l).map(|u| u.name.clone())
    }

    const LOCAL: &str = "127.0.0.1:1000";

    #[test]
    fn plain_checks_the_hash_and_loopback_users() {
        let a = access(&[("guest", Some("guest")), ("bob", Some("pw"))]);
        assert_eq!(check(&a, login(b"PLAIN", b"\0guest\0guest", LOCAL, Transport::Tcp)), Ok("guest".into()));
        let wrong = check(&a, login(b"PLAIN", b"\0guest\0nope", LOCAL, Transport::Tcp));
        assert_eq!(wrong, Err(AuthError::Refused { user: "guest".into(), reason: Refusal::WrongPassword }));
        let remote = check(&a, login(b"PLAIN", b"\0guest\0guest", "10.1.2.3:1000", Transport::Tcp));
        assert_eq!(remote, Err(AuthError::Refused { user: "guest".into(), reason: Refusal::NotLoopback }));
        assert_eq!(check(&a, login(b"PLAIN", b"\0bob\0pw", "10.1.2.3:1", Transport::Tcp)), Ok("bob".into()));
        assert_eq!(check(&a, login(b"PLAIN", b"guest", LOCAL, Transport::Tcp)), Err(AuthError::Malformed));
        let unknown = check(&a, login(b"PLAIN", b"\0eve\0pw", LOCAL, Transport::Tcp));
        assert_eq!(unknown, Err(AuthError::Refused { user: "eve".into(), reason: Refusal::UnknownUser }));
    }

    #[test]
    fn a_user_without_password_cannot_use_a_password() {
        let a = access(&[("certonly", None)]);
        for response in [&b"\0certonly\0"[..], b"\0certonly\0x"] {
            let refused = check(&a, login(b"PLAIN", response, LOCAL, Transport::Tcp));
            assert_eq!(
                refused,
                Err(AuthError::Refused { user: "certonly".into(), reason: Refusal::NoPassword })
            );
        }
        let by_cert = login(b"EXTERNAL", b"", LOCAL, Transport::TlsCertificate("certonly"));
        assert_eq!(check(&a, by_cert), Ok("certonly".into()));
    }

    #[test]
    fn external_needs_tls_and_a_certificate() {
        let a = access(&[("bob", Some("pw"))]);
        let tcp = check(&a, login(b"EXTERNAL", b"", LOCAL, Transport::Tcp));
        assert_eq!(tcp, Err(AuthError::UnknownMechanism("EXTERNAL".into())));
        let none = check(&a, login(b"EXTERNAL", b"", LOCAL, Transport::TlsWithoutCertificate));
        assert_eq!(none, Err(AuthError::Refused { user: String::new(), reason: Refusal::NoCertificate }));
        let stranger = check(&a, login(b"EXTERNAL", b"", LOCAL, Transport::TlsCertificate("eve")));
        assert_eq!(stranger, Err(AuthError::Refused { user: "eve".into(), reason: Refusal::UnknownUser }));
        assert_eq!(Transport::Tcp.mechanisms(), "PLAIN AMQPLAIN");
        assert_eq!(Transport::TlsWithoutCertificate.mechanisms(), "EXTERNAL PLAIN AMQPLAIN");
    }

    #[test]
    fn names_and_passwords_are_compared_as_bytes() {
        let a = access(&[("guest", Some("gu\u{fffd}st"))]);
        // A lossy conversion would turn 0xff into U+FFFD and let these in.
        let lossy = check(&a, login(b"PLAIN", b"\0guest\0gu\xffst", LOCAL, Transport::Tcp));
        assert!(matches!(lossy, Err(AuthError::Refused { reason: Refusal::WrongPassword, .. })));
        let exact = login(b"PLAIN", "\0guest\0gu\u{fffd}st".as_bytes(), LOCAL, Transport::Tcp);
        assert_eq!(check(&a, exact), Ok("guest".into()));
        let refused = check(&a, login(b"PLAIN", b"\0gu\xffest\0guest", LOCAL, Transport::Tcp));
        assert_eq!(
            refused,
            Err(AuthError::Refused { user: "gu\\xffest".into(), reason: Refusal::UnknownUser })
        );
        let mechanism = check(&a, login(b"PL\xffIN", b"\0guest\0guest", LOCAL, Transport::Tcp));
        assert_eq!(mechanism, Err(AuthError::UnknownMechanism("PL\\xffIN".into())));
    }

    #[test]
    fn amqplain_reads_login_and_password() {
        let mut body = BytesMut::new();
        for (k, v) in [("LOGIN", "guest"), ("PASSWORD", "guest")] {
            body.put_u8(k.len() as u8);
            body.extend_from_slice(k.as_bytes());
            body.put_u8(b'S');
            body.put_u32(v.len() as u32);
            body.extend_from_slice(v.as_bytes());
        }
        let a = access(&[("guest", Some("guest"))]);
        assert_eq!(check(&a, login(b"AMQPLAIN", &body, LOCAL, Transport::Tcp)), Ok("guest".into()));
    }
}
