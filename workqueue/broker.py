"""The broker's URL, and what pika's errors mean in words a user can act on."""

from __future__ import annotations

import logging
import re
import socket
import ssl
from urllib.parse import urlsplit

import pika
import pika.exceptions as px

from workqueue.cli import Failure

# pika logs every failure it raises; with no logging set up, Python would print those records
# on stderr beside our own one-line errors. The exceptions say it all.
logging.getLogger("pika").addHandler(logging.NullHandler())
logging.getLogger("pika").propagate = False

START_HINT = (
    "start one (`sudo rabbitmq-server -detached`, or `docker compose up -d rabbitmq` here), "
    "or point --url or AMQP_URL at yours"
)


def parameters(url: str) -> pika.URLParameters:
    """pika's parameters for a broker URL; a malformed URL is a Failure that does not echo it."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError(f"it starts with {parts.scheme + '://' if parts.scheme else 'no scheme'}, "
                             "not amqp:// or amqps://")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        return pika.URLParameters(url)
    except ValueError as exc:
        text = str(exc)
        password = _password(url)
        if password:
            text = text.replace(password, "***")
        raise Failure(f"malformed broker URL {safe_url(url)}: {text}; "
                      "the form is amqp://user:password@host:port/vhost") from None


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


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
    user = params.credentials.username if isinstance(params.credentials, pika.PlainCredentials) else "?"
    vhost = params.virtual_host
    if isinstance(exc, (px.ProbableAuthenticationError, px.AuthenticationError)):
        return (f"the broker at {at} refused the login of user {user!r}: wrong user name or password? "
                "Fix the credentials in --url or AMQP_URL")
    if isinstance(exc, px.ProbableAccessDeniedError):
        return (f"the broker at {at} has no virtual host {vhost!r}, or user {user!r} may not use it: "
                f"create it (`rabbitmqctl add_vhost {vhost}` and `rabbitmqctl set_permissions -p {vhost} "
                f"{user} '.*' '.*' '.*'`) or name another in --url")
    if isinstance(exc, px.ChannelClosedByBroker):
        return _channel_closed(exc, queue)
    if isinstance(exc, px.ConnectionClosedByBroker):
        return f"the broker at {at} closed the connection: ({exc.reply_code}) {exc.reply_text}"
    cause = root_cause(exc)
    if isinstance(cause, socket.gaierror):
        return f"cannot find the broker's host {params.host!r} ({cause.strerror}): check the host in --url or AMQP_URL"
    if isinstance(cause, ssl.SSLError):
        return (f"the TLS handshake with {at} failed ({cause.reason or cause}): does that port speak TLS "
                "(amqps:// is usually port 5671)?")
    if isinstance(cause, ConnectionRefusedError):
        return f"no RabbitMQ broker answers at {at} (connection refused): {START_HINT}"
    if isinstance(cause, (OSError, px.AMQPConnectionError)) or isinstance(exc, px.AMQPConnectionError):
        detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else _short(cause)
        return f"lost or could not open the connection to the broker at {at} ({detail}): {START_HINT}"
    return f"{_short(cause)}"


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
        return (f"queue {q!r} already exists with another {found['arg']} (the broker has {found['theirs']}, "
                f"this asked for {found['ours']}): match it with --queue-type classic or quorum, use another "
                f"--queue, or delete it with `rabbitmqctl delete_queue {q}` (its messages go with it)")
    if "larger than configured max size" in text:
        return (f"the broker refused a message as too large ({text.split(' - ', 1)[-1]}): "
                "send smaller tasks, or raise max_message_size in rabbitmq.conf")
    if "acknowledgement" in text and "timed out" in text:
        return (f"the broker took back a task this worker held unacknowledged for longer than its "
                f"consumer_timeout ({text}); for tasks that long, raise consumer_timeout in rabbitmq.conf")
    if exc.reply_code == 404:
        return f"the broker has no queue {queue!r} ({text}): start the producer or a worker once to declare it"
    if exc.reply_code == 403:
        return f"the broker refused access ({text}): give the user permissions on the queue"
    return f"the broker closed the channel: ({exc.reply_code}) {text}"
