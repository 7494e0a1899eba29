"""The Japanese walkthrough's other lessons, each in one command (`python -m demo LESSON`):

    ack        a worker stopped in the middle of a task (Ctrl+C, then kill -9): the task goes to another worker
    durable    the broker restarted: a durable queue keeps its persistent messages; the rest is gone
    confirms   the broker killed a moment after a batch: without publisher confirms some "sent" messages are
               gone; with them, as new_task.py sends, none
    redeclare  a queue declared again with other settings: the broker refuses, and the scripts say so

Each prints what happens as it happens and ends with what was seen and the line of the walkthrough it shows.
ack and redeclare use the broker the demo uses (--url, AMQP_URL, else the local one, else one of its own);
durable and confirms restart or kill their broker, so they always start one of their own. Every lesson
deletes its queues, stops its workers and removes its own broker at the end, and on Ctrl+C.
"""

from __future__ import annotations

import _thread
import argparse
import inspect
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import NoReturn

import pika
import pika.exceptions as px
from pika.adapters.blocking_connection import BlockingChannel

from demo.experiment import Script, Signals, default_broker, own_broker, speed, unreachable
from harness import brokers, erl
from harness.children import Child, Line
from workqueue import broker, cli

SBIN = ["/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"]  # where rabbitmqctl is, often off PATH
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
TRANSIENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Transient)
_printing = threading.Lock()
pipe_closed = threading.Event()  # the output was closed: stop, quietly


def out(text: str = "") -> None:
    """A line of output, whole and flushed, whichever thread prints it. Once the output is closed (`| head`),
    nothing more is printed and the lesson stops, as on Ctrl+C but quietly."""
    with _printing:
        if pipe_closed.is_set():
            return
        try:
            print(text, flush=True)
        except BrokenPipeError:
            pipe_closed.set()
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            if threading.current_thread() is threading.main_thread():
                raise
            _thread.interrupt_main()  # a child's line, on its reading thread: the main thread stops the lesson


def say(text: str, indent: str = "") -> None:
    """A paragraph, wrapped to the terminal (at most 100 columns)."""
    width = min(100, shutil.get_terminal_size((100, 24)).columns)
    out(textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error is one line, as the scripts' are."""
        cli.warn(f"error: {message} (see {self.prog} --help)")
        sys.exit(2)


class Counts:
    """A queue's ready and unacknowledged counts, from rabbitmqctl: the node's own for the demo's broker,
    else the machine's rabbitmqctl where it reaches the broker (an AMQP client sees only the ready count)."""

    def __init__(self, node: brokers.Node | None, vhost: str) -> None:
        self.node = node
        self.vhost = vhost
        self.misses = 0
        self.ctl = None if node else shutil.which("rabbitmqctl", path=os.pathsep.join([os.environ.get("PATH", ""),
                                                                                      *SBIN]))

    def __call__(self, queue: str) -> tuple[int, int] | None:
        """(ready, unacknowledged), or None where no rabbitmqctl here lists the queue (another broker)."""
        args = ["list_queues", "-q", "--no-table-headers", "-p", self.vhost,
                "name", "messages_ready", "messages_unacknowledged"]
        try:
            if self.node:
                text = self.node.ctl(*args)
            elif (machine := erl.machine(args, timeout=60)) is not None:  # this machine's broker, asked cheaply
                text = machine
            elif self.ctl:
                text = subprocess.run([self.ctl, *args], capture_output=True, text=True, timeout=60,
                                      check=True).stdout
            else:
                return None
        except (subprocess.SubprocessError, OSError):
            self.give_up()
            return None
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[0] == queue:  # a name of its own: this is the lesson's broker
                return int(parts[1]), int(parts[2])
        self.give_up()  # that rabbitmqctl talks to another broker
        return None

    def give_up(self) -> None:
        """After a third miss, ask no more: rabbitmqctl here does not reach the lesson's broker (and each try may
        take seconds)."""
        self.misses += 1
        if not self.node and self.misses >= 3:
            self.ctl = None


class Lesson:
    """What every lesson does: its broker and queues, its child processes, its output, and its clean-up."""

    name = ""
    restarts = False  # it restarts or kills its broker: always one of the demo's own
    restart_why = ""  # the first line's words for that
    timed = False  # it takes --speed

    def __init__(self, args: argparse.Namespace, signals: Signals, url: str, node: brokers.Node | None,
                 default: bool) -> None:
        self.args = args
        self.signals = signals
        self.url = url
        self.node = node  # the demo's own broker, if it uses one
        self.default = default  # the URL is the default one, not the user's
        self.params = broker.parameters(url)
        self.counts = Counts(node, self.params.virtual_host)
        self.children: list[Script] = []
        self.stopped: list[Script] = []  # the children the lesson stopped on purpose
        self.queues: list[str] = []  # declared by the lesson: deleted at the end
        self.label_width = 8

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        doc = inspect.cleandoc(cls.__doc__ or "")
        p = _Parser(prog=f"python -m demo {cls.name}", description=doc,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
        if not cls.restarts:
            p.add_argument("--url", help="the broker's URL (default: $AMQP_URL, else the local broker, else one "
                           "the demo starts)")
        if cls.timed:
            p.add_argument("--speed", type=speed, default=1.0, metavar="N", help="run N times faster (default: 1)")
        cls.options(p)
        return p

    @classmethod
    def options(cls, p: argparse.ArgumentParser) -> None:
        """Options of the lesson's own."""

    def run(self) -> None:
        raise NotImplementedError

    # -- the broker

    def connect(self) -> pika.BlockingConnection:
        try:
            return pika.BlockingConnection(self.params)
        except broker.CONNECT_ERRORS as exc:
            raise cli.Failure(unreachable(exc, self.params, self.default)) from None

    @contextmanager
    def channel(self) -> Iterator[BlockingChannel]:
        """A channel on a connection of its own, closed after."""
        connection = self.connect()
        try:
            yield connection.channel()
        finally:
            if connection.is_open:
                with suppress(px.AMQPError, OSError):
                    connection.close()

    def declare(self, queue: str, durable: bool = True) -> None:
        """Declare a queue of the lesson's own (deleted at the end)."""
        with self.channel() as ch:
            ch.queue_declare(queue, durable=durable)
        if queue not in self.queues:
            self.queues.append(queue)

    def ready(self, queue: str, wait: float = 30) -> int | None:
        """The queue's ready messages; None if it does not exist. Right after a restart a durable queue may
        answer 404 for a moment while the broker recovers it: asked again for up to ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            try:
                with self.channel() as ch:
                    count: int = ch.queue_declare(queue, passive=True).method.message_count
                    return count
            except px.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.5)

    def show_counts(self, queue: str, note: str, expected: tuple[int, int] | None = None) -> None:
        """One line with the queue's counts; ``expected``: wait (up to 30 s) until they are so, as an ack may
        still be on its way."""
        deadline = time.monotonic() + 30
        while True:
            counts = self.counts(queue)
            if counts is None or expected is None or counts == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if counts is None:
            ready = self.ready(queue, wait=0)
            out(f"  queue: {ready} ready, unacknowledged unknown (no rabbitmqctl here reaches this broker): {note}")
        else:
            out(f"  queue: {counts[0]} ready, {counts[1]} unacknowledged: {note}")

    # -- child processes

    def start(self, label: str, args: list[str], quiet: Callable[[str], bool] | None = None) -> Script:
        """A script in a child process; its lines shown as they come (but those ``quiet`` says not to)."""
        self.label_width = max(self.label_width, len(label))

        def show(child: Child, line: Line) -> None:
            if not (quiet and quiet(line.text)):
                out(f"  {label:>{self.label_width}} | {line.text}")

        with self.signals.held():  # a Ctrl+C now would leave a child the lesson does not know about
            child = Script(label, args, self.url, show, stdin=args[0] == "new_task.py" and "--stdin" in args)
            self.children.append(child)
        return child

    def run_script(self, label: str, args: list[str], timeout: float = 120) -> Script:
        """A script run to its end."""
        child = self.start(label, args)
        self.stopped.append(child)  # it ends by itself
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            raise cli.Failure(f"{label} did not end within {timeout:g} s") from None
        return child

    def expect(self, child: Script, text: str, timeout: float = 60) -> None:
        """Until the child prints a line with ``text``."""
        try:
            child.wait_for(text, timeout=timeout)
        except AssertionError:
            raise cli.Failure(f"{child.label} did not print {text!r} within {timeout:g} s "
                              f"({child.error() if child.proc.poll() is not None else 'it still runs'})") from None

    def wait_consumers(self, queue: str, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self.channel() as ch:
            while ch.queue_declare(queue, passive=True).method.consumer_count < count:
                for child in self.children:
                    if child.proc.poll() is not None and child not in self.stopped:
                        raise cli.Failure(f"{child.label} stopped: {child.error()}")
                if time.monotonic() > deadline:
                    raise cli.Failure(f"the worker did not start consuming within {timeout:g} s")
                ch.connection.sleep(0.05)

    def stop(self, child: Script, signum: int, grace: float = 10) -> None:
        self.stopped.append(child)
        if child.proc.poll() is None:
            child.signal(signum)
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.wait()

    # -- the end

    def clean_up(self) -> list[str]:
        """Stop every child, delete the lesson's queues (not on its own broker, which goes whole); what was done."""
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.kill()
        for child in self.children:
            child.proc.wait()
        if not self.node and self.queues:
            try:
                with self.channel() as ch:
                    for queue in self.queues:
                        ch.queue_delete(queue)
            except (cli.Failure, px.AMQPError, OSError) as exc:
                cli.warn(f"warning: could not delete the lesson's queues {', '.join(self.queues)} ({exc}); "
                         f"delete them with `rabbitmqctl delete_queue NAME`")
                return []
            return [f"queue{'s' if len(self.queues) > 1 else ''} {', '.join(self.queues)} deleted"]
        return []

    @staticmethod
    def step(text: str) -> None:
        out()
        say(text)

    @staticmethod
    def seen(lines: list[str], tutorial: str, quote: str) -> None:
        """The lesson's closing lines: what was seen, and the walkthrough's line it shows."""
        out()
        out("What you saw:")
        for line in lines:
            say(line, indent="  ")
        out(f"The {tutorial}: 「{quote}」")  # not wrapped: a line of Japanese has no spaces to wrap at


class Ack(Lesson):
    """A worker stopped in the middle of a task, first by Ctrl+C, then by kill -9: the task was never
    acknowledged, so the broker gives it to the next worker, marked redelivered."""

    name = "ack"
    timed = True
    LONG = 600.0  # seconds: the task of the worker stopped in the middle; it is stopped long before

    def run(self) -> None:
        queue = f"demo-{uuid.uuid4().hex[:8]}"
        self.declare(queue)
        short = 5 / self.args.speed
        say(f"Acknowledgements: a worker acks a task once it is done; a worker that stops before that leaves the "
            f"task to another. Broker {broker.where(self.params)}, queue {queue} (the lesson's own, deleted at "
            "the end). Ctrl+C stops it all.")
        out(f"  window 1: python worker.py --sleep {self.LONG:g}   (a long task, stopped in the middle)")
        out(f"  window 2: python worker.py --sleep {short:g}")
        out("  window 3: python new_task.py 'task N'")
        results: list[str] = []
        for number, (how, signum) in enumerate((("Ctrl+C", signal.SIGINT), ("kill -9", signal.SIGKILL)), 1):
            self.step(f"Round {number}: the worker in window 1 is stopped by {how} in the middle of its task.")
            body = f"task {number}"
            first = self.start("window 1", ["worker.py", "--queue", queue, "--sleep", f"{self.LONG:g}"])
            self.wait_consumers(queue, 1)
            self.run_script("window 3", ["new_task.py", "--queue", queue, body])
            self.expect(first, f"Received b'{body}'")
            self.show_counts(queue, "window 1 holds the task, not acknowledged", (0, 1))
            shell = "Ctrl+C in window 1" if signum == signal.SIGINT else f"kill -9 {first.proc.pid}"
            out(f"  $ {shell}")
            self.stop(first, signum)
            self.show_counts(queue, "the task is back in the queue", (1, 0))
            second = self.start("window 2", ["worker.py", "--queue", queue, "--sleep", f"{short:g}"])
            self.expect(second, f"Received b'{body}' (redelivered)")
            self.expect(second, "[x] Done", timeout=60 + short)
            self.show_counts(queue, "done and acknowledged: the broker has deleted it", (0, 0))
            self.stop(second, signal.SIGTERM)  # as `docker stop`: idle, it exits at once
            results.append(f"{how}: the task went back to the queue (1 ready) and to the worker in window 2, "
                           "marked (redelivered); acknowledged there, it was gone (0 and 0).")
        self.seen(results + ["Nothing is lost when a worker dies mid-task, so a task may run twice: "
                             "once in part, once whole."],
                  "walkthrough", "Ack が返ってこない場合メッセージをリキューする。")


@contextmanager
def restarting() -> Iterator[None]:
    """A lesson's own broker stopped or killed, and started again, within: one error: line if it does not come
    back (its folder, logs and all, goes when the lesson ends)."""
    try:
        yield
    except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise cli.Failure(f"the lesson's broker did not start again ({why}): run the lesson again") from None


class Durable(Lesson):
    """The broker restarted: a durable queue keeps its persistent messages; its transient messages, and a
    queue that is not durable, are gone."""

    name = "durable"
    restarts = True
    restart_why = "This lesson restarts its broker, so it never uses yours"

    def run(self) -> None:
        assert self.node
        say("Durability: a queue survives a broker restart only if it is durable, and a message in it only if "
            "it is persistent (delivery_mode=2). Broker: the lesson's own, on "
            f"{broker.where(self.params)}. Ctrl+C stops it all.")
        self.step("Before: two queues, as the tutorials declare them, and messages published with confirms "
                  "(so that every one is stored before the restart).")
        self.queues += ["task_queue", "hello"]
        with self.channel() as ch:
            ch.confirm_delivery()
            ch.queue_declare("task_queue", durable=True)
            out("  channel.queue_declare(queue='task_queue', durable=True)   # tutorial two")
            ch.queue_declare("hello")
            out("  channel.queue_declare(queue='hello')                      # tutorial one: not durable")
            for i in (1, 2, 3):
                ch.basic_publish("", "task_queue", f"persistent {i}", PERSISTENT)
                ch.basic_publish("", "task_queue", f"transient {i}", TRANSIENT)
                ch.basic_publish("", "hello", f"persistent {i}", PERSISTENT)
            out("  task_queue: 'persistent 1-3' with delivery_mode=2, 'transient 1-3' without it")
            out("  hello:      'persistent 1-3' with delivery_mode=2")
        before = {queue: self.ready(queue) for queue in ("task_queue", "hello")}
        for queue, count in before.items():
            out(f"  {queue}: {count} ready")
        self.step("The broker restarts (RabbitMQ stopped and started again on its node).")
        out("  $ rabbitmqctl stop_app && rabbitmqctl start_app")
        with restarting():
            self.node.ctl("stop_app")
            self.node.ctl("start_app")
            self.node.wait_ready()
        self.step("After:")
        kept: list[str] = []
        if self.ready("task_queue") is not None:
            with self.channel() as ch:
                while True:
                    method, _, body = ch.basic_get("task_queue", auto_ack=True)
                    if method is None:
                        break
                    kept.append(body.decode())
            out(f"  task_queue: {len(kept)} ready: {', '.join(kept) or 'none'}")
        else:
            out("  task_queue: gone")
        hello = self.ready("hello", wait=0)
        out("  hello: gone (404 NOT_FOUND)" if hello is None else f"  hello: {hello} ready")
        lost = [f"transient {i}" for i in (1, 2, 3) if f"transient {i}" not in kept]
        self.seen([f"task_queue (durable) came back with its persistent messages ({len(kept)} of "
                   f"{before['task_queue']} messages): the transient ones were "
                   + ("gone." if len(lost) == 3 else f"not all gone ({', '.join(lost) or 'none'} gone)."),
                   "hello (not durable) was gone, with its messages, persistent or not: a persistent message "
                   "lives only as long as its queue."],
                  "walkthrough", "RabbitMQ を停止するとデフォルトではキューが消える。残すには durable を有効化する。")


class Confirms(Lesson):
    """The broker killed a moment after a batch of persistent messages: without publisher confirms some
    "sent" messages are gone; with confirms, as new_task.py sends, none that were confirmed."""

    name = "confirms"
    restarts = True
    restart_why = "This lesson kills its broker, so it never uses yours"

    @classmethod
    def options(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--messages", type=int, default=20000, metavar="N",
                       help="persistent messages in each batch (default: 20000)")

    def crash(self) -> int | None:
        """SIGKILL the broker, start it again; the messages its task_queue holds after."""
        assert self.node
        out(f"  $ {self.node.kill_command()}   (the broker crashes), then it starts again")
        with restarting():
            self.node.kill()
            self.node.start()
        return self.ready("task_queue")

    def fresh_queue(self) -> None:
        assert self.node
        with self.channel() as ch:
            ch.queue_delete("task_queue")
            ch.queue_declare("task_queue", durable=True)
        self.node.persist()  # the queue itself on disk: only the messages are at stake

    def run(self) -> None:
        n = self.args.messages
        if n < 1:
            raise cli.Failure(f"--messages must be 1 or more, got {n}")
        self.queues.append("task_queue")
        say("Persistent is not yet on disk: delivery_mode=2 has the broker write a message to disk, but not at "
            f"once. Broker: the lesson's own, on {broker.where(self.params)}; queue task_queue, durable. "
            "Ctrl+C stops it all.")
        self.step(f"1. {n:,} persistent messages sent without confirms (the tutorial's basic_publish, in a loop "
                  "over one connection), and the broker killed right after the last.")
        self.fresh_queue()
        connection = self.connect()
        ch = connection.channel()
        started = time.monotonic()
        for i in range(1, n + 1):
            ch.basic_publish("", "task_queue", str(i), PERSISTENT)
        out(f"  sent {n:,} in {time.monotonic() - started:.2f} s: basic_publish returned for every one")
        unconfirmed = self.crash()
        with suppress(px.AMQPError, OSError):
            connection.close()
        kept1 = unconfirmed or 0
        out(f"  after the restart: {kept1:,} in task_queue; {n - kept1:,} gone although sent")
        self.step(f"2. The same {n:,} sent by new_task.py --stdin, which waits for the broker's confirm of each "
                  "before it prints Sent; the broker killed right after it ends.")
        self.fresh_queue()
        out("  $ seq N | python new_task.py --stdin   (its Sent lines are counted, not shown)")
        sender = self.start("new_task.py", ["new_task.py", "--stdin", "--queue", "task_queue"],
                            quiet=lambda text: text.startswith(" [x] Sent "))
        writer = threading.Thread(target=self._feed, args=(sender, n), daemon=True)
        writer.start()
        try:
            code = sender.wait(300)
        except subprocess.TimeoutExpired:
            raise cli.Failure("new_task.py did not end within 300 s") from None
        if code != 0:
            raise cli.Failure(f"new_task.py failed: {sender.error()}")
        confirmed = sender.count(" [x] Sent ")
        out(f"  new_task.py: {confirmed:,} Sent, each confirmed by the broker")
        kept2 = self.crash() or 0
        gone = max(0, confirmed - kept2)
        out(f"  after the restart: {kept2:,} in task_queue; {gone:,} of those confirmed gone")
        first = (f"Without confirms: {n:,} sent, {kept1:,} kept, {n - kept1:,} gone. The broker had not written them "
                 "to disk (some not even read) when it was killed; the publisher never knew."
                 if kept1 < n else
                 f"Without confirms: {n:,} sent and this time all {n:,} kept: the broker had written them before "
                 "the kill. Nothing told the publisher so; run the lesson again, or with more --messages.")
        self.seen([first,
                   f"With confirms: {confirmed:,} confirmed, {kept2:,} kept, {gone} gone. A confirm comes once the "
                   "broker has stored the message, so Sent means stored."],
                  "walkthrough", "メッセージ到着のたびに即座に書き込まない点には注意が必要。"
                  "キャッシュにためてからディスクに書き込む動作となる。")

    @staticmethod
    def _feed(sender: Script, n: int) -> None:
        stdin = sender.proc.stdin
        assert stdin
        with suppress(OSError, ValueError):
            stdin.write("".join(f"{i}\n" for i in range(1, n + 1)))
            stdin.close()


class Redeclare(Lesson):
    """A queue declared again with other settings: the broker refuses the declaration and closes the
    channel; new_task.py and worker.py say so in one line."""

    name = "redeclare"

    def run(self) -> None:
        queue = f"demo-{uuid.uuid4().hex[:8]}"
        self.declare(queue, durable=False)  # first: if the broker is not there, the error is all there is to say
        say("A queue's settings are fixed when it is first declared. Broker "
            f"{broker.where(self.params)}, queue {queue} (the lesson's own, in the role of task_queue, deleted at "
            "the end).")
        self.step("1. Declared as tutorial one declares its queue: not durable.")
        out(f"  channel.queue_declare(queue='{queue}')")
        self.step("2. Declared again as tutorial two does, durable: new_task.py.")
        out(f"  $ python new_task.py --queue {queue} 'Hello World!'")
        refused = self.run_script("new_task.py", ["new_task.py", "--queue", queue, "Hello World!"])
        code = refused.proc.returncode
        out(f"  (exit status {code})")
        with self.channel() as ch:
            try:
                ch.queue_declare(queue, durable=True)
                reply = "the broker took it"
            except px.ChannelClosedByBroker as exc:
                reply = f"{exc.reply_code} {exc.reply_text}"
        out(f"  what the broker answers pika: {reply}")
        self.step("3. Deleted and declared durable (new_task.py), then declared as a quorum queue, as the "
                  "tutorial on rabbitmq.com declares task_queue today.")
        with self.channel() as ch:
            ch.queue_delete(queue)
        out(f"  channel.queue_delete(queue='{queue}')   # or: rabbitmqctl delete_queue {queue}")
        out(f"  $ python new_task.py --queue {queue} 'Hello World!'")
        self.run_script("new_task.py", ["new_task.py", "--queue", queue, "Hello World!"])
        out(f"  $ python worker.py --queue {queue} --queue-type quorum")
        worker = self.run_script("worker.py", ["worker.py", "--queue", queue, "--queue-type", "quorum"], timeout=60)
        errors = [line for line in refused.lines + worker.lines if line.startswith("error: ")]
        if code == 0 or worker.proc.returncode == 0 or len(errors) != 2:
            raise cli.Failure(f"the broker took the queue's new settings (exit statuses {code} and "
                              f"{worker.proc.returncode}): this lesson expected a refusal")
        self.seen(["Declaring the queue again with durable=True, or with another queue type, was refused "
                   f"({reply.split(' - ')[0]}): each script stopped with one error: line, exit status 1.",
                   "To change a queue's settings, delete it (its messages with it), or use a new name; "
                   "the tutorial names its durable queue task_queue for that reason, not hello."],
                  "walkthrough", "既に存在するキューの設定を変えることはできない。")


LESSONS: dict[str, type[Lesson]] = {cls.name: cls for cls in (Ack, Durable, Confirms, Redeclare)}


def lesson_main(name: str) -> None:
    cls = LESSONS[name]
    args = cls.parser().parse_args()
    signals = Signals()
    signals.install()
    own: brokers.Node | None = None
    default = False
    try:
        if cls.restarts:
            own = own_broker(None, reason=cls.restart_why)
            url = own.url
        elif args.url or os.environ.get("AMQP_URL", "").strip():
            url = args.url or os.environ["AMQP_URL"].split(";")[0].strip()
        else:
            url, own = default_broker(signals)
            default = own is None
    except KeyboardInterrupt:
        cli.warn("interrupted: the demo's own broker is removed" if cls.restarts or own else "interrupted")
        raise
    interrupted = False
    done: list[str] = []
    try:
        lesson = cls(args, signals, url, own, default)
        try:
            lesson.run()
        except KeyboardInterrupt:
            interrupted = True
        except px.AMQPError as exc:
            raise cli.Failure(broker.explain(exc, lesson.params)) from None
        finally:
            signals.closing = True
            done = lesson.clean_up()
    finally:
        signals.closing = True
        if own:
            own.close()
    if interrupted and pipe_closed.is_set():
        raise BrokenPipeError  # a quiet exit 1, as the scripts' when their output is closed
    if interrupted:
        removed = ["the demo's own broker removed"] if own else []
        cli.warn(", ".join(["interrupted: the lesson's scripts are stopped", *done, *removed]))
        raise KeyboardInterrupt
