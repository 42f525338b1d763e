//! The management HTTP API as lepusctl sees it: a blocking `ureq` agent with
//! Basic auth, JSON in and out, and HTTP failures turned into [`Failure`]s
//! with RabbitMQ's `reason` text and a sysexits code.

use std::error::Error as _;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::Value;

use crate::failure::{
    Failure, Outcome, EXIT_NOINPUT, EXIT_SOFTWARE, EXIT_TEMPFAIL, EXIT_UNAVAILABLE, EXIT_USAGE,
};

/// The largest response body read (a definitions export of a big broker
/// fits); a longer one is an error rather than unbounded memory.
const RESPONSE_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// Where the API is and who asks.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` or `https://host:port`, no trailing slash.
    pub base_url: String,
    pub username: String,
    pub password: String,
    /// PEM file of the CA certificates to trust for https (default: the
    /// webpki roots).
    pub cacert: Option<std::path::PathBuf>,
    /// Per request: connect, send and receive.
    pub timeout: Duration,
}

/// A connection to one broker's management API.
pub struct Api {
    agent: ureq::Agent,
    base_url: String,
    authorization: String,
}

impl Api {
    pub fn new(target: &Target) -> Outcome<Self> {
        let mut builder = ureq::AgentBuilder::new().timeout(target.timeout).redirects(0);
        if let Some(path) = &target.cacert {
            builder = builder.tls_config(tls_config(path)?);
        }
        let credentials = format!("{}:{}", target.username, target.password);
        Ok(Api {
            agent: builder.build(),
            base_url: target.base_url.trim_end_matches('/').to_owned(),
            authorization: format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials)),
        })
    }

    /// GET `path` (starting `/api/`) as JSON.
    pub fn get(&self, path: &str) -> Outcome<Value> {
        let body = self.send("GET", path, None, &[])?;
        parse(&body)
    }

    /// GET `path` as text (a definitions export, kept byte for byte).
    pub fn get_text(&self, path: &str) -> Outcome<String> {
        self.send("GET", path, None, &[])
    }

    pub fn put(&self, path: &str, body: &Value) -> Outcome<()> {
        self.send("PUT", path, Some(&body.to_string()), &[]).map(drop)
    }

    /// POST a JSON body; the answer as JSON (`Null` when empty).
    pub fn post(&self, path: &str, body: &str) -> Outcome<Value> {
        let answer = self.send("POST", path, Some(body), &[])?;
        if answer.trim().is_empty() {
            return Ok(Value::Null);
        }
        parse(&answer)
    }

    pub fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Outcome<()> {
        self.send("DELETE", path, None, headers).map(drop)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Outcome<String> {
        let url = format!("{}{}", self.base_url, path);
        let mut request = self.agent.request(method, &url).set("Authorization", &self.authorization);
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let result = match body {
            Some(body) => request.set("Content-Type", "application/json").send_string(body),
            None => request.call(),
        };
        match result {
            // Redirects are not followed (`redirects(0)`): a 3xx is not the answer asked for.
            Ok(response) if response.status() >= 300 => Err(Failure::new(
                EXIT_SOFTWARE,
                format!(
                    "HTTP {} to {method} {path}, redirected to {}",
                    response.status(),
                    response.header("Location").unwrap_or("nowhere")
                ),
            )),
            Ok(response) => read_body(response),
            Err(ureq::Error::Status(status, response)) => {
                let user = path.starts_with("/api/users/");
                let mut failure = status_failure(status, user, &read_body(response).unwrap_or_default());
                if status == 404 || failure.message == format!("HTTP {status}") {
                    // RabbitMQ says only "Not Found" (and a bare 405 says
                    // nothing): name what was asked for.
                    failure.message = format!("{}: {method} {path}", failure.message);
                }
                Err(failure)
            }
            Err(ureq::Error::Transport(transport)) => Err(transport_failure(&self.base_url, &transport)),
        }
    }
}

/// Percent-encodes one path segment: everything but RFC 3986's unreserved
/// characters, so `/` becomes `%2F` (the default vhost).
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn parse(body: &str) -> Outcome<Value> {
    serde_json::from_str(body)
        .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("the broker's answer is not JSON ({e})")))
}

fn read_body(response: ureq::Response) -> Outcome<String> {
    let mut body = String::new();
    let mut reader = response.into_reader().take(RESPONSE_BYTES_MAX + 1);
    reader
        .read_to_string(&mut body)
        .map_err(|e| Failure::new(EXIT_UNAVAILABLE, format!("reading the answer: {e}")))?;
    if body.len() as u64 > RESPONSE_BYTES_MAX {
        return Err(Failure::new(EXIT_SOFTWARE, format!("answer longer than {RESPONSE_BYTES_MAX} bytes")));
    }
    Ok(body)
}

/// RabbitMQ's error body is `{"error": "...", "reason": "..."}`: the reason
/// is what the operator needs.
fn status_failure(status: u16, user: bool, body: &str) -> Failure {
    let reason = serde_json::from_str::<Value>(body).ok().and_then(|json| {
        let text = |key| json.get(key).and_then(Value::as_str).map(str::to_owned);
        text("reason").or_else(|| text("error"))
    });
    let message = match reason {
        Some(reason) => reason,
        None if body.trim().is_empty() => format!("HTTP {status}"),
        None => format!("HTTP {status}: {}", body.trim()),
    };
    let mut failure = Failure::new(Failure::code_for_status(status, user), message);
    failure.status = Some(status);
    failure
}

fn transport_failure(base_url: &str, transport: &ureq::Transport) -> Failure {
    let timed_out = transport
        .source()
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .is_some_and(|e| matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock));
    let code = match transport.kind() {
        _ if timed_out => EXIT_TEMPFAIL,
        ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => EXIT_USAGE,
        _ => EXIT_UNAVAILABLE,
    };
    Failure::new(code, format!("cannot reach {base_url}: {transport}"))
}

fn tls_config(path: &Path) -> Outcome<Arc<rustls::ClientConfig>> {
    let unreadable =
        |e: &dyn std::fmt::Display| Failure::new(EXIT_NOINPUT, format!("{}: {e}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        let cert = cert.map_err(|e| unreadable(&e))?;
        roots.add(cert).map_err(|e| unreadable(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
