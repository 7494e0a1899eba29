#!/usr/bin/env python
"""Wait until the work queue has enough consumers (the demo's producer starts after its workers)."""

import time

import pika
import pika.exceptions as px

from workqueue import broker, cli


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--workers", type=int, default=2, help="consumers to wait for")
    parser.add_argument("--timeout", type=cli.seconds, default=120, help="seconds to wait at most")
    args = cli.parse(parser)
    brokers = [broker.parameters(url) for url in args.urls]  # any node of a cluster will do
    deadline = time.monotonic() + args.timeout
    while True:
        for params in brokers:
            try:
                connection = pika.BlockingConnection(params)
                try:
                    declared = connection.channel().queue_declare(queue=args.queue, passive=True)
                    if declared.method.consumer_count >= args.workers:
                        return
                finally:
                    if connection.is_open:
                        connection.close()
                break
            except (px.AMQPError, OSError) as exc:
                if time.monotonic() > deadline and params is brokers[-1]:
                    raise cli.Failure(broker.explain(exc, params, args.queue)) from None
        if time.monotonic() > deadline:
            raise cli.Failure(f"fewer than {args.workers} workers consume from {args.queue!r} after {args.timeout:g} s")
        time.sleep(0.5)


if __name__ == "__main__":
    cli.run(main)
