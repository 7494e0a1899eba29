"""The publisher's connection (pika's SelectConnection): to the first node that answers, and after a
loss to the next one, with the backoff between rounds that ``nodes`` states; and whether the broker
holds it back (a memory or disk alarm)."""

from __future__ import annotations

import functools
import time
from typing import Any, Protocol

import pika
import pika.exceptions as px
from pika.adapters.select_connection import IOLoop

from workqueue import nodes
from workqueue.report import Failure, warn

BLOCKED_SAY = 1.0  # seconds held back by the broker before saying so


class Owner(Protocol):
    """What the link tells the publisher."""

    def opened(self, connection: pika.SelectConnection) -> None: ...
    def lost(self, reason: Exception) -> None: ...
    def failed(self, error: str) -> None: ...
    def closed(self) -> None: ...
    def unblocked(self) -> None: ...


class Link:
    """The connection: to the first node that answers, and after a loss to the next one, with the backoff
    between rounds. Tells its owner ``opened(connection)``, ``lost(reason)`` (not after ``close()``), and
    ``failed(error)`` when no node will take it; ``closed()`` once a ``close()`` is done."""

    def __init__(self, brokers: nodes.Nodes, ioloop: IOLoop, owner: Owner) -> None:
        self.nodes, self.ioloop, self.owner = brokers, ioloop, owner
        self.connection: pika.SelectConnection | None = None
        self.round: nodes.Round | None = None  # the nodes being tried, while no connection is open
        self.connected = False  # some node has answered
        self.backoff = nodes.Backoff(several=len(brokers) > 1)
        self.silence = nodes.Silence(0)  # of the connection open now
        self.blocked_since: float | None = None  # the broker holds this connection back
        self.said_blocked = False
        self.closing = False

    def open(self, start: int = 0, patient: bool = False) -> None:
        self.round = self.nodes.round(start, patient)
        self._try_next()

    def again(self) -> None:
        """After a loss: a round from the node after the one lost, once the backoff has passed."""
        self.ioloop.call_later(self.backoff.next(), functools.partial(self.open, self.nodes.current + 1))

    def close(self) -> None:
        self.closing = True
        if self.connection and self.connection.is_open and self.blocked_since is None:
            self.connection.close()
        elif not (self.connection and self.connection.is_closing):
            self.owner.closed()  # (a blocked connection would not be closed until its alarm clears)

    def _try_next(self) -> None:
        index = self.round.next() if self.round else None
        if self.closing or self.round is None or index is None:
            return
        self.connection = pika.SelectConnection(
            self.round.params(index),
            on_open_callback=functools.partial(self._on_open, index),
            on_open_error_callback=functools.partial(self._on_open_error, index),
            on_close_callback=self._on_closed,
            custom_ioloop=self.ioloop,
        )

    def _on_open(self, index: int, connection: pika.SelectConnection) -> None:
        assert self.round
        self.round.answered(index)
        self.round = None
        self.backoff.reset()
        if self.connected:
            warn(f"warning: connected again, to the broker at {self.nodes.where()}")
        self.connected = True
        self.silence = nodes.silence(connection)
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        self.owner.opened(connection)

    def _on_open_error(self, index: int, connection: pika.SelectConnection, exc: BaseException) -> None:
        assert self.round
        try:
            self.round.failed(index, exc)
        except Failure as failure:  # a refused login: no other node will take it either
            self.owner.failed(str(failure))
            return
        if self.round.next() is not None:
            self._try_next()
        elif self.round.again():  # some node ran out of the quick bound: once more, patiently
            self.open(self.round.order[0], patient=True)
        elif not self.connected:  # the first round: each node once, then give up
            self.owner.failed(self.round.none().args[0])
        else:
            self.again()

    def silent(self) -> bool:
        """Whether the open connection has gone silent, and is dead: if so, it is dropped (``lost`` follows)."""
        connection = self.connection
        if not (connection and connection.is_open and self.silence.dead(nodes.bytes_received(connection))):
            return False
        nodes.abort(connection, self.silence.limit)
        return True

    def received(self) -> int:
        """Bytes received on the open connection so far (0 if none is open)."""
        return nodes.bytes_received(self.connection) if self.connection else 0

    def leave(self, why: str) -> None:
        """Drop the open connection, for the next node (``lost`` follows): it talks, but does not do its work."""
        if self.connection and self.connection.is_open:
            self.connection._terminate_stream(px.AMQPConnectionError(why))

    def held_back(self) -> bool:
        """Whether the broker holds this connection back (a resource alarm); says so once it has for a while."""
        if self.blocked_since is None:
            return False
        if not self.said_blocked and time.monotonic() - self.blocked_since >= BLOCKED_SAY:
            self.said_blocked = True
            warn(f"warning: the broker at {self.nodes.where()} is holding this publisher back: it is low on "
                 "memory or disk (a resource alarm); waiting for it to clear (Ctrl+C to stop)")
        return True

    def _on_closed(self, connection: pika.SelectConnection, reason: Exception) -> None:
        self.blocked_since, self.said_blocked = None, False
        if self.closing:
            self.owner.closed()
        else:
            self.owner.lost(reason)

    def _on_blocked(self, connection: Any, frame: Any) -> None:
        self.blocked_since = time.monotonic()

    def _on_unblocked(self, connection: Any, frame: Any) -> None:
        self.blocked_since = None
        if self.said_blocked:
            self.said_blocked = False
            warn(f"warning: the broker at {self.nodes.where()} takes messages again")
        self.owner.unblocked()
