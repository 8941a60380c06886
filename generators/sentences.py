"""How a behaviour, a relation and a tail read in English: the one place for the sentences the
prompts ask the generator to complete, the critic reads and the fluency LM scores a tail after.

A relation's wording is its `stem` (generators/relations.py: "is used to", "was bought by someone
who wants to"). Search-buy explains one product ("The product is used to ..."), co-purchase two
("Both products are used to ..."). The critic reads IntentionQA's option style ("because they both
are a type of USB cable."), so its statement starts with "because".
"""

from __future__ import annotations

from generators.relations import RELATIONS


def plural(stem: str) -> str:
    """A stem for two products: "is used to" -> "are used to", "was bought" -> "were bought"."""
    for s, p in (("is ", "are "), ("was ", "were ")):
        if stem.startswith(s):
            return p + stem[len(s):]
    return stem


def claim(behavior: str, relation: str, capital: bool = True) -> str:
    """The words before a tail: "The product is used to" (search-buy), "Both products are used to"
    (co-purchase). An unknown relation reads as its name."""
    rel = RELATIONS.get(relation)
    stem = rel.stem if rel else relation
    text = f"Both products {plural(stem)}" if behavior == "co_purchase" else f"The product {stem}"
    return text if capital else text[0].lower() + text[1:]


def statement(item: dict) -> str:
    """A candidate as the sentence the critic reads ("because the product is used to keep feet dry."),
    in the style of IntentionQA's options, which the bundled critic is trained on."""
    return f'because {claim(item["behavior"], item["relation"], capital=False)} {item["tail"]}.'


def fluency_prefix(item: dict) -> str:
    """The context a tail is scored after by the fluency LM: the behaviour, then the relation's wording."""
    if item["behavior"] == "search_buy":
        seen = f'A customer searched "{item.get("query") or ""}" and bought "{item.get("product_title") or ""}".'
    else:
        seen = (f'A customer bought "{item.get("product_a_title") or ""}" and "{item.get("product_b_title") or ""}" '
                "together.")
    return f'{seen} {claim(item["behavior"], item["relation"])}'
