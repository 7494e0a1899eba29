"""The messages new_task.py sends: the command line's one, or the lines of standard input.

A list is taken as it is. A file (standard input, which may wait for a person to type) is read on a
thread of its own, so that the connection's heartbeats go on meanwhile, and handed over in chunks of
whatever lines have come, at most a bound ahead of the confirms.
"""

from __future__ import annotations

import collections
import errno
import os
import threading
from collections.abc import Callable, Iterable, Iterator

from workqueue.report import Failure


class Source:
    """The messages to send; ``take()`` them on the connection's thread, say ``done(n)`` as they are
    confirmed. ``ended`` once all are read; ``failure`` says why reading stopped early, if it did."""

    def __init__(self, messages: Iterable[str], limit: int) -> None:
        """``limit``: messages read ahead of the confirms at most."""
        self.chunks: collections.deque[list[str]] = collections.deque()  # read, not yet taken
        self.ended = False
        self.failure = ""
        self.streamed = not isinstance(messages, (list, tuple))  # a batch: report progress on failure
        self._wake: Callable[[], None] = lambda: None
        self._limit = limit
        self._unsettled = 0  # messages read and not yet confirmed
        self._room = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        if not self.streamed:
            for message in messages:
                if not is_text(message):
                    raise Failure("the message is not UTF-8 text")
            self.chunks.append(list(messages))
            self.ended = True
        else:
            self._thread = threading.Thread(target=self._read, args=(messages,), daemon=True)

    def start(self, wake: Callable[[], None]) -> None:
        """Begin reading (once; later calls change nothing); ``wake`` must be safe to call from another
        thread: it is called when lines have come, and when the input ends."""
        self._wake = wake
        if self._thread and not self._thread.ident:
            self._thread.start()

    def take(self) -> list[str]:
        """The messages read since the last take."""
        taken: list[str] = []
        while self.chunks:
            taken += self.chunks.popleft()
        return taken

    def waiting(self) -> int:
        """Messages read and not yet taken."""
        return sum(map(len, self.chunks))

    def done(self, count: int) -> None:
        """``count`` messages are confirmed: the reader may read as many more."""
        with self._room:
            self._unsettled -= count
            self._room.notify()

    def stop(self) -> None:
        with self._room:
            self._stopped = True
            self._room.notify()

    def _read(self, messages: Iterable[str]) -> None:
        count = 0
        try:
            for chunk in lines(messages):
                with self._room:
                    while self._unsettled >= self._limit and not self._stopped:
                        self._room.wait()
                    if self._stopped:
                        return
                    self._unsettled += len(chunk)
                self.chunks.append(chunk)
                count += len(chunk)
                self._call_wake()
        except UnicodeError:
            self.failure = f"input line {count + 1} is not UTF-8 text; it and the lines after it were not sent"
        except OSError as exc:
            self.failure = (f"could not read input line {count + 1} ({exc.strerror or exc}); it and the lines "
                            "after it were not sent")
        except Exception as exc:  # e.g. no standard input at all (`<&-`)
            self.failure = f"could not read input line {count + 1} ({type(exc).__name__}: {exc})"
        finally:
            self.ended = True
            self._call_wake()

    def _call_wake(self) -> None:
        try:
            self._wake()
        except Exception:  # the connection is closed already: nobody is left to wake
            pass


def lines(messages: Iterable[str]) -> Iterator[list[str]]:
    """Lines in chunks: from a file, each read's complete lines (as many as have come, in one read of
    the file descriptor); from anything else, one at a time. UnicodeError at a line that is not UTF-8,
    once the lines before it are out."""
    if messages is None:  # `python new_task.py --stdin <&-`
        raise OSError(errno.EBADF, "standard input is closed")
    try:
        fd = messages.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None:
        for message in messages:
            if not is_text(message):
                raise UnicodeError
            yield [message]
        return
    yield from chunks(_reads(fd))


def _reads(fd: int) -> Iterator[bytes]:
    """Each read of the file descriptor, as much as has come; the last one empty, at the end of input."""
    while True:
        data = os.read(fd, 1 << 16)
        yield data
        if not data:
            return


def chunks(reads: Iterable[bytes]) -> Iterator[list[str]]:
    """The complete lines of each read, as one chunk, a line cut between reads joined again; at the end of
    input (an empty read) the last line too, with or without its newline. UnicodeError at a line that is
    not UTF-8, once the lines before it are out."""
    rest = b""
    for data in reads:
        buffer = rest + data
        cut = buffer.rfind(b"\n") + 1 if data else len(buffer)
        block, rest = buffer[:cut], buffer[cut:]
        if not block:
            continue
        try:
            text = block.decode()
        except UnicodeDecodeError as exc:  # the lines before the one that is not UTF-8 go out first
            good = block.rfind(b"\n", 0, exc.start) + 1
            if good:
                yield split(block[:good].decode())
            raise UnicodeError from None
        yield split(text)


def split(text: str) -> list[str]:
    """Complete lines of text into messages: one a line, without its ``\\n`` or ``\\r\\n``."""
    parts = text.removesuffix("\n").split("\n")
    return [line.rstrip("\r") for line in parts] if "\r" in text else parts


def is_text(message: str) -> bool:
    try:
        message.encode()
        return True
    except UnicodeEncodeError:
        return False
