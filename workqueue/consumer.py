"""Consuming the way a long-running worker must.

pika's BlockingConnection answers heartbeats only while its own thread is inside pika. So the task
runs on one long-lived task thread while the connection's thread keeps servicing the connection, and
the task's ``ch.basic_ack(...)`` is carried over to the connection's thread, as in pika's
``examples/basic_consumer_threaded.py`` but without a thread per message. While a task runs, the
connection's thread waits on a queue of such calls and looks after the connection every
``SERVICE_INTERVAL``; an ack then costs one thread wake-up, not a trip through pika's I/O loop
(``add_callback_threadsafe``), which kept a worker at 0.75x the plain tutorial's speed.
When the broker goes away the worker says so, reconnects with a growing, bounded backoff and
declares again; a task from the lost connection is never acked on the new one.

Signals: Ctrl+C (SIGINT) stops at once and leaves the running task unacked, so the broker gives it to
another worker. SIGTERM (``docker stop``) stops taking tasks, lets the running one finish and be
acked, then exits 0. A second signal stops at once. A task that raises stops the worker the same
way as Ctrl+C, with one ``error:`` line. ``Placement`` keeps the two threads on one CPU while tasks
are very short.
"""

from __future__ import annotations

import functools
import os
import queue
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions as px

from workqueue import broker
from workqueue.cli import Failure, warn

Callback = Callable[[Any, Any, Any, bytes], None]  # (ch, method, properties, body), as in the tutorial

# Errors after which a new connection may work: the broker restarted, the network broke.
RECOVERABLE = (px.AMQPConnectionError,)
# Errors that no retry will mend.
FATAL = (px.ProbableAuthenticationError, px.AuthenticationError, px.ProbableAccessDeniedError)

SERVICE_INTERVAL = 0.5  # seconds; how often a busy or idle worker looks after its connection at least
FIRST_DELAY = 0.5  # seconds before the first reconnect attempt; doubles on each failure
MAX_DELAY = 10.0


class TaskChannel:
    """What a task receives as ``ch``: the channel methods a task may call from its own thread.

    Each call is carried out on the connection's thread. If the channel the message came on has
    closed meanwhile, the call is dropped: the broker has already put that message back in the queue.
    """

    def __init__(self, calls: queue.SimpleQueue[Callable[[], None]], channel: Any) -> None:
        self._calls = calls
        self._channel = channel

    @property
    def is_open(self) -> bool:
        return bool(self._channel.is_open)

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        self._call(self._channel.basic_ack, delivery_tag=delivery_tag, multiple=multiple)

    def basic_nack(self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True) -> None:
        self._call(self._channel.basic_nack, delivery_tag=delivery_tag, multiple=multiple, requeue=requeue)

    def basic_reject(self, delivery_tag: int = 0, requeue: bool = True) -> None:
        self._call(self._channel.basic_reject, delivery_tag=delivery_tag, requeue=requeue)

    def _call(self, method: Callable[..., None], **kwargs: Any) -> None:
        def on_connection_thread() -> None:
            if self._channel.is_open:
                method(**kwargs)

        self._calls.put(on_connection_thread)


def consume(url: str, declare: Callable[[Any], None], queue_name: str, callback: Callback) -> None:
    """Run ``declare(channel)``, then ``callback(ch, method, properties, body)`` for each message of
    ``queue_name``, until a signal stops the worker. Raises Failure for what a user must fix."""
    Worker(broker.parameters(url), declare, queue_name, callback).run()


class Worker:
    def __init__(self, params: pika.URLParameters, declare: Callable[[Any], None], queue_name: str,
                 callback: Callback) -> None:
        self.params = params
        self.declare = declare
        self.queue = queue_name
        self.callback = callback
        self.deliveries: queue.SimpleQueue[tuple[TaskChannel, Any, Any, bytes]] = queue.SimpleQueue()
        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()  # for the connection's thread
        self.channel: Any = None  # the channel consumed from now
        self.pending = 0  # deliveries of this channel handed to the task thread and not yet finished
        self.stopping = False  # SIGTERM: finish the running task, take no more
        self.placement = Placement()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            connection = pika.BlockingConnection(self.params)
        except (px.AMQPError, OSError) as exc:
            raise Failure(broker.explain(exc, self.params)) from None
        threading.Thread(target=self._work, name="task", daemon=True).start()
        while connection:
            try:
                self._consume(connection)
                return
            except FATAL as exc:
                raise Failure(broker.explain(exc, self.params, self.queue)) from None
            except px.ChannelClosedByBroker as exc:  # e.g. the broker's consumer timeout
                warn(f"warning: {broker.explain(exc, self.params, self.queue)}; reconnecting")
            except px.ConsumerCancelled:
                warn(f"warning: the broker stopped this worker's consumer (was queue {self.queue!r} deleted?); "
                     "declaring it again")
            except RECOVERABLE as exc:
                warn(f"warning: lost the connection to the broker at {broker.where(self.params)} "
                     f"({_reason(exc)}); reconnecting")
            self._close(connection)
            connection = self._reconnect()

    def _reconnect(self) -> pika.BlockingConnection | None:
        """A new connection, after a growing, bounded delay; None if SIGTERM came meanwhile."""
        delay = FIRST_DELAY
        while not self._pause(delay):
            try:
                return pika.BlockingConnection(self.params)
            except FATAL as exc:  # the broker is back but will not have us: no retry will mend that
                raise Failure(broker.explain(exc, self.params)) from None
            except (px.AMQPError, OSError):
                delay = min(delay * 2, MAX_DELAY)
        return None  # nothing left to ack: the broker has put the running task back already

    def _consume(self, connection: pika.BlockingConnection) -> None:
        channel = connection.channel()
        try:
            self.declare(channel)
        except px.ChannelClosedByBroker as exc:
            raise Failure(broker.explain(exc, self.params, self.queue)) from None
        self.channel, self.pending = channel, 0
        task_channel = TaskChannel(self.calls, channel)
        channel.basic_consume(queue=self.queue, on_message_callback=functools.partial(self._on_message, task_channel))

        def tick() -> None:  # ends an idle wait now and then, to see a SIGTERM
            connection.call_later(SERVICE_INTERVAL, tick)

        tick()
        while not self.stopping:
            self._serve(connection, channel)
        # SIGTERM: take no more tasks; let the running one finish and its ack go out; close.
        for tag in list(channel.consumer_tags):
            channel.basic_cancel(tag)
        while self.pending:
            self._serve(connection, channel)
        self._close(connection)

    def _serve(self, connection: pika.BlockingConnection, channel: Any) -> None:
        """One turn of the connection's thread: wait for a delivery, or for the task thread."""
        if not self.pending:
            connection.process_data_events(time_limit=None)
        else:
            try:
                self.calls.get(timeout=SERVICE_INTERVAL)()
            except queue.Empty:
                connection.process_data_events(time_limit=0)  # heartbeats, and news of a lost connection
        if not channel.consumer_tags and not self.stopping:
            raise px.ConsumerCancelled("the broker cancelled the consumer (was the queue deleted?)")

    def _on_message(self, task_channel: TaskChannel, ch: Any, method: Any, properties: Any, body: bytes) -> None:
        self.pending += 1
        self.deliveries.put((task_channel, method, properties, body))

    def _finished(self, task_channel: TaskChannel) -> None:
        if task_channel._channel is self.channel:  # not a leftover of a lost connection
            self.pending -= 1

    def _work(self) -> None:
        """The task thread: one task at a time, for the life of the worker."""
        self.placement.threads.append(threading.get_native_id())
        while True:
            task_channel, method, properties, body = self.deliveries.get()
            try:
                if not self.stopping and task_channel.is_open:  # else the broker gives it to another worker
                    started = time.monotonic()
                    self.callback(task_channel, method, properties, body)
                    self.placement.record(started, time.monotonic())
            except Exception as exc:
                # Nothing is acked: the worker stops, the broker gives the task to another worker. (Going
                # on would drop the task, or hand it back to this worker in a tight loop.)
                self.calls.put(functools.partial(_fail, body, exc))
                return
            finally:
                self.calls.put(functools.partial(self._finished, task_channel))

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
    def _close(connection: pika.BlockingConnection) -> None:
        try:
            if connection.is_open:
                connection.close()
        except (px.AMQPError, OSError):
            pass


class Placement:
    """Keeps the connection's thread and the task thread on one CPU while tasks are short.

    Every message crosses between the two threads twice. Measured on a 2-core VM, a wake-up across
    cores costs 20-30 us and one on the same core under 3 us: enough to slow a worker of very short
    tasks to 0.8x the plain tutorial's. So while tasks average under SHORT seconds the two threads
    share one CPU (Python runs one thread at a time anyway); once they average over LONG, the kernel
    places them freely again, so that workers of real, CPU-heavy tasks spread over all CPUs.

    Which CPU matters too (the broker, interrupts and other workers load them unevenly), so the pair
    tries each CPU in turn for TRIAL tasks, keeps the one with the shortest wait between the end of a
    task and the start of the next (the hand-overs and the trip to the broker), and tries again every
    RETRY seconds.
    """

    SHORT = 0.002
    LONG = 0.02
    TRIAL = 200
    RETRY = 60.0

    def __init__(self) -> None:
        self.threads = [threading.get_native_id()]  # the connection's thread; the task thread adds itself
        self.average = self.LONG  # seconds a task takes, a moving average; start as if tasks were long
        self.pinned: int | None = None  # the CPU the threads are kept on, if any
        self.last_end = 0.0
        self.gaps: list[float] = []
        self.scores: dict[int, float] = {}  # CPU: median wait between tasks there
        self.retry_at = 0.0
        try:
            self.free = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            self.free = set()  # not Linux: nothing to do
        self.cpus = sorted(self.free)[:8]  # the ones to try

    def record(self, start: float, end: float) -> None:
        """After each task, on the task thread: when it started and ended (time.monotonic)."""
        if len(self.cpus) < 2:
            return
        gap, self.last_end = start - self.last_end, end
        self.average += (end - start - self.average) / 8
        if self.pinned is None:
            if self.average < self.SHORT:
                self.scores = {}
                self._place({self.cpus[0]})
            return
        if self.average > self.LONG:
            self._place(None)
            return
        if self.pinned in self.scores:  # settled: try again now and then
            if end > self.retry_at:
                self.scores = {}
                self._place({self.cpus[0]})
            return
        self.gaps.append(gap)
        if len(self.gaps) >= self.TRIAL:
            self.scores[self.pinned] = sorted(self.gaps)[len(self.gaps) // 2]
            untried = [cpu for cpu in self.cpus if cpu not in self.scores]
            if untried:
                self._place({untried[0]})
            else:
                self._place({min(self.scores, key=self.scores.__getitem__)})
                self.retry_at = end + self.RETRY

    def _place(self, cpus: set[int] | None) -> None:
        """Keep both threads on these CPUs; None: on any."""
        self.gaps = []
        try:
            for tid in self.threads:
                os.sched_setaffinity(tid, cpus or self.free)
        except OSError:
            self.cpus = []  # not allowed here: leave placement to the kernel
            return
        self.pinned = next(iter(cpus)) if cpus else None


def _fail(body: bytes, exc: Exception) -> None:
    """On the connection's thread: end the worker, as its task failed."""
    shown = body if len(body) <= 80 else body[:80] + b"..."
    raise Failure(f"the task {shown!r} failed ({type(exc).__name__}: {exc}); it goes back to the queue, "
                  "and this worker stops")


def _reason(exc: BaseException) -> str:
    cause = broker.root_cause(exc)
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    if isinstance(cause, px.ConnectionClosedByBroker):
        return f"closed by the broker: {cause.reply_text}"
    return str(cause) or type(cause).__name__
