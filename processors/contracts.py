"""Typed contracts of what the ML workers put on topics: candidates (knowledge.candidates) and
edges (knowledge.edges). Events and generation requests live in processors/events.py and
processors/requests.py. Workers parse at the boundary (`model_validate_json`) and dead-letter what
fails, with pydantic's reason, instead of failing later on a missing key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from generators.relations import RELATIONS


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
