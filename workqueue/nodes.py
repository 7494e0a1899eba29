"""The brokers a script may use: one URL, or the nodes of a cluster.

This module alone decides how they are reached, for both scripts, the demo and the benchmark:

- **Order.** A round tries every node once, from a start, wrapping round: the first connection of a
  run starts at the first URL; after a node is lost, the next round starts at the node after it.
- **Within a round** there is no pause: a node that does not answer hands over to the next one at once.
- **Between rounds** (every node tried, none answered) a worker waits :class:`Backoff`: 0.5 s, doubling
  to 10 s, each wait cut at random by up to half, so that many workers do not knock at once. After a
  node is lost, the first round starts at once at the next node when there are others, and after the
  first wait when there are none.
- **A node that does not answer** is passed over quickly when there are others to try: in a round of
  several nodes each gets :data:`QUICK` seconds for the whole handshake (TCP, TLS, AMQP), unless its URL
  sets ``connection_timeout=``. A quick round in which no node answered and some ran out of time is
  followed at once by a patient one, with pika's own bounds (10 s for TCP, 15 s in all), so that a
  slow but healthy broker still gets in; a single URL always gets those.
- **A node that falls silent** is left as soon as it is known dead (:class:`Silence`): no byte from it
  for one and a half times its heartbeat timeout (:data:`HEARTBEAT` by default: 7.5 s), when a live
  broker sends something at least once a timeout. Then it is as if the connection had been reset.
- **Giving up.** A refused login or virtual host is :func:`fatal`: every node has the same users, so
  no other node or later round will mend it. A run's first round that finds no node raises
  :class:`NoneAnswered`, naming each broker tried.
"""

from __future__ import annotations

import copy
import random
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions as px

from workqueue import broker, uri
from workqueue.report import Failure

FIRST_DELAY = 0.5  # seconds before the first round after the only node is lost, or the second round
MAX_DELAY = 10.0  # seconds between rounds at most
QUICK = 1.5  # seconds for a whole handshake, in a round of several nodes
HEARTBEAT = uri.HEARTBEAT  # seconds: the heartbeat timeout asked of the broker unless the URL gives heartbeat=


def fatal(exc: BaseException) -> bool:
    """An error no other node or later try will mend: the broker refused the login or the virtual host
    (the same users and virtual hosts hold cluster-wide). pika calls a connection lost during the
    handshake a "probable" refusal too: that one is not fatal."""
    if isinstance(exc, px.AuthenticationError):
        return True
    if isinstance(exc, (px.ProbableAuthenticationError, px.ProbableAccessDeniedError)):
        return "ConnectionClosedByBroker" in str(exc) and "is down" not in str(exc)
    return False


def reason(exc: BaseException) -> str:
    """Why a connection failed or was lost, in a few words."""
    cause = broker.root_cause(exc)
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    if isinstance(cause, px.ConnectionClosedByBroker):
        return f"closed by the broker: {cause.reply_text}"
    return str(cause) or type(cause).__name__


class NoneAnswered(Failure):
    """No node would open a connection; ``errors`` holds (index, error) for each node tried."""

    def __init__(self, text: str, errors: list[tuple[int, BaseException]]) -> None:
        super().__init__(text)
        self.errors = errors


class Backoff:
    """The wait before each round after a node is lost: none before the first when there are other nodes
    (that round starts at another one), else 0.5 s, then twice as long each round up to 10 s, each cut at
    random by up to half. ``reset()`` once a node answers."""

    def __init__(self, several: bool = False) -> None:
        self._several = several
        self._delay = FIRST_DELAY
        self._first = True

    def next(self) -> float:
        if self._first and self._several:
            self._first = False
            return 0.0
        delay = self._delay * random.uniform(0.5, 1.0)
        self._delay = min(self._delay * 2, MAX_DELAY)
        return delay

    def reset(self) -> None:
        self._delay, self._first = FIRST_DELAY, True


class Nodes:
    """pika's parameters for each URL, and which node is in use (``current``)."""

    def __init__(self, urls: list[str]) -> None:
        self.params = [broker.parameters(url) for url in urls]
        self.current = 0

    def __len__(self) -> int:
        return len(self.params)

    def where(self, index: int | None = None) -> str:
        return broker.where(self.params[self.current if index is None else index])

    @property
    def in_use(self) -> pika.ConnectionParameters:
        return self.params[self.current]

    def round(self, start: int | None = None, patient: bool = False) -> Round:
        """A round over every node, from ``start`` (default: the node after the one in use); ``patient``:
        with pika's own bounds on the handshake (always, for a single node)."""
        return Round(self, (self.current + 1) if start is None else start, patient or len(self) == 1)

    def attempt(self, index: int, patient: bool) -> pika.ConnectionParameters:
        """The parameters to try a node with: with the quick bound on the handshake, or pika's own."""
        params = self.params[index]
        if patient or getattr(params, "timeouts_given", False):
            return params
        quick = copy.copy(params)
        quick.socket_timeout = quick.stack_timeout = QUICK
        return quick

    def connect(self, start: int | None = 0, timeout: float | None = None) -> pika.BlockingConnection:
        """A connection to the first node that answers, from ``start`` on (None: the node after the one in
        use), and that node becomes the one in use. ``timeout``: seconds for each try at most, once each
        (to clean up). Failure for a refused login; NoneAnswered if no node answers."""
        tries = self.round(start)
        while True:
            for index in tries:
                params = tries.params(index)
                if timeout:
                    params = copy.copy(params)
                    params.socket_timeout = params.stack_timeout = timeout
                    params.connection_attempts = 1
                try:
                    connection = pika.BlockingConnection(params)
                except broker.CONNECT_ERRORS as exc:
                    tries.failed(index, exc)
                    continue
                tries.answered(index)
                return connection
            if timeout or not tries.again():
                raise tries.none()
            tries = self.round(start, patient=True)

    def none_answered(self, errors: list[tuple[int, BaseException]]) -> str:
        """One line for a connection that no node would open, naming every broker tried."""
        if len(errors) == 1:
            index, exc = errors[0]
            return broker.explain(exc, self.params[index])
        tried = "; ".join(f"{self.where(index)} ({self._detail(index, exc)})" for index, exc in errors)
        if all(broker.timed_out(exc) for _, exc in errors):
            return f"no broker answered at any of the {len(errors)} URLs given: {tried}; {broker.TIMEOUT_HINT}"
        return f"no broker answered at any of the {len(errors)} URLs given: {tried}; {broker.START_HINT}"

    def _detail(self, index: int, exc: BaseException) -> str:
        """A few words for a node that did not answer; the whole story for a TLS problem."""
        cause = broker.root_cause(exc)
        if fatal(exc) or isinstance(cause, ssl.SSLError):
            return broker.explain(exc, self.params[index])
        if broker.timed_out(exc):
            return f"no answer within {broker.bound(exc, self.params[index]):g} s"
        return reason(exc)


class Round:
    """One round over the nodes: iterate for the index of each node to try, in order; say ``failed`` for
    each that does not answer and ``answered`` for the one that does."""

    def __init__(self, nodes: Nodes, start: int, patient: bool) -> None:
        self.nodes = nodes
        self.order = [(start + k) % len(nodes) for k in range(len(nodes))]
        self.patient = patient
        self.errors: list[tuple[int, BaseException]] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def params(self, index: int) -> pika.ConnectionParameters:
        """The parameters to try that node with in this round."""
        return self.nodes.attempt(index, self.patient)

    def next(self) -> int | None:
        """The node to try after those that failed so far; None once every node was tried."""
        return self.order[len(self.errors)] if len(self.errors) < len(self.order) else None

    def failed(self, index: int, exc: BaseException) -> None:
        """That node did not answer; a Failure, at once, if no node will (a refused login)."""
        if fatal(exc):
            raise Failure(broker.explain(exc, self.nodes.params[index])) from None
        self.errors.append((index, exc))

    def answered(self, index: int) -> None:
        """That node answered: it is the one in use now."""
        self.nodes.current = index

    def none(self) -> NoneAnswered:
        """The error for a round in which no node answered."""
        return NoneAnswered(self.nodes.none_answered(self.errors), self.errors)

    def again(self) -> bool:
        """Whether a quick round in which no node answered is to be followed at once by a patient one:
        some node ran out of the quick bound, and may be slow rather than gone."""
        return not self.patient and any(broker.timed_out(exc) and self.params(index) is not self.nodes.params[index]
                                        for index, exc in self.errors)  # (a URL's own bound is not shortened)


class Silence:
    """Whether a connection has gone silent: no byte from the broker for one and a half times its heartbeat
    timeout T. A broker sends a heartbeat whenever it has sent nothing for a whole check of its own (every
    T/2), so at most about T passes between two bytes from a live one; the half more is the margin. (pika's
    own check waits from T + 5 s to twice that.) ``dead(bytes_received)`` after each read. A check that
    comes late (this process was held up) judges nothing: what came meanwhile may not be read yet."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout  # 0: no heartbeats, no judging
        self.limit = 1.5 * timeout  # seconds of silence that make a connection dead
        self._count = -1
        self.heard = self._checked = time.monotonic()  # when a byte last came (as far as reads have seen)

    def dead(self, bytes_received: int) -> bool:
        now = time.monotonic()
        late, self._checked = now - self._checked > max(self.timeout / 2, 1.0), now
        if bytes_received != self._count or late or not self.timeout:
            self._count, self.heard = bytes_received, now
            return False
        return now - self.heard >= self.limit


def silence(connection: Any) -> Silence:
    """The silence check for a connection just opened (pika's, or a BlockingConnection), by the heartbeat
    timeout the broker and this client agreed on."""
    impl = getattr(connection, "_impl", connection)
    return Silence(float(impl.params.heartbeat or 0))


def bytes_received(connection: Any) -> int:
    return int(getattr(connection, "_impl", connection).bytes_received)


def abort(connection: Any, timeout: float) -> None:
    """Drop a silent connection at once: a frozen broker would never answer a goodbye. Its close callbacks
    and errors come as for a connection reset. (pika's own heartbeat check ends a connection this way.)"""
    impl = getattr(connection, "_impl", connection)
    impl._terminate_stream(px.AMQPHeartbeatTimeout(f"no answer from it for {timeout:g} s"))
