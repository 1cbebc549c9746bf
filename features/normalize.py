"""Text normalisation: width, traditional → simplified, emoji and whitespace."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import emoji
import opencc

_WS = re.compile(r"\s+")
# cheap pre-check so the emoji library only runs on text that may hold an emoji
_MAYBE_EMOJI = re.compile("[\u2190-\u2bff\u200d\ufe0f\U0001f000-\U0001faff]")
# chat-tool emoticon codes such as [微笑] or [呵呵]
_EMOTICON = re.compile(r"\[[\u4e00-\u9fff]{1,4}\]")


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


# simplified characters that OpenCC's phrase table rewrites wrongly in simplified text: 打坏 → 打坯
# (坏 is also an old variant of 坯, and the table holds that phrase); these stay as written
_KEEP_SIMPLIFIED = frozenset("坏")


def _to_simplified(text: str) -> str:
    """OpenCC t2s, except for the simplified characters in ``_KEEP_SIMPLIFIED`` (same length out)."""
    conv = _t2s().convert(text)
    if conv == text or len(conv) != len(text) or not _KEEP_SIMPLIFIED.intersection(text):
        return conv
    return "".join(t if t in _KEEP_SIMPLIFIED else c for t, c in zip(text, conv, strict=True))


def normalize(text: str) -> str:
    """Canonical form of a message for matching and features.

    NFKC folds full-width letters, digits and punctuation to half width; OpenCC
    turns traditional characters into simplified ones; emoji and chat emoticon
    codes are removed; runs of whitespace become one space. Digits keep their
    spacing so that personal-data detection still sees ``138 1234 5678``.
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = _to_simplified(text)
    if _MAYBE_EMOJI.search(text):
        text = emoji.replace_emoji(text, replace=" ")
        text = text.replace("\u200d", "").replace("\ufe0f", "")
    if "[" in text:
        text = _EMOTICON.sub(" ", text)
    return _WS.sub(" ", text).strip()


_ZERO_WIDTH = "\u200d\ufe0f"


def _coarse(text: str, out: str) -> tuple[str, list[int], list[int]]:
    """Every output character maps to the whole input (a safe over-approximation, never used on real text)."""
    return out, [0] * len(out), [len(text)] * len(out)


def _nfkc_mapped(text: str) -> tuple[str, list[int], list[int]]:
    if unicodedata.is_normalized("NFKC", text):
        return text, list(range(len(text))), list(range(1, len(text) + 1))
    out: list[str] = []
    lo: list[int] = []
    hi: list[int] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1  # a cluster: a character and the combining marks / Hangul jamo that may compose with it
        while j < n and (unicodedata.combining(text[j]) or "\u1160" <= text[j] <= "\u11ff"):
            j += 1
        piece = unicodedata.normalize("NFKC", text[i:j])
        out.append(piece)
        lo.extend([i] * len(piece))
        hi.extend([j] * len(piece))
        i = j
    joined = "".join(out)
    if joined != unicodedata.normalize("NFKC", text):
        return _coarse(text, unicodedata.normalize("NFKC", text))
    return joined, lo, hi


def normalize_mapped(text: str) -> tuple[str, list[int], list[int]]:
    """:func:`normalize` with an exact offset map: ``(norm, lo, hi)`` where ``norm == normalize(text)`` and
    character ``i`` of ``norm`` comes from ``text[lo[i]:hi[i]]``. A span ``norm[a:b]`` therefore sits in
    ``text[lo[a]:hi[b - 1]]`` (emoji, emoticon codes and zero-width characters inside it included)."""
    if not text:
        return "", [], []
    s, lo, hi = _nfkc_mapped(text)
    conv = _to_simplified(s)
    if len(conv) != len(s):  # OpenCC t2s keeps length in practice; if not, map the whole text coarsely
        return _coarse(text, normalize(text))
    s = conv
    if _MAYBE_EMOJI.search(s):
        from emoji.tokenizer import EmojiMatch, tokenize

        out: list[str] = []
        nlo: list[int] = []
        nhi: list[int] = []
        at = 0
        for token in tokenize(s, keep_zwj=emoji.config.replace_emoji_keep_zwj):
            end = at + len(token.chars)
            if isinstance(token.value, EmojiMatch):
                out.append(" ")
                nlo.append(lo[at])
                nhi.append(hi[end - 1])
            else:
                for k in range(at, end):
                    if s[k] not in _ZERO_WIDTH:
                        out.append(s[k])
                        nlo.append(lo[k])
                        nhi.append(hi[k])
            at = end
        if at != len(s):
            return _coarse(text, normalize(text))
        s, lo, hi = "".join(out), nlo, nhi
    for pattern in (_EMOTICON, _WS):
        if pattern is _EMOTICON and "[" not in s:
            continue
        out, nlo, nhi, at = [], [], [], 0
        for m in pattern.finditer(s):
            a, b = m.span()
            out.append(s[at:a])
            nlo.extend(lo[at:a])
            nhi.extend(hi[at:a])
            out.append(" ")
            nlo.append(lo[a])
            nhi.append(hi[b - 1])
            at = b
        out.append(s[at:])
        nlo.extend(lo[at:])
        nhi.extend(hi[at:])
        s, lo, hi = "".join(out), nlo, nhi
    if s.startswith(" "):
        s, lo, hi = s[1:], lo[1:], hi[1:]
    if s.endswith(" "):
        s, lo, hi = s[:-1], lo[:-1], hi[:-1]
    return s, lo, hi
