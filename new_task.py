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
    parser.add_argument("--confirm-timeout", type=cli.seconds, default=publisher.CONFIRM_TIMEOUT, metavar="S",
                        help="publish a message again if the broker has not confirmed it after this long")
    parser.add_argument("--retry-for", type=cli.seconds, default=publisher.RETRY_FOR, metavar="S",
                        help="keep trying (again, or through the next --url) this long without a confirm "
                        "before giving up; 0: give up at once")
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
    messages = sys.stdin if args.stdin else [message]  # --stdin: one message a line
    publisher.publish(args.urls, declare, send, messages, sent,
                      confirm_timeout=args.confirm_timeout, retry_for=args.retry_for)


if __name__ == "__main__":
    cli.run(main)
