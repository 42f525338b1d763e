"""pika: the queue types and plugins of issue 15 -- stream queues consumed over
AMQP 0-9-1 (declare rules, x-stream-offset first/last/next/number/timestamp,
the x-stream-offset header on deliveries), the quorum delivery limit and
at-least-once dead-lettering, the consumer timeout, the delayed-message and consistent-hash exchanges.

Every expectation was checked against RabbitMQ 3.10.8 where it has the
feature (CLIENTS_TARGET=rabbitmq); the rest are marked lepus_only.
"""
import datetime
import os
import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from conftest import TARGET, TIMEOUT, lepus_only, pump, unique

STREAM = {"x-queue-type": "stream"}


def declare_stream(conn, cleanup, prefix, arguments=None):
    name = unique(prefix)
    cleanup.append(("queue", name))
    ch = conn.channel()
    ch.queue_declare(queue=name, durable=True, arguments=dict(STREAM, **(arguments or {})))
    ch.close()
    return name


def publish_confirmed(conn, queue, bodies, headers=None):
    """One confirmed publish at a time: each message is its own stream chunk
    on RabbitMQ, so `last` names one message there as on Lepus."""
    ch = conn.channel()
    ch.confirm_delivery()
    for body in bodies:
        props = pika.BasicProperties(headers=headers) if headers else None
        ch.basic_publish(exchange="", routing_key=queue, body=body, properties=props)
    ch.close()


class StreamConsumer:
    """A stream consumer (prefetch 100, manual acks) recording each delivery's
    body and x-stream-offset header."""

    def __init__(self, conn, queue, offset):
        self.conn = conn
        self.got = []
        self.ch = conn.channel()
        self.ch.basic_qos(prefetch_count=100)
        arguments = {} if offset is None else {"x-stream-offset": offset}
        self.ch.basic_consume(queue, self._on, arguments=arguments)

    def _on(self, ch, method, props, body):
        self.got.append((body, (props.headers or {}).get("x-stream-offset")))
        ch.basic_ack(method.delivery_tag)

    def wait(self, n, what):
        pump(self.conn, lambda: len(self.got) >= n, what=what)
        return self.got[:n]


def test_stream_declare_rules(conn, cleanup):
    name = unique("stream-rules")
    cleanup.append(("queue", name))
    refused = [
        (dict(durable=False), "invalid property 'non-durable'"),
        (dict(durable=True, exclusive=True), "invalid property 'exclusive-owner'"),
        (dict(durable=True, auto_delete=True), "invalid property 'auto-delete'"),
    ]
    for flags, text in refused:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as ei:
            ch.queue_declare(queue=name, arguments=STREAM, **flags)
        assert ei.value.reply_code == 406
        assert ei.value.reply_text == "PRECONDITION_FAILED - %s for queue '%s' in vhost '/'" % (text, name)
    for key, value in [("x-max-priority", 5), ("x-dead-letter-exchange", "dlx")]:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as ei:
            ch.queue_declare(queue=name, durable=True, arguments=dict(STREAM, **{key: value}))
        assert ei.value.reply_code == 406
        assert ei.value.reply_text == (
            "PRECONDITION_FAILED - invalid arg '%s' for queue '%s' in vhost '/' "
            "of queue type rabbit_stream_queue" % (key, name)
        )
    # The arguments a stream takes.
    ch = conn.channel()
    retention = {"x-max-length-bytes": 10_000_000, "x-max-age": "1h", "x-stream-max-segment-size-bytes": 1_000_000}
    ok = ch.queue_declare(queue=name, durable=True, arguments=dict(STREAM, **retention))
    assert ok.method.queue == name
    # Equivalent redeclare is fine; basic.get is not supported (540 closes the connection).
    ch.queue_declare(queue=name, durable=True, arguments=dict(STREAM, **retention))
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
        ch.basic_get(name)
    assert ei.value.reply_code == 540
    assert ei.value.reply_text == (
        "NOT_IMPLEMENTED - basic.get not supported by stream queues queue '%s' in vhost '/'" % name
    )


def test_stream_offset_first_and_header(conn, cleanup):
    queue = declare_stream(conn, cleanup, "stream-first")
    publish_confirmed(conn, queue, [b"m%d" % i for i in range(10)])
    got = StreamConsumer(conn, queue, "first").wait(10, "10 deliveries from first")
    assert got == [(b"m%d" % i, i) for i in range(10)]
    # The header is a signed 64-bit integer: field type 'l', which pika
    # decodes to its `long` (an int subclass), not 'I' or 'i'.
    assert all(isinstance(offset, int) and type(offset).__name__ == "long" for _, offset in got)
    # Consumption does not remove anything: a second consumer sees it all again.
    again = StreamConsumer(conn, queue, "first").wait(10, "10 deliveries again")
    assert again == got


def test_stream_offset_numeric(conn, cleanup):
    queue = declare_stream(conn, cleanup, "stream-num")
    publish_confirmed(conn, queue, [b"m%d" % i for i in range(10)])
    got = StreamConsumer(conn, queue, 5).wait(5, "deliveries from offset 5")
    assert got == [(b"m%d" % i, i) for i in range(5, 10)]


def test_stream_offset_past_the_end(conn, cleanup):
    queue = declare_stream(conn, cleanup, "stream-beyond")
    publish_confirmed(conn, queue, [b"m%d" % i for i in range(3)])
    consumer = StreamConsumer(conn, queue, 5)
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(3, 7):
        ch.basic_publish(exchange="", routing_key=queue, body=b"m%d" % i)
    # Offsets 3 and 4 are passed over, delivery starts at 5 (as RabbitMQ 3.10.8).
    assert consumer.wait(2, "offsets 5 and 6") == [(b"m5", 5), (b"m6", 6)]


def test_stream_offset_last(conn, cleanup):
    queue = declare_stream(conn, cleanup, "stream-last")
    publish_confirmed(conn, queue, [b"m%d" % i for i in range(10)])
    consumer = StreamConsumer(conn, queue, "last")
    assert consumer.wait(1, "the last message") == [(b"m9", 9)]
    publish_confirmed(conn, queue, [b"m10"])
    # Nothing before offset 9 was delivered in between.
    assert consumer.wait(2, "the next message") == [(b"m9", 9), (b"m10", 10)]


@pytest.mark.parametrize("offset", ["next", None], ids=["next", "default"])
def test_stream_offset_next(conn, cleanup, offset):
    queue = declare_stream(conn, cleanup, "stream-next")
    publish_confirmed(conn, queue, [b"old%d" % i for i in range(5)])
    consumer = StreamConsumer(conn, queue, offset)
    publish_confirmed(conn, queue, [b"new%d" % i for i in range(3)])
    assert consumer.wait(3, "the new messages") == [(b"new%d" % i, 5 + i) for i in range(3)]


def test_stream_offset_timestamp(conn, cleanup):
    queue = declare_stream(conn, cleanup, "stream-ts")
    publish_confirmed(conn, queue, [b"before%d" % i for i in range(3)])
    # The offset spec is a timestamp in whole seconds: the next second
    # boundary separates the two batches (waiting for the clock, not for an
    # event of the broker).
    boundary = int(time.time()) + 1
    time.sleep(max(0.0, boundary - time.time()) + 0.05)
    publish_confirmed(conn, queue, [b"after%d" % i for i in range(3)])
    start = datetime.datetime.fromtimestamp(boundary, datetime.timezone.utc)
    got = StreamConsumer(conn, queue, start).wait(3, "messages from the timestamp")
    assert got == [(b"after%d" % i, 3 + i) for i in range(3)]
    # A timestamp before everything starts at the first message.
    early = datetime.datetime.fromtimestamp(boundary - 3600, datetime.timezone.utc)
    assert StreamConsumer(conn, queue, early).wait(1, "the first message") == [(b"before0", 0)]


def test_quorum_delivery_limit_dead_letters(conn, cleanup):
    dlq = unique("qq-dlq")
    queue = unique("qq-limit")
    cleanup.extend([("queue", queue), ("queue", dlq)])
    ch = conn.channel()
    ch.queue_declare(queue=dlq)
    ch.queue_declare(
        queue=queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": 2,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq,
        },
    )
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key=queue, body=b"poison")
    seen = []

    def on(c, method, props, body):
        seen.append((method.redelivered, (props.headers or {}).get("x-delivery-count")))
        c.basic_nack(method.delivery_tag, requeue=True)

    consumer = conn.channel()
    consumer.basic_consume(queue, on)
    dead = []

    def dead_lettered():
        if not dead:
            method, props, body = ch.basic_get(dlq, auto_ack=True)
            if method is not None:
                dead.append((props, body))
        return bool(dead)

    pump(conn, dead_lettered, what="the message dead-lettered")
    # Delivered with count none, 1, 2; the third return passes the limit.
    assert seen == [(False, None), (True, 1), (True, 2)]
    props, body = dead[0]
    assert body == b"poison"
    headers = props.headers
    assert headers["x-first-death-reason"] == "delivery_limit"
    assert headers["x-first-death-queue"] == queue
    death = headers["x-death"][0]
    assert death["reason"] == "delivery_limit"
    assert death["queue"] == queue
    assert death["count"] == 1
    assert ch.queue_declare(queue=queue, passive=True).method.message_count == 0


# The broker's retry interval for held dead letters (Lepus
# --dead-letter-retry-ms, RabbitMQ dead_letter_worker_publisher_confirm_timeout,
# 180 s by default): the at-least-once test's retry part runs only when set.
DEAD_LETTER_RETRY_MS = int(os.environ.get("CLIENTS_DEAD_LETTER_RETRY_MS", "0"))


def test_quorum_at_least_once_dead_lettering_holds_refused_dead_letters(conn, cleanup):
    dlq = unique("qq-alo-dlq")
    queue = unique("qq-alo")
    cleanup.extend([("queue", queue), ("queue", dlq)])
    ch = conn.channel()
    # The dead-letter queue takes one message and refuses the next.
    ch.queue_declare(queue=dlq, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.queue_declare(
        queue=queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-max-length": 3,
        },
    )
    ch.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)

    def publish(body):
        try:
            ch.basic_publish(exchange="", routing_key=queue, body=body, properties=persistent)
            return True
        except pika.exceptions.NackError:
            return False

    assert publish(b"m1") and publish(b"m2")
    for _ in range(2):
        method, _, _ = ch.basic_get(queue)
        ch.basic_nack(method.delivery_tag, requeue=False)
    pump(conn, lambda: ch.queue_declare(queue=dlq, passive=True).method.message_count == 1,
         what="m1 dead-lettered")
    # m2, refused by the full queue, is held: not ready, but within the limit
    # (a quorum queue takes the message that takes it over, then refuses).
    assert ch.queue_declare(queue=queue, passive=True).method.message_count == 0
    assert [publish(b"m%d" % i) for i in range(3, 7)] == [True, True, True, False]
    method, props, body = ch.basic_get(dlq, auto_ack=True)
    assert body == b"m1" and props.headers["x-first-death-reason"] == "rejected"
    if not DEAD_LETTER_RETRY_MS:
        return
    got = []

    def forwarded():
        if not got:
            method, props, body = ch.basic_get(dlq, auto_ack=True)
            if method is not None:
                got.append((props, body))
        return bool(got)

    pump(conn, forwarded, timeout=TIMEOUT + DEAD_LETTER_RETRY_MS / 1000.0, what="m2 forwarded on retry")
    props, body = got[0]
    death = props.headers["x-death"][0]
    assert (body, death["reason"], death["queue"], death["count"]) == (b"m2", "rejected", queue, 1)
    # Released from the source, which refuses until under 80 % of its limit.
    assert ch.queue_declare(queue=queue, passive=True).method.message_count == 3
    assert not publish(b"n0")


def closed_by_consumer_timeout(conn, cleanup, prefix, arguments, timeout_ms, wait_s):
    """A consumer that never acks its one delivery on a queue declared with
    `arguments`: asserts its channel is closed with the 406 of a timeout of
    `timeout_ms`, no sooner; returns the queue and the other channel."""
    queue = unique(prefix)
    cleanup.append(("queue", queue))
    ch = conn.channel()
    ch.queue_declare(queue=queue, arguments=arguments)
    ch.basic_publish(exchange="", routing_key=queue, body=b"slow")
    closed = []
    slow = conn.channel()
    slow._impl.add_on_close_callback(lambda c, reason: closed.append(reason))
    got = []
    slow.basic_consume(queue, lambda c, m, p, b: got.append(b))  # never acked
    started = time.monotonic()
    pump(conn, lambda: closed, timeout=wait_s, what="the channel closed by the consumer timeout")
    assert got == [b"slow"]
    assert time.monotonic() - started >= timeout_ms / 1000
    reason = closed[0]
    assert isinstance(reason, ChannelClosedByBroker)
    assert reason.reply_code == 406
    assert reason.reply_text.startswith(
        "PRECONDITION_FAILED - delivery acknowledgement on channel %d timed out. "
        "Timeout value used: %d ms." % (slow.channel_number, timeout_ms)
    )
    return queue, ch


@lepus_only  # the x-consumer-timeout queue argument came with RabbitMQ 3.12
def test_consumer_timeout_queue_argument_closes_channel(conn, cleanup):
    queue, ch = closed_by_consumer_timeout(conn, cleanup, "ctimeout", {"x-consumer-timeout": 500}, 500, TIMEOUT)
    # The delivery went back to the queue: redelivered to the next consumer.
    again = []
    ch.basic_consume(queue, lambda c, m, p, b: again.append((m.redelivered, b)), auto_ack=True)
    pump(conn, lambda: again, what="the redelivery")
    assert again == [(True, b"slow")]


NODE_CONSUMER_TIMEOUT_MS = int(os.environ.get("CLIENTS_NODE_CONSUMER_TIMEOUT_MS") or 0)


@pytest.mark.skipif(
    not NODE_CONSUMER_TIMEOUT_MS,
    reason="set CLIENTS_NODE_CONSUMER_TIMEOUT_MS to the broker's configured consumer timeout",
)
@pytest.mark.timeout(NODE_CONSUMER_TIMEOUT_MS / 1000 + 120)
def test_consumer_timeout_node_wide_closes_channel(conn, cleanup):
    """The node's timeout (Lepus --consumer-timeout, RabbitMQ consumer_timeout):
    what RabbitMQ 3.10 can be checked on; it looks once a minute."""
    wait_s = NODE_CONSUMER_TIMEOUT_MS / 1000 + 75
    closed_by_consumer_timeout(conn, cleanup, "ctimeout-node", None, NODE_CONSUMER_TIMEOUT_MS, wait_s)


@lepus_only  # RabbitMQ 3.10 has no delayed-message plugin here
def test_delayed_exchange_delivers_after_x_delay(conn, cleanup):
    exchange = unique("delayed")
    queue = unique("delayed-q")
    cleanup.extend([("exchange", exchange), ("queue", queue)])
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.exchange_declare(exchange=exchange, exchange_type="x-delayed-message")
    assert ei.value.reply_code == 406  # x-delayed-type is required
    ch = conn.channel()
    ch.exchange_declare(
        exchange=exchange, exchange_type="x-delayed-message", arguments={"x-delayed-type": "direct"}
    )
    ch.queue_declare(queue=queue)
    ch.queue_bind(queue=queue, exchange=exchange, routing_key="k")
    ch.confirm_delivery()
    got = []
    ch.basic_consume(queue, lambda c, m, p, b: got.append((time.monotonic(), b, p.headers)), auto_ack=True)
    sent = time.monotonic()
    ch.basic_publish(exchange, "k", b"late", pika.BasicProperties(headers={"x-delay": 700}))
    ch.basic_publish(exchange, "k", b"soon", pika.BasicProperties(headers={"x-delay": 200}))
    ch.basic_publish(exchange, "k", b"now")
    pump(conn, lambda: len(got) >= 3, what="three deliveries")
    assert [b for _, b, _ in got] == [b"now", b"soon", b"late"]
    at = {b: t - sent for t, b, _ in got}
    assert at[b"soon"] >= 0.2
    assert at[b"late"] >= 0.7
    # Released with the delay negated, as the plugin does.
    assert got[1][2]["x-delay"] == -200
    assert got[2][2]["x-delay"] == -700


def test_consistent_hash_spreads_by_weight(conn, cleanup):
    exchange = unique("chash")
    cleanup.append(("exchange", exchange))
    ch = conn.channel()
    try:
        ch.exchange_declare(exchange=exchange, exchange_type="x-consistent-hash")
    except ChannelClosedByBroker as e:
        if TARGET == "rabbitmq" and e.reply_code == 503:
            pytest.skip("rabbitmq_consistent_hash_exchange is not enabled")
        raise
    weights = [1, 2, 1]
    queues = []
    for w in weights:
        q = ch.queue_declare(queue="", exclusive=True).method.queue
        ch.queue_bind(queue=q, exchange=exchange, routing_key=str(w))
        queues.append(q)
    ch.confirm_delivery()
    n = 4000
    for i in range(n):
        ch.basic_publish(exchange, "key-%d" % i, b"")
    counts = [ch.queue_declare(queue=q, passive=True).method.message_count for q in queues]
    assert sum(counts) == n  # each message to exactly one queue
    for count, w in zip(counts, weights):
        share = w / sum(weights)
        assert abs(count / n - share) < 0.05, (counts, weights)
    # A key keeps its queue.
    for q in queues:
        ch.queue_purge(q)
    for _ in range(20):
        ch.basic_publish(exchange, "sticky", b"")
    counts = sorted(ch.queue_declare(queue=q, passive=True).method.message_count for q in queues)
    assert counts == [0, 0, 20]
