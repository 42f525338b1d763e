"""Certificate reload on SIGHUP, seen by real clients (tests/clients/run_tls.sh).

With a pika connection open over TLS (one message round-tripped), the
broker's certificate files are replaced by another certificate from the same
CA and the broker gets SIGHUP. Then, without the connection being dropped:
a new TLS connection must be served the new certificate, the open
connection must still round-trip a message, and a new pika connection must
work. Settings as tls_check.py, plus:

  TLS_RELOAD_PID              the broker's process id
  TLS_RELOAD_CHAIN, _KEY      the broker's cert_chain and key files (replaced)
  TLS_RELOAD_NEW_CHAIN, _KEY  the certificate and key to put there

Exit codes as tls_check.py (0 ok, 1 error, 2/3 a refused connection).
"""
import hashlib
import os
import shutil
import signal
import socket
import ssl
import sys
import time

import tls_check

TIMEOUT = tls_check.TIMEOUT


def served_fingerprint():
    """sha256 of the certificate a new TLS connection is served."""
    ctx = ssl.create_default_context(cafile=tls_check.env("TLS_CA"))
    if tls_check.env("TLS_CERT"):
        ctx.load_cert_chain(tls_check.env("TLS_CERT"), tls_check.env("TLS_KEY"))
    host, port = tls_check.env("TLS_HOST", "127.0.0.1"), int(tls_check.env("TLS_PORT", "5671"))
    with socket.create_connection((host, port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname=tls_check.env("TLS_SERVER_NAME", "localhost")) as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()[:16]


def replace(src, dst):
    """Put src at dst in one rename, so the broker never reads half a file."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def main():
    try:
        conn = tls_check.pika.BlockingConnection(tls_check.parameters())
    except Exception as e:
        kind, code = tls_check.refused_kind(e)
        print("%s: %s" % (kind, repr(e)[:300]))
        return code
    try:
        tls_check.roundtrip(conn)
        before = served_fingerprint()
        replace(os.environ["TLS_RELOAD_NEW_CHAIN"], os.environ["TLS_RELOAD_CHAIN"])
        replace(os.environ["TLS_RELOAD_NEW_KEY"], os.environ["TLS_RELOAD_KEY"])
        os.kill(int(os.environ["TLS_RELOAD_PID"]), signal.SIGHUP)
        # No notification of the reload exists: new connections until one is
        # served another certificate, with a deadline.
        deadline = time.monotonic() + TIMEOUT
        after = served_fingerprint()
        while after == before:
            if time.monotonic() > deadline:
                raise AssertionError("still served certificate %s %.0fs after SIGHUP" % (before, TIMEOUT))
            conn.process_data_events(time_limit=0.05)  # also keeps the open connection serviced
            after = served_fingerprint()
        tls_check.roundtrip(conn)
        conn.close()
        fresh = tls_check.pika.BlockingConnection(tls_check.parameters())
        tls_check.roundtrip(fresh)
        fresh.close()
    except Exception as e:
        print("error: %s" % repr(e)[:300])
        return 1
    print("ok: certificate %s -> %s after SIGHUP; the open connection and a new one round-trip" % (before, after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
