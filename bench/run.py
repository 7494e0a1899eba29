#!/usr/bin/env python
"""Benchmark this project's scripts against the plain tutorial's, in one run, on the local broker.

    python bench/run.py            # the full run, a few minutes
    python bench/run.py --quick    # fewer repetitions, smaller batches

Baselines (in bench/): seed_new_task.py and seed_worker.py are the seed's scripts (the worker with
the one change pika 1.x needs); seed_batch_publisher.py is the seed's publisher looping over stdin,
without confirms or (CONFIRM=1) with a blocking confirm per message. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pika

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
URL = "amqp://guest:guest@localhost:5672/%2F"  # the baselines know only localhost, as the tutorial does


def declare(kind: str = "classic") -> str:
    name = f"bench.{uuid.uuid4().hex[:10]}"
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    args = {"x-queue-type": "quorum"} if kind == "quorum" else None
    conn.channel().queue_declare(name, durable=True, arguments=args)
    conn.close()
    return name


def delete(name: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    conn.channel().queue_delete(name)
    conn.close()


def depth(name: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    count = conn.channel().queue_declare(name, passive=True).method.message_count
    conn.close()
    return count


def env_for(queue: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AMQP_URL"}
    return {**env, "QUEUE": queue, "AMQP_URL": URL, **extra}


def timed(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, input=stdin, text=True, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


# 1. One invocation of new_task.py


def one_invocation(runs: int) -> dict[str, float]:
    queue = declare()
    env = env_for(queue)
    seed, ours = [], []
    try:
        for _ in range(runs):  # interleaved, so that drift hits both alike
            seed.append(timed([PY, str(BENCH / "seed_new_task.py"), "task..."], env))
            ours.append(timed([PY, "new_task.py", "--queue", queue, "task..."], env))
    finally:
        delete(queue)
    return {"seed": statistics.median(seed), "ours": statistics.median(ours)}


# 2. A batch over one connection


def batch(count: int, confirm_count: int, repeat: int) -> dict[str, float]:
    """msg/s of each publisher over one connection, the median of ``repeat`` runs, interleaved."""
    runs = {
        "ours": ([PY, "new_task.py", "--stdin"], count, {}),
        "no_confirms": ([PY, str(BENCH / "seed_batch_publisher.py")], count, {}),
        "blocking_confirms": ([PY, str(BENCH / "seed_batch_publisher.py")], confirm_count, {"CONFIRM": "1"}),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, (cmd, n, extra) in runs.items():
            queue = declare()
            try:
                lines = "".join(f"task {i}.\n" for i in range(n))
                args = cmd + (["--queue", queue] if name == "ours" else [])
                seconds = timed(args, env_for(queue, **extra), stdin=lines)
                stored = depth(queue)
                assert stored == n, f"{name}: {stored} of {n} messages in the queue"
                rates[name].append(n / seconds)
            finally:
                delete(queue)
    return {name: statistics.median(r) for name, r in rates.items()}


# 3. Draining a queue of no-op tasks with one worker (prefetch 1)


class Lines:
    """A child process's stdout lines, each with the time it came."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE)
        self.got: list[tuple[float, str]] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            with self.changed:
                self.got.append((time.perf_counter(), line.rstrip("\n")))
                self.changed.notify_all()

    def wait_for(self, text: str, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while sum(text in line for _, line in self.got) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"waited {timeout}s for {count} x {text!r}")
                self.changed.wait(1)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def fill(queue: str, count: int, kind: str) -> None:
    lines = "".join("x\n" for _ in range(count))
    subprocess.run([PY, "new_task.py", "--queue", queue, "--queue-type", kind, "--stdin"], input=lines,
                   text=True, env=env_for(queue), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def drain_rate(cmd: list[str], kind: str, count: int) -> float:
    queue = declare(kind)
    try:
        fill(queue, count, kind)
        seed = "seed_worker" in cmd[-1]
        args = cmd if seed else cmd + ["--queue", queue, "--queue-type", kind]
        # The seed's worker prints with Python's default buffering; give it line buffering, as ours has,
        # so that both write each line as it happens and the timing reads them alike.
        if seed:
            args = [PY, "-c", "import sys, runpy; sys.stdout.reconfigure(line_buffering=True); "
                    f"runpy.run_path({cmd[-1]!r}, run_name='__main__')"]
        # Read on this thread, with nothing else running here, to take as little CPU as we can.
        proc = subprocess.Popen(args, env=env_for(queue, QUEUE_TYPE=kind), cwd=ROOT, text=True,
                                stdout=subprocess.PIPE)
        first = last = 0.0
        done = 0
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                if not first and "Received" in line:
                    first = time.perf_counter()
                elif line == " [x] Done\n":
                    done += 1
                    if done == count:
                        last = time.perf_counter()
                        break
        finally:
            proc.kill()
            proc.wait()
        if done < count:
            raise RuntimeError(f"the worker stopped after {done} of {count} tasks")
        return count / (last - first)
    finally:
        delete(queue)


def drain(count: int, runs: int) -> dict[str, dict[str, float]]:
    result: dict[str, dict[str, float]] = {}
    for kind in ("classic", "quorum"):
        seed, ours = [], []
        for _ in range(runs):
            seed.append(drain_rate([str(BENCH / "seed_worker.py")], kind, count))
            ours.append(drain_rate([PY, "worker.py"], kind, count))
        result[kind] = {"seed": statistics.median(seed), "ours": statistics.median(ours)}
    return result


# 4. The seed's fair-dispatch experiment, at a tenth of its time


def experiment(prefetch: int, fast: float = 0.2, slow: float = 0.5) -> dict:
    queue = declare()
    workers = {}
    try:
        for label, seconds in (("fast", fast), ("slow", slow)):
            workers[label] = Lines([PY, "worker.py", "--queue", queue, "--sleep", str(seconds),
                                    "--prefetch", str(prefetch)], env_for(queue))
            workers[label].wait_for("Waiting for messages", 1)
        start = time.perf_counter()
        subprocess.run(["bash", "-c", 'for i in $(seq 10); do "$PY" new_task.py --queue "$Q" $i; done'],
                       env={**env_for(queue), "PY": PY, "Q": queue}, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while sum(w.proc.poll() is None and sum(line == " [x] Done" for _, line in w.got)
                  for w in workers.values()) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        tasks: dict[str, list[tuple[str, float, float]]] = {}
        for label, w in workers.items():
            w.stop()
            current = None
            for t, line in w.got:
                found = re.match(r" \[x\] Received b'(\d+)'", line)
                if found:
                    current = (found[1], t)
                elif line == " [x] Done" and current:
                    tasks.setdefault(label, []).append((current[0], current[1] - start, t - start))
                    current = None
        end = max(stop for spans in tasks.values() for _, _, stop in spans)
        return {"prefetch": prefetch, "tasks": tasks, "makespan": end, "fast": fast, "slow": slow}
    finally:
        delete(queue)


def timeline(run: dict, scale: float = 0.05) -> str:
    """Each worker a row; each task drawn from when it was received to when it was done."""
    rows = []
    width = int(run["makespan"] / scale) + 2
    for label in ("fast", "slow"):
        cells = [" "] * width
        for task, start, stop in run["tasks"].get(label, []):
            a, b = int(start / scale), max(int(stop / scale), int(start / scale) + len(task) + 1)
            for i in range(a, min(b, width)):
                cells[i] = "-"
            cells[a] = "["
            for j, ch in enumerate(task):
                if a + 1 + j < width:
                    cells[a + 1 + j] = ch
            if b - 1 < width:
                cells[b - 1] = "]"
        rows.append(f"{run[label]:.1f} s worker |{''.join(cells).rstrip()}")
    ticks = "".join(f"{i * 10 * scale:<10.1f}" for i in range(width // 10 + 1))
    rows.append(f"{'time (s)':>12} |{ticks.rstrip()}")
    return "\n".join(rows)


# The report


def machine() -> str:
    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        rabbit = subprocess.run(["rabbitmqctl", "version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except OSError:
        rabbit = "?"
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
            f"Python {platform.python_version()}, pika {pika.__version__}, RabbitMQ {rabbit or '?'} on localhost")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and smaller batches")
    args = parser.parse_args()
    quick = args.quick
    print(f"Machine: {machine()}; {time.strftime('%Y-%m-%d')}.\n", flush=True)

    inv = one_invocation(runs=10 if quick else 21)
    rates = batch(count=20_000 if quick else 50_000, confirm_count=2_000 if quick else 5_000,
                  repeat=1 if quick else 3)
    drain_count, drain_runs = (2_000, 1) if quick else (5_000, 5)
    drains = drain(count=drain_count, runs=drain_runs)
    fair, robin = experiment(prefetch=1), experiment(prefetch=0)

    print("| what | this project | baseline | ratio |")
    print("|---|---|---|---|")
    print(f"| one `new_task.py x` (median of {10 if quick else 21}) | {inv['ours'] * 1000:.1f} ms "
          f"| seed's script {inv['seed'] * 1000:.1f} ms | {inv['ours'] / inv['seed']:.2f}x the time |")
    print(f"| batch over one connection, `--stdin` (msg/s, all confirmed; median of {1 if quick else 3}) "
          f"| {rates['ours']:,.0f} | no confirms "
          f"{rates['no_confirms']:,.0f} | {rates['ours'] / rates['no_confirms']:.2f}x |")
    print(f"| | | a blocking confirm each {rates['blocking_confirms']:,.0f} "
          f"| {rates['ours'] / rates['blocking_confirms']:.1f}x |")
    for kind, r in drains.items():
        print(f"| drain {drain_count} no-op tasks, prefetch 1, {kind} queue (msg/s, median of {drain_runs}) "
              f"| {r['ours']:,.0f} | seed's worker "
              f"{r['seed']:,.0f} | {r['ours'] / r['seed']:.2f}x |")
    for run, name in ((fair, "prefetch 1 (fair dispatch)"), (robin, "prefetch 0 (round robin)")):
        split = f"{len(run['tasks'].get('fast', []))}/{len(run['tasks'].get('slow', []))}"
        print(f"| seed's experiment at 1/10 time, {name}: fast/slow split, makespan | {split}, "
              f"{run['makespan']:.2f} s | | |")
    print()
    for run, name in ((fair, "prefetch 1 (fair dispatch)"), (robin, "prefetch 0 (round robin)")):
        print(f"{name}: finished after {run['makespan']:.2f} s")
        print("```")
        print(timeline(run))
        print("```")


if __name__ == "__main__":
    main()
