"""pika: publisher confirms, direct reply-to, basic.get, nack/reject, mandatory
returns, and channel-level errors."""
import uuid

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, UnroutableError

from conftest import TIMEOUT, connect, drain, params, pump, unique


def qcount(ch, queue):
    return ch.queue_declare(queue=queue, passive=True).method.message_count


# --- connection.start / tune as seen by the client ------------------------------
def test_connection_negotiation(conn):
    impl = conn._impl
    props = impl.server_properties
    caps = impl.server_capabilities
    # pika refuses confirm_delivery() unless both of these are advertised.
    assert conn.publisher_confirms_supported is True
    assert conn.basic_nack_supported is True
    assert conn.consumer_cancel_notify_supported is True
    assert conn.exchange_exchange_bindings_supported is True
    assert caps.get("authentication_failure_close") is True
    assert caps.get("connection.blocked") is True
    assert isinstance(props.get("product"), (bytes, str))
    assert impl.params.channel_max > 0
    assert impl.params.frame_max >= 4096


def test_bad_credentials_rejected():
    p = params()
    p.credentials = pika.PlainCredentials("guest", "definitely-wrong-" + uuid.uuid4().hex)
    p.connection_attempts = 1
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(p)


def test_unknown_vhost_refused():
    # RabbitMQ answers connection.open with connection.close 530 NOT_ALLOWED;
    # pika maps a close while opening to ProbableAccessDeniedError.
    p = params()
    p.virtual_host = unique("no-such-vhost")
    p.connection_attempts = 1
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as ei:
        pika.BlockingConnection(p)
    assert "530" in str(ei.value)


# --- Publisher confirms ---------------------------------------------------------
def test_confirms_one_by_one(conn, cleanup):
    queue = unique("confirm-1by1")
    cleanup.append(("queue", queue))
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    ch.confirm_delivery()
    for i in range(50):
        # BlockingChannel waits for the broker's basic.ack before returning;
        # a basic.nack would raise NackError.
        ch.basic_publish(exchange="", routing_key=queue, body=b"m%d" % i)
    assert qcount(ch, queue) == 50


def test_confirms_unroutable_mandatory_raises(conn, cleanup):
    exchange = unique("confirm-unroutable")
    cleanup.append(("exchange", exchange))
    ch = conn.channel()
    ch.exchange_declare(exchange=exchange, exchange_type="direct")
    ch.confirm_delivery()
    # non-mandatory unroutable: silently dropped but still acked
    ch.basic_publish(exchange=exchange, routing_key="nowhere", body=b"x")
    with pytest.raises(UnroutableError) as ei:
        ch.basic_publish(exchange=exchange, routing_key="nowhere", body=b"y", mandatory=True)
    returned = ei.value.messages
    assert len(returned) == 1
    assert returned[0].method.reply_code == 312
    assert returned[0].method.reply_text == "NO_ROUTE"
    assert returned[0].method.exchange == exchange
    assert returned[0].method.routing_key == "nowhere"
    assert returned[0].body == b"y"
    # channel is still usable
    assert ch.is_open
    ch.exchange_declare(exchange=exchange, exchange_type="direct", passive=True)


class SelectRun:
    """Run a SelectConnection scenario until finish() or timeout."""

    def __init__(self, timeout=TIMEOUT):
        self.timeout = timeout
        self.error = None
        self.finished = False

    def run(self, on_channel):
        def on_open(connection):
            connection.channel(on_open_callback=lambda chan: on_channel(chan, self))

        def on_open_error(connection, err):
            self.error = err
            connection.ioloop.stop()

        def on_closed(connection, reason):
            connection.ioloop.stop()

        self.conn = pika.SelectConnection(params(), on_open_callback=on_open,
                                          on_open_error_callback=on_open_error,
                                          on_close_callback=on_closed)

        def on_timeout():
            self.error = self.error or "timeout after %ss" % self.timeout
            self.close()

        self.conn.ioloop.call_later(self.timeout, on_timeout)
        self.conn.ioloop.start()
        if self.error:
            raise AssertionError(self.error)
        assert self.finished

    def close(self):
        if self.conn.is_open:
            self.conn.close()
        elif self.conn.is_closed:
            self.conn.ioloop.stop()

    def finish(self):
        self.finished = True
        self.close()

    def fail(self, msg):
        self.error = msg
        self.close()


class ConfirmTracker:
    def __init__(self):
        self.next_tag = 0
        self.outstanding = set()
        self.acked = set()
        self.nacked = set()
        self.multiple_seen = False

    def published(self):
        self.next_tag += 1
        self.outstanding.add(self.next_tag)

    def on_confirm(self, frame):
        m = frame.method
        if m.multiple:
            self.multiple_seen = True
            tags = {t for t in self.outstanding if t <= m.delivery_tag}
        else:
            tags = {m.delivery_tag} & self.outstanding
            if not tags:
                raise AssertionError("confirm for unknown tag %d" % m.delivery_tag)
        self.outstanding -= tags
        (self.acked if isinstance(m, pika.spec.Basic.Ack) else self.nacked).update(tags)


@pytest.mark.parametrize("batch", [1, 25, 100])
def test_confirms_batch_async(cleanup, batch):
    """Batches of `batch` publishes, waiting for all confirms of a batch
    (asynchronously, via SelectConnection) before publishing the next one."""
    queue = unique("confirm-batch")
    cleanup.append(("queue", queue))
    total = 200
    tr = ConfirmTracker()

    def on_channel(chan, run):
        def publish_batch():
            for _ in range(min(batch, total - tr.next_tag)):
                chan.basic_publish("", queue, b"payload-%d" % tr.next_tag)
                tr.published()

        def on_confirm(frame):
            try:
                tr.on_confirm(frame)
            except AssertionError as e:
                return run.fail(str(e))
            if not tr.outstanding:
                if tr.next_tag == total:
                    run.finish()
                else:
                    publish_batch()

        def on_declared(_frame):
            chan.confirm_delivery(ack_nack_callback=on_confirm,
                                  callback=lambda _f: publish_batch())

        chan.queue_declare(queue, callback=on_declared)

    SelectRun(timeout=30).run(on_channel)
    assert tr.acked == set(range(1, total + 1))
    assert not tr.nacked
    c = connect()
    try:
        assert qcount(c.channel(), queue) == total
    finally:
        c.close()


# --- Direct reply-to ------------------------------------------------------------
def test_direct_reply_to(conn, conn2, cleanup):
    rpc_queue = unique("rpc-direct")
    cleanup.append(("queue", rpc_queue))
    server = conn2.channel()
    server.queue_declare(queue=rpc_queue)
    seen_reply_to = []

    def on_request(chan, method, props, body):
        seen_reply_to.append(props.reply_to)
        chan.basic_publish("", props.reply_to, body.upper(),
                           pika.BasicProperties(correlation_id=props.correlation_id))
        chan.basic_ack(method.delivery_tag)

    server.basic_consume(rpc_queue, on_request)

    client = conn.channel()
    replies = []
    # must consume (no-ack) from the pseudo-queue before publishing with reply_to
    client.basic_consume("amq.rabbitmq.reply-to",
                         lambda c, m, p, b: replies.append((m, p, b)), auto_ack=True)
    for i in range(3):
        client.basic_publish("", rpc_queue, b"ping %d" % i,
                             pika.BasicProperties(reply_to="amq.rabbitmq.reply-to",
                                                  correlation_id="c%d" % i))
    pump([conn, conn2], lambda: len(replies) == 3, what="direct reply-to responses")
    assert sorted((p.correlation_id, b) for m, p, b in replies) == [
        ("c0", b"PING 0"), ("c1", b"PING 1"), ("c2", b"PING 2")]
    # the broker rewrites reply_to to a per-channel routable name
    for rt in seen_reply_to:
        assert rt.startswith("amq.rabbitmq.reply-to."), rt
        assert rt != "amq.rabbitmq.reply-to."
    assert len(set(seen_reply_to)) == 1
    for m, p, b in replies:
        assert m.exchange == ""
        assert m.routing_key == seen_reply_to[0]


def test_direct_reply_to_requires_consumer(conn):
    ch = conn.channel()
    # publishing with reply_to=amq.rabbitmq.reply-to before consuming from it
    ch.basic_publish("", unique("no-such-queue"), b"x",
                     pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare(queue=unique("after"), exclusive=True)
    assert ei.value.reply_code == 406
    assert conn.is_open
    ch2 = conn.channel()
    ch2.queue_declare(queue="", exclusive=True)


def test_direct_reply_to_requires_no_ack(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=False)
    assert ei.value.reply_code == 406
    assert conn.is_open


# --- basic.get -----------------------------------------------------------------
def test_basic_get(conn, cleanup):
    queue = unique("get")
    cleanup.append(("queue", queue))
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    ch.confirm_delivery()  # publish returns once the message is enqueued
    method, props, body = ch.basic_get(queue)
    assert method is None and props is None and body is None  # basic.get-empty

    headers = {"x-int": 42, "x-str": "hello", "x-bool": True, "x-nested": {"a": [1, "b"]}}
    sent_props = pika.BasicProperties(content_type="text/plain", content_encoding="utf-8",
                                      headers=headers, delivery_mode=2, priority=3,
                                      correlation_id="cid", reply_to="rq", expiration="60000",
                                      message_id="mid", timestamp=1700000000, type="t",
                                      user_id=params().credentials.username, app_id="lepus-tests")
    ch.basic_publish("", queue, b"first", sent_props)
    ch.basic_publish("", queue, b"")  # empty body
    big = bytes(range(256)) * 2048  # 512 KiB: spans many body frames
    ch.basic_publish("", queue, big)

    m, p, b = ch.basic_get(queue)
    assert b == b"first"
    assert m.message_count == 2
    assert m.redelivered is False
    assert m.exchange == "" and m.routing_key == queue
    for attr in ("content_type", "content_encoding", "delivery_mode", "priority",
                 "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
                 "type", "user_id", "app_id"):
        assert getattr(p, attr) == getattr(sent_props, attr), attr
    assert p.headers["x-int"] == 42
    assert p.headers["x-str"] in ("hello", b"hello")
    assert p.headers["x-bool"] is True
    ch.basic_ack(m.delivery_tag)

    m, p, b = ch.basic_get(queue, auto_ack=True)
    assert b == b"" and m.message_count == 1
    m, p, b = ch.basic_get(queue, auto_ack=True)
    assert b == big and m.message_count == 0
    assert ch.basic_get(queue) == (None, None, None)


# --- nack / reject ------------------------------------------------------------
def test_reject_and_nack_requeue(conn, cleanup):
    """reject/nack with and without requeue, single and multiple.

    Requeues are asynchronous in RabbitMQ (a basic.get straight after a
    basic.reject may not see the message yet), so the test consumes and waits
    for deliveries instead of polling with basic.get."""
    queue = unique("nack")
    cleanup.append(("queue", queue))
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    ch.basic_qos(prefetch_count=2)
    deliveries = []
    ch.basic_consume(queue, lambda c, m, p, b: deliveries.append((m, b)))

    def next_delivery(n):
        pump(conn, lambda: len(deliveries) >= n, what="delivery #%d" % n)
        return deliveries[n - 1]

    ch.basic_publish("", queue, b"a")
    m, b = next_delivery(1)
    assert (b, m.redelivered) == (b"a", False)
    ch.basic_reject(m.delivery_tag, requeue=True)
    m, b = next_delivery(2)
    assert (b, m.redelivered) == (b"a", True)
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, b = next_delivery(3)
    assert (b, m.redelivered) == (b"a", True)
    ch.basic_reject(m.delivery_tag, requeue=False)  # dropped for good

    ch.basic_publish("", queue, b"b")
    ch.basic_publish("", queue, b"c")
    m1, b1 = next_delivery(4)
    m2, b2 = next_delivery(5)
    assert (b1, b2) == (b"b", b"c")  # not "a": the rejected message is gone
    assert not m1.redelivered and not m2.redelivered
    ch.basic_nack(m2.delivery_tag, multiple=True, requeue=True)  # both requeued
    m3, b3 = next_delivery(6)
    m4, b4 = next_delivery(7)
    assert sorted([b3, b4]) == [b"b", b"c"]
    assert m3.redelivered and m4.redelivered
    ch.basic_nack(m4.delivery_tag, multiple=True, requeue=False)  # both dropped

    ch.basic_publish("", queue, b"sentinel")
    m, b = next_delivery(8)
    assert (b, m.redelivered) == (b"sentinel", False)
    ch.basic_ack(m.delivery_tag)
    assert len(deliveries) == 8


def test_nack_requeue_to_consumer(conn, cleanup):
    queue = unique("nack-consume")
    cleanup.append(("queue", queue))
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    ch.basic_qos(prefetch_count=1)
    ch.basic_publish("", queue, b"job")
    seen = []

    def cb(c, m, p, b):
        seen.append(m.redelivered)
        if len(seen) < 3:
            c.basic_nack(m.delivery_tag, requeue=True)
        else:
            c.basic_ack(m.delivery_tag)

    ch.basic_consume(queue, cb)
    pump(conn, lambda: len(seen) == 3, what="3 deliveries of a nacked message")
    assert seen == [False, True, True]
    assert qcount(ch, queue) == 0


def test_reject_to_dead_letter_exchange(conn, cleanup):
    dlx = unique("dlx")
    queue = unique("with-dlx")
    cleanup += [("exchange", dlx), ("queue", queue)]
    ch = conn.channel()
    ch.exchange_declare(dlx, "fanout")
    dlq = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(queue, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", queue, b"poison")
    m, _, _ = ch.basic_get(queue)
    ch.basic_reject(m.delivery_tag, requeue=False)
    got = []
    ch.basic_consume(dlq, lambda c, m, p, b: got.append((p, b)), auto_ack=True)
    pump(conn, lambda: got, what="dead-lettered message")
    props, body = got[0]
    assert body == b"poison"
    death = props.headers["x-death"][0]
    assert death["reason"] in ("rejected", b"rejected")
    assert death["queue"] in (queue, queue.encode())


# --- mandatory / basic.return -------------------------------------------------
def test_mandatory_returned_on_return_callback(conn, cleanup):
    exchange = unique("mandatory")
    cleanup.append(("exchange", exchange))
    ch = conn.channel()
    ch.exchange_declare(exchange, "topic")
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, p, b)))
    ch.basic_publish(exchange, "no.route", b"bounce", pika.BasicProperties(
        headers={"k": "v"}, message_id="m1"), mandatory=True)
    ch.basic_publish("", unique("no-queue"), b"bounce2", mandatory=True)
    pump(conn, lambda: len(returned) == 2, what="basic.return")
    m, p, b = returned[0]
    assert (m.reply_code, m.reply_text, m.exchange, m.routing_key, b) == (
        312, "NO_ROUTE", exchange, "no.route", b"bounce")
    assert p.message_id == "m1" and p.headers["k"] in ("v", b"v")
    assert returned[1][0].reply_code == 312 and returned[1][2] == b"bounce2"

    # a routable mandatory message is delivered, not returned
    ch2 = conn.channel()
    ch2.confirm_delivery()
    q = ch2.queue_declare("", exclusive=True).method.queue
    ch2.queue_bind(q, exchange, "no.#")
    ch2.basic_publish(exchange, "no.route", b"ok", mandatory=True)  # no UnroutableError
    assert drain(ch2, q) == [b"ok"]
    assert len(returned) == 2


# --- errors --------------------------------------------------------------------
def test_passive_declare_missing_queue_404(conn):
    ch = conn.channel()
    missing = unique("missing")
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare(queue=missing, passive=True)
    assert ei.value.reply_code == 404
    assert "NOT_FOUND" in ei.value.reply_text
    assert ch.is_closed
    assert conn.is_open
    # the connection is still usable
    ch2 = conn.channel()
    ch2.confirm_delivery()
    q = ch2.queue_declare("", exclusive=True).method.queue
    ch2.basic_publish("", q, b"still alive")
    assert drain(ch2, q) == [b"still alive"]


def test_passive_declare_missing_exchange_404(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.exchange_declare(unique("missing-x"), passive=True)
    assert ei.value.reply_code == 404
    assert conn.is_open


def test_publish_to_missing_exchange_closes_channel(conn):
    ch = conn.channel()
    ch.basic_publish(unique("missing-x"), "rk", b"x")
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare("", exclusive=True)  # next sync method sees the close
    assert ei.value.reply_code == 404
    assert conn.is_open


def test_channel_error_does_not_kill_connection(conn, cleanup):
    exchange = unique("kind")
    cleanup.append(("exchange", exchange))
    good = conn.channel()
    bad = conn.channel()
    good.confirm_delivery()
    good.exchange_declare(exchange, "direct")
    q = good.queue_declare("", exclusive=True).method.queue
    good.queue_bind(q, exchange, "k")

    # redeclare with another type: 406 PRECONDITION_FAILED on that channel only
    with pytest.raises(ChannelClosedByBroker) as ei:
        bad.exchange_declare(exchange, "fanout")
    assert ei.value.reply_code == 406
    assert bad.is_closed and good.is_open and conn.is_open

    # acking an unknown delivery tag: 406 arrives asynchronously
    bad2 = conn.channel()
    bad2.basic_ack(delivery_tag=999)
    with pytest.raises(ChannelClosedByBroker) as ei:
        bad2.queue_declare("", exclusive=True)
    assert ei.value.reply_code == 406
    assert good.is_open and conn.is_open

    good.basic_publish(exchange, "k", b"after errors")
    assert drain(good, q) == [b"after errors"]


def test_queue_redeclare_different_args_406(conn):
    ch = conn.channel()
    name = unique("args")
    ch.queue_declare(name, exclusive=True, auto_delete=True)
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare(name, exclusive=True, auto_delete=True,
                         arguments={"x-max-length": 5})
    assert ei.value.reply_code == 406
    assert conn.is_open


def test_consumer_cancel_notification(conn, conn2, cleanup):
    queue = unique("cancel-notify")
    cleanup.append(("queue", queue))
    ch = conn.channel()
    ch.queue_declare(queue)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(queue, lambda *a: None, auto_ack=True)
    conn2.channel().queue_delete(queue)
    pump(conn, lambda: cancelled, what="server-sent basic.cancel")
    assert cancelled == [tag]
    assert ch.is_open
