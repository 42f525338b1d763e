//! Users and the SASL mechanisms RabbitMQ offers by default: PLAIN and AMQPLAIN.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::amqp::field::{FieldTable, FieldValue};

/// Mechanisms offered in connection.start, space separated.
pub const MECHANISMS: &str = "AMQPLAIN PLAIN";

/// A known user.
#[derive(Debug, Clone)]
pub struct User {
    /// Password, compared in constant time.
    pub password: String,
    /// May only connect from a loopback address.
    pub loopback_only: bool,
}

/// The user database.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: HashMap<String, User>,
}

/// Why a login failed; all of them are answered the same way to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The mechanism is not one we offer.
    UnknownMechanism(String),
    /// The response could not be parsed.
    Malformed,
    /// Unknown user or wrong password.
    Refused(String),
    /// A loopback-only user connected from elsewhere.
    NotLoopback(String),
}

impl Users {
    /// The default user database from the configuration.
    pub fn from_config(config: &crate::config::Config) -> Users {
        let mut users = HashMap::new();
        users.insert(
            config.default_user.clone(),
            User {
                password: config.default_pass.clone(),
                loopback_only: config.loopback_users.contains(&config.default_user),
            },
        );
        Users { users }
    }

    /// Checks a start-ok response; returns the user name.
    ///
    /// Names and passwords are compared as the bytes the client sent, never
    /// through a lossy conversion: a name that is not UTF-8 names no user
    /// (ours are configured as text) and is refused like an unknown one, as
    /// RabbitMQ refuses it.
    pub fn authenticate(
        &self,
        mechanism: &[u8],
        response: &[u8],
        peer: SocketAddr,
    ) -> Result<String, AuthError> {
        let (user, pass) = match mechanism {
            b"PLAIN" => parse_plain(response)?,
            b"AMQPLAIN" => parse_amqplain(response)?,
            other => return Err(AuthError::UnknownMechanism(printable(other))),
        };
        let Some((name, known)) =
            std::str::from_utf8(&user).ok().and_then(|name| Some((name, self.users.get(name)?)))
        else {
            return Err(AuthError::Refused(printable(&user)));
        };
        if !constant_time_eq(known.password.as_bytes(), &pass) {
            return Err(AuthError::Refused(name.to_owned()));
        }
        if known.loopback_only && !peer.ip().is_loopback() {
            return Err(AuthError::NotLoopback(name.to_owned()));
        }
        Ok(name.to_owned())
    }
}

/// Client bytes for a log line or reply text: UTF-8 as it is, anything else
/// escaped (`\xff`), so that no two different names print alike.
fn printable(bytes: &[u8]) -> String {
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:1000".parse().unwrap()
    }

    #[test]
    fn plain_accepts_guest_from_loopback_only() {
        let users = Users::from_config(&crate::config::Config::default());
        assert_eq!(users.authenticate(b"PLAIN", b"\0guest\0guest", peer()), Ok("guest".into()));
        assert!(matches!(users.authenticate(b"PLAIN", b"\0guest\0nope", peer()), Err(AuthError::Refused(_))));
        let remote: SocketAddr = "10.1.2.3:1000".parse().unwrap();
        assert!(matches!(
            users.authenticate(b"PLAIN", b"\0guest\0guest", remote),
            Err(AuthError::NotLoopback(_))
        ));
        assert_eq!(users.authenticate(b"PLAIN", b"guest", peer()), Err(AuthError::Malformed));
    }

    #[test]
    fn names_and_passwords_are_compared_as_bytes() {
        let config = crate::config::Config { default_pass: "gu\u{fffd}st".to_owned(), ..Default::default() };
        let users = Users::from_config(&config);
        // A lossy conversion would turn 0xff into U+FFFD and let these in.
        assert!(matches!(
            users.authenticate(b"PLAIN", b"\0guest\0gu\xffst", peer()),
            Err(AuthError::Refused(_))
        ));
        assert_eq!(
            users.authenticate(b"PLAIN", "\0guest\0gu\u{fffd}st".as_bytes(), peer()),
            Ok("guest".into())
        );
        let refused = users.authenticate(b"PLAIN", b"\0gu\xffest\0guest", peer());
        assert_eq!(refused, Err(AuthError::Refused("gu\\xffest".into())));
        assert_eq!(
            users.authenticate(b"PL\xffIN", b"\0guest\0guest", peer()),
            Err(AuthError::UnknownMechanism("PL\\xffIN".into()))
        );
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
        let users = Users::from_config(&crate::config::Config::default());
        assert_eq!(users.authenticate(b"AMQPLAIN", &body, peer()), Ok("guest".into()));
    }
}
