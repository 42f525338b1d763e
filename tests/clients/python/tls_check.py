"""One TLS connection with pika: connect, publish one message, consume it.

Used by tests/clients/run_tls.sh (not collected by pytest). Settings come from
the environment, shared with the Node, Go and Java checks:

  TLS_HOST, TLS_PORT, TLS_SERVER_NAME  where to connect, the name to verify
  TLS_CA                               CA bundle the server is verified with
  TLS_CERT, TLS_KEY                    client certificate (empty: none)
  TLS_LOGIN                            plain (TLS_USER/TLS_PASS) or external
  TLS_VHOST                            default /
  TLS_MAX_VERSION                      1.2 caps the client at TLS 1.2
  TLS_BODY_BYTES                       size of the message body (default 36)

Prints one line and exits with the outcome:
  0 ok            the message came back over TLS
  2 refused-tls   no AMQP connection: the TLS handshake or the socket failed
  3 refused-auth  TLS worked but the broker refused the login (403)
  1 error         anything else (connected, but the round trip failed)
"""
import os
import ssl
import sys
import time
import uuid

import pika
import pika.exceptions as pe

TIMEOUT = float(os.environ.get("AMQP_TEST_TIMEOUT", "10"))
BODY_BYTES = int(os.environ.get("TLS_BODY_BYTES") or 36)


def env(name, default=None):
    v = os.environ.get(name, "")
    return v if v else default


def parameters():
    ctx = ssl.create_default_context(cafile=env("TLS_CA"))
    if env("TLS_MAX_VERSION") == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if env("TLS_CERT"):
        ctx.load_cert_chain(env("TLS_CERT"), env("TLS_KEY"))
    if env("TLS_LOGIN", "plain") == "external":
        creds = pika.credentials.ExternalCredentials()
    else:
        creds = pika.PlainCredentials(env("TLS_USER", "guest"), env("TLS_PASS", "guest"))
    return pika.ConnectionParameters(
        host=env("TLS_HOST", "127.0.0.1"),
        port=int(env("TLS_PORT", "5671")),
        virtual_host=env("TLS_VHOST", "/"),
        credentials=creds,
        ssl_options=pika.SSLOptions(ctx, env("TLS_SERVER_NAME", "localhost")),
        connection_attempts=1,
        socket_timeout=TIMEOUT,
        stack_timeout=TIMEOUT,
        blocked_connection_timeout=TIMEOUT,
    )


def refused_kind(exc):
    """refused-auth for the broker's 403 at login, error when pika itself gave
    up on the login (no common mechanism), refused-tls for any other failure."""
    text = repr(exc)
    if "ACCESS_REFUSED" in text or "(403)" in text:
        return "refused-auth", 3
    if isinstance(exc, pe.AuthenticationError):
        return "error", 1
    return "refused-tls", 2


def roundtrip(conn):
    ch = conn.channel()
    queue = "lepus-py-tls-%s" % uuid.uuid4().hex[:10]
    ch.queue_declare(queue, exclusive=True, auto_delete=True)
    body = os.urandom(BODY_BYTES)
    ch.basic_publish("", queue, body, pika.BasicProperties(content_type="application/octet-stream"))
    got = []
    ch.basic_consume(queue, lambda c, m, p, b: got.append(b), auto_ack=True)
    deadline = time.monotonic() + TIMEOUT
    while not got:
        if time.monotonic() > deadline:
            raise AssertionError("no delivery within %.0fs" % TIMEOUT)
        conn.process_data_events(time_limit=0.05)
    if got[0] != body:
        raise AssertionError("body of %d bytes (starts %r), want %d bytes (starts %r)"
                             % (len(got[0]), got[0][:16], len(body), body[:16]))
    return len(body)


def main():
    try:
        conn = pika.BlockingConnection(parameters())
    except Exception as e:  # the failure is the finding: classify it
        kind, code = refused_kind(e)
        print("%s: %s" % (kind, repr(e)[:300]))
        return code
    try:
        n = roundtrip(conn)
        conn.close()
    except Exception as e:
        print("error: %s" % repr(e)[:300])
        return 1
    print("ok: pika %s, %d-byte message published and consumed" % (pika.__version__, n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
