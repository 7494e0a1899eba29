"""Helpers for tests that run the tutorial's scripts against real RabbitMQ brokers.

- ``queue_name``: a queue of the test's own on the shared broker (AMQP_URL, default the local one),
  deleted afterwards.
- ``run_new_task`` / ``Worker``: the scripts as a learner runs them, as child processes.
- ``private_broker``: a RabbitMQ node of the tests' own, for the tests that stop or kill a broker.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from demo.cluster import RABBIT_BIN, Cluster, Node, free_port  # noqa: E402, F401 - free_port for the tests

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")


def script_env(url: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AMQP_URL", None)
    if url:
        env["AMQP_URL"] = url
    return env


def run_new_task(*args: str, url: str = URL, stdin: str | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "new_task.py"), *args], input=stdin, text=True,
                          capture_output=True, env=script_env(url), timeout=timeout, cwd=ROOT)


class Worker:
    """worker.py in a child process; its output lines are collected as they come."""

    def __init__(self, *args: str, url: str = URL) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "worker.py"), *args], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=script_env(url), cwd=ROOT)
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.times: list[float] = []  # when each line of self.lines came
        self._changed = threading.Condition()
        for stream, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()

    def _read(self, stream, into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line.rstrip("\n"))
                if into is self.lines:
                    self.times.append(time.monotonic())
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str, count: int = 1, timeout: float = 30, errors: bool = False) -> None:
        """Until ``count`` lines of stdout (stderr with errors=True) contain ``text``."""
        into = self.errors if errors else self.lines
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(text in line for line in into) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"waited {timeout}s for {count} x {text!r}; stdout: {self.lines[-20:]}; "
                                         f"stderr: {self.errors[-10:]}")
                self._changed.wait(min(left, 0.5))

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.lines)

    def done(self) -> list[str]:
        """The bodies of the tasks this worker reported Done, in order."""
        with self._changed:
            lines = list(self.lines)
        bodies, current = [], None
        for line in lines:
            found = re.match(r" \[x\] Received b'(.*)'", line)
            if found:
                current = found[1]
            elif line == " [x] Done" and current is not None:
                bodies.append(current)
                current = None
        return bodies

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Workers(list):
    """The workers a test started; killed after it."""

    def start(self, *args: str, url: str = URL) -> Worker:
        """worker.py with these arguments, once it waits for messages."""
        w = Worker(*args, url=url)
        self.append(w)
        w.wait_for("Waiting for messages")
        return w

    def until_done(self, bodies: list[str], timeout: float = 60) -> list[str]:
        """Wait until these tasks were all done, by any of the workers; what was done, in all."""
        deadline = time.monotonic() + timeout
        while True:
            done = [body for w in self for body in w.done()]
            if set(bodies) <= set(done) or time.monotonic() > deadline:
                return done
            time.sleep(0.1)


@pytest.fixture
def workers() -> Iterator[Workers]:
    started = Workers()
    yield started
    for w in started:
        w.stop()


def connect(url: str = URL) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


def delete_queue(name: str, url: str = URL) -> None:
    try:
        conn = connect(url)
    except pika.exceptions.AMQPError:
        return
    try:
        conn.channel().queue_delete(name)
    finally:
        conn.close()


@pytest.fixture
def queue_name(request) -> Iterator[str]:
    name = f"test.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}"
    yield name
    delete_queue(name)


def ready_count(name: str, url: str = URL) -> int:
    """Messages ready in the queue (a passive declare: not unacked ones)."""
    conn = connect(url)
    try:
        return conn.channel().queue_declare(name, passive=True).method.message_count
    finally:
        conn.close()


def drain(name: str, url: str = URL) -> list[tuple[bytes, pika.spec.BasicProperties, bool]]:
    """Take every ready message from the queue: (body, properties, redelivered)."""
    conn = connect(url)
    got = []
    try:
        ch = conn.channel()
        while True:
            method, props, body = ch.basic_get(name, auto_ack=True)
            if method is None:
                return got
            got.append((body, props, method.redelivered))
    finally:
        conn.close()


def rabbitmqctl(*args: str, node: Node | None = None) -> str:
    if node:
        cmd, env = [str(RABBIT_BIN / "rabbitmqctl"), "-n", node.nodename, *args], node.env
    else:
        cmd, env = ["rabbitmqctl", *args], None
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, timeout=120).stdout


def queue_counts(name: str, node: Node | None = None) -> tuple[int, int]:
    """(ready, unacknowledged) as the broker reports them."""
    out = rabbitmqctl("list_queues", "-q", "--no-table-headers", "name", "messages_ready",
                      "messages_unacknowledged", node=node)
    for line in out.splitlines():
        parts = line.split("\t")
        if parts[0] == name:
            return int(parts[1]), int(parts[2])
    raise AssertionError(f"no queue {name!r} in {out!r}")


class PrivateBroker(Node):
    """A RabbitMQ node of the tests' own, to restart or kill without touching the shared broker."""

    def __init__(self, name: str = "wqtest", config: str = "", plugins: tuple[str, ...] = (),
                 cookie: str | None = None) -> None:
        # A small max_message_size, so that a test can send a message too large to take.
        super().__init__(name, "max_message_size = 65536\n" + config, plugins, cookie)

    def restart(self) -> None:
        """A graceful restart: every connection is closed, durable state is kept."""
        rabbitmqctl("stop_app", node=self)
        rabbitmqctl("start_app", node=self)
        self.wait_ready()


@pytest.fixture(scope="session")
def private_broker() -> Iterator[PrivateBroker]:
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        pytest.fail("RabbitMQ is not installed: /usr/lib/rabbitmq/bin/rabbitmq-server is missing (see .ci/run)")
    node = PrivateBroker()
    node.start()
    yield node
    node.close()


@pytest.fixture(scope="session")
def cluster_nodes() -> Iterator[Cluster]:
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        pytest.fail("RabbitMQ is not installed: /usr/lib/rabbitmq/bin/rabbitmq-server is missing (see .ci/run)")
    nodes = Cluster()
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


@pytest.fixture
def cluster(cluster_nodes: Cluster) -> Cluster:
    """The session's cluster, whole again (a test before may have killed a member)."""
    cluster_nodes.wait_whole()
    return cluster_nodes


@pytest.fixture
def cluster_queue(cluster_nodes: Cluster, request) -> Iterator[str]:
    """A quorum queue's name; the queue is deleted afterwards, through whichever node is up."""
    name = f"test.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}"
    yield name
    cluster_nodes.wait_whole()
    delete_queue(name, cluster_nodes.live().url)


@pytest.fixture
def private_queue(private_broker: PrivateBroker, request) -> Iterator[str]:
    name = f"test.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}"
    yield name
    private_broker.wait_ready()
    delete_queue(name, private_broker.url)


def pytest_sessionfinish(session, exitstatus) -> None:
    """In CI no test may skip: a skip there fails the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") and reporter and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = 1
