"""A broker that pushes back: a memory alarm that blocks publishers, and the consumer timeout that takes
back a task held unacknowledged too long. Both on private nodes of this module's own, never on the
shared broker.

- Alarm node: ``rabbitmqctl set_vm_memory_high_watermark 0.000001`` raises a memory alarm, ``... 0.4`` (the
  default) clears it, each at the memory monitor's next check (every 2.5 s by default, every 0.2 s here:
  ``memory_monitor_interval = 200``). Every test clears it again in a ``finally``.
- Timeout node: ``consumer_timeout = 1000`` in rabbitmq.conf, and the channels' tick, which checks it (60 s
  by default), lowered to 250 ms in advanced.config (``channel_tick_interval`` of the rabbit app), so that
  a task of three seconds outlasts it every time and the test takes seconds.

What the consumer timeout does depends on the broker's version (``broker_version``), and the tests say so:
up to 4.2 a channel checks it for every queue type and closes itself (PRECONDITION_FAILED); from 4.3 only a
quorum queue checks it (a timer at the deadline, not the channel's tick), puts the task back and cancels the
consumer (basic.cancel; the channel stays open); a classic queue never times a consumer out.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from test_failing import count, flaky

from conftest import (
    ROOT,
    PrivateBroker,
    Workers,
    broker_version,
    delete_queue,
    drain,
    queue_counts,
    rabbitmqctl,
    require_rabbitmq,
    run_new_task,
    script_env,
    wait_counts,
    wait_until,
)
from harness import queues
from harness.children import Child
from workqueue import attempts

CONSUMER_TIMEOUT_MS = 1000
TICK_MS = 250  # the channels' tick: how often a channel looks at its consumers' timeouts
LONG_TASK = "long" + "." * 6  # with --seconds-per-dot 0.5: three seconds, three times the consumer timeout
SECONDS_PER_DOT = "0.5"


# nodes and queues


@pytest.fixture(scope="module")
def nodes() -> Iterator[dict[str, PrivateBroker]]:
    """The alarm node and the consumer-timeout node, started side by side (about 10 s, not 20)."""
    require_rabbitmq()
    alarm = PrivateBroker(name="wqalarm", config="memory_monitor_interval = 200\n")  # alarms within 0.2 s
    timeout = PrivateBroker(name="wqctimeout", config=f"consumer_timeout = {CONSUMER_TIMEOUT_MS}\n",
                            advanced=f"[{{rabbit, [{{channel_tick_interval, {TICK_MS}}}]}}].\n")
    started = {"alarm": alarm, "timeout": timeout}
    try:
        for node in started.values():
            node.start(wait=False)
        for node in started.values():
            node.wait_ready(timeout=180)
        assert erlang(timeout, "application:get_env(rabbit, channel_tick_interval).") == f"{{ok,{TICK_MS}}}"
        yield started
    finally:
        for node in started.values():
            node.close()


@pytest.fixture
def alarm_node(nodes: dict[str, PrivateBroker]) -> PrivateBroker:
    return nodes["alarm"]


@pytest.fixture
def timeout_node(nodes: dict[str, PrivateBroker]) -> PrivateBroker:
    return nodes["timeout"]


@pytest.fixture
def queue(request) -> Iterator[Callable[[PrivateBroker], str]]:
    """A queue name of the test's own on a private node; the queue is deleted afterwards."""
    made: list[tuple[str, PrivateBroker]] = []

    def make(node: PrivateBroker) -> str:
        name = f"test.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}"
        made.append((name, node))
        return name

    yield make
    for name, node in made:
        delete_queue(name, node.url)


def consumers(queue_name: str, node: PrivateBroker) -> int:
    return queues.consumers(queue_name, node.url)


def erlang(node: PrivateBroker, expression: str) -> str:
    return rabbitmqctl("eval", expression, node=node).strip()


def set_consumer_timeout(node: PrivateBroker, ms: int) -> None:
    """For consumers from now on: up to 4.2 a channel reads consumer_timeout when it opens, from 4.3 a quorum
    queue when the consumer registers (the worker does both again after a timeout)."""
    assert erlang(node, f"application:set_env(rabbit, consumer_timeout, {ms}).") == "ok"


# the memory alarm


MEMORY_ALARM = "lists:keymember({resource_limit, memory, node()}, 1, rabbit_alarm:get_alarms())"


def alarmed(node: PrivateBroker) -> bool:
    return erlang(node, f"{MEMORY_ALARM}.") == "true"


def set_watermark(node: PrivateBroker, fraction: str, alarm: bool) -> None:
    """What ``rabbitmqctl set_vm_memory_high_watermark FRACTION`` does, then wait (up to 30 s) until the
    memory alarm is on (or off): in one call of rabbitmqctl, which takes most of a second itself."""
    wait = (f"Wait = fun Again(0) -> timeout; Again(N) -> case {MEMORY_ALARM} of {str(alarm).lower()} -> ok; "
            "_ -> timer:sleep(50), Again(N - 1) end end, "
            f"vm_memory_monitor:set_vm_memory_high_watermark({fraction}), Wait(600).")
    assert erlang(node, wait) == "ok", f"the memory alarm is still {'off' if alarm else 'on'} after 30 s"


@contextlib.contextmanager
def memory_alarm(node: PrivateBroker) -> Iterator[None]:
    """A memory alarm on ``node`` for the block's duration: raised and seen before it, cleared after it."""
    try:
        set_watermark(node, "0.000001", alarm=True)
        yield
    finally:
        set_watermark(node, "0.4", alarm=False)  # the default


def new_task(*args: str, url: str, stdin: str | bool = False) -> Child:
    """new_task.py in a child process, its output lines collected as they come, with their times."""
    return Child([sys.executable, str(ROOT / "new_task.py"), *args], script_env(url), stdin=stdin)


def first_error_after(task: Child) -> float:
    """Seconds from the start of the child to its first line on stderr."""
    return task.err[0].at - task.started


@pytest.fixture
def producers() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for producer in started:
        producer.stop()


def assert_held_back_line(line: str, node: PrivateBroker) -> None:
    """The one line a blocked publisher prints: who holds it back, why, that it waits, how to stop."""
    assert line.startswith(f"warning: the broker at localhost:{node.port} "), line
    assert "holding this publisher back" in line
    assert "memory or disk" in line
    assert "waiting" in line
    assert "Ctrl+C to stop" in line


def assert_takes_again_line(line: str, node: PrivateBroker) -> None:
    assert line == f"warning: the broker at localhost:{node.port} takes messages again"


def test_broker_that_pushes_back_new_task_says_so_waits_and_sends_once_the_alarm_clears(alarm_node, queue,
                                                                                        producers):
    q = queue(alarm_node)
    with memory_alarm(alarm_node):
        task = new_task("--queue", q, "held back", url=alarm_node.url)
        producers.append(task)
        task.wait_for("holding this publisher back", timeout=20, errors=True)
        assert first_error_after(task) < 8  # within a couple of seconds (1.4 s measured); wide for a busy machine
        time.sleep(1.5)  # it keeps waiting: no error, nothing sent, nothing stored
        assert task.proc.poll() is None
        assert task.lines == []
        assert len(task.errors) == 1
        assert_held_back_line(task.errors[0], alarm_node)
        assert queue_counts(q, node=alarm_node) == (0, 0)
    assert task.wait(30) == 0  # sends as soon as the alarm clears
    assert task.lines == [" [x] Sent 'held back'"]
    held, again = task.errors
    assert_held_back_line(held, alarm_node)
    assert_takes_again_line(again, alarm_node)
    assert [(body, redelivered) for body, _, redelivered in drain(q, alarm_node.url)] == [(b"held back", False)]


def test_broker_that_pushes_back_stdin_batch_waits_past_its_confirm_timeout_and_sends_each_line_once(
        alarm_node, queue, producers):
    # --confirm-timeout 2 --retry-for 1 and an alarm held longer than both: a blocked connection is
    # waiting, not trouble, so nothing is published again (no duplicates) and nothing gives up.
    q = queue(alarm_node)
    lines = ["first.", "second..", "third"]
    with memory_alarm(alarm_node):
        task = new_task("--queue", q, "--stdin", "--confirm-timeout", "2", "--retry-for", "1",
                       url=alarm_node.url, stdin="\n".join(lines) + "\n")
        producers.append(task)
        task.wait_for("holding this publisher back", timeout=20, errors=True)
        assert first_error_after(task) < 8
        time.sleep(3)
        assert task.proc.poll() is None
        assert task.lines == []
        assert len(task.errors) == 1
        assert queue_counts(q, node=alarm_node) == (0, 0)
    assert task.wait(30) == 0
    assert task.lines == [f" [x] Sent {line!r}" for line in lines]
    held, again = task.errors
    assert_held_back_line(held, alarm_node)
    assert_takes_again_line(again, alarm_node)
    assert [body.decode() for body, _, _ in drain(q, alarm_node.url)] == lines  # each once, in order


def test_broker_that_pushes_back_a_worker_consumes_and_acks_through_the_alarm(alarm_node, queue, workers: Workers):
    q = queue(alarm_node)
    w = workers.start("--queue", q, "--seconds-per-dot", "0.1", url=alarm_node.url)  # connected before the alarm
    bodies = [f"task {i}.." for i in range(6)]
    wait_until(lambda: consumers(q, alarm_node) == 1, 10, "the worker's consumer")
    # Paused (SIGSTOP), the worker can take nothing before the alarm, however slow the machine: the tasks
    # are all in the queue (one of them sent to the worker already, unacked) when the alarm comes.
    w.signal(signal.SIGSTOP)
    try:
        result = run_new_task("--queue", q, "--stdin", stdin="\n".join(bodies) + "\n", url=alarm_node.url)
        assert result.returncode == 0, result.stderr
        with memory_alarm(alarm_node):
            assert queue_counts(q, node=alarm_node) == (5, 1)
            w.signal(signal.SIGCONT)
            assert workers.until_done(bodies, timeout=30) == bodies
            assert wait_counts(q, (0, 0), node=alarm_node) == (0, 0)  # every task acked, during the alarm
            assert alarmed(alarm_node)
    finally:
        w.signal(signal.SIGCONT)
    assert w.count("Received") == len(bodies)  # none redelivered
    assert w.errors == []
    assert w.proc.poll() is None


def test_broker_that_pushes_back_blocked_connection_timeout_is_one_error_line(alarm_node, queue):
    q = queue(alarm_node)
    with memory_alarm(alarm_node):
        started = time.monotonic()
        result = run_new_task("--queue", q, "bounded", url=alarm_node.url + "?blocked_connection_timeout=2",
                              timeout=60)
        took = time.monotonic() - started
    assert result.returncode == 1
    assert result.stdout == ""  # nothing was confirmed, so nothing is "Sent"
    assert "Traceback" not in result.stderr
    *warnings, error = result.stderr.splitlines()
    assert all(line.startswith("warning: ") for line in warnings), warnings
    assert len(warnings) <= 1 and all("holding this publisher back" in line for line in warnings)
    assert error.startswith("error: ")
    assert "blocked_connection_timeout" in error
    assert "memory or disk" in error
    assert took < 20  # the bound of two seconds, not the alarm's length
    # Not "Sent" is not "not stored": the broker may store the message it had read once the alarm
    # clears (seen here with --stdin). Never twice, though.
    assert [body for body, _, _ in drain(q, alarm_node.url)] in ([], [b"bounded"])


# the consumer timeout


def consumer_timeout_line(line: str) -> bool:
    return line.startswith("warning: ") and "consumer_timeout" in line


def times_out(queue_type: str, node: PrivateBroker) -> bool:
    """Whether the broker puts back a task held past consumer_timeout on a queue of this type: every type up to
    RabbitMQ 4.2; from 4.3 quorum queues only."""
    return queue_type == "quorum" or broker_version(node.url) < (4, 3)


def assert_timeout_warning(line: str, queue: str, node: PrivateBroker) -> None:
    """The worker's one line: the broker took the task back for its consumer_timeout, and what to raise. Up to
    4.2 the broker closed the channel, saying why; from 4.3 it cancelled the consumer, saying nothing, so the
    worker, its queue still there, names the likely cause as a question (a deleted queue is said so instead)."""
    assert consumer_timeout_line(line), line
    assert "raise consumer_timeout in rabbitmq.conf" in line, line
    assert "deleted" not in line, line
    if broker_version(node.url) >= (4, 3):
        assert line == (f"warning: the broker cancelled this worker's consumer, and queue {queue!r} is still there "
                        "(a task ran past the broker's consumer_timeout? The broker took that task back; for tasks "
                        "that long, raise consumer_timeout in rabbitmq.conf); taking tasks again"), line
    else:
        assert line.startswith("warning: the broker took back a task this worker held unacknowledged for longer than "
                               "its consumer_timeout ("), line
    assert "Traceback" not in line


def timed_out_once(short_received: str) -> list[str]:
    """A worker's lines when LONG_TASK outlasted the consumer timeout once and then "short" was done: the first
    run's ack went nowhere (the broker had taken the task back), the worker took tasks again."""
    return [" [*] Waiting for messages. To exit press CTRL+C", f" [x] Received b'{LONG_TASK}'", " [x] Done",
            " [*] Waiting for messages. To exit press CTRL+C", f" [x] Received b'{LONG_TASK}' (redelivered)",
            " [x] Done", short_received, " [x] Done"]


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_consumer_timeout_the_worker_says_so_in_one_line_takes_tasks_again_and_the_task_is_done(
        queue_type, timeout_node, queue, workers: Workers):
    q = queue(timeout_node)
    kind = ("--queue", q, "--queue-type", queue_type)
    w = workers.start(*kind, "--seconds-per-dot", SECONDS_PER_DOT, url=timeout_node.url)
    wait_until(lambda: consumers(q, timeout_node) == 1, 10, "the worker's consumer")
    if not times_out(queue_type, timeout_node):
        # RabbitMQ 4.3 and later: a classic queue never times a consumer out; the long task runs to its end.
        assert run_new_task(*kind, "--stdin", stdin=f"{LONG_TASK}\nshort\n", url=timeout_node.url).returncode == 0
        w.wait_for(" [x] Done", count=2, timeout=30)
        # The last ack on its way (a quorum queue's counts lag a moment behind).
        assert wait_counts(q, (0, 0), node=timeout_node) == (0, 0)  # every task acked
        assert w.lines == [" [*] Waiting for messages. To exit press CTRL+C", f" [x] Received b'{LONG_TASK}'",
                           " [x] Done", " [x] Received b'short'", " [x] Done"]
        assert w.errors == []
        return
    # What the warning will advise: a longer consumer_timeout. It is read when the worker's channel opens (up
    # to 4.2) or its consumer registers (4.3): its first consumer keeps its one second, the one it makes after
    # the timeout has a minute.
    set_consumer_timeout(timeout_node, 60_000)
    try:
        assert run_new_task(*kind, LONG_TASK, url=timeout_node.url).returncode == 0
        # A second in, the broker puts the task back and closes the channel (up to 4.2) or cancels the consumer
        # (4.3); once the task returns (its ack goes nowhere), the worker says so, takes tasks again, and gets
        # that task again.
        w.wait_for("consumer_timeout", timeout=30, errors=True)
        w.wait_for(f"Received b'{LONG_TASK}' (redelivered)", timeout=30)
        w.wait_for(" [x] Done", count=2, timeout=30)
        assert run_new_task(*kind, "short", url=timeout_node.url).returncode == 0
        w.wait_for(" [x] Done", count=3, timeout=30)
        assert wait_counts(q, (0, 0), node=timeout_node) == (0, 0)
    finally:
        set_consumer_timeout(timeout_node, CONSUMER_TIMEOUT_MS)
    assert w.proc.poll() is None  # the same process all along
    assert w.lines == timed_out_once(" [x] Received b'short'")
    assert len(w.errors) == 1, w.errors
    assert_timeout_warning(w.errors[0], q, timeout_node)


def test_consumer_timeout_with_prefetch_2_the_task_behind_is_not_run_by_the_consumer_the_broker_let_go(
        timeout_node, queue, workers: Workers):
    # Two tasks in the worker at once (--prefetch 2), the second sent once the first runs: the broker takes
    # both back as each outlasts the consumer timeout (4.3 sends a basic.cancel for each, which pika 1.x
    # cannot take twice). The second, already in the worker by then, is not run there (its ack would go
    # nowhere, and it would run twice): the worker takes tasks again, and each task runs once after that.
    q = queue(timeout_node)
    kind = ("--queue", q, "--queue-type", "quorum")
    w = workers.start(*kind, "--prefetch", "2", "--seconds-per-dot", SECONDS_PER_DOT, url=timeout_node.url)
    set_consumer_timeout(timeout_node, 60_000)  # for the consumer after the timeout (see the test above)
    try:
        assert run_new_task(*kind, LONG_TASK, url=timeout_node.url).returncode == 0
        w.wait_for(f" [x] Received b'{LONG_TASK}'")
        assert run_new_task(*kind, "short", url=timeout_node.url).returncode == 0
        w.wait_for("consumer_timeout", timeout=30, errors=True)
        w.wait_for(" [x] Done", count=3, timeout=30)
        assert wait_counts(q, (0, 0), node=timeout_node) == (0, 0)
    finally:
        set_consumer_timeout(timeout_node, CONSUMER_TIMEOUT_MS)
    assert w.lines == timed_out_once(" [x] Received b'short' (redelivered)")
    assert len(w.errors) == 1, w.errors
    assert_timeout_warning(w.errors[0], q, timeout_node)


def test_consumer_timeout_sigterm_after_it_exits_0_and_loses_no_task(timeout_node, queue, workers: Workers):
    # A task that always outlasts consumer_timeout comes back again and again; SIGTERM ends that, and
    # the task (and the one behind it) stay in the queue. A quorum queue: the type that has a consumer
    # timeout on every version.
    q = queue(timeout_node)
    kind = ("--queue", q, "--queue-type", "quorum")
    w = workers.start(*kind, "--seconds-per-dot", SECONDS_PER_DOT, url=timeout_node.url)
    result = run_new_task(*kind, "--stdin", stdin=f"{LONG_TASK}\nbehind\n", url=timeout_node.url)
    assert result.returncode == 0, result.stderr
    w.wait_for(f"Received b'{LONG_TASK}' (redelivered)", timeout=30)
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0
    assert "Traceback" not in "\n".join(w.errors)
    assert w.errors, "no warning about the consumer timeout"
    for line in w.errors:
        assert_timeout_warning(line, q, timeout_node)
    assert w.count("Received b'behind'") == 0
    assert w.count(" [x] Done") >= 2  # the task ran twice; neither ack counted
    left = drain(q, timeout_node.url)
    assert [body for body, _, _ in left] == [LONG_TASK.encode(), b"behind"]  # both, once, in order
    assert left[0][2]  # redelivered
    if broker_version(timeout_node.url) >= (4, 3):
        # A task taken back for the consumer timeout counts no failed delivery on 4.3, and the worker sent no ack
        # once its consumer was cancelled: such an ack brings the consumer back, the broker hands it the task
        # again on a channel about to close, and that close counts toward the delivery limit past which the
        # broker drops the task. (With that ack, 4.3.6 also let the next run outlast its timeout now and then,
        # 4 runs in about 240 here, and that run's ack counted.)
        assert (left[0][1].headers or {}).get("x-delivery-count", 0) == 0, left[0][1].headers


def test_consumer_timeout_a_task_that_fails_after_it_is_taken_back_is_stored_nowhere_and_comes_back(
        timeout_node, queue, workers: Workers):
    # A task that raises once the broker has taken it back (up to 4.2 its channel closed, from 4.3 its consumer
    # cancelled): the original is in the queue again, so the worker stores no copy for a retry (that would make
    # two of it) and acks nothing; it says so in one line, and the broker delivers the task again.
    q = queue(timeout_node)
    kind = ("--queue", q, "--queue-type", "quorum")
    body = "fail" + "." * 6  # three seconds of work, then it raises
    w = flaky(workers, *kind, "--seconds-per-dot", SECONDS_PER_DOT, url=timeout_node.url)
    try:
        wait_until(lambda: consumers(q, timeout_node) == 1, 10, "the worker's consumer")
        assert run_new_task(*kind, body, url=timeout_node.url).returncode == 0
        w.wait_for("after the broker had taken it back", timeout=30, errors=True)
        w.wait_for(f" [x] Received b'{body}'", count=2, timeout=30)  # delivered again
        w.signal(signal.SIGTERM)
        assert w.wait(30) == 0
        assert "Traceback" not in "\n".join(w.errors)
        taken_back = [line for line in w.errors if "after the broker had taken it back" in line]
        expected = (f"warning: the task b'{body}' failed (ValueError: cannot do {body!r}) after the broker had taken "
                    "it back (a consumer_timeout, or a deleted queue); no copy stored")
        assert taken_back == [expected] * len(taken_back)
        for line in w.errors:
            if line not in taken_back:
                assert_timeout_warning(line, q, timeout_node)
        assert [got for got, _, _ in drain(q, timeout_node.url)] == [body.encode()]  # once
        assert count(q + attempts.RETRY, timeout_node.url) == 0
        assert count(q + attempts.FAILED, timeout_node.url) == 0
    finally:
        for name in (q + attempts.RETRY, q + attempts.FAILED):
            delete_queue(name, timeout_node.url)
