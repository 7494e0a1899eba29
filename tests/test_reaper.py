"""harness.reaper: what a process started with the harness (a node, a child process, a folder, an iptables
rule) goes when that process is SIGKILLed, as a pytest-xdist worker whose controller went away is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, Child, answers, node_kind
from harness.containers import iptables

OWNER = textwrap.dedent("""
    import contextlib, sys, time
    sys.path.insert(0, sys.argv[1])
    from harness.brokers import Node
    from harness.children import Child
    from harness.faults import dropping_port

    node = Node("wqreaped")
    node.start()
    child = Child([sys.executable, "-c", "import time; time.sleep(600)"], {})
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(dropping_port())
        if len(sys.argv) > 2:
            stack.enter_context(node.frozen())  # a frozen node goes too
        print(node.port, node.dir, child.proc.pid, port, flush=True)
        time.sleep(600)
""")


def rules(port: int) -> list[str]:
    return [line for line in iptables("-S").splitlines() if f"--dport {port} " in line]


def gone(check, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.mark.needs("iptables")
@pytest.mark.timeout(240)
@pytest.mark.parametrize("frozen", [False, True], ids=["running", "frozen"])
def test_a_killed_owner_leaves_no_node_child_folder_or_rule(frozen):
    owner = Child([sys.executable, "-c", OWNER, str(ROOT), *(["frozen"] if frozen else [])], dict(os.environ))
    try:
        owner.wait_until(lambda: owner.lines[-1:] or None, 180, "the owner's node, child and rule")
        node_port, folder, child_pid, dropped = owner.lines[-1].split()
        assert answers(int(node_port)) and Path(folder).is_dir() and rules(int(dropped))
        owner.proc.kill()  # SIGKILL: nothing of the owner's own runs after it
        owner.proc.wait(30)
    finally:
        owner.stop()
    assert gone(lambda: answers(int(node_port))), "the node still answers"
    assert gone(lambda: Path(f"/proc/{child_pid}").exists()), "the child still runs"
    assert gone(lambda: Path(folder).exists()), "the node's folder is still there"
    assert gone(lambda: rules(int(dropped))), "the iptables rule is still there"
    if node_kind() == "process":
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert f"wqreaped{owner.proc.pid}@" not in ps


def test_a_process_that_ends_normally_leaves_its_reaper_nothing_to_do(tmp_path):
    # The reaper removes only what its owner did not: a folder the owner forgot stays where the owner put it.
    keep = tmp_path / "kept"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from harness import reaper
        Path({str(keep)!r}).mkdir()
        reaper.forget(reaper.watch("dir", {str(keep)!r}))
        left = Path({str(tmp_path / "left")!r}); left.mkdir()
        reaper.watch("dir", left)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert gone(lambda: (tmp_path / "left").exists(), 30)
    assert keep.is_dir()


def test_the_reaper_never_kills_a_number_the_kernel_gave_another_process():
    # A process it was told of ended; its number, given later to another, is not that process.
    from harness import reaper

    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        token = f"pid {sleeper.pid} 1"  # started at tick 1: not this process
        reaper.remove(*token.split(" ", 1))
        assert sleeper.poll() is None
        reaper.remove("pid", f"{sleeper.pid} {reaper._started(sleeper.pid)}")
        assert sleeper.wait(10) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()
