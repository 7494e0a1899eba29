"""Publishing with publisher confirms: "Sent" is printed only for what the broker has stored.

Messages go over one connection with up to ``window`` of them unconfirmed at once, so a batch goes at
broker speed while every message printed as sent is one the broker confirmed, in input order, the
lines of one confirm in one write.

A message the broker has not confirmed is published again: after a nack (on the same channel, or through
the next node when there are several), and through the next node that answers when the connection is
lost, when it falls silent (no byte from the broker for its heartbeat timeout: a frozen or cut-off
node), and when a node that still talks has stored nothing for ``confirm_timeout`` seconds while messages
wait: no confirm came (a quorum queue that lost its majority there), or only nacks (on RabbitMQ 3.10 a
channel opened while a quorum queue elects a new leader nacks every publish to it, long after the
election, when a channel opened later takes them at once). It goes on until every message is
confirmed, or until nothing has been confirmed for ``retry_for`` seconds: only then is it an error. A
message can so be stored twice (its first confirm was lost), never lost once "Sent". While the broker
blocks publishers (a memory or disk alarm) it waits, says so, and sends once the alarm clears.

The parts: ``source`` reads the messages, ``ledger`` keeps each one's state, ``nodes`` says which broker
to try; what is here is pika's SelectConnection, one small method per event.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

import pika
import pika.exceptions as px
from pika.adapters.select_connection import IOLoop
from pika.spec import Basic

from workqueue import broker, nodes
from workqueue.ledger import Ledger
from workqueue.link import Link
from workqueue.report import Failure, one_write, warn
from workqueue.source import Source

WINDOW = 5000  # unconfirmed messages in flight at most
CONFIRM_TIMEOUT = 5.0  # seconds without a confirm before the unconfirmed messages are published again
RETRY_FOR = 30.0  # seconds of trying without a confirm before giving up
PAUSE = 0.5  # seconds before publishing again after a nack
WATCH = 0.25  # seconds between checks of the timeouts

Channel = Any  # pika.channel.Channel: basic_publish and queue_declare as in the tutorial


def publish(
    urls: list[str],
    declare: Callable[[Channel], None],
    send: Callable[[Channel, str], None],
    messages: Iterable[str],
    sent: Callable[[str], None],
    *,
    confirm_timeout: float = CONFIRM_TIMEOUT,
    retry_for: float = RETRY_FOR,
    window: int = WINDOW,
) -> None:
    """Connect to the first of ``urls`` that answers, ``declare(channel)``, ``send(channel, message)``
    each message, and call ``sent(message)`` in order as the broker confirms them. ``messages`` is a
    list, or a file such as standard input (one message a line). Raises Failure on anything less."""
    source = Source(messages, limit=2 * window)
    job = _Publisher(nodes.Nodes(urls), declare, send, source, sent, Ledger(window), confirm_timeout, retry_for)
    try:
        job.run()
    except KeyboardInterrupt:
        if source.streamed:  # say where to resume; a single message simply was not "Sent"
            raise Failure(f"interrupted: {job.progress()}") from None
        raise
    finally:
        source.stop()
    if job.end.output_gone:
        raise BrokenPipeError
    if job.end.error:
        raise Failure(job.end.error)


class _Retry:
    """Publishing again what the broker did not store: why, since when, and whether there is time left."""

    def __init__(self, retry_for: float) -> None:
        self.retry_for = retry_for
        self.why = ""  # while publishing again
        self.since = 0.0

    def begin(self, why: str) -> None:
        """Say so, the first time (later troubles go on the same clock until something is stored)."""
        if not self.why:
            self.why, self.since = why, time.monotonic()
            if self.retry_for > 0:
                warn(f"warning: {why}; publishing again, for up to {self.retry_for:g} s")

    def time_left(self) -> bool:
        return time.monotonic() - self.since < self.retry_for

    def given_up(self) -> str:
        return f"{self.why}; gave up after {self.retry_for:g} s of trying" if self.retry_for > 0 else self.why

    def stored(self) -> None:
        """Something was stored (or nothing is left to store): the trouble is over."""
        self.why = ""


class _Stall:
    """Whether the node in use has stored nothing for ``timeout`` seconds while messages wait for it (in
    flight, or to publish again after a nack) although it still talks: bytes came from it since the
    clock started. Only an ack of some message starts the clock again (``restart``), besides a new
    connection, messages sent after a pause in the input, and the end of an alarm: a nack is an answer,
    but no progress, and a node that refuses every message is left like one that never answers."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.since = 0.0  # when the clock started
        self.bytes = 0  # what the connection had received by then

    def restart(self, received: int, now: float) -> None:
        self.since, self.bytes = now, received

    def overdue(self, waiting: bool, received: int, now: float) -> bool:
        return waiting and received > self.bytes and now - self.since >= self.timeout


class _End:
    """How the run ends: ``closing`` once it is ending (nothing more is published); ``error``, what the user
    is told then (None: every message was sent); ``output_gone``, whoever read the output has gone (a quiet
    end); ``after_confirms``, an error to end with once the confirms in flight for earlier messages have
    come (``since`` when it was set), so that those are still reported."""

    def __init__(self) -> None:
        self.closing = False
        self.error: str | None = None
        self.output_gone = False
        self.after_confirms = ""
        self.since = 0.0


class _Publisher:
    def __init__(self, brokers: nodes.Nodes, declare: Callable[[Channel], None], send: Callable[[Channel, str], None],
                 source: Source, sent: Callable[[str], None], ledger: Ledger, confirm_timeout: float,
                 retry_for: float) -> None:
        self.nodes, self.declare, self.send, self.sent = brokers, declare, send, sent
        self.source, self.ledger = source, ledger
        self.confirm_timeout = confirm_timeout
        self.retry = _Retry(retry_for)
        self.ioloop = IOLoop()
        self.link = Link(brokers, self.ioloop, self)
        self.channel: Any = None  # the channel published on now; frames of earlier ones are ignored
        self.stall = _Stall(confirm_timeout)  # since when the node in use stored nothing
        self.resume_at = 0.0  # no publishing before this (a pause before publishing again)
        self.end = _End()

    def run(self) -> None:
        self.link.open()
        self.ioloop.call_later(WATCH, self._watch)
        self.ioloop.start()

    def progress(self) -> str:
        pending = len(self.ledger.unreported) + self.source.waiting()
        done = self.ledger.reported
        text = f"{done} message{'s' * (done != 1)} confirmed"
        if pending:
            text += f", {pending} not confirmed (send input from message {done + 1} on again)"
        return text

    # connections and channels

    def opened(self, connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def failed(self, error: str) -> None:  # no node would take the connection
        self._stop(error)

    def closed(self) -> None:
        self.ioloop.stop()

    def _on_channel_open(self, channel: Any) -> None:
        self.channel = channel
        self._wait_for_confirms()  # a new connection: its clock starts now, counting its own bytes
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=functools.partial(self._on_confirm, channel))
        self.declare(channel)  # the broker takes a channel's commands in order: no need to wait
        self.source.start(lambda: self.ioloop.add_callback_threadsafe(self._pump))
        self._pump()

    def _pump(self) -> None:
        """Publish what has been read, up to the window; close once all is reported."""
        if not self.ledger.waiting():
            self._wait_for_confirms()  # nothing was waiting: the clock starts with what is read now
        self.ledger.add(self.source.take())
        if self.end.closing or self.end.after_confirms or not (self.channel and self.channel.is_open):
            return
        if time.monotonic() < self.resume_at:
            return  # a call_later pumps again then
        for message in self.ledger.publish():
            self.send(self.channel, message.text)
        if self.source.ended and self.ledger.settled() and not self.source.chunks:
            self._stop(self.source.failure and self._with_progress(self.source.failure))

    def _retry_or_end(self, why: str) -> bool:
        """Messages were not stored: True while there is time left to publish them again; else the run
        ends with an error (once the confirms still in flight have come), and False."""
        self.retry.begin(why)
        if self.retry.time_left():
            return True
        self._end_after_confirms(self.retry.given_up())
        return False

    def _end_after_confirms(self, error: str) -> None:
        """End with this error once the confirms in flight for earlier messages have come (or have not,
        within the confirm timeout), so that those are still reported."""
        if not self.end.after_confirms:
            self.end.after_confirms, self.end.since = error, time.monotonic()
        overdue = time.monotonic() - self.end.since >= self.confirm_timeout
        if not self.ledger.inflight or overdue:
            self._stop(self._with_progress(self.end.after_confirms))

    def _stop(self, error: str | None = None) -> None:
        """Close, and end once closed; ``error``, if any, is what the user is told."""
        self.end.error = self.end.error or error
        if not self.end.closing:
            self.end.closing = True
            self.link.close()

    def _on_channel_closed(self, channel: Any, reason: Exception) -> None:
        # Closed by the broker: no retry will mend that. (A lost connection closes it too: see _on_closed.)
        if channel is self.channel and not self.end.closing and isinstance(reason, px.ChannelClosedByBroker):
            self._stop(self._with_progress(broker.explain(reason, self.nodes.in_use)))

    def lost(self, reason: Exception) -> None:
        """The connection was lost (or closed by the broker)."""
        if isinstance(reason, px.ConnectionBlockedTimeout):  # held back too long: the user's bound
            self._stop(self._with_progress(broker.explain(reason, self.nodes.in_use)))
            return
        self.channel = None
        self.ledger.take_back()
        if self._retry_or_end(f"lost the connection to the broker at {self.nodes.where()} "
                              f"({nodes.reason(reason)})"):
            self.link.again()

    def _with_progress(self, text: str) -> str:
        """For a batch, say how far it got: what a user needs to send the rest again."""
        return f"{text}; {self.progress()}" if self.source.streamed else text

    # confirms, returns, alarms

    def _on_confirm(self, channel: Any, frame: Any) -> None:
        if channel is not self.channel:
            return  # a channel given up on: its messages are published again
        method = frame.method
        settled = self.ledger.settle(method.delivery_tag, method.multiple)
        if isinstance(method, Basic.Nack):
            self._report()
            what = f"message {settled[0].number} {settled[0].text!r}" if settled else "a message"
            why = (f"the broker refused to store {what} (a nack: is the queue full, with a max-length policy, or a "
                   "cluster node down?)")
            first = not self.retry.why
            if not self._retry_or_end(why):
                return
            self.ledger.take_back(settled)
            if first and len(self.nodes) > 1:  # a node cut off from the queue's majority nacks: try the next one
                self.link.leave(why)
            else:
                self.resume_at = time.monotonic() + PAUSE
                self.ioloop.call_later(PAUSE, self._pump)
            return
        self.ledger.confirm(settled)
        if settled:
            self._wait_for_confirms()
            self.retry.stored()
        self._report()
        if self.end.after_confirms:
            self._end_after_confirms(self.end.after_confirms)
        self._pump()

    def _report(self) -> None:
        """Say "sent" for the confirmed messages, in input order, in one write."""
        if self.end.error or self.end.output_gone:
            return
        ready = self.ledger.reportable()
        try:
            with one_write():
                for message in ready:
                    self.sent(message.text)
        except BrokenPipeError:  # whoever read the output has gone (`| head`): stop, quietly
            self.end.output_gone = True
            self._stop()
        if ready:
            self.source.done(len(ready))

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        # A mandatory message no queue took: it is confirmed too, but it was not stored.
        if channel is not self.channel:
            return
        text = body.decode(errors="replace")
        self.ledger.returned(text)
        self._end_after_confirms(f"no queue took the message {text!r} (routing key {method.routing_key!r}; was "
                                 "the queue deleted?)")

    def unblocked(self) -> None:
        self._wait_for_confirms()  # the confirms waited for the alarm: their clock starts again

    # the clock

    def _watch(self) -> None:
        """Now and then: say so when held back; end or publish again what waits too long for its confirm."""
        if self.end.closing:
            return
        self.ioloop.call_later(WATCH, self._watch)
        if self.link.silent():
            return  # dropped: lost() publishes again through the next node
        if self.link.held_back():
            return  # no confirm is late while the broker holds messages back: it waits too
        if self.end.after_confirms:
            self._end_after_confirms(self.end.after_confirms)
        elif self._confirms_overdue():
            why = f"the broker at {self.nodes.where()} stored nothing for {self.confirm_timeout:g} s"
            if self._retry_or_end(why):
                self.link.leave(why)
        elif self.retry.why and self.ledger.waiting():
            self._retry_or_end(self.retry.why)  # ends the run once retry_for has passed
        elif self.retry.why:
            self.retry.stored()  # nothing is left that waits to be stored

    def _confirms_overdue(self) -> bool:
        """Nothing stored for the confirm timeout by a node that still talks (one that does not is silent):
        no confirm came, or only nacks."""
        return bool(self.channel) and self.stall.overdue(self.ledger.waiting(), self.link.received(), time.monotonic())

    def _wait_for_confirms(self) -> None:
        """The confirm timeout's clock starts now."""
        self.stall.restart(self.link.received(), time.monotonic())
