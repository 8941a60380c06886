"""Event contracts: what producers put on the behaviour topics (JSON, one event per message).

Validation is strict (unknown fields, wrong types and empty strings are errors) so that a
malformed event is sent to the dead-letter topic with a clear reason instead of being guessed at.

Text is normalised at the contract, so that one thing typed several ways is one identity:
`normalize_text` (query, title, product_type, category) and `normalize_id` (event_id, session_id,
product_id) apply Unicode NFKC (full-width letters, ligatures, composed accents), remove invisible
format characters (zero-width space and joiners, word joiner, soft hyphen, BOM, bidi marks: every
Unicode "Cf" character) and collapse whitespace. Text also has HTML entities decoded ("Kids &amp;
Toddlers", as HTML catalogues write it) and control characters and line breaks turned into spaces;
an id with a control character is an error instead (it is a producer bug, not text). A field that is
empty after normalisation is an error, as an empty string is. Keys (`normalize_query`,
`search_pair_key`, `co_pair_key`) are built from normalised text, case-folded, with the parts of a
composite key escaped (`join_key`), so different parts never make the same key.
"""

from __future__ import annotations

import hashlib
import html
import math
import unicodedata
from functools import cached_property
from datetime import datetime, timezone
from typing import Annotated, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError,
                      field_validator)

SCHEMA_VERSION = 1
TEXT_MAX, ID_MAX = 2000, 200  # characters, after normalisation


# --- normalisation ------------------------------------------------------------------------


def _text_char(c: str) -> str:
    """One character of a non-printable text: format characters go, other invisibles become spaces."""
    cat = unicodedata.category(c)
    if cat == "Cf":
        return ""
    if cat in ("Cc", "Zs", "Zl", "Zp"):
        return " "
    if cat == "Cs":
        raise ValueError(f"not valid Unicode (a lone surrogate U+{ord(c):04X})")
    return c  # private use (Co) and unassigned (Cn): kept


def _id_char(c: str) -> str:
    cat = unicodedata.category(c)
    if cat == "Cf":
        return ""
    if cat == "Zs":
        return " "
    if cat in ("Cc", "Zl", "Zp"):
        raise ValueError(f"control character U+{ord(c):04X} in an id")
    if cat == "Cs":
        raise ValueError(f"not valid Unicode (a lone surrogate U+{ord(c):04X})")
    return c


def _text_once(s: str) -> str:
    # NFKC before entities are decoded too, so that canonically equal spellings ("&lť", "&lt\u030c")
    # meet the entity decoder as one string.
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
    if "&" in s:
        s = html.unescape(s)
        if not s.isascii():
            s = unicodedata.normalize("NFKC", s)
    if not s.isprintable():  # C-speed test; true for almost all text (ordinary spaces are printable)
        s = "".join(map(_text_char, s))
    return " ".join(s.split())


def _id_once(s: str) -> str:
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
    if not s.isprintable():
        s = "".join(map(_id_char, s))
    return " ".join(s.split())


def _fixpoint(step, s: str) -> str:
    # One step is almost always enough; a second finds what the first uncovered (an entity escaped
    # twice, "&amp;amp;"; accents that compose once a zero-width character between them is gone).
    for _ in range(32):
        t = step(s)
        if t == s:
            return t
        s = t
    return s


def normalize_text(s: str) -> str:
    """Free text (a query, a title, a product type) in its one canonical form; idempotent.

    HTML entities decoded (repeatedly: "&amp;amp;" -> "&"), Unicode NFKC, format characters (Cf:
    U+200B-U+200D, U+2060, U+00AD, U+FEFF, bidi marks, ...) removed, control characters, line breaks
    and every kind of space collapsed into single spaces, ends stripped. Case is kept. May return "".
    Raises ValueError on a lone surrogate (not Unicode text).
    """
    if s.isascii() and s.isprintable() and "&" not in s:  # the common case, decided at C speed
        return " ".join(s.split()) if "  " in s or s[:1] == " " or s[-1:] == " " else s
    t = _text_once(s)
    if t.isascii() and "&" not in t:  # final after one step
        return t
    return _fixpoint(_text_once, t)


def normalize_id(s: str) -> str:
    """An identifier in canonical form; idempotent: NFKC ("Ｂ０７" -> "B07"), format characters
    removed, spaces collapsed, ends stripped; no HTML decoding and no case change. May return "".
    Raises ValueError on a control character or line break (U+0000-U+001F, U+007F-U+009F,
    U+2028/9) or a lone surrogate."""
    if s.isascii() and s.isprintable():
        return " ".join(s.split()) if "  " in s or s[:1] == " " or s[-1:] == " " else s
    t = _id_once(s)
    if t.isascii():
        return t
    return _fixpoint(_id_once, t)


def _fold_once(s: str) -> str:
    s = normalize_text(s).casefold()
    if not s.isascii():
        s = " ".join(unicodedata.normalize("NFKC", s).split())
    return s


def normalize_query(q: str) -> str:
    """The key form of a query: `normalize_text`, then case-folded (str.casefold: "Straße" and
    "STRASSE" are one query). Idempotent. Raises ValueError as normalize_text does."""
    if q.isascii() and q.isprintable() and "&" not in q:
        return (" ".join(q.split()) if "  " in q or q[:1] == " " or q[-1:] == " " else q).lower()
    t = _fold_once(q)
    if t.isascii() and "&" not in t:
        return t
    return _fixpoint(_fold_once, t)


def _valid(normalize, limit: int, what: str):
    def check(v: str) -> str:
        v = normalize(v)
        if not v:
            raise ValueError(f"empty {what} (nothing left after removing invisible characters and whitespace)")
        if len(v) > limit:
            raise ValueError(f"{what} longer than {limit} characters ({len(v)})")
        return v
    return check


# Raw strings are bounded before normalisation too (entities and NFKC change lengths).
Text = Annotated[str, StringConstraints(max_length=8 * TEXT_MAX), AfterValidator(_valid(normalize_text, TEXT_MAX, "text"))]
Id = Annotated[str, StringConstraints(max_length=8 * ID_MAX), AfterValidator(_valid(normalize_id, ID_MAX, "id"))]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Product(_Strict):
    """A product as the catalogue shows it; ids and texts normalised (see the module docstring)."""

    product_id: Id
    title: Text
    product_type: Text | None = None  # e.g. "running shoes"; None when the catalogue does not say
    category: Text | None = None      # top-level category, e.g. "Shoes"


class _Event(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id
    event_time: datetime
    session_id: Id | None = None

    @field_validator("event_time", mode="before")
    @classmethod
    def _unambiguous_epoch(cls, v: object) -> object:
        # pydantic reads a number up to 2e10 as seconds and above as milliseconds: 3.3e10 (the year
        # 3000 in seconds) became January 1971. Seconds have 10 digits today and milliseconds 13;
        # 11 digits (1e10 to 1e11) are a year past 2286 or a day in 1970-73 and say neither.
        n = v.strip() if isinstance(v, str) else v
        if isinstance(n, str):
            try:
                n = float(n)
            except ValueError:
                return v  # ISO 8601 and the like: pydantic's own parsing
            if "e" in v.lower() and not math.isnan(n) and not math.isinf(n):
                raise ValueError(f"epoch {v!r} is in scientific notation (a spreadsheet rounds such numbers to a "
                                 "few digits): write the epoch as digits or an ISO 8601 time")
        if isinstance(n, float) and (math.isnan(n) or math.isinf(n)):
            raise ValueError(f"{v!r} is not a time: give epoch seconds or milliseconds, or an ISO 8601 time")
        if isinstance(n, (int, float)) and not isinstance(n, bool) and 1e10 <= abs(n) < 1e11:
            raise ValueError(f"epoch {v!r} is neither seconds (10 digits) nor milliseconds (13 digits): "
                             "give one of those or an ISO 8601 time")
        return v

    @field_validator("event_time")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        # Naive times are read as UTC; everything downstream compares epoch seconds.
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)

    @cached_property
    def ts(self) -> float:
        """event_time as epoch seconds (UTC)."""
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
        """"sb|<normalised query>|<product id>" (search_pair_key)."""
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
        """"cp|<lower id>|<higher id>" (co_pair_key): the same for (a, b) and (b, a)."""
        return co_pair_key(self.product_a.product_id, self.product_b.product_id)

    @cached_property
    def partition_key(self) -> str:
        return self.pair_key


BehaviorEvent = Annotated[Union[SearchBuyEvent, CoPurchaseEvent], Field(discriminator="type")]
_any_event = TypeAdapter(BehaviorEvent)


class EventError(ValueError):
    """An event that cannot be accepted; the message says why, field by field."""


def escape_key_part(part: str) -> str:
    """A part of a composite key with `\\` and `|` escaped (`\\\\`, `\\|`); other text unchanged."""
    if "|" in part or "\\" in part:
        return part.replace("\\", "\\\\").replace("|", "\\|")
    return part


def join_key(*parts: str) -> str:
    """A composite key: the parts escaped and joined with `|`. Readable for ordinary ids ("cp|A|B"),
    unambiguous for any: join_key("a|b", "c") != join_key("a", "b|c"); split_key undoes it."""
    return "|".join(map(escape_key_part, parts))


def split_key(key: str) -> list[str]:
    """The parts of a key made by join_key. Raises ValueError on a dangling `\\`."""
    if "\\" not in key:
        return key.split("|")
    parts, cur, i = [], [], 0
    while i < len(key):
        c = key[i]
        if c == "\\":
            if i + 1 == len(key):
                raise ValueError(f"dangling escape at the end of key {key!r}")
            cur.append(key[i + 1])
            i += 2
            continue
        if c == "|":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def search_pair_key(query: str, product_id: str) -> str:
    """Key of a (query, product) pair: "sb|<normalised query>|<product id>", parts escaped."""
    return join_key("sb", normalize_query(query), normalize_id(product_id))


def co_pair_key(a: str, b: str) -> str:
    """Key of an unordered product pair: "cp|<lower id>|<higher id>", parts escaped."""
    lo, hi = sorted((normalize_id(a), normalize_id(b)))
    return join_key("cp", lo, hi)


def future_error(ev: "_Event", now: float, max_skew_s: float) -> str | None:
    """Why an event's time cannot be accepted (None when it can): more than `max_skew_s` seconds
    after `now` (wall clock, epoch seconds). One such event would otherwise move event-time state
    (dedup expiry, pair TTLs) years ahead."""
    if ev.ts > now + max_skew_s:
        return (f"event_time {ev.event_time.isoformat()} is in the future: {ev.ts - now:.0f} s after now "
                f"(at most {max_skew_s:g} s of clock skew is accepted)")
    return None


def stable_id(*parts: object, n: int = 16) -> str:
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=n // 2)
    return h.hexdigest()


def _explain(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "event"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


def _parse(model: type[_Event], raw: bytes | str):
    # pydantic's own JSON parser is about twice as fast as json.loads + model_validate
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        for err in errors:
            if err["type"] == "json_invalid":
                why = (err.get("ctx") or {}).get("error") or err["msg"]
                raise EventError(f"not JSON: {why}") from None
            if err["type"] == "model_type" and not err["loc"]:
                got = _JSON_NAMES.get(type(err.get("input")), type(err.get("input")).__name__)
                raise EventError(f"expected a JSON object, got {got}") from None
        raise EventError(_explain(e)) from None


def parse_search_buy(raw: bytes | str) -> SearchBuyEvent:
    """One search-buy message (JSON bytes or text) as a validated, normalised event.

    Raises EventError (and nothing else) naming every field that is wrong."""
    return _parse(SearchBuyEvent, raw)


def parse_co_purchase(raw: bytes | str) -> CoPurchaseEvent:
    """One co-purchase message (JSON bytes or text) as a validated, normalised event. Raises EventError."""
    return _parse(CoPurchaseEvent, raw)


def parse_event(obj: dict) -> SearchBuyEvent | CoPurchaseEvent:
    """Validate a dict of either kind, chosen by its `type` (used by replay, where the file says which
    kind it is). Raises EventError (and nothing else)."""
    try:
        return _any_event.validate_python(obj)
    except ValidationError as e:
        raise EventError(_explain(e)) from None


def to_json(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=True).encode()
