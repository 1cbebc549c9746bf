"""ConversationState: folds a chat in one message at a time.

Each :meth:`ConversationState.update` costs the same whatever the chat's length:
it reads only the new message and a fixed set of counters, never the transcript.
The state serialises to a few hundred bytes (msgpack) so the service can store it
between requests, and the same code produces training rows, so training and
serving cannot drift apart.

Feature names are stable and grouped by prefix:

- ``visit.*``: the visit trace (see :mod:`features.visit`), fixed at the start;
- ``meta.*``: department and whether a project is known;
- ``dlg.*``: dialogue statistics (turns per side, lengths, delays, questions,
  contact asks, time since the last visitor message, streaks);
- ``sig.v.*`` / ``sig.c.*``: how often each visitor / consultant signal fired
  (see :mod:`features.signals`), ``log1p``-scaled;
- ``concern.*``: concerns raised and whether the consultant answered them *after*
  they were raised;
- ``ent.*``: what the visitor revealed (form of address, gender, age, project,
  contact kinds, a proposed or agreed visit time).

Text for the models is a hashed bag of jieba tokens per side
(:meth:`ConversationState.text_bag`), taken from text whose personal data was
replaced by type placeholders, so a phone number's digits never become features.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import msgpack

from yuyue.data.contract import Conversation, Visit
from yuyue.features.entities import MessageEntities, extract_entities
from yuyue.features.normalize import normalize
from yuyue.features.pii import PiiSpan, find_pii
from yuyue.features.signals import (
    CONCERN_ANSWERS,
    CONCERN_TRIGGERS,
    CONCERNS,
    CONSULTANT_SIGNALS,
    VISITOR_SIGNALS,
    consultant_signals,
    visitor_signals,
)
from yuyue.features.tokenize import tokenize
from yuyue.features.visit import visit_features

# 2: the latest message's word bag per side; 3: its character n-grams too (older states load with the
# missing bags empty; they fill in with the next message of each side)
STATE_VERSION = 3
TEXT_HASH_BITS = 18
_TEXT_MASK = (1 << TEXT_HASH_BITS) - 1
_MAX_BAG = 4096  # distinct hashed tokens kept per side; bounds the serialised size
# word tokens come from at most this many characters of a message (its start): segmentation is the
# costliest part of a step (~15 µs a character on unbroken text), and a pasted 10,000-character
# message says no more about the chat than its first 2,000; signals, entities and personal data
# still read the whole text
MAX_TOKEN_CHARS = 2000
# character 1-3-grams of the latest message per side come from at most this many of its characters
MAX_GRAM_CHARS = 300

PLACEHOLDERS = {
    "phone": " 手机号 ",
    "wechat": " 微信号 ",
    "qq": " qq号 ",
    "id_card": " 身份证号 ",
    "surname": "某",
}
DEPARTMENTS = ("整形美容", "男科", "妇科", "口腔")
# visitor signals of a visit being planned; a message with one keeps the previous latest-message bag
BUYING_SIGNALS = frozenset({"asks_address", "asks_time", "asks_prepare"})
_TURNING_AWAY = frozenset({"negative", "refuses_contact", "hesitation"})


def redact(text: str, spans: list[PiiSpan]) -> str:
    """Replace each personal-data span by a placeholder naming its type (for features, never shown)."""
    if not spans:
        return text
    out, pos = [], 0
    for s in spans:
        out.append(text[pos : s.start])
        out.append(PLACEHOLDERS.get(s.type, " "))
        pos = s.end
    out.append(text[pos:])
    return "".join(out)


@lru_cache(maxsize=65536)
def analyse_text(text: str, name_answer: bool = False) -> tuple[str, tuple[PiiSpan, ...], tuple[str, ...]]:
    """Normalised text, its personal-data spans and the tokens of its redacted form.

    Cached by raw text: chats repeat a lot (scripted replies, 好的, 嗯), and the
    result depends on the text alone. Tokens cover the first :data:`MAX_TOKEN_CHARS` characters.
    """
    norm = normalize(text)
    spans = find_pii(norm, name_answer=name_answer)
    return norm, tuple(spans), tuple(tokenize(redact(norm, spans)[:MAX_TOKEN_CHARS]))


def char_grams(text: str, n_max: int = 3) -> list[str]:
    """Character 1..``n_max``-grams of ``text``'s first :data:`MAX_GRAM_CHARS` characters, runs of
    whitespace read as one space (what scikit-learn's ``analyzer="char"`` gives)."""
    text = " ".join(text[:MAX_GRAM_CHARS].split())
    return [text[i : i + n] for n in range(1, n_max + 1) for i in range(len(text) - n + 1)]


def _epoch(at: datetime) -> float:
    return at.timestamp()


def _hash_token(side: str, token: str) -> int:
    return zlib.crc32(f"{side}|{token}".encode()) & _TEXT_MASK


@dataclass
class MessageAnalysis:
    """What one message revealed; returned by :meth:`ConversationState.update`."""

    index: int
    role: str
    text: str  # normalised
    tokens: list[str]  # from the redacted text
    pii: list[PiiSpan]
    entities: MessageEntities
    signals: frozenset[str]
    bag_delta: dict[int, int] = field(default_factory=dict)  # hashed token counts this message added


@dataclass
class ConversationState:
    """Running counters of one conversation. Build with :meth:`start`, feed with :meth:`update`."""

    static: dict[str, float] = field(default_factory=dict)
    n: dict[str, float] = field(default_factory=dict)  # additive counters
    flags: dict[str, float] = field(default_factory=dict)  # set-once / latest values
    sig_v: dict[str, int] = field(default_factory=dict)
    sig_c: dict[str, int] = field(default_factory=dict)
    bag_v: dict[int, int] = field(default_factory=dict)
    bag_c: dict[int, int] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)  # surname, address_form, projects, contact kinds …
    # the latest visitor / consultant message's own token bag (sides "lv" / "lc"): how a chat is going
    # now says more than its whole history (on the real service chats the latest messages alone score
    # AUC 0.87, the whole transcript 0.85, both together 0.91; docs/decisions.md)
    last_v: dict[int, int] = field(default_factory=dict)
    last_c: dict[int, int] = field(default_factory=dict)
    # the same messages' character 1-3-grams (sides "gv" / "gc"): segmentation misses much of chat
    # language (typos, 嗯嗯, 谢谢亲); on the real service chats they add +0.0xx AUC (docs/decisions.md)
    grams_v: dict[int, int] = field(default_factory=dict)
    grams_c: dict[int, int] = field(default_factory=dict)

    # ---- construction -------------------------------------------------
    @classmethod
    def start(
        cls,
        *,
        started_at: datetime,
        visit: Visit | None = None,
        department: str | None = None,
        project: str | None = None,
        consultant_id: str | None = None,
        hospital_name: str = "本院",
        hospital_city: str = "杭州市",
        hospital_province: str = "浙江省",
    ) -> ConversationState:
        """A fresh state from what is known when the chat opens (no message yet)."""
        static = {
            k: v
            for k, v in visit_features(
                visit,
                started_at,
                hospital_name=hospital_name,
                hospital_city=hospital_city,
                hospital_province=hospital_province,
            ).items()
            if v
        }
        dept = department if department in DEPARTMENTS else "other" if department else "unknown"
        static[f"meta.department={dept}"] = 1.0
        if project:
            static["meta.has_project"] = 1.0
        if consultant_id:
            # only consultants the model has a column for count; others fall back to the rest
            static["meta.consultant=" + consultant_id] = 1.0
        state = cls(static=static)
        state.flags["start_ts"] = _epoch(started_at)
        return state

    @classmethod
    def for_conversation(cls, conv: Conversation, **hospital: str) -> ConversationState:
        """A fresh state for a contract record's header (its messages are not read)."""
        return cls.start(
            started_at=conv.started_at,
            visit=conv.visit,
            department=conv.department,
            project=conv.project,
            consultant_id=conv.consultant_id,
            **hospital,
        )

    # ---- the per-message step ----------------------------------------
    def update(self, role: str, text: str, at: datetime) -> MessageAnalysis:
        """Fold in one message; O(1) in the number of earlier messages."""
        n, flags = self.n, self.flags
        ts = _epoch(at)
        # a short visitor reply right after 怎么称呼您 is read as a form of address
        name_answer = (
            role == "visitor"
            and self.facts.get("last_role") == "consultant"
            and bool(self.flags.get("name_asked_last"))
        )
        norm, span_t, token_t = analyse_text(text, name_answer)
        spans, tokens = list(span_t), list(token_t)
        ents = extract_entities(norm, role, at, tokens=tokens, pii=spans)
        index = int(n.get("msgs", 0))
        n["msgs"] = index + 1

        last_role = self.facts.get("last_role")
        last_ts = flags.get("last_ts", flags.get("start_ts", ts))
        gap = max(0.0, ts - last_ts)

        if role == "visitor":
            sigs = visitor_signals(norm, tokens)
            self._visitor_step(norm, tokens, sigs, ents, gap, last_role, ts)
        elif role == "consultant":
            sigs = consultant_signals(norm, tokens)
            self._consultant_step(norm, tokens, sigs, ents, gap, last_role, ts)
        else:
            sigs = frozenset()
            n["system"] = n.get("system", 0) + 1

        delta: dict[int, int] = {}
        if role == "visitor":
            delta = self._add_bag(self.bag_v, "v", tokens)
            if not (sigs & BUYING_SIGNALS) or sigs & _TURNING_AWAY:
                # a buying question (the way, a time, what to bring) is read by its signal columns,
                # which may only raise the score; it does not displace what the visitor said before
                self.last_v = self._add_bag({}, "lv", tokens)  # a new dict: rows may hold the old one
                self.grams_v = self._add_bag({}, "gv", char_grams(redact(norm, spans)))
        elif role == "consultant":
            delta = self._add_bag(self.bag_c, "c", tokens)
            self.last_c = self._add_bag({}, "lc", tokens)
            self.grams_c = self._add_bag({}, "gc", char_grams(redact(norm, spans)))
        if role in ("visitor", "consultant"):
            self.facts["last_role"] = role
            flags["last_ts"] = ts
        if ents.visit_time is not None:
            days = (ents.visit_time - at).total_seconds() / 86400
            flags["visit_time_days"] = max(0.0, days)
            flags["visit_time_by_" + role] = 1.0
            flags["visit_time_msg"] = index
        return MessageAnalysis(index, role, norm, tokens, spans, ents, sigs, delta)

    def _visitor_step(self, norm, tokens, sigs, ents, gap, last_role, ts) -> None:
        n, flags, facts = self.n, self.flags, self.facts
        n["visitor"] = n.get("visitor", 0) + 1
        n["visitor_chars"] = n.get("visitor_chars", 0) + len(norm)
        if last_role == "consultant":
            n["visitor_delay_sum"] = n.get("visitor_delay_sum", 0) + gap
            n["visitor_delay_n"] = n.get("visitor_delay_n", 0) + 1
            n["visitor_streak"] = 1
        else:
            n["visitor_streak"] = n.get("visitor_streak", 0) + 1
        n["consultant_streak"] = 0
        flags["last_visitor_ts"] = ts
        flags["name_asked_last"] = 0.0
        for s in sigs:
            self.sig_v[s] = self.sig_v.get(s, 0) + 1
        for c in CONCERNS:
            if any(s in sigs for s in CONCERN_TRIGGERS[c]):
                flags["concern_raised_" + c] = 1.0
                flags["concern_open_" + c] = 1.0
        if ents.surname:
            facts["surname"] = ents.surname
        if ents.address_form:
            facts["address_form"] = ents.address_form
        if ents.gender:
            facts["gender"] = ents.gender
        if ents.age is not None:
            facts["age"] = ents.age
        if ents.contact_kinds:
            kinds = set(facts.get("contact_kinds", ()))
            kinds.update(ents.contact_kinds)
            facts["contact_kinds"] = sorted(kinds)
            n["contact_asks_pending"] = 0
        if "agrees" in sigs and flags.get("visit_time_by_consultant") and not flags.get("visit_time_agreed"):
            flags["visit_time_agreed"] = 1.0
        if ents.visit_time is not None:
            flags["visit_time_agreed"] = 1.0
        self._add_projects(ents)

    def _consultant_step(self, norm, tokens, sigs, ents, gap, last_role, ts) -> None:
        n, flags, facts = self.n, self.flags, self.facts
        n["consultant"] = n.get("consultant", 0) + 1
        n["consultant_chars"] = n.get("consultant_chars", 0) + len(norm)
        if last_role == "visitor":
            n["consultant_delay_sum"] = n.get("consultant_delay_sum", 0) + gap
            n["consultant_delay_n"] = n.get("consultant_delay_n", 0) + 1
            flags["consultant_delay_max"] = max(flags.get("consultant_delay_max", 0.0), gap)
            n["consultant_streak"] = 1
        else:
            n["consultant_streak"] = n.get("consultant_streak", 0) + 1
        n["visitor_streak"] = 0
        for s in sigs:
            self.sig_c[s] = self.sig_c.get(s, 0) + 1
        if "asks_name" in sigs and "asked_name_at" not in flags:
            flags["asked_name_at"] = n["consultant"]
        if "asks_name" in sigs:
            flags["name_asked_last"] = 1.0
        if "asks_contact" in sigs:
            n["contact_asks"] = n.get("contact_asks", 0) + 1
            if not facts.get("contact_kinds"):
                n["contact_asks_pending"] = n.get("contact_asks_pending", 0) + 1
        for c in CONCERNS:
            if flags.get("concern_open_" + c) and CONCERN_ANSWERS[c] in sigs:
                flags["concern_open_" + c] = 0.0
                flags["concern_answered_" + c] = 1.0
        if ents.address_form and "address_form" not in facts:
            facts["address_form"] = ents.address_form
        self._add_projects(ents)

    def _add_projects(self, ents: MessageEntities) -> None:
        if ents.projects:
            projects = set(self.facts.get("projects", ()))
            projects.update(ents.projects)
            self.facts["projects"] = sorted(projects)

    @staticmethod
    def _add_bag(bag: dict[int, int], side: str, tokens: list[str]) -> dict[int, int]:
        delta: dict[int, int] = {}
        for t in tokens:
            h = _hash_token(side, t)
            if h in bag:
                bag[h] += 1
            elif len(bag) < _MAX_BAG:
                bag[h] = 1
            else:
                continue
            delta[h] = delta.get(h, 0) + 1
        return delta

    # ---- reading ------------------------------------------------------
    def features(self, now: datetime | None = None, closed: bool = False) -> dict[str, float]:
        """Named numeric features of the chat so far (sparse: zeros are left out).

        ``closed`` marks a chat that has ended (the visitor left or the consultant
        closed it): the follow-up queue scores chats in that state.
        """
        n, flags, facts = self.n, self.flags, self.facts
        f: dict[str, float] = dict(self.static)
        if closed:
            f["dlg.closed"] = 1.0
        nv, nc = n.get("visitor", 0), n.get("consultant", 0)
        f["dlg.n_msgs"] = n.get("msgs", 0)
        f["dlg.n_visitor"] = nv
        f["dlg.n_consultant"] = nc
        f["dlg.n_visitor_log1p"] = math.log1p(nv)
        f["dlg.n_consultant_log1p"] = math.log1p(nc)
        f["dlg.visitor_mean_len"] = n.get("visitor_chars", 0) / nv if nv else 0.0
        f["dlg.consultant_mean_len"] = n.get("consultant_chars", 0) / nc if nc else 0.0
        f["dlg.consultant_per_visitor"] = nc / nv if nv else float(nc)
        if n.get("consultant_delay_n"):
            f["dlg.consultant_delay_mean_log1p"] = math.log1p(
                n["consultant_delay_sum"] / n["consultant_delay_n"]
            )
            f["dlg.consultant_delay_max_log1p"] = math.log1p(flags.get("consultant_delay_max", 0.0))
        if n.get("visitor_delay_n"):
            f["dlg.visitor_delay_mean_log1p"] = math.log1p(n["visitor_delay_sum"] / n["visitor_delay_n"])
        last_ts = flags.get("last_ts", flags.get("start_ts", 0.0))
        now_ts = _epoch(now) if now is not None else last_ts
        f["dlg.elapsed_log1p"] = math.log1p(max(0.0, last_ts - flags.get("start_ts", last_ts)))
        if "last_visitor_ts" in flags:
            f["dlg.since_visitor_log1p"] = math.log1p(max(0.0, now_ts - flags["last_visitor_ts"]))
        f["dlg.last_role=" + str(facts.get("last_role", "none"))] = 1.0
        f["dlg.visitor_streak"] = n.get("visitor_streak", 0)
        f["dlg.consultant_streak"] = n.get("consultant_streak", 0)
        f["dlg.contact_asks"] = n.get("contact_asks", 0)
        f["dlg.contact_asks_pending"] = n.get("contact_asks_pending", 0)
        f["dlg.visitor_questions"] = self.sig_v.get("question", 0)
        f["dlg.consultant_questions"] = self.sig_c.get("question", 0)
        for name, count in self.sig_v.items():
            f["sig.v." + name] = math.log1p(count)
        for name, count in self.sig_c.items():
            f["sig.c." + name] = math.log1p(count)
        raised = answered = open_ = 0
        for c in CONCERNS:
            if flags.get("concern_raised_" + c):
                raised += 1
                f[f"concern.{c}.raised"] = 1.0
                if flags.get("concern_answered_" + c):
                    answered += 1
                    f[f"concern.{c}.answered"] = 1.0
                if flags.get("concern_open_" + c):
                    open_ += 1
                    f[f"concern.{c}.open"] = 1.0
        f["concern.raised"] = raised
        f["concern.answered"] = answered
        f["concern.open"] = open_
        if "asked_name_at" in flags:
            f["flow.asked_name"] = 1.0
            f["flow.asked_name_early"] = 1.0 if flags["asked_name_at"] <= 2 else 0.0
        if facts.get("surname") or facts.get("address_form"):
            f["ent.has_address_form"] = 1.0
        f["ent.gender=" + str(facts.get("gender", "unknown"))] = 1.0
        if "age" in facts:
            f["ent.has_age"] = 1.0
        projects = facts.get("projects", ())
        f["ent.n_projects"] = len(projects)
        kinds = facts.get("contact_kinds", ())
        for k in kinds:
            f["ent.contact." + k] = 1.0
        f["ent.has_contact"] = 1.0 if kinds else 0.0
        if "visit_time_days" in flags:
            f["ent.visit_time_proposed"] = 1.0
            f["ent.visit_time_days_log1p"] = math.log1p(flags["visit_time_days"])
        if flags.get("visit_time_agreed"):
            f["ent.visit_time_agreed"] = 1.0
        return {k: float(v) for k, v in f.items() if v}

    def text_bag(self) -> tuple[dict[int, int], dict[int, int]]:
        """Hashed token counts (visitor, consultant); indices in ``[0, 2**TEXT_HASH_BITS)``."""
        return self.bag_v, self.bag_c

    def recent_bag(self) -> tuple[dict[int, int], dict[int, int]]:
        """Hashed token counts of the latest visitor and the latest consultant message."""
        return self.last_v, self.last_c

    def recent_grams(self) -> tuple[dict[int, int], dict[int, int]]:
        """Hashed character 1-3-gram counts of the same two messages."""
        return self.grams_v, self.grams_c

    @property
    def n_messages(self) -> int:
        return int(self.n.get("msgs", 0))

    @property
    def n_visitor(self) -> int:
        return int(self.n.get("visitor", 0))

    @property
    def revealed(self) -> dict[str, Any]:
        """What the visitor has revealed so far (raw values; mask before showing to anyone else)."""
        return dict(self.facts)

    # ---- persistence --------------------------------------------------
    def to_bytes(self) -> bytes:
        payload = [
            STATE_VERSION,
            self.static,
            self.n,
            self.flags,
            self.sig_v,
            self.sig_c,
            self.bag_v,
            self.bag_c,
            self.facts,
            self.last_v,
            self.last_c,
            self.grams_v,
            self.grams_c,
        ]
        return msgpack.packb(payload, use_bin_type=True)

    @classmethod
    def from_bytes(cls, blob: bytes) -> ConversationState:
        payload = msgpack.unpackb(blob, raw=False, strict_map_key=False)
        if not payload or payload[0] not in (1, 2, STATE_VERSION):
            raise ValueError(
                f"conversation state version {payload[0] if payload else None} != {STATE_VERSION}"
            )
        # versions 1 and 2 lack the latest-message bags: they fill in with the next message of each side
        static, n, flags, sig_v, sig_c, bag_v, bag_c, facts, *recent = payload[1:]
        last_v, last_c, grams_v, grams_c = [*recent, {}, {}, {}, {}][:4]
        return cls(static, n, flags, sig_v, sig_c, bag_v, bag_c, facts, last_v, last_c, grams_v, grams_c)


def replay(conv: Conversation, upto: int | None = None, **hospital: str) -> ConversationState:
    """A state fed with the first ``upto`` messages of ``conv`` (all by default)."""
    state = ConversationState.for_conversation(conv, **hospital)
    for m in conv.messages[: upto if upto is not None else len(conv.messages)]:
        state.update(m.role, m.text, m.at)
    return state


__all__ = [
    "CONSULTANT_SIGNALS",
    "ConversationState",
    "MessageAnalysis",
    "STATE_VERSION",
    "VISITOR_SIGNALS",
    "redact",
    "replay",
]


def feature_names(consultants: tuple[str, ...] = ()) -> list[str]:
    """Every name :meth:`ConversationState.features` can produce, in a fixed order (model columns).

    ``consultants``: the consultant ids that get a column of their own (the trainer
    picks those with enough training chats).
    """
    from yuyue.features.visit import VISIT_FEATURE_NAMES

    names = list(VISIT_FEATURE_NAMES)
    names += [f"meta.department={d}" for d in (*DEPARTMENTS, "other", "unknown")] + ["meta.has_project"]
    names += [f"meta.consultant={c}" for c in consultants]
    names += [
        "dlg.closed",
        "dlg.n_msgs",
        "dlg.n_visitor",
        "dlg.n_consultant",
        "dlg.n_visitor_log1p",
        "dlg.n_consultant_log1p",
        "dlg.visitor_mean_len",
        "dlg.consultant_mean_len",
        "dlg.consultant_per_visitor",
        "dlg.consultant_delay_mean_log1p",
        "dlg.consultant_delay_max_log1p",
        "dlg.visitor_delay_mean_log1p",
        "dlg.elapsed_log1p",
        "dlg.since_visitor_log1p",
        "dlg.last_role=visitor",
        "dlg.last_role=consultant",
        "dlg.last_role=none",
        "dlg.visitor_streak",
        "dlg.consultant_streak",
        "dlg.contact_asks",
        "dlg.contact_asks_pending",
        "dlg.visitor_questions",
        "dlg.consultant_questions",
    ]
    names += ["sig.v." + s for s in VISITOR_SIGNALS] + ["sig.c." + s for s in CONSULTANT_SIGNALS]
    for c in CONCERNS:
        names += [f"concern.{c}.raised", f"concern.{c}.answered", f"concern.{c}.open"]
    names += [
        "concern.raised",
        "concern.answered",
        "concern.open",
        "flow.asked_name",
        "flow.asked_name_early",
    ]
    names += [
        "ent.has_address_form",
        "ent.gender=female",
        "ent.gender=male",
        "ent.gender=unknown",
        "ent.has_age",
    ]
    names += [
        "ent.n_projects",
        "ent.contact.phone",
        "ent.contact.wechat",
        "ent.contact.qq",
        "ent.has_contact",
    ]
    names += ["ent.visit_time_proposed", "ent.visit_time_days_log1p", "ent.visit_time_agreed"]
    return list(dict.fromkeys(names))
