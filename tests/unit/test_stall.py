"""The publisher's confirm timeout (publisher._Stall): a node that still talks but stores nothing for the
timeout while messages wait is left for the next one, whether no confirm came or only nacks."""

from __future__ import annotations

from workqueue.publisher import _Stall


def stall(at: float = 100.0, received: int = 500) -> _Stall:
    clock = _Stall(5.0)
    clock.restart(received, at)
    return clock


def test_no_confirm_from_a_node_that_talks_is_overdue_after_the_timeout():
    clock = stall()
    assert not clock.overdue(True, 600, 104.9)
    assert clock.overdue(True, 600, 105.0)


def test_only_nacks_are_overdue_too_though_the_window_emptied_and_filled_again():
    # A channel opened during a quorum queue's leader election nacks every message: the nacks are bytes
    # and answers, the window empties and is published again, but nothing is stored: no restart.
    clock = stall()
    received = 500
    for now in (101.0, 102.0, 103.0, 104.0):
        received += 20_000  # a round of nacks
        assert not clock.overdue(True, received, now)
    assert clock.overdue(True, received, 105.0)


def test_an_ack_starts_the_clock_again():
    clock = stall()
    clock.restart(9_000, 104.0)  # some message was stored
    assert not clock.overdue(True, 9_100, 108.9)
    assert clock.overdue(True, 9_100, 109.0)


def test_a_silent_node_is_not_judged_here():
    # No byte since the clock started: the heartbeat check (nodes.Silence) drops that connection instead.
    assert not stall().overdue(True, 500, 200.0)


def test_nothing_waiting_is_never_overdue():
    assert not stall().overdue(False, 600, 200.0)


def test_a_new_connection_counts_its_own_bytes():
    # The clock restarts with the new connection's count: a count far below the old one's still shows talk.
    clock = stall(received=10_000_000)
    clock.restart(556, 110.0)
    assert clock.overdue(True, 2_000, 115.0)
