"""One place where the stream side's confluent-kafka clients get their configuration.

Every client (producers, consumers, admin clients) is built from `client_config`: the bootstrap
servers plus the TLS/SASL options of `infra.settings.KafkaSecurity` (INTENTFLOW_KAFKA__*: the
model the ML workers use too), so a broker that needs TLS or SASL is reached by every tool alike.
Functions that take a bare bootstrap string read those options from the environment unless they
are given; the Faust worker gets the same options as credentials (streams/settings.faust_credentials).
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.settings import KafkaSecurity


class _KafkaEnv(BaseSettings):
    """INTENTFLOW_KAFKA__* (and .env), read alone: infra/ is used by both environments."""
    model_config = SettingsConfigDict(env_prefix="INTENTFLOW_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    kafka: KafkaSecurity = KafkaSecurity()


def security_from_env() -> KafkaSecurity:
    return _KafkaEnv().kafka


def client_config(bootstrap: str, security: KafkaSecurity | None = None, extra: Mapping[str, Any] | None = None) -> dict:
    """librdkafka configuration: bootstrap.servers, the security options (from the environment when
    `security` is None), then `extra` (librdkafka names: {"group.id": ...})."""
    sec = security if security is not None else security_from_env()
    return {"bootstrap.servers": bootstrap, **sec.librdkafka(), **(extra or {})}
