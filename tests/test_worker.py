"""worker.py, section by section of the tutorial: round-robin dispatching, message acknowledgment,
fair dispatch, and the worker's own output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, Worker, Workers, queue_counts, rabbitmqctl, run_new_task, script_env, wait_counts


def test_worker_prints_the_tutorials_lines(queue_name, workers):
    run_new_task("--queue", queue_name, "First", "message.")
    w = Worker("--queue", queue_name, "--seconds-per-dot", "0.01")
    workers.append(w)
    w.wait_for(" [x] Done")
    assert w.lines == [
        " [*] Waiting for messages. To exit press CTRL+C",
        " [x] Received b'First message.'",
        " [x] Done",
    ]
    assert w.errors == []


def test_worker_sleeps_one_unit_per_dot(queue_name, workers):
    w = workers.start("--queue", queue_name, "--seconds-per-dot", "0.5")
    run_new_task("--queue", queue_name, "four....")
    run_new_task("--queue", queue_name, "none")
    w.wait_for(" [x] Done", count=2)
    received, done = w.times[1], w.times[2]
    assert 1.9 <= done - received < 10  # four dots of 0.5 s; wide upper bound for a loaded machine
    assert w.times[4] - w.times[3] < 1.5  # no dots, no wait
    assert w.done() == ["four....", "none"]


def test_sleep_option_gives_every_task_the_same_time(queue_name, workers):
    w = workers.start("--queue", queue_name, "--sleep", "1")
    run_new_task("--queue", queue_name, "no dots")
    w.wait_for(" [x] Done")
    assert 0.9 <= w.times[2] - w.times[1] < 8


def test_message_acknowledgment_task_is_unacked_while_working_and_gone_after_done(queue_name, workers):
    w = workers.start("--queue", queue_name, "--seconds-per-dot", "1")
    run_new_task("--queue", queue_name, "slow......")
    w.wait_for("Received")
    assert queue_counts(queue_name) == (0, 1)  # delivered, not yet acknowledged
    consumers = [line.split("\t") for line in rabbitmqctl(
        "list_consumers", "-q", "--no-table-headers", "queue_name", "ack_required", "prefetch_count").splitlines()]
    [mine] = [c for c in consumers if c[0] == queue_name]
    ack_required, prefetch = (mine[1], mine[2]) if len(mine) == 3 else (mine[3], mine[4])
    assert (ack_required, prefetch) == ("true", "1")  # manual acks, prefetch 1
    w.wait_for(" [x] Done", timeout=30)
    assert wait_counts(queue_name, (0, 0)) == (0, 0)  # acked once done
    assert w.proc.poll() is None


def shell_loop(queue_name: str, count: int = 10) -> None:
    """The seed's producer: `for i in $(seq 10); do python new_task.py $i; done`."""
    subprocess.run(["bash", "-c", f'for i in $(seq {count}); do "$PY" new_task.py --queue "$Q" $i; done'],
                   env={**script_env(), "PY": sys.executable, "Q": queue_name},
                   cwd=ROOT, check=True, capture_output=True, timeout=120)


def two_workers(queue_name: str, workers: Workers, *extra: str) -> tuple[Worker, Worker]:
    return (workers.start("--queue", queue_name, "--sleep", "0.2", *extra),
            workers.start("--queue", queue_name, "--sleep", "0.5", *extra))


TEN = [str(i) for i in range(1, 11)]


def test_fair_dispatch_the_fast_worker_does_more(queue_name, workers):
    # The walkthrough's experiment at a tenth of its time: workers of 0.2 s and 0.5 s, ten tasks. With
    # prefetch 1 a busy worker gets no new task, so the fast one does about 7. The ten are sent at once
    # (--stdin), so that the split depends on the workers' speed, not on how fast a loaded machine starts
    # ten new_task.py (the shell loop itself is the round-robin test's, and the demo's).
    fast, slow = two_workers(queue_name, workers)
    assert run_new_task("--queue", queue_name, "--stdin", stdin="\n".join(TEN) + "\n").returncode == 0
    done = workers.until_done(TEN)
    assert sorted(done, key=int) == TEN  # each task exactly once
    assert 6 <= len(fast.done()) <= 8, (fast.done(), slow.done())
    assert wait_counts(queue_name, (0, 0)) == (0, 0)


def test_round_robin_dispatching_without_prefetch_splits_evenly(queue_name, workers):
    # With no prefetch limit the broker deals tasks out in turn, busy or not: 5 and 5.
    fast, slow = two_workers(queue_name, workers, "--prefetch", "0")
    shell_loop(queue_name)
    assert sorted(workers.until_done(TEN), key=int) == TEN
    odd, even = ["1", "3", "5", "7", "9"], ["2", "4", "6", "8", "10"]
    assert sorted([fast.done(), slow.done()]) == sorted([odd, even])  # strictly in turn


def test_many_tasks_each_done_exactly_once_across_workers(queue_name, workers):
    lines = [f"t{i}" for i in range(300)]
    a = workers.start("--queue", queue_name, "--seconds-per-dot", "0")
    b = workers.start("--queue", queue_name, "--seconds-per-dot", "0")
    assert run_new_task("--queue", queue_name, "--stdin", stdin="\n".join(lines) + "\n").returncode == 0
    assert sorted(workers.until_done(lines)) == sorted(lines)
    for w in (a, b):
        assert w.done() and w.done() == sorted(w.done(), key=lambda t: int(t[1:]))  # both work, in queue order


def thread_cpus(pid: int) -> set[str]:
    """Cpus_allowed_list of each thread of a process."""
    found = set()
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                found.add(line.split(":", 1)[1].strip())
    return found


def test_worker_leaves_thread_placement_to_the_kernel(queue_name, workers):
    # After a run of very short tasks every thread of the worker may still use every CPU it started with.
    [everywhere] = thread_cpus(os.getpid())
    w = workers.start("--queue", queue_name, "--seconds-per-dot", "0")
    short = [f"s{i}" for i in range(400)]
    run_new_task("--queue", queue_name, "--stdin", stdin="\n".join(short) + "\n")
    assert sorted(workers.until_done(short)) == sorted(short)
    assert thread_cpus(w.proc.pid) == {everywhere}
    assert len(list(Path(f"/proc/{w.proc.pid}/task").iterdir())) == 2  # the main thread and the keeper
