"""Settings of the ML-side workers, from the same INTENTFLOW_* environment as the stream side.

(The stream side's settings live in streams/, which the ML side does not import: the two run in
different environments. Names that both read, like INTENTFLOW_BROKER, mean the same thing.)
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.filters import FilterConfig


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
        return {k.replace("_", "."): v for k, v in self.model_dump().items() if v}


class MLGroups(BaseModel):
    generate: str = Field("intentflow-generate", description="consumer group of the generation workers (priority batches: <group>.priority)")
    filter: str = Field("intentflow-filter", description="consumer group of the filter workers")


class MLTopics(BaseModel):
    batches: str = "generation.batches"
    priority_batches: str = Field("generation.batches.priority", description="micro-batches of serving cache misses: generation workers read them first")
    candidates: str = Field("knowledge.candidates", description="parsed candidates with lineage, for the filter stage")
    generation_dlq: str = Field("generation.dlq", description="batches that could not be generated, with the reason")
    edges: str = Field("knowledge.edges", description="admitted knowledge: edge_id, every stage's score, lineage")
    rejected: str = Field("knowledge.rejected", description="rejected candidates with stage and reason (audit, annotation)")
    tail_stats: str = Field("knowledge.tail_stats", description="the generic stage's running statistics (compacted)")
    filter_dlq: str = Field("filter.dlq", description="candidates that could not be decoded")


class GenerationConfig(BaseModel):
    engine: str = Field("vllm", description="vllm | openai | transformers")
    model: str = Field("smollm2", description="'smollm2' (bundled), a local folder or a hub id")
    base_url: str = Field("http://127.0.0.1:8000", description="OpenAI-compatible server for engine=openai")
    relations: tuple[str, ...] = Field(("used_for_function", "used_for_audience", "xWant"),
                                       description="relations asked per request (generators/relations.py)")
    prompt_style: str = Field("plain", description="plain (few-shot completion; small models) or chat (the model's chat template)")
    max_tokens: int = 48
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    # 3: the few-shot lists have three items; in 2,044 hand-labelled SmolLM2 candidates items 4 and 5
    # were 0 of 70 plausible against 7% for the first (generators/data/real_candidates.jsonl)
    max_items: int = Field(3, description="candidates kept per (request, relation); generation stops after them")
    max_words: int = Field(12, description="longer items are dropped as run-on text")
    max_inflight_requests: int = Field(48, ge=1, description="requests a worker keeps in the engine at once (continuous batching: new micro-batches join while others decode)")
    retries: int = Field(1, description="engine retries of a failing batch before it goes to the DLQ")


class MLSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTENTFLOW_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    broker: str = "127.0.0.1:19092"
    session_timeout_s: float = 10.0
    metrics_port: int = Field(0, description="Prometheus /metrics port of an ML worker; 0: off")
    dtype: str = Field("auto", pattern="^(auto|float32|bfloat16)$", description="weights and compute of every model (vLLM, transformers, critic, embedder, fluency LM): auto picks bfloat16 on CPUs with bf16 matrix units (amx_bf16, avx512_bf16 in /proc/cpuinfo) and float32 elsewhere, where bfloat16 runs several times slower (generators/hardware.py)")
    kafka: KafkaSecurity = KafkaSecurity()
    groups: MLGroups = MLGroups()
    topics: MLTopics = MLTopics()
    generation: GenerationConfig = GenerationConfig()
    filter: FilterConfig = FilterConfig()
