"""TLS the RabbitMQ way: amqps:// URLs with RabbitMQ's URI query parameters (cacertfile, certfile, keyfile,
verify, server_name_indication, auth_mechanism), login by certificate, and one line for each TLS mistake.

Two private nodes with certificates made here by trustme, started once for the module, side by side:
- ``node``: a TLS listener with ``verify_peer`` and ``fail_if_no_peer_cert = false``, login by certificate
  (EXTERNAL, the user name from the certificate's CN), user ``tls-worker`` with no password, and a virtual
  host ``certonly`` that only that user may use;
- ``strict``: a TLS listener that requires a client certificate (``fail_if_no_peer_cert = true``) and
  offers no login by certificate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from conftest import (
    ROOT,
    PrivateBroker,
    delete_queue,
    free_port,
    rabbitmqctl,
    ready_count,
    require_rabbitmq,
    run_new_task,
    script_env,
    wait_counts,
    wait_until,
)

SECRET = "s3cret-Pa55"
CERT_USER = "tls-worker"
SCRIPTS = ["new_task.py", "worker.py"]


@dataclass
class Certificates:
    dir: Path
    ca: Path  # the CA that signed the brokers' and the clients' certificates
    other_ca: Path  # a CA that signed nothing here
    client: Path  # CN=tls-worker, signed by ca
    client_key: Path
    stranger: Path  # CN=stranger, signed by ca: a user the broker does not have
    stranger_key: Path
    encrypted_key: Path  # client_key, encrypted with a passphrase


@dataclass
class TLSNode:
    broker: PrivateBroker
    tls_port: int

    def url(self, query: str = "", user: str = "guest:guest@", host: str = "localhost", vhost: str = "%2F") -> str:
        return f"amqps://{user}{host}:{self.tls_port}/{vhost}" + (f"?{query}" if query else "")


def make_certificates(folder: Path) -> Certificates:
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert(CERT_USER, common_name=CERT_USER)
    stranger = ca.issue_cert("stranger", common_name="stranger")
    ca.cert_pem.write_to_path(folder / "ca.pem")
    other.cert_pem.write_to_path(folder / "other-ca.pem")
    server.cert_chain_pems[0].write_to_path(folder / "server.pem")
    server.private_key_pem.write_to_path(folder / "server.key")
    for name, cert in (("client", client), ("stranger", stranger)):
        cert.cert_chain_pems[0].write_to_path(folder / f"{name}.pem")
        cert.private_key_pem.write_to_path(folder / f"{name}.key")
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), None)
    (folder / "encrypted.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"a passphrase")))
    return Certificates(folder, folder / "ca.pem", folder / "other-ca.pem", folder / "client.pem",
                        folder / "client.key", folder / "stranger.pem", folder / "stranger.key",
                        folder / "encrypted.key")


def tls_config(certs: Certificates, port: int, require_client_certificate: bool) -> str:
    return (f"listeners.ssl.default = {port}\n"
            f"ssl_options.cacertfile = {certs.ca}\n"
            f"ssl_options.certfile = {certs.dir / 'server.pem'}\n"
            f"ssl_options.keyfile = {certs.dir / 'server.key'}\n"
            "ssl_options.verify = verify_peer\n"
            f"ssl_options.fail_if_no_peer_cert = {str(require_client_certificate).lower()}\n")


LOGIN_BY_CERTIFICATE = """auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_nodes(certs: Certificates) -> Iterator[tuple[TLSNode, TLSNode]]:
    require_rabbitmq()
    ports = free_port(), free_port()
    node = TLSNode(PrivateBroker(name="wqtls", config=tls_config(certs, ports[0], False) + LOGIN_BY_CERTIFICATE,
                                 plugins=("rabbitmq_auth_mechanism_ssl",)), ports[0])
    strict = TLSNode(PrivateBroker(name="wqtlsstrict", config=tls_config(certs, ports[1], True)), ports[1])
    try:
        for n in (node, strict):  # side by side: a node takes some seconds to start
            n.broker.start(wait=False)
        for n in (node, strict):
            n.broker.wait_ready()
        for command in (("add_user", CERT_USER, "unused"), ("clear_password", CERT_USER), ("add_vhost", "certonly"),
                        ("set_permissions", "-p", "certonly", CERT_USER, ".*", ".*", ".*")):
            rabbitmqctl(*command, node=node.broker)
        yield node, strict
    finally:
        for n in (node, strict):
            n.broker.close()


@pytest.fixture(scope="module")
def node(tls_nodes: tuple[TLSNode, TLSNode]) -> TLSNode:
    return tls_nodes[0]


@pytest.fixture(scope="module")
def strict(tls_nodes: tuple[TLSNode, TLSNode]) -> TLSNode:
    return tls_nodes[1]


@pytest.fixture
def tls_queue(node: TLSNode, request) -> Iterator[str]:
    name = f"test.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}"
    yield name
    delete_queue(name, node.broker.url)


def run_script(script: str, queue: str, url: str) -> subprocess.CompletedProcess[str]:
    if script == "new_task.py":
        return run_new_task("--queue", queue, "x", url=url)
    return subprocess.run([sys.executable, str(ROOT / "worker.py"), "--queue", queue], text=True,
                          capture_output=True, env=script_env(url), cwd=ROOT, timeout=60)


def one_error_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert SECRET not in result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def connections(broker: PrivateBroker) -> list[list[str]]:
    """(user, auth_mechanism, ssl) of each client connection."""
    out = rabbitmqctl("list_connections", "-q", "--no-table-headers", "user", "auth_mechanism", "ssl", node=broker)
    return [line.split("\t") for line in out.splitlines() if line.strip()]


# Both scripts over TLS


def test_tls_shell_loop_and_worker_over_amqps_with_cacertfile(node, certs, tls_queue, workers):
    url = node.url(f"cacertfile={certs.ca}")
    env = {**script_env(url), "PY": sys.executable, "Q": tls_queue}
    loop = subprocess.run(["bash", "-c", 'for i in `seq 10`; do "$PY" new_task.py --queue "$Q" $i; done'],
                          text=True, capture_output=True, env=env, cwd=ROOT, timeout=120)
    assert loop.stderr == ""
    assert loop.stdout.splitlines() == [f" [x] Sent '{i}'" for i in range(1, 11)]
    assert ready_count(tls_queue, node.broker.url) == 10

    w = workers.start("--queue", tls_queue, url=url)
    assert workers.until_done([str(i) for i in range(1, 11)]) == [str(i) for i in range(1, 11)]
    assert ["guest", "PLAIN", "true"] in connections(node.broker)  # the worker's: over TLS
    assert wait_counts(tls_queue, (0, 0), node=node.broker) == (0, 0)
    assert w.errors == [] and w.proc.poll() is None


def test_tls_login_by_certificate_into_a_vhost_only_its_user_may_use(node, certs, workers):
    queue = f"test.by-certificate.{uuid.uuid4().hex[:8]}"
    query = f"cacertfile={certs.ca}&certfile={certs.client}&keyfile={certs.client_key}&auth_mechanism=external"
    url = node.url(query, user="", vhost="certonly")  # no user name, no password
    try:
        sent = run_new_task("--queue", queue, "by certificate.", url=url)
        assert (sent.returncode, sent.stdout, sent.stderr) == (0, " [x] Sent 'by certificate.'\n", "")
        w = workers.start("--queue", queue, "--seconds-per-dot", "0", url=url)
        assert workers.until_done(["by certificate."]) == ["by certificate."]
        assert [CERT_USER, "EXTERNAL", "true"] in connections(node.broker)
        wait_until(lambda: rabbitmqctl("list_queues", "-p", "certonly", "-q", "--no-table-headers", "name",
                                       "messages", node=node.broker).split() == [queue, "0"], 30, "an empty queue",
                   interval=0.2)
        assert w.errors == []
    finally:
        for started in workers:
            started.stop()
        rabbitmqctl("delete_queue", "-p", "certonly", queue, node=node.broker)
    # the vhost is the certificate's user's alone: guest, with its right password, may not use it ...
    guest = run_new_task("--queue", queue, "x", url=node.url(f"cacertfile={certs.ca}", vhost="certonly"))
    one_error_line(guest, "the broker at localhost", "or user 'guest' may not use it")
    # ... and the certificate's user may use no other
    elsewhere = run_new_task("--queue", queue, "x", url=node.url(query, user=""))
    one_error_line(elsewhere, "has no virtual host '/', or user 'tls-worker' may not use it")


def test_tls_verify_none_warns_in_one_line_and_connects(node, tls_queue):
    result = run_new_task("--queue", tls_queue, "unverified", url=node.url("verify=verify_none"))
    assert result.returncode == 0 and result.stdout == " [x] Sent 'unverified'\n"
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        f"warning: verify=verify_none: the broker's certificate at localhost:{node.tls_port} is not checked")


def test_tls_client_certificate_accepted_where_the_broker_requires_one(strict, certs, tls_queue):
    url = strict.url(f"cacertfile={certs.ca}&certfile={certs.client}&keyfile={certs.client_key}")
    result = run_new_task("--queue", tls_queue, "with a certificate", url=url)
    assert (result.returncode, result.stdout, result.stderr) == (0, " [x] Sent 'with a certificate'\n", "")
    assert ready_count(tls_queue, strict.broker.url) == 1
    delete_queue(tls_queue, strict.broker.url)


def test_rabbitmq_uri_parameters_become_pikas(certs):
    """How each parameter lands in pika's ConnectionParameters (in a child process: the scripts' own code)."""
    code = """if True:
        import json, sys
        from workqueue import broker
        p = broker.parameters(sys.argv[1])
        print(json.dumps({"credentials": type(p.credentials).__name__, "heartbeat": p.heartbeat,
                          "channel_max": p.channel_max, "socket_timeout": p.socket_timeout,
                          "stack_timeout": p.stack_timeout, "blocked": p.blocked_connection_timeout,
                          "server_hostname": p.ssl_options and p.ssl_options.server_hostname,
                          "verify_mode": p.ssl_options and int(p.ssl_options.context.verify_mode),
                          "check_hostname": p.ssl_options and p.ssl_options.context.check_hostname,
                          "vhost": p.virtual_host}))
    """

    def parsed(url: str) -> dict:
        out = subprocess.run([sys.executable, "-c", code, url], text=True, capture_output=True, cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    plain = parsed("amqp://guest:guest@localhost/%2F?heartbeat=12&channel_max=16&connection_timeout=2500"
                   "&blocked_connection_timeout=60")
    assert plain == {"credentials": "PlainCredentials", "heartbeat": 12, "channel_max": 16, "socket_timeout": 2.5,
                     "stack_timeout": 2.5, "blocked": 60.0, "server_hostname": None, "verify_mode": None,
                     "check_hostname": None, "vhost": "/"}
    # connection_timeout bounds the whole set-up (TCP, TLS, AMQP); without heartbeat= the client asks for 5 s
    assert parsed("amqp://localhost/?connection_timeout=30000")["stack_timeout"] == 30.0
    assert parsed("amqp://localhost/")["heartbeat"] == 5
    tls = parsed(f"amqps://rabbit.example/work?cacertfile={certs.ca}&certfile={certs.client}&keyfile={certs.client_key}"
                 "&verify=verify_peer&server_name_indication=broker.example&auth_mechanism=external")
    assert tls["credentials"] == "ExternalCredentials" and tls["server_hostname"] == "broker.example"
    assert tls["verify_mode"] == 2 and tls["check_hostname"] is True and tls["vhost"] == "work"
    system = parsed("amqps://rabbit.example/")  # the system's CAs and the URL's host, as pika's own amqps://
    assert (system["server_hostname"], system["verify_mode"], system["check_hostname"]) == ("rabbit.example", 2, True)
    unverified = parsed("amqps://rabbit.example/?verify=verify_none&auth_mechanism=PLAIN")
    assert (unverified["verify_mode"], unverified["check_hostname"], unverified["credentials"]) == \
        (0, False, "PlainCredentials")


# What a TLS problem gets: one line each, no traceback, never the password


@pytest.mark.parametrize("script", SCRIPTS)
def test_tls_untrusted_broker_certificate_names_cacertfile(script, node, certs, tls_queue):
    system = run_script(script, tls_queue, node.url(user=f"guest:{SECRET}@"))
    one_error_line(system, f"the broker at localhost:{node.tls_port} has a TLS certificate not signed by a CA this "
                   "system trusts", "?cacertfile=/path/to/ca.pem")
    other = run_script(script, tls_queue, node.url(f"cacertfile={certs.other_ca}", user=f"guest:{SECRET}@"))
    one_error_line(other, f"not signed by the CA in cacertfile={certs.other_ca}")


@pytest.mark.parametrize("script", SCRIPTS)
def test_tls_certificate_for_another_host_names_the_host_asked_for(script, node, certs, tls_queue):
    by_address = run_script(script, tls_queue, node.url(f"cacertfile={certs.ca}", user=f"guest:{SECRET}@",
                                                        host="127.0.0.2"))
    one_error_line(by_address, f"the broker at 127.0.0.2:{node.tls_port} has a TLS certificate for another host: "
                   "it is not valid for '127.0.0.2', the host asked for", "server_name_indication=")
    by_name = run_script(script, tls_queue, node.url(f"cacertfile={certs.ca}&server_name_indication=rabbit.example",
                                                     user=f"guest:{SECRET}@"))
    one_error_line(by_name, "it is not valid for 'rabbit.example', the host asked for")


@pytest.mark.parametrize("script", SCRIPTS)
def test_tls_client_certificate_required_but_not_given(script, strict, certs, tls_queue):
    result = run_script(script, tls_queue, strict.url(f"cacertfile={certs.ca}", user=f"guest:{SECRET}@"))
    one_error_line(result, f"the broker at localhost:{strict.tls_port}", "requires a client certificate",
                   "certfile=/path/to/client.pem&keyfile=/path/to/client.key")


@pytest.mark.parametrize("script", SCRIPTS)
def test_tls_plain_amqp_to_a_tls_port_says_use_amqps(script, node, tls_queue):
    url = f"amqp://guest:{SECRET}@localhost:{node.tls_port}/%2F"
    one_error_line(run_script(script, tls_queue, url),
                   f"the broker at localhost:{node.tls_port} takes TLS on that port, and this URL is amqp://: "
                   "use amqps://")


@pytest.mark.parametrize("script", SCRIPTS)
def test_tls_to_a_plain_port_says_use_amqp(script, node, certs, tls_queue):
    url = f"amqps://guest:{SECRET}@localhost:{node.broker.port}/%2F?cacertfile={certs.ca}"
    one_error_line(run_script(script, tls_queue, url),
                   f"the broker at localhost:{node.broker.port} does not speak TLS on that port",
                   "use amqp:// for it")


@pytest.mark.parametrize("script", SCRIPTS)
def test_tls_login_by_certificate_of_a_user_the_broker_lacks(script, node, certs, tls_queue):
    query = f"cacertfile={certs.ca}&certfile={certs.stranger}&keyfile={certs.stranger_key}&auth_mechanism=external"
    one_error_line(run_script(script, tls_queue, node.url(query, user="")),
                   "refused the login by certificate of user 'stranger'", "rabbitmqctl add_user stranger")


def test_tls_login_by_certificate_where_the_broker_offers_none(strict, certs, tls_queue):
    query = f"cacertfile={certs.ca}&certfile={certs.client}&keyfile={certs.client_key}&auth_mechanism=external"
    one_error_line(run_script("worker.py", tls_queue, strict.url(query, user="")),
                   "does not offer login by certificate", "rabbitmq_auth_mechanism_ssl")


def file_cases(certs: Certificates) -> list[tuple[str, str]]:
    """(query, what the error line says) for files that are missing, unreadable or not what they should be."""
    missing, folder = certs.dir / "missing.pem", certs.dir
    client = f"certfile={certs.client}&keyfile={certs.client_key}"
    return [
        (f"cacertfile={missing}", f"cannot read cacertfile {missing} (no such file or directory)"),
        (f"cacertfile={folder}", f"cannot read cacertfile {folder} (is a directory)"),
        (f"cacertfile={certs.client_key}", f"cacertfile {certs.client_key} holds no certificate in PEM form"),
        (f"certfile={missing}&keyfile={certs.client_key}", f"cannot read certfile {missing} (no such file"),
        (f"certfile={certs.client_key}&keyfile={certs.client_key}",
         f"certfile {certs.client_key} holds no certificate"),
        (f"certfile={certs.client}&keyfile={missing}", f"cannot read keyfile {missing} (no such file"),
        (f"certfile={certs.client}&keyfile={certs.ca}", f"keyfile {certs.ca} holds no private key"),
        (f"certfile={certs.client}", f"certfile {certs.client} holds no private key: name the key's file with keyfile"),
        (f"certfile={certs.client}&keyfile={certs.stranger_key}",
         f"keyfile {certs.stranger_key} is not the key of certfile {certs.client}"),
        (f"certfile={certs.client}&keyfile={certs.encrypted_key}",
         f"keyfile {certs.encrypted_key} is encrypted with a passphrase"),
        (f"cacertfile={certs.ca}&{client}&cacertfile={certs.other_ca}", "cacertfile= is given 2 times"),
    ]


def test_tls_files_missing_or_unreadable_are_named(node, certs, tls_queue):
    for query, expected in file_cases(certs):
        for script in SCRIPTS:
            result = run_script(script, tls_queue, node.url(query, user=f"guest:{SECRET}@"))
            one_error_line(result, expected)


@pytest.mark.parametrize("url, expected", [
    ("amqps://guest:{secret}@localhost/?verify=verify_maybe", "verify=verify_maybe in the broker URL: expected "
     "verify_peer"),
    ("amqp://guest:{secret}@localhost/?cacertfile={ca}", "cacertfile= is for amqps:// URLs (TLS); this URL is amqp://"),
    ("amqp://localhost/?auth_mechanism=external", "auth_mechanism=external logs in with a client certificate, which "
     "takes TLS"),
    ("amqps://localhost/?cacertfile={ca}&auth_mechanism=external", "auth_mechanism=external logs in with a client "
     "certificate, and this URL gives none: add certfile="),
    ("amqps://guest:{secret}@localhost/?auth_mechanism=amqplain", "auth_mechanism=amqplain in the broker URL: "
     "expected plain"),
    ("amqps://guest:{secret}@localhost/?auth_mechanism=plain&auth_mechanism=external", "auth_mechanism= is given as "
     "external and plain"),
    ("amqps://guest:{secret}@localhost/?keyfile={ca}", "needs certfile="),
    ("amqps://guest:{secret}@localhost/?cacertfile=", "cacertfile= in the broker URL names no file"),
    ("amqp://guest:{secret}@localhost/?connection_timeout=soon", "connection_timeout=soon in the broker URL: expected "
     "a whole number of milliseconds"),
    ("amqps://guest:{secret}@localhost/?cafile={ca}", "malformed broker URL amqps://guest:***@localhost/"),
])
def test_tls_uri_parameters_misused_are_one_line_errors(url, expected, certs):
    result = run_script("worker.py", "unused", url.format(secret=SECRET, ca=certs.ca))
    one_error_line(result, expected)
