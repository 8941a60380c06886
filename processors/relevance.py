"""Evaluation data for `intentflow eval relevance`, and the label-free behaviour that earns it knowledge.

Two kinds of data become *problems* (plain JSON-able dicts, the same on both sides of the pipeline):

- IntentionQA task 2 (`TASK2`; HKUST-KnowComp, MIT): given item A (`item_a_name`) and an intention
  (`assertion`), choose the item bought with A among the `options` (gold `gold_ind`). A problem's
  query side is item A and the intention; its candidates are the options, one of them gold.
- A labelled table (`TABLE`: CSV/TSV, JSONL or Parquet; columns query, product id, title, label,
  under the names in `COLUMNS`) with ESCI labels (Exact, Substitute, Complement, Irrelevant; or
  E/S/C/I) or WANDS labels (Exact, Partial, Irrelevant). A problem is one query and its labelled
  products; `RELEVANT` (Exact) is what the ranking metrics count as relevant, every other label as
  not relevant. `streams/samples/relevance_esci.csv` is a small one written by hand: made-up
  queries, products of the bundled catalogue (processors/samples.py), labels assigned by one person.

Product identity. The knowledge is keyed by product, so each option must carry the key of the
product its *title* names. IntentionQA's `item_a_id`/`item_b_id` agree with their names (one title
per id across the file), but `distractors_id` does not line up with `distractors_product`: in the
shared dev split 1,010 of 2,415 ids are paired with more than one title (e.g. B005SQTHL4 with four
different products), and `distractors_product` holds "-1" where a title is missing. So an option's
key is the A/B id that title has anywhere in the file, else `iqa-t-<hash of the title>`
(`option_key`); `read_task2` reports how many distractors were keyed each way.

Knowledge without labels (`neutral_events`). Every product of the evaluated problems (item A, the
gold and the distractors alike) gets the same synthetic search-buy behaviour: a query that is a
product-type phrase guessed from its own title (`processors.product_type.guess_type(title, 2)`,
e.g. "extension cable"), searched `EVENTS_PER_PRODUCT` (3) times, clicked each time and bought
once, which is exactly what `SamplingConfig`'s defaults ask of a search-buy pair before it is
explained (min_events 3, min_purchases 1, purchase rate >= 0.05, click rate >= 0.2). Nothing in it
depends on a label, a role (gold or distractor) or another product; products are sent in a seeded
shuffled order so that a run cut short does not favour one role. A table's rows can instead be
replayed as they are (`row_events`): every (query, product) row the same three events whatever its
label, which also gives the queries knowledge. Never replayed: the co-purchase pair (A, gold B) of
IntentionQA, whose mere presence would reveal the answer.

Errors: `DataError` names the file and the line ("line 7", "row 7" in Parquet) or the header.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from processors.events import normalize_id, normalize_query, normalize_text, stable_id
from processors.product_type import guess_type
from processors.sources import Row, SourceError, _dialect, _encoding, read_rows

TASK2, TABLE = "intentionqa_task2", "table"
RELEVANT = "Exact"
EVENTS_PER_PRODUCT = 3  # SamplingConfig.min_events; one purchase and a click on each: the pair qualifies
TASK2_KEYS = ("id", "item_a_id", "item_a_name", "item_b_id", "item_b_name", "assertion", "options", "gold_ind")
# ESCI (Amazon Shopping Queries) and WANDS (Wayfair) label names, case-insensitive
ESCI = {"exact": "Exact", "e": "Exact", "substitute": "Substitute", "s": "Substitute", "complement": "Complement",
        "c": "Complement", "irrelevant": "Irrelevant", "i": "Irrelevant"}
WANDS = {"exact": "Exact", "partial": "Partial", "irrelevant": "Irrelevant"}
COLUMNS = {"query": ("query", "search_term", "query_text"),
           "product_id": ("product_id", "asin", "product_uid", "item_id"),
           "title": ("title", "product_title", "product_name", "name"),
           "label": ("label", "esci_label", "relevance_label")}


class DataError(ValueError):
    """The evaluation data cannot be used: the message names the file and the line (or header)."""


def fingerprint(obj) -> str:
    """A short stable hash of JSON-able data (what a cache is keyed by)."""
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


def detect_task(path: str | Path) -> str:
    """TASK2 for IntentionQA task-2 JSON lines (the first object has item_a_name, options and
    gold_ind), else TABLE. Raises DataError when the file cannot be read."""
    if Path(path).suffix.lower() in (".csv", ".tsv", ".txt"):
        return TABLE
    try:
        for row in read_rows(path):
            if row.fields is not None:
                return TASK2 if {"item_a_name", "options", "gold_ind"} <= set(row.fields) else TABLE
            raise DataError(row.error or f"{path}: {row.where}: unreadable")
    except SourceError as e:
        raise DataError(str(e)) from None
    raise DataError(f"{path}: no rows")


# IntentionQA task 2 problems evaluated when no --limit is given: 60 problems (~270 products) take
# 10-17 minutes of generation on 2 AVX2 cores (docs/BENCHMARKS.md); the whole file takes hours
TASK2_LIMIT = 60


def resolve_limit(path: str | Path, task: str, limit: int | None) -> int | None:
    """The problems `intentflow eval relevance` evaluates: `limit` as given (0: the whole file),
    TASK2_LIMIT for IntentionQA task 2 when none is given, else the whole file (None).
    Raises DataError for a negative limit or an unreadable file."""
    if limit is not None and limit < 0:
        raise DataError(f"--limit {limit}: 0 (the whole file) or more")
    if limit is None:
        return TASK2_LIMIT if (detect_task(Path(path)) if task == "auto" else task) == TASK2 else None
    return limit or None


def load(path: str | Path, task: str = "auto", limit: int | None = None, seed: int = 0) -> dict:
    """The problems of a file: {"task", "path", "sha" (of the file's bytes), "problems", "products"
    ({key: title}), "queries" (texts), "labels" (the label scheme), "notes", "in_file" (problems in the
    whole file)}. `limit`: that many
    problems (tables: queries) drawn with `seed` from the file, kept in file order; None: all.
    Raises DataError (bad file, row, label or column, named by line)."""
    path = Path(path)
    task = detect_task(path) if task == "auto" else task
    if task not in (TASK2, TABLE):
        raise DataError(f"unknown task {task!r}: use {TASK2}, {TABLE} or auto")
    out = read_task2(path) if task == TASK2 else read_table(path)
    problems = out["problems"]
    if limit is not None and limit < len(problems):
        if limit < 1:
            raise DataError(f"--limit {limit}: needs at least one problem")
        keep = sorted(random.Random(seed).sample(range(len(problems)), limit))
        problems = [problems[i] for i in keep]
    products: dict[str, str] = {}
    for p in problems:
        if p["query"].get("key"):
            products[p["query"]["key"]] = p["query"]["text"]
        for c in p["candidates"]:
            products[c["key"]] = c["title"]
    return {"task": task, "path": str(path), "sha": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
            "limit": limit, "in_file": len(out["problems"]), "seed": seed, "problems": problems, "products": products,
            "queries": sorted({p["query"]["text"] for p in problems if not p["query"].get("key")}),
            "labels": out["labels"], "notes": out["notes"]}


# --- IntentionQA task 2 ------------------------------------------------------------------------


def _title(t: str) -> str:
    return normalize_text(html.unescape(str(t)))


def option_key(title: str, ids_by_title: dict[str, str]) -> str:
    """The key of the product an option's title names: its IntentionQA A/B id where the file gives
    one, else `iqa-t-<hash of the normalised title>` (distractor ids are not aligned with titles)."""
    return ids_by_title.get(title) or f"iqa-t-{stable_id(normalize_query(title), n=12)}"


def intent_text(assertion: str) -> str:
    """The intention without IntentionQA's fixed lead-in ("PersonX bought a product of Item A and a
    product of Item B because they both ..." -> "because they both ...")."""
    a = normalize_text(assertion)
    lead = "PersonX bought a product of Item A and a product of Item B "
    return a[len(lead):] if a.startswith(lead) else a


def read_task2(path: Path) -> dict:
    rows = []
    try:
        for row in read_rows(path):
            if row.error:
                raise DataError(row.error if row.error.startswith(str(path)) else f"{path}: {row.error}")
            d = row.fields
            missing = [k for k in TASK2_KEYS if d.get(k) in (None, "")]
            if missing:
                raise DataError(f"{path}: {row.where}: not an IntentionQA task-2 row: missing {missing}")
            if not isinstance(d["options"], dict) or d["gold_ind"] not in d["options"]:
                raise DataError(f"{path}: {row.where}: `options` must be an object with the key gold_ind "
                                f"({d['gold_ind']!r}); got {str(d['options'])[:80]}")
            rows.append((row.where, d))
    except SourceError as e:
        raise DataError(str(e)) from None
    ids_by_title: dict[str, str] = {}
    for _, d in rows:
        for i, t in ((d["item_a_id"], d["item_a_name"]), (d["item_b_id"], d["item_b_name"])):
            ids_by_title.setdefault(_title(t), normalize_id(str(i)))
    problems, by_id, by_title, gold_mismatch = [], 0, 0, 0
    for where, d in rows:
        a = _title(d["item_a_name"])
        cands = []
        for letter, t in sorted(d["options"].items()):
            title = _title(t)
            gold = letter == d["gold_ind"]
            if gold and title != _title(d["item_b_name"]):
                gold_mismatch += 1
            key = normalize_id(str(d["item_b_id"])) if gold else option_key(title, ids_by_title)
            if not gold and key.startswith("iqa-t-"):
                by_title += 1
            elif not gold:
                by_id += 1
            cands.append({"key": key, "title": title, "label": int(gold), "role": "gold" if gold else "distractor"})
        problems.append({"id": str(d["id"]), "where": where, "source": TASK2, "behavior": "co_purchase",
                         "query": {"text": a, "key": normalize_id(str(d["item_a_id"])), "role": "item_a"},
                         "intent": intent_text(d["assertion"]), "candidates": cands,
                         "gold": next(i for i, c in enumerate(cands) if c["label"])})
    return {"problems": problems, "labels": {"scheme": "choice", "relevant": "gold"},
            "notes": {"distractors_keyed_by_ab_id": by_id, "distractors_keyed_by_title": by_title,
                      "gold_option_not_item_b": gold_mismatch}}


# --- labelled tables (ESCI, WANDS, the bundled sample) -------------------------------------------


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return normalize_text(str(v))


def _csv_rows(path: Path) -> Iterator[Row]:
    """A spreadsheet's CSV/TSV as Rows with "line N" places: its byte-order mark and delimiter
    (, ; tab |) detected as replay detects them (processors.sources), any header names (replay's
    reader wants event columns). Raises DataError for undecodable text, naming the line."""
    raw = path.read_bytes()
    encoding = _encoding(path, raw[:8192])
    text = raw.decode(encoding, errors="surrogateescape" if encoding.startswith("utf-8") else "replace").lstrip("\ufeff")
    lines = text.splitlines(keepends=True)
    header = next((ln for ln in lines if ln.strip()), "")
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(header.rstrip("\r\n")))
    names: list[str] | None = None
    last = 0
    for cells in reader:
        start, last = last + 1, reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if any("\udc80" <= ch <= "\udcff" for c in cells for ch in c):
            raise DataError(f"{path}: line {start}: not UTF-8 text (undecodable bytes); save the file as UTF-8")
        if names is None:
            names = [c.strip() for c in cells]
            continue
        if len(cells) > len(names) and any(c.strip() for c in cells[len(names):]):
            raise DataError(f"{path}: line {start}: {len(cells)} cells, but the header has {len(names)} columns")
        yield Row(dict(zip(names, cells + [""] * (len(names) - len(cells)))), f"line {start}", start)


def read_table(path: Path) -> dict:
    """Rows (query, product id, title, label) grouped into one problem per normalised query."""
    cols: dict[str, str] | None = None
    rows: list[tuple[str, str, str, str, str]] = []
    csv_like = path.suffix.lower() in (".csv", ".tsv", ".txt")
    try:
        for row in (_csv_rows(path) if csv_like else read_rows(path)):
            if row.error:
                raise DataError(row.error if row.error.startswith(str(path)) else f"{path}: {row.error}")
            if cols is None:
                names = list(row.fields)
                cols = {want: next((n for n in names if n.strip().lower() in alts), "")
                        for want, alts in COLUMNS.items()}
                lacking = [w for w, c in cols.items() if not c]
                if lacking:
                    raise DataError(f"{path}: header: no column for {', '.join(lacking)} (accepted names: "
                                    + "; ".join(f"{w}: {'/'.join(COLUMNS[w])}" for w in lacking)
                                    + f"); the header has {names}")
            vals = {w: _cell(row.fields.get(c)) for w, c in cols.items()}
            empty = [cols[w] for w, v in vals.items() if not v]
            if empty:
                raise DataError(f"{path}: {row.where}: empty {', '.join(empty)}")
            rows.append((row.where, vals["query"], vals["product_id"], vals["title"], vals["label"]))
    except SourceError as e:
        raise DataError(str(e)) from None
    if not rows:
        raise DataError(f"{path}: no rows")
    scheme = _scheme(path, rows)
    table = ESCI if scheme == "esci" else WANDS
    problems: dict[str, dict] = {}
    seen: dict[tuple[str, str], str] = {}
    for where, q, pid, title, label in rows:
        name = table[label.lower()]
        qk, pk = normalize_query(q), normalize_id(pid)
        if (qk, pk) in seen:
            raise DataError(f"{path}: {where}: query {q!r} and product {pid!r} are already labelled on {seen[(qk, pk)]}")
        seen[(qk, pk)] = where
        p = problems.setdefault(qk, {"id": f"q-{stable_id(qk, n=10)}", "where": where, "source": TABLE,
                                     "behavior": "search_buy", "query": {"text": q, "key": None}, "candidates": []})
        p["candidates"].append({"key": pk, "title": title, "label": name, "where": where})
    labels = sorted({c["label"] for p in problems.values() for c in p["candidates"]})
    return {"problems": list(problems.values()),
            "labels": {"scheme": scheme, "classes": labels, "relevant": RELEVANT,
                       "not_relevant": [x for x in labels if x != RELEVANT]},
            "notes": {"rows": len(rows)}}


def _scheme(path: Path, rows: list) -> str:
    """'esci' or 'wands' from the labels used; raises DataError naming the first line that does not fit."""
    scheme = None
    for where, *_, label in rows:
        lab = label.lower()
        if lab not in ESCI and lab not in WANDS:
            raise DataError(f"{path}: {where}: unknown label {label!r}; ESCI labels are Exact, Substitute, "
                            f"Complement, Irrelevant (or E, S, C, I), WANDS labels Exact, Partial, Irrelevant")
        this = "esci" if lab not in WANDS else "wands" if lab not in ESCI else None
        if this and scheme and this != scheme:
            raise DataError(f"{path}: {where}: label {label!r} is {this.upper()}, but earlier rows use "
                            f"{scheme.upper()} labels: one file, one scheme")
        scheme = scheme or this
    return scheme or "esci"  # only Exact / Irrelevant: both schemes read them alike


# --- label-free behaviour ------------------------------------------------------------------------


def neutral_query(title: str) -> str:
    """The product-type phrase of a title (guess_type(title, 2)), else its first two words, lower case."""
    return guess_type(title, 2) or " ".join(normalize_text(title).split()[:2]).lower() or "product"


def _search_events(pairs: list[tuple[str, str, str]], tag: str, start: datetime | None) -> list[dict]:
    start = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
    out, t = [], 0
    for query, key, title in pairs:
        product = {"product_id": key, "title": title}
        ptype = guess_type(title)
        if ptype:
            product["product_type"] = ptype
        for k in range(EVENTS_PER_PRODUCT):
            t += 1
            out.append({"type": "search_buy", "event_id": f"{tag}-{stable_id(query, key, k)}",
                        "event_time": (start + timedelta(seconds=t)).isoformat(),
                        "session_id": f"{tag}-s{stable_id(query, key, k, 's')}", "query": query, "product": product,
                        "clicked": True, "added_to_cart": k == 0, "purchased": k == 0})
    return out


def neutral_events(products: dict[str, str], seed: int = 0, start: datetime | None = None) -> list[dict]:
    """Search-buy events that earn every product knowledge the same way, from its own title only:
    EVENTS_PER_PRODUCT events (query = neutral_query(title), clicked, the first one bought) per
    product, products in a seeded shuffled order. See the module docstring."""
    order = sorted(products)
    random.Random(seed).shuffle(order)
    return _search_events([(neutral_query(products[k]), k, products[k]) for k in order], "relevance", start)


def row_events(problems: list[dict], seed: int = 0, start: datetime | None = None) -> list[dict]:
    """A table's (query, product) rows as search-buy events, every row the same EVENTS_PER_PRODUCT
    events whatever its label (queries and products get knowledge; the labels are not sent)."""
    pairs = [(p["query"]["text"], c["key"], c["title"]) for p in problems for c in p["candidates"]]
    random.Random(seed).shuffle(pairs)
    return _search_events(pairs, "relevance-rows", start)
