"""The Japanese walkthrough's experiment in one command: a 2-second and a 5-second worker share ten tasks.

    python -m demo                  prefetch 1 (fair dispatch): the 2 s worker does 7 tasks, the 5 s one 3
    python -m demo --prefetch 0     no limit (round robin, the tutorial's first section): 5 and 5
    python -m demo --speed 10       ten times faster: workers of 0.2 s and 0.5 s

It starts worker.py --sleep 5 and worker.py --sleep 2 on a queue of its own, waits until both consume,
sends the ten tasks with ten new_task.py runs in order, as the walkthrough's loop does, shows what the
two workers print side by side as it happens, and ends with who did which task and a timeline. Then it
stops its workers and deletes its queue, as it does on Ctrl+C.

With no --url and no AMQP_URL it uses the broker at DEMO_DEFAULT_URL (default:
amqp://guest:guest@localhost:5672/%2F); when nothing answers there, it starts a broker of its own (a
private rabbitmq-server node where RabbitMQ is installed and it runs as root, else a RabbitMQ container;
WORKQUEUE_NODES=process or =container chooses), and stops and removes it at the end and on Ctrl+C.
"""

from __future__ import annotations

import argparse
import os
import queue as queues
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType

import pika
import pika.exceptions as px

from harness import brokers, containers
from harness.children import Child, Line, Task
from workqueue import broker, cli, nodes

FAST, SLOW = 2.0, 5.0  # the walkthrough's workers: seconds per task at --speed 1
TASKS = [str(i) for i in range(1, 11)]  # `seq 10`
LOOP = "for i in `seq 10`; do python new_task.py $i; done"


def speed(text: str) -> float:
    """argparse type: how many times faster than the walkthrough, more than 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number more than 0, got {text!r}")
    return value


def arguments() -> argparse.Namespace:
    parser = cli.parser(__doc__.split("\n\n")[0] + " The other lessons: python -m demo round-robin | ack | "
                        "durable | confirms | redeclare (each with --help).")
    parser.prog = "python -m demo"
    queue_option = parser._option_string_actions["--queue"]
    queue_option.default = None
    queue_option.help = ("the demo's queue; it must not exist yet, the demo deletes it at the end "
                         "(default: a new one, demo-<random>)")
    parser.add_argument("--prefetch", type=cli.prefetch_count, default=1,
                        help="the workers' prefetch: 1 is fair dispatch (7/3), 0 no limit, round robin (5/5)")
    parser.add_argument("--speed", type=speed, default=1.0, metavar="N",
                        help="run N times faster than the walkthrough (--speed 10: tasks of 0.2 s and 0.5 s)")
    args = cli.parse(parser)
    args.queue = args.queue or f"demo-{uuid.uuid4().hex[:8]}"
    return args


# When nothing answers


def installed_server() -> str | None:
    """Where rabbitmq-server is installed on this machine, if it is (sbin folders are often not on PATH)."""
    extra = ["/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin", "/usr/lib/rabbitmq/bin"]
    return shutil.which("rabbitmq-server", path=os.pathsep.join([os.environ.get("PATH", ""), *extra]))


def unreachable(exc: BaseException, params: pika.URLParameters, default_url: bool) -> str:
    """The error line when the broker could not be reached. At the default URL, with nothing listening,
    say how to start a broker here; at a URL the user gave, what the scripts say."""
    cause = broker.root_cause(exc)
    silent = isinstance(cause, OSError) and not isinstance(cause, (socket.gaierror, ssl.SSLError))
    if not (default_url and silent):
        return broker.explain(exc, params)
    at = broker.where(params)
    if installed_server():
        start = ("`brew services start rabbitmq`" if sys.platform == "darwin"
                 else "`sudo rabbitmq-server -detached`")
        return (f"no RabbitMQ broker answers at {at}, but RabbitMQ is installed here: start it with {start} "
                "(or `docker compose up -d rabbitmq` in this folder), then run `python -m demo` again")
    return (f"no RabbitMQ broker answers at {at} and RabbitMQ is not installed here: `docker compose up -d "
            "rabbitmq` in this folder starts one, or install it (`sudo apt-get install rabbitmq-server`), "
            "or point --url or AMQP_URL at a broker")


def nothing_listens(url: str) -> bool:
    """Whether a TCP connection to the URL's host and port is refused (or never answered within 2 s)."""
    params = pika.URLParameters(url)
    try:
        socket.create_connection((params.host, params.port), timeout=2).close()
        return False
    except socket.gaierror:
        return False  # a name that does not resolve: the usual error line says so
    except OSError:
        return True


def own_broker(default: str | None, reason: str | None = None) -> brokers.Node:
    """A broker of the demo's own, started (a private node or a container): when nothing answers at the default
    URL, or (``reason``, default None) for a lesson that restarts or kills its broker; one line says so."""
    at = broker.where(pika.URLParameters(default)) if default else ""
    try:
        kind = brokers.node_kind()
    except brokers.NodesUnavailable as exc:
        if reason:
            raise cli.Failure(f"{reason[0].lower()}{reason[1:]}, and it cannot start one: {exc}") from None
        raise cli.Failure(f"no RabbitMQ broker answers at {at}, and the demo cannot start one of its own: {exc}; "
                          "or point --url or AMQP_URL at a broker") from None
    node = brokers.Node("wqdemo", kind=kind)
    if isinstance(node.runner, containers.ContainerRunner):
        what = f"a container of {containers.image()}, {node.runner.name}"
    else:
        what = f"a private rabbitmq-server node, {node.nodename}"
    why = reason or f"No broker answers at {at}"
    print(f"{why}: the demo starts its own ({what}) on localhost:{node.port}, removed at the end.", flush=True)
    try:
        node.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        node.close()
        raise cli.Failure(f"the demo's own broker did not start: {exc}") from None
    except BaseException:
        node.close()
        raise
    return node


# Signals


class Signals:
    """Ctrl+C and SIGTERM raise KeyboardInterrupt in the main thread, once: after the first, the demo is
    cleaning up and further signals are ignored. While a child process is being started they wait, so
    that every child started is one the demo knows about and stops."""

    def __init__(self) -> None:
        self.holding = 0
        self.pending = False
        self.closing = False

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.closing:
            return
        if self.holding:
            self.pending = True
            return
        self.closing = True
        raise KeyboardInterrupt

    @contextmanager
    def held(self) -> Iterator[None]:
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
            if not self.holding and self.pending and not self.closing:
                self.closing = True
                raise KeyboardInterrupt


# Child processes


class Script(Child):
    """One of the project's scripts in a child process, stderr merged into its output lines."""

    def __init__(self, label: str, args: list[str], url: str, on_line: Callable[[Child, Line], None],
                 stdin: bool = False) -> None:
        self.label = label
        env = dict(os.environ, AMQP_URL=url)  # the URL stays out of `ps`
        super().__init__([sys.executable, *args], env, stdin=stdin, merge_stderr=True, on_line=on_line)

    def error(self) -> str:
        """The child's own error line, if it gave one."""
        for text in reversed(self.lines[-5:]):
            if text.startswith("error: "):
                return text.removeprefix("error: ")
        return f"exit status {self.proc.returncode}"


# Output


class Screen:
    """In a terminal: a column per window, the two workers' as in the walkthrough's two windows side by
    side, and a narrow one for the loop's lines. Otherwise: one line per event, prefixed with who printed it."""

    LOOP_COLUMN = 15  # " [x] Sent '10'"

    def __init__(self, labels: tuple[str, str], headers: tuple[str, str, str]) -> None:
        self.terminal = sys.stdout.isatty()
        self.labels = (*labels, "new_task.py")
        self.width = max(len(label) for label in self.labels)
        columns = shutil.get_terminal_size((100, 24)).columns
        self.column = max(22, min(48, (columns - 6 - 3 * 2 - self.LOOP_COLUMN) // 2))
        if self.terminal:
            self._row("time", *headers)

    def _cell(self, text: str, width: int) -> str:
        return text if len(text) <= width else text[: width - 1] + "…"

    def _row(self, time_text: str, *cells: str) -> None:
        widths = (self.column, self.column, self.LOOP_COLUMN)
        text = "  ".join(f"{self._cell(cell, width):<{width}}" for cell, width in zip(cells, widths, strict=True))
        print(f"{time_text:>6}  {text}".rstrip())

    def line(self, window: int, at: float | None, text: str) -> None:
        """A line that the worker of window 1 or 2 (``window`` 0 or 1), or the loop (2), printed."""
        time_text = "" if at is None else f"{at:6.2f}"
        if self.terminal:
            self._row(time_text, *(text if i == window else "" for i in range(3)))
        else:
            print(f"{time_text:>6}  {self.labels[window]:<{self.width}} |{text}")


def timeline(rows: list[tuple[str, list[Task]]], end: float, scale: float, tick: int = 10) -> list[str]:
    """A row per worker; each task drawn as [n---] from when it was received to when it was done."""
    width = int(end / scale) + 2
    label_width = max(len(label) for label, _ in rows + [("time (s)", [])])
    lines = []
    for label, tasks in rows:
        cells = [" "] * width
        for task in tasks:
            stop = task.done if task.done is not None else end
            a = int(task.received / scale)
            b = max(int(stop / scale), a + len(task.body) + 2)
            for i in range(a, min(b, width)):
                cells[i] = "-"
            for i, ch in enumerate(f"[{task.body}"):
                if a + i < width:
                    cells[a + i] = ch
            if b - 1 < width:
                cells[b - 1] = "]"
        lines.append(f"{label:>{label_width}} |{''.join(cells).rstrip()}")
    ticks = "".join(f"{i * tick * scale:<{tick}.1f}" for i in range(width // tick + 1))
    lines.append(f"{'time (s)':>{label_width}} |{ticks.rstrip()}")
    return lines


# The experiment


class Experiment:
    def __init__(self, args: argparse.Namespace, signals: Signals) -> None:
        self.args = args
        self.signals = signals
        self.urls: list[str] = getattr(args, "urls", None) or [args.url]  # a cluster's nodes may be several
        self.nodes = nodes.Nodes(self.urls)  # a malformed URL: a Failure, before anything
        # The children's AMQP_URL: the broker's URL (or URLs), kept out of their command lines, which `ps` shows
        self.children_url = ";".join(self.urls)
        self.seconds = (FAST / args.speed, SLOW / args.speed)  # window 1, window 2
        self.labels = (f"{self.seconds[0]:g} s worker", f"{self.seconds[1]:g} s worker")
        self.lines: queues.Queue[tuple[Child, Line]] = queues.Queue()  # each child's lines, as they come
        self.workers: list[Script] = []
        self.windows: dict[Child, int] = {}  # 0: window 1, the fast worker; 1: window 2, the slow one
        self.producers: list[Script] = []
        self.created = False
        self.deleted = False
        self.start: float | None = None  # when the loop began: time 0
        self.loop_failure: str | None = None

    # -- the broker

    def connect(self, timeout: float | None = None) -> pika.BlockingConnection:
        """A connection to the first of the broker's URLs that answers (a cluster's nodes may be several)."""
        try:
            return self.nodes.connect(start=0, timeout=timeout)
        except nodes.NoneAnswered as exc:
            index, first = exc.errors[0]
            raise cli.Failure(unreachable(first, self.nodes.params[index], self.urls == [cli.DEFAULT_URL])) from None

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[pika.BlockingConnection]:
        """A connection to the broker for a moment; what fails on it is a Failure."""
        connection = self.connect(timeout)
        try:
            yield connection
        except px.AMQPError as exc:
            raise cli.Failure(broker.explain(exc, self.nodes.in_use, self.args.queue)) from None
        except KeyboardInterrupt:
            raise  # no goodbye to the broker: pika may be halfway through a call, and the process ends now
        finally:
            if connection.is_open:
                with suppress(px.AMQPError, OSError):
                    connection.close()

    def create_queue(self) -> None:
        """The demo's own queue: one that does not exist yet, declared as the scripts declare it."""
        with self.connection() as connection:
            try:
                connection.channel().queue_declare(self.args.queue, passive=True)
            except px.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
            else:
                raise cli.Failure(f"queue {self.args.queue!r} exists already; the demo deletes its queue at the "
                                  "end, so give it a new name with --queue, or leave --queue out")
            connection.channel().queue_declare(self.args.queue, durable=True,
                                               arguments=cli.queue_arguments(self.args.queue_type))
            self.created = True

    def delete_queue(self) -> None:
        if not self.created:
            return
        try:
            with self.connection(timeout=5) as connection:
                connection.channel().queue_delete(self.args.queue)
            self.created, self.deleted = False, True
        except cli.Failure as exc:
            cli.warn(f"warning: could not delete the demo's queue {self.args.queue!r} ({exc}); "
                     f"delete it with `rabbitmqctl delete_queue {self.args.queue}`")

    def wait_for_consumers(self, count: int, timeout: float = 60) -> None:
        with self.connection() as connection:
            deadline = time.monotonic() + timeout
            while True:
                self.show_output()
                self.check_children()
                declared = connection.channel().queue_declare(self.args.queue, passive=True)
                if declared.method.consumer_count >= count:
                    return
                if time.monotonic() > deadline:
                    raise cli.Failure(f"the workers did not start consuming within {timeout:g} s")
                connection.sleep(0.05)

    # -- the children

    def start_child(self, label: str, args: list[str], stdin: bool = False) -> Script:
        with self.signals.held():  # a Ctrl+C now would leave a child the demo does not know about
            child = Script(label, args, self.children_url, lambda child, line: self.lines.put((child, line)), stdin)
            (self.producers if stdin else self.workers).append(child)
        return child

    def start_worker(self, window: int) -> Script:
        seconds = self.seconds[window]
        child = self.start_child(self.labels[window], [
            "worker.py", "--sleep", f"{seconds:g}", "--prefetch", str(self.args.prefetch),
            "--queue", self.args.queue, "--queue-type", self.args.queue_type])
        self.windows[child] = window
        return child

    def send_tasks(self) -> None:
        """The loop, on a thread: each new_task.py gets its task once the one before has exited."""
        for task, producer in zip(TASKS, self.producers, strict=True):
            try:
                assert producer.proc.stdin
                producer.proc.stdin.write(f"{task}\n")
                producer.proc.stdin.close()
                code = producer.proc.wait()
                for reader in producer.readers.values():
                    reader.join()  # its Sent line shown before the next run's, whatever the threads' order
            except (OSError, ValueError):
                code = -1
            if code != 0:
                self.loop_failure = f"new_task.py {task} failed: {producer.error()}"
                return

    # -- output

    def show_output(self, until: float = 0.0) -> None:
        """Show the children's lines that came, waiting up to ``until`` seconds for one."""
        wait = until
        while True:
            try:
                child, line = self.lines.get(timeout=wait) if wait > 0 else self.lines.get_nowait()
            except queues.Empty:
                return
            wait = 0
            self.show(child, line)

    def show(self, child: Child, line: Line) -> None:
        at = None if self.start is None else line.at - self.start
        self.screen.line(self.windows.get(child, 2), at, line.text)  # window 3: the loop's new_task.py runs

    def tasks(self, worker: Script) -> list[Task]:
        """The worker's tasks, their times from the loop's start."""
        return worker.tasks(since=self.start or 0.0)

    def done(self) -> list[str]:
        return [t.body for worker in self.workers for t in self.tasks(worker) if t.done is not None]

    def check_children(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is not None:
                self.show_output()
                raise cli.Failure(f"the {worker.label} stopped: {worker.error()}")
        if self.loop_failure:
            raise cli.Failure(self.loop_failure)

    # -- the run

    def run(self) -> None:
        args = self.args
        fast, slow = (f"{s:g}" for s in self.seconds)
        times = "" if args.speed == 1 else f", {args.speed:g} times faster"
        mode = {1: "prefetch 1 (fair dispatch)", 0: "prefetch 0 (no limit: round robin)"}.get(
            args.prefetch, f"prefetch {args.prefetch}")
        prefetch = "" if args.prefetch == 1 else f" --prefetch {args.prefetch}"
        self.create_queue()  # first: if the broker is not there, the error is all there is to say
        self.say(f"The Japanese walkthrough's experiment{times}: a {fast} s and a {slow} s worker share ten "
                 f"tasks, {mode}. Broker {self.nodes.where()}, queue {args.queue} (the demo's own, "
                 "deleted at the end). Ctrl+C stops it all.")
        print(f"  window 1: python worker.py --sleep {fast}{prefetch}")
        print(f"  window 2: python worker.py --sleep {slow}{prefetch}")
        print(f"  window 3: {LOOP}, once both workers consume")
        self.say("ten new_task.py runs, one task each, in order, as in the loop; started ahead and handed "
                 "their tasks in turn, so that all ten are queued in a fraction of a second, before the first "
                 "task is done.", indent="            ")
        print()
        self.screen = Screen(self.labels, (f"// window 1 ({fast} s)", f"// window 2 ({slow} s)", "// window 3"))
        # Ten new_task.py runs, one task each, in order, as the loop runs them; started ahead (while the
        # workers start), so that the ten tasks reach the queue in milliseconds: before the fast worker's
        # first task is done at any --speed, as the loop's do at the walkthrough's own speed (the loop
        # takes about 1 s; a task 2 s).
        for _ in TASKS:
            self.start_child("new_task.py", ["new_task.py", "--stdin", "--queue", args.queue,
                                             "--queue-type", args.queue_type], stdin=True)
        # The 5 s worker consumes first: with both idle, the broker gives the first task to the first
        # consumer, so it takes task 1, as in the walkthrough's output.
        self.start_worker(1)
        self.wait_for_consumers(1)
        self.start_worker(0)
        self.wait_for_consumers(2)
        self.show_output()
        self.start = time.monotonic()
        threading.Thread(target=self.send_tasks, daemon=True).start()
        deadline = time.monotonic() + 30 + 60 / args.speed
        while set(self.done()) != set(TASKS):
            self.show_output(until=0.1)
            self.check_children()
            if time.monotonic() > deadline:
                raise cli.Failure(f"the ten tasks were not all done after {deadline - self.start:.0f} s "
                                  f"(done: {', '.join(self.done()) or 'none'})")
        self.stop_workers(signal.SIGTERM)  # as `docker stop` does: no task is running, so they exit at once
        self.show_output()
        self.summary()

    @staticmethod
    def say(text: str, indent: str = "") -> None:
        width = min(100, shutil.get_terminal_size((100, 24)).columns)
        print(textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False))

    def summary(self) -> None:
        print()
        for worker in sorted(self.workers, key=self.windows.__getitem__):
            names = [t.body for t in self.tasks(worker)]
            print(f"{worker.label}: {len(names)} task{'s' if len(names) != 1 else ''} ({', '.join(names)})")
        end = max(t.done or 0.0 for worker in self.workers for t in self.tasks(worker))
        if self.args.prefetch == 1:
            why = ("prefetch 1: the broker gives a worker no new task until it has acknowledged the last one, "
                   "so each task goes to whichever worker is free first.")
        elif self.args.prefetch == 0:
            why = ("prefetch 0: no limit, so the broker deals the tasks out in turn as they come, "
                   "whether the worker is busy or not.")
        else:
            why = f"prefetch {self.args.prefetch}: a worker may hold that many unacknowledged tasks."
        self.say(f"All ten done {end:.2f} s after the loop began. {why}")
        print()
        rows = [(w.label, self.tasks(w)) for w in sorted(self.workers, key=self.windows.__getitem__)]
        for line in timeline(rows, end, scale=0.5 / self.args.speed):
            print(line)
        print()
        if self.args.prefetch == 1:
            print("The walkthrough: 「前のメッセージの Ack が帰ってくるまでは次のメッセージをワーカーに送らない。"
                  "代わりにビジーではない次のワーカーにメッセージを送る。」")  # not wrapped, as the lessons' lines
        elif self.args.prefetch == 0:
            self.say("The tutorial (round-robin dispatching): by default, RabbitMQ will send each message to the "
                     "next consumer, in sequence.")

    def stop_workers(self, signum: int, grace: float = 5) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signum)
        deadline = time.monotonic() + grace
        for worker in self.workers:
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()

    def clean_up(self) -> None:
        """Stop every child and delete the queue (after a run, an error or Ctrl+C)."""
        for producer in self.producers:
            if producer.proc.poll() is None:
                producer.proc.kill()
        self.stop_workers(signal.SIGINT, grace=3)  # Ctrl+C: a running task goes back to the queue
        for producer in self.producers:
            producer.proc.wait()
        self.delete_queue()


def url_given() -> bool:
    """Whether the user named a broker: AMQP_URL, or --url."""
    return bool(os.environ.get("AMQP_URL", "").strip()) or any(a.startswith("--u") for a in sys.argv[1:])


def default_broker(signals: Signals) -> tuple[str, brokers.Node | None]:
    """The broker at DEMO_DEFAULT_URL (or the local one), or, when nothing listens there, one of the demo's own,
    started (the caller closes it)."""
    default = os.environ.get("DEMO_DEFAULT_URL", "").strip() or cli.DEFAULT_URL
    if not nothing_listens(default):
        return default, None
    signals.install()  # a Ctrl+C from here on: the broker is removed
    try:
        own = own_broker(default)
    except KeyboardInterrupt:
        cli.warn("interrupted: the demo's own broker is removed")
        raise
    return own.url, own


def main() -> None:
    args = arguments()
    signals = Signals()
    own: brokers.Node | None = None
    if not url_given():
        args.url, own = default_broker(signals)
        args.urls = [args.url]
    interrupted = False
    try:
        experiment = Experiment(args, signals)
        signals.install()
        try:
            experiment.run()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            signals.closing = True
            experiment.clean_up()
    finally:
        signals.closing = True
        if own:
            own.close()
    if interrupted:
        deleted = f", queue {args.queue} deleted" if experiment.deleted else ""
        removed = ", the demo's own broker removed" if own else ""
        cli.warn(f"interrupted: the workers and the loop are stopped{deleted}{removed}")
        raise KeyboardInterrupt
