"""RabbitMQ tutorials 1-6, written the way the official pika tutorials are."""
import threading
import uuid

import pika

from conftest import connect, drain, pump, unique


# --- Tutorial 1: "Hello World!" ------------------------------------------------
def test_t1_hello_world(conn, ch, cleanup):
    queue = unique("hello")
    cleanup.append(("queue", queue))
    ok = ch.queue_declare(queue=queue)
    assert ok.method.queue == queue
    assert ok.method.message_count == 0
    assert ok.method.consumer_count == 0

    ch.basic_publish(exchange="", routing_key=queue, body=b"Hello World!")

    got = []

    def callback(chan, method, properties, body):
        got.append((method, properties, body))

    tag = ch.basic_consume(queue=queue, on_message_callback=callback, auto_ack=True)
    assert tag
    pump(conn, lambda: got, what="hello world delivery")
    method, props, body = got[0]
    assert body == b"Hello World!"
    assert method.exchange == ""
    assert method.routing_key == queue
    assert method.redelivered is False
    assert method.consumer_tag == tag
    ch.basic_cancel(tag)
    # queue is now empty (auto-ack)
    assert ch.queue_declare(queue=queue, passive=True).method.message_count == 0


# --- Tutorial 2: Work queues ---------------------------------------------------
def test_t2_work_queues_fair_dispatch(conn, conn2, cleanup):
    """prefetch_count=1 + manual acks: a busy worker gets no more messages."""
    queue = unique("task")
    cleanup.append(("queue", queue))
    producer = conn.channel()
    producer.queue_declare(queue=queue, durable=True)

    slow_conn, fast_conn = conn, conn2
    slow = slow_conn.channel()
    fast = fast_conn.channel()
    slow.basic_qos(prefetch_count=1)
    fast.basic_qos(prefetch_count=1)

    slow_got, fast_got = [], []

    def on_slow(chan, method, props, body):
        slow_got.append((method.delivery_tag, body))  # "busy": do not ack yet

    def on_fast(chan, method, props, body):
        fast_got.append(body)
        chan.basic_ack(delivery_tag=method.delivery_tag)

    slow.basic_consume(queue=queue, on_message_callback=on_slow)
    fast.basic_consume(queue=queue, on_message_callback=on_fast)

    n = 10
    for i in range(n):
        producer.basic_publish(
            exchange="",
            routing_key=queue,
            body=("task %d" % i).encode(),
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )

    pump([slow_conn, fast_conn], lambda: len(slow_got) + len(fast_got) == n,
         what="all tasks dispatched")
    # Round-robin without prefetch would give the slow worker n/2 messages.
    assert len(slow_got) == 1, (slow_got, fast_got)
    assert len(fast_got) == n - 1
    bodies = sorted([b for _, b in slow_got] + fast_got)
    assert bodies == sorted(("task %d" % i).encode() for i in range(n))

    # The slow worker dies without acking: its message is redelivered.
    slow_body = slow_got[0][1]
    slow_conn.close()
    pump(fast_conn, lambda: len(fast_got) == n, what="redelivery after worker death")
    assert fast_got[-1] == slow_body
    ok = fast.queue_declare(queue=queue, durable=True, passive=True)
    assert ok.method.message_count == 0


def test_t2_unacked_message_redelivered_flag(conn, conn2, cleanup):
    queue = unique("task-redeliver")
    cleanup.append(("queue", queue))
    ch1 = conn.channel()
    ch1.queue_declare(queue=queue)
    ch1.basic_publish(exchange="", routing_key=queue, body=b"work")
    got = []
    ch1.basic_consume(queue=queue, on_message_callback=lambda c, m, p, b: got.append(m))
    pump(conn, lambda: got, what="first delivery")
    assert got[0].redelivered is False
    ch1.close()  # closing the channel requeues unacked deliveries

    ch2 = conn2.channel()
    got2 = []
    ch2.basic_consume(queue=queue, on_message_callback=lambda c, m, p, b: got2.append((m, b)))
    pump(conn2, lambda: got2, what="redelivery")
    assert got2[0][1] == b"work"
    assert got2[0][0].redelivered is True
    ch2.basic_ack(got2[0][0].delivery_tag)


# --- Tutorial 3: Publish/Subscribe ---------------------------------------------
def test_t3_fanout_pubsub(conn, conn2, cleanup):
    exchange = unique("logs")
    cleanup.append(("exchange", exchange))
    pub = conn.channel()
    pub.exchange_declare(exchange=exchange, exchange_type="fanout")

    # message published before anyone binds is dropped by a fanout exchange
    pub.basic_publish(exchange=exchange, routing_key="", body=b"lost")

    subscribers = []
    for c in (conn, conn2):
        chan = c.channel()
        result = chan.queue_declare(queue="", exclusive=True)
        qname = result.method.queue
        assert qname.startswith("amq.gen-"), qname
        chan.queue_bind(exchange=exchange, queue=qname)
        got = []
        chan.basic_consume(queue=qname, auto_ack=True,
                           on_message_callback=lambda ch_, m, p, b, got=got: got.append(b))
        subscribers.append((chan, qname, got))
    assert subscribers[0][1] != subscribers[1][1]

    for i in range(3):
        pub.basic_publish(exchange=exchange, routing_key="ignored.%d" % i,
                          body=("log %d" % i).encode())
    pump([conn, conn2], lambda: all(len(s[2]) >= 3 for s in subscribers),
         what="fanout deliveries")
    for _, _, got in subscribers:
        assert got == [b"log 0", b"log 1", b"log 2"]

    # exclusive server-named queue is not accessible from another connection
    other = connect()
    try:
        och = other.channel()
        try:
            och.queue_declare(queue=subscribers[0][1], passive=True)
            raise AssertionError("exclusive queue visible from another connection")
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 405  # RESOURCE_LOCKED
    finally:
        other.close()

    # exclusive queues go away with their connection
    qname = subscribers[1][1]
    conn2.close()
    chk = conn.channel()
    try:
        chk.queue_declare(queue=qname, passive=True)
        raise AssertionError("exclusive queue survived its connection")
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404


# --- Tutorial 4: Routing -------------------------------------------------------
def test_t4_direct_routing(conn, cleanup):
    exchange = unique("direct_logs")
    cleanup.append(("exchange", exchange))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare(exchange=exchange, exchange_type="direct")
    q_err = ch.queue_declare(queue="", exclusive=True).method.queue
    q_all = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(exchange=exchange, queue=q_err, routing_key="error")
    for sev in ("info", "warning", "error"):
        ch.queue_bind(exchange=exchange, queue=q_all, routing_key=sev)

    for sev in ("info", "warning", "error", "debug"):
        ch.basic_publish(exchange=exchange, routing_key=sev, body=("%s msg" % sev).encode())

    assert drain(ch, q_err) == [b"error msg"]
    assert drain(ch, q_all) == [b"info msg", b"warning msg", b"error msg"]

    # unbind stops routing
    ch.queue_unbind(queue=q_all, exchange=exchange, routing_key="info")
    ch.basic_publish(exchange=exchange, routing_key="info", body=b"info 2")
    ch.basic_publish(exchange=exchange, routing_key="warning", body=b"warning 2")
    assert drain(ch, q_all) == [b"warning 2"]


def test_t4_direct_consumer_routing_key(conn, cleanup):
    exchange = unique("direct_logs")
    cleanup.append(("exchange", exchange))
    ch = conn.channel()
    ch.exchange_declare(exchange=exchange, exchange_type="direct")
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(exchange=exchange, queue=q, routing_key="error")
    got = []
    ch.basic_consume(queue=q, auto_ack=True,
                     on_message_callback=lambda c, m, p, b: got.append((m.exchange, m.routing_key, b)))
    ch.basic_publish(exchange=exchange, routing_key="error", body=b"disk full")
    pump(conn, lambda: got, what="direct delivery")
    assert got == [(exchange, "error", b"disk full")]


# --- Tutorial 5: Topics --------------------------------------------------------
def test_t5_topic_routing(conn, cleanup):
    exchange = unique("topic_logs")
    cleanup.append(("exchange", exchange))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare(exchange=exchange, exchange_type="topic")
    bindings = {
        "q1": ["*.orange.*"],
        "q2": ["*.*.rabbit", "lazy.#"],
        "q_all": ["#"],
        "q_mid": ["a.#.z"],
    }
    queues = {}
    for name, keys in bindings.items():
        q = ch.queue_declare(queue="", exclusive=True).method.queue
        queues[name] = q
        for k in keys:
            ch.queue_bind(exchange=exchange, queue=q, routing_key=k)

    keys = [
        "quick.orange.rabbit",       # q1 q2
        "lazy.orange.elephant",      # q1 q2
        "quick.orange.fox",          # q1
        "lazy.brown.fox",            # q2
        "lazy.pink.rabbit",          # q2 (matches two bindings, delivered once)
        "quick.brown.fox",           # none
        "orange",                    # none
        "quick.orange.male.rabbit",  # none
        "lazy.orange.male.rabbit",   # q2
        "lazy",                      # q2 ('#' matches zero words)
        "a.z",                       # q_mid
        "a.b.c.z",                   # q_mid
        "a.b",                       # none
    ]
    for k in keys:
        try:
            ch.basic_publish(exchange=exchange, routing_key=k, body=k.encode())
        except pika.exceptions.UnroutableError:
            raise AssertionError("non-mandatory publish reported unroutable")

    got = {name: [b.decode() for b in drain(ch, q)] for name, q in queues.items()}
    assert got["q1"] == ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"]
    assert got["q2"] == ["quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox",
                         "lazy.pink.rabbit", "lazy.orange.male.rabbit", "lazy"]
    assert got["q_all"] == keys
    assert got["q_mid"] == ["a.z", "a.b.c.z"]


# --- Tutorial 6: RPC -----------------------------------------------------------
def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def test_t6_rpc(conn, conn2, cleanup):
    rpc_queue = unique("rpc_queue")
    cleanup.append(("queue", rpc_queue))

    # server (its own connection, as in the tutorial's rpc_server.py)
    server = conn2.channel()
    server.queue_declare(queue=rpc_queue)
    server.basic_qos(prefetch_count=1)
    served = []

    def on_request(chan, method, props, body):
        n = int(body)
        served.append(n)
        chan.basic_publish(exchange="", routing_key=props.reply_to,
                           properties=pika.BasicProperties(correlation_id=props.correlation_id),
                           body=str(fib(n)).encode())
        chan.basic_ack(delivery_tag=method.delivery_tag)

    server.basic_consume(queue=rpc_queue, on_message_callback=on_request)

    # client
    client = conn.channel()
    callback_queue = client.queue_declare(queue="", exclusive=True).method.queue
    responses = {}

    def on_response(chan, method, props, body):
        responses[props.correlation_id] = int(body)

    client.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=True)

    requests = {}
    for n in (0, 1, 10, 30):
        corr_id = str(uuid.uuid4())
        requests[corr_id] = n
        client.basic_publish(exchange="", routing_key=rpc_queue,
                             properties=pika.BasicProperties(reply_to=callback_queue,
                                                             correlation_id=corr_id),
                             body=str(n).encode())
    pump([conn, conn2], lambda: len(responses) == len(requests), what="RPC responses")
    for corr_id, n in requests.items():
        assert responses[corr_id] == fib(n)
    assert sorted(served) == [0, 1, 10, 30]


def test_t6_rpc_threaded_server(conn, cleanup):
    """RPC server in a thread with its own connection (start_consuming loop)."""
    rpc_queue = unique("rpc_queue")
    cleanup.append(("queue", rpc_queue))
    ready = threading.Event()
    errors = []
    holder = {}

    def server_main():
        try:
            c = connect()
            holder["conn"] = c
            s = c.channel()
            s.queue_declare(queue=rpc_queue, auto_delete=True)
            s.basic_qos(prefetch_count=1)

            def on_request(chan, method, props, body):
                chan.basic_publish("", props.reply_to, str(fib(int(body))).encode(),
                                   pika.BasicProperties(correlation_id=props.correlation_id))
                chan.basic_ack(method.delivery_tag)
                if body == b"20":
                    chan.stop_consuming()

            s.basic_consume(queue=rpc_queue, on_message_callback=on_request)
            ready.set()
            s.start_consuming()
            c.close()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
            ready.set()

    t = threading.Thread(target=server_main, daemon=True)
    t.start()
    assert ready.wait(10), "server did not start"
    assert not errors, errors

    client = conn.channel()
    cbq = client.queue_declare(queue="", exclusive=True).method.queue
    resp = {}
    client.basic_consume(queue=cbq, auto_ack=True,
                         on_message_callback=lambda c, m, p, b: resp.__setitem__(p.correlation_id, b))
    corr = str(uuid.uuid4())
    client.basic_publish("", rpc_queue, b"20",
                         pika.BasicProperties(reply_to=cbq, correlation_id=corr))
    pump(conn, lambda: corr in resp, what="threaded RPC response")
    assert resp[corr] == b"6765"
    t.join(10)
    assert not t.is_alive()
    assert not errors, errors
