"""Records the stream stages pass on: generation requests and the micro-batches of them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from processors.events import Product


class GenerationRequest(BaseModel):
    """A behaviour pair worth explaining, with the evidence that made it so (lineage)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    pair_key: str
    behavior: Literal["search_buy", "co_purchase"]
    source: Literal["sampler", "cache_miss"] = "sampler"
    query: str | None = None
    product: Product | None = None
    product_a: Product | None = None
    product_b: Product | None = None
    priority: float = Field(0.5, description="higher first; broad queries score high, cache misses 2.0")
    query_specificity: float | None = None
    event_id: str = Field(description="the event that made the pair qualify")
    event_time: float = Field(description="epoch seconds of that event")
    signals: dict[str, float] = Field(default_factory=dict)


class GenerationBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: str
    created_at: float
    priority: bool = False
    requests: list[GenerationRequest]

    @property
    def request_ids(self) -> list[str]:
        return [r.request_id for r in self.requests]
