"""What the scripts tell their user: one ``error:`` line for a Failure, ``warning:`` lines, "Sent" lines
written together. Everything below the command line (``cli``) reports through here and prints nothing else."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class Failure(Exception):
    """Something the user can fix: printed as one ``error:`` line, then a non-zero exit."""


def warn(message: str) -> None:
    """A line on stderr, flushed at once."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def one_write() -> Iterator[None]:
    """Lines printed within go out together, in one write, when it ends (not one write a line)."""
    sys.stdout.reconfigure(line_buffering=False)  # type: ignore[union-attr]
    try:
        yield
    finally:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # flushes
