"""Variety over the phrase banks: per-chat hospitals and consultant names, per-person phrasing.

Every chat gets its own hospital (name, address, metro, phone) and consultant name, so the
names appear in the text the way they do in real exports and a reply miner has to slot them.
Every visitor and consultant gets a way of phrasing: prefixes, particles, synonyms and
punctuation, applied to the bank lines; visitors also paste long descriptions of their
situation and ask several things in one message. Data lives in ``phrases/variety.yaml``.

Visitor lines are varied *before* slots are filled and lines that carry planted personal
data (phone, WeChat, QQ, ID number, surname) are left alone, so ``truth.entities`` stays exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

_PLANTED = ("{phone}", "{wechat}", "{qq}", "{idcard}", "{surname}")
_END_PUNCT = "？。！?.!~ "
_PARTICLES = "吗呢吧啊呀哈哦嘛啦了么"
_QUESTION = ("吗", "？", "?", "多少", "怎么", "什么", "哪", "几", "能", "可以", "呢", "要不要", "会不会")


@dataclass(frozen=True)
class VisitorVoice:
    prefix_rate: float
    particle_rate: float
    synonym_rate: float
    ending_rate: float


@dataclass(frozen=True)
class ConsultantVoice:
    casual: bool  # says 你 instead of 您
    prefix_rate: float
    ending_rate: float
    synonym_rate: float
    merge_rate: float  # how often a short acknowledgement runs into the next message
    filler_rate: float  # how often a bare 好的/稍等 goes before the real answer
    endings: tuple[str, ...]


def _pick(rng: random.Random, seq: Any) -> Any:
    return seq[int(rng.random() * len(seq))]


def _replace_some(text: str, table: tuple[tuple[str, tuple[str, ...]], ...], rate: float, rng) -> str:
    for key, alts in table:
        if key in text and rng.random() < rate:
            text = text.replace(key, _pick(rng, alts), 1)
    return text


class Variety:
    """Draws per-chat names and voices and applies them to lines."""

    def __init__(self, bank: dict[str, Any]):
        h = bank["hospital"]
        self.brands = tuple(h["brands"])
        self.kinds = {k: tuple(v) for k, v in h["kinds"].items()}
        self.districts = tuple(h["districts"])
        self.roads = tuple(h["roads"])
        self.stations = tuple(h["stations"])
        self.landmarks = tuple(h["landmarks"])
        self.buildings = tuple(h["buildings"])
        n = bank["consultant_names"]
        self.given = tuple(n["given"])
        self.english = tuple(n["english"])
        self.name_patterns = tuple(n["patterns"])
        v = bank["visitor"]
        self.v_prefixes = tuple(v["prefixes"])
        self.v_particles = tuple(v["particles"])
        self.v_endings = tuple(v["endings"])
        self.v_synonyms = tuple((str(k), tuple(map(str, a))) for k, a in v["synonyms"].items())
        self.ack_first = tuple(v["acks"]["first"])
        self.ack_second = tuple(v["acks"]["second"])
        self.ack_tail = tuple(v["acks"]["tail"])
        self.joiners = tuple(v["joiners"])
        p = bank["pasted"]
        self.p_openers = tuple(p["openers"])
        self.p_middles = tuple(p["middles"])
        self.p_closers = tuple(p["closers"])
        self.offscript = tuple(
            {"stage": o["stage"], "q": tuple(o["q"]), "a": tuple(o["a"])} for o in bank["offscript"]
        )
        c = bank["consultant"]
        self.c_prefixes = tuple(c["prefixes"])
        self.c_casual_prefixes = tuple(c["casual_prefixes"])
        self.c_endings = tuple(c["endings"])
        self.c_synonyms = tuple((str(k), tuple(map(str, a))) for k, a in c["synonyms"].items())
        self.mergeable = frozenset(c["mergeable"])
        self.fillers = tuple(c.get("fillers") or ("好的",))

    # -- names ----------------------------------------------------------------------------------

    def hospital(self, rng: random.Random, city_short: str, department: str, landline_area: str) -> dict:
        """A hospital for one chat: the slot values consultants use."""
        brand = _pick(rng, self.brands)
        kind = _pick(rng, self.kinds.get(department, self.kinds["other"]))
        name = (city_short if rng.random() < 0.7 else "") + brand + kind
        road = _pick(rng, self.roads)
        address = (
            f"{_pick(rng, self.districts)}{road}{1 + int(rng.random() * 399)}号{_pick(rng, self.buildings)}"
        )
        station = _pick(rng, self.stations)
        metro = (
            f"地铁{1 + int(rng.random() * 9)}号线{station}站{_pick(rng, 'ABCD')}口出来"
            f"步行{3 + int(rng.random() * 10)}分钟"
        )
        landline = f"{landline_area}-8{int(rng.random() * 1000):03d} {int(rng.random() * 10000):04d}"
        return {
            "hospital": name,
            "hshort": brand,
            "address": address,
            "metro": metro,
            "landline": landline,
            "landmark": _pick(rng, self.landmarks) if rng.random() < 0.6 else road,
        }

    def consultant_name(self, rng: random.Random) -> str:
        g = _pick(rng, self.given)
        g2 = _pick(rng, self.given)
        return _pick(rng, self.name_patterns).format(g=g, g2=g2, e=_pick(rng, self.english))

    # -- voices ---------------------------------------------------------------------------------

    def visitor_voice(self, rng: random.Random) -> VisitorVoice:
        return VisitorVoice(
            prefix_rate=rng.random() * 0.45,
            particle_rate=rng.random() * 0.6,
            synonym_rate=0.2 + rng.random() * 0.6,
            ending_rate=rng.random() * 0.5,
        )

    def consultant_voice(self, rng: random.Random) -> ConsultantVoice:
        casual = rng.random() < 0.25
        return ConsultantVoice(
            casual=casual,
            prefix_rate=0.1 + rng.random() * 0.4,
            ending_rate=rng.random() * (0.6 if casual else 0.3),
            synonym_rate=0.1 + rng.random() * 0.5,
            merge_rate=rng.random() * 0.6,
            filler_rate=rng.random() * 0.12,
            endings=tuple(rng.sample(self.c_endings, 3)),
        )

    def visitor(self, template: str, voice: VisitorVoice, rng: random.Random) -> str:
        """A visitor line template in this visitor's phrasing (slots still unfilled)."""
        if any(p in template for p in _PLANTED):
            return template
        text = _replace_some(template, self.v_synonyms, voice.synonym_rate, rng)
        if rng.random() < voice.prefix_rate and any(q in template for q in _QUESTION):
            text = _pick(rng, self.v_prefixes) + ("，" if rng.random() < 0.5 else " ") + text
        body = text.rstrip(_END_PUNCT)
        end = text[len(body) :]
        if body and body[-1] not in "}" + _PARTICLES and rng.random() < voice.particle_rate:
            body += _pick(rng, self.v_particles)
        if rng.random() < voice.ending_rate:
            end = _pick(rng, self.v_endings)
        return body + end

    def ack(self, rng: random.Random) -> str:
        text = _pick(rng, self.ack_first)
        second = _pick(rng, self.ack_second)
        if second:
            text += ("，" if rng.random() < 0.5 else " ") + second
        return text + _pick(rng, self.ack_tail)

    def join(self, first: str, second: str, rng: random.Random) -> str:
        """Two questions in one message."""
        return first.rstrip(_END_PUNCT) + _pick(rng, self.joiners) + second

    def pasted(self, rng: random.Random, answers: tuple[str, ...], concerns: list[str]) -> str:
        """A long description of the visitor's situation (about 300-1,000 characters), as a template."""
        target = 300 + int(rng.random() * 600)  # closer, slots and prefix add at most ~70 characters
        parts = [_pick(rng, self.p_openers)]
        own = list(answers)
        rng.shuffle(own)
        parts.append("，".join(own[: 1 + int(rng.random() * len(own))]) + "。")
        middles = list(self.p_middles)
        rng.shuffle(middles)
        extra = list(concerns)
        size = sum(map(len, parts))
        while size < target and (middles or extra):
            part = extra.pop() + "。" if extra and rng.random() < 0.3 else (middles.pop() if middles else "")
            if not part:
                part = extra.pop() + "。"
            if size + len(part) > target and size >= 300:
                break
            parts.append(part)
            size += len(part)
        parts.append(_pick(rng, self.p_closers))
        return "".join(parts)

    def consultant(
        self, text: str, stage: str, voice: ConsultantVoice, rng: random.Random, prefix: bool = True
    ) -> str:
        """A filled consultant line in this consultant's phrasing."""
        text = _replace_some(text, self.c_synonyms, voice.synonym_rate, rng)
        if voice.casual:
            text = text.replace("您", "你")
        if prefix and stage not in ("greet", "close") and rng.random() < voice.prefix_rate:
            lead = _pick(rng, self.c_casual_prefixes if voice.casual else self.c_prefixes)
            if not text.startswith(lead[:2]):
                text = lead + text
        if rng.random() < voice.ending_rate and text[-1:] in "。！":
            text = text[:-1] + _pick(rng, voice.endings)
        return text
