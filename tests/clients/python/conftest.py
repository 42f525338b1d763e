"""Shared fixtures for the pika / kombu client-compatibility suite.

Every test talks to the broker named by AMQP_URL (default: local guest).
Names are randomised so the suite can share a broker with other tests.
Nothing here sleeps to synchronise: helpers pump the client's I/O loop until
a condition holds, and fail after a timeout.
"""
import os
import time
import uuid

import pika
import pytest

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
TIMEOUT = float(os.environ.get("AMQP_TEST_TIMEOUT", "10"))
# Which broker AMQP_URL points at: "lepus" (default) or "rabbitmq" (3.10, to
# check the expectations there); tests of what RabbitMQ 3.10 lacks skip on it.
TARGET = os.environ.get("CLIENTS_TARGET", "lepus")
lepus_only = pytest.mark.skipif(TARGET == "rabbitmq", reason="RabbitMQ 3.10 lacks this feature")


def unique(prefix):
    return "lepus-py-%s-%s" % (prefix, uuid.uuid4().hex[:10])


def params():
    p = pika.URLParameters(AMQP_URL)
    p.connection_attempts = 3
    p.retry_delay = 1
    p.socket_timeout = 10
    p.blocked_connection_timeout = 30
    return p


def connect():
    return pika.BlockingConnection(params())


def pump(connections, cond, timeout=TIMEOUT, what="condition"):
    """Drive the I/O of one or more BlockingConnections until cond() is true."""
    if not isinstance(connections, (list, tuple)):
        connections = [connections]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        for c in connections:
            c.process_data_events(time_limit=0.02)
    return True


def drain(channel, queue, limit=1000):
    """basic_get (auto-ack) every message currently in queue; return bodies."""
    out = []
    for _ in range(limit):
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)
    raise AssertionError("queue %s did not drain" % queue)


@pytest.fixture
def conn():
    c = connect()
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def conn2():
    c = connect()
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def cleanup():
    """Collect ('queue'|'exchange', name) pairs and delete them after the test."""
    items = []
    yield items
    if not items:
        return
    try:
        c = connect()
    except Exception:
        return
    try:
        for kind, name in items:
            try:
                chan = c.channel()
                if kind == "queue":
                    chan.queue_delete(name)
                else:
                    chan.exchange_delete(name)
                chan.close()
            except Exception:
                pass
    finally:
        if c.is_open:
            c.close()
