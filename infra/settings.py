"""The one settings model of both environments, read from INTENTFLOW_* (or a .env file).

The stream side (.venv: Faust) and the ML side (.venv-ml: vLLM, torch) run apart but read the same
environment, so they load this one class: streams/settings.py and generators/config.py re-export
it. It imports neither faust nor torch. Nested groups use a double underscore:
INTENTFLOW_SAMPLING__MIN_EVENTS=5, INTENTFLOW_TOPICS__BATCHES=gen.b, INTENTFLOW_GROUPS__FILTER=f.

Every topic and consumer group of the pipeline is named here once: `Settings.topics` (the
registry), `Settings.topic_specs()` (what `intentflow topics create` makes, Faust's own topics
included) and `Settings.consumer_groups` (what `intentflow status` reads).
`intentflow config` prints the values; docs/CONFIGURATION.md (`markdown()`) lists them.
"""

from __future__ import annotations

from typing import NamedTuple

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.config import BatchConfig, DedupConfig, SamplingConfig
from processors.features import FeatureConfig
from processors.filters import FilterConfig

# The stream worker's Faust tables (streams/app.py makes each from this list, so a table cannot be
# added without its changelog topic): name -> what it holds.
TABLES: dict[str, str] = {
    "sb_pairs": "search-buy counts per (query, product)",
    "sb_queries": "product types bought per query (specificity)",
    "sb_seen_blocks": "search-buy event ids seen recently, a block per micro-batch (sampling.SeenIds)",
    "cp_pairs": "co-purchase counts per product pair",
    "cp_type_pairs": "product pairs linking two product types (per partition)",
    "cp_seen_blocks": "co-purchase event ids seen recently, a block per micro-batch",
    "products": "distinct product types each product is co-purchased with",
    "sent_requests": "the request last sent to generation per pair",
    "entity_knowledge": "edges retained and edge ids seen per query, product and product pair",
}


class KafkaSecurity(BaseModel):
    """TLS and SASL for every Kafka client (librdkafka names); empty: plaintext, as on loopback."""
    security_protocol: str = Field("", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; empty: the client default (PLAINTEXT)")
    sasl_mechanism: str = Field("", description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER")
    sasl_username: str = Field("", description="SASL user")
    sasl_password: str = Field("", description="SASL password (prefer a .env file with restricted permissions)")
    ssl_ca_location: str = Field("", description="CA certificate file that signs the brokers' certificates")
    ssl_certificate_location: str = Field("", description="client certificate (mutual TLS)")
    ssl_key_location: str = Field("", description="client private key (mutual TLS)")

    def librdkafka(self) -> dict[str, str]:
        """The options that are set, as librdkafka configuration ({"security.protocol": "SSL", ...})."""
        return {k.replace("_", "."): v for k, v in self.model_dump().items() if v}


class Topics(BaseModel):
    """Every topic of the pipeline, stream and ML side (INTENTFLOW_TOPICS__*)."""
    search_buy: str = Field("behavior.search_buy", description="search-buy events (keyed by normalised query)")
    co_purchase: str = Field("behavior.co_purchase", description="co-purchase events (keyed by sorted product pair)")
    dlq: str = Field("behavior.dlq", description="dead letters: reason + original bytes")
    by_product: str = Field("co_purchase.by_product", description="internal: co-purchase pairs re-keyed by product for the degree check")
    requests: str = Field("knowledge.requests", description="sampled pairs to explain (keyed by pair)")
    priority_requests: str = Field("knowledge.requests.priority", description="cache-miss requests; consumed apart so they jump the backlog")
    batches: str = Field("generation.batches", description="micro-batches of requests for the generation workers")
    priority_batches: str = Field("generation.batches.priority", description="micro-batches of cache-miss requests: generation workers drain them first")
    edges: str = Field("knowledge.edges", description="admitted knowledge from the filter workers (keyed by edge id): every stage's score, lineage")
    entity_updates: str = Field("features.by_entity", description="internal: edge contributions re-keyed by the entity they inform")
    feature_rows: str = Field("features.rows", description="every feature row pushed online, for the batched offline writer (and audit)")
    candidates: str = Field("knowledge.candidates", description="parsed candidates with lineage, for the filter stage")
    generation_dlq: str = Field("generation.dlq", description="batches that could not be generated, with the reason")
    rejected: str = Field("knowledge.rejected", description="rejected candidates with stage and reason (audit, annotation)")
    tail_stats: str = Field("knowledge.tail_stats", description="the generic stage's running statistics (compacted)")
    filter_dlq: str = Field("filter.dlq", description="candidates that could not be decoded")

    def compacted(self) -> tuple[str, ...]:
        """The registry's topics that keep the last value per key (cleanup.policy=compact)."""
        return (self.tail_stats,)

    def dead_letters(self) -> tuple[str, ...]:
        """The dead-letter topics, in pipeline order (stream, generation, filter)."""
        return (self.dlq, self.generation_dlq, self.filter_dlq)


class Groups(BaseModel):
    """Consumer groups of the ML workers (INTENTFLOW_GROUPS__*). The stream workers' group is
    INTENTFLOW_APP_ID (Faust's app id); `Settings.consumer_groups` lists all of them."""
    generate: str = Field("intentflow-generate", description="consumer group of the generation workers (priority batches: <group>.priority)")
    filter: str = Field("intentflow-filter", description="consumer group of the filter workers")


def priority_group(group: str) -> str:
    """The group a generation worker of `group` reads priority batches with (its own offsets)."""
    return f"{group}.priority"


class GenerationConfig(BaseModel):
    engine: str = Field("vllm", description="vllm | openai | transformers")
    model: str = Field("smollm2", description="'smollm2' (bundled), a local folder or a hub id")
    base_url: str = Field("http://127.0.0.1:8000", description="OpenAI-compatible server for engine=openai")
    relations: tuple[str, ...] = Field(
        ("used_for_function", "used_for_audience", "xWant"),
        description="relations the generation workers ask per request (one prompt each; names from generators/relations.py). "
                    "Not generators/relations.DEFAULT: that longer list is what prompts.build asks when a caller names none "
                    "(tests, ad-hoc tools); the workers always pass this one")
    prompt_style: str = Field("plain", description="plain (few-shot completion; small models) or chat (the model's chat template)")
    max_tokens: int = Field(48, description="new tokens per prompt at most")
    temperature: float = Field(0.7, description="sampling temperature (0: greedy)")
    top_p: float = Field(0.95, description="nucleus sampling: the smallest set of tokens with this much probability")
    seed: int = Field(0, description="the engine's sampling seed")
    # 3: the few-shot lists have three items; in 2,044 hand-labelled SmolLM2 candidates items 4 and 5
    # were 0 of 70 plausible against 7% for the first (generators/data/real_candidates.jsonl)
    max_items: int = Field(3, description="candidates kept per (request, relation); generation stops after them")
    max_words: int = Field(12, description="longer items are dropped as run-on text")
    max_inflight_requests: int = Field(48, ge=1, description="requests a worker keeps in the engine at once (continuous batching: new micro-batches join while others decode)")
    retries: int = Field(1, description="engine retries of a failing batch before it goes to the DLQ")


class TopicSpec(NamedTuple):
    name: str
    partitions: int
    compacted: bool


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTENTFLOW_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    broker: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers (host:port[,host:port])")
    app_id: str = Field("intentflow", description="Faust app id: the stream workers' consumer group and the prefix of table changelog topics")
    partitions: int = Field(4, ge=1, description="partitions of every topic the project creates")
    replication: int = Field(1, ge=1, description="replication factor of created topics")
    data_dir: str = Field(".intentflow", description="worker state and local service files")
    session_timeout_s: float = Field(10.0, description="consumer group session timeout of every worker (Tansu joins in about half of it)")
    metrics_port: int = Field(0, description="Prometheus /metrics port of a worker (stream, generation or filter); 0: off")
    dtype: str = Field("auto", pattern="^(auto|float32|bfloat16)$", description="ML side: weights and compute of every model (vLLM, transformers, critic, embedder, fluency LM): auto picks bfloat16 on CPUs with bf16 matrix units (amx_bf16, avx512_bf16 in /proc/cpuinfo) and float32 elsewhere, where bfloat16 runs several times slower (generators/hardware.py)")
    log_level: str = Field("info", description="crit, error, warn, info or debug")
    log_json: bool = Field(True, description="structured JSON logs")
    gc_gen0_threshold: int = Field(100_000, ge=0, description="Python's collector runs a young collection every this many new objects (Python's default: 700; 0 keeps it). A worker allocates a great many short-lived objects per event: +15% events/s (docs/BENCHMARKS.md)")
    gc_freeze: bool = Field(True, description="freeze the objects a worker holds after start-up (gc.freeze) so the collector stops rescanning them (measured in docs/BENCHMARKS.md)")
    faust_fastpath: bool = Field(True, description="skip Faust's per-message wait_first when flow is not suspended (streams/faust_patches.py)")
    stream_buffer_maxsize: int = Field(65536, ge=1, description="messages each agent's queue holds before the consumer waits to hand more over (Faust's stream_buffer_maxsize): memory against throughput; a rebalance clears the queues")
    faust_event_sensors: bool = Field(False, description="call Faust's sensors (its Monitor, any added) for every message in and out; off: sensors still see commits, sends and tables, and intentflow's own metrics count every event per micro-batch. Either way agents take micro-batches with streams/take.py (Faust's take_events skips a batch its agent raised on)")
    batch_max_attempts: int = Field(8, ge=0, description="a micro-batch an agent raised on is tried this many times (backing off 0.5 s doubling to 30 s: about 1.5 minutes for 8), then each of its events goes to the DLQ with the reason (re-drive with `intentflow dlq replay`); 0: retried for ever")
    broker_true_highwaters: bool | None = Field(None, description="ask the broker for each partition's end offset when Faust recovers a table (a workaround for brokers that under-report high watermarks in fetch responses, as the local Tansu does). Empty: on for a broker on loopback (the local stack), off elsewhere (Faust's own)")
    web_token: str = Field("", description="token for the worker's web requests that change something (header `Authorization: Bearer TOKEN`); empty: such requests are refused. Required for every request when the web server binds beyond loopback")
    # local services started by `intentflow infra up`
    redis_port: int = Field(16379, description="port of the local Redis (loopback)")
    kafka: KafkaSecurity = KafkaSecurity()
    topics: Topics = Topics()
    groups: Groups = Groups()
    sampling: SamplingConfig = SamplingConfig()
    dedup: DedupConfig = DedupConfig()
    batch: BatchConfig = BatchConfig()
    features: FeatureConfig = FeatureConfig()
    generation: GenerationConfig = GenerationConfig()
    filter: FilterConfig = FilterConfig()

    @property
    def kafka_url(self) -> str:
        """The bootstrap servers as Faust's broker URL ("kafka://h1:9092;kafka://h2:9092")."""
        return ";".join(f"kafka://{h}" for h in self.broker.split(","))

    @property
    def consumer_groups(self) -> dict[str, str]:
        """Every consumer group of the pipeline by worker: "stream" (INTENTFLOW_APP_ID), "generate",
        "generate_priority" (the generation workers' priority batches) and "filter"."""
        g = self.groups
        return {"stream": self.app_id, "generate": g.generate, "generate_priority": priority_group(g.generate),
                "filter": g.filter}

    def changelog_topic(self, table: str) -> str:
        """The changelog topic Faust keeps a stream table in (`<app_id>-<table>-changelog`)."""
        return f"{self.app_id}-{table}-changelog"

    def topic_specs(self) -> list[TopicSpec]:
        """Every topic the pipeline uses, each once: the registry (`topics`), the changelog of every
        stream table (TABLES; compacted, co-partitioned with the source topics) and Faust's leader
        topic (one partition). Made ahead, so no worker needs to create a topic."""
        p = self.partitions
        compacted = set(self.topics.compacted())
        out = [TopicSpec(n, p, n in compacted) for n in dict.fromkeys(self.topics.model_dump().values())]
        out += [TopicSpec(self.changelog_topic(t), p, True) for t in TABLES]
        # faust/assignor/leader_assignor.py: one partition, not compacted
        out.append(TopicSpec(f"{self.app_id}-__assignor-__leader", 1, False))
        return out


def markdown() -> str:
    """The table in docs/CONFIGURATION.md: every variable once, from the model (a test keeps them equal)."""
    lines = ["# Configuration", "",
             "Environment variables (or `.env` lines), read by the stream workers and the ML workers alike "
             "(infra/settings.py). Nested groups use `__`. Generated by `intentflow config --markdown`.", "",
             "| variable | default | meaning |", "| --- | --- | --- |"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name.upper()}__")
                continue
            lines.append(f"| `{prefix}{name.upper()}` | `{f.get_default(call_default_factory=True)}` | {f.description or ''} |")

    walk(Settings, "INTENTFLOW_")
    return "\n".join(lines) + "\n"
