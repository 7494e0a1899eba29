#!/usr/bin/env python
# The plain tutorial's new_task.py publishing one message per line of stdin over one connection, with
# no confirms (as the tutorial publishes): the fastest baseline, but "Sent" does not mean stored.
# With CONFIRM=1, channel.confirm_delivery() first: every publish then waits for its confirm.
import os
import sys

import pika

QUEUE = os.environ.get("QUEUE", "task_queue")

connection = pika.BlockingConnection(pika.ConnectionParameters(host='localhost'))
channel = connection.channel()
if os.environ.get("CONFIRM") == "1":
    channel.confirm_delivery()

channel.queue_declare(queue=QUEUE, durable=True)

for line in sys.stdin:
    message = line.rstrip("\n")
    channel.basic_publish(exchange='',
                          routing_key=QUEUE,
                          body=message,
                          properties=pika.BasicProperties(
                             delivery_mode = 2, # make message persistent
                          ))
    print(" [x] Sent %r" % message)
connection.close()
