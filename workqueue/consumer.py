"""Consuming the way a long-running worker must.

Tasks run on the main thread, inside ``channel.start_consuming()``, as in the tutorial. pika's
BlockingConnection answers heartbeats only while some thread is inside pika, so a second thread, the
keeper, looks after the connection while a task runs: the main thread hands pika over (a lock) when
it calls the task and takes it back when the task returns, and the keeper, waking every fraction of
the heartbeat interval, calls ``process_data_events(time_limit=0)`` under that lock while a task runs.
The task's ``ch.basic_ack(...)`` takes the same lock. Nothing crosses threads per task, so a worker of
short tasks runs at the plain tutorial's speed; a task of any length keeps its connection.

When a node goes away the worker says so, reconnects with a growing, bounded backoff to the next
URL that answers (the nodes of a cluster, in turn), declares again and goes on. A task's ack whose
channel has closed is dropped: the broker has put that task back in the queue already.

Signals: Ctrl+C (SIGINT) stops at once and leaves the running task unacked, so the broker gives it to
another worker. SIGTERM (``docker stop``) stops taking tasks, lets the running one finish and be
acked, then exits 0. A second signal stops at once. A task that raises stops the worker the same
way as Ctrl+C, with one ``error:`` line.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions as px
from pika.adapters.blocking_connection import BlockingChannel

from workqueue import broker, nodes
from workqueue.cli import Failure, warn

Callback = Callable[[Any, Any, Any, bytes], None]  # (ch, method, properties, body), as in the tutorial

TICK = 0.5  # seconds; how often an idle worker looks for a SIGTERM
FIRST_DELAY = 0.5  # seconds before the first reconnect attempt; doubles on each failed round
MAX_DELAY = 10.0


class TaskChannel:
    """What a task receives as ``ch``: the channel methods a task may call, under the worker's lock on
    pika (the keeper may be inside it). If the channel the message came on has closed meanwhile, the
    call is dropped: the broker has already put that message back in the queue."""

    def __init__(self, worker: Worker, channel: BlockingChannel) -> None:
        self._worker = worker
        self._channel = channel

    @property
    def is_open(self) -> bool:
        return bool(self._channel.is_open)

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        with self._worker.pika:
            if self._channel.is_open:
                try:
                    self._channel.basic_ack(delivery_tag, multiple)
                except (px.AMQPConnectionError, px.AMQPChannelError) as exc:
                    self._worker.lost = exc  # the main thread raises it once the task returns

    def basic_nack(self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True) -> None:
        with self._worker.pika:
            if self._channel.is_open:
                try:
                    self._channel.basic_nack(delivery_tag, multiple, requeue)
                except (px.AMQPConnectionError, px.AMQPChannelError) as exc:
                    self._worker.lost = exc

    def basic_reject(self, delivery_tag: int = 0, requeue: bool = True) -> None:
        self.basic_nack(delivery_tag, False, requeue)


class NoneAnswered(Failure):
    """No node would open a connection."""


def consume(urls: list[str], declare: Callable[[Any], None], queue_name: str, callback: Callback) -> None:
    """Run ``declare(channel)``, then ``callback(ch, method, properties, body)`` for each message of
    ``queue_name``, until a signal stops the worker. Raises Failure for what a user must fix."""
    Worker(nodes.Nodes(urls), declare, queue_name, callback).run()


class Worker:
    def __init__(self, brokers: nodes.Nodes, declare: Callable[[Any], None], queue_name: str,
                 callback: Callback) -> None:
        self.nodes = brokers
        self.declare = declare
        self.queue = queue_name
        self.callback = callback
        self.pika = threading.Lock()  # held by whichever thread is inside pika
        self.connection: pika.BlockingConnection | None = None
        self.in_task = False  # a task is running: the keeper looks after the connection
        self.lost: BaseException | None = None  # what the keeper (or an ack) saw go wrong during a task
        self.stopping = False  # SIGTERM: finish the running task, take no more

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        connection: pika.BlockingConnection | None = self._connect(0)
        threading.Thread(target=self._keep, name="keeper", daemon=True).start()
        while connection:
            try:
                self._consume(connection)
                return
            except px.ChannelClosedByBroker as exc:  # e.g. the broker's consumer timeout
                warn(f"warning: {broker.explain(exc, self.nodes.params[self.nodes.current], self.queue)}; "
                     + ("stopping, as SIGTERM asked" if self.stopping else "taking tasks again"))
            except px.ConsumerCancelled:
                warn(f"warning: the broker stopped this worker's consumer (was queue {self.queue!r} deleted?); "
                     "declaring it again")
            except (px.AMQPConnectionError, px.AMQPChannelError) as exc:
                warn(f"warning: lost the connection to the broker at {self.nodes.where()} "
                     f"({nodes.reason(exc)}); reconnecting")
            if self.stopping:  # SIGTERM: nothing left to finish
                self._close(connection)
                return
            if not connection.is_open:
                connection = self._reconnect()

    def _connect(self, start: int) -> pika.BlockingConnection:
        """A connection to the first node that answers, from ``start`` on; Failure if none does."""
        errors: list[tuple[int, BaseException]] = []
        for index in self.nodes.order(start):
            try:
                connection = pika.BlockingConnection(self.nodes.params[index])
            except (px.AMQPError, OSError) as exc:
                if nodes.fatal(exc):  # no other node or later try will mend that
                    raise Failure(broker.explain(exc, self.nodes.params[index])) from None
                errors.append((index, exc))
                continue
            self.nodes.current = index
            return connection
        raise NoneAnswered(self.nodes.none_answered(errors))

    def _reconnect(self) -> pika.BlockingConnection | None:
        """A connection to the next node that answers, after a growing, bounded delay between rounds;
        None if SIGTERM came meanwhile (nothing left to ack: the broker has put the task back)."""
        lost, delay = self.nodes.current, FIRST_DELAY
        while not self._pause(delay):
            try:
                connection = self._connect(lost + 1)
            except NoneAnswered:
                delay = min(delay * 2, MAX_DELAY)
                continue
            where = self.nodes.where()
            warn(f"warning: connected again, to the broker at {where}" +
                 (f" (instead of {self.nodes.where(lost)})" if self.nodes.current != lost else ""))
            return connection
        return None

    def _consume(self, connection: pika.BlockingConnection) -> None:
        channel = connection.channel()
        task_channel = TaskChannel(self, channel)

        def on_message(ch: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
            """On the main thread, inside pika: hand pika to the keeper while the task runs."""
            if self.stopping:  # SIGTERM came: the broker gives this one to another worker
                ch.basic_reject(method.delivery_tag, requeue=True)
                return
            self.lost, self.in_task = None, True
            self.pika.release()
            try:
                self.callback(task_channel, method, properties, body)
            except Exception as exc:
                # Nothing is acked: the worker stops, the broker gives the task to another worker. (Going
                # on would drop the task, or hand it back to this worker in a tight loop.)
                shown = body if len(body) <= 80 else body[:80] + b"..."
                raise Failure(f"the task {shown!r} failed ({type(exc).__name__}: {exc}); it goes back to the "
                              "queue, and this worker stops") from None
            finally:
                self.pika.acquire()
                self.in_task = False
            if self.lost:
                raise self.lost
            if self.stopping:
                ch.stop_consuming()  # pending deliveries go back to the queue

        def tick() -> None:  # ends an idle wait now and then, to see a SIGTERM
            if not channel.is_open:
                return
            if self.stopping:
                channel.stop_consuming()
            else:
                connection.call_later(TICK, tick)

        try:
            self.declare(channel)
            channel.basic_consume(queue=self.queue, on_message_callback=on_message)
        except px.ChannelClosedByBroker as exc:  # a queue of another type, another's exclusive consumer, ...
            raise Failure(broker.explain(exc, self.nodes.params[self.nodes.current], self.queue)) from None
        tick()
        self.pika.acquire()
        self.connection = connection
        try:
            channel.start_consuming()  # returns once every consumer is cancelled
        except KeyboardInterrupt:
            raise  # the worker ends here; the lock may not even be ours (a signal during acquire)
        except BaseException:
            self.pika.release()
            raise
        self.pika.release()
        if not self.stopping:
            self._close(channel)
            raise px.ConsumerCancelled("the broker cancelled the consumer (was the queue deleted?)")
        self._close(connection)

    def _keep(self) -> None:
        """The keeper thread: while a task runs, answer heartbeats and notice a lost connection."""
        params = self.nodes.params[0]
        interval = min(1.0, max(0.1, (params.heartbeat or 60) / 4))  # type: ignore[operator]
        while True:
            time.sleep(interval)
            if not self.in_task:
                continue
            with self.pika:
                if self.in_task and not self.lost and self.connection:
                    try:
                        self.connection.process_data_events(time_limit=0)
                    except (px.AMQPError, OSError) as exc:
                        self.lost = exc

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.stopping:
            raise KeyboardInterrupt  # a second signal: stop at once
        self.stopping = True

    def _pause(self, seconds: float) -> bool:
        """Wait before reconnecting, with jitter so that many workers do not knock at once.
        True if SIGTERM came meanwhile."""
        deadline = time.monotonic() + seconds * random.uniform(0.5, 1.0)
        while time.monotonic() < deadline and not self.stopping:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return self.stopping

    @staticmethod
    def _close(connection: pika.BlockingConnection | BlockingChannel) -> None:
        try:
            if connection.is_open:
                connection.close()
        except (px.AMQPError, OSError):
            pass
