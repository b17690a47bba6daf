"""The worker's SASL/TLS settings: librdkafka's options translated for faust, anything else refused."""

from __future__ import annotations

import ssl

import faust
import pytest

from fleetstream.config_sources import ConfigError
from fleetstream.streams.credentials import broker_credentials


def test_plaintext_needs_no_credentials() -> None:
    assert broker_credentials({}) is None
    assert broker_credentials({"security.protocol": "plaintext", "client.id": "w1"}) is None


def test_sasl_ssl_with_scram_keeps_user_password_mechanism_and_verification() -> None:
    credentials = broker_credentials({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                                      "sasl.username": "worker", "sasl.password": "secret"})

    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("worker", "secret")
    assert str(credentials.mechanism.value) == "SCRAM-SHA-512"
    assert str(credentials.protocol.value) == "SASL_SSL"
    assert credentials.ssl_context is not None and credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_ssl_without_verification_is_taken_as_configured() -> None:
    credentials = broker_credentials({"security.protocol": "SSL", "enable.ssl.certificate.verification": "false"})

    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.context.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(("config", "message"), [
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI"}, "sasl.mechanism 'GSSAPI'"),
    ({"security.protocol": "SSL", "ssl.keystore.location": "/k.p12"}, "ssl.keystore.location"),
    ({"security.protocol": "TLS"}, "security.protocol 'TLS'"),
])
def test_options_the_worker_cannot_honour_are_refused_by_name(config: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        broker_credentials(config)
