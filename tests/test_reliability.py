"""The tutorial's promises under faults: a killed worker, a restarted or crashed broker, long tasks,
signals. Broker faults happen on a private node, never on the shared broker."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

from conftest import (
    ROOT,
    URL,
    Child,
    PrivateBroker,
    Worker,
    Workers,
    delete_queue,
    drain,
    run_new_task,
    script_env,
    wait_counts,
)


def test_message_acknowledgment_a_killed_workers_task_is_redelivered_to_another(queue_name, workers):
    first = workers.start("--queue", queue_name, "--seconds-per-dot", "1")
    run_new_task("--queue", queue_name, "interrupted.....")
    first.wait_for("Received")
    first.proc.kill()  # SIGKILL mid-task: no ack was sent
    first.wait()
    second = workers.start("--queue", queue_name, "--seconds-per-dot", "0.01")
    second.wait_for(" [x] Done")
    assert " [x] Received b'interrupted.....' (redelivered)" in second.lines
    assert second.done() == ["interrupted....."]
    assert wait_counts(queue_name, (0, 0)) == (0, 0)


def test_long_task_outlasts_heartbeats_and_is_acked_once(queue_name, workers):
    # Two-second heartbeats and an eight-second task: the connection's thread keeps answering
    # heartbeats while the task thread works, so the task is done once and acked.
    url = URL + ("&" if "?" in URL else "?") + "heartbeat=2"
    w = workers.start("--queue", queue_name, "--seconds-per-dot", "1", url=url)
    run_new_task("--queue", queue_name, "eight........")
    w.wait_for(" [x] Done", timeout=40)
    time.sleep(3)  # more than a heartbeat interval after the task
    assert w.done() == ["eight........"]
    assert w.count("Received") == 1
    assert w.errors == []
    assert wait_counts(queue_name, (0, 0)) == (0, 0)
    assert w.proc.poll() is None
    run_new_task("--queue", queue_name, "still connected")
    w.wait_for(" [x] Done", count=2)


def test_ctrl_c_stops_at_once_and_the_running_task_goes_back(queue_name, workers):
    w = workers.start("--queue", queue_name, "--seconds-per-dot", "1")
    run_new_task("--queue", queue_name, "long..........")
    w.wait_for("Received")
    started = time.monotonic()
    w.signal(signal.SIGINT)
    assert w.wait(10) == 130
    assert time.monotonic() - started < 5  # at once, not after the ten-second task
    assert wait_counts(queue_name, (1, 0)) == (1, 0)  # back in the queue
    assert "Traceback" not in "\n".join(w.errors)
    assert w.count("Done") == 0
    assert [(body, redelivered) for body, _, redelivered in drain(queue_name)] == [(b"long..........", True)]


def test_sigterm_finishes_the_running_task_acks_it_and_exits_0(queue_name, workers):
    w = workers.start("--queue", queue_name, "--seconds-per-dot", "0.5")
    run_new_task("--queue", queue_name, "first....")
    run_new_task("--queue", queue_name, "second")
    w.wait_for("Received")
    w.signal(signal.SIGTERM)
    assert w.wait(20) == 0
    assert w.done() == ["first...."]  # finished the running task, took no other
    assert w.errors == []
    assert [body for body, _, _ in drain(queue_name)] == [b"second"]


def test_a_second_signal_stops_at_once(queue_name, workers):
    w = workers.start("--queue", queue_name, "--seconds-per-dot", "1")
    run_new_task("--queue", queue_name, "long..........")
    w.wait_for("Received")
    w.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert w.proc.poll() is None  # still finishing the task
    w.signal(signal.SIGTERM)
    assert w.wait(5) != 0
    assert "Traceback" not in "\n".join(w.errors)
    assert [(body, redelivered) for body, _, redelivered in drain(queue_name)] == [(b"long..........", True)]


def test_sigterm_while_idle_exits_0(queue_name, workers):
    w = workers.start("--queue", queue_name)
    w.signal(signal.SIGTERM)
    assert w.wait(10) == 0
    assert w.errors == []


def test_worker_declares_the_queue_again_if_it_is_deleted(queue_name, workers):
    w = workers.start("--queue", queue_name, "--seconds-per-dot", "0")
    delete_queue(queue_name)
    w.wait_for("declaring it again", errors=True)
    w.wait_for("Waiting for messages", count=2)
    run_new_task("--queue", queue_name, "after the delete")
    w.wait_for(" [x] Done")
    assert w.done() == ["after the delete"]
    assert w.errors == [f"warning: the broker cancelled this worker's consumer: queue {queue_name!r} was deleted; "
                        "declaring it again"]


def fill(queue: str, count: int, url: str, prefix: str = "task") -> list[str]:
    """Publish tasks with new_task.py --stdin: with confirms, so that a broker crash keeps them."""
    bodies = [f"{prefix}{i}" for i in range(count)]
    result = run_new_task("--queue", queue, "--stdin", stdin="\n".join(bodies) + "\n", url=url)
    assert result.returncode == 0, result.stderr
    return bodies


def assert_all_done_and_still_running(workers: Workers, w: Worker, bodies: list[str], node: PrivateBroker,
                                      queue: str) -> None:
    assert set(workers.until_done(bodies, timeout=90)) == set(bodies), (w.errors, w.lines[-5:], w.proc.poll())
    assert wait_counts(queue, (0, 0), node=node) == (0, 0)
    assert w.proc.poll() is None


def test_worker_rides_out_a_graceful_broker_restart(private_broker, private_queue, workers):
    bodies = fill(private_queue, 20, private_broker.url)
    w = workers.start("--queue", private_queue, "--sleep", "0.25", url=private_broker.url)
    w.wait_for(" [x] Done", count=5)
    private_broker.restart()
    w.wait_for("reconnecting", errors=True)
    assert_all_done_and_still_running(workers, w, bodies, private_broker, private_queue)
    lost, back = w.errors
    assert lost.startswith(f"warning: lost the connection to the broker at localhost:{private_broker.port} (")
    assert lost.endswith("; reconnecting")
    assert back == f"warning: connected again, to the broker at localhost:{private_broker.port}"


def declare_persisted(node: PrivateBroker, queue: str) -> None:
    assert run_new_task("--queue", queue, "--stdin", stdin="", url=node.url).returncode == 0  # declares it
    node.persist()


def test_worker_rides_out_a_broker_crash(private_broker, private_queue, workers):
    bodies = fill(private_queue, 20, private_broker.url, prefix="crash")
    private_broker.persist()
    w = workers.start("--queue", private_queue, "--sleep", "0.25", url=private_broker.url)
    w.wait_for(" [x] Done", count=5)
    private_broker.kill()
    w.wait_for("reconnecting", errors=True)
    time.sleep(1)  # the worker retries against a dead port meanwhile
    private_broker.start()
    assert_all_done_and_still_running(workers, w, bodies, private_broker, private_queue)
    assert "Traceback" not in "\n".join(w.errors)


def test_message_durability_tasks_survive_a_broker_restart(private_broker, private_queue):
    assert run_new_task("--queue", private_queue, "kept", url=private_broker.url).returncode == 0
    private_broker.restart()
    [(body, props, _)] = drain(private_queue, private_broker.url)
    assert body == b"kept" and props.delivery_mode == 2


def test_every_message_printed_as_sent_survives_a_broker_crash(private_broker, private_queue):
    # The seed's shell loop, with the broker SIGKILLed while it runs: whatever was printed as Sent
    # was confirmed, so it is in the queue after the restart; the rest failed with an error line.
    declare_persisted(private_broker, private_queue)
    env = {**script_env(private_broker.url), "PY": sys.executable, "Q": private_queue}
    loop = Child(["bash", "-c", 'for i in $(seq 40); do "$PY" new_task.py --queue "$Q" $i; done'], env)
    loop.wait_for(" [x] Sent", count=6, timeout=60)
    private_broker.kill()
    loop.wait(120)
    private_broker.start()
    sent = [line.removeprefix(" [x] Sent '").removesuffix("'") for line in loop.lines]
    err = "\n".join(loop.errors)
    assert 5 < len(sent) < 40
    stored = [body.decode() for body, _, _ in drain(private_queue, private_broker.url)]
    assert set(sent) <= set(stored)
    assert all(line.startswith(("error: ", "warning: ")) for line in err.splitlines())
    assert "Traceback" not in err


def test_stdin_batch_reports_what_was_confirmed_when_the_broker_crashes(private_broker, private_queue):
    total = 300_000
    # No other node to go to: it tries the dead one again for --retry-for seconds, then says where to resume.
    declare_persisted(private_broker, private_queue)
    proc = subprocess.Popen([sys.executable, "new_task.py", "--queue", private_queue, "--stdin", "--retry-for", "2"],
                            cwd=ROOT,
                            env=script_env(private_broker.url), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []

    def feed() -> None:
        try:
            for i in range(total):
                proc.stdin.write(f"m{i}\n")
            proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    threading.Thread(target=feed, daemon=True).start()
    for line in proc.stdout:
        seen.append(line)
        if len(seen) == 20_000:
            private_broker.kill()
            break
    seen += proc.stdout.readlines()  # the same buffered reader: nothing read ahead is lost
    err = proc.stderr.read()
    proc.wait(60)
    private_broker.start()
    sent = [line.strip().removeprefix("[x] Sent '").removesuffix("'") for line in seen]
    assert proc.returncode == 1
    assert 20_000 <= len(sent) < total
    assert sent == [f"m{i}" for i in range(len(sent))]  # in order, a prefix of the input
    warning, line = err.splitlines()
    assert warning.startswith(f"warning: lost the connection to the broker at localhost:{private_broker.port} (")
    assert warning.endswith("; publishing again, for up to 2 s")
    assert line.startswith("error: lost the connection") and "; gave up after 2 s of trying; " in line
    assert f"{len(sent)} messages confirmed" in line
    assert f"from message {len(sent) + 1} on" in line
    stored = {body.decode() for body, _, _ in drain(private_queue, private_broker.url)}
    assert set(sent) <= stored



def test_a_worker_whose_output_is_gone_stops_and_its_task_goes_back(queue_name):
    # `python worker.py | head -3`: once nobody reads its output, a task can no longer say Done.
    # The worker must not ack it, nor drop it: it stops, and the task waits for another worker.
    proc = subprocess.Popen([sys.executable, "worker.py", "--queue", queue_name], cwd=ROOT, env=script_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith(" [*] Waiting")
    proc.stdout.close()
    run_new_task("--queue", queue_name, "unseen")
    assert proc.wait(30) == 1
    assert proc.stderr.read() == ("error: the task b'unseen' failed (BrokenPipeError: [Errno 32] Broken pipe); "
                                  "it goes back to the queue, and this worker stops\n")
    assert [(body, redelivered) for body, _, redelivered in drain(queue_name)] == [(b"unseen", True)]


def test_new_task_stops_quietly_when_its_output_is_gone(queue_name):
    result = subprocess.run(["bash", "-c", f'seq 5000 | "{sys.executable}" new_task.py --queue "$Q" --stdin | head -2; '
                             'echo "exit ${PIPESTATUS[1]}" >&2'],
                            cwd=ROOT, env={**script_env(), "Q": queue_name}, capture_output=True, text=True,
                            timeout=60)
    assert result.stdout == " [x] Sent '1'\n [x] Sent '2'\n"
    assert result.stderr == "exit 1\n"


def test_stdin_batch_rides_out_a_broker_restart_while_it_waits_for_input(private_broker, private_queue):
    # A batch fed by hand: the broker restarts between two lines. The publisher reconnects, and does
    # not give up later for want of confirms: nothing was waiting for one.
    proc = subprocess.Popen([sys.executable, "new_task.py", "--queue", private_queue, "--stdin", "--retry-for", "2"],
                            cwd=ROOT, env=script_env(private_broker.url), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write("one\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == " [x] Sent 'one'\n"
    private_broker.restart()
    time.sleep(4)  # longer than --retry-for
    assert proc.poll() is None
    proc.stdin.write("two\n")
    proc.stdin.close()
    assert proc.stdout.read() == " [x] Sent 'two'\n"
    assert proc.wait(30) == 0
    lost, back = proc.stderr.read().splitlines()
    assert lost.startswith(f"warning: lost the connection to the broker at localhost:{private_broker.port} (")
    assert back == f"warning: connected again, to the broker at localhost:{private_broker.port}"
    assert [body for body, _, _ in drain(private_queue, private_broker.url)] == [b"one", b"two"]
