"""The brokers a script may use: one URL, or the nodes of a cluster, tried in the order given."""

from __future__ import annotations

import ssl

import pika.exceptions as px

from workqueue import broker

# Errors that no other node or later try will mend: the same users and vhosts hold cluster-wide.
FATAL = (px.ProbableAuthenticationError, px.AuthenticationError, px.ProbableAccessDeniedError)


class Nodes:
    """pika's parameters for each URL, and which one is in use."""

    def __init__(self, urls: list[str]) -> None:
        self.params = [broker.parameters(url) for url in urls]
        self.current = 0

    def __len__(self) -> int:
        return len(self.params)

    def order(self, start: int) -> list[int]:
        """Every node once, from ``start`` on, wrapping round."""
        return [(start + k) % len(self.params) for k in range(len(self.params))]

    def where(self, index: int | None = None) -> str:
        return broker.where(self.params[self.current if index is None else index])

    def none_answered(self, errors: list[tuple[int, BaseException]]) -> str:
        """One line for a connection that no node would open, naming every broker tried."""
        if len(errors) == 1:
            index, exc = errors[0]
            return broker.explain(exc, self.params[index])
        tried = "; ".join(f"{self.where(index)} ({self._detail(index, exc)})" for index, exc in errors)
        return f"no broker answered at any of the {len(errors)} URLs given: {tried}; {broker.START_HINT}"

    def _detail(self, index: int, exc: BaseException) -> str:
        """A few words for a node that did not answer; the whole story for a TLS problem."""
        cause = broker.root_cause(exc)
        if isinstance(cause, ssl.SSLError) or not isinstance(cause, OSError):
            return broker.explain(exc, self.params[index])
        return reason(exc)


def reason(exc: BaseException) -> str:
    """Why a connection failed or was lost, in a few words."""
    cause = broker.root_cause(exc)
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    if isinstance(cause, px.ConnectionClosedByBroker):
        return f"closed by the broker: {cause.reply_text}"
    return str(cause) or type(cause).__name__
