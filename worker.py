#!/usr/bin/env python
"""Take tasks from the work queue one at a time: RabbitMQ tutorial two, "Work Queues"."""

import time

from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from workqueue import cli, consumer


def main() -> None:
    parser = cli.parser(__doc__, worker=True)  # with --attempts and --retry-delay for tasks that fail
    parser.add_argument("--prefetch", type=cli.prefetch_count, default=1,
                        help="unacknowledged tasks the broker may give this worker at once; "
                        "1 is fair dispatch, 0 means no limit (plain round robin)")
    parser.add_argument("--sleep", type=cli.seconds, metavar="SECONDS",
                        help="work this long on every task, whatever its dots "
                        "(the Japanese walkthrough's worker-2sec is --sleep 2)")
    parser.add_argument("--seconds-per-dot", type=cli.seconds, default=1.0, metavar="S",
                        help="seconds of work for each '.' in a task")
    args = cli.parse(parser)

    def declare(channel: BlockingChannel) -> None:  # on every (re)connection
        channel.queue_declare(queue=args.queue, durable=True, arguments=cli.queue_arguments(args.queue_type))
        print(" [*] Waiting for messages. To exit press CTRL+C")
        channel.basic_qos(prefetch_count=args.prefetch)

    def callback(ch: consumer.TaskChannel, method: Basic.Deliver, properties: BasicProperties,
                 body: bytes) -> None:  # runs on the main thread, as in the tutorial
        print(f" [x] Received {body!r}" + (" (redelivered)" if method.redelivered else ""))
        time.sleep(args.sleep if args.sleep is not None else body.count(b".") * args.seconds_per_dot)
        print(" [x] Done")
        ch.basic_ack(delivery_tag=method.delivery_tag)

    consumer.consume(args.urls, declare, args.queue, callback, cli.policy(args))


if __name__ == "__main__":
    cli.run(main)
