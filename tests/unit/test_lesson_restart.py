"""A lesson whose own broker does not start again ends with one error: line (the lesson's broker tests run the
restarts themselves)."""

from __future__ import annotations

import subprocess

import pytest

from demo.lessons import restarting
from workqueue import cli


@pytest.mark.parametrize("fault", [
    subprocess.CalledProcessError(69, ["rabbitmqctl", "start_app"]),
    RuntimeError("the RabbitMQ node on port 5999 did not start; see /tmp/wq-x/log\nmore"),
])
def test_a_broker_that_does_not_start_again_is_one_error_line(fault):
    with pytest.raises(cli.Failure) as caught, restarting():
        raise fault
    message = str(caught.value)
    assert message.startswith("the lesson's broker did not start again (") and "\n" not in message
    assert message.endswith("run the lesson again")
