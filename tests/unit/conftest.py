"""For the unit tests: no broker, no network. Any attempt to open a connection fails the test at once,
so a test that would reach a broker (or any host) cannot pass by accident or wait for a timeout.
Loading the system's CAs (a few hundred ms each time on a busy machine) is only recorded: nothing here
checks a broker's certificate."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"a unit test tried to connect: {args!r}")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)


@pytest.fixture(autouse=True)
def system_cas(monkeypatch: pytest.MonkeyPatch) -> list[ssl.SSLContext]:
    """The SSL contexts that would have loaded the system's CAs (``ssl.create_default_context()``)."""
    loaded: list[ssl.SSLContext] = []
    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", lambda self, purpose=None: loaded.append(self))
    return loaded


@dataclass
class Certs:
    ca: Path  # the CA's certificate
    other_ca: Path  # a CA's certificate that signed nothing here
    cert: Path  # a client certificate for CN=alice, signed by ca
    key: Path  # its private key
    both: Path  # certificate and key in one file
    other_key: Path  # the key of another certificate


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Real PEM files, written by trustme."""
    folder = tmp_path_factory.mktemp("certs")
    ca, other = trustme.CA(), trustme.CA()
    alice = ca.issue_cert("alice.example", common_name="alice")
    bob = ca.issue_cert("bob.example", common_name="bob")
    files = Certs(*(folder / name for name in ("ca.pem", "other-ca.pem", "alice.pem", "alice.key", "alice-both.pem",
                                               "bob.key")))
    ca.cert_pem.write_to_path(files.ca)
    other.cert_pem.write_to_path(files.other_ca)
    alice.cert_chain_pems[0].write_to_path(files.cert)
    alice.private_key_pem.write_to_path(files.key)
    alice.private_key_and_cert_chain_pem.write_to_path(files.both)
    bob.private_key_pem.write_to_path(files.other_key)
    return files
