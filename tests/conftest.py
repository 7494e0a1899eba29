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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pika
import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "tests" / "unit"
sys.path.insert(0, str(ROOT))
from harness import containers, erl, faults, queues  # noqa: E402
from harness.brokers import Cluster, Node, NodesUnavailable, answers, free_port, node_kind  # noqa: E402, F401
from harness.children import Child  # noqa: E402
from workqueue.report import Failure  # noqa: E402


def _own_broker_needed() -> bool:
    """Whether the session needs a broker of its own: no AMQP_URL, and no local broker this user can control."""
    if os.environ.get("AMQP_URL"):
        return False
    return not (answers(5672) and os.geteuid() == 0 and shutil.which("rabbitmqctl"))


OWN_PORT = free_port() if _own_broker_needed() else None  # the session's own broker's port, if it needs one
URL = (f"amqp://guest:guest@localhost:{OWN_PORT}/%2F" if OWN_PORT
       else os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F"))
SESSION_BROKER: Node | None = None  # made by pytest_collection_finish, only when a collected test needs a broker
BROKER_TESTS = False  # whether a collected test talks to a broker (the unit tests start nothing, run nothing)


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


def _needs_broker(item: pytest.Item) -> bool:
    return UNIT not in Path(str(item.path)).parents


def pytest_collection_finish(session) -> None:
    """Start what the collected tests need, once and side by side: the session's own broker (only where
    some test talks to a broker: the unit tests start nothing), the private node and the cluster (their
    fixtures then wait for them to be ready; a pytest-xdist worker, which does not know yet which tests
    it will run, leaves those to the fixtures)."""
    global SESSION_BROKER, BROKER_TESTS
    _check_groups(session)
    items = [item for item in session.items if _needs_broker(item)]
    if not items:
        return
    BROKER_TESTS = True
    fixtures = set() if os.environ.get("PYTEST_XDIST_WORKER") else {
        name for item in items for name in getattr(item, "fixturenames", ())}
    if OWN_PORT and not SESSION_BROKER:
        try:
            SESSION_BROKER = Node("wqsession", port=OWN_PORT)
        except NodesUnavailable as exc:
            raise pytest.UsageError(f"error: no broker at AMQP_URL or localhost:5672, and {exc}") from None
        SESSION_BROKER.start(wait=False)
    if fixtures & {"private_broker", "private_queue"}:
        _early["private_broker"] = _start_private_broker()
    if fixtures & {"cluster", "cluster_nodes", "cluster_queue"}:
        _early["cluster_nodes"] = _start_cluster()
    if SESSION_BROKER:
        SESSION_BROKER.wait_ready(timeout=180)


def _check_groups(session) -> None:
    """In a pytest-xdist worker with --dist loadgroup: each test of a group has the group in its id, as xdist
    marks it (pytest 9.2 took that away: the groups' tests went to every worker, each starting its own copy
    of their nodes)."""
    if os.environ.get("PYTEST_XDIST_WORKER") and session.config.getvalue("loadgroup"):
        grouped = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group")]
        if any("@" not in nodeid for nodeid in grouped):
            raise pytest.UsageError(f"error: pytest {pytest.__version__} with this pytest-xdist ignores the tests' "
                                    "xdist groups (pytest-xdist#1386): install requirements-dev.txt (pytest<9.2)")


T = TypeVar("T")


def wait_until(found: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Until ``found()`` gives something true, asked every ``interval`` s: what it gave; AssertionError naming
    ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = found()
        if result:
            return result
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(interval)


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
        self.queue = args[args.index("--queue") + 1] if "--queue" in args else "task_queue"
        self.url = url

    def done(self) -> list[str]:
        """The bodies of the tasks this worker reported Done, in order."""
        return [task.body for task in self.tasks() if task.done is not None]


class Workers(list):
    """The workers a test started; killed after it."""

    def start(self, *args: str, url: str = URL) -> Worker:
        """worker.py with these arguments, once its consumer is registered on the broker (it says it waits for
        messages a moment before)."""
        w = Worker(*args, url=url)
        self.append(w)
        w.wait_for("Waiting for messages")
        deadline = time.monotonic() + 30
        while queues.consumers(w.queue, url) < self.on(w.queue, url):
            assert w.proc.poll() is None and time.monotonic() < deadline, ("no consumer", w.lines, w.errors)
            time.sleep(0.05)
        return w

    def on(self, queue: str, url: str) -> int:
        """How many of these workers consume from ``queue`` at ``url`` (and still run)."""
        return sum(1 for w in self if w.proc.poll() is None and w.queue == queue and w.url == url)

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


def delete_queue(name: str, url: str = URL, wait: float = 30) -> None:
    """Delete the queue, if its broker answers: asked again for up to ``wait`` seconds while a node that
    has just healed from a fault resets connections (its queues go with the private node anyway)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            queues.delete(name, url)
            return
        except Failure:
            return  # nothing answers there
        except (pika.exceptions.AMQPError, OSError):
            if time.monotonic() > deadline:
                return
            time.sleep(1)


@pytest.fixture
def queue_name(request) -> Iterator[str]:
    name = f"test.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}"
    yield name
    delete_queue(name)


def ready_count(name: str, url: str = URL) -> int:
    return queues.depth(name, url)


def drain(name: str, url: str = URL) -> list[tuple[bytes, pika.spec.BasicProperties, bool]]:
    """Take every ready message from the queue (see harness.queues.drain)."""
    return queues.drain(name, url)


def rabbitmqctl(*args: str, node: Node | None = None) -> str:
    """rabbitmqctl for a node of the tests' own, or for the shared broker."""
    node = node or SESSION_BROKER
    if node:
        return node.ctl(*args)
    out = erl.machine(args)
    if out is not None:
        return out
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


def wait_counts(name: str, expected: tuple[int, int], node: Node | None = None, timeout: float = 30) -> tuple[int, int]:
    """(ready, unacknowledged) once they are ``expected`` (an ack may still be on its way when a worker has
    printed Done, and a quorum queue's returns take effect a moment after they were sent), or as they are
    after ``timeout`` seconds: the caller asserts. Polled through AMQP (a passive declare gives the ready
    count) until that is as expected, since AMQP also answers while a node that has just healed is not yet
    back in its cluster; then both counts from the node itself (harness.erl: erl_call, or rabbitmqctl for a
    container), as AMQP does not show the unacknowledged (the management API's counts are a sample up to its
    statistics interval old, 5 s by default, and the shared broker has no management plugin)."""
    url = node.url if node else URL
    deadline = time.monotonic() + timeout
    while True:
        while ready(name, url) != expected[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        counts = queue_counts(name, node)
        if counts == expected or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def ready(name: str, url: str) -> int | None:
    """The queue's ready count; None while its node does not answer (it may reset connections as it heals)."""
    try:
        return queues.depth(name, url)
    except (pika.exceptions.AMQPError, OSError, Failure):
        return None


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
    (neither rabbitmq-server run as root nor a Docker engine; see harness.brokers.node_kind)."""
    try:
        node_kind()
    except NodesUnavailable as exc:
        pytest.fail(str(exc))


_early: dict[str, object] = {}  # the nodes pytest_collection_finish started, for the fixtures below


def _start_private_broker() -> PrivateBroker:
    require_rabbitmq()
    node = PrivateBroker()
    node.start(wait=False)
    return node


def _start_cluster() -> Cluster:
    require_rabbitmq()
    nodes = Cluster(groups=100_000 + 3 * os.getpid())  # group ids of its own, for Node.partitioned()
    nodes.start(wait=False)
    return nodes


@pytest.fixture(scope="session")
def private_broker() -> Iterator[PrivateBroker]:
    node = _early.pop("private_broker", None) or _start_private_broker()
    assert isinstance(node, PrivateBroker)
    try:
        node.wait_ready(timeout=180)
        yield node
    finally:
        node.close()


@pytest.fixture(scope="session")
def cluster_nodes() -> Iterator[Cluster]:
    nodes = _early.pop("cluster_nodes", None) or _start_cluster()
    assert isinstance(nodes, Cluster)
    try:
        nodes.wait_whole(timeout=180)
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


TOOLS = {  # what a test may need beyond Python and a broker: how to tell it is there, and what to install
    "docker": (lambda: containers.docker_answers(),
               "a Docker engine that answers (Debian: apt-get install docker.io, and dockerd running; "
               "as a user, the docker group)"),
    "compose": (lambda: subprocess.run(["docker", "compose", "version"], capture_output=True,
                                       timeout=60).returncode == 0 if shutil.which("docker") else False,
                "`docker compose` (Compose v2: Debian 13's docker-compose package, or Docker's "
                "docker-compose-plugin; Debian 12's docker-compose 1.29 is not it)"),
    "iptables": (lambda: bool(shutil.which("iptables") or Path("/usr/sbin/iptables").exists())
                 or node_kind_or_none() == "container",
                 "iptables (Debian: apt-get install iptables), run as root"),
}


def node_kind_or_none() -> str | None:
    try:
        return node_kind()
    except NodesUnavailable:
        return None


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "needs(tool): the test needs this tool (see TOOLS in tests/conftest.py); "
                            "where it is missing the run says so in one line and skips the test, and in CI fails")


GROUPS = {  # tests that share a node run one after another, in one pytest-xdist worker (--dist loadgroup)
    "cluster": {"cluster", "cluster_nodes", "cluster_queue"},
    "private": {"private_broker", "private_queue"},
}
MODULE_GROUPS = ("test_pushback", "test_tls", "test_compose")  # modules whose nodes are a module fixture


# The longest modules first (pytest-xdist hands out tests, or groups of them, in this order): the last to
# start are then short ones, and the workers end near each other. From `--durations`, longest first.
SLOW_FIRST = ("test_chaos", "test_compose", "test_cluster", "test_failover", "test_reliability", "test_failing",
              "test_pushback", "test_lessons", "test_demo", "test_tls")


def module_of(item: pytest.Item) -> str:
    return item.module.__name__ if getattr(item, "module", None) else ""


def group_of(item: pytest.Item) -> str | None:
    """The xdist group of a test: the nodes it shares with others, if any, per module (two modules that
    use the cluster each have one, side by side: more nodes, less waiting)."""
    names = set(getattr(item, "fixturenames", ()))
    module = module_of(item)
    for group, fixtures in GROUPS.items():
        if names & fixtures:
            return f"{group}-{module}"
    return module if module in MODULE_GROUPS else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items) -> None:
    """Each test's xdist group; the tests whose tools are missing: one line per tool, the tests skipped,
    except in CI (CI set), where the run fails."""
    items.sort(key=lambda item: SLOW_FIRST.index(module_of(item)) if module_of(item) in SLOW_FIRST else len(SLOW_FIRST))
    for item in items:
        group = group_of(item)
        if group and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))
    missing: dict[str, str] = {}
    for item in items:
        for mark in item.iter_markers("needs"):
            tool = mark.args[0]
            if tool not in missing:
                present, install = TOOLS[tool]
                missing[tool] = "" if present() else f"missing: {install}"
            if missing[tool]:
                item.add_marker(pytest.mark.skip(reason=f"needs {tool}, missing here (see the last lines)"))
    lines = sorted({line for line in missing.values() if line})
    if lines and os.environ.get("CI"):
        raise pytest.UsageError("error: " + "; ".join(lines) + " (CI runs every test: install it)")
    MISSING.update(lines)
    if hasattr(config, "workeroutput"):  # a pytest-xdist worker: the controller says it, once
        config.workeroutput["missing"] = sorted(MISSING)


MISSING: set[str] = set()  # one line per missing tool, said once at the end of the run


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """(pytest-xdist's controller) the missing tools a worker found."""
    MISSING.update(getattr(node, "workeroutput", {}).get("missing", ()))


def pytest_terminal_summary(terminalreporter) -> None:
    for line in sorted(MISSING):
        terminalreporter.write_line(f"{line}: the tests that need it were skipped")


def pytest_sessionfinish(session, exitstatus) -> None:
    """In CI no test may skip: a skip there fails the run."""
    for node in _early.values():  # started for tests that did not run (deselected, or the run stopped)
        node.close()  # type: ignore[attr-defined]
    _early.clear()
    close_session_broker()
    if BROKER_TESTS:  # a fault interrupted as it began (the test's own block removes its rule otherwise)
        faults.remove_rules()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") and reporter and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = 1
