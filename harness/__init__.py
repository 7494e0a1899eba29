"""The test bed: RabbitMQ brokers of our own and their faults, the scripts as child processes, queues.

- ``harness.brokers``: a node or a cluster, as processes of rabbitmq-server or as containers; kill, freeze,
  cut off, partition.
- ``harness.containers``: the container side of a node, and iptables as a member of the docker group.
- ``harness.faults``: ports that do not answer.
- ``harness.children``: a script as a child process, its lines timed as they come.
- ``harness.queues``: a queue's counts, draining, declaring and deleting, each on a connection of its own.

Used by the demos (``demo/``), the tests and the benchmark; never by the scripts themselves.
"""
