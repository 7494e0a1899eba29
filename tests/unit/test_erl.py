"""harness.erl: which rabbitmqctl commands become Erlang code for erl_call, and how its answer is read. The code
itself runs on real nodes in the broker tests (every queue count, cluster status and restart goes through it)."""

from __future__ import annotations

import pytest

from harness import erl

COUNTS = ["list_queues", "-q", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged"]


def test_eval_prints_the_value_as_rabbitmqctl_eval_does():
    code = erl.code(["eval", "rabbit_nodes:all_running()."])
    assert code == 'io:format("~p~n", [begin rabbit_nodes:all_running() end]), ok.'


def test_list_queues_asks_for_the_columns_in_order_in_the_vhost():
    code = erl.code(COUNTS)
    assert code and "info(Q, [name, messages_ready, messages_unacknowledged])" in code
    assert 'list_local(<<"/"/utf8>>)' in code and "rabbit_nodes:all_running()" in code  # each node its own
    other = erl.code(["list_queues", "-p", "certonly", "-q", "--no-table-headers", "name"])
    assert other and 'list_local(<<"certonly"/utf8>>)' in other


@pytest.mark.parametrize("args", [
    ["list_queues", "name", "messages"],  # headers and a banner: rabbitmqctl's own
    ["list_queues", "-q", "--no-table-headers", "name", "arguments"],  # printed its own way
    ["list_queues", "-q", "--no-table-headers"],
    ["set_policy", "p", "^q$", "{}"],
    ["eval"],
    [],
])
def test_any_other_command_is_left_to_rabbitmqctl(args):
    assert erl.code(args) is None


def test_start_app_asks_again_until_the_node_runs_and_stop_app_fails_unless_ok():
    assert "ok = rabbit:stop()" in (erl.code(["stop_app"]) or "")
    start = erl.code(["start_app"]) or ""
    assert "rabbit:is_running()" in start and start.endswith("ok = Start(100), ok.")


def test_the_answer_is_what_the_code_printed_and_an_error_term_is_raised():
    assert erl.printed("q\t1\t0\n{ok, ok}", "x") == "q\t1\t0\n"
    with pytest.raises(RuntimeError, match="badmatch"):
        erl.printed("{error, \"*** eval: {'EXIT',{{badmatch,not_running}}}\"}", "rabbitmqctl start_app")


def test_stop_app_waits_for_the_nodes_boot_to_return():
    # Stopped before rabbit:boot() returned, the boot fails and the Erlang VM exits (RabbitMQ 4.3.6).
    stop = erl.code(["stop_app"]) or ""
    assert stop.index("whereis(rabbit_boot)") < stop.index("rabbit:stop()")
