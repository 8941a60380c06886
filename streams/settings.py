"""The stream side's view of the settings: the one model (infra/settings.py) and what only the
Faust worker needs (its Kafka credentials, the high-watermark workaround), plus a cached getter.

Nested groups use a double underscore: INTENTFLOW_SAMPLING__MIN_EVENTS=5, INTENTFLOW_BATCH__MAX_SIZE=64.
`intentflow config` prints them all with their current values; docs/CONFIGURATION.md lists them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from infra.settings import KafkaSecurity, Settings, Topics
from infra.settings import markdown as settings_markdown

__all__ = ["Settings", "Topics", "KafkaSecurity", "get_settings", "settings_markdown", "faust_credentials",
           "ssl_context", "needs_true_highwaters"]


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def ssl_context(k: KafkaSecurity):
    """The TLS context of INTENTFLOW_KAFKA__SSL_*: the CA file (else the system's), and the client
    certificate and key for mutual TLS."""
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=k.ssl_ca_location or None)
    if k.ssl_certificate_location:
        ctx.load_cert_chain(k.ssl_certificate_location, k.ssl_key_location or None)
    return ctx


def faust_credentials(k: KafkaSecurity) -> Any:
    """The Faust worker's `broker_credentials` for the same options the confluent-kafka clients get
    (KafkaSecurity.librdkafka()): None for plaintext, faust.SSLCredentials or faust.SASLCredentials.
    Raises ValueError for what the settings cannot express to aiokafka (OAUTHBEARER needs a token
    provider in code)."""
    protocol = (k.security_protocol or "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ValueError(f"INTENTFLOW_KAFKA__SECURITY_PROTOCOL={k.security_protocol!r}: one of {', '.join(SECURITY_PROTOCOLS)}")
    if protocol == "PLAINTEXT":
        return None
    import faust

    tls = ssl_context(k) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(tls)
    mechanism = (k.sasl_mechanism or "PLAIN").upper()
    if mechanism not in SASL_MECHANISMS:
        raise ValueError(f"INTENTFLOW_KAFKA__SASL_MECHANISM={k.sasl_mechanism!r}: the stream worker supports "
                         f"{', '.join(SASL_MECHANISMS)}")
    return faust.SASLCredentials(username=k.sasl_username, password=k.sasl_password, ssl_context=tls,
                                 mechanism=mechanism)


@lru_cache
def get_settings() -> Settings:
    return Settings()


def needs_true_highwaters(s: "Settings") -> bool:
    """settings.broker_true_highwaters, or (unset) whether every bootstrap server is on loopback."""
    if s.broker_true_highwaters is not None:
        return s.broker_true_highwaters
    import ipaddress

    def loopback(server: str) -> bool:
        host = server.strip().rsplit(":", 1)[0].strip("[]")
        try:
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    return all(loopback(x) for x in s.broker.split(",") if x.strip())
