"""Knowledge filtering: stages run cheapest first; every rejection says which stage and why.

Rule stages are pure functions here. Stages that need a model (fluency under a small LM,
paraphrase similarity, the critic, self-evaluation) receive batched scoring functions from the ML
side (generators/scorers.py), so this module stays importable and testable without torch.

A candidate is a dict with `behavior` ("search_buy" | "co_purchase"), `relation`, `tail` and the
context that applies: `query`, `product_title`, `product_type` (search-buy) or `product_a_title`,
`product_b_title` (co-purchase). `to_item` also accepts the generation worker's candidates.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Callable, MutableMapping, Sequence

from pydantic import BaseModel, Field

Scorer = Callable[[list[dict]], list[float]]  # batched: items in, one score per item out

_WORD = re.compile(r"[a-z0-9']+")
_STOP = frozenset("a an the of for to and or with in on at by is are be it its their they them this that as from "
                  "who which can used use using".split())
ISA = {"isA", "is_a"}


class FilterConfig(BaseModel):
    min_mean_logprob: float = Field(-8.0, description="fluency: mean token log-prob under the small LM below this is garbage (SmolLM2: word salad scores about -8.6, odd but fluent phrases -4 to -8)")
    max_words: int = Field(10, description="fluency: longer tails are run-on text")
    max_repeat_ratio: float = Field(0.5, description="fluency: share of repeated words above which text is malformed")
    restatement_similarity: float = Field(0.85, description="restatement: character similarity to query/type/title at or above this")
    restatement_overlap: float = Field(0.8, description="restatement: Jaccard overlap of content words with the query or product type at or above this")
    generic_min_heads: int = Field(20, description="generic: a tail seen with at least this many distinct heads ...")
    generic_min_entropy: float = Field(0.75, description="... whose product categories/types spread this evenly (0-1) is generic")
    paraphrase_similarity: float = Field(0.9, description="paraphrase: cosine(tail, context) at or above this")
    critic: str | None = Field(None, description="critic model folder (`intentflow critic train`); unset: the critic stage is skipped")
    min_plausibility: float = Field(0.5, description="critic: plausibility below this is rejected")
    min_self_eval: float = Field(0.0, description="self-evaluation: P(YES) - P(NO) below this is rejected (when enabled)")
    self_eval_by_relation: dict[str, float] = Field(default_factory=dict, description="calibrated per-relation thresholds")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOP}


def to_item(c: dict) -> dict:
    """The `intentflow filter` input shape, from either that shape or a generation candidate."""
    if "product_title" in c or "product_a_title" in c or "lineage" not in c:
        return dict(c)
    p, a, b = c.get("product") or {}, c.get("product_a") or {}, c.get("product_b") or {}
    return {"behavior": c["behavior"], "query": c.get("query"), "product_title": p.get("title"),
            "product_type": p.get("product_type"), "product_a_title": a.get("title"), "product_b_title": b.get("title"),
            "relation": c["relation"], "tail": c["tail"], "mean_logprob": (c.get("lineage") or {}).get("mean_logprob"),
            "head": c.get("head"), "category": p.get("category") or a.get("category")}


def context_text(item: dict) -> str:
    if item["behavior"] == "search_buy":
        return f'{item.get("query") or ""} | {item.get("product_title") or ""}'
    return f'{item.get("product_a_title") or ""} | {item.get("product_b_title") or ""}'


def head_of(item: dict) -> str:
    if item.get("head"):
        return str(item["head"])
    if item["behavior"] == "search_buy":
        return f'q:{item.get("query")}|{item.get("product_title")}'
    return f'p:{item.get("product_a_title")}|{item.get("product_b_title")}'


# --- rule stages: (item) -> (score, reason or None) -------------------------------------------


def fluency_rules(item: dict, cfg: FilterConfig) -> tuple[float, str | None]:
    w = words(item["tail"])
    if not w:
        return 0.0, "no words"
    if len(w) > cfg.max_words:
        return 0.0, f"run-on text ({len(w)} words > {cfg.max_words})"
    repeat = 1 - len(set(w)) / len(w)
    if repeat > cfg.max_repeat_ratio:
        return 0.0, f"malformed: {repeat:.0%} repeated words"
    lp = item.get("mean_logprob")
    if lp is not None and lp < cfg.min_mean_logprob:
        return lp, f"not fluent: mean token log-prob {lp:.2f} < {cfg.min_mean_logprob}"
    return (lp if lp is not None else 0.0), None


def _similar(a: str, b: str) -> float:
    return SequenceMatcher(None, " ".join(words(a)), " ".join(words(b))).ratio()


def restatement(item: dict, cfg: FilterConfig) -> tuple[float, str | None]:
    tail = item["tail"]
    refs = {k: item.get(k) for k in ("query", "product_type", "product_title", "product_a_title", "product_b_title")}
    best, best_ref = 0.0, None
    for k, ref in refs.items():
        if ref:
            s = _similar(tail, ref)
            if s > best:
                best, best_ref = s, k
    if best >= cfg.restatement_similarity:
        return best, f"restates the {best_ref} (similarity {best:.2f})"
    tc = content(tail)
    if tc:
        # the same content words in another order ("pregnant women shoes"); a part of the query
        # ("pregnant women" for "shoes for pregnant women") is its intent, and is kept
        for k in ("query", "product_type"):
            rc = content(refs.get(k) or "")
            if rc and len(tc & rc) / len(tc | rc) >= cfg.restatement_overlap:
                return best, f"restates the {k} (shares {len(tc & rc)} of {len(tc | rc)} content words)"
    if item["relation"] in ISA and item.get("product_type") and content(item["product_type"]) & tc == tc and tc:
        return best, "trivial: the product is a type of its own type"
    return best, None


@dataclass
class TailStats:
    """Running statistics per normalised tail: distinct heads and the categories they fall in.

    The mapping is the persisted state (a dict in tests; a durable store in the worker).
    """

    store: MutableMapping[str, dict]
    max_heads: int = 200

    def observe(self, item: dict) -> None:
        key = " ".join(words(item["tail"]))
        st = self.store.get(key) or {"heads": [], "cats": {}}
        head = head_of(item)
        if head not in st["heads"] and len(st["heads"]) < self.max_heads:
            st["heads"].append(head)
            cat = (item.get("category") or item.get("product_type") or "?").lower()
            st["cats"][cat] = st["cats"].get(cat, 0) + 1
        self.store[key] = st

    def generic_score(self, item: dict, cfg: FilterConfig) -> tuple[float, str | None]:
        st = self.store.get(" ".join(words(item["tail"])))
        if not st:
            return 0.0, None
        n = sum(st["cats"].values())
        h = -sum(c / n * math.log(c / n) for c in st["cats"].values())
        spread = h / math.log(len(st["cats"])) if len(st["cats"]) > 1 else 0.0
        heads = len(st["heads"])
        if heads >= cfg.generic_min_heads and spread >= cfg.generic_min_entropy:
            return spread, f"generic: seen with {heads} unrelated heads across {len(st['cats'])} categories"
        return spread, None


# --- the pipeline ----------------------------------------------------------------------------


@dataclass
class Verdict:
    kept: bool
    stage: str | None = None
    reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"kept": self.kept, "stage": self.stage, "reason": self.reason,
                "scores": {k: round(v, 4) for k, v in self.scores.items()}}


STAGES = ("fluency", "restatement", "generic", "paraphrase", "critic", "self_eval")


@dataclass
class FilterPipeline:
    cfg: FilterConfig
    stats: TailStats
    fluency: Scorer | None = None      # mean token log-prob of the tail in context (when the item has none)
    similarity: Scorer | None = None   # cosine(tail, context)
    critic: Scorer | None = None       # plausibility in [0, 1]
    self_eval: Scorer | None = None    # P(YES) - P(NO)

    def run(self, items: Sequence[dict]) -> list[Verdict]:
        """All stages in order over a micro-batch; model stages score only the survivors, batched."""
        cfg = self.cfg
        items = [to_item(c) for c in items]
        out = [Verdict(True) for _ in items]
        for it in items:
            self.stats.observe(it)

        def reject(i: int, stage: str, reason: str) -> None:
            out[i].kept, out[i].stage, out[i].reason = False, stage, reason

        def alive() -> list[int]:
            return [i for i, v in enumerate(out) if v.kept]

        if self.fluency:
            need = [i for i in alive() if items[i].get("mean_logprob") is None]
            for i, s in zip(need, self.fluency([items[i] for i in need]) if need else []):
                items[i]["mean_logprob"] = s
        for name, rule in (("fluency", fluency_rules), ("restatement", restatement),
                           ("generic", lambda it, c: self.stats.generic_score(it, c))):
            for i in alive():
                score, why = rule(items[i], cfg)
                out[i].scores[name] = score
                if why:
                    reject(i, name, why)
        for name, scorer, test in (
            ("paraphrase", self.similarity, lambda s, it: s >= cfg.paraphrase_similarity and
             f"paraphrases its context (cosine {s:.2f} >= {cfg.paraphrase_similarity})"),
            ("critic", self.critic, lambda s, it: s < cfg.min_plausibility and
             f"implausible (critic {s:.2f} < {cfg.min_plausibility})"),
            ("self_eval", self.self_eval, lambda s, it: s < cfg.self_eval_by_relation.get(it["relation"], cfg.min_self_eval)
             and f"the model itself does not find it reasonable (P(YES)-P(NO) {s:.2f})"),
        ):
            idx = alive()
            if scorer is None or not idx:
                continue
            for i, s in zip(idx, scorer([items[i] for i in idx])):
                out[i].scores[name] = float(s)
                why = test(float(s), items[i])
                if why:
                    reject(i, name, why)
        return out
