"""Options, output and exits shared by new_task.py and worker.py."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from workqueue.report import Failure, one_write, warn

if TYPE_CHECKING:
    from workqueue import attempts  # imported where a worker's options need it: new_task.py starts without it

__all__ = ["Failure", "one_write", "warn"]  # the scripts' and the demo's way to them

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
QUEUE_TYPES = ("classic", "quorum")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error is one line too, like every other error."""
        warn(f"error: {message} (see {self.prog} --help)")
        sys.exit(2)


def prefetch_count(text: str) -> int:
    """argparse type: 0 to 65535, what AMQP's prefetch count can hold."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 65535, got {text!r}")
    return value


def seconds(text: str) -> float:
    """argparse type: a time in seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, got {text!r}")
    return value


def queue_name(text: str) -> str:
    """argparse type: a queue name (an empty one would ask the broker to make one up)."""
    if not text or len(text.encode()) > 255:
        raise argparse.ArgumentTypeError("expected a queue name of 1 to 255 bytes")
    return text


def attempt_count(text: str) -> int:
    """argparse type: attempts at a task, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number, 1 or more, got {text!r}")
    return value


def parser(description: str, worker: bool = False) -> argparse.ArgumentParser:
    """An argument parser with the options both scripts take; ``worker``: and a worker's options for tasks
    that fail (``--attempts``, ``--retry-delay``; ``policy(args)`` gives them to ``consumer.consume``)."""
    p = _Parser(
        description=description,
        formatter_class=_Help,
        epilog="environment: AMQP_URL is the broker URL when --url is not given; it may hold several URLs "
        "separated by ';' (as Celery's broker_url does). A password belongs there rather than in --url, which "
        "`ps` shows to every user of the machine.",
    )
    p.add_argument(
        "--url",
        action="append",
        default=argparse.SUPPRESS,
        help="broker URL: amqp://user:password@host:port/vhost, or amqps:// for TLS, with RabbitMQ's URI query "
        "parameters such as ?heartbeat=N or ?cacertfile=FILE. Give it several times for the nodes of a "
        "cluster: the first that answers is used, and the next ones when it goes away "
        f"(default: $AMQP_URL, else {DEFAULT_URL.replace('%', '%%')})",
    )
    p.add_argument("--queue", type=queue_name, default="task_queue", help="the queue that holds the tasks")
    p.add_argument(
        "--queue-type",
        choices=QUEUE_TYPES,
        default="classic",
        help="classic is the Japanese walkthrough's queue; quorum is what the tutorial on rabbitmq.com declares "
        "today, and what a cluster needs. It must match how the queue was first declared",
    )
    if worker:
        from workqueue import attempts

        p.add_argument("--attempts", type=attempt_count, default=attempts.DEFAULT_ATTEMPTS, metavar="N",
                       help="tries at a task that fails (raises, or ends its worker's process on a quorum queue), "
                       "the first one included; then it is set aside in the queue QUEUE.failed "
                       "(python -m workqueue.failed lists it). 1: set aside at the first failure")
        p.add_argument("--retry-delay", type=seconds, default=attempts.DEFAULT_DELAY, metavar="S",
                       help="a failed task waits this long in the queue QUEUE.retry before it is tried again; "
                       "other tasks go first meanwhile")
    return p


def parse(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line. The broker URLs (``args.urls``; ``args.url`` is the first) come from
    --url, else $AMQP_URL (several separated by ';'), else the local broker."""
    args = p.parse_args()
    if "url" in args:
        urls = args.url
    else:
        urls = [url.strip() for url in os.environ.get("AMQP_URL", "").split(";") if url.strip()] or [DEFAULT_URL]
    args.urls, args.url = urls, urls[0]
    if "attempts" in args:
        _check_attempts(p, args)
    return args


def _check_attempts(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from workqueue import attempts

    if args.attempts > attempts.QUORUM_DELIVERY_LIMIT and args.queue_type == "quorum":
        p.error(f"--attempts {args.attempts} is more than {attempts.QUORUM_DELIVERY_LIMIT}, the delivery limit of "
                "a quorum queue on RabbitMQ 4: past it the broker drops a task that keeps ending its worker's "
                "process before this worker could set it aside")


def policy(args: argparse.Namespace) -> attempts.Policy:
    """What a worker does with a task that fails, from its options (see ``parser(..., worker=True)``)."""
    from workqueue import attempts

    return attempts.Policy(attempts=args.attempts, delay=args.retry_delay, queue_type=args.queue_type)


def queue_arguments(queue_type: str) -> dict[str, str] | None:
    """The x-arguments of queue_declare for a queue type (none for classic, as in the Japanese walkthrough)."""
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else None


def run(main: Callable[[], int | None]) -> NoReturn:
    """Run a script's main(): output flushed line by line, no tracebacks for what users cause."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl+C works even where a shell ignored it (`&`)
    try:
        code = main() or 0
    except Failure as exc:
        warn(f"error: {exc}")
        code = 1
    except KeyboardInterrupt:
        code = 130  # Ctrl+C: stop at once, as a shell expects
    except BrokenPipeError:
        code = 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    os._exit(code)  # nothing left to wait for; a task thread may still be sleeping
