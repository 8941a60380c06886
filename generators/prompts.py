"""Prompts as data: one prompt per (request, relation), asking for a numbered list of short explanations.

Small models follow a plain few-shot completion better than a chat turn, so "plain" is the
default; "chat" wraps the same text as a user message for instruction-tuned bigger models.
Every candidate records PROMPT_VERSION, so a prompt change is visible in the knowledge's lineage.

Untrusted text (queries and titles come from shoppers and sellers) never changes a prompt's
structure: each field is written as a JSON string literal (quotes, backslashes and newlines
escaped, so nothing in it can close the field or start a line) and capped in length (tokens when
the engine's tokenizer is given, else characters). Requests whose fields read like instructions
to the model are not generated at all (processors/safety.py; the generation worker records why).

Prompt order serves vLLM's prefix cache: the instruction and few-shot block are shared by every
prompt of a domain, then the request's context is shared by its relations, and only the last line
differs per relation.

Few-shot examples are answers: their products and queries are disjoint from the bundled samples
(streams/samples, processors/samples.py) and from the evaluation data (IntentionQA, WANDS), which
tests check, and the filter rejects a candidate equal to a few-shot answer given for any other
context (`fewshot_answers`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from generators.relations import RELATIONS, Relation, for_behavior
from generators.sentences import claim

PROMPT_VERSION = "p2-2026-11"

HEADER = "Explain why customers bought products, as short commonsense phrases (2 to 6 words each).\n\n"

# Caps on untrusted fields: a title is a product name, not a description; a query a few words.
MAX_FIELD_CHARS = {"query": 120, "title": 200}
MAX_FIELD_TOKENS = {"query": 32, "title": 64}

# Few-shot examples per domain (the request's product category picks one; "general" otherwise).
# Each: behaviour, context, relation, three good explanations specific to that example.
FEWSHOT: dict[str, list[tuple[str, dict, str, list[str]]]] = {
    "general": [
        ("search_buy", {"query": "rainy commute", "title": "Repel Windproof Travel Umbrella with Teflon Coating"},
         "used_for_event", ["walking to work in the rain", "a windy day downtown", "staying dry between meetings"]),
        ("co_purchase", {"a": "Osprey Daylite Plus Daypack", "b": "CamelBak Crux 2L Hydration Reservoir"},
         "used_for_event", ["a day hike", "carrying water on a trail", "a long bike ride"]),
    ],
    "shoes": [
        ("search_buy", {"query": "shoes for standing on concrete", "title": "Dansko Professional Clog, Black Box Leather"},
         "used_for_audience", ["restaurant line cooks", "warehouse pickers", "people with heel pain"]),
        ("co_purchase", {"a": "Saucony Guide 16 Stability Running Shoe", "b": "Feetures Elite Light Cushion No Show Tab Socks"},
         "used_for_event", ["a marathon training block", "blister-free long runs", "a track interval session"]),
    ],
    "kitchen": [
        ("search_buy", {"query": "rice for meal prep", "title": "Zojirushi NS-TSC10 Micom Rice Cooker and Warmer, 5.5 Cups"},
         "used_for_function", ["cook fluffy rice in bulk", "keep rice warm for hours", "steam vegetables with rice"]),
        ("co_purchase", {"a": "Totally Bamboo 3-Piece Cutting Board Set", "b": "Victorinox Fibrox Pro 8-Inch Chef's Knife"},
         "used_in_location", ["a home kitchen counter", "a shared apartment kitchen", "a knife skills class"]),
    ],
    "baby": [
        ("search_buy", {"query": "baby shower gift", "title": "Skip Hop Activity Gym and Baby Play Mat"},
         "used_for_audience", ["parents of a newborn", "infants learning to roll over", "grandparents who babysit"]),
        ("co_purchase", {"a": "Philips Avent Anti-colic Baby Bottles, 9 oz", "b": "OXO Tot Bottle Brush with Stand"},
         "xIs_a", ["a parent who bottle-feeds", "a daycare caregiver", "a nanny preparing feeds"]),
    ],
}
_DOMAIN_OF = {"shoes": "shoes", "clothing": "shoes", "kitchen": "kitchen", "appliances": "kitchen", "baby": "baby"}


def field(text: str, kind: str, count_tokens: Callable[[str], int] | None = None) -> str:
    """An untrusted field as a JSON string literal, capped: `"..."` with every quote, backslash and
    control character escaped (json.dumps), so it cannot end early or break the line. The cap is
    MAX_FIELD_TOKENS[kind] tokens under `count_tokens` (the engine's tokenizer) when given, and
    MAX_FIELD_CHARS[kind] characters always; a cut field ends in "...". Raises KeyError on an
    unknown kind."""
    text = " ".join((text or "").split())
    cut = False
    if len(text) > MAX_FIELD_CHARS[kind]:
        text, cut = text[: MAX_FIELD_CHARS[kind]], True
    if count_tokens is not None:
        while text and count_tokens(text) > MAX_FIELD_TOKENS[kind]:
            text, cut = text[: max(1, int(len(text) * 0.8))], True
    if cut:
        text = text.rsplit(" ", 1)[0] if " " in text else text
        text += "..."
    return json.dumps(text, ensure_ascii=False)


def _block(behavior: str, ctx: dict, rel: Relation, items: list[str] | None,
           count_tokens: Callable[[str], int] | None = None) -> str:
    if behavior == "search_buy":
        head = (f"Search: {field(ctx['query'], 'query', count_tokens)}\n"
                f"Bought: {field(ctx['title'], 'title', count_tokens)}\n{claim(behavior, rel.name)}:\n")
    else:
        head = (f"Bought together: {field(ctx['a'], 'title', count_tokens)} and "
                f"{field(ctx['b'], 'title', count_tokens)}\n{claim(behavior, rel.name)}:\n")
    if items is None:
        return head + "1."
    return head + "".join(f"{i}. {t}\n" for i, t in enumerate(items, 1)) + "\n"


def domain_of(request: dict) -> str:
    p = request.get("product") or request.get("product_a") or {}
    return _DOMAIN_OF.get((p.get("category") or "").lower(), "general")


@dataclass(frozen=True)
class Prompt:
    request_id: str
    relation: str
    text: str
    version: str = PROMPT_VERSION


def context_of(request: dict) -> dict:
    if request["behavior"] == "search_buy":
        return {"query": request["query"], "title": request["product"]["title"]}
    return {"a": request["product_a"]["title"], "b": request["product_b"]["title"]}


def shared_prefix(domain: str) -> str:
    """The instruction and few-shot block every prompt of a domain starts with (prefix-cached)."""
    return HEADER + "".join(_block(b, c, RELATIONS[r], items) for b, c, r, items in FEWSHOT[domain])


def build(request: dict, relations: tuple[str, ...] | None = None,
          count_tokens: Callable[[str], int] | None = None) -> list[Prompt]:
    """The prompts for one generation request (a dict in GenerationRequest's JSON shape), one per
    relation that applies to its behaviour. Raises KeyError on a request without its context."""
    behavior = request["behavior"]
    rels = for_behavior(behavior, relations) if relations else for_behavior(behavior)
    prefix = shared_prefix(domain_of(request))
    ctx = context_of(request)
    return [Prompt(request["request_id"], rel.name, prefix + _block(behavior, ctx, rel, None, count_tokens))
            for rel in rels]


def _key(text: str) -> str:
    from generators.parsing import normalize

    return normalize(text)


def fewshot_answers() -> dict[str, set[str]]:
    """normalised few-shot answer -> the normalised contexts ("query | title" or "a | b") it was
    given for. A candidate equal to an answer in any other context is an echo of the prompt."""
    out: dict[str, set[str]] = {}
    for shots in FEWSHOT.values():
        for behavior, ctx, _, items in shots:
            key = _key(f"{ctx['query']} | {ctx['title']}" if behavior == "search_buy" else f"{ctx['a']} | {ctx['b']}")
            for t in items:
                out.setdefault(_key(t), set()).add(key)
    return out


def fewshot_inputs() -> list[str]:
    """Every query and title the few-shot examples show (tests keep them disjoint from data)."""
    return [v for shots in FEWSHOT.values() for _, ctx, _, _ in shots for v in ctx.values()]


def self_eval_prompt(context: dict, behavior: str, relation: str, tail: str) -> str:
    """E-CARE's self-evaluation question, answered by the next token's P("YES") - P("NO")."""
    RELATIONS[relation]  # KeyError for an unknown relation, as before
    if behavior == "search_buy":
        fact = (f"A customer searched {field(context['query'], 'query')} and bought {field(context['title'], 'title')}. "
                f"{claim(behavior, relation)} {tail}.")
    else:
        fact = (f"A customer bought {field(context['a'], 'title')} and {field(context['b'], 'title')} together. "
                f"{claim(behavior, relation)} {tail}.")
    return f"{fact}\nIs this explanation reasonable? Answer YES or NO.\nAnswer:"
