"""A product type guessed from a title, for catalogues (like IntentionQA's) that give none.

"Belkin USB A/A Extension Cable, USB Type-A Female ..." -> "cable". The head noun phrase
of a title usually sits at the end of its first clause; good enough for the co-purchase type
cross-check, which only needs types to be consistent, not perfect.
"""

from __future__ import annotations

import re

_CUT = re.compile(r",|\s[-–|/]\s|\(|\[|\s(?:with|for|by|in|from|featuring|includes?)\s", re.I)
_NOISE = re.compile(r"^(?:\d+[\w.\"']*|x+l|xs|s|m|l|pack|pcs?|set|of|and|&|the|a|new|\W+)$", re.I)


def guess_type(title: str, words: int = 1) -> str | None:
    head = _CUT.split(title, maxsplit=1)[0]
    toks = [t for t in re.findall(r"[A-Za-z][A-Za-z'\-]*|\d+\w*", head) if not _NOISE.match(t)]
    toks = [t for t in toks if not t.isupper() or len(t) > 4]  # drop model codes / acronyms like USB, A/A
    if not toks:
        return None
    return " ".join(toks[-words:]).lower()
