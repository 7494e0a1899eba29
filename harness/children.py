"""A script in a child process, its output lines collected with their arrival times as they come; and the
tasks a worker's lines tell of. For the demo, the benchmark and the tests alike."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple, TypeVar

from harness import reaper

ROOT = Path(__file__).resolve().parent.parent
RECEIVED = re.compile(r" \[x\] Received b'(.*)'")
T = TypeVar("T")


class Line(NamedTuple):
    at: float  # time.monotonic() when it came
    text: str  # without its newline


@dataclass
class Task:
    body: str
    received: float
    done: float | None = None


def tasks(lines: Iterable[Line], since: float = 0.0) -> list[Task]:
    """A worker's tasks, in order: each ``[x] Received b'...'`` line with the ``[x] Done`` after it (if one
    came); times in seconds after ``since``."""
    found: list[Task] = []
    for at, text in lines:
        received = RECEIVED.match(text)
        if received:
            found.append(Task(received[1], at - since))
        elif text == " [x] Done" and found and found[-1].done is None:
            found[-1].done = at - since
    return found


class Child:
    """A command in a child process (in ROOT). Its stdout and stderr lines are collected as they come, each
    by a thread of its own, into ``out`` and ``err`` (stderr into ``out`` with ``merge_stderr``).

    ``stdin``: False, none; True, a pipe left open (``proc.stdin``); a str, written to it, then closed.
    ``on_line``: called with each stdout line as it comes (on the reading thread, before the line is in
    ``out`` for anyone else to see).
    ``new_session``: the child leads a process group of its own, and ``stop()`` kills the whole group.
    """

    def __init__(self, cmd: list[str], env: dict[str, str], *, stdin: bool | str = False, merge_stderr: bool = False,
                 new_session: bool = False, on_line: Callable[[Child, Line], None] | None = None) -> None:
        self.started = time.monotonic()
        self.new_session = new_session
        self.on_line = on_line
        self.out: list[Line] = []
        self.err: list[Line] = []
        self.changed = threading.Condition()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, start_new_session=new_session,
                                     stdin=subprocess.PIPE if stdin is not False else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE)
        # Killed if this process is killed before it stops it (see harness.reaper).
        self.watched = reaper.watch("group" if new_session else "pid", self.proc.pid)
        streams = {"out": (self.proc.stdout, self.out), "err": (self.proc.stderr, self.err)}
        self.readers = {name: threading.Thread(target=self._read, args=streams[name], daemon=True)
                        for name in (["out"] if merge_stderr else ["out", "err"])}
        for reader in self.readers.values():
            reader.start()
        if isinstance(stdin, str):
            assert self.proc.stdin
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()

    def _read(self, stream: IO[str], into: list[Line]) -> None:
        for text in stream:
            line = Line(time.monotonic(), text.rstrip("\n"))
            with self.changed:
                into.append(line)
                if self.on_line and into is self.out:
                    self.on_line(self, line)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    @property
    def lines(self) -> list[str]:
        """Its stdout lines so far."""
        with self.changed:
            return [line.text for line in self.out]

    @property
    def errors(self) -> list[str]:
        """Its stderr lines so far."""
        with self.changed:
            return [line.text for line in self.err]

    @property
    def times(self) -> list[float]:
        """When each of its stdout lines came."""
        with self.changed:
            return [line.at for line in self.out]

    def count(self, text: str, errors: bool = False) -> int:
        """How many lines of stdout (stderr with ``errors``) so far contain ``text``."""
        with self.changed:
            return sum(text in line.text for line in (self.err if errors else self.out))

    def first(self, text: str, errors: bool = False) -> float | None:
        """When the first line of stdout (stderr with ``errors``) containing ``text`` came."""
        with self.changed:
            return next((line.at for line in (self.err if errors else self.out) if text in line.text), None)

    def tasks(self, since: float = 0.0) -> list[Task]:
        with self.changed:
            return tasks(list(self.out), since)

    def wait_until(self, found: Callable[[], T | None], timeout: float, what: str, errors: bool = False) -> T:
        """Until ``found()`` (called as lines come, with them locked) gives something other than None or
        False, and return it. AssertionError after ``timeout`` seconds, or once the stream (stderr with
        ``errors``) has ended without it."""
        deadline = time.monotonic() + timeout
        reader = self.readers.get("err" if errors else "out", self.readers["out"])
        with self.changed:
            while True:
                result = found()
                if result is not None and result is not False:
                    return result
                left = deadline - time.monotonic()
                if left <= 0 or not reader.is_alive():
                    why = f"waited {timeout:g} s" if left <= 0 else f"the output ended (exit {self.proc.poll()})"
                    raise AssertionError(f"{why} for {what}; stdout: {[t for _, t in self.out[-20:]]}; "
                                         f"stderr: {[t for _, t in self.err[-10:]]}")
                self.changed.wait(min(left, 0.5))

    def wait_for(self, text: str, count: int = 1, timeout: float = 30, errors: bool = False) -> None:
        """Until ``count`` lines of stdout (stderr with ``errors``) contain ``text``."""
        self.wait_until(lambda: self.count(text, errors) >= count, timeout,
                        f"{count} x {text!r} on {'stderr' if errors else 'stdout'}", errors)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        """Until it exits and its output is read to the end; its exit status."""
        code = self.proc.wait(timeout)
        reaper.forget(self.watched)
        for reader in self.readers.values():
            reader.join(5)
        return code

    def stop(self) -> None:
        """Kill it (its process group, with ``new_session``), if it still runs."""
        if self.proc.poll() is None:
            if self.new_session:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
            self.proc.wait(10)
        reaper.forget(self.watched)
