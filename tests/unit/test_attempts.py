"""A task that fails: attempt counting, the copies' headers and properties, the queues' arguments, the lines."""

from __future__ import annotations

import re

import pika
import pytest

from workqueue import attempts, cli
from workqueue.attempts import ATTEMPTS, ERROR, FAILED_AT, Policy


def test_attempts_so_far_add_ours_and_the_quorum_queues_returns():
    assert attempts.made(None) == 0
    assert attempts.made({}) == 0
    assert attempts.made({"x-delivery-count": 2}) == 2
    assert attempts.made({ATTEMPTS: 1}) == 1
    assert attempts.made({ATTEMPTS: 1, "x-delivery-count": 1}) == 2
    assert attempts.made({ATTEMPTS: "two", "x-delivery-count": None}) == 0  # not ours to trust
    assert attempts.made({ATTEMPTS: -3}) == 0


@pytest.mark.parametrize("headers, used_up", [
    (None, False),
    ({"x-delivery-count": 2}, False),  # two deliveries came back: this is the third attempt
    ({"x-delivery-count": 3}, True),  # three attempts made: set aside before a fourth
    ({ATTEMPTS: 2}, False),
    ({ATTEMPTS: 2, "x-delivery-count": 1}, True),
])
def test_a_delivery_is_set_aside_before_it_runs_once_its_attempts_are_used_up(headers, used_up):
    assert attempts.used_up(Policy(attempts=3), headers) is used_up


def test_attempts_1_sets_aside_at_the_first_failure():
    assert attempts.last_attempt(Policy(attempts=1), 1)
    assert not attempts.last_attempt(Policy(attempts=3), 2)
    assert attempts.last_attempt(Policy(attempts=3), 3)
    assert attempts.used_up(Policy(attempts=1), {"x-delivery-count": 1})


def sent() -> pika.BasicProperties:
    return pika.BasicProperties(content_type="text/plain", delivery_mode=1, priority=3, correlation_id="c",
                                message_id="m", app_id="app", user_id="alice", expiration="60000", timestamp=7,
                                headers={"mine": "kept", "x-delivery-count": 2, "x-death": [{"count": 1}],
                                         ATTEMPTS: 1, ERROR: "old", FAILED_AT: "earlier"})


def test_a_retry_copy_is_the_task_as_sent_persistent_with_our_headers_and_the_delay_as_expiration():
    copy = attempts.retry_copy(sent(), 2, "ValueError: bad", "2026-12-02T16:40:05Z", 5)
    assert copy.headers == {"mine": "kept", ATTEMPTS: 2, ERROR: "ValueError: bad", FAILED_AT: "2026-12-02T16:40:05Z"}
    assert copy.expiration == "5000"
    assert copy.delivery_mode == 2
    assert (copy.content_type, copy.priority, copy.correlation_id, copy.message_id, copy.app_id, copy.timestamp) == (
        "text/plain", 3, "c", "m", "app", 7)
    assert copy.user_id is None  # the broker would refuse another user's id from the worker's connection
    assert attempts.retry_copy(sent(), 1, "e", "t", 0.25).expiration == "250"


def test_a_failed_copy_never_expires():
    copy = attempts.failed_copy(sent(), 3, "ValueError: bad", "2026-12-02T16:40:05Z")
    assert copy.expiration is None and copy.delivery_mode == 2
    assert copy.headers[ATTEMPTS] == 3


def test_a_requeued_copy_has_its_attempts_reset_and_only_the_senders_headers():
    assert attempts.requeued_copy(sent()).headers == {"mine": "kept"}
    assert attempts.requeued_copy(pika.BasicProperties(headers={ATTEMPTS: 3})).headers is None


def test_the_time_is_iso_8601_utc():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", attempts.now())


def test_the_retry_queue_dead_letters_back_to_the_task_queue():
    assert attempts.retry_arguments("q", "classic") == {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q"}
    assert attempts.retry_arguments("q", "quorum") == {
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q", "x-queue-type": "quorum",
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def test_the_failed_queue_has_no_delivery_limit_on_rabbitmq_4_only():
    assert attempts.failed_arguments("classic", 4) is None
    assert attempts.failed_arguments("quorum", 3) == {"x-queue-type": "quorum"}  # -1 would mean 0 there
    assert attempts.failed_arguments("quorum", 4) == {"x-queue-type": "quorum", "x-delivery-limit": -1}
    assert (attempts.major(b"3.10.8"), attempts.major("4.3.6"), attempts.major(None)) == (3, 4, 0)


def test_the_queues_are_named_after_the_task_queue():
    assert (attempts.retry_queue("task_queue"), attempts.failed_queue("task_queue")) == (
        "task_queue.retry", "task_queue.failed")


def test_lines_name_the_task_shortened_the_error_and_what_becomes_of_it():
    policy = Policy(attempts=3, delay=5)
    error = attempts.describe(ValueError("bad\ninput"))
    assert error == "ValueError: bad input"
    assert attempts.retried_line(b"fail 1", error, 1, policy) == (
        "warning: the task b'fail 1' failed (ValueError: bad input); attempt 1 of 3, tried again in 5 s")
    assert attempts.set_aside_line(b"fail 1", error, 3, "task_queue") == (
        "warning: the task b'fail 1' failed (ValueError: bad input); set aside in 'task_queue.failed' after 3 attempts")
    assert attempts.lost_line(b"die", 3, 3, "q").startswith(
        "warning: the task b'die' was delivered 3 times without an ack (its worker's process ended")
    assert attempts.lost_line(b"die", 3, 3, "q").endswith("set aside in 'q.failed' after 3 attempts, before it "
                                                          "runs again")
    long = attempts.retried_line(b"x" * 500, attempts.describe(RuntimeError("y" * 1000)), 1, policy)
    assert len(long) < 400 and "..." in long
    assert attempts.describe(KeyError()) == "KeyError"


def parse(monkeypatch: pytest.MonkeyPatch, *argv: str):
    monkeypatch.setattr("sys.argv", ["worker.py", *argv])
    return cli.parse(cli.parser("doc", worker=True))


def test_worker_options_default_to_three_attempts_five_seconds_apart(monkeypatch):
    assert cli.policy(parse(monkeypatch)) == Policy(attempts=3, delay=5.0, queue_type="classic")
    assert cli.policy(parse(monkeypatch, "--attempts", "1", "--retry-delay", "0.5", "--queue-type", "quorum")) == (
        Policy(attempts=1, delay=0.5, queue_type="quorum"))


@pytest.mark.parametrize("argv, said", [
    (["--attempts", "0"], "expected a whole number, 1 or more, got '0'"),
    (["--retry-delay", "-1"], "expected a number of seconds"),
    (["--attempts", "21", "--queue-type", "quorum"], "the delivery limit of a quorum queue on RabbitMQ 4"),
])
def test_worker_options_out_of_range_are_one_usage_error(monkeypatch, capsys, argv, said):
    with pytest.raises(SystemExit) as exit:
        parse(monkeypatch, *argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and said in err and err.count("\n") == 1


def test_more_than_20_attempts_on_a_classic_queue_is_fine(monkeypatch):
    assert cli.policy(parse(monkeypatch, "--attempts", "50")).attempts == 50


def test_the_new_tasks_parser_has_no_worker_options():
    assert "--attempts" not in cli.parser("doc").format_help()


def test_a_task_that_acked_its_message_and_then_raised_is_not_tried_again():
    assert attempts.acked_line(b"late", "OSError: disk full") == (
        "warning: the task b'late' failed (OSError: disk full) after it was acknowledged or handed back; "
        "it is not tried again")


def test_a_task_that_failed_after_the_broker_took_it_back_is_left_to_the_broker():
    assert attempts.taken_back_line(b"long....", "ValueError: bad input") == (
        "warning: the task b'long....' failed (ValueError: bad input) after the broker had taken it back (a "
        "consumer_timeout, or a deleted queue); no copy stored")
