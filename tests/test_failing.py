"""A task that fails: tried again, then set aside; every worker goes on, nothing is dropped.

The workers here are a user's own (tests/workers/flaky_worker.py: worker.py with other work in its task): a
task whose body holds "fail" raises, one whose body holds "die" ends the worker's process. Each test deletes
its queue and the queues of our own named after it (``.retry``, ``.failed``), even when it fails."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pika
import pytest

from conftest import (
    ROOT,
    URL,
    Child,
    Cluster,
    Worker,
    Workers,
    delete_queue,
    drain,
    rabbitmqctl,
    ready_count,
    run_new_task,
    script_env,
    wait_counts,
    wait_until,
)
from workqueue import attempts

WORKERS = ROOT / "tests" / "workers"
TYPES = pytest.mark.parametrize("queue_type", ["classic", "quorum"])


class Flaky(Worker):
    """tests/workers/flaky_worker.py in a child process, as a user runs a copy of worker.py of their own."""

    def __init__(self, *args: str, url: str = URL) -> None:
        Child.__init__(self, [sys.executable, str(WORKERS / "flaky_worker.py"), *args],
                       {**script_env(url), "PYTHONPATH": str(ROOT)})
        self.queue, self.url = args[args.index("--queue") + 1], url  # as Worker has them

    def received(self, body: str) -> int:
        return self.count(f" [x] Received b'{body}'")


def flaky(workers: Workers, *args: str, url: str = URL) -> Flaky:
    w = Flaky(*args, url=url)
    workers.append(w)
    w.wait_for("Waiting for messages")
    return w


def count(name: str, url: str = URL) -> int:
    """Messages ready in a queue (a passive declare); 0 while there is no such queue."""
    try:
        return ready_count(name, url)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return 0
        raise


def empty(*names: str) -> None:
    """Until each queue holds nothing, ready or unacknowledged (an ack, and a quorum queue's returns, take
    effect a moment after the client sent them)."""
    for name in names:
        assert wait_counts(name, (0, 0)) == (0, 0), f"{name} not empty"


def ours(queue: str) -> tuple[str, str]:
    return attempts.retry_queue(queue), attempts.failed_queue(queue)


@pytest.fixture
def queue(queue_name: str) -> Iterator[str]:
    """The test's queue; it, its .retry and its .failed deleted afterwards."""
    yield queue_name
    for name in ours(queue_name):
        delete_queue(name)


@pytest.fixture
def cluster_q(cluster_nodes: Cluster, cluster_queue: str) -> Iterator[str]:
    """The test's quorum queue on the cluster; its .retry and .failed deleted afterwards too."""
    yield cluster_queue
    cluster_nodes.wait_whole()
    for name in ours(cluster_queue):
        delete_queue(name, cluster_nodes.live().url)


def send(queue: str, bodies: list[str], *extra: str, url: str = URL) -> None:
    result = run_new_task("--queue", queue, *extra, "--stdin", stdin="\n".join(bodies) + "\n", url=url)
    assert result.returncode == 0, result.stderr


def quorum(queue_type: str) -> tuple[str, ...]:
    return ("--queue-type", "quorum") if queue_type == "quorum" else ()


@TYPES
@pytest.mark.timeout(180)
def test_three_workers_go_on_the_failing_task_is_tried_n_times_then_set_aside(queue, workers, queue_type):
    extra = (*quorum(queue_type), "--attempts", "3", "--retry-delay", "0.5")
    three = [flaky(workers, "--queue", queue, *extra) for _ in range(3)]
    good = [f"task{i}" for i in range(60)]
    send(queue, good[:30] + ["fail-me"] + good[30:], *quorum(queue_type))
    retry, failed = ours(queue)
    wait_until(lambda: count(failed) == 1, 120, f"the task in {failed}")
    done = workers.until_done(good)
    assert sorted(done) == sorted(good)  # every other task done, once
    assert all(w.proc.poll() is None for w in three)  # all three still running
    assert sum(w.received("fail-me") for w in three) == 3  # tried exactly --attempts times
    wait_until(lambda: sum(len(w.errors) for w in three) >= 3, 30, "the third warning")  # written after the ack
    lines = sorted(line for w in three for line in w.errors)
    shown = "warning: the task b'fail-me' failed (ValueError: cannot do 'fail-me'); "
    assert lines == [shown + "attempt 1 of 3, tried again in 0.5 s", shown + "attempt 2 of 3, tried again in 0.5 s",
                     shown + f"set aside in {failed!r} after 3 attempts"]
    empty(queue, retry)  # in .failed and nowhere else
    [(body, properties, _)] = drain(failed)
    assert body == b"fail-me" and properties.delivery_mode == 2
    headers = properties.headers
    assert headers[attempts.ATTEMPTS] == 3
    assert headers[attempts.ERROR] == "ValueError: cannot do 'fail-me'"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", headers[attempts.FAILED_AT])
    assert not [k for k in headers if k.startswith("x-") and k != "x-delivery-count"]  # (the broker's, on delivery)


@pytest.mark.timeout(120)
def test_a_plain_run_creates_no_queue_of_ours_and_attempts_1_no_retry_queue(queue, workers):
    w = flaky(workers, "--queue", queue, "--attempts", "1")
    send(queue, ["fine"])
    w.wait_for(" [x] Done")
    names = rabbitmqctl("list_queues", "-q", "--no-table-headers", "name").split()
    assert queue in names and not set(ours(queue)) & set(names)
    send(queue, ["fail at once"])
    w.wait_for("set aside", errors=True)
    names = rabbitmqctl("list_queues", "-q", "--no-table-headers", "name").split()
    assert attempts.failed_queue(queue) in names and attempts.retry_queue(queue) not in names
    assert w.errors == [f"warning: the task b'fail at once' failed (ValueError: cannot do 'fail at once'); set aside "
                        f"in {attempts.failed_queue(queue)!r} after 1 attempt"]


def supervise(start: Callable[[], Worker], slots: int, finished: Callable[[], bool], timeout: float) -> list[Worker]:
    """Keep ``slots`` workers running, as a supervisor (systemd, Docker's restart policy) would, until
    ``finished()``; every worker started."""
    started = [start() for _ in range(slots)]
    running = list(started)
    deadline = time.monotonic() + timeout
    while not finished():
        assert time.monotonic() < deadline, f"waited {timeout:g} s; {len(started)} workers started"
        for i, w in enumerate(running):
            if w.proc.poll() is not None:
                running[i] = start()
                started.append(running[i])
        time.sleep(0.1)
    return started


@pytest.mark.timeout(240)
def test_a_task_that_ends_its_workers_process_is_set_aside_after_n_deliveries_on_a_quorum_queue(queue, workers):
    good = [f"task{i}" for i in range(20)]
    args = ("--queue", queue, "--queue-type", "quorum", "--attempts", "3")
    retry, failed = ours(queue)
    send(queue, ["die-now", *good], "--queue-type", "quorum")
    started = supervise(lambda: flaky(workers, *args), 2,
                        lambda: count(failed) == 1, 180)
    done = workers.until_done(good)
    assert sorted(done) == sorted(good)
    assert sum(w.received("die-now") for w in started) == 3  # three deliveries ran; the fourth was set aside
    assert sum(w.proc.poll() == 1 for w in started) == 3  # one process ended per delivery
    wait_until(lambda: any(w.errors for w in started), 30, "the warning")  # written after the ack
    [line] = [line for w in started for line in w.errors]
    assert line == (f"warning: the task b'die-now' was delivered 3 times without an ack (its worker's process ended, "
                    f"or lost its connection, during the task); set aside in {failed!r} after 3 attempts, before it "
                    "runs again")
    empty(queue)
    [(body, properties, _)] = drain(failed)
    assert body == b"die-now" and properties.headers[attempts.ATTEMPTS] == 3


def failed_command(*args: str, url: str = URL) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workqueue.failed", *args], cwd=ROOT, env=script_env(url),
                          capture_output=True, text=True, timeout=60)


@TYPES
@pytest.mark.timeout(240)
def test_list_then_requeue_round_trip(queue, workers, queue_type):
    retry, failed = ours(queue)
    w = flaky(workers, "--queue", queue, *quorum(queue_type), "--attempts", "1")
    bodies = ["fail a", "fail b", "fail c"]
    send(queue, bodies, *quorum(queue_type))
    w.wait_for("set aside", count=3, errors=True, timeout=60)  # written once the original is acked
    assert count(failed) == 3
    w.stop()
    # Listed again and again: a quorum queue must never count these returns toward a delivery limit (RabbitMQ 4
    # drops a message after 20), so more than 20 times there.
    for _ in range(21 if queue_type == "quorum" else 2):
        listed = failed_command("--queue", queue, *quorum(queue_type))
        assert (listed.returncode, listed.stderr) == (0, "")
        lines = listed.stdout.splitlines()
        assert len(lines) == 4, lines
        for line, body in zip(lines, bodies, strict=False):
            assert re.fullmatch(re.escape(f"b'{body}' (1 attempt; failed at ") + r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
                                + re.escape(f": ValueError: cannot do '{body}')"), line), line
        assert lines[3].startswith(f"3 failed tasks in {failed!r}; `python -m workqueue.failed --queue {queue}")
        wait_until(lambda: count(failed) == 3, 30, f"the three tasks ready in {failed} again")
    requeued = failed_command("--queue", queue, *quorum(queue_type), "--requeue")
    assert (requeued.returncode, requeued.stderr) == (0, "")
    assert requeued.stdout.splitlines() == [*(f" [x] Sent back b'{b}'" for b in bodies),
                                            f"3 tasks sent back to {queue!r}"]
    wait_until(lambda: (count(failed), count(queue)) == (0, 3), 30, f"three tasks in {queue}, none in {failed}")
    again = [flaky(workers, "--queue", queue, *quorum(queue_type), "--attempts", "2", "--retry-delay", "0.2")]
    again[0].wait_for("set aside", count=3, errors=True, timeout=60)  # attempts counted from 0 again
    assert count(failed) == 3
    assert sum(again[0].received(b) for b in bodies) == 6
    empty(queue, retry)
    assert failed_command("--queue", queue, *quorum(queue_type)).stdout.count("(2 attempts; ") == 3


@pytest.mark.timeout(120)
def test_listing_a_queue_with_no_failures_and_errors_are_one_line(queue):
    listed = failed_command("--queue", queue)
    assert (listed.returncode, listed.stdout, listed.stderr) == (
        0, f"no failed task in {attempts.failed_queue(queue)!r} (there is no such queue: none has failed yet)\n", "")
    bad = failed_command("--queue", queue, url="amqp://guest:secret-word@localhost:1/%2F")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("error: no RabbitMQ broker answers at localhost:1 (connection refused)")
    assert bad.stderr.count("\n") == 1 and "secret-word" not in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.timeout(180)
def test_a_requeue_sigkilled_midway_loses_nothing(queue):
    retry, failed = ours(queue)
    total = 600
    bodies = [f"f{i}" for i in range(total)]
    send(failed, bodies)  # as a worker would have set them aside (durable, classic, persistent, confirmed)
    proc = subprocess.Popen([sys.executable, "-m", "workqueue.failed", "--queue", queue, "--requeue"], cwd=ROOT,
                            env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout
    for n, _ in enumerate(proc.stdout, 1):
        if n == 150:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(30)
    wait_until(lambda: count(queue) + ready_count(failed) >= total, 60, "the unacked task back in .failed")
    back, left = drain(queue), drain(failed)
    assert {body.decode() for body, _, _ in back} | {body.decode() for body, _, _ in left} == set(bodies)
    assert 150 <= len(back) < total
    assert len(back) + len(left) - total <= 1  # at most the one sent back and not yet acked
    assert all(properties.headers is None for _, properties, _ in back)


@TYPES
@pytest.mark.timeout(120)
def test_the_tutorials_own_worker_still_shares_the_queue(queue, workers, queue_type):
    w = flaky(workers, "--queue", queue, *quorum(queue_type), "--attempts", "2", "--retry-delay", "0.2")
    send(queue, ["fail once more"], *quorum(queue_type))
    w.wait_for("set aside", errors=True, timeout=60)  # written once the original is acked
    w.stop()
    arguments = {line.split("\t")[0]: line.split("\t")[1] for line in rabbitmqctl(
        "list_queues", "-q", "--no-table-headers", "name", "arguments").splitlines()}
    # nothing beyond the tutorial's (RabbitMQ 4 lists the type of a classic queue too)
    assert arguments[queue] in ({'[{"x-queue-type","quorum"}]'} if queue_type == "quorum" else
                                {"[]", '[{"x-queue-type","classic"}]'})
    tutorial = Child([sys.executable, str(WORKERS / "tutorial_worker.py")],
                     {**script_env(), "QUEUE": queue, "QUEUE_TYPE": queue_type})
    workers.append(tutorial)  # stopped after the test, like the others
    tutorial.wait_for("Waiting for messages")
    send(queue, ["hello."], *quorum(queue_type))
    tutorial.wait_for(" [x] Done")
    assert tutorial.lines[1:] == [" [x] Received b'hello.'", " [x] Done"]
    assert tutorial.proc.poll() is None


@pytest.mark.timeout(400)
def test_cluster_the_workers_node_killed_while_a_task_waits_for_its_retry_nothing_lost(cluster, cluster_q, workers):
    urls = ";".join(cluster.urls)  # the worker connects to the first node
    retry, failed = ours(cluster_q)
    w = flaky(workers, "--queue", cluster_q, "--queue-type", "quorum", "--attempts", "2", "--retry-delay", "8",
              url=urls)
    good = [f"task{i}" for i in range(10)]
    send(cluster_q, ["fail-me", *good], "--queue-type", "quorum", url=urls)
    w.wait_for("attempt 1 of 2, tried again in 8 s", errors=True, timeout=60)
    cluster.nodes[0].kill()  # the worker's node, and the leader of the queues it declared
    live = cluster.nodes[1].url
    w.wait_for(f"set aside in {failed!r} after 2 attempts", errors=True, timeout=180)
    assert set(workers.until_done(good, timeout=120)) == set(good)
    assert w.proc.poll() is None
    assert w.received("fail-me") >= 2
    for name in (cluster_q, retry):
        assert wait_until(lambda name=name: count(name, live) == 0, 30, f"{name} empty") is True
    assert {body for body, _, _ in drain(failed, live)} == {b"fail-me"}  # there (twice at worst), not lost


@pytest.mark.timeout(60)
def test_worker_py_has_the_options_and_stays_short():
    out = subprocess.run([sys.executable, "worker.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         env=script_env(), timeout=30).stdout
    assert "--attempts N" in out and "--retry-delay S" in out
    assert len((ROOT / "worker.py").read_text().splitlines()) < 45
