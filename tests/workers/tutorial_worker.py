#!/usr/bin/env python
# The tutorial's worker.py in its pika 1.x form (as on rabbitmq.com), with the broker from $AMQP_URL and the
# queue from $QUEUE, its type from $QUEUE_TYPE (the tutorial declares task_queue as quorum today).
import os
import time

import pika

QUEUE = os.environ.get("QUEUE", "task_queue")
ARGS = {"x-queue-type": "quorum"} if os.environ.get("QUEUE_TYPE") == "quorum" else None

connection = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
channel = connection.channel()

channel.queue_declare(queue=QUEUE, durable=True, arguments=ARGS)
print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)


def callback(ch, method, properties, body):
    print(f" [x] Received {body!r}", flush=True)
    time.sleep(body.count(b"."))
    print(" [x] Done", flush=True)
    ch.basic_ack(delivery_tag=method.delivery_tag)


channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue=QUEUE, on_message_callback=callback)

channel.start_consuming()
