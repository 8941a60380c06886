"""Model output -> candidate explanations (generators/parsing.py): the shapes real models write.

Example tests keep each fault that was found; property tests render random lists in every style
and check that exactly the items come back, with spans that slice the original text.
"""

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generators.parsing import normalize, parse_list, word_count


def tails(text, **kw):
    return [t for _, t in parse_list(text, **kw).items]


def sliced(text, **kw):
    return [text[a:b] for a, b in parse_list(text, **kw).spans]


# --- 1. chat preambles ------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("Sure! Here are some reasons:\n\n1. a gift for dad\n2. camping trips", ["a gift for dad", "camping trips"]),
    ("Here is a list of audiences:\n\n- new parents\n- grandparents", ["new parents", "grandparents"]),
    ("Here is a list of audiences:\n- new parents\n- grandparents", ["new parents", "grandparents"]),
    ("Sure! Here you go\n1. hiking\n2. camping", ["hiking", "camping"]),  # no colon, but a list follows
    ("Sure!\nHere you go:\n\n\n* hiking\n* camping", ["hiking", "camping"]),
    ("**Reasons:**\n1. hiking", ["hiking"]),
    ("Search: \"x\"\nBought: \"y\"\nThe product is meant for:\n1. hikers\n2. campers", ["hikers", "campers"]),
    ("Here are some audiences: 1. hikers 2. campers", ["hikers", "campers"]),
])
def test_a_chat_preamble_is_skipped_and_the_list_kept(text, want):
    assert tails(text) == want


def test_plain_style_first_line_continues_the_prompts_1():
    assert tails(" new parents\n2. grandparents\n") == ["new parents", "grandparents"]
    assert tails(" new parents\n\n2. grandparents\n") == ["new parents", "grandparents"]
    assert tails(" new parents") == ["new parents"]


def test_a_preamble_alone_is_no_item():
    p = parse_list("Sure! Here are some reasons:")
    assert p.items == [] and not p.dropped


def test_a_preamble_then_a_list_without_markers():
    assert tails("Here is a list of audiences:\n\nnew parents") == ["new parents"]


# --- 2. markdown ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "**1.** hiking\n**2.** camping",
    "**1. hiking**\n**2. camping**",
    "**1**. hiking\n**2**. camping",
    "1) hiking\n2) camping",
    "(1) hiking\n(2) camping",
    "[1] hiking\n[2] camping",
    "1 - hiking\n2 - camping",
    "1 – hiking\n2 – camping",
    "1: hiking\n2: camping",
    "1.hiking\n2.camping",
    "1️⃣ hiking\n2️⃣ camping",
    "### 1. hiking\n### 2. camping",
    "### Reasons\n1. hiking\n2. camping",
    "1. **hiking**\n2. *camping*",
    "1. __hiking__\n2. _camping_",
    "1. `hiking`\n2. ***camping***",
    "1. ~~hiking~~\n2. **_camping_**",
    "1. [hiking](https://example.com)\n2. <b>camping</b>",
    "1. **hiking\n2. camping**",  # unbalanced, as when output is cut off
])
def test_markdown_numbering_and_emphasis_stay_out_of_tails(text):
    assert tails(text) == ["hiking", "camping"]


def test_bold_term_with_an_explanation_keeps_the_term():
    text = ("1. **Hiking**: a great way to see nature\n2. **Camping** - sleeping outside\n"
            "3. **Fishing:** catch your dinner\n4. **Trail running**\n   Fast and fun.")
    assert tails(text) == ["Hiking", "Camping", "Fishing", "Trail running"]


def test_emphasis_inside_words_is_left_alone():
    assert tails(" snake_case_names") == ["snake_case_names"]


def test_a_heading_after_items_ends_the_list():
    assert tails("1. hiking\n2. camping\n## Activities\n1. fishing") == ["hiking", "camping"]


# --- 3. bullets, and several items on one line -------------------------------------------------

@pytest.mark.parametrize("bullet", ["-", "*", "+", "•", "·", "–", "—", "▪", "►", "→", "✓", "✅",
                                    "🔹", "👉", "⭐", "⭐\ufe0f", "👍🏽", "➤", "●"])
def test_bullets_of_any_kind(bullet):
    assert tails(f"{bullet} new parents\n{bullet} grandparents") == ["new parents", "grandparents"]


@pytest.mark.parametrize("bullet", ["🔹", "👉", "⭐", "✅", "•", "▪"])
def test_bullet_items_on_one_line_split(bullet):
    text = f"{bullet} new parents {bullet} grandparents {bullet} nurses"
    assert tails(text) == ["new parents", "grandparents", "nurses"]
    assert sliced(text) == ["new parents", "grandparents", "nurses"]


def test_emoji_bullets_without_spaces_split():
    assert tails("🔹new parents🔹grandparents") == ["new parents", "grandparents"]


@pytest.mark.parametrize("text", [
    "1. hiking 2. camping 3. fishing",
    "1) hiking 2) camping 3) fishing",
    "(1) hiking (2) camping (3) fishing",
    "**1.** hiking **2.** camping **3.** fishing",
    " hiking 2. camping 3. fishing",  # plain style: the first line continues "1."
])
def test_numbered_items_on_one_line_split(text):
    assert tails(text) == ["hiking", "camping", "fishing"]


def test_numbers_out_of_sequence_do_not_split():
    assert tails("1. kids ages 3. and up") == ["kids ages 3"]
    assert tails("1. hiking 3. camping") == ["hiking 3"]


def test_dashes_inside_a_phrase_do_not_split_and_catalan_middle_dot_is_a_letter_joint():
    assert tails("- hikers - beginners and pros") == ["hikers - beginners and pros"]
    assert tails("· col·lecció de llibres") == ["col·lecció de llibres"]


def test_checkboxes_and_a_second_bullet_after_a_number():
    assert tails("- [ ] hikers\n- [x] campers\n") == ["hikers", "campers"]
    assert tails("1. - hikers\n2. • campers\n3. 🎁 gift givers") == ["hikers", "campers", "gift givers"]


# --- loose lists, sub-items, the list's end ---------------------------------------------------

def test_a_loose_list_continues_when_the_numbering_does():
    assert tails("1. hiking\n\n2. camping\n\n3. fishing\n\nSearch: \"x\"") == ["hiking", "camping", "fishing"]
    assert tails("- hiking\n\n- camping") == ["hiking", "camping"]


def test_a_blank_line_then_a_restart_or_other_text_ends_the_list():
    assert tails("1. hiking\n\n1. leaked") == ["hiking"]
    assert tails("1. hiking\n2. camping\n\nI hope this helps!") == ["hiking", "camping"]
    assert tails("- hiking\n\n* other list") == ["hiking"]


def test_sub_items_and_paragraphs_under_an_item_are_skipped():
    text = "1. hiking\n   - on trails\n   - in parks\n2. camping\n\n   Great under the stars.\n\n3. fishing"
    assert tails(text) == ["hiking", "camping", "fishing"]


# --- 4. abbreviations and sentence ends --------------------------------------------------------

@pytest.mark.parametrize("tail", [
    "weighs approx. 5 lbs", "tools, e.g. pliers", "new parents, i.e. first timers", "toys vs. games",
    "fans of Dr. Seuss", "Mr. and Mrs. Smith", "St. Patrick's Day parties", "made for the U.S. market",
    "No. 1 fans", "a 12 oz. bottle", "a 10 in. tablet", "10 lbs. of dog food", "J. K. Rowling fans",
])
def test_abbreviations_do_not_cut_an_item(tail):
    assert tails(f" {tail}\n2. next") == [tail, "next"]


def test_a_list_ending_in_etc_keeps_the_items():
    assert tails(" toys, games, etc.") == ["toys, games, etc"]
    assert tails(" made in the U.S.") == ["made in the U.S."]


@pytest.mark.parametrize("text, want", [
    (" first thing. And then the model rambles on", "first thing"),
    (" great gift! Also nice", "great gift"),
    (" really?! yes", "really"),
    (" kids; adults", "kids"),
    (" 新しい親。次の文", "新しい親"),
])
def test_real_sentence_ends_still_cut(text, want):
    assert tails(text) == [want]


# --- 5. any script -----------------------------------------------------------------------------

def test_items_in_any_script_are_kept():
    text = " 新しい親\n2. Новые родители\n3. الآباء الجدد\n4. νέοι γονείς\n5. नए माता-पिता"
    assert tails(text) == ["新しい親", "Новые родители", "الآباء الجدد", "νέοι γονείς", "नए माता-पिता"]


@pytest.mark.parametrize("junk", ["1234", "!!!", "—", "$%&", "42%"])
def test_an_item_with_no_letter_of_any_script_is_dropped(junk):
    p = parse_list(f" {junk}\n2. ok")
    assert [t for _, t in p.items] == ["ok"] and dict(p.dropped) == {"no_letters": 1}


def test_an_item_of_only_emoji_or_markup_is_empty():
    p = parse_list(" 🙂 ❤️\n2. ****\n3. ok")
    assert [t for _, t in p.items] == ["ok"] and dict(p.dropped) == {"empty": 2}


def test_word_count_for_scripts_without_spaces():
    assert word_count("new parents") == 2
    assert word_count("kids & toddlers") == 3
    assert word_count("新しい親") == 2  # one word per 2 CJK characters
    assert word_count("小さな子供がいる家族") == 5
    assert word_count("iPhone用ケース") == 3
    assert word_count("ของขวัญสำหรับพ่อ") == 4  # Thai: one per 4
    assert word_count("子供、大人") == 2


def test_a_normal_japanese_phrase_is_not_too_long_but_a_run_on_one_is():
    assert tails(" 小さな子供がいる家族向けのプレゼント") == ["小さな子供がいる家族向けのプレゼント"]
    p = parse_list(" " + "子供" * 20)
    assert p.items == [] and dict(p.dropped) == {"too_long": 1}


# --- 6. HTML entities --------------------------------------------------------------------------

@pytest.mark.parametrize("raw, want, span", [
    ("kids &amp; toddlers", "kids & toddlers", "kids &amp; toddlers"),
    ("&quot;big kids&quot;", "big kids", "big kids"),  # the decoded quotes are stripped
    ("it&#39;s for dad", "it's for dad", "it&#39;s for dad"),
    ("kids&nbsp;and toddlers", "kids and toddlers", "kids&nbsp;and toddlers"),
    ("caf&eacute; owners", "café owners", "caf&eacute; owners"),
    ("R&amp;D teams", "R&D teams", "R&amp;D teams"),
])
def test_html_entities_are_decoded_and_spans_show_the_raw_text(raw, want, span):
    text = f" {raw}\n2. next"
    assert tails(text) == [want, "next"]
    assert sliced(text) == [span, "next"]


# --- 7. numbers without items ------------------------------------------------------------------

@pytest.mark.parametrize("text", ["1. 2. 3.", "1.\n2.\n3.", "1.\n\n2.\n\n3.", " \n2.\n3."])
def test_a_bare_list_of_numbers_has_no_items(text):
    p = parse_list(text)
    assert p.items == [] and dict(p.dropped) == {"empty": 3}


# --- 8. normalize ------------------------------------------------------------------------------

def test_normalize_is_unicode_aware():
    forms = ["Café", unicodedata.normalize("NFD", "Café"), "Ca\u200bfé", "Ｃａｆé", "CAFÉ", "\ufeffCafé\u2060",
             "Caf\u00ade\u0301", "Café!", "  café  "]
    assert {normalize(f) for f in forms} == {"café"}
    assert normalize("Straße") == normalize("STRASSE") == "strasse"
    assert normalize("  Keep the Wearer WARM!! ") == "keep the wearer warm"
    assert normalize("Новые  Родители") == "новые родители"
    assert normalize("新しい親！") == "新しい親"
    assert normalize("kid’s T-shirt, \"new\"") == "kid's t-shirt new"
    assert normalize("ZW\u200cNJ and Z\u200dWJ") == "zwnj and zwj"
    assert normalize("— … •") == ""


# --- 9. behaviours kept ------------------------------------------------------------------------

@pytest.mark.parametrize("example", [
    'Search: "x"', "Bought: y", 'Bought together: "a" and "b"', "Both products are used for:",
    "The product is meant for:", "Query: x", "Answer: yes", "**Search:** x",
])
def test_a_new_example_ends_the_list(example):
    assert tails(f" hikers\n2. campers\n{example}\n1. leaked") == ["hikers", "campers"]
    assert tails(f"- hikers\n- campers\n\n{example}\n- leaked") == ["hikers", "campers"]


def test_kept_behaviours():
    text = ' "hikers"\n2. hikers!\n3. HIKERS\n4. campers,\n5.\n6. a b c d e\n7. x\n8. y'
    p = parse_list(text, max_items=3, max_words=4)
    assert [t for _, t in p.items] == ["hikers", "campers", "x"]
    assert dict(p.dropped) == {"repeated": 2, "empty": 1, "too_long": 1, "over_max_items": 1}
    assert tails(" wraps over\ntwo lines\n2. next") == ["wraps over two lines", "next"]


# --- spans -------------------------------------------------------------------------------------

def test_spans_are_aligned_with_items_and_slice_the_original_text():
    text = "Sure! Here:\n\n1. **new** parents\n2. *grand*parents\n3. long item that\n   wraps\n"
    p = parse_list(text)
    assert [t for _, t in p.items] == ["new parents", "grandparents", "long item that wraps"]
    assert [text[a:b] for a, b in p.spans] == ["new** parents", "grand*parents", "long item that\n   wraps"]


def test_spans_survive_windows_newlines_and_invisible_characters():
    text = "\ufeff hikers\r\n2. \u200bcampers\u200b\r\n"
    assert tails(text) == ["hikers", "campers"]
    assert sliced(text) == ["hikers", "campers"]


def test_a_cut_item_spans_only_what_is_kept():
    text = " first thing. And then more\n2. second"
    assert sliced(text) == ["first thing", "second"]


# --- property tests ----------------------------------------------------------------------------

ASCII = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
ACCENTED = "àáâäãåçéèêëíìîïñóòôöõúùûüýÿßøæœÀÉÎÖÜÇÑ"
CYRILLIC = "абвгдежзийклмнопрстуфхцчшщыьэюяАБВГДЕЖЗИКЛМНОПРСТ"
CJK = "新しい親子供家族大人用品赤ちゃん旅行料理学生女性男性犬猫"

word = st.one_of(
    st.text(ASCII, min_size=1, max_size=8),
    st.text(ASCII + ACCENTED, min_size=1, max_size=8),
    st.text(CYRILLIC, min_size=1, max_size=8),
    st.text(CJK, min_size=1, max_size=2),  # 2 CJK characters count as one word
)
item = st.lists(word, min_size=1, max_size=6).map(" ".join)
items = st.lists(item, min_size=1, max_size=8, unique_by=normalize)

EMOJI = ["🔹", "👉", "⭐️", "✅", "📌", "👍🏽", "▪️"]
LINE_STYLES = {
    "dot": lambda i, e: f"{i}. ", "paren": lambda i, e: f"{i}) ", "both": lambda i, e: f"({i}) ",
    "bold": lambda i, e: f"**{i}.** ", "colon": lambda i, e: f"{i}: ", "dash_num": lambda i, e: f"{i} - ",
    "keycap": lambda i, e: f"{i}\ufe0f\u20e3 " if i < 10 else f"{i}. ",
    "-": lambda i, e: "- ", "*": lambda i, e: "* ", "+": lambda i, e: "+ ", "•": lambda i, e: "• ",
    "–": lambda i, e: "– ", "→": lambda i, e: "→ ", "emoji": lambda i, e: f"{e} ",
}
ONE_LINE_STYLES = ("dot", "paren", "both", "bold", "emoji")
PREAMBLES = ["Sure! Here are some reasons:", "Here is a list of audiences:", "### Reasons",
             "Sure!\nHere you go:", "Sure! Here are some ideas", "**Audiences:**"]
EMPHASIS = ["", "**", "*", "__", "_", "`"]
NEW_EXAMPLE = 'Search: "gifts"\nBought: "Leatherman Wave Plus"\nThe product is meant for:\n1. leaked\n2. leaked too\n'


@st.composite
def rendered(draw):
    """(text, item texts): a list drawn in one style with optional preamble, markup and tail."""
    its = draw(items)
    mark = draw(st.sampled_from(EMPHASIS))
    shown = [f"{mark}{t}{mark}" for t in its]
    one_line = [s + "_one_line" for s in ONE_LINE_STYLES]
    style = draw(st.sampled_from(["plain", "plain_one_line", *LINE_STYLES, *one_line]))
    emoji = draw(st.sampled_from(EMOJI))
    if style == "plain":
        text = f" {shown[0]}\n" + "".join(f"{i}. {t}\n" for i, t in enumerate(shown[1:], 2))
    elif style == "plain_one_line":
        text = f" {shown[0]}" + "".join(f" {i}. {t}" for i, t in enumerate(shown[1:], 2)) + "\n"
    elif style.endswith("_one_line"):
        marker = LINE_STYLES[style.removesuffix("_one_line")]
        text = " ".join(marker(i, emoji) + t for i, t in enumerate(shown, 1)) + "\n"
    else:
        text = "".join(LINE_STYLES[style](i, emoji) + t + "\n" for i, t in enumerate(shown, 1))
    if not style.startswith("plain") and draw(st.booleans()):
        text = draw(st.sampled_from(PREAMBLES)) + draw(st.sampled_from(["\n", "\n\n"])) + text
    ending = draw(st.sampled_from(["", "\n", "\n" + NEW_EXAMPLE, NEW_EXAMPLE, "\nI hope this helps!"]))
    if style.startswith("plain") and ending.startswith("\nI hope"):
        ending = ""  # in plain style that would be the model's item 1 of a new block; not a chat
    return text + ending, its


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rendered(), st.integers(1, 8))
def test_any_rendered_list_parses_back_to_its_items(case, max_items):
    text, its = case
    p = parse_list(text, max_items=max_items, max_words=12)
    want = its[:max_items]
    assert [t for _, t in p.items] == want
    assert [r for r, _ in p.items] == list(range(1, len(want) + 1))
    assert [text[a:b] for a, b in p.spans] == want  # exact: the markup around an item is outside
    assert dict(p.dropped) == ({"over_max_items": len(its) - max_items} if len(its) > max_items else {})


STRUCTURE = "1234567890.)(:-*_`#•🔹 \n\t\"'&;!?amp新Ж é\u200b\u0301**"


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.one_of(st.text(), st.text(STRUCTURE), st.text(st.characters(exclude_categories=()))),  # with surrogates
       st.integers(1, 6), st.integers(1, 12))
def test_never_raises_and_every_tail_is_usable(text, max_items, max_words):
    p = parse_list(text, max_items=max_items, max_words=max_words)
    assert len(p.items) == len(p.spans) <= max_items
    assert [r for r, _ in p.items] == list(range(1, len(p.items) + 1))
    assert len({normalize(t) for _, t in p.items}) == len(p.items)
    for (_, tail), (a, b) in zip(p.items, p.spans):
        assert tail and tail == tail.strip()
        assert word_count(tail) <= max_words
        assert any(ch.isalpha() for ch in tail)
        assert tail.encode("utf-8") and not any(unicodedata.category(ch) == "Cc" for ch in tail)
        assert 0 <= a < b <= len(text)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text())
def test_normalize_is_idempotent_and_ignores_invisible_characters(text):
    n = normalize(text)
    assert normalize(n) == n
    assert normalize("\u200b".join(text)) == n
    assert normalize(unicodedata.normalize("NFD", text)) == n
