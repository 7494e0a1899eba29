"""What a user can get wrong: one line on stderr starting `error:`, a non-zero exit, no traceback,
never the password."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, URL, connect, run_new_task, script_env

SECRET = "s3cret-Pa55"


def run_worker(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "worker.py"), *args], text=True, capture_output=True,
                          env=script_env(url), cwd=ROOT, timeout=60)


def run_script(script: str, queue: str, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    if script == "new_task.py":
        return run_new_task("--queue", queue, *extra, "x", url=url)
    return run_worker("--queue", queue, *extra, url=url)


def assert_one_error_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert SECRET not in result.stderr + result.stdout
    for text in expected:
        assert text in lines[0]
    return lines[0]


SCRIPTS = ["new_task.py", "worker.py"]


AT = URL.split(";")[0].split("@")[-1].split("/")[0]  # the test broker's host:port (the session's own, maybe)

# A broker that cannot be used: the URL, and what the one error line says of it
BROKERS = {
    "unreachable_names_host_and_port_and_how_to_start_one": (
        f"amqp://guest:{SECRET}@127.0.0.1:1/%2F", ("127.0.0.1:1", "connection refused", "rabbitmq-server")),
    "wrong_password_is_a_refused_login_without_echoing_it": (
        f"amqp://guest:{SECRET}@{AT}/%2F", ("refused the login of user 'guest'",)),
    "missing_vhost_says_how_to_create_it": (
        f"amqp://guest:guest@{AT}/no-such-vhost",
        ("no virtual host 'no-such-vhost'", "rabbitmqctl add_vhost no-such-vhost")),
    "unknown_host_is_named": (f"amqp://guest:{SECRET}@no-such-host.invalid/", ("no-such-host.invalid",)),
}


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("case", BROKERS)
def test_broker_that_cannot_be_used(script, case, queue_name):
    url, expected = BROKERS[case]
    assert_one_error_line(run_script(script, queue_name, url), *expected)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("url", [f"http://guest:{SECRET}@localhost/", f"amqp://guest:{SECRET}@localhost:port/",
                                 f"amqp://guest:{SECRET}@localhost/%2F?heartbeat=often"])
def test_malformed_url(script, url, queue_name):
    result = run_script(script, queue_name, url)
    assert_one_error_line(result, "malformed broker URL", "guest:***@")


@pytest.mark.parametrize("script", SCRIPTS)
def test_queue_declared_with_another_type_names_the_ways_out(script, queue_name):
    assert run_new_task("--queue", queue_name, "--queue-type", "quorum", "first").returncode == 0
    result = run_script(script, queue_name, URL)
    line = assert_one_error_line(result, f"queue '{queue_name}' already exists", "x-queue-type")
    assert "--queue-type" in line and "--queue" in line and f"rabbitmqctl delete_queue {queue_name}" in line
    assert "the broker has 'quorum', this asked for 'classic'" in line


def test_message_larger_than_the_broker_accepts(private_broker, private_queue):
    result = run_new_task("--queue", private_queue, "x" * 70_000, url=private_broker.url)
    assert_one_error_line(result, "too large", "max_message_size")


def test_bad_option_is_a_usage_error():
    result = run_worker("--prefetch", "many", url="amqp://localhost/")
    assert result.returncode == 2
    assert result.stderr == "error: argument --prefetch: expected a whole number from 0 to 65535, got 'many' " \
        "(see worker.py --help)\n"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_names_every_option_with_its_default_and_amqp_url(script):
    result = subprocess.run([sys.executable, str(ROOT / script), "--help"], text=True, capture_output=True,
                            env=script_env(f"amqp://guest:{SECRET}@elsewhere/"), cwd=ROOT)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option in ["--url", "--queue", "--queue-type"]:
        assert option in text
    assert "AMQP_URL" in text and "default: task_queue" in text and "default: classic" in text
    assert SECRET not in text
    if script == "worker.py":
        assert "--prefetch" in text and "default: 1" in text and "--sleep" in text and "--seconds-per-dot" in text
    else:
        assert "--stdin" in text and "Hello World!" in text


def test_input_that_is_not_utf8_is_an_error_after_what_came_before(queue_name):
    result = subprocess.run([sys.executable, str(ROOT / "new_task.py"), "--queue", queue_name, "--stdin"],
                            input=b"first\n\xff\xfe\nthird\n", capture_output=True, env=script_env(), cwd=ROOT,
                            timeout=60)
    assert result.returncode == 1
    assert result.stdout == b" [x] Sent 'first'\n"
    assert result.stderr.decode() == ("error: input line 2 is not UTF-8 text; it and the lines after it were not "
                                      "sent; 1 message confirmed\n")
    single = subprocess.run([sys.executable, str(ROOT / "new_task.py"), "--queue", queue_name, b"\xff"],
                            capture_output=True, env=script_env(), cwd=ROOT, timeout=60)
    assert single.returncode == 1 and single.stderr == b"error: the message is not UTF-8 text\n"


def test_empty_queue_name_is_a_usage_error():
    result = run_new_task("--queue", "", "x")
    assert result.returncode == 2 and result.stderr.startswith("error: argument --queue: expected a queue name")


def test_queue_in_exclusive_use_by_another_consumer_is_one_error_line(queue_name):
    holder = connect()
    try:
        channel = holder.channel()
        channel.queue_declare(queue_name, durable=True)
        channel.basic_consume(queue_name, lambda *_: None, exclusive=True)
        result = run_worker("--queue", queue_name, url=URL)
    finally:
        holder.close()
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: queue {queue_name!r} is in exclusive use by another consumer (ACCESS_REFUSED")
    assert line.endswith("stop that one, or use another --queue")


def test_stdin_closed_is_one_error_line(queue_name):
    result = subprocess.run(["bash", "-c", f'"{sys.executable}" new_task.py --queue "$Q" --stdin <&-'], cwd=ROOT,
                            env={**script_env(), "Q": queue_name}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == ("error: could not read input line 1 (standard input is closed); it and the lines after "
                             "it were not sent; 0 messages confirmed\n")
