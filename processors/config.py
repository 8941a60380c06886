"""Tunable thresholds of the stream stages, with their documented defaults.

These are plain pydantic models so the pure processors can be built and tested without the
environment; infra/settings.py nests them under INTENTFLOW_SAMPLING__*, INTENTFLOW_DEDUP__*, ...
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class SamplingConfig(BaseModel):
    # search-buy: COSMO keeps only pairs with real purchase intent
    min_events: int = Field(3, ge=1, description="search-buy events seen for a (query, product) pair before it can qualify")
    min_purchases: int = Field(1, ge=0, description="purchases needed for a search-buy pair")
    min_purchase_rate: float = Field(0.05, ge=0, le=1, description="purchases / events of a pair")
    min_click_rate: float = Field(0.2, ge=0, le=1, description="clicks / events of a pair")
    # query specificity: entropy of product types bought under the query; broad queries first
    specificity_min_purchases: int = Field(3, ge=1, description="purchases under a query before its specificity is trusted (until then 0.5)")
    specificity_broad_types: int = Field(8, ge=2, description="a query whose purchases spread evenly over this many types scores specificity 0")
    max_query_specificity: float = Field(1.0, ge=0, le=1, description="drop pairs of queries more specific than this (1.0 keeps all)")
    max_query_types: int = Field(64, ge=2, description="distinct product types tracked per query (more fold into one bucket)")
    # co-purchase
    min_co_purchases: int = Field(2, ge=1, description="co-purchase events of a product pair before it can qualify")
    min_type_pair_support: int = Field(3, ge=1, description="distinct product pairs that must link two different product types (and categories) for them to count as related")
    max_product_types: int = Field(20, ge=1, description="a product co-purchased with more distinct product types than this is noise and dropped")
    # re-generation
    pair_ttl_s: float = Field(7 * 86400, ge=0, description="the sampler emits a request for a behaviour pair at most once per this many seconds (event time of the events that qualify it). Sampled pairs only: serving cache misses never pass the sampler (INTENTFLOW_DEDUP__TTL_S covers every request)")
    event_id_ttl_s: float = Field(3600, ge=0, description="event ids remembered this long (event time) to drop duplicates")
    max_future_skew_s: float = Field(300, ge=0, description="events dated more than this many seconds after the wall clock are dead-lettered (worker and replay): one far-future time would otherwise move event-time state ahead")


class DedupConfig(BaseModel):
    ttl_s: float = Field(7 * 86400, ge=0, description="dedup sends a pair to generation at most once per this many seconds (event time of the request), whichever way the request came: sampled (knowledge.requests) or a serving cache miss (knowledge.requests.priority), which INTENTFLOW_SAMPLING__PAIR_TTL_S does not see. A sampled pair re-emitted after pair_ttl_s passes here only once this has passed too")


class BatchConfig(BaseModel):
    max_size: int = Field(32, ge=1, description="requests per generation batch")
    max_wait_ms: int = Field(500, ge=1, description="flush a partial batch after this long")
    priority_wait_ms: int = Field(20, ge=1, description="flush wait for priority (cache-miss) requests")
