"""Every setting in one place, read from the environment (INTENTFLOW_*) or a .env file.

Nested groups use a double underscore: INTENTFLOW_SAMPLING__MIN_EVENTS=5, INTENTFLOW_BATCH__MAX_SIZE=64.
`intentflow config` prints them all with their current values; docs/CONFIGURATION.md lists them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from generators.config import KafkaSecurity  # one model for both sides' Kafka clients
from processors.config import BatchConfig, DedupConfig, SamplingConfig
from processors.features import FeatureConfig


class Topics(BaseModel):
    search_buy: str = Field("behavior.search_buy", description="search-buy events (keyed by normalised query)")
    co_purchase: str = Field("behavior.co_purchase", description="co-purchase events (keyed by sorted product pair)")
    dlq: str = Field("behavior.dlq", description="dead letters: reason + original bytes")
    by_product: str = Field("co_purchase.by_product", description="internal: co-purchase pairs re-keyed by product for the degree check")
    requests: str = Field("knowledge.requests", description="sampled pairs to explain (keyed by pair)")
    priority_requests: str = Field("knowledge.requests.priority", description="cache-miss requests; consumed apart so they jump the backlog")
    batches: str = Field("generation.batches", description="micro-batches of requests for the generation workers")
    priority_batches: str = Field("generation.batches.priority", description="micro-batches of cache-miss requests: generation workers drain them first")
    edges: str = Field("knowledge.edges", description="admitted knowledge from the filter workers (keyed by edge id)")
    entity_updates: str = Field("features.by_entity", description="internal: edge contributions re-keyed by the entity they inform")
    feature_rows: str = Field("features.rows", description="every feature row pushed online, for the batched offline writer (and audit)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTENTFLOW_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    broker: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers (host:port[,host:port])")
    app_id: str = Field("intentflow", description="Faust app id: the consumer group and the prefix of table changelog topics")
    partitions: int = Field(4, ge=1, description="partitions of every topic the project creates")
    replication: int = Field(1, ge=1, description="replication factor of created topics")
    data_dir: str = Field(".intentflow", description="worker state and local service files")
    session_timeout_s: float = Field(10.0, description="consumer group session timeout (Tansu joins in about half of it)")
    metrics_port: int = Field(0, description="Prometheus /metrics port of a worker; 0: off")
    log_level: str = Field("info", description="crit, error, warn, info or debug")
    log_json: bool = Field(True, description="structured JSON logs")
    gc_gen0_threshold: int = Field(100_000, ge=0, description="Python's collector runs a young collection every this many new objects (Python's default: 700; 0 keeps it). A worker allocates a great many short-lived objects per event: +15% events/s (docs/BENCHMARKS.md)")
    gc_freeze: bool = Field(True, description="freeze the objects a worker holds after start-up (gc.freeze) so the collector stops rescanning them (measured in docs/BENCHMARKS.md)")
    faust_fastpath: bool = Field(True, description="skip Faust's per-message wait_first when flow is not suspended (streams/faust_patches.py)")
    faust_event_sensors: bool = Field(False, description="call Faust's sensors (its Monitor, any added) for every message in and out; off: sensors still see commits, sends and tables, and intentflow's own metrics count every event per micro-batch. Either way agents take micro-batches with streams/take.py (Faust's take_events skips a batch its agent raised on)")
    batch_max_attempts: int = Field(8, ge=0, description="a micro-batch an agent raised on is tried this many times (backing off 0.5 s doubling to 30 s: about 1.5 minutes for 8), then each of its events goes to the DLQ with the reason (re-drive with `intentflow dlq replay`); 0: retried for ever")
    broker_true_highwaters: bool | None = Field(None, description="ask the broker for each partition's end offset when Faust recovers a table (a workaround for brokers that under-report high watermarks in fetch responses, as the local Tansu does). Empty: on for a broker on loopback (the local stack), off elsewhere (Faust's own)")
    web_token: str = Field("", description="token for the worker's web requests that change something (header `Authorization: Bearer TOKEN`); empty: such requests are refused. Required for every request when the web server binds beyond loopback")
    # local services started by `intentflow infra up`
    redis_port: int = Field(16379, description="port of the local Redis (loopback)")
    kafka: KafkaSecurity = KafkaSecurity()
    topics: Topics = Topics()
    sampling: SamplingConfig = SamplingConfig()
    dedup: DedupConfig = DedupConfig()
    batch: BatchConfig = BatchConfig()
    features: FeatureConfig = FeatureConfig()

    @property
    def kafka_url(self) -> str:
        return ";".join(f"kafka://{h}" for h in self.broker.split(","))


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


def settings_markdown() -> str:
    """The table in docs/CONFIGURATION.md, generated from the models (a test keeps them equal)."""
    lines = ["# Configuration", "",
             "Environment variables (or `.env` lines). Nested groups use `__`. Generated by `intentflow config --markdown`.", "",
             "| variable | default | meaning |", "| --- | --- | --- |"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name.upper()}__")
                continue
            lines.append(f"| `{prefix}{name.upper()}` | `{f.get_default(call_default_factory=True)}` | {f.description or ''} |")

    walk(Settings, "INTENTFLOW_")
    from generators.config import MLSettings  # the ML side reads the same environment

    lines += ["", "## ML side (.venv-ml: generation and filter workers)", "",
              "| variable | default | meaning |", "| --- | --- | --- |"]
    walk(MLSettings, "INTENTFLOW_")
    return "\n".join(lines) + "\n"


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
