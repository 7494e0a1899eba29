"""What broker.explain makes of pika's exceptions, built here by hand as pika builds them; root_cause
through pika's wrappers; and which errors nodes.fatal gives up on. No text names the password."""

from __future__ import annotations

import errno
import socket
import ssl

import pika.exceptions as px
import pytest
from pika.adapters.utils import connection_workflow as cw

from workqueue import broker, nodes

PASSWORD = "s3cr3t-pw"
URL = f"amqp://alice:{PASSWORD}@rabbit.example:5672/prod?blocked_connection_timeout=30"

REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
LOGIN_REFUSED = ("ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused using authentication "
                 "mechanism PLAIN. For details see the broker logfile.'")
# pika's ProbableAuthenticationError when the connection is lost (not closed by the broker) while logging in
LOST_IN_LOGIN = "StreamLostError: ('Transport indicated EOF',)"
VHOST_DOWN = 'ConnectionClosedByBroker: (541) "INTERNAL_ERROR - vhost prod is down"'
VHOST_REFUSED = 'ConnectionClosedByBroker: (530) "NOT_ALLOWED - access to vhost \'prod\' refused for user \'alice\'"'
INEQUIVALENT = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'task_queue' in vhost '/': "


@pytest.fixture
def params():
    return broker.parameters(URL)


def explain(exc: BaseException, url: str = URL, queue: str = "task_queue") -> str:
    text = broker.explain(exc, broker.parameters(url), queue)
    assert PASSWORD not in text
    return text


def socket_error(exc: BaseException) -> px.AMQPConnectionError:
    """What BlockingConnection raises for a TCP connection that failed."""
    return px.AMQPConnectionError(cw.AMQPConnectorSocketConnectError(exc))


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message} "
                                          "(_ssl.c:1006)")
    exc.verify_code, exc.verify_message, exc.reason = code, message, "CERTIFICATE_VERIFY_FAILED"
    return exc


def ssl_error(reason: str, words: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] {words} (_ssl.c:1006)")
    exc.reason = reason
    return exc


# -- logins and virtual hosts


def test_refused_login_names_the_user_never_the_password():
    assert explain(px.ProbableAuthenticationError(LOGIN_REFUSED)) == (
        "the broker at rabbit.example:5672 refused the login of user 'alice': wrong user name or password? "
        "Fix the credentials in --url or AMQP_URL")


def test_no_plain_mechanism_on_the_broker():
    assert explain(px.AuthenticationError("PLAIN")).startswith(
        "the broker at rabbit.example:5672 does not offer login by user name and password (PLAIN)")


def test_no_external_mechanism_on_the_broker_names_the_plugin(certs):
    url = f"amqps://rabbit.example/?auth_mechanism=external&certfile={certs.cert}&keyfile={certs.key}"
    assert "enable its rabbitmq_auth_mechanism_ssl plugin" in explain(px.AuthenticationError("EXTERNAL"), url)


def test_refused_login_by_certificate_names_the_certificates_cn(certs):
    url = f"amqps://rabbit.example/?auth_mechanism=external&certfile={certs.cert}&keyfile={certs.key}"
    text = explain(px.ProbableAuthenticationError(LOGIN_REFUSED), url)
    assert text.startswith("the broker at rabbit.example:5671 refused the login by certificate of user 'alice' "
                           "(the certificate's CN): create that user (`rabbitmqctl add_user alice x`")


def test_refused_virtual_host_says_how_to_create_it():
    assert explain(px.ProbableAccessDeniedError(VHOST_REFUSED)) == (
        "the broker at rabbit.example:5672 has no virtual host 'prod', or user 'alice' may not use it: create it "
        "(`rabbitmqctl add_vhost prod` and `rabbitmqctl set_permissions -p prod alice '.*' '.*' '.*'`) or name "
        "another in --url")


# -- channels closed by the broker


@pytest.mark.parametrize(("received", "current", "theirs", "ours"), [
    # RabbitMQ 3.x: a classic queue declared without x-queue-type has none, which is 'classic'
    ("the value 'quorum' of type 'longstr'", "none", "'classic'", "'quorum'"),
    ("none", "the value 'quorum' of type 'longstr'", "'quorum'", "'classic'"),
    # RabbitMQ 4.x fills in the default type on declare (rabbit_amqqueue:augment_declare_args)
    ("the value 'quorum' of type 'longstr'", "the value 'classic' of type 'longstr'", "'classic'", "'quorum'"),
    ("the value 'classic' of type 'longstr'", "the value 'quorum' of type 'longstr'", "'quorum'", "'classic'"),
])
def test_inequivalent_queue_type_says_which_the_broker_has(received, current, theirs, ours):
    text = explain(px.ChannelClosedByBroker(406, f"{INEQUIVALENT}received {received} but current is {current}"))
    assert text == (f"queue 'task_queue' already exists with another x-queue-type (the broker has {theirs}, this "
                    f"asked for {ours}): match it with --queue-type classic or quorum, use another --queue, or "
                    "delete it with `rabbitmqctl delete_queue task_queue` (its messages go with it)")


def test_inequivalent_durable_in_the_wording_without_types():
    text = explain(px.ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent arg 'durable' for queue "
                                                 "'task_queue' in vhost '/': received 'true' but current is 'false'"))
    assert text == ("queue 'task_queue' already exists with another durable (the broker has 'false', this "
                    "asked for 'true'): use another --queue, or delete it with `rabbitmqctl delete_queue task_queue` "
                    "(its messages go with it)")  # no --queue-type advice: these scripts always declare it durable


def test_message_too_large_names_max_message_size():
    text = explain(px.ChannelClosedByBroker(406, "PRECONDITION_FAILED - message size 70000 is larger than "
                                                 "configured max size 65536"))
    assert text == ("the broker refused a message as too large (message size 70000 is larger than configured max "
                    "size 65536): send smaller tasks, or raise max_message_size in rabbitmq.conf")


def test_consumer_timeout_names_consumer_timeout():
    text = explain(px.ChannelClosedByBroker(406, "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed "
                                                 "out. Timeout value used: 1800000 ms. This timeout value can be "
                                                 "configured, see consumers doc guide to learn more"))
    assert text.startswith("the broker took back a task this worker held unacknowledged for longer than its "
                           "consumer_timeout (PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out.")
    assert text.endswith("; for tasks that long, raise consumer_timeout in rabbitmq.conf")


def test_no_queue_names_the_queue():
    assert explain(px.ChannelClosedByBroker(404, "NOT_FOUND - no queue 'jobs' in vhost 'prod'"), queue="jobs") == (
        "the broker has no queue 'jobs' (NOT_FOUND - no queue 'jobs' in vhost 'prod'): start the producer or a "
        "worker once to declare it")


def test_queue_in_exclusive_use():
    text = explain(px.ChannelClosedByBroker(403, "ACCESS_REFUSED - queue 'task_queue' in vhost 'prod' in exclusive "
                                                 "use"))
    assert text.startswith("queue 'task_queue' is in exclusive use by another consumer (")


def test_other_access_refused_asks_for_permissions():
    text = explain(px.ChannelClosedByBroker(403, "ACCESS_REFUSED - access to queue 'task_queue' in vhost 'prod' "
                                                 "refused for user 'alice'"))
    assert text.startswith("the broker refused access (ACCESS_REFUSED - access to queue")
    assert text.endswith("give the user permissions on the queue")


def test_any_other_channel_close_is_shown_as_it_came():
    assert explain(px.ChannelClosedByBroker(406, "PRECONDITION_FAILED - unknown delivery tag 7")) == (
        "the broker closed the channel: (406) PRECONDITION_FAILED - unknown delivery tag 7")


# -- the connection


def test_connection_closed_by_the_broker_shows_its_reply():
    exc = px.ConnectionClosedByBroker(320, "CONNECTION_FORCED - broker forced connection closure with reason "
                                           "'shutdown'")
    assert explain(exc) == ("the broker at rabbit.example:5672 closed the connection: (320) CONNECTION_FORCED - "
                            "broker forced connection closure with reason 'shutdown'")


def test_blocked_connection_timeout_names_the_urls_setting():
    text = explain(px.ConnectionBlockedTimeout("Blocked connection timeout expired."))
    assert text.startswith("the broker at rabbit.example:5672 held this publisher back for longer than the URL's "
                           "blocked_connection_timeout=30 s: it is low on memory or disk")


def test_connection_refused_says_how_to_start_a_broker():
    assert explain(socket_error(REFUSED)) == (
        f"no RabbitMQ broker answers at rabbit.example:5672 (connection refused): {broker.START_HINT}")


def test_connection_refused_inside_the_workflows_wrapper():
    exc = cw.AMQPConnectionWorkflowFailed([cw.AMQPConnectorSocketConnectError(REFUSED)])
    assert explain(exc).startswith("no RabbitMQ broker answers at rabbit.example:5672 (connection refused)")


def test_unknown_host_names_the_host():
    exc = cw.AMQPConnectionWorkflowFailed([cw.AMQPConnectorSocketConnectError(
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"))])
    assert explain(exc) == ("cannot find the broker's host 'rabbit.example' (Name or service not known): check the "
                            "host in --url or AMQP_URL")


def test_a_timeout_says_no_answer_within_the_bound_in_our_words_and_not_to_start_a_broker():
    tcp = explain(socket_error(TimeoutError("TCP connection attempt timed out: '127.0.0.1'/(<AddressFamily...")))
    assert tcp == f"no answer from the broker at rabbit.example:5672 within 10 s: {broker.TIMEOUT_HINT}"
    stack = cw.AMQPConnectorStackTimeout("Timeout during AMQP handshake'127.0.0.1'/(<AddressFamily.AF_INET: 2>, ...")
    assert explain(stack) == f"no answer from the broker at rabbit.example:5672 within 15 s: {broker.TIMEOUT_HINT}"
    aborted = px.ConnectionOpenAborted("Connection.close() called before connection finished opening: prev_state="
                                       "PROTOCOL (320): \"Timeout while setting up AMQP to 'localhost'/(...)\"")
    assert explain(aborted).startswith("no answer from the broker at rabbit.example:5672 within 15 s: check the host")
    assert "AddressFamily" not in tcp + explain(stack) and "start one" not in tcp


def test_a_lost_stream_is_a_lost_connection():
    lost = px.StreamLostError("Stream connection lost: ConnectionResetError(104, 'Connection reset by peer')")
    assert explain(lost).startswith("lost or could not open the connection to the broker at rabbit.example:5672 "
                                    "(Stream connection lost: ConnectionResetError(104, ")


def test_something_else_is_shown_short():
    assert explain(RuntimeError("x" * 300)) == "x" * 200 + "..."
    assert explain(RuntimeError()) == "RuntimeError"


# -- TLS


@pytest.mark.parametrize("wrap", [
    lambda e: e,  # as BlockingConnection raises it
    lambda e: cw.AMQPConnectionWorkflowFailed([cw.AMQPConnectorTransportSetupError(e)]),  # as SelectConnection does
])
def test_certificate_for_another_host_suggests_server_name_indication(wrap):
    exc = wrap(verify_error(62, "Hostname mismatch, certificate is not valid for 'rabbit.example'."))
    assert explain(exc, "amqps://u:p@rabbit.example/") == (
        "the broker at rabbit.example:5671 has a TLS certificate for another host: it is not valid for "
        "'rabbit.example', the host asked for (Hostname mismatch, certificate is not valid for 'rabbit.example'): "
        "connect by a name the certificate is for, or give that name with server_name_indication=NAME")


def test_wrong_host_names_the_server_name_indication_asked_for():
    text = explain(verify_error(62, "Hostname mismatch"), "amqps://u:p@10.0.0.5/?server_name_indication=mq.example")
    assert "it is not valid for 'mq.example', the host asked for" in text


@pytest.mark.parametrize("code", [18, 19, 20, 21])
def test_untrusted_certificate_without_cacertfile_suggests_one(code):
    text = explain(verify_error(code, "self-signed certificate"), "amqps://u:p@rabbit.example/")
    assert text == ("the broker at rabbit.example:5671 has a TLS certificate not signed by a CA this system trusts "
                    "(self-signed certificate): if the broker's CA is your own, name its certificate with "
                    "?cacertfile=/path/to/ca.pem in the URL")


def test_untrusted_certificate_with_cacertfile_names_that_file(certs):
    text = explain(verify_error(20, "unable to get local issuer certificate"),
                   f"amqps://u:p@rabbit.example/?cacertfile={certs.other_ca}")
    assert text.startswith(f"the broker at rabbit.example:5671 has a TLS certificate not signed by the CA in "
                           f"cacertfile={certs.other_ca} (unable to get local issuer certificate)")


def test_other_verification_failures_show_openssls_words():
    assert explain(verify_error(10, "certificate has expired"), "amqps://u:p@rabbit.example/") == (
        "the broker's TLS certificate at rabbit.example:5671 did not pass verification (certificate has expired)")


def test_a_port_that_does_not_speak_tls():
    text = explain(ssl_error("WRONG_VERSION_NUMBER", "wrong version number"), "amqps://u:p@rabbit.example:5672/")
    assert text == ("the broker at rabbit.example:5672 does not speak TLS on that port ([SSL: WRONG_VERSION_NUMBER] "
                    "wrong version number): use amqp:// for it, or amqps:// with the broker's TLS port (usually 5671)")


def test_another_handshake_failure_asks_whether_the_port_speaks_tls():
    text = explain(ssl_error("NO_PROTOCOLS_AVAILABLE", "no protocols available"), "amqps://u:p@rabbit.example/")
    assert text.startswith("the TLS handshake with rabbit.example:5671 failed ([SSL: NO_PROTOCOLS_AVAILABLE] no "
                           "protocols available)")


def test_alert_certificate_required_without_certfile_asks_for_one():
    lost = px.StreamLostError("Stream connection lost: SSLError(1, '[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 "
                              "alert certificate required (_ssl.c:2580)')")
    assert explain(lost, "amqps://u:p@rabbit.example/").startswith(
        "the broker at rabbit.example:5671 requires a client certificate and this URL gives none (tlsv13 alert "
        "certificate required): add certfile=")


def test_alert_unknown_ca_says_the_client_certificate_was_refused(certs):
    lost = px.StreamLostError("Stream connection lost: SSLError(1, '[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown "
                              "ca (_ssl.c:2580)')")
    text = explain(px.IncompatibleProtocolError(repr(lost)), f"amqps://rabbit.example/?certfile={certs.both}")
    assert text.startswith(f"the broker at rabbit.example:5671 did not accept this client's certificate (certfile="
                           f"{certs.both}) (tlsv1 alert unknown ca)")


def test_closed_after_the_handshake_suspects_the_client_certificate(certs):
    lost = px.StreamLostError("Stream connection lost: SSLEOFError(8, 'EOF occurred in violation of protocol "
                              "(_ssl.c:2427)')")
    exc = px.IncompatibleProtocolError(repr(lost))
    assert explain(exc, "amqps://u:p@rabbit.example/").startswith(
        "the broker at rabbit.example:5671 closed the connection after the TLS handshake (EOF occurred in violation "
        "of protocol): if it requires a client certificate, add certfile=")
    assert "did it refuse this client's certificate (certfile=" in explain(
        exc, f"amqps://u:p@rabbit.example/?certfile={certs.both}")


def test_amqp_to_a_tls_port_says_use_amqps(monkeypatch):
    monkeypatch.setattr(broker, "_speaks_tls", lambda params, timeout=3.0: True)
    exc = px.IncompatibleProtocolError("StreamLostError: ('Transport indicated EOF',)")
    assert explain(exc).startswith("the broker at rabbit.example:5672 takes TLS on that port, and this URL is "
                                   "amqp://: use amqps://")
    monkeypatch.setattr(broker, "_speaks_tls", lambda params, timeout=3.0: False)
    assert explain(exc).startswith("lost or could not open the connection to the broker at rabbit.example:5672")


# -- root_cause, fatal, reason


def test_root_cause_goes_through_every_wrapper_to_the_last_error():
    first = cw.AMQPConnectorSocketConnectError(TimeoutError("timed out"))
    last = cw.AMQPConnectorSocketConnectError(REFUSED)
    assert broker.root_cause(px.AMQPConnectionError(cw.AMQPConnectionWorkflowFailed([first, last]))) is REFUSED
    assert broker.root_cause(REFUSED) is REFUSED


def test_root_cause_of_an_error_that_wraps_itself_ends():
    exc = px.AMQPConnectionError()
    exc.args = (exc,)
    assert broker.root_cause(exc) is exc


@pytest.mark.parametrize(("exc", "expected"), [
    (px.AuthenticationError("PLAIN"), True),
    (px.ProbableAuthenticationError(LOGIN_REFUSED), True),
    (px.ProbableAccessDeniedError(VHOST_REFUSED), True),
    (px.ProbableAuthenticationError(LOST_IN_LOGIN), False),  # lost, not refused: another node may do
    (px.ProbableAccessDeniedError(VHOST_DOWN), False),  # down on that node only
    (px.ConnectionClosedByBroker(320, "CONNECTION_FORCED - shutdown"), False),
    (socket_error(REFUSED), False),
    (px.StreamLostError("Stream connection lost"), False),
])
def test_fatal_only_for_a_refusal_no_other_node_will_mend(exc, expected):
    assert nodes.fatal(exc) is expected


@pytest.mark.parametrize(("exc", "expected"), [
    (socket_error(REFUSED), "connection refused"),
    (cw.AMQPConnectionWorkflowFailed([cw.AMQPConnectorSocketConnectError(TimeoutError(errno.ETIMEDOUT, "Timed out"))]),
     "timed out"),
    (px.ConnectionClosedByBroker(320, "CONNECTION_FORCED - broker forced connection closure"),
     "closed by the broker: CONNECTION_FORCED - broker forced connection closure"),
    (px.StreamLostError("Stream connection lost: EOF"), "Stream connection lost: EOF"),
    (px.AMQPConnectionError(), "AMQPConnectionError"),
])
def test_reason_is_a_few_words(exc, expected):
    assert nodes.reason(exc) == expected
