#!/usr/bin/env python
"""Send a task to the work queue: RabbitMQ tutorial two, "Work Queues". Each '.' in it is a second of work."""

import sys

import pika
from pika.channel import Channel

from workqueue import cli, publisher


def main() -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("words", nargs="*", help="the task, words joined by spaces (default: Hello World!)")
    parser.add_argument("--stdin", action="store_true",
                        help="send one task per line of standard input, over one connection")
    args = cli.parse(parser)

    def declare(channel: Channel) -> None:
        channel.queue_declare(queue=args.queue, durable=True, arguments=cli.queue_arguments(args.queue_type))

    def send(channel: Channel, message: str) -> None:
        channel.basic_publish(exchange="",
                              routing_key=args.queue,
                              body=message,
                              properties=pika.BasicProperties(
                                  delivery_mode=pika.DeliveryMode.Persistent,  # make message persistent
                              ),
                              mandatory=True)  # an error, not a silent drop, if no queue takes it

    def sent(message: str) -> None:  # called once the broker has confirmed the message
        print(f" [x] Sent {message!r}")

    message = " ".join(args.words) or "Hello World!"
    messages = (line.rstrip("\r\n") for line in sys.stdin) if args.stdin else [message]
    publisher.publish(args.url, declare, send, messages, sent)


if __name__ == "__main__":
    cli.run(main)
