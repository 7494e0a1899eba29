"""A cluster of brokers: several URLs, failover, and a quorum queue across three nodes.

The session's three private nodes form one cluster; a test SIGKILLs or restarts members and the next
test finds the cluster whole again. Tasks go to a quorum queue, which keeps its messages while a
majority of its members lives."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pika
import pytest

from conftest import ROOT, URL, Cluster, Workers, free_port, rabbitmqctl, run_new_task, script_env, wait_counts

pytestmark = pytest.mark.timeout(300)  # a cluster's faults: recoveries take tens of seconds

QUORUM = ("--queue-type", "quorum")


def fill(queue: str, count: int, urls: str, prefix: str = "task") -> list[str]:
    """Tasks published with new_task.py --stdin (so with confirms: a node's death keeps them)."""
    bodies = [f"{prefix}{i}" for i in range(count)]
    result = run_new_task("--queue", queue, *QUORUM, "--stdin", stdin="\n".join(bodies) + "\n", url=urls)
    assert result.returncode == 0, result.stderr
    return bodies


def stored(queue: str, url: str) -> list[str]:
    """Every message in the queue, taken off it, in queue order."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    got = []
    try:
        channel = connection.channel()
        for method, _, body in channel.consume(queue, auto_ack=True, inactivity_timeout=3):
            if method is None:
                break
            got.append(body.decode())
        channel.cancel()
    finally:
        connection.close()
    return got


def assert_all_done(workers: Workers, bodies: list[str], cluster: Cluster, queue: str, faults: int = 1) -> None:
    """Every task done; again at most for each fault the task each worker had in flight (prefetch 1)."""
    done = workers.until_done(bodies, timeout=180)
    assert set(bodies) <= set(done)
    # Redelivered ones may still run; and RabbitMQ 4.3 holds a dead node's consumer's unacked task for its
    # consumer_disconnected_timeout (60 s) before it gives it to another.
    assert wait_counts(queue, (0, 0), node=cluster.live(), timeout=150) == (0, 0)
    done = [body for w in workers for body in w.done()]
    print(f"done again: {len(done) - len(set(done))} of {len(bodies)}")
    assert len(done) - len(set(done)) <= len(workers) * faults
    assert all(w.proc.poll() is None for w in workers)


def test_cluster_worker_goes_on_through_another_node_when_its_node_dies(cluster, cluster_queue, workers):
    urls = ";".join(cluster.urls)
    bodies = fill(cluster_queue, 80, urls)
    w = workers.start("--queue", cluster_queue, *QUORUM, "--sleep", "0.05", url=urls)  # on the first node
    w.wait_for(" [x] Done", count=10)
    first, second = cluster.nodes[0], cluster.nodes[1]
    first.kill()
    assert_all_done(workers, bodies, cluster, cluster_queue)
    lost, back = w.errors
    assert lost.startswith(f"warning: lost the connection to the broker at localhost:{first.port} (")
    assert back == (f"warning: connected again, to the broker at localhost:{second.port} "
                    f"(instead of localhost:{first.port})")


def test_cluster_worker_finishes_when_the_queues_leader_dies_on_another_node(cluster, cluster_queue, workers):
    urls = ";".join(cluster.urls)
    bodies = fill(cluster_queue, 80, urls)
    leader = cluster.leader(cluster_queue)
    others = [node for node in cluster.nodes if node is not leader]
    w = workers.start("--queue", cluster_queue, *QUORUM, "--sleep", "0.05",
                      url=";".join(node.url for node in others))
    w.wait_for(" [x] Done", count=10)
    leader.kill()
    assert_all_done(workers, bodies, cluster, cluster_queue)
    assert cluster.leader(cluster_queue) in others
    assert not [line for line in w.errors if not line.startswith("warning: ")]


def test_cluster_shell_loop_every_sent_message_is_stored_when_the_leader_dies(cluster, cluster_queue):
    # The walkthrough's loop, 15 runs given all three URLs; the queue's leader is SIGKILLed after the fifth.
    urls = ";".join(cluster.urls)
    assert run_new_task("--queue", cluster_queue, *QUORUM, "first", url=urls).returncode == 0
    leader = cluster.leader(cluster_queue)
    env = {**script_env(urls), "PY": sys.executable, "Q": cluster_queue}
    loop = subprocess.Popen(["bash", "-c", 'for i in $(seq 15); do "$PY" new_task.py --queue "$Q" '
                             '--queue-type quorum $i || echo "failed $i" >&2; done'],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert loop.stdout is not None
    sent = [loop.stdout.readline() for _ in range(5)]
    leader.kill()
    out, err = loop.communicate(timeout=300)
    sent = [line.strip().removeprefix("[x] Sent '").removesuffix("'") for line in sent + out.splitlines()]
    failed = [line for line in err.splitlines() if line.startswith("failed ")]
    assert len(failed) <= 1, err
    assert len(sent) == 15 - len(failed)
    assert "Traceback" not in err
    assert set(sent) | {"first"} <= set(stored(cluster_queue, cluster.live().url))


def test_cluster_stdin_batch_survives_the_death_of_its_node(cluster, cluster_queue):
    # Tens of thousands of lines over one connection, to the first node; that node is SIGKILLed
    # mid-batch. The batch goes on through another node and publishes again what was not confirmed.
    total = 30_000
    urls = ";".join(cluster.urls)
    proc = subprocess.Popen([sys.executable, "new_task.py", "--queue", cluster_queue, *QUORUM, "--stdin"],
                            cwd=ROOT, env=script_env(urls), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin and proc.stdout and proc.stderr

    def feed() -> None:
        for i in range(total):
            proc.stdin.write(f"m{i}\n")
        proc.stdin.close()

    threading.Thread(target=feed, daemon=True).start()
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if len(seen) == 5_000:
            cluster.nodes[0].kill()
            break
    seen += proc.stdout.readlines()
    err = proc.stderr.read()
    assert proc.wait(60) == 0, err
    sent = [line.strip().removeprefix("[x] Sent '").removesuffix("'") for line in seen]
    assert sent == [f"m{i}" for i in range(total)]  # every line, once, in order
    messages = stored(cluster_queue, cluster.live().url)
    assert set(messages) == set(sent)
    duplicates = len(messages) - total
    print(f"stored twice: {duplicates} of {total}")
    assert 0 <= duplicates <= 5000  # at most the window of unconfirmed messages (publisher.WINDOW)
    assert "Traceback" not in err and "error:" not in err


def test_cluster_rolling_restart_while_two_workers_drain(cluster, cluster_queue, workers):
    urls = cluster.urls
    bodies = fill(cluster_queue, 300, ";".join(urls))
    a = workers.start("--queue", cluster_queue, *QUORUM, "--sleep", "0.1", url=";".join(urls))
    b = workers.start("--queue", cluster_queue, *QUORUM, "--sleep", "0.1", url=";".join(reversed(urls)))
    a.wait_for(" [x] Done", count=5)
    for node in cluster.nodes:  # each stopped and started in turn, gracefully
        rabbitmqctl("stop_app", node=node)
        time.sleep(1)
        rabbitmqctl("start_app", node=node)
        cluster.wait_whole()
    assert_all_done(workers, bodies, cluster, cluster_queue, faults=len(cluster.nodes))
    assert a.done() and b.done()
    for w in (a, b):
        assert not [line for line in w.errors if not line.startswith("warning: ")]


def dead_url() -> str:
    return f"amqp://guest:guest@localhost:{free_port()}/%2F"


def test_several_urls_a_dead_one_first_and_last_for_both_ways_of_giving_them(queue_name, workers):
    dead_first, dead_last = dead_url(), dead_url()
    as_options = ["--url", dead_first, "--url", URL, "--url", dead_last]
    as_environment = ";".join([dead_first, URL, dead_last])
    sent = run_new_task("--queue", queue_name, *as_options, "by options")
    assert (sent.returncode, sent.stdout, sent.stderr) == (0, " [x] Sent 'by options'\n", "")
    sent = run_new_task("--queue", queue_name, "by AMQP_URL", url=as_environment)
    assert (sent.returncode, sent.stdout, sent.stderr) == (0, " [x] Sent 'by AMQP_URL'\n", "")
    w = workers.start("--queue", queue_name, *as_options, "--seconds-per-dot", "0")
    v = workers.start("--queue", queue_name, "--seconds-per-dot", "0", url=as_environment)
    assert sorted(workers.until_done(["by options", "by AMQP_URL"])) == ["by AMQP_URL", "by options"]
    assert w.errors == [] and v.errors == []


def test_several_urls_none_answering_is_one_error_naming_each(queue_name):
    first, second = dead_url(), dead_url()
    result = run_new_task("--queue", queue_name, "x", url=f"{first};{second}")
    assert result.returncode == 1 and result.stdout == ""
    ports = [url.split(":")[3].split("/")[0] for url in (first, second)]
    assert result.stderr == (f"error: no broker answered at any of the 2 URLs given: localhost:{ports[0]} "
                             f"(connection refused); localhost:{ports[1]} (connection refused); start one "
                             "(`sudo rabbitmq-server -detached`, or `docker compose up -d rabbitmq` here), "
                             "or point --url or AMQP_URL at yours\n")
