"""demo.chaos's pure parts: the order of the faults and the timeline."""

import random
from types import SimpleNamespace
from typing import Any

from demo.chaos import KINDS, Log, rounds, timeline


def test_every_kind_of_fault_comes_once_in_each_round_and_the_seed_repeats_them():
    first = rounds(random.Random(7))
    taken = [next(first) for _ in range(3 * len(KINDS))]
    for i in range(3):
        assert sorted(taken[i * len(KINDS):(i + 1) * len(KINDS)]) == sorted(KINDS)
    again = rounds(random.Random(7))
    assert [next(again) for _ in range(len(taken))] == taken


def test_timeline_marks_each_fault_on_its_node_row():
    log = Log()
    log.began -= 100  # a run of 100 s
    log.spans = [("kill", "a@localhost", 0.0, 15.0), ("freeze", "b@localhost", 52.0, 61.0),
                 ("worker-kill", "workers", 99.0, 99.5)]
    nodes = [SimpleNamespace(nodename="a@localhost"), SimpleNamespace(nodename="b@localhost")]
    cluster: Any = SimpleNamespace(nodes=nodes)
    rows = timeline(log, cluster, width=10)
    assert rows == ["    node 1 |kk........| 100 s",
                    "    node 2 |.....ff...| 100 s",
                    "   workers |.........w| 100 s"]
