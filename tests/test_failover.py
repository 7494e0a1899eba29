"""A node that stops answering: the scripts go on through another node in seconds, not minutes.

A SIGKILLed node resets every connection, and the kernel says so at once (tests/test_cluster.py). A frozen
host (``Node.frozen()``: SIGSTOP, as a paused VM) and a firewall that drops packets (``Node.cut_off()``:
iptables DROP on its AMQP port) reset nothing: the connection stays open and silent, and only its heartbeats
can tell. Tests on the session's three-node cluster with a quorum queue and default settings; each node is
thawed or restored when its block ends, and freezes are kept well under the Erlang net tick (60 s), past
which a frozen member would be partitioned from the cluster.

The node frozen is not the quorum queue's leader: a frozen leader stalls its queue for every client, on
every node, until the cluster sees it down, one net tick later (measured: 68 s with RabbitMQ 3.10's
defaults); no client can do better, and the README says what to configure."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from conftest import (
    ROOT,
    URL,
    Cluster,
    Node,
    Worker,
    Workers,
    broker_version,
    run_new_task,
    script_env,
    wait_counts,
    wait_until,
)
from harness.faults import dropping_port, silent_port
from test_cluster import QUORUM, assert_all_done, fill, stored

pytestmark = pytest.mark.timeout(300)  # a cluster's faults: recoveries take tens of seconds

FAILOVER = 10.0  # seconds from the fault to the next Done through another node, at most (issue: within 10 s)


Fault = Callable[[Node], contextlib.AbstractContextManager[None]]
FAULTS: dict[str, Fault] = {"frozen": Node.frozen, "cut_off": Node.cut_off}


def next_done_after_failover(w: Worker, fault_began: float, timeout: float = 30) -> float:
    """Seconds from the fault to the first Done after the worker said it connected again."""
    w.wait_for("connected again", errors=True, timeout=timeout)
    done = w.count(" [x] Done")
    w.wait_for(" [x] Done", count=done + 1, timeout=timeout)
    return time.monotonic() - fault_began


@pytest.mark.parametrize("fault", ["frozen", pytest.param("cut_off", marks=pytest.mark.needs("iptables"))])
def test_failover_worker_goes_on_through_another_node_within_seconds_when_its_node_falls_silent(
        fault, cluster: Cluster, cluster_queue, workers: Workers):
    bodies = fill(cluster_queue, 150, ";".join(cluster.urls))
    first, second, _ = nodes = not_leading_first(cluster, cluster_queue)
    w = workers.start("--queue", cluster_queue, *QUORUM, "--sleep", "0.05", url=";".join(n.url for n in nodes))
    w.wait_for(" [x] Done", count=10)
    with FAULTS[fault](first):
        began = time.monotonic()
        took = next_done_after_failover(w, began)
        print(f"{fault}: next Done through another node after {took:.1f} s")
        assert took < FAILOVER
    assert_all_done(workers, bodies, cluster, cluster_queue)
    lost, back = w.errors[:2]
    assert lost.startswith(f"warning: lost the connection to the broker at localhost:{first.port} (no answer from "
                           "it for 7.5 s)"), w.errors
    assert back == (f"warning: connected again, to the broker at localhost:{second.port} "
                    f"(instead of localhost:{first.port})")
    assert not [line for line in w.errors if not line.startswith("warning: ")]


def not_leading_first(cluster: Cluster, queue: str) -> list[Node]:
    """The cluster's nodes, one that does not lead the queue first, the leader second."""
    leader = cluster.leader(queue)
    first = next(node for node in cluster.nodes if node is not leader)
    return [first, leader, *(node for node in cluster.nodes if node not in (first, leader))]


class Batch:
    """new_task.py --stdin fed ``total`` lines at a steady pace; its Sent lines with their times."""

    def __init__(self, queue: str, urls: str, total: int, per_second: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "new_task.py", "--queue", queue, *QUORUM, "--stdin"], cwd=ROOT,
                                     env=script_env(urls), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.total, self.pace = total, 1 / per_second
        self.sent: list[tuple[float, str]] = []
        threading.Thread(target=self._feed, daemon=True).start()
        threading.Thread(target=self._read, daemon=True).start()

    def _feed(self) -> None:
        assert self.proc.stdin
        with contextlib.suppress(BrokenPipeError, ValueError):
            for i in range(self.total):
                self.proc.stdin.write(f"m{i}\n")
                self.proc.stdin.flush()
                time.sleep(self.pace)
            self.proc.stdin.close()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.sent.append((time.monotonic(), line.strip().removeprefix("[x] Sent '").removesuffix("'")))

    def wait_for_sent(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.sent) < count:
            assert time.monotonic() < deadline and self.proc.poll() is None, self.proc.stderr
            time.sleep(0.05)

    def longest_gap(self) -> float:
        times = [t for t, _ in self.sent]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def test_failover_stdin_batch_whose_node_freezes_sends_every_line_with_no_long_gap(cluster: Cluster, cluster_queue):
    assert run_new_task("--queue", cluster_queue, *QUORUM, "--stdin", stdin="", url=cluster.urls[0]).returncode == 0
    nodes = not_leading_first(cluster, cluster_queue)
    batch = Batch(cluster_queue, ";".join(n.url for n in nodes), total=400, per_second=100)
    try:
        batch.wait_for_sent(100)
        with nodes[0].frozen():
            batch.wait_for_sent(200, timeout=FAILOVER + 10)  # through another node
        assert batch.proc.wait(60) == 0
    finally:
        if batch.proc.poll() is None:
            batch.proc.kill()
    err = batch.proc.stderr.read() if batch.proc.stderr else ""
    sent = [text for _, text in batch.sent]
    assert sent == [f"m{i}" for i in range(400)], err  # every line, once, in order
    print(f"longest gap between Sent lines: {batch.longest_gap():.1f} s")
    assert batch.longest_gap() < FAILOVER
    assert set(stored(cluster_queue, cluster.live().url)) == set(sent)
    assert "Traceback" not in err and "error:" not in err
    assert f"lost the connection to the broker at localhost:{nodes[0].port} (no answer from it" in err


@contextlib.contextmanager
def frozen_port(cluster: Cluster) -> Iterator[int]:
    node = cluster.nodes[2]
    with node.frozen():
        yield node.port


def dead_first(kind: str, cluster: Cluster) -> contextlib.AbstractContextManager[int]:
    return {"frozen": lambda: frozen_port(cluster), "dropping": dropping_port, "silent": silent_port}[kind]()


@pytest.mark.parametrize("kind", ["frozen", pytest.param("dropping", marks=pytest.mark.needs("iptables")), "silent"])
def test_failover_new_task_whose_first_url_does_not_answer_sends_through_the_next_in_seconds(kind, cluster_nodes,
                                                                                             queue_name):
    # The shared broker is the second URL: what is timed is getting past the first.
    with dead_first(kind, cluster_nodes) as port:
        began = time.monotonic()
        result = run_new_task("--queue", queue_name, "past a dead node", url=f"amqp://guest:guest@localhost:{port}/%2F;{URL}")
        took = time.monotonic() - began
    assert (result.returncode, result.stdout, result.stderr) == (0, " [x] Sent 'past a dead node'\n", "")
    print(f"{kind}: Sent after {took:.2f} s")
    assert took < 5  # 1.7 s here when idle (the first URL given up after 1.5 s); 3.1 s once in a full run


def test_a_url_that_never_answers_is_one_line_in_our_words(queue_name):
    with silent_port() as port:
        result = run_new_task("--queue", queue_name, "x", url=f"amqp://guest:guest@localhost:{port}/%2F"
                              "?connection_timeout=1000")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (f"error: no answer from the broker at localhost:{port} within 1 s: check the host and "
                             "the port in --url or AMQP_URL, and that no firewall drops the port; a broker that is "
                             "frozen or overloaded answers so too (connection_timeout=MS in the URL waits longer)\n")


def test_failover_worker_in_a_long_task_notices_the_silence_meanwhile_and_goes_on_as_the_task_ends(
        cluster: Cluster, cluster_queue, workers: Workers):
    # A 10-second task, its node frozen as it begins: the keeper, which looks after the connection during the
    # task, sees the silence then; so the worker moves on as soon as the task returns, not 5 s later.
    assert run_new_task("--queue", cluster_queue, *QUORUM, "slow..........", url=cluster.urls[0]).returncode == 0
    nodes = not_leading_first(cluster, cluster_queue)
    w = workers.start("--queue", cluster_queue, *QUORUM, "--seconds-per-dot", "1", url=";".join(n.url for n in nodes))
    w.wait_for("Received")
    with nodes[0].frozen():
        fill(cluster_queue, 5, nodes[1].url, prefix="quick")
        w.wait_for(" [x] Done", timeout=30)
        slow_done = time.monotonic()
        took = next_done_after_failover(w, slow_done)
        print(f"next Done {took:.1f} s after the long task's")
        assert took < 3
    w.wait_for("Received b'slow..........' (redelivered)", timeout=60)  # handed back once the thawed node saw the loss
    w.wait_for(" [x] Done", count=7, timeout=30)
    done = w.done()
    assert sorted(done) == sorted(["slow..........", "slow..........", *(f"quick{i}" for i in range(5))])
    assert w.errors[0] == (f"warning: lost the connection to the broker at localhost:{nodes[0].port} (no answer from "
                           "it for 7.5 s); reconnecting")


# Partitions: a node cut off from its two peers while the scripts still reach it


def running_as_seen_by(node: Node) -> set[str]:
    return set(re.findall(r"[\w.-]+@[\w.-]+", node.ctl("eval", "rabbit_nodes:all_running().")))


# What a partition does depends on the broker's version (``broker_version``), and the test says so. Up to 4.2
# the cluster's partition handling decides: ``ignore`` keeps both sides running, and the cluster stays split once
# the link is back until the minority's node restarts; ``pause_minority`` pauses the minority's node, whose
# clients then go to the majority. RabbitMQ 4.3 has no partition handling (Khepri and quorum queues heal by
# Raft; the ``cluster_partition_handling`` key is accepted and ignored): nothing pauses, the minority's node
# keeps its clients, and the cluster heals by itself once the link is back.

NO_PARTITION_HANDLING = (4, 3)  # the first version without it


@contextlib.contextmanager
def partition_handling(cluster: Cluster, mode: str, net_ticktime: int = 10) -> Iterator[None]:
    """For the block: the cluster's partition handling ``mode`` (up to 4.2; from 4.3 there is none to set), and a
    net tick of ``net_ticktime`` s, so that a partition is seen in seconds rather than in a minute (RabbitMQ's
    default net tick is 60 s)."""
    nodes = "[" + ", ".join(f"'{node.nodename}'" for node in cluster.nodes) + "]"

    def on_all(mode: str, ticktime: int) -> None:
        """One rabbitmqctl, which sets it on every node; one per node where some node did not answer."""
        def on(where: str) -> str:
            setting = (f"rpc:multicall({where}, application, set_env, [rabbit, cluster_partition_handling, {mode}]), "
                       if handled else "")
            return f"{setting}rpc:multicall({where}, net_kernel, set_net_ticktime, [{ticktime}, 1])."

        if not "".join(cluster.nodes[0].ctl("eval", on(nodes)).split()).endswith(",[]}"):  # {Results, BadNodes}
            for node in cluster.nodes:
                node.ctl("eval", on(f"['{node.nodename}']"))
        # Until the change is over on every node: meanwhile net_kernel answers {ongoing_change_to, T}, and
        # RabbitMQ up to 4.2 fails to open any channel (its channel operation timeout adds 10 s to that:
        # badarith, the client's connection reset), a flake of the next test's set-up once.
        for node in cluster.nodes:
            wait_until(lambda node=node: node.ctl("eval", "net_kernel:get_net_ticktime().").strip() == str(ticktime),
                       60, f"{node.nodename}'s net tick to be {ticktime} s")

    handled = broker_version(cluster.urls[0]) < NO_PARTITION_HANDLING
    on_all(mode, net_ticktime)
    try:
        yield
    finally:
        on_all("ignore", 60)


@contextlib.contextmanager
def healed(cluster: Cluster, minority: Node, mode: str) -> Iterator[None]:
    """After the block, whatever happened in it: with ``ignore`` (up to 4.2) the cluster stays split once the
    link is back, until the minority's node restarts (RabbitMQ's way to heal it by hand). From 4.3 the cluster
    heals by itself."""
    try:
        yield
    finally:
        if mode == "ignore" and broker_version(cluster.urls[0]) < NO_PARTITION_HANDLING:
            minority.ctl("stop_app")
            minority.ctl("start_app")


@pytest.mark.needs("iptables")
@pytest.mark.parametrize("mode", ["ignore", "pause_minority"])
def test_partition_nothing_sent_is_lost_and_the_work_goes_on_through_the_majority(
        mode, cluster: Cluster, cluster_queue, workers: Workers):
    version = broker_version(cluster.urls[0])
    assert run_new_task("--queue", cluster_queue, *QUORUM, "before", url=cluster.urls[0]).returncode == 0
    minority, leader, other = not_leading_first(cluster, cluster_queue)
    url = ";".join(n.url for n in (minority, leader, other))  # every script tries the minority's node first
    cut = workers.start("--queue", cluster_queue, *QUORUM, "--sleep", "0.1", url=url)
    kept = workers.start("--queue", cluster_queue, *QUORUM, "--sleep", "0.1", url=";".join([leader.url, other.url]))
    assert "before" in workers.until_done(["before"], timeout=30)  # by either: both consume
    sent: list[str] = []
    known: list[str] = []  # what new_task.py said when sending once the partition was known
    with healed(cluster, minority, mode), partition_handling(cluster, mode), minority.partitioned():
        began = time.monotonic()
        for i in range(4):  # the walkthrough's loop, through the node cut off first
            result = run_new_task("--queue", cluster_queue, *QUORUM, f"p{i}", url=url)
            assert result.returncode == 0, result.stderr
            sent.append(f"p{i}")
        while minority.nodename in running_as_seen_by(leader):  # the majority sees the minority gone
            assert time.monotonic() - began < 90
            time.sleep(0.5)
        seen = time.monotonic() - began
        for i in range(4, 8):  # once the partition is known
            result = run_new_task("--queue", cluster_queue, *QUORUM, f"p{i}", url=url)
            assert result.returncode == 0, result.stderr
            sent.append(f"p{i}")
            known.append(result.stderr)
        workers.until_done(sent, timeout=60)
        moved = cut.first("connected again", errors=True) or float("inf")  # (pause_minority) to the majority
        minority_did = [t.body for t in cut.tasks() if t.body in sent and t.done is not None and t.done < moved]
        said_meanwhile = list(cut.errors)
        print(f"{mode} on {version}: partition seen after {seen:.1f} s; done on the minority side: {minority_did}; "
              f"the worker there said: {said_meanwhile}; new_task.py said: {known}")
    healing = time.monotonic()
    cluster.wait_whole()
    print(f"whole again {time.monotonic() - healing:.1f} s after the link came back")
    assert set(sent) <= set(workers.until_done(sent, timeout=60))
    assert not minority_did  # the node cut off handed out none of the tasks sent meanwhile
    if version >= NO_PARTITION_HANDLING:
        # 4.3: nothing pauses, whatever the mode. The minority's worker keeps its connection and is idle,
        # saying nothing (its node cannot reach the queue's leader); a publisher whose first node is the
        # minority's gets no confirm there, and sends again through the majority.
        assert said_meanwhile == [], said_meanwhile
        for err in known:
            assert err.startswith(f"warning: the broker at localhost:{minority.port} stored nothing for 5 s; "
                                  "publishing again"), err
            assert "warning: connected again, to the broker at localhost:" in err, err
    elif mode == "pause_minority":  # it paused itself: its clients went to the majority
        assert cut.count(" [x] Done") > 0 and any("connected again" in line for line in cut.errors)
    assert all(w.proc.poll() is None for w in (cut, kept))
    assert wait_counts(cluster_queue, (0, 0), node=leader, timeout=150) == (0, 0)  # 4.3: see assert_all_done
