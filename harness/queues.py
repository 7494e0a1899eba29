"""A broker's queues, each call on a connection of its own, for the tests and the benchmark. ``url``: a
broker's URL, or a cluster's nodes' URLs separated by ';' (the first that answers is used)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pika
import pika.exceptions
import pika.spec

from workqueue import cli, nodes


def connect(url: str, timeout: float | None = None) -> pika.BlockingConnection:
    """A connection to the first node that answers; ``nodes.NoneAnswered`` if none does."""
    return nodes.Nodes(url.split(";")).connect(start=0, timeout=timeout)


@contextmanager
def channel(url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A channel on a connection of its own, closed afterwards."""
    connection = connect(url)
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def declare(name: str, url: str, queue_type: str = "classic") -> None:
    """A durable queue, declared as the scripts declare it."""
    with channel(url) as ch:
        ch.queue_declare(name, durable=True, arguments=cli.queue_arguments(queue_type))


def delete(name: str, url: str) -> None:
    with channel(url) as ch:
        ch.queue_delete(name)


def depth(name: str, url: str) -> int:
    """Messages ready in the queue (a passive declare: not unacknowledged ones)."""
    with channel(url) as ch:
        count: int = ch.queue_declare(name, passive=True).method.message_count
        return count


def consumers(name: str, url: str) -> int:
    with channel(url) as ch:
        count: int = ch.queue_declare(name, passive=True).method.consumer_count
        return count


def drain(name: str, url: str, wait: float = 30) -> list[tuple[bytes, pika.spec.BasicProperties, bool]]:
    """Take every ready message from the queue: (body, properties, redelivered). Right after a node's restart
    a durable queue may answer 404 while the node still recovers it: asked again for up to ``wait`` seconds
    (a queue really lost still fails)."""
    deadline = time.monotonic() + wait
    while True:
        got: list[tuple[bytes, pika.spec.BasicProperties, bool]] = []
        try:
            with channel(url) as ch:
                while True:
                    method, props, body = ch.basic_get(name, auto_ack=True)
                    if method is None:
                        return got
                    got.append((body, props, method.redelivered))
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404 or got or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
