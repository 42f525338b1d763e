"""TLS checks below the client libraries, for tests/clients/run_tls.sh
(Python standard library only).

  raw_check.py openssl        `openssl s_client` sends the AMQP protocol header
                              and must get connection.start back; exit codes
                              as tests/clients/python/tls_check.py (0 ok,
                              2 refused-tls, 1 error)
  raw_check.py plain-amqp     plain AMQP to the TLS port: the broker must close
                              the socket without an AMQP frame (a TLS alert is
                              fine), and still serve TLS afterwards
  raw_check.py stall          TCP connect, send nothing: closed by the broker
                              after TLS_HANDSHAKE_TIMEOUT_MS (not before 0.75x
                              of it, at most TLS_TIMEOUT_SLACK_S = 1 s late)
  raw_check.py stall-mid      send a real ClientHello, read the server's
                              answer, then send nothing more: same
  (the raw cases exit 0 when the broker behaved, 1 when not)

Settings: TLS_HOST, TLS_PORT, TLS_SERVER_NAME, TLS_CA, TLS_CERT, TLS_KEY,
TLS_MAX_VERSION as for the client checks; OPENSSL_VERSION (1.2 or 1.3) pins
the version for s_client; TLS_HANDSHAKE_TIMEOUT_MS is the broker's TLS
handshake timeout. Prints one line.
"""
import os
import selectors
import socket
import ssl
import subprocess
import sys
import time

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
# Frame type 1 (method), channel 0, then after the 4-byte size class 10 method
# 10: connection.start.
START_PREFIX = b"\x01\x00\x00"
START_METHOD = b"\x00\x0a\x00\x0a"
# Allowed lateness of the broker's handshake timeout (timer granularity, a
# loaded machine); small enough that a timeout twice as long as configured fails.
SLACK_S = float(os.environ.get("TLS_TIMEOUT_SLACK_S") or 1.0)
TLS_ALERT = 0x15
ALERTS = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
          40: "handshake_failure", 42: "bad_certificate", 47: "illegal_parameter",
          48: "unknown_ca", 50: "decode_error", 51: "decrypt_error", 70: "protocol_version",
          80: "internal_error", 109: "missing_extension", 116: "certificate_required"}


def env(name, default=None):
    v = os.environ.get(name, "")
    return v if v else default


HOST = env("TLS_HOST", "127.0.0.1")
PORT = int(env("TLS_PORT", "5671"))
SERVER_NAME = env("TLS_SERVER_NAME", "localhost")
TIMEOUT_S = float(env("AMQP_TEST_TIMEOUT", "10"))


def is_connection_start(data):
    return len(data) >= 11 and data[:3] == START_PREFIX and data[7:11] == START_METHOD


def openssl():
    cmd = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, PORT), "-servername", SERVER_NAME,
           "-CAfile", env("TLS_CA"), "-verify_return_error", "-verify_hostname", SERVER_NAME,
           "-brief", "-ign_eof"]
    if env("TLS_CERT"):
        cmd += ["-cert", env("TLS_CERT"), "-key", env("TLS_KEY")]
    version = env("OPENSSL_VERSION")
    if version:
        cmd.append({"1.2": "-tls1_2", "1.3": "-tls1_3"}[version])
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(AMQP_HEADER)
        proc.stdin.flush()
        data = read_until(proc.stdout, lambda d: len(d) >= 11, TIMEOUT_S)
    finally:
        proc.kill()
        _, err = proc.communicate()
    summary = " ".join(line.strip() for line in err.decode(errors="replace").splitlines()
                       if line.startswith(("Protocol version", "Ciphersuite", "Verification")))
    if is_connection_start(data):
        print("ok: %s; connection.start received" % summary)
        return 0
    if data:
        print("error: %d bytes that are not connection.start: %r" % (len(data), data[:32]))
        return 1
    errs = [line.strip() for line in err.decode(errors="replace").splitlines()
            if "error" in line.lower() or "alert" in line.lower()]
    print("refused-tls: no AMQP frame; s_client: %s" % (" | ".join(errs)[:300] or "(nothing)"))
    return 2


def read_until(stream, done, timeout):
    """Read from a pipe until done(data) holds, EOF, or timeout."""
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    data = b""
    deadline = time.monotonic() + timeout
    while not done(data):
        left = deadline - time.monotonic()
        if left <= 0 or not sel.select(left):
            break
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            break
        data += chunk
    return data


def wait_closed(sock, limit, stop=lambda data: False):
    """Read until the peer closes; (seconds, how, bytes) or how=None on limit,
    how="stopped" as soon as stop(bytes) holds."""
    start = time.monotonic()
    data = b""
    while not stop(data):
        left = limit - (time.monotonic() - start)
        if left <= 0:
            return time.monotonic() - start, None, data
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - start, "reset", data
        if not chunk:
            return time.monotonic() - start, "EOF", data
        data += chunk
    return time.monotonic() - start, "stopped", data


def amqp_bytes(data):
    return data.startswith(b"AMQP") or data.startswith(START_PREFIX)


def describe_records(data):
    """Name TLS records in data; None if it is not a sequence of TLS records."""
    out, i = [], 0
    while i < len(data):
        if i + 5 > len(data) or data[i] not in (0x14, 0x15, 0x16, 0x17) or data[i + 1] != 3:
            return None
        n = int.from_bytes(data[i + 3:i + 5], "big")
        body = data[i + 5:i + 5 + n]
        if data[i] == TLS_ALERT and len(body) == 2:
            out.append("alert %s" % ALERTS.get(body[1], body[1]))
        else:
            out.append({0x14: "change_cipher_spec", 0x15: "alert", 0x16: "handshake",
                        0x17: "application_data"}[data[i]])
        i += 5 + n
    return out


def still_serving():
    """A TLS connection (client certificate if given) that gets connection.start."""
    ctx = ssl.create_default_context(cafile=env("TLS_CA"))
    if env("TLS_CERT"):
        ctx.load_cert_chain(env("TLS_CERT"), env("TLS_KEY"))
    try:
        with socket.create_connection((HOST, PORT), timeout=TIMEOUT_S) as raw:
            with ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as s:
                s.sendall(AMQP_HEADER)
                version = s.version()
                data = b""
                while len(data) < 11:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        return is_connection_start(data), "%s, connection.start" % version
    except (OSError, ssl.SSLError) as e:
        return False, repr(e)


def handshake_timeout_s():
    return float(env("TLS_HANDSHAKE_TIMEOUT_MS", "10000")) / 1000.0


def plain_amqp():
    limit = handshake_timeout_s() + SLACK_S
    with socket.create_connection((HOST, PORT), timeout=TIMEOUT_S) as s:
        s.sendall(AMQP_HEADER)
        took, how, data = wait_closed(s, limit, stop=lambda d: len(d) >= 4 and amqp_bytes(d))
    if amqp_bytes(data):
        print("FAIL: AMQP bytes came back on the TLS port: %r" % data[:32])
        return 1
    if how is None:
        print("FAIL: socket still open after %.1f s (%d bytes received)" % (took, len(data)))
        return 1
    records = describe_records(data)
    if data and (records is None or any(not r.startswith("alert") for r in records)):
        print("FAIL: closed, but first sent non-alert bytes: %r" % data[:32])
        return 1
    ok, how_alive = still_serving()
    if not ok:
        print("FAIL: closed (%s after %.2f s), but TLS is no longer served: %s" % (how, took, how_alive))
        return 1
    sent = ", ".join(records) if records else "nothing"
    print("ok: socket closed (%s) after %.2f s, sent %s; TLS still served (%s)" % (how, took, sent, how_alive))
    return 0


def client_hello():
    """The bytes of a real ClientHello, and the SSLObject that made it."""
    ctx = ssl.create_default_context(cafile=env("TLS_CA"))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=SERVER_NAME)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def stall(mid):
    expect = handshake_timeout_s()
    low, high = 0.75 * expect, expect + SLACK_S
    with socket.create_connection((HOST, PORT), timeout=TIMEOUT_S) as s:
        got = ""
        if mid:
            s.sendall(client_hello())
        took, how, data = wait_closed(s, high)
        if mid:
            records = describe_records(data) or ["%d unparsed bytes" % len(data)]
            if not data or records[0] != "handshake":
                print("FAIL: no server handshake flight after the ClientHello: %s" % records)
                return 1
            got = "; got %d bytes of the server's flight (%s) first" % (len(data), records[0])
    if how is None:
        print("FAIL: still open %.1f s after connect (handshake timeout %.1f s)%s" % (took, expect, got))
        return 1
    if took < low:
        print("FAIL: closed (%s) after %.2f s, before the %.1f s handshake timeout%s" % (how, took, expect, got))
        return 1
    ok, how_alive = still_serving()
    if not ok:
        print("FAIL: closed after %.2f s, but TLS is no longer served: %s" % (took, how_alive))
        return 1
    print("ok: closed by the broker (%s) after %.2f s, timeout %.1f s%s; TLS still served"
          % (how, took, expect, got))
    return 0


def main():
    case = sys.argv[1] if len(sys.argv) > 1 else ""
    if case == "openssl":
        return openssl()
    if case == "plain-amqp":
        return plain_amqp()
    if case == "stall":
        return stall(mid=False)
    if case == "stall-mid":
        return stall(mid=True)
    print("error: unknown case %r" % case)
    return 1


if __name__ == "__main__":
    sys.exit(main())
