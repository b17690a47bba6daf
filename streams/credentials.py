"""The worker's broker credentials: `kafka.client_config`'s librdkafka security options, as faust takes them.

Every other part hands `client_config` to confluent-kafka as it is; the worker's clients are aiokafka's, which
take a faust `Credentials` object instead. The options that have a meaning there are translated; any other
`security.*`, `sasl.*` or `ssl.*` option is refused with its name, never dropped: a worker that silently
connected without the TLS verification or the mechanism the operator configured would be worse than one that
does not start.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from fleetstream.config_sources import ConfigError

__all__ = ["broker_credentials"]

_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TRANSLATED = frozenset({
    "security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password", "ssl.ca.location",
    "ssl.certificate.location", "ssl.key.location", "ssl.key.password", "enable.ssl.certificate.verification",
    "ssl.endpoint.identification.algorithm",
})


def broker_credentials(client_config: Mapping[str, str]) -> Any:
    """faust's `broker_credentials` for these librdkafka options: None for plaintext, else SSL or SASL credentials."""
    import faust

    security = {k: v for k, v in client_config.items() if k.startswith(("security.", "sasl.", "ssl."))
                or k == "enable.ssl.certificate.verification"}
    unknown = sorted(set(security) - _TRANSLATED)
    if unknown:
        raise ConfigError(f"kafka.client_config {', '.join(unknown)}: the stream worker (aiokafka) has no such option",
                          f"the worker takes {', '.join(sorted(_TRANSLATED))}")
    protocol = security.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in _PROTOCOLS:
        raise ConfigError(f"kafka.client_config security.protocol {protocol!r} is not one of {', '.join(_PROTOCOLS)}")
    context = _ssl_context(security) if protocol.endswith("SSL") else None
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    mechanism = security.get("sasl.mechanism", security.get("sasl.mechanisms", "PLAIN")).upper()
    if mechanism not in _MECHANISMS:
        raise ConfigError(f"kafka.client_config sasl.mechanism {mechanism!r}: the stream worker supports "
                          f"{', '.join(_MECHANISMS)}")
    return faust.SASLCredentials(username=security.get("sasl.username"), password=security.get("sasl.password"),
                                 ssl_context=context, mechanism=mechanism)


def _ssl_context(security: Mapping[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=security.get("ssl.ca.location"))
    if security.get("ssl.certificate.location"):
        context.load_cert_chain(security["ssl.certificate.location"], security.get("ssl.key.location"),
                                security.get("ssl.key.password"))
    if security.get("ssl.endpoint.identification.algorithm", "https").lower() == "none":
        context.check_hostname = False
    if security.get("enable.ssl.certificate.verification", "true").lower() == "false":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
