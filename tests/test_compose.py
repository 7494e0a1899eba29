"""docker-compose.yml: validated offline (no Docker engine runs here), every command in it runs a
script and options that exist, and the `cluster` profile's nodes and clients are wired to form one cluster."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker-compose", "-f", str(COMPOSE), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


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
    assert {"5672:5672", "15672:15672"} <= set(broker["ports"])
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


def published(service: dict) -> list[tuple[int, int]]:
    """(host port, container port) of each published port."""
    return [(int(p.split(":")[-2]), int(p.split(":")[-1])) for p in service.get("ports", [])]


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
    assert f"demo.wait_for_workers --workers {len(workers)} " in producers[0]


def test_cluster_publishes_amqp_on_its_own_host_ports_and_the_management_ui_on_one_node():
    amqp = [host for s in nodes().values() for host, port in published(s) if port == 5672]
    assert len(amqp) == 3
    ui = [name for name, s in nodes().items() if any(port == 15672 for _, port in published(s))]
    assert len(ui) == 1
    # `--profile cluster` starts the single broker too: no host port may be taken twice.
    everyone = [host for s in services().values() for host, _ in published(s)]
    assert len(everyone) == len(set(everyone))
