"""docker-compose.yml: validated offline, every command in it runs a script and options that exist, the
`cluster` profile's nodes and clients are wired to form one cluster; then both profiles run for real in
containers (a Docker engine and `docker compose`; the images from docker/images.sh) on host ports that
Docker picks, under a compose project of this session's own that `down -v` removes whatever happens."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
import yaml

from conftest import ROOT, wait_until
from harness import erl, reaper

COMPOSE = ROOT / "docker-compose.yml"
pytestmark = [pytest.mark.needs("compose"), pytest.mark.timeout(600)]  # images built, containers started
POLL = 1.0  # seconds between two looks at the project: each is a docker command


PORT_VARIABLES = ("RABBITMQ_PORT", "RABBITMQ_UI_PORT", "RABBIT1_PORT", "RABBIT2_PORT", "RABBIT3_PORT",
                  "RABBIT1_UI_PORT")
VARIABLES = ("RABBITMQ_IMAGE", "PYTHON_IMAGE", "RABBITMQ_BIND_ADDRESS", "CLUSTER_TASK_SECONDS", *PORT_VARIABLES)


def default_env() -> dict[str, str]:
    """This environment less the compose file's variables: what `docker compose` reads with none set."""
    return {k: v for k, v in os.environ.items() if k not in VARIABLES and not k.startswith("COMPOSE_")}


def compose(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["docker", "compose", "-f", str(COMPOSE), *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=timeout, env=default_env() if env is None else env)
    except FileNotFoundError:
        pytest.fail("docker is not installed (see .ci/run: Debian's docker.io, and the compose plugin)")


def resolved() -> dict:
    """The compose file as `docker compose config` reads it, every profile, no variable set."""
    result = compose("--profile", "demo", "--profile", "cluster", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("profile", [[], ["--profile", "demo"], ["--profile", "cluster"]],
                         ids=["broker", "demo", "cluster"])
def test_compose_file_validates(profile):
    result = compose(*profile, "config", "-q")
    assert result.returncode == 0, result.stderr


def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_broker_service_has_management_ports_healthcheck_and_a_named_volume():
    broker = services()["rabbitmq"]
    assert "management" in broker["image"]
    assert resolved()["services"]["rabbitmq"]["image"] == "rabbitmq:4.3-management"  # RABBITMQ_IMAGE unset
    assert {(5672, 5672), (15672, 15672)} <= set(published("rabbitmq"))  # today's ports, RABBITMQ_PORT unset
    assert broker["healthcheck"]["test"]
    volume = broker["volumes"][0].split(":")[0]
    assert volume in yaml.safe_load(COMPOSE.read_text())["volumes"]
    others = {name: s for name, s in services().items() if name != "rabbitmq"}
    # `docker compose up` starts the broker alone: everything else waits for `--profile demo` or `--profile cluster`
    assert all(s.get("profiles") in (["demo"], ["cluster"]) for s in others.values()), others


def test_demo_is_the_walkthroughs_experiment():
    demo = {name: s for name, s in services().items() if "demo" in s.get("profiles", [])}
    commands = {name: " ".join(s["command"]) for name, s in demo.items()}
    assert any("--sleep 2" in c for c in commands.values()) and any("--sleep 5" in c for c in commands.values())
    assert any("seq 10" in c and "new_task.py $$i" in c for c in commands.values())
    for service in demo.values():
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert "rabbitmq:5672" in service["environment"]["AMQP_URL"]


def invocations(command: list[str]) -> list[list[str]]:
    """Each `python SCRIPT ...` in a service's command, shell one-liners included."""
    if command[:2] == ["sh", "-c"]:
        words = shlex.split(command[2].replace("$$", "$"))
    else:
        words = list(command)
    found, current = [], None
    for word in words + [";"]:
        word = word.rstrip(";")
        if word == "python":
            current = []
        elif current is not None and (word in ("&&", ";", "do", "done", "") or word.endswith(";")):
            found.append(current)
            current = None
        elif current is not None:
            current.append(word)
    return found


def test_every_compose_command_names_a_script_and_options_that_exist():
    checked = 0
    for name, service in services().items():
        for call in invocations(service.get("command") or []):
            script = call[1].replace(".", "/") + ".py" if call[0] == "-m" else call[0]
            args = call[2:] if call[0] == "-m" else call[1:]
            assert (ROOT / script).exists(), f"{name}: no {script}"
            usage = subprocess.run([sys.executable, *call[:2 if call[0] == "-m" else 1], "--help"], cwd=ROOT,
                                   capture_output=True, text=True, timeout=30)
            assert usage.returncode == 0, usage.stderr
            known = set(re.findall(r"--[a-z][a-z-]*", usage.stdout))
            for option in (a for a in args if a.startswith("--")):
                assert option in known, f"{name}: {script} has no option {option}"
            checked += 1
    assert checked >= 4  # two workers, the producer's wait and its new_task.py


def test_dockerfile_copies_files_that_exist():
    copied = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            copied += line.split()[1:-1]
    assert copied
    for path in copied:
        assert (ROOT / path).exists(), path


# The `cluster` profile: three RabbitMQ nodes, and workers and a producer that know all three.

DATA_DIR = "/var/lib/rabbitmq"
COOKIE = f"{DATA_DIR}/.erlang.cookie"


def cluster() -> dict:
    return {name: s for name, s in services().items() if "cluster" in s.get("profiles", [])}


def nodes() -> dict:
    return {name: s for name, s in cluster().items() if "image" in s}


def clients() -> dict:
    return {name: s for name, s in cluster().items() if "image" not in s}


def mounts(service: dict) -> dict[str, str]:
    """Where each of a service's volumes goes: {target: source}, the options (":ro") left off."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = source
    return found


def node_config(service: dict) -> dict[str, str]:
    """The rabbitmq.conf settings a node is given from the repository, all its files together."""
    settings = {}
    for target, source in mounts(service).items():
        if target.startswith("/etc/rabbitmq/") and target.endswith(".conf"):
            assert source.startswith("./"), f"{target}: not a file of the repository"
            for line in (ROOT / source).read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    key, _, value = line.partition("=")
                    settings[key.strip()] = value.strip()
    return settings


def cookie(service: dict) -> str:
    """A node's Erlang cookie: a file of the repository that its command installs at $HOME/.erlang.cookie,
    owned by rabbitmq and readable by it alone, or else the (deprecated) RABBITMQ_ERLANG_COOKIE."""
    command = " ".join(service.get("command") or [])
    installed = re.search(r"install -m [46]00 -o rabbitmq -g rabbitmq (\S+) " + re.escape(COOKIE), command)
    if installed:
        source = mounts(service)[installed.group(1)]
        return (ROOT / source).read_text()
    if COOKIE in mounts(service):
        pytest.fail(f"{COOKIE} mounted as it is: Erlang refuses a cookie that others may read")
    return (service.get("environment") or {}).get("RABBITMQ_ERLANG_COOKIE", "")


def published(service: str) -> list[tuple[int, int]]:
    """(host port, container port) of each port the service publishes, with no variable set."""
    return [(int(p["published"]), int(p["target"])) for p in resolved()["services"][service].get("ports", [])]


def test_every_port_is_published_on_loopback_only_unless_asked_and_from_a_variable():
    for name, service in resolved()["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)
    wide = compose("--profile", "cluster", "config", "--format", "json",
                   env={**default_env(), "RABBITMQ_BIND_ADDRESS": "0.0.0.0", "RABBITMQ_PORT": "5673"})
    ports = json.loads(wide.stdout)["services"]["rabbitmq"]["ports"]
    assert {(p["host_ip"], p["published"]) for p in ports if p["target"] == 5672} == {("0.0.0.0", "5673")}
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    variables = {v for s in raw.values() for p in s.get("ports", []) for v in re.findall(r"\$\{(\w+)", p)}
    assert variables == {"RABBITMQ_BIND_ADDRESS", *PORT_VARIABLES}


def test_the_scripts_image_is_built_on_python_image():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim$", dockerfile, re.M)
    assert "FROM ${PYTHON_IMAGE}" in dockerfile
    builds = {name: s["build"] for name, s in resolved()["services"].items() if "build" in s}
    assert len(builds) == 6  # the demo's two workers and producer, the cluster's
    assert {b["args"]["PYTHON_IMAGE"] for b in builds.values()} == {"python:3.14-slim"}


def test_cluster_is_three_nodes_of_the_brokers_image_with_stable_names_and_their_own_data():
    assert len(nodes()) == 3
    images = {s["image"] for s in nodes().values()}
    assert images == {services()["rabbitmq"]["image"]}
    hostnames = [s.get("hostname") for s in nodes().values()]
    assert None not in hostnames and len(set(hostnames)) == 3  # node names rabbit@HOSTNAME, stable and distinct
    data = [mounts(s).get(DATA_DIR) for s in nodes().values()]
    assert None not in data and len(set(data)) == 3
    assert set(data) <= set(yaml.safe_load(COMPOSE.read_text())["volumes"])  # named volumes, kept on restarts
    for name, node in nodes().items():
        assert node["healthcheck"]["test"], name


def test_every_node_has_the_same_cookie():
    cookies = {name: cookie(s).strip() for name, s in nodes().items()}
    assert all(cookies.values()), cookies
    assert len(set(cookies.values())) == 1, cookies
    value = next(iter(cookies.values()))
    assert len(value) <= 255 and all(" " < c <= "~" for c in value)  # what Erlang takes as a cookie


def test_every_nodes_config_names_all_three_nodes_and_lets_guest_in_from_other_containers():
    names = {f"rabbit@{s['hostname']}" for s in nodes().values()}
    for name, node in nodes().items():
        config = node_config(node)
        assert config.get("cluster_formation.peer_discovery_backend") in ("classic_config",
                                                                        "rabbit_peer_discovery_classic_config"), name
        listed = {v for k, v in config.items() if re.fullmatch(r"cluster_formation\.classic_config\.nodes\.\d+", k)}
        assert listed == names, name
        # The image's conf.d/10-defaults.conf says it for the single broker; a node's own rabbitmq.conf
        # must say it too (or leave conf.d alone, as a file mounted into conf.d does).
        assert config.get("loopback_users.guest") == "false", name
        for target in mounts(node):
            assert target != "/etc/rabbitmq/conf.d", f"{name}: the image's 10-defaults.conf hidden"


def test_every_cluster_client_knows_every_node_and_uses_a_quorum_queue():
    hosts = {s["hostname"] for s in nodes().values()}
    assert len(clients()) >= 3  # two workers and a producer
    for name, client in clients().items():
        urls = client["environment"]["AMQP_URL"].split(";")
        assert {re.match(r"amqps?://[^@/]*@([^:/]+):5672/", url).group(1) for url in urls} == hosts, name
        assert {n: {"condition": "service_healthy"} for n in nodes()} == client["depends_on"], name
        calls = invocations(client["command"])
        assert calls, name
        for call in calls:
            assert "--url" not in call, f"{name}: --url would stand in for AMQP_URL's nodes"
            assert " ".join(call).count("--queue-type quorum") == 1, f"{name}: {call}"


def test_cluster_producer_waits_for_every_cluster_worker():
    commands = {name: " ".join(s["command"]) for name, s in clients().items()}
    workers = [name for name, c in commands.items() if c.startswith("python worker.py")]
    producers = [c for c in commands.values() if "seq 10" in c and "new_task.py" in c]
    assert len(workers) == 2 and len(producers) == 1
    assert f"workqueue.wait_for_workers --workers {len(workers)} " in producers[0]


def test_cluster_publishes_amqp_on_its_own_host_ports_and_the_management_ui_on_one_node():
    amqp = [host for name in nodes() for host, port in published(name) if port == 5672]
    assert len(amqp) == 3
    ui = [name for name in nodes() if any(port == 15672 for _, port in published(name))]
    assert len(ui) == 1
    # `--profile cluster` starts the single broker too: no host port may be taken twice.
    everyone = [host for name in services() for host, _ in published(name)]
    assert len(everyone) == len(set(everyone))


# Both profiles, run: containers of the images docker/images.sh gives, on host ports Docker picks.

TEN = [str(i) for i in range(1, 11)]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Project:
    """A compose project of this test session's own (its name unique), brought down with its volumes."""

    def __init__(self, images: dict[str, str]) -> None:
        self.name = f"wqtest{os.getpid()}{uuid.uuid4().hex[:6]}"
        # Every host port empty: Docker picks free ones (never 5672, which the machine's broker holds).
        self.env = {**default_env(), **images, **{v: "" for v in PORT_VARIABLES}, "CLUSTER_TASK_SECONDS": "3"}

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = compose("-p", self.name, "--profile", "demo", "--profile", "cluster", *args, env=self.env,
                         timeout=timeout)
        if check:
            assert result.returncode == 0, f"docker compose {' '.join(args)}: {result.stderr[-3000:]}"
        return result

    def up(self, profile: str) -> None:
        compose("-p", self.name, "--profile", profile, "up", "-d", "--build", env=self.env, timeout=900)
        states = self.states()
        assert states, self.run("logs", "--no-color", check=False).stdout[-3000:]

    def down(self) -> None:
        self.run("down", "-v", "--rmi", "local", "--remove-orphans", "-t", "20", check=False)

    def states(self) -> dict[str, str]:
        """Each service's container state: running, exited, ..."""
        out = self.run("ps", "-a", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        if len(rows) == 1 and isinstance(rows[0], list):  # older compose: one JSON array
            rows = rows[0]
        return {row["Service"]: row["State"] for row in rows}

    def logs(self, service: str) -> list[tuple[datetime, str]]:
        """A service's output lines, each with when Docker saw it."""
        out = self.run("logs", "--no-color", "--no-log-prefix", "-t", service).stdout
        found = []
        for line in ANSI.sub("", out).splitlines():
            stamp, _, text = line.partition(" ")
            if stamp:
                found.append((datetime.fromisoformat(stamp.replace("Z", "+00:00")), text))
        return found

    def ctl(self, node: str, *args: str) -> str:
        """rabbitmqctl in a node's container: through erl_call there (harness.erl), else rabbitmqctl itself."""
        out = erl.in_container(["docker", "exec", "-i", "-u", "rabbitmq", f"{self.name}-{node}-1"], "", None,
                               ["list_queues", "-q", "--no-table-headers", *args[1:]] if args[0] == "list_queues"
                               else args)
        if out is not None:
            return out
        return self.run("exec", "-T", node, "rabbitmqctl", "-q", *args, timeout=120).stdout

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.name}"
        found = {}
        for kind, listing in (("containers", ["ps", "-a"]), ("networks", ["network", "ls"]),
                              ("volumes", ["volume", "ls"]), ("images", ["image", "ls"])):
            out = subprocess.run(["docker", *listing, "-q", "--filter", label], capture_output=True, text=True,
                                 timeout=60).stdout
            found[kind] = out.split()
        return found


def done(lines: list[tuple[datetime, str]]) -> list[str]:
    """The bodies of the tasks a worker reported Done, in order."""
    bodies, current = [], None
    for _, line in lines:
        found = re.match(r" \[x\] Received b'(.*?)'", line)
        if found:
            current = found[1]
        elif line == " [x] Done" and current is not None:
            bodies.append(current)
            current = None
    return bodies


def first(lines: list[tuple[datetime, str]], text: str) -> datetime:
    return next(when for when, line in lines if text in line)


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    made = subprocess.run(["bash", str(ROOT / "docker" / "images.sh")], capture_output=True, text=True, timeout=1800)
    assert made.returncode == 0, made.stderr
    images = dict(line.split("=", 1) for line in made.stdout.split())
    assert set(images) == {"RABBITMQ_IMAGE", "PYTHON_IMAGE"}, made.stdout
    project = Project(images)
    watched = reaper.watch("project", project.name)  # its containers go even if this process is killed
    try:
        yield project
    finally:
        project.down()
        reaper.forget(watched)


@pytest.mark.xdist_group("test_compose-demo")  # a project of its own, beside the cluster's (in another worker)
def test_demo_profile_up_runs_the_walkthroughs_experiment_in_containers(project):
    project.up("demo")
    wait_until(lambda: project.states().get("producer") == "exited", 180, "the producer's loop", POLL)
    workers = ("worker-2sec", "worker-5sec")
    wait_until(lambda: sum(len(done(project.logs(w))) for w in workers) >= 10, 120, "ten tasks done", POLL)
    fast, slow = (project.logs(w) for w in workers)
    producer = project.logs("producer")
    assert [line for _, line in producer] == [f" [x] Sent '{i}'" for i in TEN], producer
    # The producer sent nothing until both workers consumed.
    assert first(producer, "Sent") > max(first(fast, "Waiting for messages"), first(slow, "Waiting for messages"))
    assert sorted(done(fast) + done(slow), key=int) == TEN  # each task once
    assert (len(done(fast)), len(done(slow))) == (7, 3), (done(fast), done(slow))
    assert project.states() == {"rabbitmq": "running", "worker-2sec": "running", "worker-5sec": "running",
                                "producer": "exited"}
    assert "task_queue\t0\t0" in project.ctl("rabbitmq", "list_queues", "name", "messages_ready",
                                             "messages_unacknowledged")
    project.down()
    assert project.leftovers() == {"containers": [], "networks": [], "volumes": [], "images": []}


CLUSTER_WORKERS = ("cluster-worker-1", "cluster-worker-2")


def queue_empty(project: Project, node: str) -> bool:
    out = project.ctl(node, "list_queues", "name", "messages")
    return "task_queue\t0" in out.splitlines()


def through_a_node_failure(project: Project, how: str, before: dict[str, int]) -> None:
    """While the workers do the loop's ten tasks: `docker compose stop` or `kill` of rabbit1; every task is
    done (once or, redelivered, twice), none lost; both workers still run; the queue ends empty."""
    def new_done() -> list[str]:
        return [body for w in CLUSTER_WORKERS for body in done(project.logs(w))[before[w]:]]

    wait_until(lambda: len(new_done()) >= 2, 180, "two tasks done", interval=0.5)
    project.run(how, "rabbit1")
    assert project.states()["rabbit1"] == "exited"
    wait_until(lambda: set(new_done()) >= set(TEN), 180, f"all ten tasks done after `{how} rabbit1`", POLL)
    assert set(new_done()) == set(TEN) and len(new_done()) <= 12, new_done()
    states = project.states()
    assert all(states[w] == "running" for w in CLUSTER_WORKERS), states
    # 150 s: RabbitMQ 4.3 holds a dead node's consumer's unacked task for consumer_disconnected_timeout (60 s).
    wait_until(lambda: queue_empty(project, "rabbit2"), 150, "an empty task_queue", interval=0.5)


def test_cluster_profile_up_forms_one_cluster_and_a_stopped_node_loses_no_task(project):
    project.up("cluster")
    running = project.ctl("rabbit2", "eval", "rabbit_nodes:list_running().")
    assert set(re.findall(r"rabbit@rabbit\d", running)) == {"rabbit@rabbit1", "rabbit@rabbit2", "rabbit@rabbit3"}
    through_a_node_failure(project, "stop", {w: 0 for w in CLUSTER_WORKERS})
    wait_until(lambda: project.states().get("cluster-producer") == "exited", 60, "the producer's loop", POLL)
    assert [line for _, line in project.logs("cluster-producer")] == [f" [x] Sent '{i}'" for i in TEN]


def test_cluster_profile_a_killed_node_loses_no_task(project):
    if project.states().get("rabbit1") is None:
        project.up("cluster")
    project.run("start", "rabbit1")
    running = re.compile(r"rabbit@rabbit\d")
    wait_until(lambda: len(set(running.findall(project.ctl("rabbit2", "eval", "rabbit_nodes:list_running().")))) == 3,
               120, "rabbit1 back in the cluster", interval=0.5)
    # The workers connect to rabbit1 again (the first URL): its SIGKILL then cuts their connections.
    project.run("restart", *CLUSTER_WORKERS)
    wait_until(lambda: "task_queue\t2" in project.ctl("rabbit2", "list_queues", "name", "consumers").splitlines(), 60,
               "both workers consuming", POLL)
    before = {w: len(done(project.logs(w))) for w in CLUSTER_WORKERS}
    producer = subprocess.Popen(["docker", "compose", "-f", str(COMPOSE), "-p", project.name, "--profile", "cluster",
                                 "run", "--rm", "-T", "cluster-producer"], cwd=ROOT, env=project.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        through_a_node_failure(project, "kill", before)
        out, err = producer.communicate(timeout=120)
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.communicate()
    assert producer.returncode == 0, err
    assert [line for line in ANSI.sub("", out).splitlines() if "Sent" in line] == [f" [x] Sent '{i}'" for i in TEN]


def test_down_leaves_no_container_network_volume_or_built_image(project):
    if not project.states():
        project.up("demo")
    project.down()
    assert project.leftovers() == {"containers": [], "networks": [], "volumes": [], "images": []}
