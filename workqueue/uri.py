"""RabbitMQ's URI query parameters, read into pika's connection parameters.

RabbitMQ documents query parameters for its ``amqp://`` and ``amqps://`` URIs
(https://www.rabbitmq.com/docs/uri-query-parameters); its Erlang client reads them, and so do the Shovel
and Federation plugins. pika reads a few of the same names (``heartbeat``, ``channel_max``), none of the
TLS ones, and refuses a URL with a parameter it does not know. So :class:`Parameters` takes RabbitMQ's
parameters out of the URL, hands the rest to ``pika.URLParameters`` as it is, and sets from them what
pika's own API has for each:

=========================== ===============================================================================
RabbitMQ's parameter        pika
=========================== ===============================================================================
``cacertfile=PATH``         ``ssl_options``: an ``ssl.SSLContext`` that trusts the CAs of that file only
                            (without it: the system's CAs, as pika's ``amqps://`` does)
``certfile``, ``keyfile``   ``SSLContext.load_cert_chain(certfile, keyfile)``: the client's certificate
``verify=verify_peer``      the default: the broker's certificate is checked, and its host name
``verify=verify_none``      ``verify_mode = CERT_NONE``, ``check_hostname = False`` (with a warning)
``server_name_indication``  ``pika.SSLOptions(context, server_hostname=NAME)``: the name sent (SNI) and the
                            one the broker's certificate must be for (default: the URL's host)
``auth_mechanism=plain``    the default: ``PlainCredentials`` from the URL's user and password
``auth_mechanism=external`` ``credentials = pika.credentials.ExternalCredentials()``: the broker takes the
                            user name from the client certificate; no password
``connection_timeout=MS``   ``socket_timeout`` and ``stack_timeout``: the whole handshake in seconds
=========================== ===============================================================================

``heartbeat`` and ``channel_max`` mean the same to both and go to pika unchanged (without ``heartbeat``,
this client asks for ``nodes.HEARTBEAT`` seconds rather than taking the broker's 60), as do pika's own
(``blocked_connection_timeout``, ``socket_timeout``, ...). Whatever a URL gets wrong here is a
``Failure`` that names the parameter or the file, never the password.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, replace
from urllib.parse import unquote_plus, urlsplit

import pika
import pika.credentials

from workqueue.report import Failure

TLS_PARAMETERS = ("cacertfile", "certfile", "keyfile", "verify", "server_name_indication")
RABBITMQ_PARAMETERS = (*TLS_PARAMETERS, "auth_mechanism", "connection_timeout")
VERIFY = ("verify_peer", "verify_none")
HEARTBEAT = 5  # seconds: the heartbeat timeout asked for when the URL gives none (see nodes.Silence)
MECHANISMS = ("plain", "external")


@dataclass(frozen=True)
class TLS:
    """What a URL asked of TLS: kept beside pika's parameters, to say what failed in its own terms."""

    server_name: str  # the host the broker's certificate must be for
    verify: bool = True
    cacertfile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    certificate_user: str | None = None  # the client certificate's common name (CN), if it has one


class Parameters(pika.URLParameters):
    """``pika.URLParameters`` for a URL that may hold RabbitMQ's URI query parameters too.

    ``tls`` is None for ``amqp://``; ``external`` is True for login by certificate. Raises Failure for
    RabbitMQ's parameters that are wrong, and ValueError, as pika does, for the rest of the URL.
    """

    def __init__(self, url: str) -> None:
        rest, ours = _split(url)
        super().__init__(rest)
        pika_names = set(self._all_url_query_values or ())
        secure = urlsplit(url).scheme.lower() == "amqps"
        self.external = _mechanism(ours, secure) == "external"
        self.tls: TLS | None = None
        if secure:
            self.tls = self._use_tls(ours, explicit_ssl_options="ssl_options" in pika_names)
        else:
            given = [name for name in TLS_PARAMETERS if name in ours]
            if given:
                raise Failure(f"{given[0]}= is for amqps:// URLs (TLS); this URL is amqp://, which does not "
                              "encrypt: use amqps:// and the broker's TLS port (usually 5671)")
        if self.external:
            self.credentials = pika.credentials.ExternalCredentials()
        if "connection_timeout" in ours:
            self._use_connection_timeout(ours["connection_timeout"], pika_names)
        # A URL that bounds the connection's set-up itself keeps that bound, in every round (see nodes)
        self.timeouts_given = bool({"socket_timeout", "stack_timeout"} & pika_names) or "connection_timeout" in ours
        if "heartbeat" not in pika_names:
            self.heartbeat = HEARTBEAT

    def _use_tls(self, ours: dict[str, str], explicit_ssl_options: bool) -> TLS:
        server_name = ours.get("server_name_indication", self.host)
        if explicit_ssl_options:  # pika's own ?ssl_options={...}: taken as pika takes it
            given = [name for name in TLS_PARAMETERS if name in ours]
            if given:
                raise Failure(f"ssl_options= and {given[0]}= both set TLS options: use RabbitMQ's cacertfile, "
                              "certfile, keyfile, verify and server_name_indication alone")
            options: pika.SSLOptions = super().ssl_options  # pika's, from its ssl_options=
            return TLS(server_name=options.server_hostname or self.host)
        if not server_name:
            raise Failure("server_name_indication= names no host")
        verify = ours.get("verify", "verify_peer")
        if verify not in VERIFY:
            raise Failure(f"verify={verify} in the broker URL: expected verify_peer (the default: check the "
                          "broker's certificate) or verify_none")
        tls = TLS(
            server_name=server_name,
            verify=verify == "verify_peer",
            cacertfile=_path(ours, "cacertfile"),
            certfile=_path(ours, "certfile"),
            keyfile=_path(ours, "keyfile"),
        )
        if tls.keyfile and not tls.certfile:
            raise Failure(f"keyfile={tls.keyfile} needs certfile=, the client certificate that key belongs to")
        if self.external and not tls.certfile:
            raise Failure("auth_mechanism=external logs in with a client certificate, and this URL gives none: "
                          "add certfile=/path/to/client.pem&keyfile=/path/to/client.key")
        context, user = _context(tls)
        self.ssl_options = pika.SSLOptions(context, server_hostname=server_name)
        return replace(tls, certificate_user=user)

    def _use_connection_timeout(self, value: str, pika_names: set[str]) -> None:
        if not value.isdigit() or int(value) == 0:
            raise Failure(f"connection_timeout={value} in the broker URL: expected a whole number of "
                          "milliseconds, 1 or more")
        if "socket_timeout" in pika_names:
            raise Failure("connection_timeout= and socket_timeout= both set how long to wait for the broker: "
                          "give one")
        self.socket_timeout = int(value) / 1000
        if "stack_timeout" not in pika_names:  # the whole set-up: TCP, then TLS and AMQP's handshakes
            self.stack_timeout = int(value) / 1000


def _split(url: str) -> tuple[str, dict[str, str]]:
    """The URL without RabbitMQ's parameters (the rest as written), and their values."""
    parts = urlsplit(url)
    kept: list[str] = []
    ours: dict[str, list[str]] = {}
    for piece in parts.query.split("&") if parts.query else []:
        name, _, value = piece.partition("=")
        name = unquote_plus(name)
        if name in RABBITMQ_PARAMETERS:
            ours.setdefault(name, []).append(unquote_plus(value))
        else:
            kept.append(piece)
    single: dict[str, str] = {}
    for name, values in ours.items():
        if name == "auth_mechanism":
            values = sorted({v.lower() for v in values})
            if len(values) > 1:  # RabbitMQ's Erlang client offers the broker a choice; pika brings one
                raise Failure(f"auth_mechanism= is given as {' and '.join(values)}: this client logs in one "
                              "way; give plain (user name and password) or external (a client certificate)")
        if len(values) > 1:
            raise Failure(f"{name}= is given {len(values)} times in the broker URL ({' and '.join(values)}): "
                          "give it once")
        single[name] = values[0]
    return parts._replace(query="&".join(kept)).geturl(), single


def _mechanism(ours: dict[str, str], secure: bool) -> str:
    mechanism = ours.get("auth_mechanism", "plain")
    if mechanism not in MECHANISMS:
        raise Failure(f"auth_mechanism={mechanism} in the broker URL: expected plain (user name and password, "
                      "the default) or external (a client certificate); pika logs in no other way")
    if mechanism == "external" and not secure:
        raise Failure("auth_mechanism=external logs in with a client certificate, which takes TLS: use amqps:// "
                      "with certfile= and keyfile=")
    return mechanism


def _path(ours: dict[str, str], name: str) -> str | None:
    if name not in ours:
        return None
    if not ours[name]:
        raise Failure(f"{name}= in the broker URL names no file")
    return ours[name]


def _context(tls: TLS) -> tuple[ssl.SSLContext, str | None]:
    """The SSLContext for these settings, and the client certificate's common name, if any."""
    if tls.cacertfile:
        cadata = _read("cacertfile", tls.cacertfile)
        try:
            context = ssl.create_default_context(cadata=cadata)
        except ssl.SSLError:
            raise Failure(f"cacertfile {tls.cacertfile} holds no certificate in PEM form "
                          "(-----BEGIN CERTIFICATE-----): name the file of the CA that signed the broker's "
                          "certificate") from None
    else:
        context = ssl.create_default_context()  # the system's CAs, as pika's amqps:// does
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    user = None
    if tls.certfile:
        _load_client_certificate(context, tls.certfile, tls.keyfile)
        user = _common_name(tls.certfile)
    return context, user


def _load_client_certificate(context: ssl.SSLContext, certfile: str, keyfile: str | None) -> None:
    if "-----BEGIN CERTIFICATE-----" not in _read("certfile", certfile):
        raise Failure(f"certfile {certfile} holds no certificate in PEM form (-----BEGIN CERTIFICATE-----)")
    key = _read("keyfile", keyfile) if keyfile else _read("certfile", certfile)
    if not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", key):
        if keyfile:
            raise Failure(f"keyfile {keyfile} holds no private key in PEM form (-----BEGIN PRIVATE KEY-----)")
        raise Failure(f"certfile {certfile} holds no private key: name the key's file with keyfile=")
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_passphrase)
    except _Encrypted:
        raise Failure(f"keyfile {keyfile or certfile} is encrypted with a passphrase, which this client does not "
                      "ask for: give it a key without one") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise Failure(f"keyfile {keyfile or certfile} is not the key of certfile {certfile}") from None
        raise Failure(f"could not load certfile {certfile} and keyfile {keyfile} ({exc.reason or exc})") from None
    except OSError as exc:  # changed since it was read
        raise Failure(f"cannot read certfile {certfile} or keyfile {keyfile} ({_strerror(exc)})") from None


class _Encrypted(Exception):
    pass


def _no_passphrase() -> bytes:
    """OpenSSL would ask for a key's passphrase on the terminal; a worker has nobody there to answer."""
    raise _Encrypted


def _read(name: str, path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("latin-1")
    except OSError as exc:
        raise Failure(f"cannot read {name} {path} ({_strerror(exc)}): {_ROLE[name]}") from None


_ROLE = {
    "cacertfile": "it names the certificate (PEM) of the CA that signed the broker's certificate",
    "certfile": "it names this client's certificate (PEM)",
    "keyfile": "it names the private key (PEM) of this client's certificate",
}


def _strerror(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _common_name(certfile: str) -> str | None:
    """The certificate's subject CN: the user name the broker takes with ssl_cert_login_from = common_name.
    Only to name it in messages; the standard library's one reader of certificate files is internal."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    try:
        subject = decode(certfile).get("subject", ())
    except (ssl.SSLError, OSError, ValueError):
        return None
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
