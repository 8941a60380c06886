"""Every setting in one place, read from the environment (INTENTFLOW_*) or a .env file.

Nested groups use a double underscore: INTENTFLOW_SAMPLING__MIN_EVENTS=5, INTENTFLOW_BATCH__MAX_SIZE=64.
`intentflow config` prints them all with their current values; docs/CONFIGURATION.md lists them.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.config import BatchConfig, DedupConfig, SamplingConfig


class Topics(BaseModel):
    search_buy: str = "behavior.search_buy"
    co_purchase: str = "behavior.co_purchase"
    dlq: str = "behavior.dlq"
    by_product: str = Field("co_purchase.by_product", description="internal: co-purchase pairs re-keyed by product for the degree check")
    requests: str = "knowledge.requests"
    priority_requests: str = Field("knowledge.requests.priority", description="cache-miss requests; consumed apart so they jump the backlog")
    batches: str = "generation.batches"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTENTFLOW_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    broker: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers (host:port[,host:port])")
    app_id: str = Field("intentflow", description="Faust app id: the consumer group and the prefix of table changelog topics")
    partitions: int = Field(4, ge=1, description="partitions of every topic the project creates")
    replication: int = Field(1, ge=1, description="replication factor of created topics")
    data_dir: str = Field(".intentflow", description="worker state and local service files")
    session_timeout_s: float = Field(10.0, description="consumer group session timeout (Tansu joins in about half of it)")
    metrics_port: int = Field(0, description="Prometheus /metrics port of a worker; 0: off")
    log_level: str = "info"
    log_json: bool = Field(True, description="structured JSON logs")
    faust_fastpath: bool = Field(True, description="skip Faust's per-message wait_first when flow is not suspended (streams/fastpath.py)")
    # local services started by `intentflow infra up`
    redis_port: int = Field(16379, description="port of the local Redis (loopback)")
    topics: Topics = Topics()
    sampling: SamplingConfig = SamplingConfig()
    dedup: DedupConfig = DedupConfig()
    batch: BatchConfig = BatchConfig()

    @property
    def kafka_url(self) -> str:
        return ";".join(f"kafka://{h}" for h in self.broker.split(","))


@lru_cache
def get_settings() -> Settings:
    return Settings()
