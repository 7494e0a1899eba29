"""Publishing with publisher confirms: "Sent" is printed only for what the broker has stored.

Messages are published over one connection with up to ``window`` of them unconfirmed at once, so a
batch goes at broker speed while every message printed as sent is one the broker confirmed.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pika
from pika.spec import Basic

from workqueue import broker
from workqueue.cli import Failure

WINDOW = 1000  # unconfirmed messages in flight at most

Channel = Any  # pika.channel.Channel: basic_publish and queue_declare as in the tutorial


def publish(
    url: str,
    declare: Callable[[Channel], None],
    send: Callable[[Channel, str], None],
    messages: Iterable[str],
    sent: Callable[[str], None],
    window: int = WINDOW,
) -> None:
    """Open a connection, ``declare(channel)``, ``send(channel, message)`` each message, and call
    ``sent(message)`` in order as the broker confirms them. Raises Failure on anything less."""
    params = broker.parameters(url)
    source = _Source(messages, window)
    job = _Publisher(params, declare, send, source, sent, window)
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
    """The messages to send. A list is taken as it is; any other iterable (standard input, which may
    wait for a person to type) is read on a thread of its own, so that heartbeats go on meanwhile."""

    def __init__(self, messages: Iterable[str], window: int) -> None:
        self.ready: collections.deque[str] = collections.deque()
        self.ended = False
        self.failure = ""  # why reading stopped early, if it did
        self.wake: Callable[[], None] = lambda: None
        self._room = threading.Semaphore(window)
        self._stopped = False
        self._scheduled = threading.Event()
        self._thread: threading.Thread | None = None
        self.streamed = not isinstance(messages, (list, tuple))  # a batch: report progress on failure
        if not self.streamed:
            for message in messages:
                if not _is_text(message):
                    raise Failure("the message is not UTF-8 text")
            self.ready.extend(messages)
            self.ended = True
        else:
            self._thread = threading.Thread(target=self._read, args=(iter(messages),), daemon=True)

    def start(self, wake: Callable[[], None]) -> None:
        """Begin reading; ``wake`` must be safe to call from another thread."""
        self.wake = wake
        if self._thread:
            self._thread.start()

    def take(self, most: int) -> Iterator[str]:
        """Up to ``most`` of the messages read so far (on the connection's thread)."""
        self._scheduled.clear()
        while self.ready and most > 0:
            most -= 1
            yield self.ready.popleft()

    def done(self, count: int) -> None:
        """``count`` messages are confirmed: the reader may read as many more."""
        for _ in range(count):
            self._room.release()

    def stop(self) -> None:
        self._stopped = True
        self._room.release()

    def _read(self, messages: Iterator[str]) -> None:
        count = 0
        try:
            for message in messages:
                if not _is_text(message):
                    raise UnicodeError  # undecodable bytes, kept by Python as surrogates
                self._room.acquire()  # read no more than a window ahead of the confirms
                if self._stopped:
                    return
                self.ready.append(message)
                count += 1
                if not self._scheduled.is_set():
                    self._scheduled.set()
                    self._wake()
        except UnicodeError:
            self.failure = f"input line {count + 1} is not UTF-8 text; it and the lines after it were not sent"
        except OSError as exc:
            self.failure = (f"could not read input line {count + 1} ({exc.strerror or exc}); it and the lines "
                            "after it were not sent")
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        try:
            self.wake()
        except Exception:  # the connection is closed already: nobody is left to wake
            pass


def _is_text(message: str) -> bool:
    try:
        message.encode()
        return True
    except UnicodeEncodeError:
        return False


class _Publisher:
    def __init__(
        self,
        params: pika.URLParameters,
        declare: Callable[[Channel], None],
        send: Callable[[Channel, str], None],
        source: _Source,
        sent: Callable[[str], None],
        window: int,
    ) -> None:
        self.params = params
        self.declare = declare
        self.send = send
        self.source = source
        self.sent = sent
        self.window = window
        self.error: str | None = None
        self.channel: Any = None
        self.unconfirmed: collections.deque[str] = collections.deque()  # in delivery-tag order
        self.published = 0  # delivery tag of the last message published
        self.confirmed = 0  # messages confirmed and reported, a prefix of those published
        self.acked: set[int] = set()  # tags acked out of order, beyond the prefix
        self.acked_upto = 0  # every tag up to this one is acked (multiple acks)
        self.closing = False
        self.output_gone = False
        self.connection = pika.SelectConnection(
            params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
        )

    def run(self) -> None:
        self.connection.ioloop.start()

    def progress(self) -> str:
        pending = len(self.unconfirmed) + len(self.source.ready)
        text = f"{self.confirmed} message{'s' * (self.confirmed != 1)} confirmed"
        if pending:
            text += (f", {pending} not confirmed (send input from message {self.confirmed + 1} on again)")
        return text

    # connection and channel

    def _on_open(self, connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, connection: pika.SelectConnection, exc: BaseException) -> None:
        self.error = broker.explain(exc, self.params)
        connection.ioloop.stop()

    def _on_channel_open(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm)
        self.declare(channel)  # the broker takes a channel's commands in order: no need to wait
        self.source.start(lambda: self.connection.ioloop.add_callback_threadsafe(self._pump))
        self._pump()

    def _pump(self) -> None:
        """Publish what has been read, up to the window; close once all is confirmed."""
        if self.closing:
            return
        for message in self.source.take(self.window - len(self.unconfirmed)):
            self.send(self.channel, message)
            self.published += 1
            self.unconfirmed.append(message)
        if self.source.ended and not self.source.ready and not self.unconfirmed:
            self._close(self.source.failure and self._with_progress(self.source.failure))

    def _close(self, error: str | None = None) -> None:
        if error and not self.error:
            self.error = error
        if not self.closing:
            self.closing = True
            if self.connection.is_open:
                self.connection.close()

    def _on_channel_closed(self, channel: Any, reason: Exception) -> None:
        if not self.closing:
            self._close(self._failed(reason))

    def _on_closed(self, connection: pika.SelectConnection, reason: Exception) -> None:
        if not self.closing:
            self.closing = True
            self.error = self.error or self._failed(reason)
        connection.ioloop.stop()

    def _failed(self, reason: BaseException) -> str:
        return self._with_progress(broker.explain(reason, self.params))

    def _with_progress(self, text: str) -> str:
        """For a batch, say how far it got: what a user needs to send the rest again."""
        return f"{text}; {self.progress()}" if self.source.streamed else text

    # confirms and returns

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if isinstance(method, Basic.Nack):
            self._report()
            index = method.delivery_tag - self.confirmed - 1
            what = repr(self.unconfirmed[index]) if 0 <= index < len(self.unconfirmed) else ""
            text = (f"the broker refused to store message {method.delivery_tag} {what} (a nack: is the queue "
                    "full, with a max-length policy, or the broker short of memory or disk?)")
            self._close(self._with_progress(text))
            return
        if method.multiple:
            self.acked_upto = max(self.acked_upto, method.delivery_tag)
        else:
            self.acked.add(method.delivery_tag)
        self._report()
        self._pump()

    def _report(self) -> None:
        """Say "sent" for the confirmed messages, in the order they were sent."""
        if self.error or self.output_gone:
            return
        while self.unconfirmed:
            tag = self.confirmed + 1
            if tag <= self.acked_upto:
                pass
            elif tag in self.acked:
                self.acked.discard(tag)
            else:
                break
            self.confirmed = tag
            try:
                self.sent(self.unconfirmed.popleft())
            except BrokenPipeError:  # whoever read the output has gone (`| head`): stop, quietly
                self.output_gone = True
                self._close("")
                return
            self.source.done(1)

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        # A mandatory message no queue took: it is confirmed too, but it was not stored.
        self._report()
        text = (f"no queue took the message {body.decode(errors='replace')!r} (routing key "
                f"{method.routing_key!r}; was the queue deleted?)")
        self._close(self._with_progress(text))
