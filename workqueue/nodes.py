"""The brokers a script may use: one URL, or the nodes of a cluster, tried in the order given."""

from __future__ import annotations

import ssl

import pika.exceptions as px

from workqueue import broker


def fatal(exc: BaseException) -> bool:
    """An error no other node or later try will mend: the broker refused the login or the virtual host
    (the same users and virtual hosts hold cluster-wide). pika calls a connection lost during the
    handshake a "probable" refusal too: that one is not fatal."""
    if isinstance(exc, px.AuthenticationError):
        return True
    if isinstance(exc, (px.ProbableAuthenticationError, px.ProbableAccessDeniedError)):
        return "ConnectionClosedByBroker" in str(exc) and "is down" not in str(exc)
    return False


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
        if fatal(exc) or isinstance(cause, ssl.SSLError):
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
