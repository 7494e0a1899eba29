"""python -m demo.chaos: minutes of random faults across a cluster of its own while the tutorial's scripts
run, then a count of what was sent and done. A short run here; the long runs' figures are in docs/."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, Child, node_kind, script_env

SUMMARY = re.compile(r"^chaos: sent (\d+), done (\d+), lost (\d+), unexpected (\d+), duplicated (\d+), faults (\d+) "
                     r"\(kill (\d+), freeze (\d+), cut (\d+), partition (\d+), restart (\d+), worker (\d+)\)$", re.M)

pytestmark = pytest.mark.needs("iptables")


def nodes_of(pid: int) -> list[str]:
    """The chaos run's nodes still running: processes named for it, or containers labelled for it."""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line[:120] for line in ps.splitlines() if "wqchaos" in line and str(pid) in line and "beam" in line]


def rules_of(pid: int) -> list[str]:
    out = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"workqueue-{pid}" in line]


@pytest.mark.timeout(900)
def test_chaos_a_minute_of_faults_of_every_kind_nothing_sent_is_lost():
    # A minute: this seed's first round deals every kind of fault once (each over in 10 to 20 s with the
    # cluster whole again), five of them by 45 s on an idle machine; docs/cluster.md has 30-minute runs.
    run = subprocess.run([sys.executable, "-m", "demo.chaos", "--minutes", "1", "--seed", "20261202"], cwd=ROOT,
                         env=script_env(None), capture_output=True, text=True, timeout=840)
    print(run.stdout)
    found = SUMMARY.search(run.stdout)
    assert found, (run.stdout, run.stderr)
    sent, done, lost, unexpected, duplicated, faults, *kinds = (int(n) for n in found.groups())
    assert (lost, unexpected) == (0, 0)
    assert run.returncode == 0, run.stderr
    assert sent >= 100 and done >= sent
    assert faults >= 5 and sum(kinds) == faults
    assert "Traceback" not in run.stdout + run.stderr


@pytest.mark.timeout(300)
def test_chaos_ctrl_c_in_the_middle_of_a_partition_leaves_nothing_behind():
    # Seed 1 deals a partition first: Ctrl+C comes while a node is cut off from its peers.
    chaos = Child([sys.executable, "-m", "demo.chaos", "--minutes", "5", "--seed", "1"], script_env(None),
                  new_session=True)
    try:
        chaos.wait_for("partition node", timeout=240)
        if node_kind() == "process":  # its rule is in place (a container node is taken off its network)
            chaos.wait_until(lambda: bool(rules_of(chaos.proc.pid)), 30, "the partition's iptables rule")
        os.killpg(chaos.proc.pid, signal.SIGINT)
        assert chaos.proc.wait(120) == 130
    finally:
        chaos.stop()
    chaos.wait()
    assert chaos.errors == ["interrupted: stopping the producers, the workers and the nodes"], chaos.errors
    assert not nodes_of(chaos.proc.pid)
    assert not rules_of(chaos.proc.pid)
