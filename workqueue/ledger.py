"""The publisher's book of messages: each one's life from read to reported, with no I/O.

A message is *read* (``add``), waits *to publish* (``todo``), is *in flight* under the delivery tag of
the channel it was published on (``publish``), is *settled* by a confirm (``settle``) and, once it and
every message before it are confirmed, *reported* in input order (``reportable``). A nack, a channel
given up on or a lost connection puts messages back to publish again (``take_back``), ahead of the
rest, in input order. The connection code drives it; so can a test.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator


class Message:
    """A message read and not yet reported: its text, its place in the input, what became of it."""

    __slots__ = ("text", "number", "confirmed", "returned")

    def __init__(self, text: str, number: int) -> None:
        self.text = text
        self.number = number  # 1 for the first message of the input
        self.confirmed = False  # the broker stored it
        self.returned = False  # no queue took it (it is confirmed all the same, but not stored)

    def __repr__(self) -> str:
        return f"Message({self.text!r}, {self.number})"


class Ledger:
    def __init__(self, window: int) -> None:
        """``window``: messages in flight at most."""
        self.window = window
        self.unreported: collections.deque[Message] = collections.deque()  # read, not yet reported, in order
        self.todo: collections.deque[Message] = collections.deque()  # to publish (again), in input order
        self.inflight: dict[int, Message] = {}  # delivery tag on this channel: message not yet confirmed
        self._tags: collections.deque[int] = collections.deque()  # those tags in order (some settled since)
        self._tag = 0  # the last delivery tag given on this channel
        self.read = 0  # messages read so far
        self.reported = 0  # messages reported, a prefix of the input

    def add(self, texts: list[str]) -> None:
        """Messages just read: to publish, after those before them."""
        for text in texts:
            self.read += 1
            message = Message(text, self.read)
            self.unreported.append(message)
            self.todo.append(message)

    def publish(self) -> Iterator[Message]:
        """The messages to publish now, each put in flight under the channel's next delivery tag as it is
        taken: as many as wait, up to the window."""
        while self.todo and len(self.inflight) < self.window:
            message = self.todo.popleft()
            self._tag += 1
            self.inflight[self._tag] = message
            self._tags.append(self._tag)
            yield message

    def settle(self, delivery_tag: int, multiple: bool) -> list[Message]:
        """The messages a confirm (an ack or a nack) answers, taken out of flight, in order; none for a
        tag that is not in flight (settled already)."""
        settled: list[Message] = []
        if multiple:
            while self._tags and self._tags[0] <= delivery_tag:
                message = self.inflight.pop(self._tags.popleft(), None)
                if message:
                    settled.append(message)
        else:
            message = self.inflight.pop(delivery_tag, None)
            if message:
                settled.append(message)
        return settled

    def confirm(self, messages: list[Message]) -> None:
        """An ack: these are stored (those returned excepted)."""
        for message in messages:
            message.confirmed = not message.returned

    def take_back(self, messages: list[Message] | None = None) -> None:
        """Publish these again, ahead of the others, in input order; by default every message in flight,
        on a channel given up on: the next channel's delivery tags start again at 1."""
        if messages is None:
            messages = list(self.inflight.values())
            self.inflight.clear()
            self._tags.clear()
            self._tag = 0
        self.todo.extendleft(sorted(messages, key=lambda m: m.number, reverse=True))

    def returned(self, text: str) -> Message | None:
        """A message the broker returned: no queue took it. A return names no delivery tag, so its text
        tells which; of messages of the same text in flight, the first not yet returned."""
        message = next((m for m in self.inflight.values() if m.text == text and not m.returned), None)
        if message:
            message.returned = True
        return message

    def reportable(self) -> list[Message]:
        """The confirmed messages that every message before them is confirmed too, taken off the book, in
        order: those that may be reported as sent now."""
        ready: list[Message] = []
        while self.unreported and self.unreported[0].confirmed:
            ready.append(self.unreported.popleft())
        self.reported += len(ready)
        return ready

    def waiting(self) -> bool:
        """Some message is still to be stored: in flight, or to publish."""
        return bool(self.inflight or self.todo)

    def settled(self) -> bool:
        """Every message read was reported."""
        return not self.unreported
