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
    text = _t2s().convert(text)
    if _MAYBE_EMOJI.search(text):
        text = emoji.replace_emoji(text, replace=" ")
        text = text.replace("\u200d", "").replace("\ufe0f", "")
    if "[" in text:
        text = _EMOTICON.sub(" ", text)
    return _WS.sub(" ", text).strip()
