"""List the tasks set aside in QUEUE.failed (what they were, how many attempts, the last error, when) without
taking them; with --requeue, send them back to QUEUE to be tried again, their attempts counted from 0.

    python -m workqueue.failed [--queue QUEUE] [--queue-type classic|quorum] [--url URL] [--requeue]

Each task sent back is confirmed by the broker on QUEUE before it is acked on QUEUE.failed: interrupted at any
moment, nothing is lost (a task may be in both queues at worst).
"""

from __future__ import annotations

import argparse
from typing import Any

import pika
import pika.exceptions as px
from pika.adapters.blocking_connection import BlockingChannel

from workqueue import attempts, broker, cli, nodes, setaside
from workqueue.report import Failure


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--requeue", action="store_true",
                        help="send the failed tasks back to QUEUE, each confirmed there before it leaves QUEUE.failed")
    args = cli.parse(parser)
    brokers = nodes.Nodes(args.urls)
    connection = brokers.connect(0)
    try:
        if args.requeue:
            requeue(connection, args)
        else:
            listing(connection, args)
    except setaside.Unconfirmed as exc:
        raise Failure(f"{exc}; the task is still in {attempts.failed_queue(args.queue)!r}: run this again") from None
    except (px.AMQPError, OSError) as exc:
        raise Failure(broker.explain(exc, brokers.in_use, attempts.failed_queue(args.queue))) from None
    finally:
        if connection.is_open:
            connection.close()


def count(connection: pika.BlockingConnection, args: argparse.Namespace) -> tuple[BlockingChannel | None, int]:
    """A channel and the number of tasks in QUEUE.failed (a passive declare: nothing is created); no channel if
    there is no such queue (no task has failed yet)."""
    channel = connection.channel()
    try:
        return channel, int(channel.queue_declare(attempts.failed_queue(args.queue), passive=True).method.message_count)
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return None, 0
        raise


def line(body: bytes, properties: Any) -> str:
    """One failed task: ``b'body' (3 attempts; failed at 2026-12-02T16:40:05Z: ValueError: bad input)``."""
    headers = properties.headers or {}
    tried = attempts.failed_before(headers)
    when = headers.get(attempts.FAILED_AT)
    error = headers.get(attempts.ERROR)
    when, error = (x.decode(errors="replace") if isinstance(x, bytes) else x for x in (when, error))
    return (f"{attempts.shown(body, 200)} ({tried} attempt{'s' * (tried != 1)}; "
            f"failed at {when or '?'}: {error or '?'})")


def listing(connection: pika.BlockingConnection, args: argparse.Namespace) -> None:
    """Every task in QUEUE.failed, taken without an ack and handed back together with a nack(requeue=True): no
    copy is made, and no return that a quorum queue counts as a failed delivery (RabbitMQ 4.3 counts rejects
    and lost consumers, not nacks; on 4.0 to 4.2 every return counts, and QUEUE.failed has no delivery limit)."""
    name = attempts.failed_queue(args.queue)
    channel, total = count(connection, args)
    if channel is None or total == 0:
        print(f"no failed task in {name!r}" + ("" if channel else " (there is no such queue: none has failed yet)"))
        return
    seen = 0
    try:
        while seen < total:
            method, properties, body = channel.basic_get(name, auto_ack=False)
            if method is None:
                break
            seen += 1
            print(line(body, properties))
    finally:
        if channel.is_open:
            channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
            channel.close()
    print(f"{seen} failed task{'s' * (seen != 1)} in {name!r}; `python -m workqueue.failed --queue {args.queue}"
          f"{' --queue-type quorum' if args.queue_type == 'quorum' else ''} --requeue` sends "
          f"{'them' if seen != 1 else 'it'} back to {args.queue!r}")


def requeue(connection: pika.BlockingConnection, args: argparse.Namespace) -> None:
    """As many tasks as QUEUE.failed held at the start, each published to QUEUE with confirms, then acked."""
    name = attempts.failed_queue(args.queue)
    channel, total = count(connection, args)
    if channel is None or total == 0:
        print(f"no failed task in {name!r} to send back")
        return
    target = connection.channel()
    target.queue_declare(queue=args.queue, durable=True, arguments=cli.queue_arguments(args.queue_type))
    confirmed = setaside.Confirmed(connection, target)
    sent = 0
    while sent < total:
        method, properties, body = channel.basic_get(name, auto_ack=False)
        if method is None:
            break
        confirmed.publish(args.queue, body, attempts.requeued_copy(properties))
        channel.basic_ack(method.delivery_tag)
        sent += 1
        print(f" [x] Sent back {attempts.shown(body, 200)}")
    print(f"{sent} task{'s' * (sent != 1)} sent back to {args.queue!r}")


if __name__ == "__main__":
    cli.run(main)
