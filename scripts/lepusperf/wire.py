"""A blocking raw AMQP 0-9-1 client, written by hand: frames, field tables,
the handshake (PLAIN guest/guest, vhost /), channels and a clean close.
Enough of the wire for floods that open thousands of connections or stop
a handshake halfway."""
import socket
import struct

from .proc import HOST

# Generous per-socket timeout: a flood step waits for the broker, never forever.
SOCKET_TIMEOUT_S = 30
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def frame(t, ch, payload):
    return struct.pack(">BHI", t, ch, len(payload)) + payload + b"\xce"


def sstr(x):
    if isinstance(x, str):
        x = x.encode()
    return bytes([len(x)]) + x


def lstr(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack(">I", len(x)) + x


def method(ch, class_id, method_id, args=b""):
    return frame(1, ch, struct.pack(">HH", class_id, method_id) + args)


def field_value(kind, value):
    """One field-table value of AMQP type letter `kind`."""
    if kind == "t":
        return b"t" + bytes([1 if value else 0])
    if kind == "b":
        return b"b" + struct.pack(">b", value)
    if kind == "s":
        return b"s" + struct.pack(">h", value)
    if kind == "I":
        return b"I" + struct.pack(">i", value)
    if kind == "l":
        return b"l" + struct.pack(">q", value)
    if kind == "f":
        return b"f" + struct.pack(">f", value)
    if kind == "d":
        return b"d" + struct.pack(">d", value)
    if kind == "D":
        return b"D" + struct.pack(">Bi", value[0], value[1])
    if kind == "S":
        return b"S" + lstr(value)
    if kind == "T":
        return b"T" + struct.pack(">Q", value)
    if kind == "V":
        return b"V"
    if kind == "F":
        return b"F" + table(value)
    if kind == "A":
        body = b"".join(field_value(k, v) for k, v in value)
        return b"A" + struct.pack(">I", len(body)) + body
    raise ValueError(kind)


def table(entries):
    body = b"".join(sstr(k) + field_value(kind, v) for k, (kind, v) in entries)
    return struct.pack(">I", len(body)) + body


# Client sockets come from 127.0.0.2 .. 127.0.0.(1 + SOURCES) in turn: 100,000
# cycles leave sockets in TIME_WAIT for a minute, more than one source
# address has ephemeral ports for.
SOURCES = 32
_next_source = [0]


def next_source():
    _next_source[0] += 1
    return f"127.0.0.{2 + _next_source[0] % SOURCES}"


class Conn:
    """A blocking raw AMQP connection."""

    def __init__(self, port):
        self.s = socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT_S,
                                          source_address=(next_source(), 0))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def read_exact(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("broker closed the socket")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_method(self):
        """Next method frame: (channel, class, method, args); skips heartbeats."""
        while True:
            t, ch, size = struct.unpack(">BHI", self.read_exact(7))
            payload = self.read_exact(size + 1)[:size]
            if t == 1:
                class_id, method_id = struct.unpack(">HH", payload[:4])
                return ch, class_id, method_id, payload[4:]

    def expect(self, class_id, method_id):
        ch, c, m, args = self.read_method()
        if (c, m) != (class_id, method_id):
            raise ConnectionError(f"expected {class_id}.{method_id}, got {c}.{m} on {ch}: {args[:80]!r}")
        return args

    def handshake(self):
        self.send(PROTOCOL_HEADER)
        self.expect(10, 10)
        self.start_ok()
        self.expect(10, 30)
        self.send(method(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0)))
        self.send(method(0, 10, 40, sstr("/") + sstr("") + b"\0"))
        self.expect(10, 41)

    def start_ok(self):
        self.send(method(0, 10, 11, struct.pack(">I", 0) + sstr("PLAIN") + lstr(b"\0guest\0guest") + sstr("en_US")))

    def open_channel(self, n):
        self.send(method(n, 20, 10, sstr("")))
        self.expect(20, 11)

    def close(self):
        self.send(method(0, 10, 50, struct.pack(">H", 200) + sstr("bye") + struct.pack(">HH", 0, 0)))
        while True:
            _, c, m, _ = self.read_method()
            if (c, m) == (10, 51):
                break
        self.s.close()

