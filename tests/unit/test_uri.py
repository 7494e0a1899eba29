"""RabbitMQ's URI query parameters read into pika's parameters (uri.Parameters, broker.parameters), and
what a URL that gets them wrong is told: a Failure naming the parameter or the file, never the password."""

from __future__ import annotations

import ssl
from urllib.parse import quote

import pika
import pika.credentials
import pytest

from workqueue import broker, uri
from workqueue.report import Failure

PASSWORD = "s3cr3t-pw"


def failure(url: str) -> str:
    with pytest.raises(Failure) as caught:
        broker.parameters(url)
    text = str(caught.value)
    assert PASSWORD not in text
    return text


def test_plain_amqp_url_has_no_tls_and_plain_credentials():
    params = broker.parameters(f"amqp://alice:{PASSWORD}@rabbit.example:5673/prod")
    assert params.tls is None and params.ssl_options is None
    assert (params.host, params.port, params.virtual_host) == ("rabbit.example", 5673, "prod")
    assert isinstance(params.credentials, pika.PlainCredentials)
    assert params.credentials.username == "alice" and params.credentials.password == PASSWORD
    assert params.external is False


def test_amqps_without_parameters_uses_the_system_cas_and_checks_the_host(system_cas):
    params = broker.parameters("amqps://u:p@rabbit.example/%2F")
    assert params.ssl_options.context in system_cas  # (pika makes one of its own for amqps:// too)
    assert params.port == 5671
    assert params.tls == uri.TLS(server_name="rabbit.example")
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert params.ssl_options.server_hostname == "rabbit.example"


def test_cacertfile_certfile_keyfile_make_an_ssl_context_with_the_client_certificate(certs, system_cas):
    params = broker.parameters(f"amqps://u:p@rabbit.example/%2F?cacertfile={certs.ca}&certfile={certs.cert}"
                               f"&keyfile={certs.key}")
    assert isinstance(params.ssl_options, pika.SSLOptions)
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1 and context not in system_cas  # that file's CA, not the system's
    assert params.tls == uri.TLS(server_name="rabbit.example", cacertfile=str(certs.ca), certfile=str(certs.cert),
                                 keyfile=str(certs.key), certificate_user="alice")


def test_certfile_holding_the_key_too_needs_no_keyfile(certs):
    params = broker.parameters(f"amqps://u:p@h/?certfile={certs.both}")
    assert params.tls.certificate_user == "alice" and params.tls.keyfile is None


def test_verify_none_turns_checks_off_and_warns(capsys):
    params = broker.parameters("amqps://u:p@rabbit.example/?verify=verify_none")
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    assert params.tls.verify is False
    err = capsys.readouterr().err
    assert err.startswith("warning: verify=verify_none: the broker's certificate at rabbit.example:5671 is not "
                          "checked")
    assert "cacertfile=" in err


def test_verify_peer_is_the_default_and_warns_nothing(capsys):
    params = broker.parameters("amqps://u:p@h/?verify=verify_peer")
    assert params.tls.verify and params.ssl_options.context.verify_mode == ssl.CERT_REQUIRED
    assert capsys.readouterr().err == ""


def test_unknown_verify_value_is_refused():
    assert failure(f"amqps://u:{PASSWORD}@h/?verify=verify_maybe").startswith("verify=verify_maybe in the broker URL")


def test_server_name_indication_is_the_name_sent_and_checked():
    params = broker.parameters("amqps://u:p@10.0.0.5/?server_name_indication=rabbit.example")
    assert params.host == "10.0.0.5"
    assert params.ssl_options.server_hostname == "rabbit.example"
    assert params.tls.server_name == "rabbit.example"


def test_empty_server_name_indication_is_refused():
    assert failure("amqps://u:p@h/?server_name_indication=") == "server_name_indication= names no host"


def test_auth_mechanism_external_with_a_certificate_uses_external_credentials(certs):
    params = broker.parameters(f"amqps://h/?auth_mechanism=external&certfile={certs.cert}&keyfile={certs.key}")
    assert params.external is True
    assert isinstance(params.credentials, pika.credentials.ExternalCredentials)
    assert params.tls.certificate_user == "alice"


def test_auth_mechanism_is_case_insensitive_when_repeated(certs):
    params = broker.parameters(f"amqps://h/?auth_mechanism=EXTERNAL&auth_mechanism=external&certfile={certs.both}")
    assert params.external is True


def test_auth_mechanism_external_without_certfile_is_refused():
    text = failure(f"amqps://u:{PASSWORD}@h/?auth_mechanism=external")
    assert text.startswith("auth_mechanism=external logs in with a client certificate, and this URL gives none")


def test_auth_mechanism_external_on_amqp_is_refused():
    assert "which takes TLS: use amqps://" in failure(f"amqp://u:{PASSWORD}@h/?auth_mechanism=external")


def test_auth_mechanism_given_two_ways_or_unknown_is_refused():
    assert "is given as external and plain" in failure("amqps://h/?auth_mechanism=plain&auth_mechanism=external")
    assert failure("amqp://h/?auth_mechanism=amqplain").startswith("auth_mechanism=amqplain in the broker URL")


@pytest.mark.parametrize("name", uri.TLS_PARAMETERS)
def test_tls_parameters_on_an_amqp_url_are_refused(name, certs):
    text = failure(f"amqp://u:{PASSWORD}@h/?{name}={certs.ca}")
    assert text.startswith(f"{name}= is for amqps:// URLs (TLS); this URL is amqp://")


def test_connection_timeout_in_ms_bounds_the_whole_set_up_tcp_tls_and_amqp():
    params = broker.parameters("amqp://h/?connection_timeout=2500")
    assert (params.socket_timeout, params.stack_timeout, params.timeouts_given) == (2.5, 2.5, True)
    params = broker.parameters("amqp://h/?connection_timeout=60000")
    assert (params.socket_timeout, params.stack_timeout) == (60.0, 60.0)


def test_without_timeouts_in_the_url_pikas_own_bounds_stay_and_the_heartbeat_is_five_seconds():
    params = broker.parameters("amqp://h/")
    assert (params.socket_timeout, params.stack_timeout, params.timeouts_given) == (
        pika.ConnectionParameters.DEFAULT_SOCKET_TIMEOUT, pika.ConnectionParameters.DEFAULT_STACK_TIMEOUT, False)
    assert params.heartbeat == uri.HEARTBEAT == 5
    assert broker.parameters("amqp://h/?heartbeat=30").heartbeat == 30
    assert broker.parameters("amqp://h/?stack_timeout=4").timeouts_given


def test_connection_timeout_keeps_an_explicit_stack_timeout():
    params = broker.parameters("amqp://h/?connection_timeout=60000&stack_timeout=3")
    assert (params.socket_timeout, params.stack_timeout) == (60.0, 3.0)


@pytest.mark.parametrize("value", ["0", "1.5", "-3", "soon", ""])
def test_connection_timeout_must_be_whole_milliseconds(value):
    assert failure(f"amqp://u:{PASSWORD}@h/?connection_timeout={value}").startswith(
        f"connection_timeout={value} in the broker URL: expected a whole number of milliseconds")


def test_connection_timeout_with_socket_timeout_is_refused():
    assert "both set how long to wait" in failure("amqp://h/?connection_timeout=100&socket_timeout=1")


def test_a_parameter_given_twice_is_refused_naming_both_values(certs):
    text = failure(f"amqps://u:{PASSWORD}@h/?cacertfile={certs.ca}&cacertfile={certs.other_ca}")
    assert text == (f"cacertfile= is given 2 times in the broker URL ({certs.ca} and {certs.other_ca}): give it once")


def test_pika_parameters_pass_through_unchanged():
    params = broker.parameters("amqps://h/?heartbeat=7&channel_max=9&blocked_connection_timeout=30&verify=verify_peer")
    assert (params.heartbeat, params.channel_max, params.blocked_connection_timeout) == (7, 9, 30)


def test_url_encoded_parameter_values_are_decoded(certs):
    encoded = str(certs.ca).replace("/", "%2F")
    params = broker.parameters(f"amqps://h/?cacertfile={encoded}")
    assert params.tls.cacertfile == str(certs.ca)


def test_pika_ssl_options_with_rabbitmqs_tls_parameters_is_refused(certs):
    options = quote(repr({"ca_certs": str(certs.ca)}))
    text = failure(f"amqps://h/?ssl_options={options}&cacertfile={certs.ca}")
    assert text.startswith("ssl_options= and cacertfile= both set TLS options")


def test_pikas_own_ssl_options_alone_are_taken_as_pika_takes_them(certs):
    options = quote(repr({"ca_certs": str(certs.ca), "server_hostname": "rabbit.example"}))
    params = broker.parameters(f"amqps://h/?ssl_options={options}")
    assert params.tls == uri.TLS(server_name="rabbit.example")
    assert params.ssl_options.server_hostname == "rabbit.example"


def test_missing_cacertfile_is_named_with_its_role(tmp_path):
    missing = tmp_path / "nope.pem"
    assert failure(f"amqps://u:{PASSWORD}@h/?cacertfile={missing}") == (
        f"cannot read cacertfile {missing} (no such file or directory): it names the certificate (PEM) of the CA "
        "that signed the broker's certificate")


def test_cacertfile_that_holds_no_certificate_is_refused(certs):
    assert failure(f"amqps://h/?cacertfile={certs.key}").startswith(f"cacertfile {certs.key} holds no certificate")


def test_empty_file_parameter_names_no_file():
    assert failure("amqps://h/?certfile=") == "certfile= in the broker URL names no file"


def test_keyfile_without_certfile_is_refused(certs):
    assert failure(f"amqps://h/?keyfile={certs.key}").startswith(f"keyfile={certs.key} needs certfile=")


def test_certfile_without_a_key_asks_for_keyfile(certs):
    assert failure(f"amqps://h/?certfile={certs.cert}") == (
        f"certfile {certs.cert} holds no private key: name the key's file with keyfile=")


def test_keyfile_of_another_certificate_is_refused(certs):
    assert failure(f"amqps://h/?certfile={certs.cert}&keyfile={certs.other_key}") == (
        f"keyfile {certs.other_key} is not the key of certfile {certs.cert}")


def test_keyfile_that_is_a_certificate_is_refused(certs):
    assert failure(f"amqps://h/?certfile={certs.cert}&keyfile={certs.ca}").startswith(
        f"keyfile {certs.ca} holds no private key in PEM form")


@pytest.mark.parametrize("url", [
    f"amqp://alice:{PASSWORD}@h:port/%2F",  # a port that is not a number
    f"amqp://alice:{PASSWORD}@h:99999/%2F",  # out of range
    f"http://alice:{PASSWORD}@h/%2F",  # not amqp
    f"amqp://alice:{PASSWORD}@h/%2F?nosuch=1",  # pika's unknown parameter
    f"amqp://alice:{PASSWORD}@h/%2F?heartbeat=often",  # pika's bad value
    f"amqp://alice:{PASSWORD}@h/%2F?ssl_options=%7B",  # pika's Python literal, broken
])
def test_malformed_url_is_named_without_its_password(url):
    text = failure(url)
    assert text.startswith(f"malformed broker URL {url.replace(PASSWORD, '***')}: ")
    assert text.endswith("; the form is amqp://user:password@host:port/vhost")


def test_a_value_equal_to_the_password_is_masked_too():
    assert "***" in failure("amqp://alice:often@h/?heartbeat=often")


def test_safe_url_masks_only_the_password():
    assert broker.safe_url(f"amqp://alice:{PASSWORD}@h:5672/%2F") == "amqp://alice:***@h:5672/%2F"
    assert broker.safe_url("amqp://alice@h/") == "amqp://alice@h/"
    assert broker.safe_url("amqp://h/") == "amqp://h/"


@pytest.mark.parametrize("url", [
    f"amqp://alice:{PASSWORD}@[::1/%2F",  # urlsplit itself refuses it: Invalid IPv6 URL
    f"amqp://alice:{PASSWORD}@[::1/%2F?heartbeat=5",
])
def test_url_that_urlsplit_refuses_is_named_without_its_password(url):
    assert failure(url).startswith(f"malformed broker URL {url.replace(PASSWORD, '***')}: Invalid IPv6 URL")
    assert broker.safe_url(url) == url.replace(PASSWORD, "***")


@pytest.mark.parametrize(("options", "said"), [
    ({}, "cafile, capath and cadata cannot be all omitted"),  # pika's TypeError
    ({"ca_certs": 1}, "cafile should be a valid filesystem path"),  # TypeError
    ({"ca_certs": "/no/such/ca.pem"}, "No such file or directory"),  # FileNotFoundError
    ([1], "'list' object has no attribute 'get'"),  # AttributeError
])
def test_pikas_ssl_options_that_pika_cannot_use_are_a_failure_not_a_traceback(options, said):
    url = f"amqps://alice:{PASSWORD}@h/?ssl_options={quote(repr(options))}"
    text = failure(url)
    assert text.startswith(f"malformed broker URL {url.replace(PASSWORD, '***')}: ")
    assert said in text
