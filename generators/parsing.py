"""Raw model text -> candidate explanations. Never raises on model output: what cannot be used is
counted by reason, so a worker can log and export it."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

_ITEM = re.compile(r"^\s*(?:\(?(\d{1,2})[.):\]]|[-*•])\s*(.*)$")
_SECTION = re.compile(r"^\s*(search|bought|both products|the product|product [ab]|query|answer)\b.*:", re.I)
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)])[.!?;](\s|$)")
_WS = re.compile(r"\s+")


@dataclass
class Parsed:
    items: list[tuple[int, str]] = field(default_factory=list)  # (rank, tail)
    dropped: Counter = field(default_factory=Counter)


def normalize(text: str) -> str:
    return _WS.sub(" ", re.sub(r"[^\w\s'-]", " ", text.lower())).strip()


def _clean(item: str, max_words: int) -> tuple[str | None, str]:
    item = item.strip().strip("\"'`*").strip()
    m = _SENTENCE_END.search(item)
    if m:  # run-on text: keep the first sentence
        item = item[: m.start()]
    item = item.strip(" ,.;:-\"'").strip()
    if not item:
        return None, "empty"
    words = item.split()
    if len(words) > max_words:
        return None, "too_long"
    if not re.search(r"[A-Za-z]", item):
        return None, "no_letters"
    return item, ""


def parse_list(text: str, max_items: int = 5, max_words: int = 12) -> Parsed:
    """Parse a completion that continues a prompt ending in "1." into ranked, de-duplicated items."""
    out = Parsed()
    lines = text.replace("\r", "").split("\n")
    raw_items: list[str] = []
    first = _ITEM.match(lines[0]) if lines else None
    # the first line continues the prompt's "1." (plain style), or starts "1." itself (chat style)
    current: list[str] | None = ([first.group(2)] if first else [lines[0]]) if lines else None
    for line in lines[1:]:
        if _SECTION.match(line):
            break  # the model started a new example
        m = _ITEM.match(line)
        if m:
            if current is not None:
                raw_items.append(" ".join(current))
            current = [m.group(2)]
        elif not line.strip():
            if current is not None:
                raw_items.append(" ".join(current))
                current = None
            if raw_items:
                break  # a blank line after a list ends it
        elif current is not None:
            current.append(line.strip())  # wrapped item
    if current is not None:
        raw_items.append(" ".join(current))
    seen: set[str] = set()
    for raw in raw_items:
        tail, why = _clean(raw, max_words)
        if tail is None:
            out.dropped[why] += 1
            continue
        key = normalize(tail)
        if key in seen:
            out.dropped["repeated"] += 1
            continue
        seen.add(key)
        if len(out.items) >= max_items:
            out.dropped["over_max_items"] += 1
            continue
        out.items.append((len(out.items) + 1, tail))
    return out
