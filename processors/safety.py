"""Untrusted text that tries to steer the model, and candidates that carry what no knowledge should.

Queries and titles come from shoppers and sellers. Prompts escape and cap them
(generators/prompts.field), so they cannot change a prompt's structure; on top of that:

- `instruction_reasons(text)`: a query or title that reads like an instruction to a model ("ignore
  the previous instructions", "you are now ...", "system:"), imitates our prompt's own structure
  ("The product is meant for:", "Bought together:", "1. ... 2. ..."), or carries chat-template
  tokens is not sent to generation at all: the generation worker rejects the request with these
  reasons. Knowledge from a steered prompt cannot be trusted, however fluent.
- `candidate_reasons(tail, inputs)`: a candidate carrying a URL, an e-mail address or a phone
  number, advertising (a call to action or a sales claim: "best product, buy now"), or an
  instruction-like phrase copied from the input, is rejected by the filter's safety stage with
  its own reason.

Pure functions, no model: cheap enough to run on every request and candidate.
"""

from __future__ import annotations

import re
import unicodedata

_FLAGS = re.I | re.S

# Phrases that address a model instead of describing a product or a need.
_INSTRUCTIONS = [
    (r"\b(ignore|disregard|forget|override|skip)\b.{0,40}\b(instructions?|prompts?|rules?|directions?|context|"
     r"examples?|everything|all of the above|the above)\b", "asks the model to ignore its instructions"),
    (r"\b(previous|prior|above|earlier|preceding|system)\s+(instructions?|prompts?|messages?|rules?)\b",
     "refers to the model's instructions"),
    (r"\byou\s+(are|were)\s+(now|no longer|an?\s+(ai|assistant|language model|chatbot|llm))\b",
     "addresses the model"),
    (r"\b(as an ai|language model|chatgpt|assistant mode|developer mode|jailbreak|dan mode)\b", "addresses the model"),
    (r"\b(new|updated|real|actual|hidden)\s+(instructions?|task|prompt|rules?)\b", "announces new instructions"),
    # "write with a fountain pen" and "return this item" describe products; "respond with", "output
    # this" and "write only" address a model
    (r"\b(respond|reply|answer|output)\s+(only|with|exactly|the following|this|these|verbatim|back)\b",
     "tells the model what to write"),
    (r"\b(print|write|say|repeat|list|return)\s+(only|exactly|the following|verbatim|back)\b",
     "tells the model what to write"),
    (r"(^|\s)(system|assistant|user|human|ai)\s*:", "imitates a chat turn"),
    (r"<\|[^|>]{1,40}\|>|\[/?inst\]|<</?sys>>|<\s*/?\s*(system|assistant|user|im_start|im_end)\s*>|```|^#{2,}\s|\s#{2,}\s",
     "carries chat-template or markup tokens"),
    # our own prompt's structure: a field that imitates it would forge an answered block
    (r"\b(search|bought|bought together|answer|query|explanation)\s*:", "imitates the prompt's structure"),
    (r"\b(the product|both products)\s+(is|are|was|were|can|has|have)\b[^:]{0,60}:", "imitates the prompt's structure"),
    (r"(^|[\s:])1\s*[.)]\s+\S.{0,80}?\s2\s*[.)]\s+\S", "carries a numbered list"),
    (r"\b(yes or no|answer yes|answer no)\b", "imitates the self-evaluation question"),
]
_INSTRUCTION_RES = [(re.compile(p, _FLAGS), why) for p, why in _INSTRUCTIONS]

# Advertising copied into a candidate: a call to action or a sales claim says nothing about why
# anyone bought the product ("best product, buy now", "order today", "use promo code SAVE10").
_PROMOTION = re.compile(
    r"\b(?:buy|order|shop|call|click|subscribe|sign\s+up|act|add\s+to\s+cart)\s+(?:it\s+|them\s+)?(?:now|today|here)\b"
    r"(?!\s+(?:and|or)\b)"  # "people who buy now and then" is not a call to action
    r"|\b(?:promo|discount|coupon|voucher)\s+code\b|\blimited[\s-]+time\s+(?:offer|deal|only)\b"
    r"|\bfree\s+shipping\b|\bmoney[\s-]+back\s+guarantee\b|\b100\s*%\s+(?:guaranteed|satisfaction)\b"
    r"|(?:#\s*1|\bnumber\s+one)\s+(?:rated|selling|seller|product)s?\b",
    re.I)

_URL = re.compile(r"\b(?:https?://|ftp://|www\.)\S+|\b[a-z0-9][a-z0-9-]{1,62}\.(?:com|net|org|io|co|ru|cn|info|biz|xyz|"
                  r"shop|store|app|ly|me|us|uk|de)\b(?:/\S*)?"
                  r"|\b[a-z0-9][a-z0-9-]{0,62}(?:\.[a-z0-9-]{1,63})*\.[a-z]{2,24}/\S+", re.I)  # any host with a path: amzn.to/3x
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_PHONE = re.compile(r"(?<!\w)(?:\+?\d[\d\s().-]{7,}\d)(?!\w)")
_PHONE_DIGITS = 9  # a phone number has 9+ digits with its area code; "the 2024-2025 school year" has 8
_HANDLE = re.compile(r"(?<![\w@])@[a-z0-9_]{3,}\b", re.I)


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "")
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def instruction_reasons(text: str) -> list[str]:
    """Why an untrusted field (query, title) reads as an instruction to the model; [] if it does not."""
    t = _plain(text)
    out = []
    if any(ch in t for ch in "\n\r\x0b\x0c\u2028\u2029"):
        out.append("contains a line break")
    for rx, why in _INSTRUCTION_RES:
        if rx.search(t) and why not in out:
            out.append(why)
    return out


def request_reasons(request: dict) -> list[str]:
    """instruction_reasons over a generation request's untrusted fields, each prefixed with the field."""
    fields = {"query": request.get("query")}
    for k in ("product", "product_a", "product_b"):
        p = request.get(k) or {}
        fields[f"{k}.title"] = p.get("title")
        fields[f"{k}.product_type"] = p.get("product_type")
    return [f"{name}: {why}" for name, value in fields.items() if value for why in instruction_reasons(value)]


def contact_reasons(tail: str) -> list[str]:
    t = _plain(tail)
    out = []
    if _EMAIL.search(t):
        out.append("carries an e-mail address")
    elif _HANDLE.search(t):
        out.append("carries a social media handle")
    if _URL.search(_EMAIL.sub(" ", t)):
        out.append("carries a URL")
    if any(sum(ch.isdigit() for ch in m.group()) >= _PHONE_DIGITS for m in _PHONE.finditer(t)):
        out.append("carries a phone number")
    return out


# A product that cures or diagnoses a disease is a medical claim no seller's listing may make and no
# search model should learn from a small generator ("cinnamon capsules: cure type 2 diabetes")
_MEDICAL = re.compile(r"\b(?:cures?|curing|diagnos(?:e|es|ing))\b", re.I)


def promotion_reasons(tail: str) -> list[str]:
    """A call to action or a sales claim ("best product, buy now"), or a medical claim ("cure
    diabetes"): advertising, not knowledge."""
    t = _plain(tail)
    out = ["advertises (a call to action or a sales claim)"] if _PROMOTION.search(t) else []
    if _MEDICAL.search(t):
        out.append("makes a medical claim (cures or diagnoses)")
    return out


def candidate_reasons(tail: str, inputs: list[str | None]) -> list[str]:
    """Why a candidate tail must not become knowledge: contact details, advertising, or an
    instruction-like phrase (also one copied from the input fields `inputs`); [] when it is clean."""
    out = contact_reasons(tail) + promotion_reasons(tail)
    steer = instruction_reasons(tail)
    if steer:
        out += [f"reads like an instruction ({steer[0]})"]
    t = " ".join(_plain(tail).lower().split())
    for src in inputs:
        if src and instruction_reasons(src) and len(t) >= 8 and t in " ".join(_plain(src).lower().split()):
            out.append("copies an instruction-like input")
            break
    return out
