"""The annotation loop: draw candidates for human review, import the answers as critic training data.

Sampling follows COSMO: weight = popularity of the head (query or product pair: how often it
appears) / frequency of the tail (how common the knowledge is), so reviewers see the popular
behaviour's less obvious, more diverse knowledge rather than the same generic tail again. Drawn
without replacement (Efraimidis-Spirakis keys). Each row asks COSMO's five yes/no questions.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

from pydantic import ValidationError

from generators.sentences import statement
from processors.contracts import AnnotationRow
from processors.filters import context_text, to_item, words


class AnnotationError(ValueError):
    pass


def sample(candidates: list[dict], n: int, seed: int = 0) -> list[dict]:
    items = [to_item(c) for c in candidates]
    heads = Counter(context_text(i) for i in items)
    tails = Counter(" ".join(words(i["tail"])) for i in items)
    rng = random.Random(seed)
    keyed = []
    for c, i in zip(candidates, items):
        w = heads[context_text(i)] / tails[" ".join(words(i["tail"]))]
        keyed.append((rng.random() ** (1.0 / w), c, i))
    keyed.sort(key=lambda x: -x[0])
    out, seen = [], set()
    for _, c, i in keyed:
        key = (context_text(i), i["relation"], " ".join(words(i["tail"])))
        if key in seen:
            continue
        seen.add(key)
        out.append(AnnotationRow(
            annotation_id=hashlib.blake2b(json.dumps(key).encode(), digest_size=6).hexdigest(), behavior=i["behavior"],
            context=context_text(i), relation=i["relation"], tail=i["tail"], candidate_id=c.get("candidate_id"),
            edge_id=c.get("edge_id")).model_dump())
        if len(out) >= n:
            break
    return out


def validate(rows: list[dict]) -> list[dict]:
    """Every row answered and well-formed, or AnnotationError listing every problem (nothing is taken)."""
    errors, ids, clean = [], set(), []
    for n, r in enumerate(rows, 1):
        missing = [k for k in ("annotation_id", "behavior", "context", "relation", "tail") if not r.get(k)]
        if missing:
            errors.append(f"row {n}: missing {', '.join(missing)}")
            continue
        if r["annotation_id"] in ids:
            errors.append(f"row {n}: annotation_id {r['annotation_id']} appears twice")
        ids.add(r["annotation_id"])
        try:
            row = AnnotationRow.model_validate(r)
        except ValidationError as e:
            errors += [f"row {n}: {'.'.join(map(str, x['loc']))} {x['msg'].removeprefix('Value error, ')}"
                       for x in e.errors(include_url=False)]
            continue
        errors += [f"row {n}: {q} must be yes/no (true/false), got None" for q in row.unanswered()]
        clean.append(row.model_dump())
    if errors:
        raise AnnotationError(f"{len(errors)} problem(s), nothing imported:\n" + "\n".join(errors[:50]))
    return clean


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSONL file (the annotation store, the critic's data); AnnotationError (a
    ValueError) names the first line that is not JSON, and nothing is read."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise AnnotationError(f"{path}:{n}: not JSON ({e}); nothing read") from None
    return rows


def import_file(path: str | Path, into: str | Path) -> dict:
    """Validate the whole file, then append it to the annotation store in one write."""
    rows = validate(read_jsonl(path))
    into = Path(into)
    have = {r["annotation_id"] for r in read_jsonl(into)} if into.exists() else set()
    new = [r for r in rows if r["annotation_id"] not in have]
    into.parent.mkdir(parents=True, exist_ok=True)
    with open(into, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in new))
    return {"imported": len(new), "already_there": len(rows) - len(new), "store": str(into)}


def problems(rows: list[dict]) -> list[dict]:
    """Annotations as critic training problems: for a context, a plausible answer against the
    implausible ones (contexts without both kinds teach no choice and are skipped)."""
    by_ctx: dict[str, list[dict]] = {}
    for r in rows:
        by_ctx.setdefault(r["context"], []).append(r)
    out = []
    for ctx, rs in by_ctx.items():
        good = [r for r in rs if r["plausible"] and r["typical"]]
        bad = [r for r in rs if not r["plausible"]]
        for g in good:
            opts = [statement(g)] + [statement(b) for b in bad[:3]]
            if len(opts) >= 2:
                out.append({"id": g["annotation_id"], "context": ctx, "options": opts, "gold": 0, "raw": g})
    return out
