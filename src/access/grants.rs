//! What one user may do in one vhost, compiled once from an [`Access`]
//! snapshot: the configure/write/read expressions and the user's topic
//! permissions there, with `{username}` and `{vhost}` expanded.
//!
//! Matching is RabbitMQ's: the expression is searched for anywhere in the
//! name (Erlang's `re:run`, nothing anchored unless the expression anchors
//! it), and the empty expression stands for `^$`. An expression this regex
//! engine cannot compile (PCRE-only syntax such as look-around) grants
//! nothing, with a warning: a refusal is safer than a guess.

use std::sync::Arc;

use regex::bytes::{Regex, RegexBuilder};

use super::login::printable;
use super::Access;

/// The most memory one compiled expression may use, bytes.
pub const PATTERN_BYTES_MAX: usize = 1 << 20;

/// One permission, as RabbitMQ names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Declares and deletes.
    Configure,
    /// Publishing; the queue side of a binding; the destination of an
    /// exchange binding.
    Write,
    /// Consuming, getting, purging; the exchange side of a binding.
    Read,
}

/// What a permission is checked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// A queue.
    Queue,
    /// An exchange ("" is checked as `amq.default`).
    Exchange,
}

/// A refused check: the text of RabbitMQ's 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

/// A compiled expression.
#[derive(Debug, Clone)]
enum Pattern {
    /// Grants nothing (an expression that did not compile).
    Never,
    Regex(Regex),
}

impl Pattern {
    fn compile(expression: &str, what: &str) -> Pattern {
        // RabbitMQ's stand-in for the empty expression.
        let expression = if expression.is_empty() { "^$" } else { expression };
        match RegexBuilder::new(expression).size_limit(PATTERN_BYTES_MAX).build() {
            Ok(regex) => Pattern::Regex(regex),
            Err(e) => {
                let error = e.to_string();
                tracing::warn!(
                    expression,
                    what,
                    error,
                    "permission expression does not compile; it grants nothing"
                );
                Pattern::Never
            }
        }
    }

    #[inline]
    fn matches(&self, name: &[u8]) -> bool {
        match self {
            Pattern::Never => false,
            Pattern::Regex(regex) => regex.is_match(name),
        }
    }
}

/// Topic permission of the user on one exchange.
#[derive(Debug, Clone)]
struct TopicGrant {
    exchange: String,
    write: Pattern,
    read: Pattern,
}

/// What one user may do in one vhost; see the module doc.
#[derive(Debug, Clone)]
pub struct Grants {
    user: Arc<str>,
    vhost: Arc<str>,
    configure: Pattern,
    write: Pattern,
    read: Pattern,
    topics: Vec<TopicGrant>,
    /// The user has the `impersonator` tag (may set any `user-id`).
    impersonator: bool,
}

impl Grants {
    /// Grants nothing (a connection before connection.open, a user whose
    /// permission on the vhost was cleared).
    pub fn nothing(user: &str, vhost: &str) -> Grants {
        Grants {
            user: Arc::from(user),
            vhost: Arc::from(vhost),
            configure: Pattern::Never,
            write: Pattern::Never,
            read: Pattern::Never,
            topics: Vec::new(),
            impersonator: false,
        }
    }

    /// Compiles `user`'s permissions in `vhost`, or `None` if the user has
    /// no permission entry there (no access to the vhost at all).
    pub fn compile(access: &Access, user: &str, vhost: &str) -> Option<Grants> {
        let permission = access.permissions.get(&(user.to_owned(), vhost.to_owned()))?;
        let expand = |expression: &str| expression.replace("{username}", user).replace("{vhost}", vhost);
        let topics = access
            .topic_permissions
            .range((user.to_owned(), vhost.to_owned(), String::new())..)
            .take_while(|((u, v, _), _)| u == user && v == vhost)
            .map(|((_, _, exchange), topic)| TopicGrant {
                exchange: exchange.clone(),
                write: Pattern::compile(&expand(&topic.write), "topic write"),
                read: Pattern::compile(&expand(&topic.read), "topic read"),
            })
            .collect();
        let impersonator = access.users.get(user).is_some_and(|u| u.tags.iter().any(|t| t == "impersonator"));
        Some(Grants {
            user: Arc::from(user),
            vhost: Arc::from(vhost),
            configure: Pattern::compile(&permission.configure, "configure"),
            write: Pattern::compile(&permission.write, "write"),
            read: Pattern::compile(&permission.read, "read"),
            topics,
            impersonator,
        })
    }

    /// The user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// May set a `user-id` other than its own.
    pub fn is_impersonator(&self) -> bool {
        self.impersonator
    }

    /// Checks `perm` on a queue or exchange named `name`.
    pub fn check(&self, perm: Perm, resource: Resource, name: &[u8]) -> Result<(), Denied> {
        let name = match resource {
            Resource::Exchange if name.is_empty() => b"amq.default",
            _ => name,
        };
        let pattern = match perm {
            Perm::Configure => &self.configure,
            Perm::Write => &self.write,
            Perm::Read => &self.read,
        };
        if pattern.matches(name) {
            return Ok(());
        }
        let kind = match resource {
            Resource::Queue => "queue",
            Resource::Exchange => "exchange",
        };
        Err(Denied(format!(
            "access to {kind} '{}' in vhost '{}' refused for user '{}'",
            printable(name),
            self.vhost,
            self.user
        )))
    }

    /// True if the user has a topic permission on `exchange` (so routing
    /// keys published to it, or bound from it, must be checked).
    pub fn has_topic_permission(&self, exchange: &[u8]) -> bool {
        self.topics.iter().any(|t| t.exchange.as_bytes() == exchange)
    }

    /// Checks a routing key (publish: `Write`) or binding key (bind: `Read`)
    /// on a topic exchange; allowed if the user has no topic permission on it.
    pub fn check_topic(&self, perm: Perm, exchange: &[u8], key: &[u8]) -> Result<(), Denied> {
        let Some(topic) = self.topics.iter().find(|t| t.exchange.as_bytes() == exchange) else {
            return Ok(());
        };
        let allowed = match perm {
            Perm::Write => topic.write.matches(key),
            Perm::Read => topic.read.matches(key),
            Perm::Configure => true,
        };
        if allowed {
            return Ok(());
        }
        Err(Denied(format!(
            "access to topic '{}' in exchange '{}' in vhost '{}' refused for user '{}'",
            printable(key),
            printable(exchange),
            self.vhost,
            self.user
        )))
    }
}

/// connection.open's refusal of a vhost the user has no permission on.
pub fn vhost_refused(vhost: &str, user: &str) -> String {
    format!("access to vhost '{vhost}' refused for user '{user}'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Permission, TopicPermission, User, UserLimits};

    fn access(configure: &str, write: &str, read: &str) -> Access {
        let mut access = Access::default();
        access.users.insert(
            "u".into(),
            Arc::new(User { name: "u".into(), password: None, tags: vec![], limits: UserLimits::default() }),
        );
        let permission = Permission { configure: configure.into(), write: write.into(), read: read.into() };
        access.permissions.insert(("u".into(), "v".into()), permission);
        access
    }

    #[test]
    fn expressions_are_searched_not_anchored_and_empty_is_caret_dollar() {
        let grants = Grants::compile(&access("ab", "", "^x$"), "u", "v").unwrap();
        assert!(grants.check(Perm::Configure, Resource::Queue, b"xxabxx").is_ok());
        assert!(grants.check(Perm::Configure, Resource::Queue, b"a-b").is_err());
        assert!(grants.check(Perm::Write, Resource::Queue, b"q").is_err());
        assert!(grants.check(Perm::Read, Resource::Queue, b"x").is_ok());
        assert!(grants.check(Perm::Read, Resource::Queue, b"xx").is_err());
        assert_eq!(
            grants.check(Perm::Write, Resource::Exchange, b"").unwrap_err().0,
            "access to exchange 'amq.default' in vhost 'v' refused for user 'u'"
        );
        assert!(Grants::compile(&access("", "", ""), "u", "other").is_none());
    }

    #[test]
    fn the_default_exchange_is_checked_as_amq_default() {
        let grants = Grants::compile(&access("", "^amq\\.default$", ""), "u", "v").unwrap();
        assert!(grants.check(Perm::Write, Resource::Exchange, b"").is_ok());
        assert!(grants.check(Perm::Write, Resource::Queue, b"").is_err());
    }

    #[test]
    fn a_pattern_that_does_not_compile_grants_nothing() {
        let grants = Grants::compile(&access("(?=a)", ".*", "("), "u", "v").unwrap();
        assert!(grants.check(Perm::Configure, Resource::Queue, b"a").is_err());
        assert!(grants.check(Perm::Read, Resource::Queue, b"(").is_err());
        assert!(grants.check(Perm::Write, Resource::Queue, b"a").is_ok());
    }

    #[test]
    fn topic_permissions_expand_username_and_vhost() {
        let mut a = access(".*", ".*", ".*");
        let topic = TopicPermission { write: "^w\\.{username}\\.".into(), read: "^r\\.{vhost}$".into() };
        a.topic_permissions.insert(("u".into(), "v".into(), "amq.topic".into()), topic);
        let grants = Grants::compile(&a, "u", "v").unwrap();
        assert!(grants.has_topic_permission(b"amq.topic"));
        assert!(!grants.has_topic_permission(b"other"));
        assert!(grants.check_topic(Perm::Write, b"amq.topic", b"w.u.x").is_ok());
        assert_eq!(
            grants.check_topic(Perm::Write, b"amq.topic", b"w.z.x").unwrap_err().0,
            "access to topic 'w.z.x' in exchange 'amq.topic' in vhost 'v' refused for user 'u'"
        );
        assert!(grants.check_topic(Perm::Read, b"amq.topic", b"r.v").is_ok());
        assert!(grants.check_topic(Perm::Read, b"amq.topic", b"r.w").is_err());
        assert!(grants.check_topic(Perm::Write, b"other", b"anything").is_ok());
    }
}
