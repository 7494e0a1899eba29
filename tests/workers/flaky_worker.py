#!/usr/bin/env python
"""A user's own worker: worker.py with other work in its task. A task whose body holds "fail" raises; one whose
body holds "die" ends this worker's process at once (as a crash would); any other is done. Each "." in a body
is --seconds-per-dot of work first (none by default)."""

import os
import time

from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from workqueue import cli, consumer


def main() -> None:
    parser = cli.parser(__doc__, worker=True)
    parser.add_argument("--seconds-per-dot", type=cli.seconds, default=0.0, metavar="S")
    args = cli.parse(parser)

    def declare(channel: BlockingChannel) -> None:
        channel.queue_declare(queue=args.queue, durable=True, arguments=cli.queue_arguments(args.queue_type))
        print(" [*] Waiting for messages. To exit press CTRL+C")
        channel.basic_qos(prefetch_count=1)

    def callback(ch: consumer.TaskChannel, method: Basic.Deliver, properties: BasicProperties,
                 body: bytes) -> None:
        print(f" [x] Received {body!r}")
        time.sleep(body.count(b".") * args.seconds_per_dot)
        if b"die" in body:
            os._exit(1)
        if b"fail" in body:
            raise ValueError(f"cannot do {body.decode()!r}")
        print(" [x] Done")
        ch.basic_ack(delivery_tag=method.delivery_tag)

    consumer.consume(args.urls, declare, args.queue, callback, cli.policy(args))


if __name__ == "__main__":
    cli.run(main)
