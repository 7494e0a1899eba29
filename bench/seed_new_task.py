#!/usr/bin/env python
# The plain tutorial's new_task.py as the tutorial has it (the queue name from $QUEUE, for the benchmark).
import os
import sys

import pika

QUEUE = os.environ.get("QUEUE", "task_queue")

connection = pika.BlockingConnection(pika.ConnectionParameters(host='localhost'))
channel = connection.channel()

channel.queue_declare(queue=QUEUE, durable=True)

message = ' '.join(sys.argv[1:]) or "Hello World!"
channel.basic_publish(exchange='',
                      routing_key=QUEUE,
                      body=message,
                      properties=pika.BasicProperties(
                         delivery_mode = 2, # make message persistent
                      ))
print(" [x] Sent %r" % message)
connection.close()
