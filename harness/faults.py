"""Ports that do not answer, as a dead node's do: for the tests and the benchmark of connecting past one.
(A node's own faults, killed, frozen, cut off or partitioned, are methods of ``harness.brokers.Node``.)"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from harness.brokers import TAG, free_port
from harness.containers import iptables


@contextlib.contextmanager
def dropping_port() -> Iterator[int]:
    """A port whose packets vanish (a firewall that drops them): a TCP connection to it is never answered.
    Needs iptables and root (or the docker group: see harness.containers.iptables); the rule goes when the block
    ends."""
    port = free_port()
    rule = ["INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP", "-m", "comment", "--comment", TAG]
    iptables("-I", *rule)
    try:
        yield port
    finally:
        iptables("-D", *rule, check=False)


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that takes TCP connections and never speaks (a broker's frozen host, or no broker at all)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]
