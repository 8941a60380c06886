"""Event contracts: what producers put on the behaviour topics (JSON, one event per message).

Validation is strict (unknown fields, wrong types and empty strings are errors) so that a
malformed event is sent to the dead-letter topic with a clear reason instead of being guessed at.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from datetime import datetime, timezone
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, field_validator

SCHEMA_VERSION = 1

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Product(_Strict):
    product_id: Id
    title: Text
    product_type: Text | None = None  # e.g. "running shoes"; None when the catalogue does not say
    category: Text | None = None      # top-level category, e.g. "Shoes"


class _Event(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id
    event_time: datetime
    session_id: Id | None = None

    @field_validator("event_time")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        # Naive times are read as UTC; everything downstream compares epoch seconds.
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)

    @cached_property
    def ts(self) -> float:
        return self.event_time.timestamp()


class SearchBuyEvent(_Event):
    """One search result engagement: a query, a product shown for it, and what the shopper did."""

    type: Literal["search_buy"] = "search_buy"
    query: Text
    product: Product
    clicked: bool = False
    added_to_cart: bool = False
    purchased: bool = False

    @cached_property
    def pair_key(self) -> str:
        return search_pair_key(self.query, self.product.product_id)

    @cached_property
    def partition_key(self) -> str:
        # One partition owns a query and so every (query, product) pair under it: pair counts
        # and the query's specificity are then local state, with no repartition hop.
        return normalize_query(self.query)


class CoPurchaseEvent(_Event):
    """Two products bought together (same order or same session)."""

    type: Literal["co_purchase"] = "co_purchase"
    product_a: Product
    product_b: Product

    @field_validator("product_b")
    @classmethod
    def _distinct(cls, v: Product, info) -> Product:
        a = info.data.get("product_a")
        if a is not None and a.product_id == v.product_id:
            raise ValueError("product_a and product_b are the same product")
        return v

    @cached_property
    def pair_key(self) -> str:
        return co_pair_key(self.product_a.product_id, self.product_b.product_id)

    @cached_property
    def partition_key(self) -> str:
        return self.pair_key


BehaviorEvent = Annotated[Union[SearchBuyEvent, CoPurchaseEvent], Field(discriminator="type")]
_any_event = TypeAdapter(BehaviorEvent)


class EventError(ValueError):
    """An event that cannot be accepted; the message says why, field by field."""


def normalize_query(q: str) -> str:
    return " ".join(q.lower().split())


def search_pair_key(query: str, product_id: str) -> str:
    return f"sb|{normalize_query(query)}|{product_id}"


def co_pair_key(a: str, b: str) -> str:
    lo, hi = sorted((a, b))
    return f"cp|{lo}|{hi}"


def stable_id(*parts: object, n: int = 16) -> str:
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=n // 2)
    return h.hexdigest()


def _explain(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "event"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def _decode(raw: bytes | str) -> dict:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise EventError(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise EventError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _parse(model: type[_Event], raw: bytes | str):
    # pydantic's own JSON parser is about twice as fast as json.loads + model_validate
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        if any(err["type"] == "json_invalid" for err in e.errors()):
            _decode(raw)  # raises the plain "not JSON" message
        if any(err["type"] == "model_type" and not err["loc"] for err in e.errors()):
            raise EventError(f"expected a JSON object, got {type(json.loads(raw)).__name__}") from None
        raise EventError(_explain(e)) from None


def parse_search_buy(raw: bytes | str) -> SearchBuyEvent:
    return _parse(SearchBuyEvent, raw)


def parse_co_purchase(raw: bytes | str) -> CoPurchaseEvent:
    return _parse(CoPurchaseEvent, raw)


def parse_event(obj: dict) -> SearchBuyEvent | CoPurchaseEvent:
    """Validate a dict of either kind (used by replay, where the file says which kind it is)."""
    try:
        return _any_event.validate_python(obj)
    except ValidationError as e:
        raise EventError(_explain(e)) from None


def to_json(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=True).encode()
