"""Ports that do not answer, as a dead node's do: for the tests and the benchmark of connecting past one.
(A node's own faults, killed, frozen, cut off or partitioned, are methods of ``harness.brokers.Node``.)"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from harness import reaper
from harness.brokers import TAG, free_port
from harness.containers import iptables


@contextlib.contextmanager
def dropping_port() -> Iterator[int]:
    """A port whose packets vanish (a firewall that drops them): a TCP connection to it is never answered.
    Needs iptables and root (or the docker group: see harness.containers.iptables); the rule goes when the block
    ends."""
    port = free_port()
    rule = ["INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP", "-m", "comment", "--comment", TAG]
    reaper.watch("rules", TAG)
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


def remove_rules(tag: str = TAG) -> int:
    """Remove every iptables and ip6tables rule with this comment (by default, this process's): rules a
    process did not remove itself, as when a fault was interrupted as it began (Ctrl+C between the rule's
    insertion and the block that removes it), or when the process was killed. How many were removed."""
    if not (shutil.which("iptables") or Path("/usr/sbin/iptables").exists()):
        return 0
    removed = 0
    for tool in ("iptables", "ip6tables"):
        try:
            listing = iptables("-S", tool=tool)
        except (subprocess.SubprocessError, OSError):
            continue
        for line in listing.splitlines():
            words = shlex.split(line)
            if words[:1] == ["-A"] and tag in words:
                iptables("-D", *words[1:], check=False, tool=tool)
                removed += 1
    return removed
