"""docker-compose.yml: validated offline (no Docker engine runs here), and every command in it runs a
script and options that exist."""

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


@pytest.mark.parametrize("profile", [[], ["--profile", "demo"]], ids=["broker", "demo"])
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
    others = [s for name, s in services().items() if name != "rabbitmq"]
    assert all(s.get("profiles") == ["demo"] for s in others)  # `docker compose up` starts the broker alone


def test_demo_is_the_seeds_experiment():
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
