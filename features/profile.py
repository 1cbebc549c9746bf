"""What the chats of a data set look like, as a small JSON profile, and how far two profiles drift apart.

The profile of a model's training chats is stored with the model (``info["profile"]``), so the
server can compare the live chats with them (``serving/monitoring.py``) without the data file:

- ``categorical``: chats per value of the visit trace (engine, keyword category, landing page,
  region, device) and of the department; the :data:`TOP_CATEGORIES` most frequent values of each,
  the rest summed under :data:`OTHER`, a missing value counted under :data:`MISSING`;
- ``numeric``: ended chats per bin of messages and of visitor turns, and visitor messages per bin of
  length in characters (over the text sample), on the fixed bins of :data:`NUMERIC_BINS`;
- ``concerns``: chats where the visitor raised each concern (price, safety …) among the
  ``n_text_chats`` chats whose texts were read (the first :data:`TEXT_SAMPLE` chats counted).

Both sides are counted by :class:`ProfileCounter` (the training side over :class:`ChatSample` values,
the live side from the store's columns and messages), so a live chat and a training chat with the
same visit and messages land in the same bins.

Drift is the population stability index per feature, ``PSI = Σ (a − e) · ln(a / e)`` over the bins
(``e``: the reference share, ``a``: the live share, each bin's count plus 0.5 so that an empty bin
stays finite); by convention under 0.1 is stable, 0.1–0.2 a moderate shift, above 0.2 a large one.
Two finite samples of one population differ by chance too, by ``(k − 1)(1/n + 1/N)`` on average
(:func:`sampling_psi`: ``k`` bins, ``n`` live and ``N`` reference chats): a feature's level judges its
PSI above that (``excess``), so a few dozen live chats over twenty regions do not read as drift.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from yuyue.data.contract import Conversation, Visit
from yuyue.features.signals import CONCERN_TRIGGERS, CONCERNS, visitor_signals
from yuyue.features.state import analyse_text
from yuyue.features.visit import keyword_category, page_category, parse_region

PROFILE_VERSION = 1
TOP_CATEGORIES = 20
TEXT_SAMPLE = 1000
MISSING = "(none)"
OTHER = "(other)"
CATEGORICAL = ("engine", "keyword_category", "landing_page", "region", "device", "department")
# left edges of the bins (the last one is open-ended)
NUMERIC_BINS: dict[str, tuple[int, ...]] = {
    "messages": (0, 2, 4, 6, 8, 10, 12, 16, 20, 30),
    "visitor_turns": (0, 1, 2, 3, 4, 5, 6, 8, 10, 15),
    "visitor_message_chars": (0, 3, 5, 8, 12, 16, 24, 32, 64, 128),
}
PER_MESSAGE = ("visitor_message_chars",)  # counted per visitor message; the others per chat
SMOOTHING = 0.5


@dataclass(frozen=True)
class ChatSample:
    """What a profile reads of one chat: its visit trace, department and messages (role, text)."""

    visit: Visit | None
    department: str | None
    messages: Sequence[tuple[str, str]]

    @classmethod
    def of(cls, conv: Conversation) -> ChatSample:
        return cls(conv.visit, conv.department, [(m.role, m.text) for m in conv.messages])


def visit_values(visit: Visit | None, department: str | None, hospital_name: str) -> dict[str, str]:
    """The categorical values of a chat (:data:`MISSING` where the trace says nothing); the landing page
    and region are read as the service stores them (``serving/service.py``)."""
    out = dict.fromkeys(CATEGORICAL, MISSING)
    if department:
        out["department"] = department
    if visit is None:
        return out
    if visit.engine is not None:
        out["engine"] = str(getattr(visit.engine, "value", visit.engine))
    if visit.keyword:
        out["keyword_category"] = keyword_category(visit.keyword, hospital_name)
    pages = visit.pages or []
    if visit.landing_url:
        out["landing_page"] = page_category(visit.landing_url, None)
    elif pages:
        out["landing_page"] = page_category(pages[0].url, pages[0].title)
    if visit.region:
        province, city = parse_region(visit.region)
        out["region"] = city or province or visit.region
    if visit.device is not None:
        out["device"] = str(getattr(visit.device, "value", visit.device))
    return out


def concerns_raised(messages: Iterable[tuple[str, str]]) -> set[str]:
    """The concerns the visitor raised (as ``ConversationState`` flags them: ``concern_raised_*``)."""
    raised: set[str] = set()
    for role, text in messages:
        if role != "visitor":
            continue
        norm, _, tokens = analyse_text(text)
        sigs = visitor_signals(norm, list(tokens))
        raised |= {c for c in CONCERNS if any(s in sigs for s in CONCERN_TRIGGERS[c])}
    return raised


def _bin(edges: Sequence[int], x: float) -> int:
    i = 0
    while i + 1 < len(edges) and x >= edges[i + 1]:
        i += 1
    return i


class ProfileCounter:
    """Counts chats into a profile (see the module docstring); ``text_sample``: how many chats the
    concern detector reads (the first ones added)."""

    def __init__(self, hospital_name: str = "本院", text_sample: int = TEXT_SAMPLE):
        self.hospital_name = hospital_name
        self.text_sample = text_sample
        self.n = 0
        self.n_text = 0
        self.categorical: dict[str, dict[str, int]] = {k: {} for k in CATEGORICAL}
        self.numeric = {k: [0] * len(edges) for k, edges in NUMERIC_BINS.items()}
        self.concerns = dict.fromkeys(CONCERNS, 0)

    def add(self, chat: ChatSample) -> None:
        """A whole (ended) chat: its visit, its lengths and, among the first ``text_sample``, its texts."""
        self.add_visit(chat.visit, chat.department)
        self.add_lengths(len(chat.messages), sum(r == "visitor" for r, _ in chat.messages))
        if self.n_text < self.text_sample:
            self.add_texts(chat.messages)

    def add_visit(self, visit: Visit | None, department: str | None) -> None:
        self.n += 1
        for k, v in visit_values(visit, department, self.hospital_name).items():
            self.categorical[k][v] = self.categorical[k].get(v, 0) + 1

    def add_lengths(self, n_messages: int, n_visitor: int) -> None:
        """Messages and visitor turns of an ended chat (a chat in progress would read as a short one)."""
        self.numeric["messages"][_bin(NUMERIC_BINS["messages"], n_messages)] += 1
        self.numeric["visitor_turns"][_bin(NUMERIC_BINS["visitor_turns"], n_visitor)] += 1

    def add_texts(self, messages: Sequence[tuple[str, str]]) -> None:
        """The concerns raised and the visitor message lengths of one chat."""
        self.n_text += 1
        for role, text in messages:
            if role == "visitor":
                self.numeric["visitor_message_chars"][
                    _bin(NUMERIC_BINS["visitor_message_chars"], len(text))
                ] += 1
        for c in concerns_raised(messages):
            self.concerns[c] += 1

    def result(self, top: int | None = TOP_CATEGORIES) -> dict[str, Any]:
        """The profile as JSON-ready data; ``top``: keep that many values per category (the rest under
        :data:`OTHER`), None: all."""
        categorical = {}
        for k, counts in self.categorical.items():
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            kept = dict(ranked if top is None else ranked[:top])
            rest = sum(counts.values()) - sum(kept.values())
            if rest:
                kept[OTHER] = kept.get(OTHER, 0) + rest
            categorical[k] = kept
        return {
            "version": PROFILE_VERSION,
            "n_chats": self.n,
            "n_text_chats": self.n_text,
            "categorical": categorical,
            "numeric": {
                k: {"edges": list(NUMERIC_BINS[k]), "counts": list(v)} for k, v in self.numeric.items()
            },
            "concerns": dict(self.concerns),
        }


def build_profile(
    chats: Iterable[Conversation | ChatSample], hospital_name: str = "本院", text_sample: int = TEXT_SAMPLE
) -> dict[str, Any]:
    """The profile of ``chats`` (contract records or samples)."""
    counter = ProfileCounter(hospital_name, text_sample)
    for chat in chats:
        counter.add(chat if isinstance(chat, ChatSample) else ChatSample.of(chat))
    return counter.result()


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two count vectors over the same bins (each bin + 0.5)."""
    if len(expected) != len(actual):
        raise ValueError(f"bins differ: {len(expected)} != {len(actual)}")
    e_tot = sum(expected) + SMOOTHING * len(expected)
    a_tot = sum(actual) + SMOOTHING * len(actual)
    out = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe, pa = (e + SMOOTHING) / e_tot, (a + SMOOTHING) / a_tot
        out += (pa - pe) * math.log(pa / pe)
    return out


def sampling_psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """The PSI two samples of the same population show on average, from their sizes alone:
    ``(k − 1) · (1/n_live + 1/n_reference)`` over the ``k`` bins either side uses (PSI is twice
    a chi-square statistic over n to second order). 200 live chats over 21 regions read ≈ 0.1 by
    chance; the levels judge the PSI above it."""
    k = sum(1 for e, a in zip(expected, actual, strict=True) if e or a)
    n_e, n_a = sum(expected), sum(actual)
    if k < 2 or not n_e or not n_a:
        return 0.0
    return (k - 1) * (1 / n_a + 1 / n_e)


def _level(value: float, warn: float, flag: float) -> str:
    return "flag" if value > flag else "warn" if value > warn else "ok"


def compare(
    reference: dict[str, Any], live: dict[str, Any], warn: float = 0.1, flag: float = 0.2
) -> list[dict[str, Any]]:
    """PSI of every feature of ``live`` against ``reference`` (two :func:`build_profile` results), with
    the shares behind it and its level (``ok`` / ``warn`` above ``warn`` / ``flag`` above ``flag``).

    A live value the reference does not list counts under its :data:`OTHER`."""
    out: list[dict[str, Any]] = []
    for k in CATEGORICAL:
        ref = reference["categorical"].get(k) or {}
        if not ref:
            continue
        cats = list(ref)
        if OTHER not in ref:
            cats.append(OTHER)
        live_counts = dict.fromkeys(cats, 0)
        for v, c in (live["categorical"].get(k) or {}).items():
            key = v if v in live_counts else OTHER
            live_counts[key] += c
        e = [float(ref.get(c, 0)) for c in cats]
        a = [float(live_counts[c]) for c in cats]
        out.append(
            _entry("visit." + k if k != "department" else "department", "categorical", cats, e, a, warn, flag)
        )
    for k, spec in reference["numeric"].items():
        other = live["numeric"].get(k)
        if other is None or other["edges"] != spec["edges"]:
            continue
        labels = [
            f"{lo}-{hi - 1}" if hi - 1 > lo else str(lo)
            for lo, hi in zip(spec["edges"], spec["edges"][1:], strict=False)
        ]
        labels.append(f"{spec['edges'][-1]}+")
        out.append(_entry(k, "numeric", labels, spec["counts"], other["counts"], warn, flag))
    n_ref, n_live = reference.get("n_text_chats", 0), live.get("n_text_chats", 0)
    if n_ref and n_live:
        for c in CONCERNS:
            r, a = reference["concerns"].get(c, 0), live["concerns"].get(c, 0)
            out.append(
                _entry(
                    "concern." + c,
                    "concern",
                    ["raised", "not raised"],
                    [r, n_ref - r],
                    [a, n_live - a],
                    warn,
                    flag,
                )
            )
    return out


def _entry(
    name: str,
    kind: str,
    bins: list[str],
    expected: Sequence[float],
    actual: Sequence[float],
    warn: float,
    flag: float,
) -> dict[str, Any]:
    value = psi(expected, actual)
    noise = sampling_psi(expected, actual)
    e_tot, a_tot = sum(expected) or 1, sum(actual) or 1
    return {
        "feature": name,
        "kind": kind,
        "psi": round(value, 4),
        "noise": round(noise, 4),
        "excess": round(max(0.0, value - noise), 4),
        "level": _level(value - noise, warn, flag),
        "bins": [
            {"bin": b, "reference": round(e / e_tot, 4), "live": round(a / a_tot, 4)}
            for b, e, a in zip(bins, expected, actual, strict=True)
        ],
    }
