"""A task that fails: how many attempts it has had, what becomes of it, and the words for it. No I/O here.

A task's attempts so far are two counts added up:

- ``workqueue-attempts``, a header of ours: the attempts that ended in an exception, carried by the copy of
  the task that waits in ``<queue>.retry`` and comes back to the queue from there;
- ``x-delivery-count``, the header a quorum queue adds to a delivery that came back without an ack (its
  worker's process ended, or its connection was lost, during the task). Classic queues count nothing of the
  kind: their ``redelivered`` flag says only "at least once before".

A task whose attempts so far reach ``attempts`` is set aside in ``<queue>.failed`` before it runs again.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pika

ATTEMPTS = "workqueue-attempts"  # attempts that raised, before this copy was sent
ERROR = "workqueue-error"  # the last attempt's error: "ValueError: bad input"
FAILED_AT = "workqueue-failed-at"  # when it failed last, ISO 8601 UTC: 2026-12-02T16:40:05Z
OURS = (ATTEMPTS, ERROR, FAILED_AT)
# What the broker adds on its way (delivery counts, dead-lettering): not part of the task as it was sent.
BROKERS = ("x-delivery-count", "x-acquired-count", "x-death", "x-first-death-queue", "x-first-death-reason",
           "x-first-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-last-death-exchange")
RETRY, FAILED = ".retry", ".failed"  # the queues of our own, named after the task queue
DEFAULT_ATTEMPTS = 3
DEFAULT_DELAY = 5.0  # seconds
QUORUM_DELIVERY_LIMIT = 20  # RabbitMQ 4's default: past it a quorum queue drops (or dead-letters) a message
BODY_SHOWN = 60  # bytes of a body shown in a line
ERROR_SHOWN = 200  # characters of an error kept


@dataclass(frozen=True)
class Policy:
    """What a worker does with a task that fails: ``attempts`` in all (the first try included), the next
    one ``delay`` seconds later; ``queue_type`` of the task queue (the queues of our own follow it)."""

    attempts: int = DEFAULT_ATTEMPTS
    delay: float = DEFAULT_DELAY
    queue_type: str = "classic"


def retry_queue(queue: str) -> str:
    return queue + RETRY


def failed_queue(queue: str) -> str:
    return queue + FAILED


def _count(headers: Mapping[str, Any] | None, name: str) -> int:
    try:
        return max(0, int((headers or {}).get(name) or 0))
    except (TypeError, ValueError):
        return 0


def failed_before(headers: Mapping[str, Any] | None) -> int:
    """Attempts that raised, by our header."""
    return _count(headers, ATTEMPTS)


def returned(headers: Mapping[str, Any] | None) -> int:
    """Deliveries of this copy that came back without an ack (a quorum queue's ``x-delivery-count``)."""
    return _count(headers, "x-delivery-count")


def made(headers: Mapping[str, Any] | None) -> int:
    """Attempts so far, before the delivery that carries these headers."""
    return failed_before(headers) + returned(headers)


def used_up(policy: Policy, headers: Mapping[str, Any] | None) -> bool:
    """Whether this delivery is to be set aside before it runs: its attempts so far reach the policy's."""
    return made(headers) >= policy.attempts


def last_attempt(policy: Policy, attempt: int) -> bool:
    """Whether a failed ``attempt`` (1 for the first try) was the last one: set aside, not tried again."""
    return attempt >= policy.attempts


def now() -> str:
    """The time now, ISO 8601 UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shown(body: bytes, limit: int = BODY_SHOWN) -> str:
    """A body as a line shows it: its repr, cut after ``limit`` bytes."""
    return repr(body) if len(body) <= limit else repr(body[:limit]) + "..."


def describe(exc: BaseException, limit: int = ERROR_SHOWN) -> str:
    """An exception in one short line: ``ValueError: bad input``."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def task_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers the task was sent with: without ours and without the broker's."""
    return {k: v for k, v in (headers or {}).items() if k not in OURS and k not in BROKERS}


def copy(properties: pika.BasicProperties, headers: Mapping[str, Any] | None,
         expiration: str | None = None) -> pika.BasicProperties:
    """The task's properties as sent, persistent, with these headers (None if empty) and ``expiration``.
    Left out: an ``expiration`` of the task's own (a copy set aside must not vanish), and ``user_id`` (the
    broker refuses a message whose user_id is not the publishing connection's user)."""
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=dict(headers) if headers else None,
        delivery_mode=pika.DeliveryMode.Persistent,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        expiration=expiration,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        type=properties.type,
        app_id=properties.app_id,
        cluster_id=properties.cluster_id,
    )


def failed_copy(properties: pika.BasicProperties, attempts: int, error: str, when: str,
                expiration: str | None = None) -> pika.BasicProperties:
    """A copy of a task that failed, for ``<queue>.retry`` (with ``expiration``) or ``<queue>.failed``."""
    headers = task_headers(properties.headers)
    headers.update({ATTEMPTS: attempts, ERROR: error, FAILED_AT: when})
    return copy(properties, headers, expiration)


def retry_copy(properties: pika.BasicProperties, attempts: int, error: str, when: str,
               delay: float) -> pika.BasicProperties:
    """A copy for ``<queue>.retry``: it expires after ``delay`` and goes back to the queue then."""
    return failed_copy(properties, attempts, error, when, expiration=str(int(delay * 1000)))


def requeued_copy(properties: pika.BasicProperties) -> pika.BasicProperties:
    """A task sent back from ``<queue>.failed``: as it was sent, its attempts counted from 0 again."""
    return copy(properties, task_headers(properties.headers))


def retry_arguments(queue: str, queue_type: str) -> dict[str, Any]:
    """``<queue>.retry``: what expires there goes back to ``queue``. A quorum one dead-letters at least once
    (the broker keeps the message until ``queue`` has taken it), which needs ``x-overflow: reject-publish``."""
    arguments: dict[str, Any] = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}
    if queue_type == "quorum":
        arguments.update({"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
                          "x-overflow": "reject-publish"})
    return arguments


def failed_arguments(queue_type: str, broker_major: int) -> dict[str, Any] | None:
    """``<queue>.failed``: of the task queue's type. A quorum one on RabbitMQ 4 has no delivery limit
    (``x-delivery-limit: -1``), so that listing it again and again never lets the broker drop a task; on
    RabbitMQ 3 quorum queues have no limit unless one is set, and a negative one would mean 0 there."""
    if queue_type != "quorum":
        return None
    if broker_major >= 4:
        return {"x-queue-type": "quorum", "x-delivery-limit": -1}
    return {"x-queue-type": "quorum"}


def major(version: object) -> int:
    """The major version from a broker's ``version`` server property (b'3.10.8', '4.3.6'); 0 if unknown."""
    text = version.decode(errors="replace") if isinstance(version, bytes) else str(version or "")
    head = text.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


# the lines a worker writes (on stderr, as warnings)

def retried_line(body: bytes, error: str, attempt: int, policy: Policy) -> str:
    return (f"warning: the task {shown(body)} failed ({error}); attempt {attempt} of {policy.attempts}, "
            f"tried again in {policy.delay:g} s")


def set_aside_line(body: bytes, error: str, attempt: int, queue: str) -> str:
    return (f"warning: the task {shown(body)} failed ({error}); set aside in {failed_queue(queue)!r} after "
            f"{attempt} attempt{'s' * (attempt != 1)}")


def lost_line(body: bytes, returns: int, attempts: int, queue: str) -> str:
    return (f"warning: the task {shown(body)} was {lost_error(returns)}; set aside in {failed_queue(queue)!r} "
            f"after {attempts} attempt{'s' * (attempts != 1)}, before it runs again")


def lost_error(returns: int) -> str:
    """The error recorded for a task whose deliveries came back without an ack (quorum queues count them)."""
    return (f"delivered {returns} time{'s' * (returns != 1)} without an ack (its worker's process ended, or "
            "lost its connection, during the task)")


def taken_back_line(body: bytes, error: str) -> str:
    """A task that failed after the broker had taken it back (its channel closed, or its consumer cancelled:
    the consumer timeout, a deleted queue): no copy is stored."""
    return (f"warning: the task {shown(body)} failed ({error}) after the broker had taken it back (a "
            "consumer_timeout, or a deleted queue); no copy stored")


def acked_line(body: bytes, error: str) -> str:
    return (f"warning: the task {shown(body)} failed ({error}) after it was acknowledged or handed back; "
            "it is not tried again")
