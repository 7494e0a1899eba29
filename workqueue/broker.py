"""The broker's URL, and what pika's errors mean in words a user can act on."""

from __future__ import annotations

import logging
import re
import socket
import ssl
from urllib.parse import urlsplit

import pika
import pika.credentials
import pika.exceptions as px
from pika.adapters.utils.connection_workflow import AMQPConnectorException, AMQPConnectorStackTimeout

from workqueue import uri
from workqueue.report import Failure, warn

# pika logs every failure it raises; with no logging set up, Python would print those records
# on stderr beside our own one-line errors. The exceptions say it all.
logging.getLogger("pika").addHandler(logging.NullHandler())
logging.getLogger("pika").propagate = False

START_HINT = (
    "start one (`sudo rabbitmq-server -detached`, or `docker compose up -d rabbitmq` here), "
    "or point --url or AMQP_URL at yours"
)
# What opening a connection may raise: pika's errors, the socket's, and its connection workflow's (a bound
# on the handshake that ran out is one of those, and no AMQPError)
CONNECT_ERRORS = (px.AMQPError, OSError, AMQPConnectorException)
TIMEOUT_HINT = ("check the host and the port in --url or AMQP_URL, and that no firewall drops the port; "
                "a broker that is frozen or overloaded answers so too (connection_timeout=MS in the URL waits longer)")


def parameters(url: str) -> pika.URLParameters:
    """pika's parameters for a broker URL, RabbitMQ's URI query parameters included (see ``uri``);
    a malformed URL is a Failure that does not echo its password."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError(f"it starts with {parts.scheme + '://' if parts.scheme else 'no scheme'}, "
                             "not amqp:// or amqps://")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        params = uri.Parameters(url)
    # SyntaxError: pika reads ssl_options={...} as a Python literal; TypeError, AttributeError, OSError: pika's
    # SSLContext from that literal (no CA named, not a dict, a file that is not there)
    except (ValueError, SyntaxError, TypeError, AttributeError, OSError) as exc:
        text = str(exc)
        password = _password(url)
        if password:
            text = text.replace(password, "***")
        raise Failure(f"malformed broker URL {safe_url(url)}: {text}; "
                      "the form is amqp://user:password@host:port/vhost") from None
    if params.tls and not params.tls.verify:
        warn(f"warning: verify=verify_none: the broker's certificate at {where(params)} is not checked, so "
             "anyone on the way to it can pose as the broker; name its CA with cacertfile= instead")
    return params


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:  # e.g. "Invalid IPv6 URL": find the password as urlsplit would, in user:password@
        netloc = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
        userinfo, at, _ = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        return password if at and colon else None


def safe_url(url: str) -> str:
    """The URL as it may be shown: without its password."""
    password = _password(url)
    return url.replace(f":{password}@", ":***@", 1) if password else url


def where(params: pika.ConnectionParameters) -> str:
    return f"{params.host}:{params.port}"


def root_cause(exc: BaseException) -> BaseException:
    """The innermost error behind pika's wrappers (connection workflow, connector phases)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "exceptions", None) or None
        if inner:
            exc = inner[-1]
        elif isinstance(getattr(exc, "exception", None), BaseException):
            exc = exc.exception  # type: ignore[attr-defined]
        elif exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
        else:
            break
    return exc


def explain(exc: BaseException, params: pika.ConnectionParameters, queue: str = "") -> str:
    """One line saying what failed and what to do about it; never the password."""
    at = where(params)
    external = isinstance(params.credentials, pika.credentials.ExternalCredentials)
    user = _user(params)
    vhost = params.virtual_host
    if isinstance(exc, px.AuthenticationError):  # the broker offers no mechanism this client can log in by
        if external:
            return (f"the broker at {at} does not offer login by certificate (auth_mechanism=external): enable "
                    "its rabbitmq_auth_mechanism_ssl plugin and add EXTERNAL to auth_mechanisms in rabbitmq.conf, "
                    "or log in with a user name and password")
        return f"the broker at {at} does not offer login by user name and password (PLAIN): {exc}"
    if isinstance(exc, px.ProbableAuthenticationError):
        if external:
            return _certificate_refused(params)
        return (f"the broker at {at} refused the login of user {user!r}: wrong user name or password? "
                "Fix the credentials in --url or AMQP_URL")
    if isinstance(exc, px.ProbableAccessDeniedError):
        return (f"the broker at {at} has no virtual host {vhost!r}, or user {user!r} may not use it: "
                f"create it (`rabbitmqctl add_vhost {vhost}` and `rabbitmqctl set_permissions -p {vhost} "
                f"{user} '.*' '.*' '.*'`) or name another in --url")
    if isinstance(exc, px.ChannelClosedByBroker):
        return _channel_closed(exc, queue)
    if isinstance(exc, px.ConnectionBlockedTimeout):
        return (f"the broker at {at} held this publisher back for longer than the URL's blocked_connection_timeout="
                f"{params.blocked_connection_timeout:g} s: it is low on memory or disk (a resource alarm); free "
                "some, or raise the broker's limits")
    if isinstance(exc, px.ConnectionClosedByBroker):
        return f"the broker at {at} closed the connection: ({exc.reply_code}) {exc.reply_text}"
    cause = root_cause(exc)
    if isinstance(cause, socket.gaierror):
        return f"cannot find the broker's host {params.host!r} ({cause.strerror}): check the host in --url or AMQP_URL"
    tls = _tls_failure(exc, cause, params)
    if tls:
        return tls
    if timed_out(exc):
        return f"no answer from the broker at {at} within {bound(exc, params):g} s: {TIMEOUT_HINT}"
    if isinstance(cause, ConnectionRefusedError):
        return f"no RabbitMQ broker answers at {at} (connection refused): {START_HINT}"
    if isinstance(cause, (OSError, px.AMQPConnectionError)) or isinstance(exc, px.AMQPConnectionError):
        detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else _short(cause)
        return f"lost or could not open the connection to the broker at {at} ({detail}): {START_HINT}"
    return f"{_short(cause)}"


def timed_out(exc: BaseException) -> bool:
    """Whether a connection failed for want of an answer (nothing refused it): the TCP connection was not
    taken in time, or the broker took it and never finished the handshake."""
    cause = root_cause(exc)
    return isinstance(cause, TimeoutError) or _handshake_timed_out(cause)


def _handshake_timed_out(cause: BaseException) -> bool:
    # pika's bound on the whole handshake ran out: one error, or (pika having closed the half-open connection
    # itself, as its SelectConnection does) its words in another
    return isinstance(cause, AMQPConnectorStackTimeout) or (
        isinstance(cause, px.ConnectionOpenAborted) and "Timeout while setting up AMQP" in str(cause))


def bound(exc: BaseException, params: pika.ConnectionParameters) -> float:
    """How long a connection that timed out waited: the TCP bound, or the bound on the whole handshake."""
    if _handshake_timed_out(root_cause(exc)):
        return float(params.stack_timeout)
    return float(params.socket_timeout)


def _certificate_refused(params: pika.ConnectionParameters) -> str:
    """The broker refused a login by certificate: it has no user of the name it took from the certificate."""
    tls: uri.TLS | None = getattr(params, "tls", None)
    user = tls.certificate_user if tls else None
    at = where(params)
    if user:
        return (f"the broker at {at} refused the login by certificate of user {user!r} (the certificate's CN): "
                f"create that user (`rabbitmqctl add_user {user} x`, then `rabbitmqctl clear_password {user}`), "
                "and have the broker take user names from the CN (ssl_cert_login_from = common_name; by default "
                "it takes the certificate's whole subject)")
    certfile = f" (certfile={tls.certfile})" if tls and tls.certfile else ""
    return (f"the broker at {at} refused the login by certificate{certfile}: no user there has the name it "
            "takes from the certificate (its whole subject by default, its CN with ssl_cert_login_from = "
            "common_name): create that user (`rabbitmqctl add_user NAME x`, then `rabbitmqctl clear_password "
            "NAME`)")


def _user(params: pika.ConnectionParameters) -> str:
    """Who the broker is asked to let in: the URL's user, or the client certificate's for login by certificate."""
    if isinstance(params.credentials, pika.PlainCredentials):
        return str(params.credentials.username)
    tls: uri.TLS | None = getattr(params, "tls", None)
    return (tls and tls.certificate_user) or "?"


# OpenSSL's codes for a broker certificate that chains to no CA the client trusts
_UNTRUSTED = {
    2,  # unable to get issuer certificate
    18,  # self-signed certificate
    19,  # self-signed certificate in certificate chain
    20,  # unable to get local issuer certificate
    21,  # unable to verify the first certificate
    27,  # certificate not trusted
}
_WRONG_HOST = {62, 63, 64}  # hostname, email address, IP address mismatch
# What OpenSSL says when the other end does not speak TLS at all
_NOT_TLS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE",
            "UNEXPECTED_EOF_WHILE_READING"}
# TLS alerts a broker sends when it does not accept the client's certificate
_CLIENT_CERT_REFUSED = {"UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN", "UNSUPPORTED_CERTIFICATE",
                        "CERTIFICATE_EXPIRED", "CERTIFICATE_REVOKED", "ACCESS_DENIED"}
# pika hands on a TLS alert that comes after the handshake only as text: "[SSL: TLSV13_ALERT_...] text (_ssl.c:N)"
_ALERT = re.compile(r"\[SSL: TLSV1\d?_ALERT_(?P<name>[A-Z_]+)\] (?P<text>[^(\]'\"]+?) \(")


def _tls_failure(exc: BaseException, cause: BaseException, params: pika.ConnectionParameters) -> str | None:
    """What a TLS failure means, in RabbitMQ's terms (cacertfile, certfile, ...); None if it was none."""
    at = where(params)
    tls: uri.TLS | None = getattr(params, "tls", None)
    asked = tls.server_name if tls else params.host
    if isinstance(cause, ssl.SSLCertVerificationError):
        code, message = cause.verify_code, cause.verify_message
        if code in _WRONG_HOST:
            return (f"the broker at {at} has a TLS certificate for another host: it is not valid for {asked!r}, "
                    f"the host asked for ({message.rstrip('.')}): connect by a name the certificate is for, "
                    "or give that name with server_name_indication=NAME")
        if code in _UNTRUSTED:
            if tls and tls.cacertfile:
                return (f"the broker at {at} has a TLS certificate not signed by the CA in "
                        f"cacertfile={tls.cacertfile} ({message}): name the CA that signed the broker's "
                        "certificate with cacertfile=")
            return (f"the broker at {at} has a TLS certificate not signed by a CA this system trusts ({message}): "
                    "if the broker's CA is your own, name its certificate with ?cacertfile=/path/to/ca.pem in the URL")
        return f"the broker's TLS certificate at {at} did not pass verification ({message})"
    alert = _ALERT.search(" ".join(_texts(exc)))
    if alert and params.ssl_options:
        certfile = tls.certfile if tls else None
        if alert["name"] == "CERTIFICATE_REQUIRED" and not certfile:
            return (f"the broker at {at} requires a client certificate and this URL gives none ({alert['text']}): "
                    "add certfile=/path/to/client.pem&keyfile=/path/to/client.key, a certificate signed by a "
                    "CA the broker trusts")
        if alert["name"] in _CLIENT_CERT_REFUSED:
            return (f"the broker at {at} did not accept this client's certificate"
                    f"{f' (certfile={certfile})' if certfile else ''} ({alert['text']}): it takes certificates "
                    "signed by a CA in its ssl_options.cacertfile")
        return f"the broker at {at} ended the TLS session ({alert['text']})"
    if isinstance(cause, px.IncompatibleProtocolError) and params.ssl_options:
        # TLS went through on this side, then the broker hung up before AMQP began: as it does when it wants
        # a client certificate, or does not take this one (its alert saying which may be lost on the way).
        closed = f"the broker at {at} closed the connection after the TLS handshake ({_lost(cause)})"
        if tls and tls.certfile:
            return (f"{closed}: did it refuse this client's certificate (certfile={tls.certfile})? It takes "
                    "certificates signed by a CA in its ssl_options.cacertfile")
        return (f"{closed}: if it requires a client certificate, add "
                "certfile=/path/to/client.pem&keyfile=/path/to/client.key")
    if isinstance(cause, ssl.SSLError):
        if cause.reason in _NOT_TLS:
            return (f"the broker at {at} does not speak TLS on that port ({_ssl_text(cause)}): use amqp:// for it, "
                    "or amqps:// with the broker's TLS port (usually 5671)")
        return (f"the TLS handshake with {at} failed ({_ssl_text(cause)}): does that port speak TLS "
                "(amqps:// is usually port 5671)?")
    if isinstance(cause, px.IncompatibleProtocolError) and not params.ssl_options and _speaks_tls(params):
        return (f"the broker at {at} takes TLS on that port, and this URL is amqp://: use amqps:// "
                "(with ?cacertfile=/path/to/ca.pem if the broker's CA is your own)")
    return None


def _texts(exc: BaseException) -> list[str]:
    """The text of an error and of every error it wraps."""
    texts, seen = [], set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        texts.append(str(e))
        inner = [*(getattr(e, "exceptions", None) or ()), getattr(e, "exception", None), *e.args]
        todo.extend(x for x in inner if isinstance(x, BaseException))
    return texts


def _lost(exc: BaseException) -> str:
    """How a connection was lost, from pika's text of it: 'StreamLostError: ("Stream connection lost:
    SSLEOFError(8, 'EOF occurred in violation of protocol (_ssl.c:2427)')",)' gives the words in quotes."""
    found = re.search(r"connection lost: \w+\((?:\d+, )?['\"]?(?P<words>[^'\"]+?)(?: \(_ssl\.c:\d+\))?['\"]?\)",
                      str(exc))
    return found["words"] if found else _short(exc)


def _ssl_text(exc: ssl.SSLError) -> str:
    """OpenSSL's words without the file and line of _ssl.c: '[SSL: WRONG_VERSION_NUMBER] wrong version number'."""
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc.args[1]) if len(exc.args) > 1 else str(exc))


def _speaks_tls(params: pika.ConnectionParameters, timeout: float = 3.0) -> bool:
    """Whether the broker's port answers a TLS handshake. A broker closes a plain AMQP connection to its TLS
    port after a TLS alert, which pika does not pass on; so ask the port itself. Nothing is sent but a
    TLS greeting: no credentials, and the certificate is not even looked at."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((params.host, params.port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=params.host):
                return True
    except ssl.SSLError as exc:
        return exc.reason not in _NOT_TLS  # an alert (e.g. a client certificate required): TLS all the same
    except OSError:
        return False


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for queue '(?P<queue>[^']+)'.*"
    r"received (?:the value )?(?P<ours>.+?)(?: of type '\w+')? but current is (?:the value )?(?P<theirs>.+?)"
    r"(?: of type '\w+')?$"
)


def _channel_closed(exc: px.ChannelClosedByBroker, queue: str) -> str:
    text = exc.reply_text
    found = _INEQUIVALENT.search(text)
    if found:
        q = found["queue"]
        # RabbitMQ 3 says `none` for a queue declared without x-queue-type, RabbitMQ 4 'classic': say 'classic'.
        theirs, ours = ("'classic'" if v == "none" and found["arg"] == "x-queue-type" else v
                        for v in (found["theirs"], found["ours"]))
        # Only the queue type is ours to choose: these scripts always declare their queue durable.
        match = "match it with --queue-type classic or quorum, " if found["arg"] == "x-queue-type" else ""
        return (f"queue {q!r} already exists with another {found['arg']} (the broker has {theirs}, "
                f"this asked for {ours}): {match}use another --queue, or delete it with "
                f"`rabbitmqctl delete_queue {q}` (its messages go with it)")
    if "larger than configured max size" in text:
        return (f"the broker refused a message as too large ({text.split(' - ', 1)[-1]}): "
                "send smaller tasks, or raise max_message_size in rabbitmq.conf")
    if "acknowledgement" in text and "timed out" in text:
        return (f"the broker took back a task this worker held unacknowledged for longer than its "
                f"consumer_timeout ({text}); for tasks that long, raise consumer_timeout in rabbitmq.conf")
    if exc.reply_code == 404:
        return f"the broker has no queue {queue!r} ({text}): start the producer or a worker once to declare it"
    if exc.reply_code == 403 and "exclusive use" in text:
        return (f"queue {queue!r} is in exclusive use by another consumer ({text}): stop that one, or use "
                "another --queue")
    if exc.reply_code == 403:
        return f"the broker refused access ({text}): give the user permissions on the queue"
    return f"the broker closed the channel: ({exc.reply_code}) {text}"
