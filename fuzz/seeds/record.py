#!/usr/bin/env python3
"""Seeds the broker_session fuzz target's corpus with real client traffic.

Runs short pika sessions (the flows of RabbitMQ's tutorials and the
features the broker implements) through a recording TCP proxy in front of a
broker, then turns each recorded client-to-broker byte stream into an input
of the target: the handshake frames are dropped (the target does its own),
every other frame becomes a raw-frame operation, followed by a flush point
after each method frame. Pairs of sessions are also interleaved into
two-connection inputs. A few inputs made of the target's structured
operations are added (structured_seeds), so that mutation starts from
those too.

    python3 fuzz/seeds/record.py --broker 127.0.0.1:5673 --out fuzz/corpus/broker_session

Needs pika and a running broker (Lepus, or RabbitMQ for comparison).
"""

import argparse
import hashlib
import os
import socket
import struct
import threading
import time

import pika

# Operation codes of fuzz_targets/broker_session.rs (op & 0x3f).
OP_RAW_FRAME = 54
OP_FLUSH = 60
CONN_BIT = 0x80
FLAGS_ONE_CONN = 0x00
FLAGS_TWO_CONNS = 0x01


class Recorder:
    """A TCP proxy that keeps what each client sent."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.streams = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.sock.accept()
            server = socket.create_connection(self.upstream)
            stream = bytearray()
            with self.lock:
                self.streams.append(stream)
            threading.Thread(target=pump, args=(client, server, stream), daemon=True).start()
            threading.Thread(target=pump, args=(server, client, None), daemon=True).start()

    def take(self):
        with self.lock:
            streams, self.streams = self.streams, []
        return [bytes(s) for s in streams]


def pump(src, dst, record):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if record is not None:
                record.extend(data)
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def frames(stream):
    """(type, channel, payload) of each whole frame after the protocol header."""
    pos = 8
    while pos + 7 <= len(stream):
        kind, channel, size = struct.unpack(">BHI", stream[pos : pos + 7])
        if pos + 8 + size > len(stream):
            break
        yield kind, channel, stream[pos + 7 : pos + 7 + size]
        pos += 8 + size


def is_handshake(kind, channel, payload):
    if kind != 1 or channel != 0 or len(payload) < 4:
        return False
    class_id, method_id = struct.unpack(">HH", payload[:4])
    return class_id == 10 and method_id in (11, 31, 40)


def ops(stream, conn=0):
    """The target's operations for one recorded stream, as a list of byte strings."""
    out = []
    for kind, channel, payload in frames(stream):
        if is_handshake(kind, channel, payload) or len(payload) > 0xFFFF:
            continue
        op = OP_RAW_FRAME | (CONN_BIT if conn else 0)
        out.append(bytes([op, kind]) + struct.pack(">HH", channel, len(payload)) + payload)
        if kind == 1:
            out.append(bytes([OP_FLUSH | (CONN_BIT if conn else 0)]))
    return out


# ----------------------------------------------------------------- sessions


def s_tutorial_hello(ch):
    ch.queue_declare("fz.q0")
    ch.basic_publish("", "fz.q0", b"Hello World!")
    ch.basic_get("fz.q0", auto_ack=True)
    ch.queue_delete("fz.q0")


def s_work_queue(ch):
    ch.queue_declare("fz.q1", durable=True)
    ch.basic_qos(prefetch_count=1)
    for i in range(3):
        ch.basic_publish("", "fz.q1", b"task %d" % i, pika.BasicProperties(delivery_mode=2))
    for _ in range(3):
        method, _, _ = ch.basic_get("fz.q1")
        if method:
            ch.basic_ack(method.delivery_tag)
    ch.queue_delete("fz.q1")


def s_fanout(ch):
    ch.exchange_declare("fz.x0", "fanout")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "fz.x0")
    ch.basic_publish("fz.x0", "", b"log")
    ch.basic_get(q, auto_ack=True)
    ch.exchange_delete("fz.x0")


def s_topic(ch):
    ch.exchange_declare("fz.x1", "topic")
    ch.queue_declare("fz.q2", auto_delete=True)
    ch.queue_bind("fz.q2", "fz.x1", "a.*")
    ch.queue_bind("fz.q2", "fz.x1", "*.b.#")
    ch.basic_publish("fz.x1", "a.b", b"t1")
    ch.basic_publish("fz.x1", "a.b.c", b"t2")
    ch.queue_unbind("fz.q2", "fz.x1", "a.*")
    ch.basic_get("fz.q2", auto_ack=True)
    ch.queue_delete("fz.q2")
    ch.exchange_delete("fz.x1")


def s_headers(ch):
    ch.exchange_declare("fz.x0", "headers")
    ch.queue_declare("fz.q0")
    ch.queue_bind("fz.q0", "fz.x0", arguments={"x-match": "any", "k": "v"})
    ch.basic_publish("fz.x0", "", b"h", pika.BasicProperties(headers={"k": "v"}))
    ch.basic_get("fz.q0", auto_ack=True)
    ch.queue_delete("fz.q0")
    ch.exchange_delete("fz.x0")


def s_consume(ch):
    ch.queue_declare("fz.q0")
    for i in range(3):
        ch.basic_publish("", "fz.q0", b"m%d" % i)
    got = []

    def on_message(c, method, props, body):
        got.append(body)
        c.basic_ack(method.delivery_tag)
        if len(got) == 3:
            c.stop_consuming()

    ch.basic_consume("fz.q0", on_message, consumer_tag="c0")
    ch.start_consuming()
    ch.queue_delete("fz.q0")


def s_reject_nack(ch):
    ch.queue_declare("fz.q1")
    for i in range(3):
        ch.basic_publish("", "fz.q1", b"r%d" % i)
    m1, _, _ = ch.basic_get("fz.q1")
    ch.basic_reject(m1.delivery_tag, requeue=True)
    m2, _, _ = ch.basic_get("fz.q1")
    ch.basic_nack(m2.delivery_tag, multiple=True, requeue=False)
    ch.basic_recover(requeue=True)
    ch.queue_purge("fz.q1")
    ch.queue_delete("fz.q1")


def s_dead_letter_ttl(ch):
    ch.exchange_declare("fz.dlx", "direct")
    ch.queue_declare("fz.dlq")
    ch.queue_bind("fz.dlq", "fz.dlx", "fz.dlq")
    args = {
        "x-message-ttl": 10,
        "x-dead-letter-exchange": "fz.dlx",
        "x-dead-letter-routing-key": "fz.dlq",
        "x-max-length": 2,
        "x-overflow": "drop-head",
    }
    ch.queue_declare("fz.q2", arguments=args)
    for i in range(3):
        ch.basic_publish("", "fz.q2", b"d%d" % i, pika.BasicProperties(expiration="5"))
    time.sleep(0.05)
    ch.basic_get("fz.dlq", auto_ack=True)
    ch.queue_delete("fz.q2")
    ch.queue_delete("fz.dlq")
    ch.exchange_delete("fz.dlx")


def s_priority_lengths(ch):
    ch.queue_declare("fz.q0", arguments={"x-max-priority": 5, "x-max-length-bytes": 100, "x-expires": 60000})
    for p in (1, 5, 3):
        ch.basic_publish("", "fz.q0", b"p", pika.BasicProperties(priority=p))
    ch.basic_get("fz.q0", auto_ack=True)
    ch.queue_delete("fz.q0")


def s_tx(ch):
    ch.queue_declare("fz.q1")
    ch.tx_select()
    ch.basic_publish("", "fz.q1", b"tx1")
    ch.tx_rollback()
    ch.basic_publish("", "fz.q1", b"tx2")
    ch.tx_commit()
    m, _, _ = ch.basic_get("fz.q1")
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    ch.queue_delete("fz.q1")


def s_confirms_mandatory(ch):
    ch.confirm_delivery()
    ch.queue_declare("fz.q0")
    ch.basic_publish("", "fz.q0", b"c1", mandatory=True)
    try:
        ch.basic_publish("", "fz.nowhere", b"c2", mandatory=True)
    except pika.exceptions.UnroutableError:
        pass
    ch.queue_delete("fz.q0")


def s_alternate_exchange_e2e(ch):
    ch.exchange_declare("fz.x1", "fanout")
    ch.exchange_declare("fz.x0", "direct", arguments={"alternate-exchange": "fz.x1"})
    ch.exchange_bind("fz.x1", "amq.topic", "#")
    ch.queue_declare("fz.q2")
    ch.queue_bind("fz.q2", "fz.x1")
    ch.basic_publish("fz.x0", "unrouted", b"ae")
    ch.basic_publish("amq.topic", "a.b", b"e2e")
    ch.exchange_unbind("fz.x1", "amq.topic", "#")
    ch.basic_get("fz.q2", auto_ack=True)
    ch.queue_delete("fz.q2")
    ch.exchange_delete("fz.x0")
    ch.exchange_delete("fz.x1")


def s_errors(ch):
    # Soft errors close the channel; pika raises, the next session step opens another.
    try:
        ch.queue_declare("fz.none", passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        pass


def s_errors_precondition(ch):
    ch.queue_declare("fz.q0", durable=False)
    try:
        ch.queue_declare("fz.q0", durable=True)
    except pika.exceptions.ChannelClosedByBroker:
        pass


def s_flow_qos_cancel(ch):
    ch.queue_declare("fz.q1")
    ch.basic_qos(prefetch_count=2, global_qos=True)
    ch.basic_publish("", "fz.q1", b"f")
    tag = ch.basic_consume("fz.q1", lambda *a: None, auto_ack=False, exclusive=True, arguments={"x-priority": 3})
    ch.connection.process_data_events(time_limit=0.05)
    ch.basic_cancel(tag)
    ch.queue_delete("fz.q1")


def s_single_active_lazy(ch):
    ch.queue_declare("fz.q2", arguments={"x-single-active-consumer": True, "x-queue-mode": "lazy"})
    ch.basic_consume("fz.q2", lambda *a: None, consumer_tag="c0")
    ch.basic_consume("fz.q2", lambda *a: None, consumer_tag="c1")
    ch.basic_publish("", "fz.q2", b"s")
    ch.connection.process_data_events(time_limit=0.05)
    ch.queue_delete("fz.q2")


def s_direct_reply_to(ch):
    ch.basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=True)
    ch.basic_publish("", "amq.rabbitmq.reply-to", b"rpc", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    ch.queue_declare("fz.q0")
    ch.basic_publish("", "fz.q0", b"req", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c1"))
    ch.connection.process_data_events(time_limit=0.05)
    ch.queue_delete("fz.q0")


SESSIONS = [v for k, v in sorted(globals().items()) if k.startswith("s_")]


def run_session(port, session):
    params = pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"))
    conn = pika.BlockingConnection(params)
    try:
        session(conn.channel())
    finally:
        if conn.is_open:
            conn.close()


def write(out, data):
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
    return len(data)


def structured_seeds():
    """Inputs made of the target's structured operations (the recorded ones
    are raw frames): channel.open, then each operation with zeroed fields,
    and a queue.declare with each dictionary argument as a string, an
    integer and a boolean."""
    seeds = []
    for code in range(64):
        seeds.append(bytes([FLAGS_ONE_CONN, 0, 0, code, 0]) + bytes(12))
    for key in range(18):  # ARG_KEYS
        for kind in (0, 7, 2):  # longstr, i32, bool
            # op 12 queue.declare, channel 1, fz.q0, no flags, one entry.
            seeds.append(bytes([FLAGS_ONE_CONN, 0, 0, 12, 0, 0, 0, 0x80, key, kind, 0, 0, 0, 0, 0]))
    return seeds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True, help="host:port of the broker to record against")
    ap.add_argument("--out", required=True, help="corpus directory to write seeds to")
    args = ap.parse_args()
    host, port = args.broker.rsplit(":", 1)
    recorder = Recorder((host, int(port)))
    os.makedirs(args.out, exist_ok=True)
    recorded = []
    for session in SESSIONS:
        try:
            run_session(recorder.port, session)
        except Exception as e:  # a session the broker refuses still yields traffic
            print(f"{session.__name__}: {type(e).__name__}: {e}")
        time.sleep(0.1)  # let the proxy see the end of the stream
        for stream in recorder.take():
            recorded.append((session.__name__, ops(stream)))
    total = 0
    for _, seq in recorded:
        total += write(args.out, bytes([FLAGS_ONE_CONN]) + b"".join(seq))
    # Two connections: one session's operations interleaved with another's.
    for (_, a), (_, b) in zip(recorded, recorded[1:] + recorded[:1]):
        mixed = []
        b2 = [bytes([op[0] | CONN_BIT]) + op[1:] for op in b]
        for i in range(max(len(a), len(b2))):
            mixed.extend(a[i : i + 1])
            mixed.extend(b2[i : i + 1])
        total += write(args.out, bytes([FLAGS_TWO_CONNS]) + b"".join(mixed))
    for seed in structured_seeds():
        total += write(args.out, seed)
    print(f"{len(recorded)} sessions recorded, {2 * len(recorded)} seeds, {total} bytes in {args.out}")


if __name__ == "__main__":
    main()
