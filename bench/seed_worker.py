#!/usr/bin/env python
# The plain tutorial's worker.py as the tutorial has it, with the one change pika 1.x needs
# (basic_consume takes queue= and on_message_callback=); the queue name and type from $QUEUE and
# $QUEUE_TYPE, for the benchmark. A baseline for bench/run.py.
import os
import time

import pika

QUEUE = os.environ.get("QUEUE", "task_queue")
ARGS = {"x-queue-type": "quorum"} if os.environ.get("QUEUE_TYPE") == "quorum" else None

connection = pika.BlockingConnection(pika.ConnectionParameters(host='localhost'))
channel = connection.channel()

channel.queue_declare(queue=QUEUE, durable=True, arguments=ARGS)
print(' [*] Waiting for messages. To exit press CTRL+C')

def callback(ch, method, properties, body):
    print(" [x] Received %r" % body)
    time.sleep(body.count(b'.'))
    print(" [x] Done")
    ch.basic_ack(delivery_tag = method.delivery_tag)

channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue=QUEUE, on_message_callback=callback)

channel.start_consuming()
