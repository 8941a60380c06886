"""Raw model text -> candidate explanations, each with the span of the text it came from.

The prompt ends in a numbered-list stem ("...The product is meant for:\\n1."). A plain-style
completion continues it (its first line is item 1); a chat-style one answers with its own text.
Shapes handled:

- plain continuation: " new parents\\n2. grandparents" (text before a "2." is item 1);
- numbering "1." "1)" "(1)" "[1]" "1:" "1 -" "**1.**" "**1.** x" "**1. x**" "1️⃣" "### 1. x";
- bullets "-" "*" "+" "•" "·" "–" "—" "▪" "►" "→" "✓" "✅", any emoji or symbol ("🔹" "👉" "⭐"),
  and "- [ ]" / "- [x]" checkboxes;
- several items on one line: "1. a 2. b 3. c" (numbers in sequence), "🔹 a 🔹 b" (the line's bullet);
- chat preambles ("Sure! Here are some reasons:", "### Reasons", a restated question) are skipped,
  also when a blank line separates them from the list;
- loose lists: a blank line between items is allowed when the next line continues the numbering
  or repeats the list's bullet; indented sub-bullets and paragraphs under an item are skipped;
- inside items: **bold**, *it*, __x__, _x_, `code`, ~~x~~, [text](url), <tags>, HTML entities,
  "**Term**: explanation" (the term is kept), surrounding quotes and emoji, trailing punctuation,
  run-on text (cut at the first real sentence end, not at "e.g.", "approx.", "U.S.", ...);
- any script: an item needs a letter of some script; see `word_count` for scripts without spaces.

The list ends at a new example ("Search: ...", "Bought: ...", "The product ...:"), at a heading or
a "...:" line after items, or at a blank line the list does not continue past.

Never raises on a `str`: what cannot be used is counted by reason (empty, no_letters, too_long,
repeated, over_max_items), so a worker can log and export it. Pure Python: no model, no torch.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Parsed:
    items: list[tuple[int, str]] = field(default_factory=list)  # (rank, tail)
    dropped: Counter = field(default_factory=Counter)
    # aligned with items: [start, end) in the parsed text of the item's own words (no marker, no
    # newline), so a worker can average the log-probs of exactly the tokens inside each item
    spans: list[tuple[int, int]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# normalize: the key of candidate ids, edge ids and de-duplication

_KEEP_INSIDE_WORDS = {"'": "'", "\u2019": "'", "\u02bc": "'", "-": "-", "\u2010": "-", "\u2011": "-"}


def _invisible(ch: str) -> bool:
    # format characters (zero-width space and joiners, soft hyphen, BOM, word joiner, bidi marks),
    # variation selectors and the combining grapheme joiner: they change bytes, not words
    return unicodedata.category(ch) == "Cf" or "\ufe00" <= ch <= "\ufe0f" or ch == "\u034f"


def normalize(text: str) -> str:
    """NFKC, casefolded, invisible characters removed, punctuation and symbols turned into spaces
    (an apostrophe or hyphen inside a word is kept), whitespace collapsed; letters, marks and
    digits of every script kept."""
    text = "".join(ch for ch in text if not _invisible(ch))
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    out = []
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat[0] in "LMN":
            out.append(ch)
        elif ch in _KEEP_INSIDE_WORDS and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
            out.append(_KEEP_INSIDE_WORDS[ch])  # "kid's", "t-shirt"
        else:
            out.append(" ")
    return " ".join("".join(out).split())


# ---------------------------------------------------------------------------------------------
# word_count: max_words for scripts with and without spaces

# Scripts written without spaces between words, with how many characters make about one word:
# Chinese words are mostly 1-2 characters, Japanese mixes 1-3 (kanji, kana), so CJK counts one
# word per 2 characters; Thai, Lao, Khmer and Myanmar words are longer, one per 4.
_NO_SPACE_SCRIPTS = (
    (0x3040, 0x30FF, 2), (0x31F0, 0x31FF, 2), (0x3400, 0x4DBF, 2), (0x4E00, 0x9FFF, 2),
    (0xF900, 0xFAFF, 2), (0xFF66, 0xFF9F, 2), (0x20000, 0x3FFFF, 2),
    (0x0E00, 0x0EFF, 4), (0x1000, 0x109F, 4), (0x1780, 0x17FF, 4),
)


def _chars_per_word(ch: str) -> int:
    cp = ord(ch)
    for lo, hi, n in _NO_SPACE_SCRIPTS:
        if lo <= cp <= hi:
            return n
    return 0


def word_count(text: str) -> int:
    """Whitespace-separated tokens count one word each; inside a token, a run of characters of a
    script written without spaces counts ceil(len / n) words (n = 2 for Chinese and Japanese,
    4 for Thai, Lao, Khmer, Myanmar), and each other run with a letter or digit one word.
    So "新しい親" is 2 words, "iPhone用ケース" 3, "kids & toddlers" 3."""
    total = 0
    for token in text.split():
        runs = _runs(token)
        if len(runs) == 1 and runs[0][0] == 0:
            total += 1
            continue
        for n, run in runs:
            if n:
                total += math.ceil(len(run) / n)
            elif any(c.isalnum() for c in run):
                total += 1
    return total


def _runs(token: str) -> list[tuple[int, str]]:
    """The token cut into runs of equal characters-per-word (0: a script with spaces)."""
    out: list[tuple[int, str]] = []
    for ch in token:
        n = _chars_per_word(ch)
        if out and out[-1][0] == n:
            out[-1] = (n, out[-1][1] + ch)
        else:
            out.append((n, ch))
    return out


# ---------------------------------------------------------------------------------------------
# _Tracked: cleanup that remembers where every character came from (for exact spans)

Span = tuple[int, int]


class _Tracked:
    """A string whose every character knows the [start, end) of the original text it came from.
    A decoded entity ("&amp;" -> "&") maps to the whole entity; kept text keeps its own offsets."""

    __slots__ = ("s", "src")

    def __init__(self, s: str, src: list[Span]) -> None:
        self.s, self.src = s, src

    @classmethod
    def of(cls, text: str, pieces: list[Span], prefix: str = "") -> _Tracked:
        # wrapped lines are joined by "\n" (mapped to the gap) until whitespace is collapsed
        s, src = prefix, [(pieces[0][0], pieces[0][0])] * len(prefix)
        for k, (a, b) in enumerate(pieces):
            if k:
                s += "\n"
                src.append((pieces[k - 1][1], a))
            s += text[a:b]
            src.extend((i, i + 1) for i in range(a, b))
        return cls(s, src)

    def __getitem__(self, sl: slice) -> _Tracked:
        return _Tracked(self.s[sl], self.src[sl])

    def span(self) -> Span:
        return self.src[0][0], self.src[-1][1]

    def sub(self, pattern: re.Pattern, repl: int | str | Callable[[re.Match], str]) -> _Tracked:
        """re.sub where repl keeps one group (with its offsets) or writes new text over the match."""
        s, src, last = [], [], 0
        for m in pattern.finditer(self.s):
            if m.end() == m.start():
                continue
            s.append(self.s[last:m.start()])
            src.extend(self.src[last:m.start()])
            if isinstance(repl, int):
                a, b = m.span(repl)
                if a >= 0:
                    s.append(self.s[a:b])
                    src.extend(self.src[a:b])
            else:
                new = repl if isinstance(repl, str) else repl(m)
                s.append(new)
                src.extend([(self.src[m.start()][0], self.src[m.end() - 1][1])] * len(new))
            last = m.end()
        s.append(self.s[last:])
        src.extend(self.src[last:])
        return _Tracked("".join(s), src)


# ---------------------------------------------------------------------------------------------
# Markers: numbering and bullets at the start of a line, or several on one line

_NUM_START = re.compile(r"""
    (?:\#{1,6}[ \t]+)?                                  # a heading that numbers its item: "### 1. x"
    (?P<open>\*\*|__)?
    (?:
        [(\[] (?P<n1>\d{1,2}) [)\]]                     # (1) [1]
      | (?P<n2>\d{1,2}) \ufe0f? \u20e3                  # 1️⃣
      | (?P<n3>\d{1,2}) (?P<mid>\*\*|__)? [.):\]] (?!\d)  # 1. 1) 1: 1] **1**.  (not 1.5, 10:30)
      | (?P<n4>\d{1,2}) [ \t]+ [-–—] (?=\s|$)           # 1 - x
      | (?P<n5>\d{1,2}) (?=(?:\*\*|__)\s)               # **1** x
    )
    (?P<close>\*\*|__)?
""", re.X)
# on one line, after other text: only the unambiguous forms, between spaces
_NUM_INLINE = re.compile(r"""
    (?<=\s) (?P<open>\*\*|__)?
    (?: [(\[] (?P<n1>\d{1,2}) [)\]] | (?P<n2>\d{1,2}) \ufe0f? \u20e3 | (?P<n3>\d{1,2}) (?P<mid>\*\*|__)? [.)] )
    (?P<close>\*\*|__)? (?=\s|$)
""", re.X)

_DASHES = "-+*–—"  # bullets that are also punctuation: need a space after, never split a line
_BULLETS = "•‣⁃◦∙·▪▫■□●○◆◇►▸▹▶▷→⇒⟶➔➜➤✓✔✗✘☐☑✅❌❖"
_NOT_BULLETS = "©®™°"
_EMOJI_MODIFIERS = "\ufe0e\ufe0f\u20e3\u200d\u200c"


@dataclass
class _Marker:
    start: int  # where the marker begins in its line
    content: int  # where the item's words begin
    number: int | None = None
    bullet: str | None = None
    bold_open: bool = False  # "**1. item**": the bold opened before the number closes in the item


def _is_symbol(ch: str) -> bool:
    cp = ord(ch)
    # emoji newer than this Python's Unicode tables are unassigned ("Cn"), hence the range
    return ch not in _NOT_BULLETS and (unicodedata.category(ch) == "So" or 0x1F000 <= cp <= 0x1FAFF)


def _cluster_end(line: str, p: int) -> int:
    """End of the emoji or symbol at p with its modifiers (variation selector, skin tone, ZWJ, flag)."""
    j, n = p + 1, len(line)
    if 0x1F1E6 <= ord(line[p]) <= 0x1F1FF and j < n and 0x1F1E6 <= ord(line[j]) <= 0x1F1FF:
        j += 1  # a flag is two regional indicators
    while j < n:
        cp = ord(line[j])
        if line[j] in "\ufe0e\ufe0f\u20e3" or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F:
            j += 1
        elif line[j] == "\u200d" and j + 1 < n and _is_symbol(line[j + 1]):
            j += 2
        else:
            break
    return j


def _bullet_end(line: str, p: int) -> int:
    """End of a bullet at p, or p when there is none."""
    ch, nxt = line[p], line[p + 1:p + 2]
    if ch in _DASHES:
        if line.startswith("**", p):
            return p  # bold, not a bullet
        # "- x": a space, then words; a dash alone is text ("—" is an item with no letters)
        return p + 1 if nxt.isspace() and line[p + 1:].strip() else p
    if ch in _BULLETS or _is_symbol(ch):
        return _cluster_end(line, p)
    return p


def _skip_ws(line: str, p: int) -> int:
    while p < len(line) and (line[p].isspace() or _invisible(line[p])):
        p += 1
    return p


def _number_marker(m: re.Match, content: int) -> _Marker:
    number = next(int(v) for g, v in m.groupdict().items() if g[0] == "n" and v)  # n1..n5
    bold_open = bool(m.group("open")) and not (m.group("mid") or m.group("close"))
    return _Marker(m.start(), content, number, None, bold_open)


def _line_marker(line: str, p: int) -> _Marker | None:
    m = _NUM_START.match(line, p)
    if m and not (m.group("n5") and not m.group("open")):
        return _number_marker(m, _skip_ws(line, m.end()))
    if p < len(line):
        end = _bullet_end(line, p)
        if end > p:
            return _Marker(p, _skip_ws(line, end), None, line[p:end])
    return None


def _split_numbered(line: str, pos: int, allowed: tuple[int, ...]) -> list[_Marker]:
    """Items run together on one line: "1. hiking 2. camping", numbers strictly in sequence."""
    found = []
    for m in _NUM_INLINE.finditer(line, pos):
        marker = _number_marker(m, _skip_ws(line, m.end()))
        if marker.number in allowed:
            found.append(marker)
            allowed = (marker.number + 1,)
    return found


def _split_bullet(line: str, pos: int, bullet: str) -> list[_Marker]:
    """Items run together on one line behind the line's own bullet: "🔹 a 🔹 b"."""
    if bullet in _DASHES:
        return []  # "-" and dashes are punctuation inside a phrase too
    found, i = [], line.find(bullet[0], pos)
    while i >= 0:
        end = i + 1
        # an emoji is never punctuation; "•" or "·" need a space before ("col·lecció")
        if _is_symbol(bullet[0]) or line[i - 1].isspace():
            end = _cluster_end(line, i)
            found.append(_Marker(i, _skip_ws(line, end), None, line[i:end]))
        i = line.find(bullet[0], end)
    return found


def _indent(line: str) -> int:
    n = 0
    for ch in line:
        if ch == "\t":
            n += 4
        elif ch.isspace() or _invisible(ch):
            n += 1
        else:
            break
    return n


def _scan(line: str, expect: int | None, in_lead: bool) -> tuple[int, list[_Marker]]:
    """(where the line's text starts, the markers on the line)."""
    p = _skip_ws(line, 0)
    first = _line_marker(line, p)
    if first is not None and first.number is not None:
        return p, [first, *_split_numbered(line, first.content, (first.number + 1,))]
    if first is not None:
        return p, [first, *_split_bullet(line, first.content, first.bullet or "")]
    # a text line may still start items later on: " new parents 2. grandparents"
    allowed = (expect,) if expect else ((1, 2) if in_lead else ())
    return p, _split_numbered(line, p, allowed) if allowed else []


# ---------------------------------------------------------------------------------------------
# Collecting: lines -> raw items (pieces of the original text), before cleanup

_NL = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # what str.splitlines splits on
_SECTION = re.compile(
    r"\s*(?:\*\*|__)?\s*(?:search|bought|both products|the product|product [ab]|query|answer)\b.*:", re.I)
_HEADING = re.compile(r"\s*#{1,6}(?:\s|$)")
_RULE = re.compile(r"\s*([-*_=])(?:\s*\1){2,}\s*$")  # "---", "* * *": a separator, like a blank line


@dataclass
class _Raw:
    pieces: list[Span]  # the item's lines (a wrapped item has several)
    bold_open: bool = False


def _lines(text: str) -> list[Span]:
    out, pos = [], 0
    for m in _NL.finditer(text):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, len(text)))
    return out


def _is_blank(line: str) -> bool:
    return all(ch.isspace() or _invisible(ch) for ch in line) or bool(_RULE.match(line))


def _ends_with_colon(line: str) -> bool:
    return line.strip().strip("*_ \t").endswith((":", "："))


class _Collector:
    """One pass over the lines: the lead (text before any marker), then the list, then stop."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = _lines(text)
        self.items: list[_Raw] = []
        self.lead: list[list[Span]] = [[]]  # blocks of lines before the first marker
        self.lead_seen = False  # a heading or restated question came before the list
        self.in_list = False
        self.cur: _Raw | None = None  # the item that wrapped lines join
        self.sink = _Raw([])  # sub-items and paragraphs under an item go here, unused
        self.expect: int | None = None  # the next number of a numbered list
        self.bullet: str | None = None  # the bullet of a bullet list
        self.base = 0  # indent of the list's marker lines

    def run(self) -> list[_Raw]:
        i, n = 0, len(self.lines)
        while i < n:
            s, e = self.lines[i]
            line = self.text[s:e]
            if _is_blank(line):
                if not self.in_list:
                    self._close_block()  # a blank line after a preamble does not end anything
                    i += 1
                    continue
                j = next((k for k in range(i + 1, n) if not _is_blank(self._line(k))), n)
                if j == n or not self._continues(j):
                    break
                self.cur, i = None, j
                continue
            if not self._take(s, line):
                break
            i += 1
        if not self.in_list:
            self._resolve_lead(None)
        return self.items

    def _line(self, k: int) -> str:
        s, e = self.lines[k]
        return self.text[s:e]

    def _take(self, s: int, line: str) -> bool:
        """Use one non-blank line; False when it ends the list."""
        if _SECTION.match(line):
            if self.in_list or any(self.lead):
                return False  # the model started a new example
            self.lead_seen = True  # a chat answer that restates the question first
            return True
        start, markers = _scan(line, self.expect if self.in_list else None, not self.in_list)
        if not markers:
            return self._text_line(s, line, start)
        if self.in_list and _indent(line) > self.base + 1 and markers[0].start == start:
            self.cur = self.sink  # a sub-item explains its parent; it is not a candidate
            return True
        if markers[0].start > start:
            self._text(s + start, s + markers[0].start)
        if not self.in_list:
            self._resolve_lead(markers[0])
            self.in_list, self.base = True, _indent(line)
        for k, m in enumerate(markers):
            end = markers[k + 1].start if k + 1 < len(markers) else len(line)
            self.items.append(_Raw([(s + min(m.content, end), s + end)], m.bold_open))
        self.cur = self.items[-1]
        last = markers[-1]
        self.expect = last.number + 1 if last.number is not None else None
        self.bullet = last.bullet
        return True

    def _text_line(self, s: int, line: str, start: int) -> bool:
        if _HEADING.match(line) or (self.in_list and _ends_with_colon(line)):
            if self.in_list:
                return False  # a new section of the answer
            self.lead_seen = True
            self._close_block()
            return True
        self._text(s + start, s + len(line))
        if not self.in_list and _ends_with_colon(line):
            self._close_block()  # "Here are some reasons:" is a block of its own
        return True

    def _text(self, a: int, b: int) -> None:
        if not self.in_list:
            self.lead[-1].append((a, b))
        elif self.cur is not None:
            self.cur.pieces.append((a, b))  # a wrapped item

    def _close_block(self) -> None:
        if self.lead[-1]:
            self.lead.append([])

    def _continues(self, k: int) -> bool:
        """After blank lines: does line k still belong to the list (a loose list)?"""
        line = self._line(k)
        if _SECTION.match(line):
            return False
        if _indent(line) > self.base + 1:
            return True  # a paragraph or sub-list under the last item
        start, markers = _scan(line, self.expect, False)
        if not markers or markers[0].start != start:
            return False
        m = markers[0]
        if m.number is not None:
            return m.number == self.expect
        return self.bullet is not None and m.bullet is not None and m.bullet[0] == self.bullet[0]

    def _resolve_lead(self, first: _Marker | None) -> None:
        """Text before the first marker is item 1 when the list goes on at "2." (plain style), or
        when there is no list; otherwise, or when it ends with ":", it is a preamble."""
        if first is not None and (first.number is None or first.number < 2):
            return
        blocks = [b for b in self.lead if b]
        content = [b for b in blocks if not _ends_with_colon(self.text[b[-1][0]:b[-1][1]])]
        if content:
            self.items.append(_Raw(content[0]))
        elif not blocks and not self.lead_seen:
            self.items.append(_Raw([(0, 0)]))  # the model wrote nothing after "1."


# ---------------------------------------------------------------------------------------------
# Cleanup: raw item -> tail (or the reason it is dropped), keeping the span of what is kept

# invisible characters (ZWJ and ZWNJ stay: some scripts spell with them), control characters and
# lone surrogates (a tail must encode to UTF-8)
_HIDDEN = re.compile("[\u00ad\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
                     "\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\ud800-\udfff]")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>\n]*)?/?>")
_LINK = re.compile(r"\[([^\[\]\n]+)\]\([^()\s]*\)")
_LEAD_BULLET = re.compile(r"^\s*(?:[-+*•·‣⁃∙–—→⇒⟶]|\[[ xX✓✔]\])\s+(?=\S)")  # "1. - x", "- [ ] x"
# "**Term**: explanation", "**Term** - explanation", "**Term:** explanation", "**Term**" + new line
_TERM = (re.compile(r"\s*(\*\*|__)([^*\n]{1,200}?)\1[ \t]*(?:[:：]|[-–—](?=\s)|\n)\s*\S"),
         re.compile(r"\s*(\*\*|__)([^*\n]{1,200}?)[:：]\1\s*\S"))
# inner lengths are bounded (items are short) so that pathological output stays linear
_EMPHASIS = (
    re.compile(r"(\*\*\*|___)(?=\S)([^\n]{1,200}?)(?<=\S)\1"),
    re.compile(r"(\*\*|__|~~)(?=\S)([^\n]{1,200}?)(?<=\S)\1"),
    re.compile(r"(?<![\w*])(\*)(?=[^\s*])([^\n*]{1,200}?)(?<=[^\s*])\*(?![\w*])"),
    re.compile(r"(?<![\w_])(_)(?=[^\s_])([^\n_]{1,200}?)(?<=[^\s_])_(?![\w_])"),  # not snake_case
    re.compile(r"(`{1,3})([^\n`]{1,200}?)\1"),
)
_STRAY = re.compile(r"\*+|`+|~~|(?<!\w)_+|_+(?!\w)")  # unpaired markup, e.g. a cut-off "**Hiking"
_WS = re.compile(r"\s+")
_STRIP = set(" ,.;:-\"'`*_“”„‟‘’‚‛«»‹›「」『』〝〞…、，；：")
_END = re.compile(r"[.!?;]+(?=\s|$)|[。！？；]")
_CLOSERS = ")]\"'”’»」』"
_ABBREVIATIONS = frozenset(
    "approx e.g eg i.e ie etc vs v dr mr mrs ms st no nos oz lb lbs in ft pt qt gal jr sr prof inc ltd co "
    "corp mt ave dept est fig misc min max sq yr yrs hr hrs wk mo cf al ca".split())
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")  # u.s, e.g, a.m


def _strippable(ch: str) -> bool:
    # surrounding quotes, trailing punctuation, and emoji decorating an item ("🎁 gift givers")
    return ch.isspace() or ch in _STRIP or _is_symbol(ch) or ch in _EMOJI_MODIFIERS or 0x1F3FB <= ord(ch) <= 0x1F3FF


def _abbreviation(s: str, dot: int) -> bool:
    """Is the "." at dot the end of an abbreviation ("approx.", "e.g.", "U.S.", an initial)?"""
    token = _token_before(s, dot)
    return token in _ABBREVIATIONS or bool(_DOTTED.fullmatch(token)) or (len(token) == 1 and token.isalpha())


def _sentence_end(s: str) -> int | None:
    """Where run-on text ends its first sentence; None when it does not."""
    for m in _END.finditer(s):
        i = m.start()
        if i == 0 or not (s[i - 1].isalnum() or s[i - 1] in _CLOSERS):
            continue  # "!!!", " ." : not the end of a sentence
        if s[i] == "." and m.end() - i == 1 and _abbreviation(s, i):
            continue
        return i
    return None


def _unmark(t: _Tracked) -> _Tracked:
    """Markup and encodings out, words in."""
    t = t.sub(_HIDDEN, "")
    t = t.sub(_ENTITY, lambda m: html.unescape(m.group()))
    t = t.sub(_TAG, " ")
    t = t.sub(_LINK, 1)
    t = t.sub(_LEAD_BULLET, "")
    for term in _TERM:
        m = term.match(t.s)
        if m:
            t = t[m.start(2):m.end(2)]
            break
    for _ in range(3):  # nested emphasis ("**_x_**") takes a pass per level
        before = t.s
        for pattern in _EMPHASIS:
            t = t.sub(pattern, 2)
        if t.s == before:
            break
    t = t.sub(_STRAY, "")
    return t.sub(_WS, " ")


def _token_before(s: str, i: int) -> str:
    j = i
    while j > 0 and not s[j - 1].isspace():
        j -= 1
    return s[j:i].lstrip("([{\"'“‘").lower()


def _trim(t: _Tracked) -> _Tracked:
    a, b = 0, len(t.s)
    while a < b and _strippable(t.s[a]):
        a += 1
    while b > a and _strippable(t.s[b - 1]):
        b -= 1
    if b < len(t.s) and t.s[b] == "." and _DOTTED.fullmatch(_token_before(t.s, b)):
        b += 1  # "made in the U.S." keeps its last dot
    return t[a:b]


def _clean(text: str, raw: _Raw, max_words: int) -> tuple[_Tracked | None, str]:
    """(the cleaned item, "") or (None, why it is dropped)."""
    t = _Tracked.of(text, raw.pieces, "**" if raw.bold_open else "")
    t = _trim(_unmark(t))
    cut = _sentence_end(t.s)
    if cut is not None:  # run-on text: keep the first sentence
        t = _trim(t[:cut])
    if not t.s:
        return None, "empty"
    if word_count(t.s) > max_words:
        return None, "too_long"
    if not any(ch.isalpha() for ch in t.s):
        return None, "no_letters"
    return t, ""


def parse_list(text: str, max_items: int = 5, max_words: int = 12) -> Parsed:
    """Parse a completion of a prompt ending in "1." into ranked, de-duplicated items with spans."""
    out = Parsed()
    seen: set[str] = set()
    for raw in _Collector(text).run():
        item, why = _clean(text, raw, max_words)
        if item is None:
            out.dropped[why] += 1
            continue
        key = normalize(item.s)
        if key in seen:
            out.dropped["repeated"] += 1
            continue
        seen.add(key)
        if len(out.items) >= max_items:
            out.dropped["over_max_items"] += 1
            continue
        out.items.append((len(out.items) + 1, item.s))
        out.spans.append(item.span())
    return out
