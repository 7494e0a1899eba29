#!/usr/bin/env python
"""Wait until the work queue has enough consumers (the demo's producer starts after its workers)."""

import time

import pika.exceptions as px

from workqueue import broker, cli, nodes


def consumers(brokers: nodes.Nodes, queue: str) -> int:
    """The queue's consumers, as the first node that answers counts them."""
    connection = brokers.connect(start=0)  # any node of a cluster will do
    try:
        count: int = connection.channel().queue_declare(queue=queue, passive=True).method.consumer_count
        return count
    finally:
        if connection.is_open:
            connection.close()


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--workers", type=int, default=2, help="consumers to wait for")
    parser.add_argument("--timeout", type=cli.seconds, default=120, help="seconds to wait at most")
    args = cli.parse(parser)
    brokers = nodes.Nodes(args.urls)
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            if consumers(brokers, args.queue) >= args.workers:
                return
        except nodes.NoneAnswered:
            if time.monotonic() > deadline:
                raise
        except (px.AMQPError, OSError) as exc:  # the queue is not there yet: the workers declare it
            if time.monotonic() > deadline:
                raise cli.Failure(broker.explain(exc, brokers.in_use, args.queue)) from None
        if time.monotonic() > deadline:
            raise cli.Failure(f"fewer than {args.workers} workers consume from {args.queue!r} after {args.timeout:g} s")
        time.sleep(0.5)


if __name__ == "__main__":
    cli.run(main)
