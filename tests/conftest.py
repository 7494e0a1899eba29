"""Helpers for tests that run the tutorial's scripts against real RabbitMQ brokers.

- ``queue_name``: a queue of the test's own on the shared broker (AMQP_URL; else the local one on
  localhost:5672 where it answers and this user (root) may run rabbitmqctl for it; else a node the session
  starts, a process or a container, and removes at its end), deleted afterwards.
- ``run_new_task`` / ``Worker``: the scripts as a learner runs them, as child processes.
- ``private_broker``: a RabbitMQ node of the tests' own, for the tests that stop or kill a broker.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pika
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from demo import queues  # noqa: E402
from demo.children import Child  # noqa: E402
from demo.cluster import Cluster, Node, NodesUnavailable, answers, free_port, node_kind  # noqa: E402, F401
from workqueue.report import Failure  # noqa: E402


def session_broker() -> Node | None:
    """A node of the session's own, when there is no AMQP_URL and no local broker this user can control."""
    if os.environ.get("AMQP_URL") or (answers(5672) and os.geteuid() == 0 and shutil.which("rabbitmqctl")):
        return None
    try:
        return Node("wqsession")
    except NodesUnavailable as exc:
        raise SystemExit(f"error: no broker at AMQP_URL or localhost:5672, and {exc}") from None


SESSION_BROKER = session_broker()
URL = SESSION_BROKER.url if SESSION_BROKER else os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")


def close_session_broker() -> None:
    if SESSION_BROKER:
        SESSION_BROKER.close()


atexit.register(close_session_broker)  # also when the session ends early


def _interrupted(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt  # pytest stops, and tears down every fixture: no node is left behind


def pytest_sessionstart(session) -> None:
    # SIGTERM, and a Ctrl+C a shell ignored (`&`): as a Ctrl+C, so that the nodes and containers are removed.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if SESSION_BROKER:
        SESSION_BROKER.start(wait=False)
        SESSION_BROKER.wait_ready(timeout=180)


def script_env(url: str | None = URL) -> dict[str, str]:
    """The scripts' environment: AMQP_URL the test broker's (or ``url``; None: no AMQP_URL at all)."""
    env = dict(os.environ)
    env.pop("AMQP_URL", None)
    if url:
        env["AMQP_URL"] = url
    return env


def run_new_task(*args: str, url: str = URL, stdin: str | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "new_task.py"), *args], input=stdin, text=True,
                          capture_output=True, env=script_env(url), timeout=timeout, cwd=ROOT)


class Worker(Child):
    """worker.py in a child process; its output lines are collected as they come."""

    def __init__(self, *args: str, url: str = URL) -> None:
        super().__init__([sys.executable, str(ROOT / "worker.py"), *args], script_env(url))

    def done(self) -> list[str]:
        """The bodies of the tasks this worker reported Done, in order."""
        return [task.body for task in self.tasks() if task.done is not None]


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
    return queues.connect(url)


def broker_version(url: str = URL) -> tuple[int, int, int]:
    """The RabbitMQ version of the broker at ``url`` (3.10.8 here, 4.3.6 on Debian sid), as (major, minor,
    patch), from the server properties its connection announces. The tests that state what each version does
    branch on it; none skips."""
    connection = connect(url)
    try:
        version = connection._impl.server_properties["version"]
    finally:
        connection.close()
    text = version.decode() if isinstance(version, bytes) else str(version)
    major, minor, patch = (int(part) for part in re.findall(r"\d+", text)[:3])
    return major, minor, patch


def delete_queue(name: str, url: str = URL) -> None:
    """Delete the queue, if its broker answers."""
    with suppress(Failure):
        queues.delete(name, url)


@pytest.fixture
def queue_name(request) -> Iterator[str]:
    name = f"test.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}"
    yield name
    delete_queue(name)


def ready_count(name: str, url: str = URL) -> int:
    return queues.depth(name, url)


def drain(name: str, url: str = URL, wait: float = 30) -> list[tuple[bytes, pika.spec.BasicProperties, bool]]:
    """Take every ready message from the queue. Right after a restart a durable queue may answer 404 while
    the node still recovers it: asked again for up to ``wait`` seconds (a queue really lost still fails)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return queues.drain(name, url)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def rabbitmqctl(*args: str, node: Node | None = None) -> str:
    """rabbitmqctl for a node of the tests' own, or for the shared broker."""
    node = node or SESSION_BROKER
    if node:
        return node.ctl(*args)
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, check=True, timeout=120).stdout


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
                 cookie: str | None = None, advanced: str = "") -> None:
        # A small max_message_size, so that a test can send a message too large to take.
        super().__init__(name, "max_message_size = 65536\n" + config, plugins, cookie, advanced=advanced)

    def restart(self) -> None:
        """A graceful restart: every connection is closed, durable state is kept."""
        self.ctl("stop_app")
        self.ctl("start_app")
        self.wait_ready()


def require_rabbitmq() -> None:
    """For the tests that start nodes of their own: a failure, never a skip, where no node can be started
    (neither rabbitmq-server run as root nor a Docker engine; see demo/cluster.py's node_kind)."""
    try:
        node_kind()
    except NodesUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def private_broker() -> Iterator[PrivateBroker]:
    require_rabbitmq()
    node = PrivateBroker()
    node.start()
    yield node
    node.close()


@pytest.fixture(scope="session")
def cluster_nodes() -> Iterator[Cluster]:
    require_rabbitmq()
    nodes = Cluster(groups=100_000 + 3 * os.getpid())  # group ids of its own, for Node.partitioned()
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
    close_session_broker()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") and reporter and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = 1
