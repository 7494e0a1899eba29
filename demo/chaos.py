#!/usr/bin/env python
"""Minutes of random faults across a RabbitMQ cluster while the tutorial's scripts run, then a count.

    python -m demo.chaos                      four minutes, a new seed
    python -m demo.chaos --minutes 30 --seed 7

It starts a cluster of private nodes (processes of rabbitmq-server, or containers: see harness.brokers) and a
quorum queue of its own. Producers run as users run them: the walkthrough's shell loop of single new_task.py
runs, and a new_task.py --stdin batch fed a line at a time (started again from the next line when it gives up,
as its error line says to). Workers run as users run them: worker.py, one of them slow, each given every
node's URL. Meanwhile a nemesis, reproducible from --seed, SIGKILLs a node and starts it again, freezes one and
thaws it, cuts one off and restores it, partitions one from the others and heals it, restarts one gracefully,
kill -9s a worker and starts another, and sends SIGTERM to a worker and starts another. Node faults come one
at a time (the cluster keeps a majority); worker faults overlap them.

At the end it heals everything, lets the workers drain the queue, and checks, as Jepsen's total-queue checker
does: every task a producer printed as Sent must have been done (lost: those that were not), none done that
no producer ever tried to send (unexpected), and how many were done twice (duplicated: at-least-once
delivery allows it; a task whose worker or node died before its ack is done again). The last line:

    chaos: sent N, done N, lost N, unexpected N, duplicated N, faults N (kill a, freeze b, ...)

It exits 0 only when lost and unexpected are both 0. Nothing is left behind, also after Ctrl+C.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika.exceptions

from harness import queues
from harness.brokers import Cluster, Node, NodesUnavailable, node_kind
from harness.children import Child
from harness.faults import remove_rules

ROOT = Path(__file__).resolve().parent.parent
NODE_FAULTS = ("kill", "freeze", "cut", "partition", "restart")
WORKER_FAULTS = ("worker-kill", "worker-term")
KINDS = (*NODE_FAULTS, *WORKER_FAULTS)
LABELS = {"kill": "kill", "freeze": "freeze", "cut": "cut", "partition": "partition", "restart": "restart",
          "worker-kill": "worker", "worker-term": "worker"}
WORKERS = 3  # the first is the slow one
DRAIN = 180.0  # seconds the workers get, after the last fault, to do every task Sent


def minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 24 * 60:
        raise argparse.ArgumentTypeError(f"expected minutes, more than 0, got {text!r}")
    return value


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=minutes, default=4.0, help="how long the faults go on (default: 4)")
    parser.add_argument("--seed", type=int, help="the nemesis's seed, to run the same faults again (default: new)")
    parser.add_argument("--nodes", type=int, choices=(3, 5), default=3, help="nodes in the cluster (default: 3)")
    return parser.parse_args()


class Log:
    """What happened, with its time since the start: printed as it happens, kept for the timeline."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.lock = threading.Lock()
        self.spans: list[tuple[str, str, float, float]] = []  # (what, on, from, to) in seconds

    def now(self) -> float:
        return time.monotonic() - self.began

    def say(self, text: str) -> None:
        with self.lock:
            print(f"{self.now():7.1f} s  {text}", flush=True)

    @contextlib.contextmanager
    def span(self, what: str, on: str) -> Iterator[None]:
        began = self.now()
        try:
            yield
        finally:
            with self.lock:
                self.spans.append((what, on, began, self.now()))


class Producers:
    """The shell loop and the --stdin batch; every body each tried to send, and those printed as Sent."""

    def __init__(self, queue: str, env: dict[str, str], log: Log) -> None:
        self.queue, self.env, self.log = queue, env, log
        self.tried: set[str] = set()
        self.sent: list[str] = []
        self.exits: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.live: set[subprocess.Popen[str]] = set()  # the new_task.py runs going on now
        self.threads = [threading.Thread(target=self._loop, daemon=True),
                        threading.Thread(target=self._batch, daemon=True)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float = 120) -> None:
        """No more input; each producer's current run ends as it would (killed past ``timeout`` seconds)."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for proc in list(self.live):
            proc.kill()

    def _popen(self, args: list[str], stdin: bool = False) -> subprocess.Popen[str]:
        proc = subprocess.Popen(args, env=self.env, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        self.live.add(proc)
        return proc

    def _script(self) -> list[str]:
        return [sys.executable, str(ROOT / "new_task.py"), "--queue", self.queue, "--queue-type", "quorum"]

    def _record(self, kind: str, out: str, err: str) -> None:
        with self.lock:
            self.sent += [line.removeprefix(" [x] Sent '").removesuffix("'") for line in out.splitlines()
                          if line.startswith(" [x] Sent '")]
            self.errors += [line for line in err.splitlines() if not line.startswith("warning: ")]
            self.exits[kind] += 1

    def _loop(self) -> None:
        """`for i in $(seq N); do python new_task.py loop-$i; done`, until stopped."""
        i = 0
        while not self.stopping.is_set():
            i += 1
            body = f"loop-{i}"
            with self.lock:
                self.tried.add(body)
            proc = self._popen([*self._script(), body])
            try:
                out, err = proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                err += f"\nnew_task.py {body} was killed: it ran past 180 s"
            self.live.discard(proc)
            self._record(f"loop exit {proc.returncode}", out, err)
            time.sleep(0.05)

    def _batch(self) -> None:
        """new_task.py --stdin fed a line every 20 ms; when it gives up, another from the next line on."""
        i = 0
        while not self.stopping.is_set():
            proc = self._popen([*self._script(), "--stdin"], stdin=True)
            assert proc.stdin and proc.stdout and proc.stderr
            out: list[str] = []
            err: list[str] = []
            readers = [threading.Thread(target=out.extend, args=(proc.stdout,), daemon=True),
                       threading.Thread(target=err.extend, args=(proc.stderr,), daemon=True)]
            for reader in readers:
                reader.start()
            with contextlib.suppress(BrokenPipeError, ValueError):  # it gave up: its error line says from where
                while not self.stopping.is_set() and proc.poll() is None:
                    i += 1
                    with self.lock:
                        self.tried.add(f"batch-{i}")
                    proc.stdin.write(f"batch-{i}\n")
                    proc.stdin.flush()
                    time.sleep(0.02)
            with contextlib.suppress(BrokenPipeError, ValueError):
                proc.stdin.close()
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                err.append("(the batch was killed: it did not end within 120 s of its input's end)")
            for reader in readers:
                reader.join(30)
            self.live.discard(proc)
            self._record(f"batch exit {proc.returncode}", "".join(out), "".join(err))
            if proc.returncode and not self.stopping.is_set():
                self.log.say(f"the --stdin batch gave up (exit {proc.returncode}); starting another from the next line")


class Workers:
    """worker.py processes, each given every node's URL (rotated, so that they spread over the nodes)."""

    def __init__(self, queue: str, urls: list[str], log: Log) -> None:
        self.queue, self.urls, self.log = queue, urls, log
        self.all: list[Child] = []
        self.running: list[Child] = []
        self.slow: set[Child] = set()
        self.started = 0

    def start(self, slow: bool = False) -> Child:
        self.started += 1
        turn = self.started % len(self.urls)
        env = dict(os.environ, AMQP_URL=";".join(self.urls[turn:] + self.urls[:turn]))
        w = Child([sys.executable, str(ROOT / "worker.py"), "--queue", self.queue, "--queue-type", "quorum",
                   "--sleep", "0.2" if slow else "0.02"], env)
        self.all.append(w)
        self.running.append(w)
        if slow:
            self.slow.add(w)
        return w

    def replace(self, rng: random.Random, signum: int) -> str:
        """A worker stopped with ``signum`` (SIGKILL at once; SIGTERM once its task is done), another started."""
        w = rng.choice(self.running)
        self.running.remove(w)
        w.signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            w.wait(30)
        self.start(slow=w in self.slow)
        return f"worker {w.proc.pid} ({'SIGKILL' if signum == signal.SIGKILL else 'SIGTERM'}, exit {w.proc.poll()})"

    def done(self) -> list[str]:
        return [task.body for w in self.all for task in w.tasks() if task.done is not None]

    def stop(self) -> None:
        for w in self.all:
            w.stop()


class Nemesis:
    """Faults at random moments, reproducible from the seed: node faults one at a time, worker faults
    between and during them."""

    def __init__(self, cluster: Cluster, workers: Workers, log: Log, rng: random.Random) -> None:
        self.cluster, self.workers, self.log, self.rng = cluster, workers, log, rng
        self.counts: collections.Counter[str] = collections.Counter()
        self.kinds = rounds(rng)

    def run(self, until: float) -> None:
        worker_fault: threading.Thread | None = None
        while self.log.now() < until:
            kind = next(self.kinds)
            if kind in WORKER_FAULTS:
                self._worker_fault(kind)
            else:
                # Sometimes a worker fault lands in the middle of the node fault: the two overlap.
                if self.rng.random() < 0.3 and (worker_fault is None or not worker_fault.is_alive()):
                    delay = self.rng.uniform(1, 4)
                    other = self.rng.choice(WORKER_FAULTS)
                    worker_fault = threading.Thread(target=self._later, args=(delay, other), daemon=True)
                    worker_fault.start()
                self._node_fault(kind, self.rng.choice(self.cluster.nodes), self.rng.uniform(3, 10))
            self._pause(self.rng.uniform(2, 6))
        if worker_fault:
            worker_fault.join(60)

    def _pause(self, seconds: float) -> None:
        time.sleep(seconds)

    def _later(self, delay: float, kind: str) -> None:
        time.sleep(delay)
        self._worker_fault(kind)

    def _worker_fault(self, kind: str) -> None:
        self.counts[kind] += 1
        signum = signal.SIGKILL if kind == "worker-kill" else signal.SIGTERM
        with self.log.span(kind, "workers"):
            self.log.say(f"{kind}: {self.workers.replace(self.rng, signum)}; another started")

    def _node_fault(self, kind: str, node: Node, seconds: float) -> None:
        self.counts[kind] += 1
        name = label(self.cluster, node.nodename)
        self.log.say(f"{kind} {name} (port {node.port}) for {seconds:.1f} s")
        with self.log.span(kind, node.nodename):
            if kind == "kill":
                node.kill()
                time.sleep(seconds)
                node.start(wait=False)
            elif kind == "restart":
                node.ctl("stop_app")
                time.sleep(seconds)
                node.ctl("start_app")
            else:
                fault: Callable[[], contextlib.AbstractContextManager[None]] = {
                    "freeze": node.frozen, "cut": node.cut_off, "partition": node.partitioned}[kind]
                with fault():
                    time.sleep(seconds)
                if kind == "partition":
                    self._heal(node)
            self.cluster.wait_whole(timeout=180)
        self.log.say(f"{kind} {name}: over, the cluster whole again")

    def _heal(self, node: Node) -> None:
        """After a partition the cluster may stay split (RabbitMQ 3.x's `ignore`) until the node's app
        restarts: RabbitMQ's way to heal it by hand. Wait a little for it to heal by itself first."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.SubprocessError, OSError, RuntimeError):
                if len(self.cluster.members_running()) == len(self.cluster.nodes) and not partitions(node):
                    return
            time.sleep(1)
        node.ctl("stop_app")
        node.ctl("start_app")


def drain(workers: Workers, sent: list[str], queue: str, urls: list[str]) -> None:
    """Until every task Sent was done; or the queue has been empty, and nothing done, for 5 s (what is
    missing is elsewhere: set aside, or lost); or DRAIN seconds."""
    deadline = time.monotonic() + DRAIN
    done, still_since = len(workers.done()), time.monotonic()
    while not set(sent) <= set(workers.done()) and time.monotonic() < deadline:
        time.sleep(0.5)
        if len(workers.done()) != done:
            done, still_since = len(workers.done()), time.monotonic()
        elif time.monotonic() - still_since > 5 and queues.depth(queue, ";".join(urls)) == 0:
            return


def failed_count(queue: str, urls: list[str]) -> int:
    """Tasks in QUEUE.failed (none where the queue was never made)."""
    try:
        return queues.depth(f"{queue}.failed", ";".join(urls))
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return 0
        raise


def rounds(rng: random.Random) -> Iterator[str]:
    """The kinds of fault in turn: every kind once in a shuffled round, then another round, so that a short
    run still has each kind."""
    while True:
        deck = list(KINDS)
        rng.shuffle(deck)
        yield from deck


def partitions(node: Node) -> bool:
    """Whether the node reports a partition (RabbitMQ 3.x; nothing on 4.x, where Khepri heals by itself)."""
    out = node.ctl("eval", "catch rabbit_node_monitor:partitions().")
    return "@" in out


def timeline(log: Log, cluster: Cluster, width: int = 72) -> list[str]:
    """One row per node and one for the workers: a character per slice of the run, the fault's first letter
    where one was on (k kill, f freeze, c cut off, p partition, r restart, w worker), '.' elsewhere."""
    end = max([log.now(), *(to for _, _, _, to in log.spans)])
    step = end / width
    letter = {"kill": "k", "freeze": "f", "cut": "c", "partition": "p", "restart": "r", "worker-kill": "w",
              "worker-term": "w"}
    rows = []
    for on in [*(node.nodename for node in cluster.nodes), "workers"]:
        cells = ["."] * width
        for what, where, began, ended in log.spans:
            if where == on:
                first = min(width - 1, int(began / step))
                for i in range(first, max(first + 1, min(width, math.ceil(ended / step)))):
                    cells[i] = letter[what]
        rows.append(f"  {label(cluster, on):>8} |{''.join(cells)}| {end:.0f} s")
    return rows


def label(cluster: Cluster, nodename: str) -> str:
    """``node 2`` for the cluster's second node; what else is named stays as it is."""
    return next((f"node {i}" for i, node in enumerate(cluster.nodes, 1) if node.nodename == nodename), nodename)


def main() -> int:
    args = arguments()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    rng = random.Random(seed)

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    try:
        kind = node_kind()
    except NodesUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log = Log()
    print(f"chaos: seed {seed}, {args.minutes:g} minutes, {args.nodes} nodes ({kind}es)", flush=True)
    cluster = Cluster(args.nodes, name="wqchaos", groups=200_000 + 5 * os.getpid())
    queue = f"chaos.{uuid.uuid4().hex[:8]}"
    producers: Producers | None = None
    workers: Workers | None = None
    try:
        cluster.start()
        urls = cluster.urls
        queues.declare(queue, ";".join(urls), "quorum")
        log = Log()  # the times count from here
        log.say(f"cluster up: {', '.join(str(n.port) for n in cluster.nodes)}; queue {queue}")
        workers = Workers(queue, urls, log)
        for i in range(WORKERS):
            workers.start(slow=i == 0)
        for w in workers.all:
            w.wait_for("Waiting for messages", timeout=60)
        producers = Producers(queue, dict(os.environ, AMQP_URL=";".join(urls)), log)
        producers.start()
        nemesis = Nemesis(cluster, workers, log, rng)
        nemesis.run(until=args.minutes * 60)
        log.say("the faults are over: healing, stopping the producers, letting the workers drain")
        cluster.wait_whole(timeout=180)
        producers.stop()
        sent = producers.sent
        drain(workers, sent, queue, urls)
        # A task delivered --attempts times without an ack (its worker or its node died under it each time)
        # is set aside in QUEUE.failed before it runs again, as a task that kills its worker is: sent back
        # here as an operator would, with python -m workqueue.failed --requeue.
        set_aside = failed_count(queue, urls)
        if set_aside:
            log.say(f"{set_aside} tasks were set aside in {queue}.failed (delivered --attempts times without an "
                    "ack); sending them back with python -m workqueue.failed --requeue")
            requeued = subprocess.run([sys.executable, "-m", "workqueue.failed", "--queue", queue, "--queue-type",
                                       "quorum", "--requeue"], env=dict(os.environ, AMQP_URL=";".join(urls)),
                                      cwd=ROOT, capture_output=True, text=True, timeout=300)
            if requeued.returncode:
                log.say(f"the requeue failed (exit {requeued.returncode}): {requeued.stderr.strip()}")
            drain(workers, sent, queue, urls)
        left = queues.depth(queue, ";".join(urls)) + failed_count(queue, urls)
        done = workers.done()
        counted = collections.Counter(done)
        lost = sorted(set(sent) - set(done))
        unexpected = sorted(set(done) - producers.tried)
        unconfirmed = sorted(set(done) - set(sent) - set(unexpected))
        duplicated = sum(n - 1 for n in counted.values() if n > 1)
        print("\ntimeline (k kill, f freeze, c cut off, p partition, r graceful restart, w worker killed or stopped):")
        print("\n".join(timeline(log, cluster)))
        print(f"\nproducers: {dict(sorted(producers.exits.items()))}; their error lines: {len(producers.errors)}")
        for line in producers.errors[:5]:
            print(f"  {line}")
        print(f"workers: {workers.started} started, {len(workers.all) - len(workers.running)} stopped by the "
              f"nemesis; ready in the queue at the end: {left}")
        if lost:
            print(f"lost: {lost[:20]}{' ...' if len(lost) > 20 else ''}")
        if unexpected:
            print(f"unexpected: {unexpected[:20]}")
        print(f"done though never printed as Sent (their publisher gave up before a confirm came): "
              f"{len(unconfirmed)}; set aside on the way and sent back: {set_aside}")
        faults = nemesis.counts
        per_kind = {label: sum(n for k, n in faults.items() if LABELS[k] == label)
                    for label in ("kill", "freeze", "cut", "partition", "restart", "worker")}
        print(f"chaos: sent {len(sent)}, done {len(set(done))}, lost {len(lost)}, unexpected {len(unexpected)}, "
              f"duplicated {duplicated}, faults {sum(faults.values())} ("
              + ", ".join(f"{k} {n}" for k, n in per_kind.items()) + ")", flush=True)
        return 0 if not lost and not unexpected and left == 0 else 1
    except KeyboardInterrupt:
        print("interrupted: stopping the producers, the workers and the nodes", file=sys.stderr, flush=True)
        return 130
    finally:
        if producers:
            producers.stopping.set()
        if workers:
            workers.stop()
        if producers:
            producers.stop(timeout=30)
        cluster.close()
        remove_rules()  # a fault Ctrl+C interrupted as it began


if __name__ == "__main__":
    sys.exit(main())
