"""Consuming the way a long-running worker must.

Tasks run on the main thread, inside ``channel.start_consuming()``, as in the tutorial. pika's
BlockingConnection answers heartbeats only while some thread is inside pika, so a second thread, the
keeper, looks after the connection while a task runs (see :class:`Handover` for which thread may be
inside pika when). Nothing crosses threads per task, so a worker of short tasks runs at the plain
tutorial's speed; a task of any length keeps its connection.

When a node goes away the worker says so, reconnects to the next node that answers (``nodes`` says
in what order, and how long it waits between rounds), declares again and goes on. A node that falls
silent (frozen, or cut off by a firewall) is gone as surely as one that resets: idle or in a task, the
worker checks the bytes from the broker against its heartbeat timeout (``nodes.Silence``). A task's ack whose
channel has closed, or whose consumer the broker has cancelled (RabbitMQ 4.3's consumer timeout), is dropped:
the broker has put that task back in the queue already.

Signals: Ctrl+C (SIGINT) stops at once and leaves the running task unacked, so the broker gives it to
another worker. SIGTERM (``docker stop``) stops taking tasks, lets the running one finish and be
acked, then exits 0. A second signal stops at once.

A task that raises has failed; the worker goes on (``attempts`` and ``setaside``): one ``warning:`` line says
which task, why and what becomes of it: a copy is stored in ``<queue>.retry`` (back in the queue after the
retry delay) or, once its attempts are used up, in ``<queue>.failed``; only then is the original acked. A task
whose attempts so far (ours, and a quorum queue's count of deliveries that came back without an ack: its
worker's process ended during it) reach the policy's is set aside before it runs again. What is the worker's
own still stops it: its output gone (BrokenPipeError), a signal.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions as px
from pika.adapters.blocking_connection import BlockingChannel

from workqueue import attempts, broker, nodes, setaside
from workqueue.report import Failure, warn

Callback = Callable[[Any, Any, Any, bytes], None]  # (ch, method, properties, body), as in the tutorial

TICK = 0.5  # seconds; how often an idle worker looks for a SIGTERM
LONG_TASK = 0.5  # seconds; a task longer than this reads the broker's news before its ack (see TaskChannel)


class Handover:
    """Which thread may be inside pika, and when.

    The main thread holds pika (this lock) whenever it is inside ``start_consuming``, and lends it out
    (``lent()``) for exactly as long as a task runs. Only then may the keeper go in, to call
    ``process_data_events(time_limit=0)``, and the task itself, for ``ch.basic_ack`` and the like
    (``with handover:``). The keeper's call reads frames, answers heartbeats and fires timers, but never
    delivers a message: pika dispatches no delivery from inside a callback that is still running (our
    ``on_message`` is one), so the task cannot be entered twice. No lock is taken per task but the one
    hand-over, which costs the tutorial's speed nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_task = False  # a task runs: pika is lent out

    def __enter__(self) -> None:  # the keeper, or a task's channel call
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The main thread, around ``start_consuming``."""
        self._lock.acquire()
        try:
            yield
        except KeyboardInterrupt:
            raise  # the worker ends here; the lock may not even be ours (a signal during acquire)
        except BaseException:
            self._lock.release()
            raise
        self._lock.release()

    @contextlib.contextmanager
    def lent(self) -> Iterator[None]:
        """The main thread, inside ``on_message``, while the task runs."""
        self.in_task = True
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()
            self.in_task = False


class TaskChannel:
    """What a task receives as ``ch``: the channel methods a task may call, with pika handed over to it.
    If the channel the message came on has closed meanwhile, or the broker has cancelled its consumer, the
    call is dropped: the broker has taken that message back already (into the queue, unless the queue was
    deleted). RabbitMQ 4.3 cancels the consumer of a task held past ``consumer_timeout``, and an ack sent
    after that would bring the consumer back: the broker would hand the task straight back to this channel,
    which is about to close, and count that as a failed delivery. A task that has run for a while first reads
    what the broker has sent meanwhile, so that a cancel is seen before its ack goes out."""

    def __init__(self, worker: Worker, channel: BlockingChannel) -> None:
        self._worker = worker
        self._channel = channel
        self.delivery_tag = 0  # of the task running now
        self.started = 0.0  # when it started (time.monotonic())
        self.settled = False  # the task running now was acked or handed back by the task itself
        self.cancelled = False  # the broker cancelled this channel's consumer (seen by whichever thread reads)
        # pika's own channel calls this as the frame is read, the keeper's reads during a task included (the
        # blocking channel's callback would wait until the task returns).
        channel._impl.add_on_cancel_callback(self._on_cancel)

    def _on_cancel(self, frame: Any) -> None:
        self.cancelled = True

    @property
    def taken_back(self) -> bool:
        """Whether the broker has put the running task back: its channel has closed, or its consumer was
        cancelled."""
        return self.cancelled or not self._channel.is_open

    @property
    def is_open(self) -> bool:
        return bool(self._channel.is_open)

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        if self._call(self._channel.basic_ack, delivery_tag, multiple):
            self._settle(delivery_tag, multiple)

    def basic_nack(self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True) -> None:
        if self._call(self._channel.basic_nack, delivery_tag, multiple, requeue):
            self._settle(delivery_tag, multiple)

    def basic_reject(self, delivery_tag: int = 0, requeue: bool = True) -> None:
        # a nack: RabbitMQ 4.3 counts a rejected delivery toward a quorum queue's delivery limit, not a nacked one
        self.basic_nack(delivery_tag, False, requeue)

    def _settle(self, delivery_tag: int, multiple: bool) -> None:
        if delivery_tag == self.delivery_tag or multiple or not delivery_tag:
            self.settled = True

    def catch_up(self) -> None:
        """For a task that has run a while, with pika held: read what the broker has sent since the keeper's
        last read (a cancel may have come). Deliveries wait: pika does not dispatch them within a callback."""
        if time.monotonic() - self.started > LONG_TASK:
            self._channel.connection.process_data_events(time_limit=0)

    def _call(self, method: Callable[..., None], *args: Any) -> bool:
        """Whether the call went out."""
        with self._worker.pika:
            try:
                self.catch_up()
                if self.taken_back:
                    return False
                method(*args)
                return True
            except (px.AMQPConnectionError, px.AMQPChannelError) as exc:
                self._worker.lost = exc  # the main thread raises it once the task returns
                return False


def consume(urls: list[str], declare: Callable[[Any], None], queue_name: str, callback: Callback,
            policy: attempts.Policy | None = None) -> None:
    """Run ``declare(channel)``, then ``callback(ch, method, properties, body)`` for each message of
    ``queue_name``, until a signal stops the worker; a task that raises is tried again or set aside as
    ``policy`` says (``cli.policy(args)``). Raises Failure for what a user must fix."""
    Worker(nodes.Nodes(urls), declare, queue_name, callback, policy or attempts.Policy()).run()


class Worker:
    def __init__(self, brokers: nodes.Nodes, declare: Callable[[Any], None], queue_name: str,
                 callback: Callback, policy: attempts.Policy | None = None) -> None:
        self.nodes = brokers
        self.declare = declare
        self.queue = queue_name
        self.callback = callback
        self.policy = policy or attempts.Policy()
        self.aside: setaside.SetAside | None = None  # where failed tasks go, for the connection in use
        self.pika = Handover()
        self.connection: pika.BlockingConnection | None = None
        self.silence = nodes.Silence(0)  # of self.connection
        self.lost: BaseException | None = None  # what the keeper (or an ack) saw go wrong during a task
        self.stopping = False  # SIGTERM: finish the running task, take no more

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        connection: pika.BlockingConnection | None = self.nodes.connect(0)
        threading.Thread(target=self._keep, name="keeper", daemon=True).start()
        while connection:
            try:
                self._consume(connection)
                return
            except px.ChannelClosedByBroker as exc:  # e.g. the broker's consumer timeout
                warn(f"warning: {broker.explain(exc, self.nodes.in_use, self.queue)}; "
                     + ("stopping, as SIGTERM asked" if self.stopping else "taking tasks again"))
            except px.ConsumerCancelled as exc:  # its queue deleted, or (RabbitMQ 4.3) the consumer timeout
                warn(f"warning: {exc}")
            except (px.AMQPConnectionError, px.AMQPChannelError) as exc:
                warn(f"warning: lost the connection to the broker at {self.nodes.where()} "
                     f"({nodes.reason(exc)}); reconnecting")
            if self.stopping:  # SIGTERM: nothing left to finish
                self._close(connection)
                return
            if not connection.is_open:
                connection = self._reconnect()

    def _reconnect(self) -> pika.BlockingConnection | None:
        """A connection to the next node that answers, with the backoff between rounds; None if SIGTERM
        came meanwhile (nothing left to ack: the broker has put the task back)."""
        lost, backoff = self.nodes.current, nodes.Backoff(several=len(self.nodes) > 1)
        while not self._pause(backoff.next()):
            try:
                connection = self.nodes.connect(lost + 1)
            except nodes.NoneAnswered:
                continue
            warn(f"warning: connected again, to the broker at {self.nodes.where()}" +
                 (f" (instead of {self.nodes.where(lost)})" if self.nodes.current != lost else ""))
            return connection
        return None

    def _consume(self, connection: pika.BlockingConnection) -> None:
        channel = connection.channel()
        task_channel = TaskChannel(self, channel)
        if self.aside is None or self.aside.connection is not connection:  # one per connection
            self.aside = setaside.SetAside(connection, self.queue, self.policy, self.nodes.in_use,
                                           silent=lambda: self._silent(connection))  # queues declared at first use
        aside = self.aside

        def on_message(ch: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
            """On the main thread, inside pika: pika is lent out while the task runs."""
            if task_channel.taken_back:  # came before the broker cancelled the consumer; the channel closes next
                return
            if self.stopping:  # SIGTERM came: the broker gives this one to another worker
                ch.basic_nack(method.delivery_tag, requeue=True)  # (a reject would count as a failed delivery)
                return
            self.lost = None
            if attempts.used_up(self.policy, properties.headers):  # its worker's process ended during it, ...
                made, returns = attempts.made(properties.headers), attempts.returned(properties.headers)
                aside.fail(body, properties, made, attempts.lost_error(returns))
                ch.basic_ack(method.delivery_tag)
                warn(attempts.lost_line(body, returns, made, self.queue))
                return
            task_channel.delivery_tag, task_channel.settled = method.delivery_tag, False
            task_channel.started = time.monotonic()
            failure: Exception | None = None
            with self.pika.lent():
                try:
                    self.callback(task_channel, method, properties, body)
                except BrokenPipeError as exc:  # the worker's own output has gone: it stops, the task goes back
                    raise Failure(f"the task {attempts.shown(body, 80)} failed ({attempts.describe(exc)}); it goes "
                                  "back to the queue, and this worker stops") from None
                except Exception as exc:  # the task's failure, not the worker's
                    failure = exc
            if self.lost:
                raise self.lost
            if failure is not None:
                self._failed(ch, method, properties, body, failure, task_channel, aside)
            if self.stopping:
                ch.stop_consuming()  # pending deliveries go back to the queue

        def tick() -> None:  # ends an idle wait now and then, to see a SIGTERM or a silent broker
            if not channel.is_open or self._silent(connection):
                return
            if self.stopping:
                channel.stop_consuming()
            else:
                connection.call_later(TICK, tick)

        try:
            self.declare(channel)
            channel.basic_consume(queue=self.queue, on_message_callback=on_message)
        except px.ChannelClosedByBroker as exc:  # a queue of another type, another's exclusive consumer, ...
            raise Failure(broker.explain(exc, self.nodes.in_use, self.queue)) from None
        self.silence = nodes.silence(connection)
        tick()
        with self.pika.held():
            self.connection = connection
            try:
                channel.start_consuming()  # returns once every consumer is cancelled
            except KeyError:  # pika 1.x: a second basic.cancel for the consumer, which it has already forgotten
                if not task_channel.cancelled:  # (RabbitMQ 4.3 sends one per batch of tasks it takes back)
                    raise
        if not self.stopping:
            why = self._cancelled(channel)
            self._close(channel)
            raise px.ConsumerCancelled(why)
        self._close(connection)

    def _cancelled(self, channel: BlockingChannel) -> str:
        """Why the broker cancelled this worker's consumer, in a user's words: its queue was deleted (a passive
        declare answers 404), or, the queue still there, a task ran past the broker's consumer_timeout (RabbitMQ
        4.3 cancels the consumer of a quorum queue for it; 3.x and 4.0 close the channel instead)."""
        try:
            channel.queue_declare(self.queue, passive=True)
        except px.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return (f"the broker cancelled this worker's consumer: queue {self.queue!r} was deleted; "
                        "declaring it again")
            return f"the broker cancelled this worker's consumer ({exc.reply_text}); declaring the queue again"
        return (f"the broker cancelled this worker's consumer, and queue {self.queue!r} is still there (a task ran "
                "past the broker's consumer_timeout? The broker took that task back; for tasks that long, raise "
                "consumer_timeout in rabbitmq.conf); taking tasks again")

    def _failed(self, ch: BlockingChannel, method: Any, properties: Any, body: bytes, exc: Exception,
                task: TaskChannel, aside: setaside.SetAside) -> None:
        """A task raised: a copy stored in ``<queue>.retry`` or ``<queue>.failed``, then the original acked."""
        error = attempts.describe(exc)
        if task.settled:  # the task had acked (or handed back) its message itself: nothing left to decide
            warn(attempts.acked_line(body, error))
            return
        task.catch_up()
        if task.taken_back:  # the original is back in the queue already: a copy would make it two
            warn(attempts.taken_back_line(body, error))
            return
        attempt = attempts.made(properties.headers) + 1
        if attempts.last_attempt(self.policy, attempt):
            aside.fail(body, properties, attempt, error)
            line = attempts.set_aside_line(body, error, attempt, self.queue)
        else:
            aside.retry(body, properties, attempt, error)
            line = attempts.retried_line(body, error, attempt, self.policy)
        ch.basic_ack(method.delivery_tag)
        warn(line)

    def _keep(self) -> None:
        """The keeper thread: while a task runs, answer heartbeats and notice a lost connection."""
        while True:
            heartbeat = self.nodes.in_use.heartbeat  # the node in use now: it may have changed
            time.sleep(min(1.0, max(0.1, (heartbeat or 60) / 4)))
            if not self.pika.in_task:
                continue
            with self.pika:
                if self.pika.in_task and not self.lost and self.connection:
                    try:
                        self.connection.process_data_events(time_limit=0)
                        if self._silent(self.connection):
                            self.connection.process_data_events(time_limit=0)  # raises what closed it
                    except (px.AMQPError, OSError) as exc:
                        self.lost = exc

    def _silent(self, connection: pika.BlockingConnection) -> bool:
        """Whether the broker has gone silent, and the connection is dead: if so, it is dropped (with pika
        handed to this thread), and pika raises that as a lost connection."""
        if not self.silence.dead(nodes.bytes_received(connection)):
            return False
        nodes.abort(connection, self.silence.limit)
        return True

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.stopping:
            raise KeyboardInterrupt  # a second signal: stop at once
        self.stopping = True

    def _pause(self, seconds: float) -> bool:
        """Wait this long before reconnecting; True if SIGTERM came meanwhile."""
        deadline = time.monotonic() + seconds
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
