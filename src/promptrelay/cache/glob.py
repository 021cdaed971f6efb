"""Redis-style glob patterns, matched in Python exactly as ``SCAN ... MATCH`` does.

Rules (Redis ``stringmatchlen``): ``*`` any run of characters, ``?`` one character,
``[abc]`` / ``[a-z]`` a set or range, ``[^...]`` a negated set, ``\\x`` the literal x
(also inside a set). A ``[`` without a closing ``]`` takes the rest of the pattern as
its set. Matching is case-sensitive and covers the whole key. Redis compares bytes,
this module characters: the two agree on ASCII keys, which is what keys are.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

__all__ = ["glob_escape", "glob_matcher", "glob_to_regex"]


def glob_to_regex(pattern: str) -> str:
    """Translate a Redis glob into an equivalent regular expression (for fullmatch)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            while i + 1 < n and pattern[i + 1] == "*":
                i += 1
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            i, char_class = _char_class(pattern, i + 1)
            out.append(char_class)
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _char_class(pattern: str, i: int) -> tuple[int, str]:
    """Parse a set starting after ``[``; return the index after it and its regex."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    items: list[str] = []
    while i < n and pattern[i] != "]":
        if pattern[i] == "\\" and i + 1 < n:
            i += 1
            items.append(re.escape(pattern[i]))
        elif i + 2 < n and pattern[i + 1] == "-":
            # As in Redis, "[a-]" is the range a..] and the set runs on to the next "]".
            low, high = sorted((pattern[i], pattern[i + 2]))
            items.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 2
        else:
            items.append(re.escape(pattern[i]))
        i += 1
    i += 1  # the closing "]" (or past the end when it is missing)
    body = "".join(items)
    if not body:
        # Redis: "[]" matches nothing, "[^]" matches any one character.
        return i, "." if negate else "(?!)"
    return i, f"[{'^' if negate else ''}{body}]"


def glob_escape(key: str) -> str:
    """A pattern matching exactly ``key``."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in key)


@lru_cache(maxsize=256)
def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate telling whether a key matches ``pattern``."""
    if pattern == "*":
        return lambda _key: True
    compiled = re.compile(glob_to_regex(pattern), re.DOTALL)
    return lambda key: compiled.fullmatch(key) is not None
