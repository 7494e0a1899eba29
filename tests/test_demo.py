"""The Japanese walkthrough's experiment, run: `python -m demo` (fair dispatch 7/3, round robin 5/5, Ctrl+C,
no broker), and the compose demo's own commands as local processes against a private broker."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pika
import pytest
import yaml

from conftest import (
    ROOT,
    URL,
    PrivateBroker,
    answers,
    connect,
    delete_queue,
    free_port,
    queue_counts,
    run_new_task,
    script_env,
)
from harness.children import Child, Line, tasks

TEN = [str(i) for i in range(1, 11)]
EVENT = re.compile(r"^ *(?P<at>\d+\.\d\d)? +(?P<who>\S.*?) *\|(?P<text>.*)$")  # piped: "  0.04  0.2 s worker | [x] ..."
SPLIT = re.compile(r"^(?P<worker>[\d.]+ s worker): (?P<count>\d+) tasks? \((?P<tasks>[\d, ]*)\)$", re.M)


def demo(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "demo", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env if env is not None else script_env(URL), timeout=timeout)


def queue_exists(name: str, url: str = URL) -> bool:
    conn = connect(url)
    try:
        conn.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False
    finally:
        if conn.is_open:
            conn.close()


def demo_queue(output: str) -> str:
    found = re.search(r"queue (demo-[0-9a-f]{8}) \(the demo's own", output.replace("\n", " "))
    assert found, output
    return found[1]


def group_gone(pgid: int, timeout: float = 10) -> bool:
    """Whether no process of this process group is left (waiting a little for the kernel to reap them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def group_members(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def events(stdout: str) -> dict[str, list[str]]:
    """Piped output: each printer's lines, in order."""
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        event = EVENT.match(line)
        if event:
            found.setdefault(event["who"], []).append(event["text"])
    return found


def received(lines: list[str]) -> list[str]:
    return [task.body for task in tasks(Line(0.0, line) for line in lines)]


def splits(stdout: str) -> dict[str, list[str]]:
    return {m["worker"]: m["tasks"].split(", ") for m in SPLIT.finditer(stdout)}


def test_fair_dispatch_demo_at_speed_4_splits_seven_three_and_leaves_nothing_behind():
    # Four times faster: workers of 0.5 s and 1.25 s. (At ten times, 0.2 s and 0.5 s, a task of the fast
    # worker can take twice its time while the other test workers load both cores, and the split is 6/4.)
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--speed", "4"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=script_env(URL), start_new_session=True)
    try:
        started = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    queue = demo_queue(out)
    assert (proc.returncode, err) == (0, ""), out
    assert took < 60  # "a few seconds": about 6 s here; wide for a loaded machine
    by = events(out)
    fast, slow = received(by["0.5 s worker"]), received(by["1.25 s worker"])
    assert sorted(fast + slow, key=int) == TEN  # each task received once
    assert (len(fast), len(slow)) == (7, 3), out
    assert slow[0] == "1" and fast[0] == "2"  # the 0.5 s worker consumed first, as in the walkthrough
    assert fast == sorted(fast, key=int) and slow == sorted(slow, key=int)  # each takes them in queue order
    assert by["new_task.py"] == [f" [x] Sent '{i}'" for i in TEN]  # the loop: ten runs, in order
    assert splits(out) == {"0.5 s worker": fast, "1.25 s worker": slow}  # the summary says the same
    # each row starts with its first task (a little late on a loaded machine: after a space or two, drawn short)
    assert re.search(r"^ *0\.5 s worker \| *\[2-*\]", out, re.M)
    assert re.search(r"^1\.25 s worker \| *\[1-*\]", out, re.M)
    assert not queue_exists(queue)
    assert group_gone(proc.pid), group_members(proc.pid)  # no worker or new_task.py left


def run_in_terminal(*args: str, columns: int = 100, timeout: float = 60) -> tuple[int, str]:
    """python -m demo with a terminal (a pty) as its output; what it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = script_env(URL)
    env.pop("COLUMNS", None)
    proc = subprocess.Popen([sys.executable, "-m", "demo", *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, cwd=ROOT, env=env, start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the demo has closed the terminal's other end
                    break
                if not data:
                    break
                chunks.append(data)
        proc.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    return proc.returncode, b"".join(chunks).decode().replace("\r\n", "\n")


def test_round_robin_demo_in_a_terminal_shows_two_windows_side_by_side_and_splits_five_five():
    code, out = run_in_terminal("--prefetch", "0", "--speed", "10")
    assert code == 0, out
    assert "Traceback" not in out
    header = next(line for line in out.splitlines() if "// window 1" in line)
    assert "// window 1 (0.2 s)" in header and "// window 2 (0.5 s)" in header
    right = header.index("// window 2")
    assert max(len(line) for line in out.splitlines()) <= 100  # fits the terminal
    columns: dict[int, list[str]] = {0: [], 1: []}  # window 1, window 2: the tasks each shows received
    for line in out.splitlines():
        for task in re.findall(r"\[x\] Received b'(\d+)'", line):
            columns[1 if line.index("[x] Received") > right - 2 else 0].append(task)
    odd, even = ["1", "3", "5", "7", "9"], ["2", "4", "6", "8", "10"]
    # No prefetch limit: the broker deals the tasks out in turn, busy or not; the 0.5 s worker consumed first.
    assert columns == {0: even, 1: odd}, out
    assert splits(out) == {"0.2 s worker": even, "0.5 s worker": odd}
    assert not queue_exists(demo_queue(out))


def test_ctrl_c_to_the_process_group_mid_run_stops_everything_and_deletes_the_queue():
    demo_run = Child([sys.executable, "-m", "demo", "--speed", "5"], script_env(URL), new_session=True)
    proc = demo_run.proc
    try:
        demo_run.wait_for("Received b'3'", timeout=40)
        members = group_members(proc.pid)
        assert sum("worker.py" in m for m in members) == 2, members  # mid-run: both workers are there
        interrupted = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl+C
        code = proc.wait(timeout=30)
        took = time.monotonic() - interrupted
    finally:
        demo_run.stop()
    demo_run.wait()  # its output read to the end
    out, err = "\n".join(demo_run.lines), demo_run.errors
    assert code == 130
    assert took < 10  # "within a few seconds": well under 1 s here
    assert group_gone(proc.pid), group_members(proc.pid)  # no worker, no new_task.py
    assert "Traceback" not in "".join(err) + out
    assert len(err) == 1 and err[0].startswith("interrupted: "), err
    assert "All ten done" not in out  # it stopped mid-run
    assert not queue_exists(demo_queue(out))


@pytest.mark.parametrize("how", ["--url", "AMQP_URL"])
def test_no_broker_at_a_given_url_is_the_scripts_one_line_error(how):
    url = f"amqp://guest:s3cret@127.0.0.1:{free_port()}/%2F"  # nothing listens there
    result = demo("--url", url) if how == "--url" else demo(env=script_env(url))
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: no RabbitMQ broker answers at 127.0.0.1:"), line
    assert "s3cret" not in result.stderr
    assert result.stderr == run_new_task(url=url).stderr  # word for word what the scripts say


OWN = re.compile(r"^No broker answers at localhost:(?P<default>\d+): the demo starts its own \((?:a container of \S+, "
                 r"(?P<container>wq-wqdemo-[0-9a-f]{6})|a private rabbitmq-server node, (?P<node>\S+))\) on "
                 r"localhost:(?P<port>\d+), removed at the end\.$", re.M)


def nothing_at_the_default() -> dict[str, str]:
    """The demo's environment, its default URL on a port where nothing listens, no AMQP_URL (the shared broker
    is never stopped; DEMO_DEFAULT_URL is the demo's documented way to look elsewhere first)."""
    return {**script_env(None), "DEMO_DEFAULT_URL": f"amqp://guest:guest@localhost:{free_port()}/%2F"}


def docker_lines(*args: str) -> set[str]:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    return set(out.stdout.split()) if out.returncode == 0 else set()


def assert_own_broker_gone(found: re.Match[str]) -> None:
    """No container, volume, network or process of the demo's own broker is left."""
    assert not answers(int(found["port"]))
    if found["container"]:
        assert not docker_lines("ps", "-aq", "--filter", f"name={found['container']}")
        assert not [n for n in docker_lines("network", "ls", "--format", "{{.Name}}") if "wqdemo" in n]
    else:
        processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert found["node"] not in processes


@pytest.mark.timeout(300)  # the demo starts a broker of its own
def test_nothing_at_the_default_url_the_demo_brings_its_own_broker_splits_seven_three_and_leaves_nothing():
    volumes = docker_lines("volume", "ls", "-q")
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--speed", "4"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=nothing_at_the_default(),
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (proc.returncode, err) == (0, ""), out
    found = OWN.search(out)
    assert found and out.startswith(found[0]), out  # the first line says so
    print(found[0])
    by = events(out)
    fast, slow = received(by["0.5 s worker"]), received(by["1.25 s worker"])  # --speed 4, as above
    assert sorted(fast + slow, key=int) == TEN
    assert (len(fast), len(slow)) == (7, 3), out
    assert f"Broker localhost:{found['port']}," in out.replace("\n", " ")
    assert group_gone(proc.pid), group_members(proc.pid)
    assert_own_broker_gone(found)
    left = (docker_lines("volume", "ls", "-q") - volumes) & docker_lines("volume", "ls", "-q", "-f", "dangling=true")
    assert not left


@pytest.mark.timeout(300)
def test_ctrl_c_with_the_demos_own_broker_removes_it_too():
    demo_run = Child([sys.executable, "-m", "demo", "--speed", "5"], nothing_at_the_default(), new_session=True)
    proc = demo_run.proc
    try:
        demo_run.wait_for("Received b'3'", timeout=180)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl+C
        code = proc.wait(timeout=60)
    finally:
        demo_run.stop()
    demo_run.wait()
    out, err = "\n".join(demo_run.lines), demo_run.errors
    assert code == 130
    found = OWN.search(out)
    assert found, out
    assert group_gone(proc.pid), group_members(proc.pid)
    assert_own_broker_gone(found)
    assert "Traceback" not in "".join(err) + out
    assert err == ["interrupted: the workers and the loop are stopped, queue "
                   f"{demo_queue(out)} deleted, the demo's own broker removed"], err


def test_nothing_at_the_default_url_and_no_way_to_start_a_broker_is_one_line_naming_both_ways():
    # RabbitMQ hidden (an empty folder over /usr/lib/rabbitmq, in a mount namespace of the demo's own) and no
    # Docker engine (DOCKER_HOST at a socket that is not there): a machine with neither.
    env = {**nothing_at_the_default(), "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    env.pop("WORKQUEUE_NODES", None)
    hide = ("if [ -d /usr/lib/rabbitmq ]; then mount -t tmpfs none /usr/lib/rabbitmq; fi; "
            f"exec {shlex.quote(sys.executable)} -m demo")
    user_ns = [] if os.geteuid() == 0 else ["-r"]
    result = subprocess.run(["unshare", *user_ns, "-m", "sh", "-c", hide], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: no RabbitMQ broker answers at localhost:"), line
    assert "the demo cannot start one of its own" in line
    assert "install Docker" in line and "`sudo apt-get install rabbitmq-server`" in line and "--url" in line, line


def test_demo_refuses_a_queue_that_exists_and_leaves_it_alone(queue_name):
    run_new_task("--queue", queue_name, "keep me")
    result = demo("--queue", queue_name)
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: queue {queue_name!r} exists already"), line
    assert queue_exists(queue_name)


# The compose demo's commands, run


COMPOSE = ROOT / "docker-compose.yml"
SCALE = 0.5  # the walkthrough's 2 s and 5 s at half time; the shell loop's ~0.1 s a task stays well ahead


def run_service(spec: dict, url: str, bin_dir: Path) -> Child:
    """A compose service's command as a local process: `python` is this Python, AMQP_URL the given one."""
    command = [str(word) for word in spec["command"]]
    if command[:2] == ["sh", "-c"]:
        command[2] = command[2].replace("$$", "$")  # compose's escape for a literal $
    for i, word in enumerate(command[:-1]):
        if word == "--sleep":
            command[i + 1] = f"{float(command[i + 1]) * SCALE:g}"
    env = {**script_env(), **{k: str(v) for k, v in (spec.get("environment") or {}).items()}}
    env["AMQP_URL"] = url
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return Child(command, env, merge_stderr=True, new_session=True)


@pytest.fixture
def compose_broker(private_broker: PrivateBroker):
    """The private broker, with no task_queue (the compose demo's queue) before the test or after it."""
    delete_queue("task_queue", private_broker.url)
    yield private_broker
    delete_queue("task_queue", private_broker.url)


def test_compose_demo_commands_run_the_experiment_and_the_producer_waits_for_both_workers(compose_broker, tmp_path):
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    demo_services = {name: s for name, s in services.items() if "demo" in (s.get("profiles") or [])}
    workers = {name: s for name, s in demo_services.items() if "worker.py" in s["command"]}
    [producer_name] = set(demo_services) - set(workers)
    assert len(workers) == 2
    shim = tmp_path / "python"  # the image's `python`: this one, with its packages (a symlink would lose its venv)
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    shim.chmod(0o755)
    url = compose_broker.url
    started: list[Child] = []
    try:
        # Started one at a time, to see the producer wait: first the producer, then one worker, then the other.
        producer = run_service(demo_services[producer_name], url, tmp_path)
        started.append(producer)
        fast_name, slow_name = sorted(workers, key=lambda n: float(workers[n]["command"][-1]))
        time.sleep(1.5)
        assert producer.proc.poll() is None and producer.lines == [], producer.lines  # no worker yet: it waits
        fast = run_service(workers[fast_name], url, tmp_path)
        started.append(fast)
        time.sleep(1.5)
        assert producer.proc.poll() is None and producer.first("Sent") is None, producer.lines  # one worker: waits
        slow = run_service(workers[slow_name], url, tmp_path)
        started.append(slow)
        assert producer.wait(60) == 0, producer.lines
        deadline = time.monotonic() + 60
        while sum(w.count(" [x] Done") for w in (fast, slow)) < 10:
            assert time.monotonic() < deadline, (fast.lines, slow.lines)
            time.sleep(0.1)
        sent = producer.lines
        assert sent == [f" [x] Sent '{i}'" for i in TEN]  # the shell loop, in order
        first_sent = producer.first("Sent")
        assert first_sent is not None
        both_waiting = max(w.first("Waiting for messages") or float("inf") for w in (fast, slow))
        assert first_sent > both_waiting  # the producer sent nothing until both workers were there
        fast_tasks = received(fast.lines)
        slow_tasks = received(slow.lines)
        assert sorted(fast_tasks + slow_tasks, key=int) == TEN  # each task once
        assert (len(fast_tasks), len(slow_tasks)) == (7, 3), (fast_tasks, slow_tasks)
        assert queue_counts("task_queue", node=compose_broker) == (0, 0)  # all acknowledged
    finally:
        for service in started:
            service.stop()


def test_demo_help_names_its_options():
    result = demo("--help")
    assert result.returncode == 0
    for option in ("--speed", "--prefetch", "--url", "--queue"):
        assert option in result.stdout
    assert "seed" not in result.stdout.lower()
