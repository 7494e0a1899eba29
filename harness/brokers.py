"""RabbitMQ nodes of our own: one node or a cluster, as processes or as containers, and their faults.

Each node is a RabbitMQ server of its own: a process of Debian's or Ubuntu's rabbitmq-server, run as root,
with its data, logs and Erlang cookie in a temporary folder; or, where that cannot run and Docker answers, a
container of RABBITMQ_IMAGE on a network of the cluster's own (harness/containers.py). WORKQUEUE_NODES=process
or =container chooses. Each has its own AMQP port on 127.0.0.1, and a cluster's nodes have classic_config peer
discovery naming the others, so that they form one cluster as they start. The demos, the tests and the
benchmark start their nodes with this code.
"""


from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from harness import containers, erl, reaper

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
TAG = f"workqueue-{os.getpid()}"  # the comment on the iptables rules this process adds


def free_port() -> int:
    """A port nothing listens on, below the kernel's range of ephemeral ports: a port from that range, free
    now, may be any client connection's own port a moment later, and a node started on it then fails to
    listen (seen under load: a cluster's node that never started)."""
    low = ephemeral_ports()[0]
    for _ in range(200):
        port = random.randrange(10_000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            if not answers(port):
                return port
    raise RuntimeError(f"no free port found between 10000 and {low}")


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of ports for client connections (Linux; elsewhere the usual one)."""
    try:
        low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return (low, high) if low > 10_100 else (49152, 65535)

def answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class NodesUnavailable(RuntimeError):
    """Neither way to run a node is there: no rabbitmq-server this user may run, no Docker engine."""


@functools.cache
def node_kind() -> str:
    """How this machine runs private nodes: "process" (rabbitmq-server, installed, run as root) or "container"
    (a Docker engine that answers); WORKQUEUE_NODES=process or =container chooses."""
    forced = os.environ.get("WORKQUEUE_NODES", "").strip()
    installed = (RABBIT_BIN / "rabbitmq-server").exists()
    if forced == "process" or (not forced and installed and os.geteuid() == 0):
        if not installed:
            raise NodesUnavailable(f"WORKQUEUE_NODES=process, but {RABBIT_BIN / 'rabbitmq-server'} is missing: "
                                   "install RabbitMQ (`sudo apt-get install rabbitmq-server`), "
                                   "or set WORKQUEUE_NODES=container")
        return "process"
    if forced not in ("", "container"):
        raise NodesUnavailable(f"WORKQUEUE_NODES={forced!r}: expected process or container")
    if containers.docker_answers():
        return "container"
    if forced == "container":
        raise NodesUnavailable("WORKQUEUE_NODES=container, but no Docker engine answers: start Docker (or Docker "
                               "Desktop) and make sure this user may use it (the docker group)")
    if installed:
        return "process"  # not root: it may still run, with the faults that need root failing
    raise NodesUnavailable("no way to start a RabbitMQ node here: install Docker (and be in the docker group) or "
                           "RabbitMQ (`sudo apt-get install rabbitmq-server`, then run as root)")


class ProcessRunner:
    """One node as a process of rabbitmq-server, with its own RABBITMQ_* variables and HOME in its folder."""

    def __init__(self, folder: Path, nodename: str, port: int, cookie: str | None, group: int | None) -> None:
        self.dir = folder
        self.port = port
        self.nodename = nodename
        self.cookie = cookie or uuid.uuid4().hex  # known, for erl_call (harness.erl)
        (self.dir / ".erlang.cookie").write_text(self.cookie)
        (self.dir / ".erlang.cookie").chmod(0o400)
        self.env = dict(
            os.environ,
            HOME=str(self.dir),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_PID_FILE=str(self.dir / "pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq"),
        )
        if (self.dir / "advanced.config").exists():
            self.env["RABBITMQ_ADVANCED_CONFIG_FILE"] = str(self.dir / "advanced.config")
        self.group = group
        self.proc: subprocess.Popen[bytes] | None = None
        self.watched = ""  # the reaper's token for its process group

    def start(self) -> None:
        marked = ["setpriv", "--groups", f"0,{self.group}"] if self.group else []
        self.proc = subprocess.Popen([*marked, str(RABBIT_BIN / "rabbitmq-server")], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.watched = reaper.watch("group", self.proc.pid)  # killed even if this process is (see harness.reaper)

    def ctl(self, *args: str) -> str:
        """rabbitmqctl ARGS: through erl_call where harness.erl knows the command, else rabbitmqctl itself."""
        out = erl.local(self.nodename, self.cookie, args)
        if out is not None:
            return out
        return subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.nodename, *args], capture_output=True,
                              text=True, env=self.env, check=True, timeout=120).stdout

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        os.kill(self.pid(), signal.SIGKILL)
        if self.proc:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
            self._end()

    def _end(self) -> None:
        """Kill the node's process group, whatever it is doing (frozen: thawed first)."""
        if self.proc:
            for signum in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signum)
            self.proc.wait(30)
            reaper.forget(self.watched)
            deadline = time.monotonic() + 30  # the Erlang VM's sockets close as it exits, a moment later
            while answers(self.port) and time.monotonic() < deadline:
                time.sleep(0.05)

    def pid(self) -> int:
        """The broker's own process (the Erlang VM), from its pid file."""
        return int((self.dir / "pid").read_text().strip())

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        pid = self.pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def cut_off(self) -> Iterator[None]:
        # Both families: where `localhost` is also ::1 (IPv6 on), clients reach the node over either.
        rules = [[tool, "INPUT", "-p", "tcp", way, str(self.port), "-j", "DROP", "-m", "comment", "--comment", TAG]
                 for tool in ("iptables", "ip6tables") for way in ("--dport", "--sport")]
        added = []
        reaper.watch("rules", TAG)
        try:
            for tool, *rule in rules:
                subprocess.run([tool, "-I", *rule], check=True, timeout=30)
                added.append([tool, *rule])
            yield
        finally:
            for tool, *rule in added:
                subprocess.run([tool, "-D", *rule], check=False, timeout=30)

    @contextlib.contextmanager
    def partitioned(self) -> Iterator[None]:
        assert self.group, "a node partitioned needs a group of its own"
        rule = ["OUTPUT", "-o", "lo", "-p", "tcp", "-m", "owner", "--gid-owner", str(self.group), "--suppl-groups",
                "-m", "multiport", "!", "--sports", f"{self.port},4369", "-j", "DROP",
                "-m", "comment", "--comment", TAG]
        reaper.watch("rules", TAG)
        subprocess.run(["iptables", "-I", *rule], check=True, timeout=30)
        try:
            yield
        finally:
            subprocess.run(["iptables", "-D", *rule], check=False, timeout=30)

    def hint(self) -> str:
        return f"see {self.dir / 'log'}"

    def kill_command(self) -> str:
        return f"kill -9 $(cat {self.dir / 'pid'})"

    def close(self) -> None:
        # Killed, not stopped: its data goes with its folder, and `rabbitmqctl stop` would start an Erlang VM.
        self._end()
        self.proc = None


class Node:
    """A RabbitMQ node of its own, sharing nothing with the machine's broker: a process of rabbitmq-server with
    its own RABBITMQ_* variables and HOME in a temporary folder, or a container of RABBITMQ_IMAGE
    (harness/containers.py), as ``node_kind()`` chose. Its methods are the same for both."""

    def __init__(self, name: str = "wqnode", config: str = "", plugins: tuple[str, ...] = (),
                 cookie: str | None = None, port: int | None = None, group: int | None = None,
                 advanced: str = "", network: str | None = None, kind: str | None = None) -> None:
        """``config``: lines of rabbitmq.conf; ``plugins``: plugins to enable; ``cookie``: the Erlang
        cookie (the nodes of one cluster share one); ``group``: a supplementary group id of the node's own,
        by which a process node's ``partitioned()`` tells its packets (needs root); ``advanced``: the
        advanced.config; ``network``: a container node's cluster network (``Cluster`` makes it)."""
        self.kind = kind or node_kind()
        self.dir = Path(tempfile.mkdtemp(prefix=f"wq-{name}-"))  # the node's files, and those a test writes
        self.watched = reaper.watch("dir", self.dir)
        self.port = port or free_port()
        (self.dir / "enabled_plugins").write_text(f"[{','.join(plugins)}].")
        self.configure(config)
        if advanced:
            (self.dir / "advanced.config").write_text(advanced)
        self.runner: ProcessRunner | containers.ContainerRunner
        if self.kind == "container":
            host = containers.host_name(name)
            self.nodename = f"rabbit@{host}"
            self.runner = containers.ContainerRunner(self.dir, host, self.port, cookie or uuid.uuid4().hex, network)
        else:
            self.nodename = f"{name}{os.getpid()}@localhost"
            self.runner = ProcessRunner(self.dir, self.nodename, self.port, cookie, group)
        self.url = f"amqp://guest:guest@localhost:{self.port}/%2F"
        self.disturbed = True  # since its cluster last saw it running: started, or a fault (see Cluster.wait_whole)

    def configure(self, config: str) -> None:
        """The node's rabbitmq.conf, before it starts."""
        (self.dir / "rabbitmq.conf").write_text(config)

    def start(self, wait: bool = True) -> None:
        self.runner.start()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 90) -> None:
        """Until the node takes AMQP connections."""
        import pika  # only here: `python -m demo.cluster` needs no more than the tests do
        import pika.exceptions

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pika.BlockingConnection(pika.URLParameters(self.url)).close()
                return
            except pika.exceptions.AMQPError:
                time.sleep(0.3)
        raise RuntimeError(f"the RabbitMQ node on port {self.port} did not start; {self.runner.hint()}")

    def ctl(self, *args: str) -> str:
        """rabbitmqctl for this node."""
        if args[:1] and args[0] in ("stop_app", "start_app", "stop", "reset"):
            self.disturbed = True
        return self.runner.ctl(*args)

    def running(self) -> bool:
        return self.runner.running()

    def persist(self) -> None:
        """Have the node write what it knows of its queues to disk now, as it does by itself a moment later.
        A durable queue declared a moment before a SIGKILL can be lost with it (RabbitMQ 3.10 and 4.0 keep
        Mnesia's log in memory for a while: 404 after the restart); a test of what a crash does to messages
        makes its queue, then calls this. Where Mnesia does not run (Khepri, RabbitMQ 4.3) it does nothing:
        Khepri writes through its Raft log."""
        self.ctl("eval", "catch mnesia:sync_log().")

    def kill(self) -> None:
        """SIGKILL the node, as a crash would; returns once its port is closed."""
        self.disturbed = True
        self.runner.kill()
        deadline = time.monotonic() + 30
        while answers(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def frozen(self) -> contextlib.AbstractContextManager[None]:
        """The node frozen for the block (a process: SIGSTOP; a container: docker pause), as a paused VM or a
        stuck host: the kernel still takes connections and data for it, and nothing answers. Thawed after,
        whatever happens."""
        self.disturbed = True
        return self.runner.frozen()

    def cut_off(self) -> contextlib.AbstractContextManager[None]:
        """The node's AMQP port cut off for the block, as by a firewall that drops packets: every packet
        to and from it vanishes, nothing resets; its cluster links stay. Restored after (iptables on this
        machine's loopback: root, or for a container node a member of the docker group)."""
        self.disturbed = True
        return self.runner.cut_off()

    def partitioned(self) -> contextlib.AbstractContextManager[None]:
        """The node cut off from its cluster for the block while its clients still reach it, as by a network
        split between hosts: every packet between this node and its peers vanishes. Restored after; the
        cluster heals as its partition_handling says. A process node: every packet it sends vanishes but those
        from its AMQP port (and epmd), by iptables on a ``group`` of its own (root); a container node: taken
        off the cluster's network, its clients still reach it by its published port."""
        self.disturbed = True
        return self.runner.partitioned()

    def kill_command(self) -> str:
        """What a user types in a shell to kill the node."""
        return self.runner.kill_command()

    def close(self) -> None:
        """Stop the node and remove it, its data and its folder (once: a second close does nothing)."""
        if self.dir.exists():
            self.runner.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            reaper.forget(self.watched)


class Cluster:
    """Nodes that form one RabbitMQ cluster: classic_config peer discovery, one Erlang cookie, distinct
    ports. A member SIGKILLed and started again rejoins by itself."""

    def __init__(self, size: int = 3, name: str = "wqc", config: str = "", port: int | None = None,
                 groups: int | None = None) -> None:
        """``port``: the first node's AMQP port, the next ones following; by default, free ones. ``groups``:
        the first node's group id, the next ones following (see ``Node.partitioned``); by default none."""
        kind = node_kind()
        self.network = containers.network_name(name) if kind == "container" else None  # the nodes' own, made by start()
        self.made: str | None = None
        cookie = uuid.uuid4().hex
        self.nodes = [Node(f"{name}{i}", cookie=cookie, port=port and port + i - 1,
                           group=groups and groups + i - 1, network=self.network, kind=kind)
                      for i in range(1, size + 1)]
        config += "cluster_formation.peer_discovery_backend = classic_config\n" + "".join(
            f"cluster_formation.classic_config.nodes.{i} = {node.nodename}\n" for i, node in enumerate(self.nodes, 1))
        for node in self.nodes:
            node.configure(config)
        self.urls = [node.url for node in self.nodes]

    def start(self, wait: bool = True) -> None:
        """Start every node, side by side: each waits for its peers while they form the cluster. ``wait``:
        return once the cluster is whole (else ``wait_whole()`` later)."""
        if self.network and not self.made:
            containers.new_network(self.network)
            self.made = self.network
        for node in self.nodes:
            node.start(wait=False)
        if wait:
            self.wait_whole(timeout=180)

    def live(self) -> Node:
        """The first node whose broker answers."""
        import pika.exceptions  # only here, as in Node.wait_ready

        from workqueue import nodes

        brokers = nodes.Nodes(self.urls)
        try:
            connection = brokers.connect(start=0, timeout=2)
        except nodes.NoneAnswered:
            raise RuntimeError("no node of the cluster is up") from None
        try:
            connection.close()
        except (pika.exceptions.AMQPError, OSError):
            pass  # it answered: enough
        return self.nodes[brokers.current]

    def members_running(self) -> set[str]:
        """The names of the nodes the cluster sees running."""
        out = self.live().ctl("eval", "rabbit_nodes:all_running().")
        return set(re.findall(r"[\w.-]+@[\w.-]+", out))

    def wait_whole(self, timeout: float = 120) -> None:
        """Start any member that is not running; return once every member runs and takes connections, and
        the cluster sees them all running (asked with rabbitmqctl only after a fault or a start: a node that
        answers and has had none since is still a member)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if not node.running():
                node.start(wait=False)
        for node in self.nodes:
            node.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
        if not any(node.disturbed for node in self.nodes):
            return
        while self.members_running() != {node.nodename for node in self.nodes}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not come whole: {self.members_running()}")
            time.sleep(0.5)
        for node in self.nodes:
            node.disturbed = False

    def node(self, nodename: str) -> Node:
        [found] = [node for node in self.nodes if node.nodename == nodename]
        return found

    def leader(self, queue: str) -> Node:
        """The node that leads a quorum queue now."""
        out = self.live().ctl("list_queues", "-q", "--no-table-headers", "name", "leader")
        for line in out.splitlines():
            name, _, leader = line.partition("\t")
            if name == queue:
                return self.node(leader.strip())
        raise RuntimeError(f"no queue {queue!r} in {out!r}")

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        if self.made:
            containers.remove_network(self.made)
            self.made = None
