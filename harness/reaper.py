"""What a process made with the harness is removed even when that process dies without removing it: killed
by SIGKILL, or a pytest-xdist worker whose controller went away. The idea of testcontainers' Ryuk, for nodes
that are processes too: a watcher, started with the first thing to watch, reads from a pipe what its owner
made (``watch``) and has removed (``forget``); when the pipe closes, as it does when its owner ends however
it ends, it removes what is left on its list and exits. A normal end leaves it nothing to do.

The list's lines: ``+KIND VALUE`` or ``-KIND VALUE``, KIND one of:
- ``group``, ``pid``: a process group (a node's rabbitmq-server and its Erlang VM) or a process (a script a
  test runs), as its number and its start time (a number the kernel gives another process later is never
  killed): thawed, then SIGKILLed;
- ``project``: a compose project's containers, networks and volumes;
- ``container``, ``network``: Docker's, removed (a container with its anonymous volumes);
- ``rules``: the iptables rules with this comment (see ``harness.faults.remove_rules``);
- ``dir``: a folder, removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Processes first: a folder goes once nothing uses it.
ORDER = ("group", "pid", "project", "container", "network", "rules", "dir")

_lock = threading.Lock()
_watcher: subprocess.Popen[str] | None = None


def watch(kind: str, value: str | int | Path) -> str:
    """Have ``value`` removed if this process ends without ``forget``-ting it (for a ``group`` or a ``pid``:
    the process's number). What to give ``forget``."""
    token = f"{kind} {_identity(kind, value)}"
    _tell(f"+{token}")
    return token


def forget(token: str) -> None:
    """What ``watch`` gave was removed by its owner."""
    _tell(f"-{token}")


def _identity(kind: str, value: str | int | Path) -> str:
    return f"{value} {_started(int(str(value)))}" if kind in ("group", "pid") else str(value)


def _started(pid: int) -> str:
    """When the process started (clock ticks since boot), or "" if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _tell(line: str) -> None:
    global _watcher
    assert line.split(" ", 1)[0][1:] in ORDER, line
    with _lock:
        if _watcher is None or _watcher.poll() is not None:
            if line.startswith("-"):
                return
            # A session of its own: a Ctrl+C to the terminal's process group does not reach it, and it outlives
            # its owner. Its end of the pipe is the only one: the owner's is not inherited by other children.
            _watcher = subprocess.Popen([sys.executable, "-m", "harness.reaper"], stdin=subprocess.PIPE, text=True,
                                        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert _watcher.stdin is not None
        try:
            _watcher.stdin.write(line + "\n")
            _watcher.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it is gone: nothing would be removed for us, as before it was started


def remove(kind: str, value: str) -> None:
    """Remove one thing left behind."""
    if kind in ("group", "pid"):
        number, started = value.split(" ", 1)
        if not started or _started(int(number)) != started:
            return  # ended already; the number may be another process's now
        send = os.killpg if kind == "group" else os.kill
        for signum in (signal.SIGCONT, signal.SIGKILL):  # a frozen node is thawed, or it would not die
            with contextlib.suppress(OSError):
                send(int(number), signum)
    elif kind == "project":
        label = f"label=com.docker.compose.project={value}"
        for listing, removal in ((["ps", "-aq"], ["rm", "-f", "-v"]), (["network", "ls", "-q"], ["network", "rm"]),
                                 (["volume", "ls", "-q"], ["volume", "rm", "-f"])):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                found = subprocess.run(["docker", *listing, "--filter", label], capture_output=True, text=True,
                                       timeout=60).stdout.split()
                if found:
                    subprocess.run(["docker", *removal, *found], capture_output=True, timeout=120)
    elif kind in ("container", "network"):
        command = ["rm", "-f", "-v", value] if kind == "container" else ["network", "rm", value]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["docker", *command], capture_output=True, timeout=120)
    elif kind == "rules":
        from harness.faults import remove_rules

        with contextlib.suppress(OSError, subprocess.SubprocessError):
            remove_rules(value)
    elif kind == "dir":
        shutil.rmtree(value, ignore_errors=True)


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # it ends when its owner has: its pipe closes
    left: dict[tuple[str, str], None] = {}
    for line in sys.stdin:
        kind, _, value = line[1:].rstrip("\n").partition(" ")
        if line.startswith("+"):
            left[(kind, value)] = None
        else:
            left.pop((kind, value), None)
    for kind in ORDER:
        for found, value in list(left):
            if found == kind:
                remove(kind, value)


if __name__ == "__main__":
    main()
