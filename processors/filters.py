"""Knowledge filtering: stages run cheapest first; every rejection says which stage and why.

COSMO kept 35% of search-buy and 9% of co-purchase explanations: precision over recall. The
stages, in order, each with what it exists for:

1. safety: contact details (URL, e-mail, phone), advertising ("buy now") or instruction-like
   text, also copied from the input (processors/safety.py);
2. fluency: no words in any script, run-on or repeated text, a content word said twice ("a cute
   puppy puppy"), a tail that stops mid-phrase ("... comes with a"), keyboard noise, and the item's own
   mean token log-prob under the generator (per item, from the tokens of that list item) or, for
   candidates without one, under the small LM (that model half runs after the rule stages 3-5,
   on what they kept, and rejects as "fluency");
3. restatement: the candidate says what the input already says: near-equal to the query, a type or
   a title, or all its content words contained in one product's title and type (a title fragment,
   the own type with an article, the other product of a co-purchase), or mostly copied from one
   title (3+ content words, 60% of them from it). A part of the query that
   the product's own text does not say ("pregnant women" for "shoes for pregnant women" and a work
   shoe) is the query's intent and is kept as an audience, not as what one does with the product;
4. echo: a few-shot answer of the prompt given for another context (the model copied the example);
5. generic: tails that say nothing about this product (every content word is one of
   GENERIC_WORDS: "because they like them", "everyday use"), and tails seen with many heads whose
   product types spread like the types of all heads (running statistics, merged across workers);
6. form: the relation's sentence: a "who" tail names a person or an animal, a "do" tail (function,
   xWant, capable of) is not a noun phrase ("a sleeping bag" is not what a tent is used to do);
7. paraphrase: MiniLM cosine of the tail to its context;
8. critic: plausibility from a trained critic (on by default);
9. self-evaluation: E-CARE's P(YES) - P(NO) from the engine (optional).

Rule stages are pure functions here. Stages that need a model receive batched scoring functions
from the ML side (generators/scorers.py), so this module stays importable and testable without torch.

A candidate ("item") is a dict with `behavior` ("search_buy" | "co_purchase"), `relation`, `tail`
and the context that applies: `query`, `product_title`, `product_type` (search-buy) or
`product_a_title`, `product_b_title`, `product_a_type`, `product_b_type` (co-purchase).
`to_item` also accepts the generation worker's candidates.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Callable, MutableMapping, Sequence

from pydantic import BaseModel, Field

from processors.safety import candidate_reasons

Scorer = Callable[[list[dict]], list[float]]  # batched: items in, one score per item out

_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")  # a word of any script ("kid's", "t-shirt", "беременных")
_STOP = frozenset("a an the of for to and or with in on at by is are be it its their they them this that as from "
                  "who which can used use using".split())
# Words that say nothing about a product: a tail made only of these is vacuous ("because they like
# them", "people who need it", "everyday use", "for the same reason"). COSMO's generic statements.
GENERIC_WORDS = frozenset("""
    because like likes liked love loves want wants wanted need needs needed buy buys bought buying purchase purchased
    enjoy enjoys enjoying every day days
    purchasing customer customers buyer buyers shopper shoppers people person persons someone somebody anyone anybody
    everyone everybody user users consumer consumers product products item items thing things stuff something
    same reason reasons purpose purposes general generally everyday daily many much lot lots good great nice best
    better quality useful helpful convenient easy various different other others one ones all any some also just very
    really more most well both together each same own get gets getting make makes made do does did go goes have has
    had will would could should may might must he she him her his hers we us our you your i me my mine when where
    why how what there here so too not no yes into out up down over about time times way ways kind kinds type types
    personal individual home house life living well-being wellbeing
""".split())
ISA = {"isA", "is_a"}


def script_share(text: str, scripts: Sequence[str]) -> float:
    """Share of the letters of `text` whose Unicode name starts with one of `scripts` ("LATIN",
    "CYRILLIC", "CJK", "HIRAGANA", ...); 1.0 for text without letters."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 1.0
    ok = sum(1 for ch in letters if unicodedata.name(ch, "").startswith(tuple(scripts)))
    return ok / len(letters)


class FilterConfig(BaseModel):
    min_mean_logprob: float = Field(-4.5, description="fluency: a tail's own mean token log-prob under the generator below this is garbage (SmolLM2, per item; measured in docs/BENCHMARKS.md)")
    min_lm_logprob: float = Field(-10.5, description="fluency for candidates without generation log-probs (hand-written, `intentflow filter`): the tail's mean token log-prob after its relation's wording under SmolLM2 below this is garbage (measured: real words in no order -10 to -14; the 344 hand-written plausible explanations of generators/data median -4.5, 7% below -8, 0.3% below -10, none below -11; made-up words -7 to -9 are not separable by it)")
    max_words: int = Field(10, description="fluency: longer tails are run-on text")
    max_repeat_ratio: float = Field(0.5, description="fluency: share of repeated words above which text is malformed")
    restatement_similarity: float = Field(0.85, description="restatement: character similarity to query/type/title at or above this")
    restatement_copied: float = Field(0.6, description="restatement: a tail with 3+ content words of which at least this share is copied from one product's title and type restates it")
    restatement_overlap: float = Field(0.8, description="restatement: Jaccard overlap of content words with the query or product type at or above this")
    generic_min_heads: int = Field(8, ge=2, description="generic: a tail seen with at least this many distinct heads (normalised query and product, or product pair) ...")
    generic_min_types: int = Field(4, ge=2, description="... of at least this many product types ...")
    generic_min_spread: float = Field(0.6, ge=0, le=1, description="... whose types spread like those of all heads (1 - Jensen-Shannon divergence, base 2, between the two distributions) at or above this is generic")
    paraphrase_similarity: float = Field(0.9, description="paraphrase: cosine(tail, context) at or above this")
    critic: str | None = Field("default", description="the critic stage: 'default' = the critic `make models` (bootstrap) trains and caches beside the models (workers fail at start if it is missing); 'off' (or 'none') skips the stage; else a critic folder (`intentflow critic train`)")
    min_plausibility: float = Field(0.5, description="critic: plausibility below this is rejected")
    critic_scripts: list[str] = Field(["LATIN"], description="scripts the critic's encoder reads (all-MiniLM-L6-v2 is English): a tail whose letters are mostly in another script is rejected by the critic stage as not judged, not scored at random")
    min_self_eval: float = Field(0.0, description="self-evaluation: P(YES) - P(NO) below this is rejected (when enabled)")
    self_eval_by_relation: dict[str, float] = Field(default_factory=dict, description="calibrated per-relation thresholds")


def words(text: str) -> list[str]:
    """Words of any script, case-folded, NFKC (so full-width letters and ligatures count)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text or "").casefold())


@lru_cache(maxsize=1)
def _stemmer():
    import snowballstemmer

    return snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def _stem(w: str) -> str:
    if not w.isascii():
        return w
    s = _stemmer().stemWord(w.replace("'", ""))
    return {"women": "woman", "men": "man", "children": "child", "feet": "foot", "teeth": "tooth",
            "mice": "mous", "people": "person"}.get(s, s)


def content(text: str) -> set[str]:
    """Content words, stemmed (English) so "shoes" meets "shoe"; other scripts as they are.
    Hyphenated words count as their parts ("slip-resistant" is "slip" and "resistant")."""
    return {_stem(p) for w in words(text) for p in w.split("-") if p and p not in _STOP}


_GENERIC_STEMS = frozenset(_stem(w) for w in GENERIC_WORDS)
_REASON_STEMS = frozenset(_stem(w) for w in ("because", "since", "reason", "reasons"))


_TEXT_FIELDS = ("tail", "query", "product_title", "product_type", "product_a_title", "product_b_title",
                "product_a_type", "product_b_type")


def unescape(text: str) -> str:
    """HTML entities decoded, also when escaped twice ("&amp;amp;"), as ingestion decodes them
    (processors.events.normalize_text); nothing else changes."""
    for _ in range(4):
        t = html.unescape(text)
        if t == text:
            break
        text = t
    return text


def to_item(c: dict) -> dict:
    """The `intentflow filter` input shape, from either that shape or a generation candidate.
    HTML entities in the tail and the context are decoded (hand-written and scraped input carries
    them; ingestion and the parser decode theirs). Product types are derived from titles where the
    catalogue gives none (processors.product_type)."""
    if "product_title" in c or "product_a_title" in c or "lineage" not in c:
        item = dict(c)
    else:
        p, a, b = c.get("product") or {}, c.get("product_a") or {}, c.get("product_b") or {}
        item = {"behavior": c["behavior"], "query": c.get("query"), "product_title": p.get("title"),
                "product_type": p.get("product_type"), "product_a_title": a.get("title"), "product_b_title": b.get("title"),
                "product_a_type": a.get("product_type"), "product_b_type": b.get("product_type"),
                "relation": c["relation"], "tail": c["tail"], "mean_logprob": (c.get("lineage") or {}).get("mean_logprob"),
                "head": c.get("head"), "category": p.get("category") or a.get("category"),
                "category_b": b.get("category")}
    from processors.product_type import guess_type

    for k in _TEXT_FIELDS:  # HTML-encoded input ("kids &amp; toddlers"): knowledge and its context are text
        if isinstance(item.get(k), str) and "&" in item[k]:
            item[k] = unescape(item[k])
    for title, kind in (("product_title", "product_type"), ("product_a_title", "product_a_type"),
                        ("product_b_title", "product_b_type")):
        if item.get(title) and not item.get(kind):
            item[kind] = guess_type(item[title])
    return item


def context_text(item: dict) -> str:
    if item["behavior"] == "search_buy":
        return f'{item.get("query") or ""} | {item.get("product_title") or ""}'
    return f'{item.get("product_a_title") or ""} | {item.get("product_b_title") or ""}'


def head_of(item: dict) -> str:
    """The normalised head the generic statistics count: the (query, product) or the product pair."""
    def norm(s: object) -> str:
        return " ".join(words(str(s or "")))

    if item["behavior"] == "search_buy":
        return f'q:{norm(item.get("query"))}|{norm(item.get("product_title"))}'
    a, b = sorted((norm(item.get("product_a_title")), norm(item.get("product_b_title"))))
    return f"p:{a}|{b}"


def kind_of(item: dict) -> str:
    """The product type(s) a head is about: one type for search-buy, both (sorted) for co-purchase."""
    if item["behavior"] == "search_buy":
        return (item.get("product_type") or item.get("category") or "?").casefold()
    return "+".join(sorted([(item.get("product_a_type") or "?").casefold(),
                            (item.get("product_b_type") or "?").casefold()]))


# --- rule stages: (item) -> (score, reason or None) -------------------------------------------


def safety(item: dict, cfg: FilterConfig) -> tuple[float, str | None]:
    inputs = [item.get(k) for k in ("query", "product_title", "product_a_title", "product_b_title", "product_type")]
    why = candidate_reasons(item["tail"], inputs)
    return (0.0, why[0]) if why else (1.0, None)


_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm", "1234567890")
_VOWELS = set("aeiouy")
# markdown the parser strips from model output: emphasis, code, a heading, a leading bullet
# markdown, and HTML tags or entities ("<b>at home</b>", "&amp;": a tester's tail the critic scored 0.99)
_MARKUP = re.compile(r"\*\*|__|`|(?:^|\s)\*[^*\s]|(?:^|\s)#{1,6}\s|^\s*[-*•]\s"
                     r"|</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>|&(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);")
_CONSONANT_RUN = re.compile(r"[^aeiouy]{6,}")  # "strengths" has 5
_SAME_LETTER_RUN = re.compile(r"([a-z])\1\1")


def keyboard_noise(w: str) -> bool:
    """A Latin-script word typed, not written: a run of keys along a keyboard row that is most of the
    word ("asdf", "qwerty"; not "property", whose "erty" is half of it) or 5+ keys long, 5+ letters
    without a vowel ("xzqwr"), 6+ consonants in a row ("ghfjdksl...") or a letter 3+ times in a row
    ("aaaaaaa")."""
    if not w.isascii() or not w.isalpha():
        return False
    if len(w) >= 5 and not (_VOWELS & set(w)):
        return True
    if _CONSONANT_RUN.search(w) or _SAME_LETTER_RUN.search(w):
        return True
    longest = run = 1  # keys in a row next to each other, either way
    for a, b in zip(w, w[1:]):
        run = run + 1 if any(a in row and b in row and abs(row.index(a) - row.index(b)) == 1
                             for row in _KEYBOARD_ROWS) else 1
        longest = max(longest, run)
    return longest >= 5 or (longest >= 4 and longest >= 0.6 * len(w))


# A small generator loops ("a cute puppy puppy", "enjoy a campfire on a campfire", "pregnancy during
# pregnancy") and stops mid-phrase ("a bed that comes with a"). On the 2,044 hand-labelled SmolLM2
# candidates of generators/data/real_candidates.jsonl a loop (repeated_words) marks 66 tails, none
# plausible, and none of the 344 hand-written plausible explanations; idioms that repeat a word
# around one preposition ("room to room", "side by side") are not loops.
# A stranded preposition can end a phrase ("the ground you kneel on", "kids to play with"); an
# article, a possessive, a conjunction or "of" cannot.
_OPEN_ENDS = frozenset("a an the of and or but nor his her their your my our its whose than until while because "
                       "if so from into onto between among".split())
_DETERMINERS = frozenset("a an the this that these those my your his her their our its".split())
_ARTICLES = _DETERMINERS | {"some"}  # what may stand between a preposition and the word it introduces
_IDIOM_LINKS = frozenset("to by after for in and".split())
_LINK_WORDS = frozenset("of for to with in on at by from during into onto over under about after before than like "
                        "that which who whose".split())
_FUNCTION_WORDS = _STOP | _ARTICLES | _LINK_WORDS
_TOKEN = re.compile(r"\(|[^\W_]+(?:['’\-][^\W_]+)*")


def repeated_words(tail: str) -> list[str]:
    """Words a tail says twice the way a looping generator does: the same word twice in a row ("a
    puppy puppy", "the the park"), a repeated pair of words ("baby groomers that help baby
    groomers"), or a content word (stemmed: "pregnancy" and "pregnant" are one) said again after a
    preposition or a bracket ("a campfire on a campfire", "pregnancy during pregnancy", "a puppy (1
    puppy)"), except in "X to X" idioms ("room to room"). "keep cold drinks cold" and "moms-to-be and
    new moms" repeat a word on purpose and are not loops. [] when none."""
    text = unicodedata.normalize("NFKC", tail or "").casefold()
    toks, unit = [], []  # unit[i]: which written word (a hyphenated compound is one) token i is part of
    for n, t in enumerate(_TOKEN.findall(text)):
        for part in (t.split("-") if t != "(" else [t]):
            if part:
                toks.append(part)
                unit.append(n)
    stems = [_stem(t) if t != "(" else t for t in toks]
    out: list[str] = []

    def add(w: str) -> None:
        if w not in out:
            out.append(w)

    pairs: set[tuple[str, str]] = set()
    for i in range(1, len(toks)):
        if toks[i] != "(" and stems[i] == stems[i - 1]:  # twice in a row
            add(toks[i])
        elif toks[i] != "(" and unit[i] != unit[i - 1] and toks[i] not in _STOP and any(
                stems[j] == stems[i] for j in range(i) if unit[j] == unit[i - 1]):  # "baby-friendly baby"
            add(toks[i])
        if (toks[i - 1], toks[i]) in pairs and not (toks[i - 1] in _FUNCTION_WORDS and toks[i] in _FUNCTION_WORDS):
            # a pair of words again, not two function words ("of the ... of the")
            add(f"{toks[i - 1]} {toks[i]}")
        if i >= 2:
            pairs.add((toks[i - 2], toks[i - 1]))
    for i, w in enumerate(toks):
        if w == "(" or w in _STOP or w.isdigit() or w in _LINK_WORDS:
            continue
        k = i - 1  # what introduces the word, past articles and numbers
        while k >= 0 and (toks[k] in _ARTICLES or toks[k].isdigit()):
            k -= 1
        if k < 0 or not (toks[k] in _LINK_WORDS or toks[k] == "("):
            continue
        for j in range(k):
            if toks[j] not in _STOP and toks[j] != "(" and _same_word(stems[i], stems[j]) \
                    and not (i - j == 2 and toks[j + 1] in _IDIOM_LINKS):
                add(w)
                break
    return out


def _same_word(a: str, b: str) -> bool:
    """One word in two forms: equal stems, or (Snowball keeps "pregnanc" and "pregnant" apart) a
    shared beginning of six letters or more."""
    if a == b:
        return True
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n >= 6


def fluency_rules(item: dict, cfg: FilterConfig) -> tuple[float, str | None]:
    w = words(item["tail"])
    if not w or not any(ch.isalpha() for ch in "".join(w)):
        return 0.0, "no words"
    if all(len(x) == 1 or x.isdigit() for x in w) and len(w) > 1:  # "a) b) c)", "1. 2. 3."
        return 0.0, "no words (list markers only)"
    if _MARKUP.search(item["tail"]):  # "**rainy mornings**": the parser strips it from model output
        return 0.0, "markup left in the text"
    from generators.parsing import word_count

    n = word_count(item["tail"])
    if n > cfg.max_words:
        return 0.0, f"run-on text ({n} words > {cfg.max_words})"
    repeat = 1 - len(set(w)) / len(w)
    if repeat > cfg.max_repeat_ratio:
        return 0.0, f"malformed: {repeat:.0%} repeated words"
    noise = [x for x in w if keyboard_noise(x)]
    if noise and len(noise) * 2 >= len(w):
        return 0.0, f"keyboard noise ({', '.join(noise[:3])})"
    if item["tail"].rstrip().endswith((":", "：")):  # "Sure! Here are some reasons:" (the parser skips these)
        return 0.0, "a preamble or heading, not an item"
    again = repeated_words(item["tail"])
    if again:
        return 0.0, f"degenerate: says {', '.join(again)} twice"
    if w[-1] in _OPEN_ENDS and len(w) > 1:
        return 0.0, f"unfinished: ends with {w[-1]!r}"
    if len(w) >= 3 and w[-1].endswith("'s") and (w[-2] in _DETERMINERS or w[-3] in _DETERMINERS):
        return 0.0, f"unfinished: ends with the possessive {w[-1]!r}"  # "soothe a teething baby's"
    lp = item.get("mean_logprob")
    floor = cfg.min_lm_logprob if item.get("logprob_source") == "lm" else cfg.min_mean_logprob
    # the LM scores word salad ("real words in no order"), which takes 3 words; on 1-2 words its mean
    # is the surprise of the first token ("weddings" for a cocktail dress: -13.4)
    if item.get("logprob_source") == "lm" and n < 3:
        return (lp if lp is not None else 0.0), None
    if lp is not None and lp < floor:
        return lp, f"not fluent: mean token log-prob {lp:.2f} < {floor}"
    return (lp if lp is not None else 0.0), None


def _similar(a: str, b: str) -> float:
    return SequenceMatcher(None, " ".join(words(a)), " ".join(words(b))).ratio()


def restatement(item: dict, cfg: FilterConfig) -> tuple[float, str | None]:
    tail = item["tail"]
    refs = {k: item.get(k) for k in ("query", "product_type", "product_title", "product_a_title", "product_b_title",
                                     "product_a_type", "product_b_type")}
    best, best_ref = 0.0, None
    for k, ref in refs.items():
        if ref:
            s = _similar(tail, ref)
            if s > best:
                best, best_ref = s, k
    if best >= cfg.restatement_similarity:
        return best, f"restates the {best_ref} (similarity {best:.2f})"
    tc = {w for w in content(tail) if not w.isdigit()}  # "(1)", "14-piece": numbers restate nothing new
    if not tc:
        return best, None  # nothing to compare; the generic stage judges empty tails
    # all of its content words said by one product's own text: a title fragment ("skechers work
    # shoes"), its type with an article ("an air fryer"), the other product ("sleeping bag")
    products = {"product": ("product_title", "product_type"), "product_a": ("product_a_title", "product_a_type"),
                "product_b": ("product_b_title", "product_b_type")}
    specific = (tc - _REASON_STEMS) or tc  # "because it is a boot" says "boot"
    for name, keys in products.items():
        said = set().union(*(content(refs.get(k) or "") for k in keys))
        if said and specific <= said:
            return best, f"restates the {name} (its title and type say {', '.join(sorted(specific))})"
        # most of it copied from the title ("a 925 sterling silver leverback drop earrings made with
        # lavender"): a listing with a word added says nothing the listing does not
        copied = tc & said
        if len(copied) >= 3 and len(copied) >= cfg.restatement_copied * len(tc):
            return best, f"copies the {name}'s title ({len(copied)} of its {len(tc)} content words)"
    # the query: its words in another order, or a part of it naming the product's type ("work
    # shoes" of "work shoes for nurses"); a part of it about someone or something else is the
    # intent behind the query ("pregnant women" of "shoes for pregnant women"), and is kept
    q = content(refs.get("query") or "")
    if q:
        if len(tc & q) / len(tc | q) >= cfg.restatement_overlap:
            return best, f"restates the query (shares {len(tc & q)} of {len(tc | q)} content words)"
        if tc <= q and tc & content(refs.get("product_type") or ""):
            return best, "restates the query (its words, naming the product's type)"
        if tc <= q and item["relation"] in ACTION_RELATIONS:  # "pregnant women" as what one does
            return best, "restates the query (its words are not something one does with the product)"
    if item["relation"] in ISA:
        for k in ("product_type", "product_a_type", "product_b_type"):
            if refs.get(k) and tc <= content(refs[k]):
                return best, "trivial: the product is a type of its own type"
    return best, None


def gist(text: str) -> frozenset[str]:
    """What a tail says, order and articles aside: its stemmed content words. "the baby who is very
    young" and "a baby who is a very young baby" have one gist: near-duplicates."""
    return frozenset(content(text))


def vacuous(item: dict, cfg: FilterConfig) -> tuple[float, str | None]:
    tc = content(item["tail"])
    if tc and tc <= _GENERIC_STEMS:
        return 1.0, "generic: says nothing about the product (" + ", ".join(sorted(tc)) + ")"
    return 0.0, None


# The "who" relations name people (or animals, for pet products). COSMO filters candidates by rules
# before its critic; this one is the relation's form: an audience that is an activity ("a day
# hike"), a place or an object ("a home office", "a mountain bike") is not an audience. On the 674
# hand-labelled SmolLM2 audience candidates of generators/data/real_candidates.jsonl it rejects 507
# of the 653 implausible and none of the 21 plausible, nor any of the 88 hand-written plausible
# audiences of generators/data (tests/test_filters.py checks both).
WHO_RELATIONS = frozenset({"used_for_audience", "used_by", "xIs_a"})
_BEINGS = frozenset("""
people person persons man men woman women guy guys lady ladies kid kids child children baby babies infant infants
toddler toddlers newborn newborns teen teens teenager teenagers tween tweens youth adult adults senior seniors elderly
parent parents mom moms mother mothers mum mums dad dads father fathers grandparent grandparents grandma grandmas
grandpa grandpas grandmother grandmothers grandfather grandfathers grandchild grandchildren grandkid grandkids
family families couple couples friend friends guest guests student students boy boys girl girls newlywed newlyweds
preschooler preschoolers someone anyone everyone anybody somebody user users owner owners fan fans lover lovers
customer customers patient patients athlete athletes beginner beginners vegan vegans vegetarian vegetarians nurse
nurses doctor doctors chef chefs cook cooks musician musicians gamer gamers worker workers traveler travelers
traveller travellers commuter commuters homeowner homeowners resident residents wife wives husband husbands son sons
daughter daughters sibling siblings nanny nannies caregiver caregivers enthusiast enthusiasts hobbyist hobbyists
professional professionals employee employees staff team teams crew pet pets dog dogs puppy puppies cat cats kitten
kittens bird birds horse horses animal animals fish rabbit rabbits hamster hamsters human humans individual
individuals beginner novice novices expert experts guy gal bride brides groom grooms client clients veteran
veterans scout scouts police mommies kiddos pup pups twins host hosts roommate roommates colleague colleagues spouse
spouses boyfriend boyfriends girlfriend girlfriends grad grads graduate graduates diabetic diabetics asthmatic
asthmatics millennials fiance fiancee
chicken chickens hen hens duck ducks goat goats cow cows pig pigs sheep lamb lambs reptile reptiles lizard lizards
snake snakes turtle turtles tortoise tortoises parrot parrots ferret ferrets gerbil gerbils chinchilla chinchillas
bunny bunnies pony ponies livestock poultry cattle
bride bridesmaid bridesmaids groomsman groomsmen lifeguard lifeguards bachelor bachelors bachelorette
bachelorettes retiree retirees newborns infants tots toddlers preteens teenagers elders
""".split())
# beings that are also verbs ("cook dinner", "fish in a boat", "host a party")
_VERBS_TOO = frozenset("cook cooks fish host hosts nurse nurses parent crew staff team pet pets dog scout police "
                       "house".split())
_PEOPLE_PHRASE = re.compile(r"\s*(?:(?:those|anyone|anybody|someone|everyone|whoever)\b(?!-)"
                            r"|the\s+(?:\w+ly\s+)?(?:impaired|disabled|elderly|young|old|sick|injured|blind|deaf|"
                            r"bereaved|homeless|unemployed|wealthy|rich|poor|retired|newly\s+\w+)\b)")
_AGENT_SUFFIXES = ("ers", "ors", "ists", "ians", "ees", "ants", "ents", "nauts", "men", "guards", "maids", "folks",
                   "wives", "smiths", "mates")


# The "do" relations complete a verb ("is used to ...", "wants to ...", "is able to ..."): a tail that
# opens with an article, a determiner or a number is a thing, not something one does ("a sleeping
# bag" as a tent's function, "a concert" as what its buyer wants to do). On the labelled candidates
# it rejects 326 implausible function and xWant tails and 5 of 79 plausible ones, all xWant noun
# phrases ("a camping trip"): "wants to a camping trip" is not the relation's sentence either. One
# that opens with a person ("baby formula to toddlers") names someone: 29 more, none plausible.
ACTION_RELATIONS = frozenset({"used_for_function", "xWant", "capable_of", "capableOf"})
_THING_OPENERS = _ARTICLES | {"any", "every", "each", "another"}


def relation_form(item: dict, cfg: "FilterConfig") -> tuple[float, str | None]:
    """A "who" relation's tail must name a being (a lexicon of people and animal nouns, or a plural
    agent noun: "-ers", "-ists", ...); a "do" relation's must not open as a noun phrase (article,
    determiner, number). English only: tails with non-ASCII letters are not judged here."""
    tail = html.unescape(item["tail"])
    if any(ch.isalpha() and not ch.isascii() for ch in tail):
        return 0.0, None
    if item["relation"] in ACTION_RELATIONS:
        ws = re.findall(r"[a-z0-9'][a-z0-9'\-]*", tail.lower())  # "baby-proof" and "3d" are one word each
        if ws[:1] == ["to"]:
            ws = ws[1:]
        first = ws[0] if ws else ""
        if first == "because":
            what = "gives a reason ('because ...')"
        elif first in _THING_OPENERS or first.replace(",", "").isdigit():
            what = f"names a thing ({first!r} ...)"
        elif first.strip("'").removesuffix("'s") in _BEINGS and first not in _VERBS_TOO:
            what = f"names someone ({first!r} ...)"
        else:
            return 0.0, None
        return 1.0, f"not an action: the {item['relation']} tail {what}, not something one does"
    if item["relation"] not in WHO_RELATIONS:
        return 0.0, None
    raw = re.findall(r"[a-z']+", tail.lower())

    def being(w: str) -> bool:
        return w in _BEINGS or (len(w) > 4 and w.endswith(_AGENT_SUFFIXES))

    owners = [w for w in raw if w.endswith(("'s", "'"))]
    if any(being(w.strip("'")) for w in raw if w not in owners):
        return 0.0, None
    if any(being(w.removesuffix("'s").strip("'")) for w in owners):  # "dad's grill": whose, not who
        return 1.0, f"not a who: the {item['relation']} tail names something of someone's, not someone"
    if _PEOPLE_PHRASE.match(tail.lower()):  # "the visually impaired", "those with sensitive skin"
        return 0.0, None
    return 1.0, f"not a who: the {item['relation']} tail names no person or animal"


def fewshot_echo(item: dict, answers: dict[str, set[str]]) -> tuple[float, str | None]:
    """Reject a tail equal to a few-shot answer unless the item's context is that example's."""
    from generators.parsing import normalize

    ctx = answers.get(normalize(item["tail"]))
    if ctx is None:
        return 0.0, None
    if normalize(context_text(item)) in ctx:
        return 0.0, None
    return 1.0, "echoes a few-shot example's answer given for another product"


class TailStats:
    """Running statistics per normalised tail: the distinct heads it was generated for and their
    product types, against the types of all heads seen.

    Observations are (tail, head, kind) triples; adding one is idempotent, so workers that share
    them (the filter worker publishes each new one to a compacted topic and reads the others')
    merge instead of overwriting. `on_new(tail, head, kind)` is called for each new observation.
    `store` (optional) is an initial mapping "tail\\x1fhead" -> {"k": kind}, e.g. loaded from the topic.
    """

    def __init__(self, store: MutableMapping[str, dict] | None = None, on_new=None, max_heads: int = 200) -> None:
        self.tails: dict[str, dict[str, str]] = {}
        self.kinds: dict[str, str] = {}  # head -> kind, over every tail
        self.type_counts: dict[str, int] = {}
        self.on_new, self.max_heads = on_new, max_heads
        for key, v in (store or {}).items():
            tail, _, head = key.partition("\x1f")
            if head and isinstance(v, dict):
                self.add(tail, head, str(v.get("k", "?")))

    def add(self, tail: str, head: str, kind: str) -> bool:
        heads = self.tails.setdefault(tail, {})
        if head in heads or len(heads) >= self.max_heads:
            return False
        heads[head] = kind
        if head not in self.kinds:
            self.kinds[head] = kind
            self.type_counts[kind] = self.type_counts.get(kind, 0) + 1
        return True

    @staticmethod
    def key(item: dict) -> str:
        return " ".join(words(item["tail"]))

    def observe(self, item: dict) -> None:
        tail, head, kind = self.key(item), head_of(item), kind_of(item)
        if self.add(tail, head, kind) and self.on_new:
            self.on_new(tail, head, kind)

    def spread(self, tail: str) -> tuple[int, int, float]:
        """(heads, types, 1 - JSD between the tail's type distribution and that of all heads)."""
        heads = self.tails.get(tail) or {}
        if not heads or not self.type_counts:
            return 0, 0, 0.0
        mine: dict[str, int] = {}
        for k in heads.values():
            mine[k] = mine.get(k, 0) + 1
        n, total = len(heads), sum(self.type_counts.values())
        jsd = 0.0
        for k in set(mine) | set(self.type_counts):
            p, q = mine.get(k, 0) / n, self.type_counts.get(k, 0) / total
            m = (p + q) / 2
            if p:
                jsd += 0.5 * p * math.log2(p / m)
            if q:
                jsd += 0.5 * q * math.log2(q / m)
        return n, len(mine), max(0.0, 1.0 - jsd)

    def generic_score(self, item: dict, cfg: FilterConfig) -> tuple[float, str | None]:
        heads, types, spread = self.spread(self.key(item))
        if heads >= cfg.generic_min_heads and types >= cfg.generic_min_types and spread >= cfg.generic_min_spread:
            return spread, (f"generic: seen with {heads} heads of {types} product types, spread like all heads "
                            f"({spread:.2f} >= {cfg.generic_min_spread})")
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


STAGES = ("safety", "fluency", "restatement", "echo", "generic", "form", "paraphrase", "critic", "self_eval")


@dataclass
class FilterPipeline:
    cfg: FilterConfig
    stats: TailStats
    fluency: Scorer | None = None      # mean token log-prob of the tail in context (when the item has none)
    similarity: Scorer | None = None   # cosine(tail, context)
    critic: Scorer | None = None       # plausibility in [0, 1]
    self_eval: Scorer | None = None    # P(YES) - P(NO)
    fewshot: dict[str, set[str]] = field(default_factory=dict)  # few-shot answer -> its contexts (prompts.fewshot_answers)

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

        def generic(it: dict, c: FilterConfig) -> tuple[float, str | None]:
            score, why = vacuous(it, c)
            return (score, why) if why else self.stats.generic_score(it, c)

        for name, rule in (("safety", safety), ("fluency", fluency_rules), ("restatement", restatement),
                           ("echo", lambda it, c: fewshot_echo(it, self.fewshot)), ("generic", generic),
                           ("form", relation_form)):
            for i in alive():
                score, why = rule(items[i], cfg)
                out[i].scores[name] = score
                if why:
                    reject(i, name, why)
        # fluency's model half: candidates without the generator's own log-probs (hand-written, `intentflow
        # filter`) are scored by the LM once the rule stages have judged them, so a vacuous, echoed or
        # restated tail is rejected for what it is, not for being unlikely text (and is not scored)
        if self.fluency:
            need = [i for i in alive() if items[i].get("mean_logprob") is None]
            for i, s in zip(need, self.fluency([items[i] for i in need]) if need else []):
                items[i]["mean_logprob"], items[i]["logprob_source"] = s, "lm"
                score, why = fluency_rules(items[i], cfg)
                out[i].scores["fluency"] = score
                if why:
                    reject(i, "fluency", why)
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
            if name == "critic":  # what the critic cannot read it cannot judge (precision over recall)
                for i in idx:
                    share = script_share(items[i]["tail"], cfg.critic_scripts)
                    if share < 0.5:
                        reject(i, "critic", f"not judged: {1 - share:.0%} of its letters are in a script the critic "
                                            f"does not read ({', '.join(cfg.critic_scripts)})")
                idx = alive()
                if not idx:
                    continue
            for i, s in zip(idx, scorer([items[i] for i in idx])):
                out[i].scores[name] = float(s)
                why = test(float(s), items[i])
                if why:
                    reject(i, name, why)
        return out
