"""nodes.Nodes, Round and Backoff: the order in which nodes are tried, giving up on a refused login, the
line for no node answering, and the waits between rounds. Building Nodes parses URLs; it connects nowhere."""

from __future__ import annotations

import errno
import random
import ssl

import pika.exceptions as px
import pytest
from pika.adapters.utils import connection_workflow as cw

from workqueue import broker, nodes
from workqueue.report import Failure

URLS = [f"amqp://alice:pw@node{i}.example:{5672 + i}/%2F" for i in range(3)]
LOGIN_REFUSED = "ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused using authentication mechanism'"


def refused() -> px.AMQPConnectionError:
    return px.AMQPConnectionError(cw.AMQPConnectorSocketConnectError(
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")))


@pytest.fixture
def three() -> nodes.Nodes:
    return nodes.Nodes(URLS)


def test_nodes_parse_each_url_and_start_at_the_first(three):
    assert len(three) == 3
    assert [three.where(i) for i in range(3)] == ["node0.example:5672", "node1.example:5673", "node2.example:5674"]
    assert three.current == 0 and three.in_use is three.params[0] and three.where() == "node0.example:5672"


def test_a_malformed_url_among_them_is_a_failure():
    with pytest.raises(Failure, match=r"malformed broker URL amqp://alice:\*\*\*@h:x/"):
        nodes.Nodes([URLS[0], "amqp://alice:pw@h:x/"])


@pytest.mark.parametrize(("start", "order"), [(0, [0, 1, 2]), (1, [1, 2, 0]), (2, [2, 0, 1]), (3, [0, 1, 2])])
def test_a_round_tries_every_node_once_from_its_start_wrapping_round(three, start, order):
    assert list(three.round(start)) == order


def test_by_default_a_round_starts_after_the_node_in_use(three):
    three.current = 2
    assert list(three.round()) == [0, 1, 2]
    three.current = 0
    assert list(three.round()) == [1, 2, 0]


def test_next_gives_the_node_after_those_that_failed_then_none(three):
    tries = three.round(1)
    assert tries.next() == 1
    tries.failed(1, refused())
    assert tries.next() == 2
    tries.failed(2, refused())
    assert tries.next() == 0
    tries.failed(0, refused())
    assert tries.next() is None
    assert [index for index, _ in tries.errors] == [1, 2, 0]


def test_answered_makes_that_node_the_one_in_use(three):
    tries = three.round(0)
    tries.failed(0, refused())
    tries.answered(1)
    assert three.current == 1 and three.where() == "node1.example:5673"


def test_a_refused_login_fails_the_round_at_once(three):
    tries = three.round(0)
    with pytest.raises(Failure) as caught:
        tries.failed(0, px.ProbableAuthenticationError(LOGIN_REFUSED))
    assert str(caught.value) == broker.explain(px.ProbableAuthenticationError(LOGIN_REFUSED), three.params[0])
    assert "refused the login of user 'alice'" in str(caught.value)
    assert tries.errors == []


def test_a_login_lost_rather_than_refused_goes_on_to_the_next_node(three):
    tries = three.round(0)
    tries.failed(0, px.ProbableAuthenticationError("StreamLostError: ('Transport indicated EOF',)"))
    assert tries.next() == 1


def test_none_answered_for_one_url_is_that_errors_own_line():
    one = nodes.Nodes(URLS[:1])
    tries = one.round(0)
    tries.failed(0, refused())
    error = tries.none()
    assert isinstance(error, nodes.NoneAnswered) and isinstance(error, Failure)
    assert str(error) == f"no RabbitMQ broker answers at node0.example:5672 (connection refused): {broker.START_HINT}"
    assert [index for index, _ in error.errors] == [0]


def test_none_answered_for_several_urls_names_each_broker_tried(three):
    tries = three.round(1)
    tries.failed(1, refused())
    tries.failed(2, px.StreamLostError("Stream connection lost: EOF"))
    tries.failed(0, cw.AMQPConnectionWorkflowFailed([cw.AMQPConnectorSocketConnectError(TimeoutError("timed out"))]))
    assert str(tries.none()) == (
        "no broker answered at any of the 3 URLs given: node1.example:5673 (connection refused); node2.example:5674 "
        "(Stream connection lost: EOF); node0.example:5672 (no answer within 10 s); " + broker.START_HINT)


def test_none_answered_tells_the_whole_story_of_a_tls_problem():
    tls = nodes.Nodes(["amqps://u:p@a.example/", "amqps://u:p@b.example/"])
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code, exc.verify_message = 18, "self-signed certificate"
    text = tls.none_answered([(0, exc), (1, refused())])
    assert text.startswith("no broker answered at any of the 2 URLs given: a.example:5671 (the broker at "
                           "a.example:5671 has a TLS certificate not signed by a CA this system trusts")
    assert "; b.example:5671 (connection refused); " in text


def test_backoff_doubles_from_half_a_second_to_ten(monkeypatch):
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # no jitter
    backoff = nodes.Backoff()
    assert [backoff.next() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_backoff_jitter_cuts_each_wait_by_up_to_half():
    random.seed(14)
    backoff = nodes.Backoff()
    for nominal in [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]:
        delay = backoff.next()
        assert 0.5 * nominal <= delay <= nominal


def test_backoff_jitter_asks_for_half_to_all_of_the_delay(monkeypatch):
    asked = []
    monkeypatch.setattr(random, "uniform", lambda low, high: asked.append((low, high)) or low)
    backoff = nodes.Backoff()
    assert [backoff.next(), backoff.next()] == [0.25, 0.5]
    assert asked == [(0.5, 1.0), (0.5, 1.0)]


def test_backoff_reset_starts_again_at_half_a_second(monkeypatch):
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    backoff = nodes.Backoff()
    for _ in range(6):
        backoff.next()
    backoff.reset()
    assert backoff.next() == nodes.FIRST_DELAY == 0.5


def test_backoff_with_other_nodes_starts_the_first_round_after_a_loss_at_once(monkeypatch):
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    backoff = nodes.Backoff(several=True)
    assert [backoff.next() for _ in range(3)] == [0.0, 0.5, 1.0]
    backoff.reset()
    assert backoff.next() == 0.0


# -- the quick bound on a handshake in a round of several nodes, and the patient round after it


def timed_out() -> px.AMQPConnectionError:
    return px.AMQPConnectionError(cw.AMQPConnectorSocketConnectError(TimeoutError("TCP connection attempt timed out")))


def test_a_round_of_several_nodes_gives_each_the_quick_bound_and_a_single_url_pikas_own(three):
    quick = three.round(0).params(1)
    assert (quick.socket_timeout, quick.stack_timeout) == (nodes.QUICK, nodes.QUICK)
    assert quick.host == "node1.example" and three.params[1].stack_timeout == 15  # the node's own are kept
    assert three.round(0, patient=True).params(1) is three.params[1]
    single = nodes.Nodes([URLS[0]])
    assert single.round(0).params(0) is single.params[0]


def test_a_url_with_its_own_bound_keeps_it_in_every_round():
    both = nodes.Nodes([URLS[0] + "?connection_timeout=4000", URLS[1]])
    assert both.round(0).params(0).stack_timeout == 4.0


def test_a_quick_round_that_ran_out_of_time_is_followed_by_a_patient_one_and_only_then(three):
    tries = three.round(0)
    tries.failed(0, refused())
    tries.failed(1, timed_out())
    tries.failed(2, refused())
    assert tries.again()
    patient = three.round(0, patient=True)
    for index in patient:
        patient.failed(index, timed_out())
    assert not patient.again()
    refusals = three.round(0)
    for index in refusals:
        refusals.failed(index, refused())
    assert not refusals.again()  # every node said no: none is slow


def test_a_timeout_of_a_url_with_its_own_bound_asks_for_no_patient_round():
    both = nodes.Nodes([URLS[0] + "?connection_timeout=4000", URLS[1]])
    tries = both.round(0)
    tries.failed(0, timed_out())
    tries.failed(1, refused())
    assert not tries.again()


# -- a silent connection


def test_silence_is_death_after_one_and_a_half_heartbeats_without_a_byte(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(nodes.time, "monotonic", lambda: now[0])
    silence = nodes.Silence(5)
    checks = []
    for _ in range(16):  # a check every half second, the byte count still
        now[0] += 0.5
        checks.append(silence.dead(42))
    assert checks.index(True) == 15  # 7.5 s after the first check, which saw those bytes
    assert not silence.dead(43)  # a byte came: alive again


def test_silence_judges_nothing_on_a_late_check_and_nothing_without_heartbeats(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(nodes.time, "monotonic", lambda: now[0])
    silence = nodes.Silence(5)
    silence.dead(42)
    now[0] += 9  # this process was held up: what came meanwhile may not be read yet
    assert not silence.dead(42)
    now[0] += 0.5
    assert not silence.dead(42)
    off = nodes.Silence(0)
    now[0] += 1000
    assert not off.dead(1) and not off.dead(1)
