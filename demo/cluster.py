#!/usr/bin/env python
"""Run a RabbitMQ cluster of three nodes on this machine until Ctrl+C.

Each node is a RabbitMQ server of its own: a process of rabbitmq-server run as root, or, where that cannot
run and Docker answers, a container of RABBITMQ_IMAGE (WORKQUEUE_NODES=process or =container chooses), with
its own AMQP port on 127.0.0.1. The three form one cluster as they start (about 20 s). It prints the AMQP_URL
that names all three; Ctrl+C stops them and removes them, their data and their networks.
"""

from __future__ import annotations

import argparse
import signal
import time

from harness import containers
from harness.brokers import Cluster, NodesUnavailable, answers, node_kind

RESTART_AFTER = 10.0  # seconds a killed node stays down before it is started again

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default: 3)")
    parser.add_argument("--port", type=int, default=5681,
                        help="the first node's AMQP port; the others follow (default: 5681, as in docker-compose.yml)")
    args = parser.parse_args()

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # once: the nodes are being stopped
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl+C, even where a shell ignored it (`&`), and kill
        signal.signal(signum, interrupt)
    try:
        kind = node_kind()
    except NodesUnavailable as exc:
        raise SystemExit(f"error: {exc}") from None
    taken = [port for port in range(args.port, args.port + args.nodes) if answers(port)]
    if taken:
        raise SystemExit(f"error: port {taken[0]} is taken: give another first port with --port")
    cluster = Cluster(args.nodes, port=args.port)
    try:
        how = "containers of " + containers.image() if kind == "container" else "processes of rabbitmq-server"
        print(f"starting {args.nodes} nodes ({how}) ...", flush=True)
        cluster.start()
        print(f"a cluster of {args.nodes} nodes runs on ports {', '.join(str(n.port) for n in cluster.nodes)}:\n")
        print(f"  export AMQP_URL='{';'.join(cluster.urls)}'\n")
        print("then, in terminals with that AMQP_URL: python worker.py --queue-type quorum, and "
              "python new_task.py --queue-type quorum ...")
        for node in cluster.nodes:
            print(f"  kill node {node.nodename}: {node.kill_command()}")
        print(f"A node killed is started again after {RESTART_AFTER:g} s, and rejoins. Ctrl+C stops them all.",
              flush=True)
        down: dict[str, float] = {}
        while True:
            time.sleep(1)
            for node in cluster.nodes:
                if node.running():
                    continue
                if node.nodename not in down:
                    down[node.nodename] = time.monotonic()
                    print(f"node {node.nodename} (port {node.port}) is down", flush=True)
                elif time.monotonic() - down[node.nodename] >= RESTART_AFTER:
                    del down[node.nodename]
                    print(f"starting node {node.nodename} again", flush=True)
                    node.start(wait=False)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        raise SystemExit(f"error: {exc}") from None
    finally:
        print("stopping the nodes ...", flush=True)
        cluster.close()


if __name__ == "__main__":
    main()
