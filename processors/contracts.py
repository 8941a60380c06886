"""Typed contracts of everything on a topic, one module both environments import: each message
is parsed at its consumer's boundary (`model_validate_json`) and what fails is dead-lettered with
pydantic's reason instead of failing later on a missing key.

| topic                                                   | contract                                      |
|---------------------------------------------------------|-----------------------------------------------|
| behavior.search_buy, behavior.co_purchase               | SearchBuyEvent, CoPurchaseEvent (events.py)   |
| knowledge.requests, knowledge.requests.priority         | GenerationRequest (requests.py)               |
| generation.batches, generation.batches.priority         | GenerationBatch (requests.py)                 |
| knowledge.candidates                                    | Candidate                                     |
| knowledge.edges                                         | Edge                                          |
| knowledge.rejected                                      | Rejection                                     |
| features.rows                                           | FeatureRowMessage                             |
| behavior.dlq, generation.dlq, filter.dlq                | DeadLetter                                    |

co_purchase.by_product and features.by_entity are the stream worker's own repartition topics
(processors.sampling and processors.features write and read them); knowledge.tail_stats is the
filter workers' shared tail counts (generators/filter_worker.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from generators.relations import RELATIONS
from processors.events import CoPurchaseEvent, SearchBuyEvent
from processors.requests import GenerationBatch, GenerationRequest

__all__ = ["SearchBuyEvent", "CoPurchaseEvent", "GenerationRequest", "GenerationBatch", "Candidate", "Edge",
           "Rejection", "FeatureRowMessage", "DeadLetter", "AnnotationRow", "QUESTIONS"]


class ProductRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    product_id: str
    title: str
    product_type: str | None = None
    category: str | None = None


class Lineage(BaseModel):
    """Where a candidate came from. Extra keys (timings, filter times) are kept."""

    model_config = ConfigDict(extra="allow")

    batch_id: str
    event_id: str
    event_time: float = Field(description="epoch seconds of the event that made the pair qualify")
    model: str
    engine: str
    prompt_version: str
    generated_at: float
    mean_logprob: float | None = Field(None, description="mean token log-prob of this item's own tokens (or of the completion)")
    logprob_scope: Literal["item", "completion"] | None = None


class Candidate(BaseModel):
    """One parsed explanation from the generation worker, with its context and lineage."""

    model_config = ConfigDict(extra="ignore")

    candidate_id: str
    request_id: str
    pair_key: str
    behavior: Literal["search_buy", "co_purchase"]
    head: str | None = None
    relation: str
    tail: str = Field(min_length=1, max_length=500)
    rank: int = Field(ge=1)
    raw: str | None = None
    query: str | None = None
    product: ProductRef | None = None
    product_a: ProductRef | None = None
    product_b: ProductRef | None = None
    lineage: Lineage

    @field_validator("relation")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in RELATIONS:
            raise ValueError(f"unknown relation {v!r}")
        return v

    @model_validator(mode="after")
    def _context(self) -> "Candidate":
        if self.behavior == "search_buy" and (not self.query or self.product is None):
            raise ValueError("a search_buy candidate needs query and product")
        if self.behavior == "co_purchase" and (self.product_a is None or self.product_b is None):
            raise ValueError("a co_purchase candidate needs product_a and product_b")
        return self


class Edge(Candidate):
    """An admitted candidate: knowledge.edges, keyed by edge_id. `score` is the critic's
    plausibility (or self-evaluation mapped to [0, 1]); None when no scorer ran."""

    edge_id: str
    scores: dict[str, float]
    score: float | None = Field(None, ge=0.0, le=1.0)
    scorer: str | None = Field(None, description="what produced `score`: critic:<version>, self_eval, or None")


QUESTIONS = ("complete", "relevant", "informative", "plausible", "typical")  # COSMO's annotation questions
_YES_NO = {True: True, False: False, "yes": True, "no": False, "y": True, "n": False, "true": True, "false": False}


class AnnotationRow(BaseModel):
    """One candidate for human review and, once answered, a critic training label
    (`intentflow annotate sample` writes them, `annotate import` appends them to
    data/annotations.jsonl). `context` is the candidate's context as the filter reads it ("query |
    title" or "title A | title B"); the five answers are COSMO's yes/no questions, None until
    answered; yes/no, y/n and true/false (any case) are read as booleans. Extra columns (a
    reviewer's note) are kept."""

    model_config = ConfigDict(extra="allow")

    annotation_id: str = Field(min_length=1)
    behavior: Literal["search_buy", "co_purchase"]
    context: str = Field(min_length=1)
    relation: str = Field(min_length=1)
    tail: str = Field(min_length=1)
    candidate_id: str | None = None
    edge_id: str | None = None
    complete: bool | None = None
    relevant: bool | None = None
    informative: bool | None = None
    plausible: bool | None = None
    typical: bool | None = None

    @field_validator(*QUESTIONS, mode="before")
    @classmethod
    def _yes_no(cls, v: object) -> bool | None:
        if v is None:
            return None
        key = v.strip().lower() if isinstance(v, str) else v
        if isinstance(key, (bool, str)) and key in _YES_NO:
            return _YES_NO[key]
        raise ValueError(f"must be yes/no (true/false), got {v!r}")

    def unanswered(self) -> list[str]:
        return [q for q in QUESTIONS if getattr(self, q) is None]


class Rejection(BaseModel):
    """knowledge.rejected, keyed by pair_key: what did not become knowledge and why. The filter
    worker's rejections carry the candidate's fields and its scores (stage: fluency, safety, ...,
    critic); the generation worker's carry the request (kind "request", stage "input")."""

    model_config = ConfigDict(extra="allow")

    stage: str = Field(min_length=1)
    reason: str
    pair_key: str | None = None
    kind: Literal["candidate", "request"] = "candidate"


class FeatureRowMessage(BaseModel):
    """features.rows, keyed "<view>|<entity id>" (processors.features.row_key): one feature row as the
    online store took it, for the offline writer."""

    model_config = ConfigDict(extra="forbid")

    view: Literal["query_intents", "co_purchase_reasons", "product_knowledge", "product_subcategory"]
    row: dict


class DeadLetter(BaseModel):
    """Every dead-letter topic (behavior.dlq, generation.dlq, filter.dlq): the reason, its kind, the
    stage, where the message came from and its original key and value (base64; as text when UTF-8).
    Stage-specific keys (a generation request's `request_id`, its `batch_id`) are kept."""

    model_config = ConfigDict(extra="allow")

    error: str
    kind: str
    stage: str
    source_topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    failed_at: float | None = Field(None, description="epoch seconds")
    key_b64: str | None = None
    value_b64: str | None = None
    value_text: str | None = None
