"""new_task.py: the tutorial's producer, and what "Sent" promises."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT, URL, delete_queue, drain, rabbitmqctl, run_new_task, script_env


def test_sent_line_prints_the_message_repr(queue_name):
    result = run_new_task("--queue", queue_name, "First", "message.")
    assert result.returncode == 0, result.stderr
    assert result.stdout == " [x] Sent 'First message.'\n"
    assert result.stderr == ""
    assert [body for body, _, _ in drain(queue_name)] == [b"First message."]


def test_default_message_is_hello_world(queue_name):
    result = run_new_task("--queue", queue_name)
    assert result.stdout == " [x] Sent 'Hello World!'\n"
    assert [body for body, _, _ in drain(queue_name)] == [b"Hello World!"]


def test_message_durability_queue_is_durable_and_message_persistent(queue_name):
    assert run_new_task("--queue", queue_name, "durable task").returncode == 0
    listing = rabbitmqctl("list_queues", "-q", "--no-table-headers", "name", "durable")
    assert f"{queue_name}\ttrue" in listing.splitlines()
    [(body, props, redelivered)] = drain(queue_name)
    assert body == b"durable task"
    assert props.delivery_mode == 2  # persistent
    assert not redelivered


def test_quorum_queue_type_declares_a_quorum_queue(queue_name):
    assert run_new_task("--queue", queue_name, "--queue-type", "quorum", "q").returncode == 0
    listing = rabbitmqctl("list_queues", "-q", "--no-table-headers", "name", "type")
    assert f"{queue_name}\tquorum" in listing.splitlines()


def test_url_comes_from_amqp_url_environment(queue_name):
    result = run_new_task("--queue", queue_name, "via env", url=URL)
    assert result.returncode == 0
    bad = run_new_task("--queue", queue_name, "x", url="amqp://guest:guest@127.0.0.1:1/%2F")
    assert bad.returncode == 1 and "127.0.0.1:1" in bad.stderr


def test_stdin_sends_each_line_once_in_order(queue_name):
    lines = [f"task {i}{'.' * (i % 3)}" for i in range(3000)]
    result = run_new_task("--queue", queue_name, "--stdin", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f" [x] Sent {line!r}" for line in lines]
    got = drain(queue_name)
    assert [body.decode() for body, _, _ in got] == lines
    assert all(props.delivery_mode == 2 for _, props, _ in got)


def test_stdin_with_no_lines_sends_nothing(queue_name):
    result = run_new_task("--queue", queue_name, "--stdin", stdin="")
    assert result.returncode == 0 and result.stdout == ""


def test_sent_means_confirmed_a_refused_message_is_an_error(queue_name):
    # A policy (not a queue argument, so the script's declare still matches) lets the queue hold one
    # message and refuse more: the broker then nacks the publish, and no "Sent" may be printed.
    policy = queue_name + ".policy"
    rabbitmqctl("set_policy", policy, f"^{re.escape(queue_name)}$",
                '{"max-length": 1, "overflow": "reject-publish"}', "--apply-to", "queues")
    try:
        first = run_new_task("--queue", queue_name, "fits")
        second = run_new_task("--queue", queue_name, "does not fit", "--retry-for", "2")
        batch = run_new_task("--queue", queue_name, "--stdin", "--retry-for", "0", stdin="a\nb\n")
    finally:
        rabbitmqctl("clear_policy", policy)
    assert first.returncode == 0 and first.stdout == " [x] Sent 'fits'\n"
    # A nack is published again (a cluster may nack while it elects a leader) until --retry-for runs out.
    refused = "the broker refused to store message 1 'does not fit' (a nack: is the queue full"
    assert second.returncode == 1
    assert second.stdout == ""
    warning, error = second.stderr.splitlines()
    assert warning.startswith(f"warning: {refused}") and warning.endswith("; publishing again, for up to 2 s")
    assert error.startswith(f"error: {refused}") and error.endswith("; gave up after 2 s of trying")
    assert batch.returncode == 1 and batch.stdout == ""
    [error] = batch.stderr.splitlines()
    assert error.startswith("error: the broker refused to store message 1 'a' (a nack")
    assert error.endswith("0 messages confirmed, 2 not confirmed (send input from message 1 on again)")
    assert [body for body, _, _ in drain(queue_name)] == [b"fits"]


def test_sent_means_routed_a_message_no_queue_takes_is_an_error(queue_name):
    # Messages are published as mandatory: if the queue is deleted under a batch, the broker returns
    # the next message instead of dropping it silently, and the script stops with an error.
    proc = subprocess.Popen([sys.executable, "new_task.py", "--queue", queue_name, "--stdin"], cwd=ROOT,
                            env=script_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write("one\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == " [x] Sent 'one'\n"
    delete_queue(queue_name)
    proc.stdin.write("two\n")
    proc.stdin.flush()
    err = proc.stderr.readline()
    proc.stdin.close()
    assert proc.wait(30) == 1
    assert proc.stdout.read() == ""
    assert err.startswith(f"error: no queue took the message 'two' (routing key '{queue_name}'; "
                          "was the queue deleted?)")
    assert err.rstrip().endswith("1 message confirmed, 1 not confirmed (send input from message 2 on again)")


def test_sent_means_confirmed_acks_that_come_after_a_nack_are_still_reported(queue_name):
    # The queue takes two messages and refuses the rest: the broker may nack message 3 before it
    # acks 1 and 2 (those it writes to disk first). Those two are still printed as Sent, and the error
    # says to resume from message 3.
    policy = queue_name + ".policy"
    rabbitmqctl("set_policy", policy, f"^{re.escape(queue_name)}$",
                '{"max-length": 2, "overflow": "reject-publish"}', "--apply-to", "queues")
    try:
        batch = run_new_task("--queue", queue_name, "--stdin", "--retry-for", "0", stdin="1\n2\n3\n4\n5\n")
    finally:
        rabbitmqctl("clear_policy", policy)
    assert batch.returncode == 1
    assert batch.stdout == " [x] Sent '1'\n [x] Sent '2'\n"
    [error] = batch.stderr.splitlines()
    assert error.startswith("error: the broker refused to store message 3 '3' (a nack")
    assert error.endswith("2 messages confirmed, 3 not confirmed (send input from message 3 on again)")
    assert [body for body, _, _ in drain(queue_name)] == [b"1", b"2"]
