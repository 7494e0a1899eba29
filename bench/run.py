#!/usr/bin/env python
"""Benchmark this project's scripts against the plain tutorial's, in one run, on the local broker.

    python bench/run.py                 # the full run, a few minutes
    python bench/run.py --quick         # fewer repeats, smaller batches: checks that it all works
    python bench/run.py --only drain    # one section (invocation, batch, drain, experiment, cluster); repeatable

The plain tutorial's scripts (in bench/, named seed_*.py): seed_new_task.py and seed_worker.py are the
tutorial's new_task.py and worker.py (the worker with the one change pika 1.x needs);
seed_batch_publisher.py is the tutorial's new_task.py looping over stdin on one connection, with no
confirms or (CONFIRM=1) with a blocking confirm per message.

Every script's output is read by this process through a pipe, as `| tee log` reads it, never thrown
away to /dev/null: what is timed is what a user sees. Ours and the tutorial's run in turn, repeat by
repeat, so that drift hits both alike; each median comes with its repeats' range (min–max), and each
ratio of medians with the range of the ratios of the pairs of repeats. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from demo.experiment import timeline as draw_timeline  # noqa: E402
from harness import queues  # noqa: E402
from harness.brokers import Cluster, Node  # noqa: E402 - the tests' and `python -m demo.cluster`'s nodes
from harness.children import Child, Task  # noqa: E402
from harness.faults import dropping_port, silent_port  # noqa: E402

BENCH = ROOT / "bench"
PY = sys.executable
URL = "amqp://guest:guest@localhost:5672/%2F"  # the tutorial's scripts know only localhost
SECTIONS = ("invocation", "batch", "drain", "experiment", "cluster")


def progress(message: str) -> None:
    """Where the run is, on a terminal's stderr only (the report on stdout stays clean)."""
    if sys.stderr.isatty():
        print(f"  ... {message}", file=sys.stderr, flush=True)


# Queues


def new_queue(kind: str = "classic", url: str = URL) -> str:
    """A queue of the benchmark's own, declared as the scripts declare it."""
    name = f"bench.{uuid.uuid4().hex[:10]}"
    queues.declare(name, url, kind)
    return name


# Not passed on to the scripts: a user's shell has none of them (unbuffered output would slow the
# tutorial's scripts; no bytecode cache would slow ours, which import more of their own modules).
NOT_PASSED = ("AMQP_URL", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")


def env_for(queue: str, url: str = URL, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_PASSED}
    return {**env, "QUEUE": queue, "AMQP_URL": url, **extra}


# Running a script, its output read through a pipe


def piped(cmd: list[str], env: dict[str, str], stdin: bytes | None = None) -> tuple[float, bytes]:
    """Run a script to its end, its stdout read through a pipe as `| tee log` reads it: (seconds, stdout).

    The timing runs from the start of the process to the end of its output, both written and read.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE)
    out, _ = proc.communicate(stdin)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd, out)
    return seconds, out


def sent_lines(out: bytes) -> int:
    return sum(line.startswith(b" [x] Sent ") for line in out.splitlines())


def rss_mib(pid: int) -> float:
    """A live process's resident memory (VmRSS in /proc/PID/status), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no VmRSS for process {pid}")


# Repeats and their summaries


@dataclass
class Pairs:
    """Repeats of ours and of a baseline, run back to back: ours[i] and base[i] are the i-th pair."""

    ours: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.ours, self.base, strict=True)]


def spread(values: list[float], fmt: Callable[[float], str]) -> str:
    """The median, then (min–max) of the repeats; the bare value when there is only one."""
    median = fmt(statistics.median(values))
    if len(values) < 2:
        return median
    return f"{median} ({fmt(min(values))}–{fmt(max(values))})"


def count_fmt(x: float) -> str:
    return f"{x:,.0f}"


def ms_fmt(x: float) -> str:
    return f"{x * 1000:.1f}"


def mib_fmt(x: float) -> str:
    return f"{x:.1f}"


def seconds_fmt(x: float) -> str:
    return f"{x:.2f}"


def ratio_fmt(x: float) -> str:
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def in_turn(i: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    """Run both, the order alternating with the repeat, so that neither always goes first."""
    for step in (first, second) if i % 2 == 0 else (second, first):
        step()


# 1. One invocation of new_task.py


def one_invocation(runs: int) -> Pairs:
    """Seconds for one `new_task.py task...`, ours and the tutorial's, from start to the end of its output."""
    queue = new_queue()
    env = env_for(queue)
    times = Pairs()
    try:
        for i in range(runs):
            progress(f"one invocation {i + 1}/{runs}")
            in_turn(i, lambda: times.base.append(piped([PY, str(BENCH / "seed_new_task.py"), "task..."], env)[0]),
                    lambda: times.ours.append(piped([PY, "new_task.py", "--queue", queue, "task..."], env)[0]))
    finally:
        queues.delete(queue, URL)
    return times


# 2. A batch over one connection


@dataclass
class Batch:
    lines: int
    confirm_lines: int
    no_confirms: Pairs  # msg/s: ours, the tutorial's publisher without confirms
    blocking: Pairs  # msg/s: ours, the tutorial's publisher with a blocking confirm per message


def publish_rate(name: str, cmd: list[str], count: int, url: str = URL, kind: str = "classic",
                 **extra: str) -> float:
    """msg/s of one publisher sending ``count`` lines of stdin; checks that all were stored and printed."""
    queue = new_queue(kind, url)
    try:
        lines = "".join(f"task {i}.\n" for i in range(count)).encode()
        args = cmd + (["--queue", queue, "--queue-type", kind] if name == "ours" else [])
        seconds, out = piped(args, env_for(queue, url, **extra), stdin=lines)
        stored, printed = queues.depth(queue, url), sent_lines(out)
        if stored != count or printed != count:
            raise RuntimeError(f"{name}: {stored} of {count} messages in the queue, {printed} 'Sent' lines")
        return count / seconds
    finally:
        queues.delete(queue, url)


def batch(count: int, confirm_count: int, repeat: int) -> Batch:
    """msg/s of each publisher over one connection, ``repeat`` times, the three in turn (rotating)."""
    ours = [PY, "new_task.py", "--stdin"]
    tutorial = [PY, str(BENCH / "seed_batch_publisher.py")]
    result = Batch(count, confirm_count, Pairs(), Pairs())
    rates: dict[str, list[float]] = {"ours": [], "no_confirms": [], "blocking": []}
    runs: list[tuple[str, Callable[[], float]]] = [
        ("ours", lambda: publish_rate("ours", ours, count)),
        ("no_confirms", lambda: publish_rate("no_confirms", tutorial, count)),
        ("blocking", lambda: publish_rate("blocking", tutorial, confirm_count, CONFIRM="1")),
    ]
    for i in range(repeat):
        progress(f"batch {i + 1}/{repeat}")
        for name, run in runs[i % 3:] + runs[:i % 3]:
            rates[name].append(run())
    result.no_confirms.ours = result.blocking.ours = rates["ours"]
    result.no_confirms.base, result.blocking.base = rates["no_confirms"], rates["blocking"]
    return result


# 3. Draining a queue of no-op tasks with one worker (prefetch 1)


@dataclass
class Drain:
    tasks: int  # no-op tasks in the queue at the start of each drain
    rate: Pairs = field(default_factory=Pairs)  # msg/s: ours, the tutorial's worker
    rss: Pairs = field(default_factory=Pairs)  # MiB after the drain: ours, the tutorial's worker


def fill(queue: str, count: int, kind: str) -> None:
    lines = b"x\n" * count
    _, out = piped([PY, "new_task.py", "--queue", queue, "--queue-type", kind, "--stdin"], env_for(queue),
                   stdin=lines)
    if sent_lines(out) != count:
        raise RuntimeError(f"filling {queue}: {sent_lines(out)} of {count} sent")


def drain_once(tutorial: bool, kind: str, count: int) -> tuple[float, float]:
    """One worker draining ``count`` no-op tasks: (msg/s from the first Received to the last Done, MiB)."""
    queue = new_queue(kind)
    try:
        fill(queue, count, kind)
        if tutorial:
            # Through a pipe, the tutorial's worker would hold its lines in an 8 KiB buffer (ours flushes
            # each line); give it line buffering, so that both write each line as it happens and the
            # timing reads them alike.
            path = str(BENCH / "seed_worker.py")
            args = [PY, "-c", "import sys, runpy; sys.stdout.reconfigure(line_buffering=True); "
                    f"runpy.run_path({path!r}, run_name='__main__')"]
        else:
            args = [PY, "worker.py", "--queue", queue, "--queue-type", kind]
        # Read on this thread, with nothing else running here, to take as little CPU as we can.
        proc = subprocess.Popen(args, env=env_for(queue, QUEUE_TYPE=kind), cwd=ROOT, text=True,
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None
        first = last = 0.0
        done = 0
        rss = 0.0
        try:
            for line in proc.stdout:
                if not first and "Received" in line:
                    first = time.perf_counter()
                elif line == " [x] Done\n":
                    done += 1
                    if done == count:
                        last = time.perf_counter()
                        rss = rss_mib(proc.pid)
                        break
        finally:
            proc.kill()
            proc.wait()
        if done < count:
            raise RuntimeError(f"the worker stopped after {done} of {count} tasks")
        return count / (last - first), rss
    finally:
        queues.delete(queue, URL)


def drain(count: int, runs: int) -> dict[str, Drain]:
    result: dict[str, Drain] = {}
    for kind in ("classic", "quorum"):
        d = result[kind] = Drain(count)

        def one(tutorial: bool, kind: str = kind, d: Drain = d) -> None:
            rate, rss = drain_once(tutorial, kind, count)
            (d.rate.base if tutorial else d.rate.ours).append(rate)
            (d.rss.base if tutorial else d.rss.ours).append(rss)

        for i in range(runs):
            progress(f"drain, {kind} queue {i + 1}/{runs}")
            in_turn(i, lambda: one(True), lambda: one(False))
    return result


# 4. The walkthrough's fair-dispatch experiment, at a tenth of its time


@dataclass
class Experiment:
    prefetch: int
    fast: float  # seconds per task
    slow: float
    tasks: dict[str, list[Task]]  # each worker's tasks done, their times from the loop's start
    makespan: float  # from the start of the shell loop to the last Done

    def split(self) -> str:
        return f"{len(self.tasks.get('fast', []))}/{len(self.tasks.get('slow', []))}"


def experiment(prefetch: int, fast: float = 0.2, slow: float = 0.5) -> Experiment:
    """Two of our workers (fast and slow), fed ten tasks by the walkthrough's shell loop."""
    queue = new_queue()
    workers: dict[str, Child] = {}
    try:
        for label, seconds in (("fast", fast), ("slow", slow)):
            workers[label] = Child([PY, "worker.py", "--queue", queue, "--sleep", str(seconds),
                                    "--prefetch", str(prefetch)], env_for(queue))
            workers[label].wait_for("Waiting for messages", timeout=300)
        start = time.monotonic()
        _, out = piped(["bash", "-c", 'for i in $(seq 10); do "$PY" new_task.py --queue "$Q" $i; done'],
                       {**env_for(queue), "PY": PY, "Q": queue})
        if sent_lines(out) != 10:
            raise RuntimeError(f"the loop sent {sent_lines(out)} of 10 tasks")
        deadline = time.monotonic() + 60
        while sum(w.count(" [x] Done") for w in workers.values()) < 10 and time.monotonic() < deadline:
            if any(w.proc.poll() is not None for w in workers.values()):
                raise RuntimeError("a worker of the experiment exited")
            time.sleep(0.05)
        tasks: dict[str, list[Task]] = {}
        for label, w in workers.items():
            w.stop()
            tasks[label] = [task for task in w.tasks(since=start) if task.done is not None]
        end = max(task.done or 0.0 for done in tasks.values() for task in done)
        return Experiment(prefetch, fast, slow, tasks, end)
    finally:
        for w in workers.values():
            w.stop()
        queues.delete(queue, URL)


def timeline(run: Experiment, scale: float = 0.05) -> str:
    """Each worker a row; each task drawn from when it was received to when it was done (as `python -m
    demo` draws them)."""
    rows = [(f"{seconds:.1f} s worker", run.tasks.get(label, []))
            for label, seconds in (("fast", run.fast), ("slow", run.slow))]
    return "\n".join(draw_timeline(rows, run.makespan, scale))


# 5. A cluster of three nodes: publishing to a quorum queue, and a worker's failover


@dataclass
class ClusterRun:
    lines: int
    publish: Pairs = field(default_factory=Pairs)  # msg/s to a quorum queue: three nodes, one node
    failover: dict[str, Pairs] = field(default_factory=dict)  # fault: s from it to the next Done elsewhere
    past_dead: dict[str, Pairs] = field(default_factory=dict)  # dead first URL: s for one new_task.py


# What the scripts had before they bounded the wait themselves: RabbitMQ's heartbeat of 60 s and pika's
# own bounds on the TCP connection (10 s) and on the whole handshake (15 s).
DEFAULTS = "heartbeat=60&socket_timeout=10&stack_timeout=15"


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}" if query else url


@contextlib.contextmanager
def fault(node: Node, kind: str) -> Iterator[None]:
    """The fault for the block: the node SIGKILLed (started again by wait_whole later), frozen or cut off."""
    if kind == "killed":
        node.kill()
        yield
    else:
        with node.frozen() if kind == "frozen" else node.cut_off():
            yield


def failover_once(cluster: Any, kind: str, query: str = "") -> float:
    """A worker of short tasks on a node that does not lead the queue; the fault hits that node: seconds from
    it to the worker's first Done after it says it is connected again (through another node)."""
    urls = ";".join(cluster.urls)
    queue = new_queue("quorum", urls)
    worker = None
    try:
        _, out = piped([PY, "new_task.py", "--queue", queue, "--queue-type", "quorum", "--stdin"],
                       env_for(queue, urls), stdin=b"x\n" * 2000)
        leader = cluster.leader(queue)  # a frozen leader stalls its queue for everyone (see the README)
        first = next(node for node in cluster.nodes if node is not leader)
        order = [first, *(node for node in cluster.nodes if node is not first)]
        worker = Child([PY, "worker.py", "--queue", queue, "--queue-type", "quorum", "--sleep", "0.01"],
                       env_for(queue, ";".join(with_query(node.url, query) for node in order)))
        worker.wait_for(" [x] Done", 50, timeout=300)

        def done_after_reconnecting() -> float | None:
            back = worker.first("connected again", errors=True) if worker else None
            return next((at for at, text in worker.out if back and at > back and text == " [x] Done"), None)

        began = time.monotonic()
        with fault(first, kind):
            return worker.wait_until(done_after_reconnecting, 300, f"a Done after the node was {kind}") - began
    finally:
        if worker:
            worker.stop()
        heal(cluster, first)
        queues.delete(queue, urls)


def heal(cluster: Any, faulted: Node) -> None:
    """The cluster whole again. A node frozen past the Erlang net tick (60 s, as with RabbitMQ's heartbeat of
    60 s) was partitioned from the others, and the cluster stays split until that node restarts."""
    try:
        cluster.wait_whole(timeout=30)
    except RuntimeError:
        faulted.kill()
        cluster.wait_whole()


@contextlib.contextmanager
def dead_port(kind: str, cluster: Any) -> Iterator[int]:
    """A first URL's port that does not answer: a frozen node's, one whose packets vanish, or one that takes
    TCP connections and never speaks."""
    if kind == "frozen":
        with cluster.nodes[0].frozen():
            yield cluster.nodes[0].port
    else:
        with dropping_port() if kind == "dropping" else silent_port() as port:
            yield port


def past_dead_once(cluster: Any, single: Node, kind: str, query: str = "") -> float:
    """Seconds for one `new_task.py x` whose first URL does not answer and whose second is a live node."""
    queue = new_queue("classic", single.url)
    try:
        with dead_port(kind, cluster) as port:
            urls = ";".join(with_query(url, query) for url in (f"amqp://guest:guest@localhost:{port}/%2F", single.url))
            seconds, out = piped([PY, "new_task.py", "--queue", queue, "x"], env_for(queue, urls))
        if sent_lines(out) != 1:
            raise RuntimeError(f"past a {kind} first URL: {out!r}")
        return seconds
    finally:
        queues.delete(queue, single.url)


FAULT_KINDS = ("killed", "frozen", "cut off")
DEAD_KINDS = ("frozen", "dropping", "silent")


def cluster_runs(count: int, repeat: int, baselines: bool) -> ClusterRun:
    """``baselines``: also measure with DEFAULTS (a minute or more a repeat for a frozen or cut-off node)."""
    result = ClusterRun(count)
    single, cluster = Node("wqbench"), Cluster(name="wqbench-c")
    try:
        progress("starting a node and a cluster of three")
        single.start(wait=False)
        cluster.start()
        single.wait_ready()
        ours = [PY, "new_task.py", "--stdin"]
        for i in range(repeat):
            progress(f"cluster: publishing {i + 1}/{repeat}")
            in_turn(i, lambda: result.publish.ours.append(publish_rate("ours", ours, count, ";".join(cluster.urls),
                                                                       "quorum")),
                    lambda: result.publish.base.append(publish_rate("ours", ours, count, single.url, "quorum")))
        for kind in FAULT_KINDS:
            pairs = result.failover[kind] = Pairs()
            for i in range(repeat):
                progress(f"cluster: failover, node {kind}, {i + 1}/{repeat}")
                pairs.ours.append(failover_once(cluster, kind))
                if baselines:
                    pairs.base.append(failover_once(cluster, kind, DEFAULTS))
        def measure(into: list[float], kind: str, query: str) -> None:
            into.append(past_dead_once(cluster, single, kind, query))

        for kind in DEAD_KINDS:
            pairs = result.past_dead[kind] = Pairs()
            for i in range(repeat):
                progress(f"cluster: one new_task.py past a {kind} first URL, {i + 1}/{repeat}")
                in_turn(i, functools.partial(measure, pairs.ours, kind, ""),
                        functools.partial(measure, pairs.base, kind, DEFAULTS))
    finally:
        single.close()
        cluster.close()
    return result


# The report


def machine() -> str:
    """One line: the kernel, cores, CPU model, Python, pika, and the version of the broker measured."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        conn = queues.connect(URL)
        rabbit = conn._impl.server_properties.get("version") or "?"  # what the broker says in its handshake
        conn.close()
    except Exception:  # the report goes on without it
        rabbit = "?"
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
            f"Python {platform.python_version()}, pika {pika.__version__}, RabbitMQ {rabbit} on localhost")


def code_version() -> str:
    """This project's commit, and whether files differ from it (the numbers are of the files on disk)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return f"{commit or '?'}{', with uncommitted changes' if changed else ''}"


def row(what: str, ours: str, base: str, ratio: str) -> None:
    print(f"| {what} | {ours} | {base} | {ratio} |")


def ratio_cell(pairs: Pairs, unit: str) -> str:
    """The ratio of the medians, then (min–max) of the ratios of the pairs: 0.98x (0.95–1.02x) the rate."""
    median = statistics.median(pairs.ours) / statistics.median(pairs.base)
    ratios = pairs.ratios()
    if len(ratios) < 2:
        return f"{ratio_fmt(median)} {unit}"
    return f"{ratio_fmt(median)} ({ratio_fmt(min(ratios)).removesuffix('x')}–{ratio_fmt(max(ratios))}) {unit}"


def report(inv: Pairs | None, rates: Batch | None, drains: dict[str, Drain] | None,
           runs: list[Experiment], nodes: ClusterRun | None = None) -> None:
    if inv or rates or drains:
        print("Each number is the median of the repeats, then (min–max) over them. Ours and the plain "
              "tutorial's run in turn, so each repeat is a pair. The ratio is ours ÷ the tutorial's: that of "
              "the two medians, then (min–max) of the pairs' ratios. The worst pair is the high end for times "
              "and memory, the low end for rates. Every script's output is read through a pipe, as "
              "`| tee log` reads it" + ("; in the drain the tutorial's worker is given line-buffered output, "
                                        "as ours has, so that its lines come as they happen" if drains else "")
              + ".\n")
        print("| what | this project | the plain tutorial's scripts | ratio |")
        print("|---|---|---|---|")
    if inv:
        n = len(inv.ours)
        row(f"one `new_task.py x`, start to end of output (ms; {n} runs)", spread(inv.ours, ms_fmt),
            f"the tutorial's `new_task.py` {spread(inv.base, ms_fmt)}", ratio_cell(inv, "the time"))
    if rates:
        n = len(rates.no_confirms.ours)
        row(f"batch of {rates.lines:,} lines over one connection, `--stdin`, all confirmed (msg/s; {n} runs)",
            spread(rates.no_confirms.ours, count_fmt),
            f"the tutorial's publisher looping over stdin, no confirms {spread(rates.no_confirms.base, count_fmt)}",
            ratio_cell(rates.no_confirms, "the rate"))
        row("", "", f"the same with a blocking confirm per message ({rates.confirm_lines:,} lines) "
            f"{spread(rates.blocking.base, count_fmt)}", ratio_cell(rates.blocking, "the rate"))
    if drains:
        for kind, d in drains.items():
            n = len(d.rate.ours)
            row(f"drain {d.tasks:,} no-op tasks, prefetch 1, {kind} queue (msg/s; {n} runs)",
                spread(d.rate.ours, count_fmt), f"the tutorial's worker {spread(d.rate.base, count_fmt)}",
                ratio_cell(d.rate, "the rate"))
            row(f"the worker's resident memory after that drain (VmRSS, MiB; {n} runs)",
                spread(d.rss.ours, mib_fmt), f"the tutorial's worker {spread(d.rss.base, mib_fmt)}",
                ratio_cell(d.rss, "the memory"))
    if runs:
        if not (inv or rates or drains):
            print("| what | this project | | |")
            print("|---|---|---|---|")
        for run in runs:
            name = "prefetch 1 (fair dispatch)" if run.prefetch == 1 else "prefetch 0 (round robin)"
            row(f"the walkthrough's experiment at 1/10 time ({run.fast:g} s and {run.slow:g} s workers, 10 tasks), "
                f"{name}: fast/slow split, makespan", f"{run.split()}, {run.makespan:.2f} s", "", "")
        print()
        for run in runs:
            name = "prefetch 1 (fair dispatch)" if run.prefetch == 1 else "prefetch 0 (round robin)"
            print(f"{name}: finished after {run.makespan:.2f} s")
            print("```")
            print(timeline(run))
            print("```")
    if nodes:
        n = len(nodes.publish.ours)
        print("\nA cluster of three private nodes on this machine, and one private node alike (harness.brokers):\n")
        print("| what | three nodes | one node | ratio |")
        print("|---|---|---|---|")
        row(f"batch of {nodes.lines:,} lines, `--stdin`, to a quorum queue, all confirmed (msg/s; {n} runs)",
            spread(nodes.publish.ours, count_fmt), spread(nodes.publish.base, count_fmt),
            ratio_cell(nodes.publish, "the rate"))
        print("\nFaults, and what they cost: seconds, this project's defaults, and the same scripts given RabbitMQ's "
              f"heartbeat and pika's own bounds (`?{DEFAULTS}`), what they had before they bounded the wait:\n")
        print("| what | defaults | `" + DEFAULTS + "` | ratio |")
        print("|---|---|---|---|")
        for kind, pairs in nodes.failover.items():
            base = (spread(pairs.base, seconds_fmt), ratio_cell(pairs, "the time")) if pairs.base else ("", "")
            row(f"a worker's node (not the queue's leader) {kind}: seconds to its next Done through another node "
                f"({len(pairs.ours)} runs)", spread(pairs.ours, seconds_fmt), *base)
        for kind, pairs in nodes.past_dead.items():
            row(f"one `new_task.py x`, its first URL {kind}, the second a live node: seconds to its end "
                f"({len(pairs.ours)} runs)", spread(pairs.ours, seconds_fmt), spread(pairs.base, seconds_fmt),
                ratio_cell(pairs, "the time"))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller batches")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="SECTION",
                        help=f"run only this section, one of {', '.join(SECTIONS)}; may be given more than once")
    args = parser.parse_args()
    quick: bool = args.quick
    sections: list[str] = list(dict.fromkeys(args.only)) if args.only else list(SECTIONS)

    print(f"Machine: {machine()}; {time.strftime('%Y-%m-%d')}.", flush=True)
    print(f"This project at {code_version()}; {'--quick' if quick else 'full run'}"
          f"{'' if sections == list(SECTIONS) else ', only ' + ', '.join(sections)}.\n", flush=True)

    inv = one_invocation(runs=7 if quick else 21) if "invocation" in sections else None
    rates = (batch(count=5_000 if quick else 20_000, confirm_count=1_000 if quick else 5_000, repeat=3)
             if "batch" in sections else None)
    drain_count, drain_runs = (1_000, 3) if quick else (5_000, 5)
    drains = drain(count=drain_count, runs=drain_runs) if "drain" in sections else None
    runs = [experiment(prefetch=1), experiment(prefetch=0)] if "experiment" in sections else []
    nodes = cluster_runs(5_000 if quick else 20_000, 1 if quick else 3, baselines=not quick) if "cluster" in sections \
        else None
    report(inv, rates, drains, runs, nodes)


if __name__ == "__main__":
    main()
