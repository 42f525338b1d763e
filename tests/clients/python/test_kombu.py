"""kombu (py-amqp transport), used the way Celery uses it."""
import socket
import time
import uuid

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from conftest import AMQP_URL, TIMEOUT, unique


def drain_until(conn, cond, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not cond():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timed out waiting for kombu message")
        try:
            conn.drain_events(timeout=min(remaining, 1.0))
        except socket.timeout:
            pass


@pytest.mark.parametrize("scheme", ["amqp", "pyamqp"])
def test_kombu_producer_consumer_roundtrip(scheme):
    url = scheme + AMQP_URL[AMQP_URL.index("://"):]
    exchange = Exchange(unique("kombu-x"), type="direct", durable=False, auto_delete=True)
    queue = Queue(unique("kombu-q"), exchange, routing_key="celery.task",
                  durable=False, auto_delete=True)
    task_id = str(uuid.uuid4())
    received = []

    with Connection(url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=3)
        assert conn.transport.driver_type == "amqp"
        # Celery's task message shape: json body + headers + correlation id
        with conn.channel() as pchan:
            producer = Producer(pchan, exchange=exchange, serializer="json")
            producer.publish(
                [[2, 3], {}, {"callbacks": None}],
                routing_key="celery.task",
                declare=[queue],
                headers={"lang": "py", "task": "tasks.add", "id": task_id, "retries": 0},
                correlation_id=task_id,
                reply_to=unique("reply"),
                delivery_mode=2,
                priority=0,
                retry=True,
            )

        def on_message(body, message):
            received.append((body, message))
            message.ack()

        with conn.channel() as cchan:
            with Consumer(cchan, queues=[queue], callbacks=[on_message], accept=["json"],
                          prefetch_count=4):
                drain_until(conn, lambda: received)

    body, message = received[0]
    assert body == [[2, 3], {}, {"callbacks": None}]
    assert message.content_type == "application/json"
    assert message.headers["task"] == "tasks.add"
    assert message.headers["id"] == task_id
    assert message.properties["correlation_id"] == task_id
    assert message.delivery_info["routing_key"] == "celery.task"
    assert message.delivery_info["exchange"] == exchange.name


def test_kombu_simple_queue_and_reject():
    name = unique("kombu-simple")
    with Connection(AMQP_URL, connect_timeout=10) as conn:
        q = conn.SimpleQueue(name, queue_opts={"auto_delete": False, "durable": False})
        try:
            q.put({"n": 1})
            q.put({"n": 2})
            m1 = q.get(block=True, timeout=TIMEOUT)
            assert m1.payload == {"n": 1}
            m1.requeue()
            got = []
            for _ in range(2):
                m = q.get(block=True, timeout=TIMEOUT)
                got.append(m.payload["n"])
                m.ack()
            assert sorted(got) == [1, 2]
            with pytest.raises(q.Empty):
                q.get(block=False)
        finally:
            q.close()  # cancel the consumer first, then delete the queue
            with conn.channel() as c:
                c.queue_delete(name)
                c.exchange_delete(name)  # SimpleQueue declares a same-named exchange


def test_kombu_server_properties():
    with Connection(AMQP_URL, connect_timeout=10) as conn:
        conn.connect()
        c = conn.connection  # amqp.Connection
        caps = c.server_capabilities
        assert caps.get("consumer_cancel_notify") is True
        assert caps.get("connection.blocked") is True
        assert c.frame_max >= 4096
        assert c.heartbeat is not None
