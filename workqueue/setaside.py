"""Where a failed task goes: ``<queue>.retry`` to be tried again later, ``<queue>.failed`` once its attempts are
used up. Each copy is published with publisher confirms on a channel of its own and waited for (within a bound)
before the caller acks the original: a worker that dies between the two leaves a duplicate at worst, never a loss.

The queues of our own are declared on first use on a connection, so a run in which no task fails creates none:

- ``<queue>.retry``: durable; ``x-dead-letter-exchange: ""`` and ``x-dead-letter-routing-key: <queue>``, so a copy
  whose per-message ``expiration`` (the retry delay) has passed goes back to the task queue. For a quorum task
  queue it is quorum too, with ``x-dead-letter-strategy: at-least-once`` and ``x-overflow: reject-publish``: the
  broker keeps the copy until the task queue has confirmed it.
- ``<queue>.failed``: durable, of the task queue's type; a quorum one on RabbitMQ 4 with ``x-delivery-limit: -1``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions as px
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic

from workqueue import attempts, broker
from workqueue.report import Failure

CONFIRM_TIMEOUT = 15.0  # seconds for the broker to confirm a copy; then the connection is given up


class Unconfirmed(px.AMQPConnectionError):
    """A copy was not stored (no confirm in time, a nack, no queue took it): the original is not to be acked.
    The connection is dropped, so the broker gives the original to a worker again."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "a copy of a task was not confirmed"


def broker_major(connection: pika.BlockingConnection) -> int:
    """The broker's major version (3, 4), from what it said when the connection opened; 0 if it did not say."""
    properties = getattr(getattr(connection, "_impl", connection), "server_properties", None) or {}
    return attempts.major(properties.get("version"))


def declare_failed(connection: pika.BlockingConnection, queue: str, queue_type: str,
                   params: pika.ConnectionParameters) -> BlockingChannel:
    """Declare ``<queue>.failed``; an open channel. One declared otherwise before (by another RabbitMQ version:
    the delivery limit) is taken as it is."""
    name = attempts.failed_queue(queue)
    channel = connection.channel()
    try:
        channel.queue_declare(name, durable=True,
                              arguments=attempts.failed_arguments(queue_type, broker_major(connection)))
        return channel
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code != 406 or "x-delivery-limit" not in exc.reply_text:
            raise Failure(broker.explain(exc, params, name)) from None
    channel = connection.channel()
    channel.queue_declare(name, passive=True)
    return channel


class Confirmed:
    """A channel in confirm mode on a BlockingConnection: ``publish`` returns once the broker has stored the
    message, and raises :class:`Unconfirmed` otherwise, within ``timeout``. ``silent()`` (if given) is asked
    while waiting, and drops a connection whose broker has gone silent."""

    def __init__(self, connection: pika.BlockingConnection, channel: BlockingChannel,
                 timeout: float = CONFIRM_TIMEOUT, silent: Callable[[], bool] | None = None) -> None:
        self.connection, self.channel = connection, channel
        self.timeout, self.silent = timeout, silent
        self._impl = channel._impl  # pika's own channel: the blocking one has no bound on a confirm's wait
        self._answers: list[Any] = []
        self._returned = False
        self._impl.add_on_return_callback(self._on_return)
        selected: list[Any] = []
        self._impl.confirm_delivery(ack_nack_callback=self._answers.append, callback=selected.append)
        self._wait(lambda: bool(selected), "the broker did not turn publisher confirms on")

    def publish(self, queue: str, body: bytes, properties: pika.BasicProperties) -> None:
        self._answers.clear()
        self._returned = False
        self._impl.basic_publish("", queue, body, properties, mandatory=True)
        self._wait(lambda: bool(self._answers), f"no confirm for the copy sent to {queue!r} "
                   f"within {self.timeout:g} s")
        if isinstance(self._answers[-1].method, Basic.Nack):
            self._give_up(f"the broker refused to store the copy sent to {queue!r} (a nack)")
        if self._returned:
            self._give_up(f"no queue {queue!r} took the copy sent to it (was it deleted?)")

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._returned = True

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not done():
            if not self.channel.is_open:
                raise Unconfirmed(f"{what}: its channel closed")
            if time.monotonic() >= deadline:
                self._give_up(what)
            self.connection.process_data_events(time_limit=0.1)
            if self.silent and self.silent():
                self.connection.process_data_events(time_limit=0)  # raises what closed it

    def _give_up(self, why: str) -> None:
        """Drop the connection (a broker that does not confirm may not answer a close either), and say why."""
        impl = self.connection._impl
        if not impl.is_closed:
            impl._terminate_stream(Unconfirmed(why))
        raise Unconfirmed(why)


class SetAside:
    """The queues of our own for one connection, declared at the first failure on it, and a channel with
    confirms to them. ``retry`` and ``fail`` return once the copy is stored; then the original may be acked."""

    def __init__(self, connection: pika.BlockingConnection, queue: str, policy: attempts.Policy,
                 params: pika.ConnectionParameters, silent: Callable[[], bool] | None = None) -> None:
        self.connection, self.queue, self.policy, self.params = connection, queue, policy, params
        self.silent = silent
        self._confirmed: Confirmed | None = None

    def retry(self, body: bytes, properties: pika.BasicProperties, attempt: int, error: str) -> None:
        """A copy in ``<queue>.retry``, back in the queue after the policy's delay."""
        copy = attempts.retry_copy(properties, attempt, error, attempts.now(), self.policy.delay)
        self._ready().publish(attempts.retry_queue(self.queue), body, copy)

    def fail(self, body: bytes, properties: pika.BasicProperties, attempt: int, error: str) -> None:
        """A copy in ``<queue>.failed``, with how many attempts, the last error and when."""
        copy = attempts.failed_copy(properties, attempt, error, attempts.now())
        self._ready().publish(attempts.failed_queue(self.queue), body, copy)

    def _ready(self) -> Confirmed:
        if self._confirmed is None or not self._confirmed.channel.is_open:
            channel = declare_failed(self.connection, self.queue, self.policy.queue_type, self.params)
            if self.policy.attempts > 1:
                name = attempts.retry_queue(self.queue)
                try:
                    channel.queue_declare(name, durable=True,
                                          arguments=attempts.retry_arguments(self.queue, self.policy.queue_type))
                except px.ChannelClosedByBroker as exc:
                    raise Failure(broker.explain(exc, self.params, name)) from None
            self._confirmed = Confirmed(self.connection, channel, silent=self.silent)
        return self._confirmed
