"""RabbitMQ nodes as Docker containers: the second way `harness.brokers.Node` runs a node.

A node is a container of RABBITMQ_IMAGE (the official image's layout: /etc/rabbitmq/conf.d/, data in
/var/lib/rabbitmq, `docker-entrypoint.sh rabbitmq-server`), with a host name of its own (its node name is
rabbit@HOST), its AMQP port published on 127.0.0.1 (and a TLS port, if its configuration has one, on
127.0.0.1 and 127.0.0.2), its data in the container's own anonymous volume (kept from one start to the
next; removed with the container). The nodes of a cluster share an internal network of the cluster's own,
by which they find each other by host name; clients reach each node through Docker's default bridge, where
its ports are published, so that a node taken off the cluster's network still answers its clients.

The faults: kill() is `docker kill` (SIGKILL); frozen() is `docker pause` (the cgroup freezer: the kernel
still takes connections and data, nothing answers); cut_off() drops the packets of the published AMQP port
on this machine's loopback, as for a process node (iptables; when not root, from a helper container in the
machine's network namespace); partitioned() disconnects the node from the cluster's network and connects it
again after.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from harness import erl, reaper

OFFICIAL_IMAGE = "rabbitmq:4.3-management"
LOOK_ALIKE = "workqueues-local/rabbitmq:4.3-management"  # docker/images.sh builds it where no registry answers
LABEL = "workqueue.node"  # on every container and network made here, to find leftovers: docker ps -a --filter label=…
STAGE = "/etc/workqueue"  # where a node's own files appear in its container

# Writes the cluster's cookie before the image's entrypoint starts the broker (as the rabbitmq user).
START = ('umask 077; c=/var/lib/rabbitmq/.erlang.cookie; [ -s "$c" ] || printf %s "$WORKQUEUE_COOKIE" > "$c"; '
         'chown rabbitmq:rabbitmq "$c" 2>/dev/null || true; exec docker-entrypoint.sh rabbitmq-server')


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    """A docker command, in a session of its own: a Ctrl+C in the terminal reaches Python, which cleans up,
    never a docker command halfway."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, start_new_session=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:2])} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def docker_answers() -> bool:
    """Whether a Docker engine answers this user (the docker CLI installed, the engine running, its socket ours)."""
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def image() -> str:
    """RABBITMQ_IMAGE, else docker/images.sh's look-alike where it was built, else the official image."""
    if os.environ.get("RABBITMQ_IMAGE"):
        return os.environ["RABBITMQ_IMAGE"]
    if subprocess.run(["docker", "image", "inspect", LOOK_ALIKE], capture_output=True, timeout=30).returncode == 0:
        return LOOK_ALIKE
    return OFFICIAL_IMAGE


def iptables(*args: str, check: bool = True, tool: str = "iptables") -> str:
    """iptables on this machine: directly as root; else this machine's own iptables, run from a helper container
    in the machine's network namespace with NET_ADMIN, chrooted into its root mounted read-only (what a member
    of the docker group may do)."""
    if os.geteuid() == 0:
        command = [tool, *args]
    else:
        command = ["docker", "run", "--rm", "--net", "host", "--cap-add", "NET_ADMIN", "-v", "/:/host:ro",
                   "--entrypoint", "chroot", image(), "/host", tool, *args]
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=60).stdout


def network_name(name: str) -> str:
    return f"wq-{name}-{uuid.uuid4().hex[:6]}"


def new_network(network: str) -> None:
    """An internal network (no way out, no gateway) for a cluster's nodes."""
    reaper.watch("network", network)
    docker("network", "create", "--internal", "--label", LABEL, network)


def remove_network(network: str) -> None:
    docker("network", "rm", network, check=False)
    reaper.forget(f"network {network}")


def host_name(name: str) -> str:
    """A host name of the node's own: unique among this engine's containers, whoever started them."""
    return f"{name}-{uuid.uuid4().hex[:6]}"


ABSOLUTE = re.compile(r"^(?P<key>[\w.-]+)\s*=\s*(?P<path>/\S+)\s*$")
TLS_PORT = re.compile(r"^listeners\.ssl\.[\w.]+\s*=\s*(?P<port>\d+)\s*$")


class ContainerRunner:
    """One node as a container; its files (rabbitmq.conf, enabled_plugins, advanced.config, and any file
    rabbitmq.conf names by its absolute path, such as certificates) copied into ``folder/container`` and
    mounted read-only at /etc/workqueue."""

    def __init__(self, folder: Path, host: str, port: int, cookie: str, network: str | None) -> None:
        self.folder = folder
        self.host = host
        self.name = f"wq-{host}"  # the container's name
        self.port = port
        self.cookie = cookie
        self.network = network
        self.created = False
        self.rules: list[list[str]] = []

    def _stage(self) -> tuple[Path, list[int]]:
        """The node's files, ready to mount; the TLS ports its configuration names."""
        stage = self.folder / "container"
        shutil.rmtree(stage, ignore_errors=True)
        (stage / "files").mkdir(parents=True)
        lines: list[str] = []
        tls_ports: list[int] = []
        for line in (self.folder / "rabbitmq.conf").read_text().splitlines():
            found = ABSOLUTE.match(line)
            if found and Path(found["path"]).is_file():  # a file the node reads: a copy of it, in the container
                copy = stage / "files" / f"{len(lines)}-{Path(found['path']).name}"
                shutil.copyfile(found["path"], copy)
                line = f"{found['key']} = {STAGE}/files/{copy.name}"
            tls = TLS_PORT.match(line)
            if tls:
                tls_ports.append(int(tls["port"]))
            lines.append(line)
        (stage / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        shutil.copyfile(self.folder / "enabled_plugins", stage / "enabled_plugins")
        if (self.folder / "advanced.config").exists():
            shutil.copyfile(self.folder / "advanced.config", stage / "advanced.config")
        for path in [stage, *stage.rglob("*")]:  # readable by the container's rabbitmq user
            path.chmod(0o755 if path.is_dir() else 0o644)
        return stage, tls_ports

    def _create(self) -> None:
        stage, tls_ports = self._stage()
        ports = ["-p", f"127.0.0.1:{self.port}:5672"]
        for port in tls_ports:  # 127.0.0.2 too: a client may ask for the node by another address
            ports += ["-p", f"127.0.0.1:{port}:{port}", "-p", f"127.0.0.2:{port}:{port}"]
        env = ["-e", f"WORKQUEUE_COOKIE={self.cookie}", "-e", f"RABBITMQ_ENABLED_PLUGINS_FILE={STAGE}/enabled_plugins"]
        if (stage / "advanced.config").exists():
            env += ["-e", f"RABBITMQ_ADVANCED_CONFIG_FILE={STAGE}/advanced.config"]
        # The cluster's network first: the container then resolves its peers' names by Docker's DNS; the
        # default bridge after, which has the gateway, so that the ports are published through it.
        network = ["--network", self.network, "--network-alias", self.host] if self.network else []
        self.created = True  # from here on, close() removes it, whatever happens
        self.watched = reaper.watch("container", self.name)  # and if this process is killed, the reaper does
        docker("create", "--name", self.name, "--hostname", self.host, "--label", LABEL, *network, *ports, *env,
               "-v", f"{stage}:{STAGE}:ro",
               "-v", f"{stage / 'rabbitmq.conf'}:/etc/rabbitmq/conf.d/90-workqueue.conf:ro",
               "--user", "0", "--entrypoint", "sh", image(), "-c", START)
        if self.network:
            docker("network", "connect", "bridge", self.name)

    def start(self) -> None:
        if not self.created:
            self._create()
        docker("start", self.name)

    def running(self) -> bool:
        if not self.created:
            return False
        out = docker("inspect", "-f", "{{.State.Running}} {{.State.Paused}}", self.name, check=False)
        return out.split()[:1] == ["true"]

    def ctl(self, *args: str) -> str:
        """rabbitmqctl ARGS in the container: through erl_call there where harness.erl knows the command."""
        out = erl.in_container(["docker", "exec", "-i", "-u", "rabbitmq", self.name], f"rabbit@{self.host}",
                               self.cookie, args)
        if out is not None:
            return out
        return subprocess.run(["docker", "exec", "-u", "rabbitmq", "-e", "HOME=/var/lib/rabbitmq", self.name,
                               "rabbitmqctl", *args], capture_output=True, text=True, check=True, timeout=120).stdout

    def kill(self) -> None:
        docker("kill", self.name, check=False)  # SIGKILL
        docker("wait", self.name, check=False, timeout=60)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        docker("pause", self.name)
        try:
            yield
        finally:
            docker("unpause", self.name, check=False)

    @contextlib.contextmanager
    def cut_off(self) -> Iterator[None]:
        rules = [["INPUT", "-p", "tcp", way, str(self.port), "-j", "DROP", "-m", "comment", "--comment", self.name]
                 for way in ("--dport", "--sport")]
        reaper.watch("rules", self.name)
        try:
            for rule in rules:
                iptables("-I", *rule)
                self.rules.append(rule)
            yield
        finally:
            self._restore()

    def _restore(self) -> None:
        while self.rules:
            iptables("-D", *self.rules.pop(), check=False)

    @contextlib.contextmanager
    def partitioned(self) -> Iterator[None]:
        assert self.network, "a node partitioned is one of a cluster"
        docker("network", "disconnect", self.network, self.name)
        try:
            yield
        finally:
            docker("network", "connect", "--alias", self.host, self.network, self.name, check=False)

    def hint(self) -> str:
        """Where to look when the node did not start."""
        return f"see `docker logs {self.name}`"

    def kill_command(self) -> str:
        return f"docker kill {self.name}"

    def close(self) -> None:
        """Remove the container and its volume, by name: even one whose `docker create` was interrupted."""
        self._restore()
        docker("unpause", self.name, check=False)
        docker("rm", "-f", "-v", self.name, check=False)
        if self.created:
            reaper.forget(self.watched)
        self.created = False
