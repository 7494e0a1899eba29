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
