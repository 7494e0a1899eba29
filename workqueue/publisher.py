"""Publishing with publisher confirms: "Sent" is printed only for what the broker has stored.

Messages go over one connection with up to ``window`` of them unconfirmed at once, so a batch goes at
broker speed while every message printed as sent is one the broker confirmed, in input order, the
lines of one confirm in one write.

A message the broker has not confirmed is published again: after a nack, when no confirm has come
within ``confirm_timeout`` seconds (both on a new channel), and when the connection is lost (through
the next node that answers). It goes on until every message is confirmed, or until nothing has been
confirmed for ``retry_for`` seconds: only then is it an error. A message can so be stored twice (its
first confirm was lost), never lost once "Sent". While the broker blocks publishers (a memory or
disk alarm) it waits, says so, and sends once the alarm clears.
"""

from __future__ import annotations

import collections
import errno
import functools
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pika
import pika.exceptions as px
from pika.adapters.select_connection import IOLoop
from pika.spec import Basic

from workqueue import broker, cli, nodes
from workqueue.cli import Failure, warn

WINDOW = 5000  # unconfirmed messages in flight at most
CONFIRM_TIMEOUT = 5.0  # seconds without a confirm before the unconfirmed messages are published again
RETRY_FOR = 30.0  # seconds of trying without a confirm before giving up
PAUSE = 0.5  # seconds before publishing again, or trying the next node
WATCH = 0.25  # seconds between checks of the timeouts
BLOCKED_SAY = 1.0  # seconds held back by the broker before saying so

Channel = Any  # pika.channel.Channel: basic_publish and queue_declare as in the tutorial


def publish(
    urls: list[str],
    declare: Callable[[Channel], None],
    send: Callable[[Channel, str], None],
    messages: Iterable[str],
    sent: Callable[[str], None],
    confirm_timeout: float = CONFIRM_TIMEOUT,
    retry_for: float = RETRY_FOR,
    window: int = WINDOW,
) -> None:
    """Connect to the first of ``urls`` that answers, ``declare(channel)``, ``send(channel, message)``
    each message, and call ``sent(message)`` in order as the broker confirms them. ``messages`` is a
    list, or a file such as standard input (one message a line). Raises Failure on anything less."""
    brokers = nodes.Nodes(urls)
    source = _Source(messages, window)
    job = _Publisher(brokers, declare, send, source, sent, window, confirm_timeout, retry_for)
    try:
        job.run()
    except KeyboardInterrupt:
        if source.streamed:  # say where to resume; a single message simply was not "Sent"
            raise Failure(f"interrupted: {job.progress()}") from None
        raise
    finally:
        source.stop()
    if job.output_gone:
        raise BrokenPipeError
    if job.error:
        raise Failure(job.error)


class _Source:
    """The messages to send. A list is taken as it is; a file (standard input, which may wait for a
    person to type) is read on a thread of its own, so that heartbeats go on meanwhile, and handed
    over in chunks of whatever lines have come."""

    def __init__(self, messages: Iterable[str], window: int) -> None:
        self.chunks: collections.deque[list[str]] = collections.deque()  # read, not yet taken
        self.ended = False
        self.failure = ""  # why reading stopped early, if it did
        self.wake: Callable[[], None] = lambda: None
        self._limit = 2 * window  # messages read ahead of the confirms at most
        self._unsettled = 0  # messages read and not yet confirmed
        self._room = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.streamed = not isinstance(messages, (list, tuple))  # a batch: report progress on failure
        if not self.streamed:
            for message in messages:
                if not _is_text(message):
                    raise Failure("the message is not UTF-8 text")
            self.chunks.append(list(messages))
            self.ended = True
        else:
            self._thread = threading.Thread(target=self._read, args=(messages,), daemon=True)

    def start(self, wake: Callable[[], None]) -> None:
        """Begin reading; ``wake`` must be safe to call from another thread."""
        self.wake = wake
        if self._thread and not self._thread.ident:  # not started yet (a new channel starts no new reader)
            self._thread.start()

    def take(self) -> list[str]:
        """The messages read since the last take (on the connection's thread)."""
        taken: list[str] = []
        while self.chunks:
            taken += self.chunks.popleft()
        return taken

    def done(self, count: int) -> None:
        """``count`` messages are confirmed: the reader may read as many more."""
        with self._room:
            self._unsettled -= count
            self._room.notify()

    def stop(self) -> None:
        with self._room:
            self._stopped = True
            self._room.notify()

    def _read(self, messages: Iterable[str]) -> None:
        count = 0
        try:
            for chunk in _lines(messages):
                with self._room:
                    while self._unsettled >= self._limit and not self._stopped:
                        self._room.wait()
                    if self._stopped:
                        return
                    self._unsettled += len(chunk)
                self.chunks.append(chunk)
                count += len(chunk)
                self._wake()
        except UnicodeError:
            self.failure = f"input line {count + 1} is not UTF-8 text; it and the lines after it were not sent"
        except OSError as exc:
            self.failure = (f"could not read input line {count + 1} ({exc.strerror or exc}); it and the lines "
                            "after it were not sent")
        except Exception as exc:  # e.g. no standard input at all (`<&-`)
            self.failure = f"could not read input line {count + 1} ({type(exc).__name__}: {exc})"
        finally:
            self.ended = True
            self._wake()

    def _wake(self) -> None:
        try:
            self.wake()
        except Exception:  # the connection is closed already: nobody is left to wake
            pass


def _lines(messages: Iterable[str]) -> Iterable[list[str]]:
    """Lines in chunks: from a file, each read's complete lines (as many as have come, in one read of
    the file descriptor); from anything else, one at a time. UnicodeError at a line that is not UTF-8,
    once the lines before it are out."""
    if messages is None:  # `python new_task.py --stdin <&-`
        raise OSError(errno.EBADF, "standard input is closed")
    try:
        fd = messages.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None:
        for message in messages:
            if not _is_text(message):
                raise UnicodeError
            yield [message]
        return
    rest = b""
    while True:
        data = os.read(fd, 1 << 16)
        buffer = rest + data
        cut = buffer.rfind(b"\n") + 1 if data else len(buffer)  # at the end of input, the last line too
        block, rest = buffer[:cut], buffer[cut:]
        if block:
            try:
                text = block.decode()
            except UnicodeDecodeError as exc:  # the lines before the one that is not UTF-8 go out first
                good = block.rfind(b"\n", 0, exc.start) + 1
                if good:
                    yield _split(block[:good].decode())
                raise UnicodeError from None
            yield _split(text)
        if not data:
            return


def _split(text: str) -> list[str]:
    lines = text.removesuffix("\n").split("\n")
    return [line.rstrip("\r") for line in lines] if "\r" in text else lines


def _is_text(message: str) -> bool:
    try:
        message.encode()
        return True
    except UnicodeEncodeError:
        return False


class _Message:
    """A message read and not yet reported: its text, its place in the input, whether it is stored."""

    __slots__ = ("text", "number", "confirmed", "returned")

    def __init__(self, text: str, number: int) -> None:
        self.text = text
        self.number = number  # 1 for the first message of the input
        self.confirmed = False
        self.returned = False  # no queue took it


class _Publisher:
    def __init__(
        self,
        brokers: nodes.Nodes,
        declare: Callable[[Channel], None],
        send: Callable[[Channel, str], None],
        source: _Source,
        sent: Callable[[str], None],
        window: int,
        confirm_timeout: float,
        retry_for: float,
    ) -> None:
        self.nodes = brokers
        self.declare = declare
        self.send = send
        self.source = source
        self.sent = sent
        self.window = window
        self.confirm_timeout = confirm_timeout
        self.retry_for = retry_for
        self.ioloop = IOLoop()
        self.connection: pika.SelectConnection | None = None
        self.channel: Any = None  # the channel published on now; frames of earlier ones are ignored
        self.messages: collections.deque[_Message] = collections.deque()  # read, not yet reported, in order
        self.todo: collections.deque[_Message] = collections.deque()  # to publish (again), in input order
        self.inflight: dict[int, _Message] = {}  # delivery tag on this channel: message not yet confirmed
        self.tags: collections.deque[int] = collections.deque()  # those tags, in order (some settled)
        self.tag = 0  # the last delivery tag of this channel
        self.read = 0  # messages read so far
        self.confirmed = 0  # messages confirmed and reported, a prefix of the input
        self.waiting_since = 0.0  # since when the oldest message in flight waits for its confirm
        self.resume_at = 0.0  # no publishing before this (a pause before publishing again)
        self.trouble = ""  # why messages are being published again, while they are
        self.trouble_since = 0.0
        self.failing = ""  # the error to end with, once the confirms in flight have come
        self.failing_since = 0.0
        self.connected = False  # some node has answered
        self.tried: list[tuple[int, BaseException]] = []  # nodes that did not answer, this round
        self.blocked_since: float | None = None  # the broker holds this connection back
        self.said_blocked = False
        self.closing = False
        self.error: str | None = None
        self.output_gone = False

    def run(self) -> None:
        self._connect(0)
        self.ioloop.call_later(WATCH, self._watch)
        self.ioloop.start()

    def progress(self) -> str:
        pending = len(self.messages) + sum(map(len, self.source.chunks))
        text = f"{self.confirmed} message{'s' * (self.confirmed != 1)} confirmed"
        if pending:
            text += f", {pending} not confirmed (send input from message {self.confirmed + 1} on again)"
        return text

    # connections and channels

    def _connect(self, index: int) -> None:
        if self.closing:  # (a connection that was to be tried after a pause)
            return
        self.nodes.current = index
        self.connection = pika.SelectConnection(
            self.nodes.params[index],
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
            custom_ioloop=self.ioloop,
        )

    def _on_open(self, connection: pika.SelectConnection) -> None:
        if self.connected:
            warn(f"warning: connected again, to the broker at {self.nodes.where()}")
        self.connected, self.tried = True, []
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        self._open_channel()

    def _on_open_error(self, connection: pika.SelectConnection, exc: BaseException) -> None:
        if nodes.fatal(exc):  # no other node will take this login either
            self._stop(broker.explain(exc, self.nodes.params[self.nodes.current]))
            return
        self.tried.append((self.nodes.current, exc))
        following = (self.nodes.current + 1) % len(self.nodes)
        if not self.connected:  # the first round: each node once, then give up
            if len(self.tried) < len(self.nodes):
                self._connect(following)
            else:
                self._stop(self.nodes.none_answered(self.tried))
            return
        self.ioloop.call_later(PAUSE, functools.partial(self._connect, following))

    def _open_channel(self) -> None:
        if self.connection and self.connection.is_open and not self.closing:
            self.connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        self.channel, self.tag = channel, 0
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=functools.partial(self._on_confirm, channel))
        self.declare(channel)  # the broker takes a channel's commands in order: no need to wait
        self.source.start(lambda: self.ioloop.add_callback_threadsafe(self._pump))
        self._pump()

    def _pump(self) -> None:
        """Publish what has been read, up to the window; close once all is confirmed."""
        for text in self.source.take():
            self.read += 1
            message = _Message(text, self.read)
            self.messages.append(message)
            self.todo.append(message)
        if self.closing or self.failing or not self.channel or not self.channel.is_open:
            return
        if time.monotonic() < self.resume_at:
            return  # a call_later pumps again then
        if not self.inflight:
            self.waiting_since = time.monotonic()
        while self.todo and len(self.inflight) < self.window:
            message = self.todo.popleft()
            self.send(self.channel, message.text)
            self.tag += 1
            self.inflight[self.tag] = message
            self.tags.append(self.tag)
        if self.source.ended and not self.messages and not self.source.chunks:
            self._stop(self.source.failure and self._with_progress(self.source.failure))

    def _take_back(self, messages: list[_Message] | None = None) -> None:
        """Publish these (default: all in flight on this channel) again, before any others."""
        if messages is None:
            messages = list(self.inflight.values())
            self.inflight.clear()
            self.tags.clear()
        self.todo.extendleft(sorted(messages, key=lambda m: m.number, reverse=True))

    def _troubled(self, trouble: str) -> bool:
        """Messages were not stored: True while there is time to publish them again."""
        now = time.monotonic()
        if not self.trouble:
            self.trouble, self.trouble_since = trouble, now
            if self.retry_for > 0:
                warn(f"warning: {trouble}; publishing again, for up to {self.retry_for:g} s")
        if now - self.trouble_since < self.retry_for:
            return True
        self._fail(f"{self.trouble}; gave up after {self.retry_for:g} s of trying" if self.retry_for > 0
                   else self.trouble)
        return False

    def _fail(self, error: str) -> None:
        """End with this error, once the confirms still in flight for earlier messages have come."""
        if not self.failing:
            self.failing, self.failing_since = error, time.monotonic()
        self._finish_failing()

    def _finish_failing(self) -> None:
        if self.failing and (not self.inflight or time.monotonic() - self.failing_since >= self.confirm_timeout):
            self._stop(self._with_progress(self.failing))

    def _stop(self, error: str | None = None) -> None:
        """Close, and end once closed; ``error``, if any, is what the user is told."""
        if error and not self.error:
            self.error = error
        if self.closing:
            return
        self.closing = True
        if self.connection and self.connection.is_open and self.blocked_since is None:
            self.connection.close()
        elif not (self.connection and self.connection.is_closing):
            self.ioloop.stop()  # (a blocked connection would not be closed until its alarm clears)

    def _on_channel_closed(self, channel: Any, reason: Exception) -> None:
        # Closed by the broker: no retry will mend that. (A lost connection closes it too: see _on_closed.)
        if channel is self.channel and not self.closing and isinstance(reason, px.ChannelClosedByBroker):
            self._stop(self._with_progress(broker.explain(reason, self.nodes.params[self.nodes.current])))

    def _on_closed(self, connection: pika.SelectConnection, reason: Exception) -> None:
        if self.closing:
            self.ioloop.stop()
            return
        if isinstance(reason, px.ConnectionBlockedTimeout):
            bound = self.nodes.params[self.nodes.current].blocked_connection_timeout
            self._stop(self._with_progress(
                f"the broker at {self.nodes.where()} held this publisher back for longer than the URL's "
                f"blocked_connection_timeout={bound:g} s: it is low on memory or disk (a resource alarm); free "
                "some, or raise the broker's limits"))
            return
        self.channel, self.blocked_since, self.said_blocked = None, None, False
        self._take_back()
        if self._troubled(f"lost the connection to the broker at {self.nodes.where()} ({nodes.reason(reason)})"):
            following = (self.nodes.current + 1) % len(self.nodes)
            self.ioloop.call_later(PAUSE, functools.partial(self._connect, following))

    def _with_progress(self, text: str) -> str:
        """For a batch, say how far it got: what a user needs to send the rest again."""
        return f"{text}; {self.progress()}" if self.source.streamed else text

    # confirms, returns, alarms

    def _on_confirm(self, channel: Any, frame: Any) -> None:
        if channel is not self.channel:
            return  # a channel given up on: its messages are published again
        method = frame.method
        settled: list[_Message] = []
        if method.multiple:
            while self.tags and self.tags[0] <= method.delivery_tag:
                message = self.inflight.pop(self.tags.popleft(), None)
                if message:
                    settled.append(message)
        else:
            message = self.inflight.pop(method.delivery_tag, None)
            if message:
                settled.append(message)
        if isinstance(method, Basic.Nack):
            self._report()
            first = settled[0] if settled else None
            what = f"message {first.number} {first.text!r}" if first else "a message"
            if self._troubled(f"the broker refused to store {what} (a nack: is the queue full, with a "
                              "max-length policy, or a cluster node down?)"):
                self._take_back(settled)
                self.resume_at = time.monotonic() + PAUSE
                self.ioloop.call_later(PAUSE, self._pump)
            return
        for message in settled:
            message.confirmed = not message.returned
        if settled:
            self.waiting_since, self.trouble = time.monotonic(), ""
        self._report()
        self._finish_failing()
        self._pump()

    def _report(self) -> None:
        """Say "sent" for the confirmed messages, in input order, in one write."""
        if self.error or self.output_gone:
            return
        count = 0
        try:
            with cli.one_write():
                while self.messages and self.messages[0].confirmed:
                    count += 1
                    self.sent(self.messages.popleft().text)
        except BrokenPipeError:  # whoever read the output has gone (`| head`): stop, quietly
            self.output_gone = True
            self._stop()
        if count:
            self.confirmed += count
            self.source.done(count)

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        # A mandatory message no queue took: it is confirmed too, but it was not stored.
        if channel is not self.channel:
            return
        text = body.decode(errors="replace")
        returned = next((m for m in self.inflight.values() if m.text == text and not m.returned), None)
        if returned:
            returned.returned = True
        self._fail(f"no queue took the message {text!r} (routing key {method.routing_key!r}; was the queue "
                   "deleted?)")

    def _on_blocked(self, connection: Any, frame: Any) -> None:
        self.blocked_since = time.monotonic()

    def _on_unblocked(self, connection: Any, frame: Any) -> None:
        self.blocked_since = None
        self.waiting_since = time.monotonic()
        if self.said_blocked:
            self.said_blocked = False
            warn(f"warning: the broker at {self.nodes.where()} takes messages again")

    def _watch(self) -> None:
        """Now and then: say so when held back; publish again what waits too long for its confirm."""
        if self.closing:
            return
        self.ioloop.call_later(WATCH, self._watch)
        now = time.monotonic()
        if self.blocked_since is not None:
            if not self.said_blocked and now - self.blocked_since >= BLOCKED_SAY:
                self.said_blocked = True
                warn(f"warning: the broker at {self.nodes.where()} is holding this publisher back: it is low on "
                     "memory or disk (a resource alarm); waiting for it to clear (Ctrl+C to stop)")
        elif self.failing:
            self._finish_failing()
        elif self.inflight and self.channel and now - self.waiting_since >= self.confirm_timeout:
            if self._troubled(f"no confirm from the broker at {self.nodes.where()} for {self.confirm_timeout:g} s"):
                channel, self.channel = self.channel, None  # its confirms, should they come, are ignored
                self._take_back()
                channel.close()
                self.ioloop.call_later(PAUSE, self._open_channel)
        elif self.trouble and not (self.inflight or self.todo):
            self.trouble = ""  # nothing left that waits to be stored
        elif self.trouble:
            self._troubled(self.trouble)
