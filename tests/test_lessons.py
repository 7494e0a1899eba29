"""The walkthrough's lessons, each one command (`python -m demo LESSON`), run against real brokers: the machine's
for the lessons that need no restart, one of the demo's own for those that restart or kill theirs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import OWN_PORT, ROOT, URL, script_env
from harness.children import Child
from test_demo import (
    assert_own_broker_gone,
    events,
    group_gone,
    group_members,
    nothing_at_the_default,
    queue_exists,
    received,
    splits,
)

OWN = re.compile(r"^This lesson (?:restarts|kills) its broker, so it never uses yours: the demo starts its own "
                 r"\((?:a container of \S+, (?P<container>wq-wqdemo-[0-9a-f]{6})|a private rabbitmq-server node, "
                 r"(?P<node>\S+))\) on localhost:(?P<port>\d+), removed at the end\.$", re.M)
QUEUE = re.compile(r"queue (demo-[0-9a-f]{8}) \(the lesson's own")


def counts_env() -> dict[str, str]:
    """For a lesson that shows unacknowledged counts: the machine's broker where this user's rabbitmqctl reaches
    it (as conftest finds it), else nothing at the default URL, so that the lesson uses a broker of its own."""
    return script_env(URL) if OWN_PORT is None and not os.environ.get("AMQP_URL") else nothing_at_the_default()


def lesson(*args: str, env: dict[str, str], timeout: float) -> tuple[int, str, str, int]:
    """python -m demo ARGS, in a process group of its own: (exit status, stdout, stderr, process group)."""
    proc = subprocess.Popen([sys.executable, "-m", "demo", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc.returncode, out, err, proc.pid


def closing(out: str) -> str:
    """The lesson's closing lines."""
    assert "\nWhat you saw:\n" in out, out
    return out.split("\nWhat you saw:\n", 1)[1]


@pytest.mark.parametrize("name, split", [("fair", (7, 3)), ("round-robin", (5, 5))])
def test_fair_and_round_robin_are_the_walkthroughs_experiment_by_name(name, split):
    # --speed 4: tasks of 0.5 s and 1.25 s, wide enough for a loaded machine to keep the split
    code, out, err, group = lesson(name, "--speed", "4", env=script_env(URL), timeout=80)
    assert (code, err) == (0, ""), out
    by = events(out)
    fast, slow = received(by["0.5 s worker"]), received(by["1.25 s worker"])
    assert (len(fast), len(slow)) == split, out
    assert splits(out) == {"0.5 s worker": fast, "1.25 s worker": slow}
    if name == "round-robin":
        assert sorted(slow, key=int) == ["1", "3", "5", "7", "9"] and "prefetch 0 (no limit: round robin)" in out
        assert "The tutorial (round-robin dispatching): by default" in " ".join(out.split("|")[-1].split())
    else:
        assert "「前のメッセージのAckが帰ってくるまで" in "".join(out.split("|")[-1].split())
    queue = re.search(r"queue (demo-[0-9a-f]{8}) \(the demo's own", out.replace("\n", " "))
    assert queue and not queue_exists(queue[1])
    assert group_gone(group), group_members(group)


@pytest.mark.timeout(240)
def test_ack_lesson_a_worker_stopped_mid_task_by_ctrl_c_then_kill_9_its_task_goes_to_the_other_worker():
    env = counts_env()
    code, out, err, group = lesson("ack", "--speed", "10", env=env, timeout=220)
    assert (code, err) == (0, ""), out
    lines = out.splitlines()
    # Each round: held by window 1, back in the queue once it is stopped, gone once window 2 has acked it.
    counts = [re.sub(r":.*", "", line.strip().removeprefix("queue: ")) for line in lines
              if line.startswith("  queue: ")]
    round_ = ["0 ready, 1 unacknowledged", "1 ready, 0 unacknowledged", "0 ready, 0 unacknowledged"]
    assert counts == round_ * 2, out
    assert "  $ Ctrl+C in window 1" in lines and any(re.fullmatch(r"  \$ kill -9 \d+", line) for line in lines)
    window1 = [line.split("| ", 1)[1] for line in lines if line.startswith("  window 1 |")]
    window2 = [line.split("| ", 1)[1] for line in lines if line.startswith("  window 2 |")]
    assert [line for line in window1 if "Received" in line] == [" [x] Received b'task 1'", " [x] Received b'task 2'"]
    assert "Done" not in " ".join(window1)  # stopped in the middle, both times
    assert [line for line in window2 if "Received" in line or "Done" in line] == [
        " [x] Received b'task 1' (redelivered)", " [x] Done", " [x] Received b'task 2' (redelivered)", " [x] Done"]
    end = closing(out)
    assert "Ctrl+C: the task went back" in end and "kill -9: the task went back" in end
    assert end.rstrip().endswith("The walkthrough: 「Ack が返ってこない場合メッセージをリキューする。」")
    found = QUEUE.search(out.replace("\n", " "))
    assert found
    if env.get("AMQP_URL"):
        assert not queue_exists(found[1], env["AMQP_URL"])
    assert group_gone(group), group_members(group)


@pytest.mark.timeout(240)
def test_durable_lesson_restarts_its_own_broker_the_durable_queue_keeps_only_its_persistent_messages():
    code, out, err, group = lesson("durable", env=nothing_at_the_default(), timeout=220)
    assert (code, err) == (0, ""), out
    found = OWN.search(out)
    assert found and out.startswith(found[0]), out
    before, after = out.split("\nAfter:\n", 1)
    assert "  task_queue: 6 ready" in before.splitlines() and "  hello: 3 ready" in before.splitlines()
    assert "  $ rabbitmqctl stop_app && rabbitmqctl start_app" in before.splitlines()
    assert after.splitlines()[:2] == ["  task_queue: 3 ready: persistent 1, persistent 2, persistent 3",
                                      "  hello: gone (404 NOT_FOUND)"], out
    end = closing(out)
    assert "the transient ones were gone" in end.replace("\n  ", " ")
    assert end.rstrip().splitlines()[-1].startswith("The walkthrough: 「RabbitMQ を停止すると")
    assert group_gone(group), group_members(group)
    assert_own_broker_gone(found)


@pytest.mark.timeout(400)
def test_confirms_lesson_a_crash_loses_unconfirmed_messages_and_no_confirmed_one():
    code, out, err, group = lesson("confirms", env=nothing_at_the_default(), timeout=380)
    assert (code, err) == (0, ""), out
    found = OWN.search(out)
    assert found, out
    [(sent, kept)] = re.findall(r"^  sent ([\d,]+) in .*\n(?:.*\n)*?  after the restart: ([\d,]+) in task_queue",
                                out, re.M)[:1]
    sent_n, kept_n = int(sent.replace(",", "")), int(kept.replace(",", ""))
    assert sent_n == 20000 and 0 <= kept_n <= sent_n, out  # how many are lost varies: on this machine about half
    [confirmed] = re.findall(r"^  new_task.py: ([\d,]+) Sent, each confirmed", out, re.M)
    assert confirmed == "20,000"
    [(kept2, gone2)] = re.findall(r"^  after the restart: ([\d,]+) in task_queue; ([\d,]+) of those confirmed gone",
                                  out, re.M)
    assert int(kept2.replace(",", "")) >= 20000 and gone2 == "0", out
    assert " Sent '" not in out  # 20,000 Sent lines counted, not shown
    end = closing(out)
    assert "With confirms: 20,000 confirmed" in end.replace("\n  ", " ")
    assert "キャッシュにためてからディスクに書き込む" in end
    assert group_gone(group), group_members(group)
    assert_own_broker_gone(found)


def test_redeclare_lesson_shows_the_broker_refusal_and_the_scripts_one_error_line():
    code, out, err, group = lesson("redeclare", env=script_env(URL), timeout=80)
    assert (code, err) == (0, ""), out
    errors = [line.split("| ", 1)[1] for line in out.splitlines() if "| error: " in line]
    assert len(errors) == 2, out
    assert "another durable" in errors[0] and "another x-queue-type" in errors[1], errors
    assert "406 PRECONDITION_FAILED - inequivalent arg 'durable'" in out
    assert "Traceback" not in out
    found = QUEUE.search(out.replace("\n", " "))
    assert found and not queue_exists(found[1])
    last = closing(out).rstrip().splitlines()[-1]
    assert last == "The walkthrough: 「既に存在するキューの設定を変えることはできない。」"
    assert group_gone(group), group_members(group)


@pytest.mark.timeout(240)
def test_ctrl_c_while_the_durable_lesson_restarts_its_broker_removes_the_broker_and_leaves_nothing():
    run = Child([sys.executable, "-m", "demo", "durable"], nothing_at_the_default(), new_session=True)
    try:
        run.wait_for("rabbitmqctl stop_app", timeout=180)
        os.killpg(run.proc.pid, signal.SIGINT)  # what a terminal does on Ctrl+C
        code = run.proc.wait(timeout=120)
    finally:
        run.stop()
    run.wait()
    out, err = "\n".join(run.lines), run.errors
    assert code == 130, (out, err)
    assert "Traceback" not in "".join(err) + out
    assert err == ["interrupted: the lesson's scripts are stopped, the demo's own broker removed"], err
    assert "What you saw:" not in out
    found = OWN.search(out)
    assert found, out
    assert group_gone(run.proc.pid), group_members(run.proc.pid)
    assert_own_broker_gone(found)


def test_ctrl_c_in_the_ack_lesson_stops_its_workers_and_deletes_its_queue():
    run = Child([sys.executable, "-m", "demo", "ack"], script_env(URL), new_session=True)
    try:
        run.wait_for("Received b'task 1'", timeout=60)
        os.killpg(run.proc.pid, signal.SIGINT)
        code = run.proc.wait(timeout=60)
    finally:
        run.stop()
    run.wait()
    out, err = "\n".join(run.lines), run.errors
    found = QUEUE.search(out.replace("\n", " "))
    assert found, out
    assert code == 130
    assert err == [f"interrupted: the lesson's scripts are stopped, queue {found[1]} deleted"], err
    assert not queue_exists(found[1])
    assert group_gone(run.proc.pid), group_members(run.proc.pid)


@pytest.mark.parametrize("args, expected", [
    (["nosuch"], "error: no lesson 'nosuch'; the lessons are fair, round-robin, ack, durable, confirms, redeclare"),
    (["durable", "--url", "amqp://localhost"], "error: unrecognized arguments: --url amqp://localhost"),
    (["round-robin", "--prefetch", "3"], "error: round-robin is prefetch 0"),
    (["ack", "--speed", "0"], "error: argument --speed: expected a number more than 0"),
])
def test_a_wrong_lesson_or_option_is_one_error_line(args, expected):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "demo", *args], capture_output=True, text=True, cwd=ROOT,
                            env=script_env(URL), timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(expected), line
    assert time.monotonic() - started < 30


def test_each_lesson_has_help_and_the_demos_help_names_them():
    for name in ("ack", "durable", "confirms", "redeclare"):
        result = subprocess.run([sys.executable, "-m", "demo", name, "--help"], capture_output=True, text=True,
                                cwd=ROOT, timeout=60)
        assert result.returncode == 0 and f"python -m demo {name}" in result.stdout
    result = subprocess.run([sys.executable, "-m", "demo", "--help"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert "round-robin | ack | durable | confirms | redeclare" in " ".join(result.stdout.split())
