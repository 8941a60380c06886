"""The relation vocabulary (COSMO's seed relations and the finer ones it refined), as data.

Each relation says what it means, which behaviour it explains (search-buy, co-purchase or both),
how a prompt asks for it (the sentence the model completes), and which E-CARE scope it serves
(who / where-when / why-need / utility). Prompts, parsing and features read this table only.
"""

from __future__ import annotations

from dataclasses import dataclass

SB, CP = "search_buy", "co_purchase"


@dataclass(frozen=True)
class Relation:
    name: str
    definition: str
    behaviors: tuple[str, ...]
    stem: str  # the sentence the model completes: "{product} {stem} ..."
    scope: str  # E-CARE: who | where_when | why_need | utility
    seed: str  # the COSMO seed relation it refines


RELATIONS: dict[str, Relation] = {r.name: r for r in [
    # seed relations
    Relation("usedFor", "what the product is used for", (SB, CP), "is used for", "utility", "usedFor"),
    Relation("capableOf", "what the product can do", (SB, CP), "is capable of", "utility", "capableOf"),
    Relation("isA", "what kind of thing the product is", (SB, CP), "is a", "utility", "isA"),
    Relation("cause", "what the purchase was caused by", (SB, CP), "was bought because of", "why_need", "cause"),
    # finer relations
    Relation("used_for_function", "the function it serves", (SB, CP), "is used to", "utility", "usedFor"),
    Relation("used_for_event", "an event or activity it is used for", (SB, CP), "is used for the activity", "where_when", "usedFor"),
    Relation("used_for_audience", "the people it is meant for", (SB, CP), "is meant for", "who", "usedFor"),
    Relation("used_in_location", "where it is used", (SB, CP), "is used in the place", "where_when", "usedFor"),
    Relation("used_in_body", "the body part or condition it is used on", (SB, CP), "is used on the body part", "who", "usedFor"),
    Relation("used_with", "what it is used together with", (CP,), "is used together with", "utility", "usedFor"),
    Relation("used_to", "the goal it helps reach", (SB, CP), "is used to help", "why_need", "usedFor"),
    Relation("used_by", "who uses it", (SB, CP), "is used by", "who", "usedFor"),
    Relation("used_on", "the occasion or object it is used on", (SB, CP), "is used on", "where_when", "usedFor"),
    Relation("used_as", "what it serves as", (SB, CP), "is used as", "utility", "usedFor"),
    Relation("is_a", "its category", (SB, CP), "is a type of", "utility", "isA"),
    Relation("capable_of", "an ability it has", (SB, CP), "is able to", "utility", "capableOf"),
    Relation("xIs_a", "what the buyer is", (SB, CP), "was bought by someone who is", "who", "cause"),
    Relation("xWant", "what the buyer wants to do", (SB, CP), "was bought by someone who wants to", "why_need", "cause"),
    Relation("xInterested_in", "what the buyer is interested in", (SB, CP), "was bought by someone interested in", "why_need", "cause"),
]}

SEEDS = ("usedFor", "capableOf", "isA", "cause")
# What prompts.build asks when its caller names no relations (tests, ad-hoc tools): one relation
# per E-CARE scope and the commonest seeds. The generation workers always name theirs:
# INTENTFLOW_GENERATION__RELATIONS (infra/settings.GenerationConfig), a shorter list by default.
DEFAULT = ("used_for_function", "used_for_audience", "used_in_location", "xWant", "capableOf", "isA")


def for_behavior(behavior: str, names: tuple[str, ...] = DEFAULT) -> list[Relation]:
    unknown = [n for n in names if n not in RELATIONS]
    if unknown:
        raise KeyError(f"unknown relation(s) {unknown}; known: {sorted(RELATIONS)}")
    return [RELATIONS[n] for n in names if behavior in RELATIONS[n].behaviors]
