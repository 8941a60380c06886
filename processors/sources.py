"""Reading behaviour events from files (JSONL, CSV, Parquet) and converting public data sets.

Rows may be nested like the wire format or flat (CSV): product_id/title/product_type/category for
search-buy; product_a_id/product_a_title/... and product_b_* for co-purchase. The kind comes from a
`type` column, else from the columns present, else from the caller.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from processors.events import EventError, parse_event, stable_id
from processors.product_type import guess_type

_PRODUCT_FIELDS = ("product_id", "title", "product_type", "category")
_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}


def read_rows(path: str | Path) -> Iterator[dict]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with path.open() as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError as e:
                        yield {"__error__": f"line {n}: not JSON: {e}", "__raw__": line.rstrip("\n")}
    elif suffix == ".csv":
        with path.open(newline="") as f:
            yield from csv.DictReader(f)
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=10000):
            yield from batch.to_pylist()
    else:
        raise ValueError(f"{path}: unknown format (use .jsonl, .csv or .parquet)")


def _nest(row: dict, prefix: str) -> dict | None:
    """Pop flat product columns: product_id/title/... or, with prefix product_a_, product_a_id/product_a_title/..."""
    names = {f: (f"{prefix}id" if prefix and f == "product_id" else f"{prefix}{f}") for f in _PRODUCT_FIELDS}
    keys = {f: row.pop(col) for f, col in names.items() if col in row}
    return {k: v for k, v in keys.items() if v not in (None, "")} if keys else None


def row_to_event(row: dict, kind: str | None = None):
    """A file row as a validated event; raises EventError saying what is wrong."""
    if "__error__" in row:
        raise EventError(row["__error__"])
    row = {k: v for k, v in row.items() if v is not None and v != ""}
    kind = row.get("type") or kind or ("co_purchase" if ("product_a" in row or "product_a_id" in row) else "search_buy")
    row["type"] = kind
    if kind == "search_buy" and "product" not in row:
        p = _nest(row, "")
        if p:
            row["product"] = p
    if kind == "co_purchase":
        for side in ("a", "b"):
            if f"product_{side}" not in row:
                p = _nest(row, f"product_{side}_")
                if p:
                    row[f"product_{side}"] = p
    for flag in ("clicked", "added_to_cart", "purchased"):
        if isinstance(row.get(flag), str):
            v = row[flag].strip().lower()
            if v not in _BOOL:
                raise EventError(f"{flag}: not a boolean: {row[flag]!r}")
            row[flag] = _BOOL[v]
    return parse_event(row)


def intentionqa_events(path: str | Path, events_per_pair: int = 2, start: datetime | None = None,
                       limit: int | None = None) -> Iterator[dict]:
    """IntentionQA task-1 problems (real Amazon co-purchase pairs) as co-purchase events.

    Each distinct (item A, item B) pair was a frequent co-purchase in the source data; it becomes
    `events_per_pair` events from different sessions, a second apart, with deterministic ids.
    Product types are guessed from titles (the data set gives none).
    """
    start = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
    seen: set[tuple[str, str]] = set()
    t = 0
    with Path(path).open() as f:
        for line in f:
            d = json.loads(line)
            pair = tuple(sorted((d["item_a_id"], d["item_b_id"])))  # (A, B) and (B, A) are one pair
            if pair in seen or pair[0] == pair[1]:
                continue
            seen.add(pair)
            if limit is not None and len(seen) > limit:
                return
            for k in range(events_per_pair):
                t += 1
                yield {
                    "type": "co_purchase",
                    "event_id": f"iqa-{stable_id(*pair, k)}",
                    "event_time": (start + timedelta(seconds=t)).isoformat(),
                    "session_id": f"iqa-s{stable_id(*pair, k, 's')}",
                    "product_a": _iqa_product(d["item_a_id"], d["item_a_name"]),
                    "product_b": _iqa_product(d["item_b_id"], d["item_b_name"]),
                }


def _iqa_product(pid: str, title: str) -> dict:
    import html

    title = html.unescape(title)
    p = {"product_id": pid, "title": title}
    t = guess_type(title)
    if t:
        p["product_type"] = t
    return p
