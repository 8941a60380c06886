"""Prompts as data: one prompt per (request, relation), asking for a numbered list of short explanations.

Small models follow a plain few-shot completion better than a chat turn, so "plain" is the
default; "chat" wraps the same text as a user message for instruction-tuned bigger models.
Every candidate records PROMPT_VERSION, so a prompt change is visible in the knowledge's lineage.
"""

from __future__ import annotations

from dataclasses import dataclass

from generators.relations import RELATIONS, Relation, for_behavior

PROMPT_VERSION = "p1-2026-11"

HEADER = "Explain why customers bought products, as short commonsense phrases (2 to 6 words each).\n\n"

# Few-shot examples per domain (the request's product category picks one; "general" otherwise).
# Each: behaviour, context, relation, three good explanations.
FEWSHOT: dict[str, list[tuple[str, dict, str, list[str]]]] = {
    "general": [
        ("search_buy", {"query": "winter coat", "title": "Columbia Men's Steens Mountain Full Zip Fleece Jacket"},
         "capableOf", ["keep the wearer warm", "block cold wind", "dry quickly after rain"]),
        ("co_purchase", {"a": "Coleman Sundome 4-Person Tent", "b": "Teton Sports Sleeping Bag"},
         "used_for_event", ["a camping trip", "sleeping outdoors", "a weekend in the woods"]),
    ],
    "shoes": [
        ("search_buy", {"query": "shoes for pregnant women", "title": "Skechers Women's Slip-Resistant Work Shoes"},
         "used_for_audience", ["pregnant women", "nurses on long shifts", "people with swollen feet"]),
        ("co_purchase", {"a": "Brooks Ghost 15 Running Shoe", "b": "Hanes Cushioned Crew Socks"},
         "used_for_event", ["running", "a daily workout", "training for a race"]),
    ],
    "kitchen": [
        ("search_buy", {"query": "healthy cooking", "title": "Ninja AF101 Air Fryer, 4 Quart"},
         "used_for_function", ["fry food with little oil", "cook crispy vegetables", "reheat leftovers"]),
        ("co_purchase", {"a": "Lodge Cast Iron Skillet", "b": "OXO Silicone Spatula Set"},
         "used_in_location", ["the kitchen", "a campsite", "an outdoor grill"]),
    ],
    "baby": [
        ("search_buy", {"query": "baby registry", "title": "Hatch Rest Baby Sound Machine and Night Light"},
         "used_for_audience", ["new parents", "newborn babies", "parents of light sleepers"]),
        ("co_purchase", {"a": "Pampers Swaddlers Newborn Diapers", "b": "Graco Pack 'n Play Playard"},
         "xIs_a", ["new parents", "expecting parents", "grandparents caring for a baby"]),
    ],
}
_DOMAIN_OF = {"shoes": "shoes", "clothing": "shoes", "kitchen": "kitchen", "appliances": "kitchen", "baby": "baby"}


def _plural(stem: str) -> str:
    for s, p in (("is ", "are "), ("was ", "were ")):
        if stem.startswith(s):
            return p + stem[len(s):]
    return stem


def _block(behavior: str, ctx: dict, rel: Relation, items: list[str] | None) -> str:
    if behavior == "search_buy":
        head = f'Search: "{ctx["query"]}"\nBought: "{ctx["title"]}"\nThe product {rel.stem}:\n'
    else:
        head = f'Bought together: "{ctx["a"]}" and "{ctx["b"]}"\nBoth products {_plural(rel.stem)}:\n'
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


def build(request: dict, relations: tuple[str, ...] | None = None) -> list[Prompt]:
    """The prompts for one generation request (a dict in GenerationRequest's JSON shape)."""
    behavior = request["behavior"]
    rels = for_behavior(behavior, relations) if relations else for_behavior(behavior)
    shots = FEWSHOT[domain_of(request)]
    shot_text = "".join(_block(b, c, RELATIONS[r], items) for b, c, r, items in shots)
    ctx = context_of(request)
    return [Prompt(request["request_id"], rel.name, HEADER + shot_text + _block(behavior, ctx, rel, None)) for rel in rels]


def self_eval_prompt(context: dict, behavior: str, relation: str, tail: str) -> str:
    """E-CARE's self-evaluation question, answered by the next token's P("YES") - P("NO")."""
    rel = RELATIONS[relation]
    if behavior == "search_buy":
        fact = f'A customer searched "{context["query"]}" and bought "{context["title"]}". The product {rel.stem} {tail}.'
    else:
        fact = f'A customer bought "{context["a"]}" and "{context["b"]}" together. Both products {_plural(rel.stem)} {tail}.'
    return f"{fact}\nIs this explanation reasonable? Answer YES or NO.\nAnswer:"
