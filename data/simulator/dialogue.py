"""The conversation simulator: a visitor with latent traits meets a consultant with a skill.

Each conversation is played out turn by turn. The consultant follows (or skips)
the playbook steps, answers questions and concerns well or badly, and asks for
contact details at a good moment or too often. The visitor opens, answers,
raises questions and concerns from a personal agenda, hesitates, leaves contact
details, agrees a time, or drops out. Booking and arrival probabilities are then
computed from the latents and from what happened (see :mod:`outcome`).

Every conversation draws from its own ``random.Random`` seeded from
``(seed, index)``, so a record does not depend on which worker made it.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from typing import Any

from yuyue.data.simulator.bank import PhraseBank, load_bank
from yuyue.data.simulator.clock import appointment_slots, draw_start, iso
from yuyue.data.simulator.outcome import (
    ChatEvents,
    arrival_probability,
    booking_probability,
    consultant_grade,
)
from yuyue.data.simulator.spelling import (
    Typist,
    id_card_number,
    order_number,
    phone_number,
    qq_number,
    spell_phone,
    wechat_id,
)
from yuyue.data.simulator.variety import Variety
from yuyue.data.simulator.visit import LOCALITIES, VisitBuilder

# Shares of local / same-province / neighbouring / far visitors per department.
_LOCALITY_WEIGHTS = {
    "整形美容": (0.50, 0.22, 0.18, 0.10),
    "男科": (0.62, 0.20, 0.12, 0.06),
    "妇科": (0.64, 0.20, 0.11, 0.05),
    "口腔": (0.72, 0.16, 0.08, 0.04),
    "皮肤科": (0.64, 0.20, 0.11, 0.05),
    "眼科": (0.58, 0.22, 0.13, 0.07),
    "肝病": (0.45, 0.25, 0.18, 0.12),
}
_DEPT_SHORT = {"整形美容": "整形", "男科": "男科", "妇科": "妇科", "口腔": "口腔科", "肝病": "肝病科"}
# Which stage a consultant's answer to a visitor question belongs to.
_ASK_STAGE = {
    "price": "resolve_concern",
    "address": "directions",
    "time": "book",
    "doctor": "recommend_expert",
    "insurance": "resolve_concern",
}
_MAX_MESSAGES = 140
# How readily visitors of a department leave contact details (privacy matters more in 男科/妇科).
_CONTACT_WILLINGNESS = {
    "整形美容": 0.25, "男科": -0.4, "妇科": -0.15, "口腔": 0.15, "皮肤科": 0.1, "眼科": 0.2, "肝病": -0.1,
}  # fmt: skip
_PRIVATE = ("男科", "妇科", "肝病")  # departments whose visitors worry about privacy
_INSURED = ("男科", "妇科", "口腔", "眼科", "肝病", "皮肤科")  # where visitors ask about insurance
_FOLLOW_UPS = (
    ("concern", "safety"), ("concern", "recovery"), ("ask", "price"), ("ask", "time"), ("ask", "doctor"),
    ("concern", "price"),
)  # fmt: skip


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def conversation_seed(seed: int, index: int) -> int:
    """The per-conversation RNG seed for conversation ``index`` of a run with ``seed``."""
    return ((seed % (1 << 64)) << 40) | (index % (1 << 40))


class ConversationSimulator:
    """Generates contract records; one instance per process, reused for every conversation."""

    def __init__(
        self,
        bank: PhraseBank | None = None,
        *,
        city: str | None = None,
        province: str | None = None,
        hospital_code: str | None = None,
        variant: str = "default",
    ):
        if city is None or province is None:
            from yuyue.config.settings import Settings

            settings = Settings()
            city = city or settings.hospital_city
            province = province or settings.hospital_province
        self.bank = bank or load_bank(variant=variant)
        self.variant = self.bank.variant
        self.id_prefix = "sim" if self.variant == "default" else f"sim{self.variant[:5]}"
        self.variety = Variety(self.bank.variety)
        self.city, self.province = city, province
        self.visits = VisitBuilder(self.bank, city, province)
        self.typist = Typist(self.bank.style, self.bank.visitor["filler"])
        hosp = self.bank.world["hospital"]
        self.hospital = hosp
        self.hospital_code = hospital_code or hosp["code"]
        self.landline_area = str(hosp["landline"]).split("-", 1)[0]
        shifts = self.bank.world.get("outcome") or {}
        self.book_shift = float(shifts.get("book_shift", 0.0))
        self.arrive_shift = float(shifts.get("arrive_shift", 0.0))
        self.by_department = {d.name: self.bank.consultants_for(d.name) for d in self.bank.departments}
        self.surnames = tuple(self.bank.style["surnames"])
        self.stems = tuple(self.bank.style["id_stems"])
        id_regions = self.bank.world["id_regions"]
        self.id_local = tuple(id_regions.get(city, id_regions["other"]))
        self.id_other = tuple(id_regions["other"])

    def conversation(self, seed: int, index: int) -> dict[str, Any]:
        """Conversation ``index`` of the run with ``seed``, as a plain contract dict."""
        return _Chat(self, random.Random(conversation_seed(seed, index)), seed, index).play()


class _Chat:
    """One conversation being played out."""

    when: tuple[str, int, int] | None  # the visit time agreed (label, start hour, end hour)

    def __init__(self, sim: ConversationSimulator, rng: random.Random, seed: int, index: int):
        self.sim = sim
        self.rng = rng
        self.seed = seed
        self.index = index
        self.V = sim.bank.visitor
        self.C = sim.bank.consultant
        self.msgs: list[list[Any]] = []  # [t, role, text, stage]
        self.entities: list[dict[str, Any]] = []
        self.ev = ChatEvents()
        self.ended = False
        self.expect: str | None = None  # what the consultant's last message asked for
        self.last_bad = False
        self.pushy_ask = False
        self.contact_kinds: set[str] = set()
        self.carry: tuple[str, str] | None = None  # a short consultant line run into the next one
        self.extra: tuple[str, str] | None = None  # a second question asked in the same message

    # -- small helpers --------------------------------------------------------------------------

    def pick(self, seq: Any) -> Any:
        return seq[int(self.rng.random() * len(seq))]

    def _add(self, role: str, text: str, stage: str | None, gap: float | None = None) -> int:
        rng = self.rng
        if self.carry is not None:
            carried, carried_stage = self.carry
            self.carry = None
            if role == "consultant":  # one message doing two things; it is labelled by the second
                text = carried + text
            else:
                self._add("consultant", carried, carried_stage)
        if not self.msgs:
            t = self.t0
        else:
            prev_t, prev_role = self.msgs[-1][0], self.msgs[-1][1]
            if gap is None:
                n = len(text)
                if role == "visitor":
                    if prev_role == "visitor":
                        gap = 2 + rng.expovariate(1 / 6) + 0.5 * n
                    else:
                        gap = 4 + rng.expovariate(1 / (10 + 30 * (1 - self.intent))) + 0.6 * n
                elif prev_role == "consultant":
                    gap = 1 + rng.expovariate(1 / 4) + 0.25 * n
                else:
                    gap = 3 + rng.expovariate(1 / (6 + 30 * (1 - self.skill))) + 0.2 * n
            t = prev_t + int(min(gap, 900))
        self.msgs.append([t, role, text, stage])
        return len(self.msgs) - 1

    def v(self, template: str, gap: float | None = None) -> int:
        """A visitor message from a template, in this visitor's typing style.

        Lines without planted data are sometimes sent in two parts, as people do.
        """
        rng = self.rng
        template = self.sim.variety.visitor(template, self.voice, rng)
        text = self.sim.typist.render(template, self.style, rng).format_map(self.slots)
        if "{" not in template and len(text) > 5 and rng.random() < self.split_rate:
            for sep in (" ", "，", ","):
                head, found, tail = text.partition(sep)
                if found and head and tail.strip():
                    self._add("visitor", head, None, gap)
                    return self._add("visitor", tail.strip(), None)
        return self._add("visitor", text, None, gap)

    def c(self, stage: str, parts: Any, gap: float | None = None) -> None:
        """A consultant message; a list is one answer split over consecutive messages."""
        rng = self.rng
        if self.msgs and self.msgs[-1][1] == "visitor" and rng.random() < self.cvoice.filler_rate:
            self._add("consultant", self.pick(self.sim.variety.fillers), stage, gap)
            gap = None
        if isinstance(parts, str):
            text = self._fill(parts, stage)
            if (
                stage in self.sim.variety.mergeable
                and len(text) <= (60 if stage == "resolve_concern" else 20)
                and self.carry is None
                and rng.random() < self.cvoice.merge_rate
            ):
                self.carry = (text, stage)
                return
            # long single answers get split at a comma by consultants who type in bursts
            if len(text) > 34 and "，" in text and rng.random() < 0.35:
                head, tail = text.split("，", 1)
                if tail:
                    self._add("consultant", head + "，", stage, gap)
                    self._add("consultant", tail, stage)
                    return
            self._add("consultant", text, stage, gap)
            return
        texts = [self._fill(p, stage, first=i == 0) for i, p in enumerate(parts)]
        if len(texts) > 1 and rng.random() < 0.2:
            texts = ["".join(texts)]
        for i, text in enumerate(texts):
            self._add("consultant", text, stage, gap if i == 0 else None)

    def _fill(self, template: str, stage: str, first: bool = True) -> str:
        text = template.format_map(self.slots)
        if not self.slots["addr"] and "{addr}" in template:  # no name yet: drop the empty address
            text = text.replace("，，", "，").replace("，。", "。").lstrip("，")
        if not text:
            return text
        return self.sim.variety.consultant(text, stage, self.cvoice, self.rng, prefix=first)

    def plant(self, index: int, kind: str, value: str) -> None:
        self.entities.append({"message": index, "type": kind, "value": value})

    # -- the people -------------------------------------------------------------------------------

    def _draw_people(self) -> None:
        rng, sim, bank = self.rng, self.sim, self.sim.bank
        self.dept = dept = bank.departments[
            bisect(bank.department_cum, rng.random() * bank.department_cum[-1])
        ]
        self.project = proj = dept.projects[bisect(dept.project_cum, rng.random() * dept.project_cum[-1])]
        self.consultant = cons = self.pick(sim.by_department[dept.name])
        self.skill, self.pushy = cons.skill, cons.pushy
        self.engine = sim.visits.draw_engine(rng)
        self.intent = _sigmoid(rng.gauss(0.0, 1.15) + sim.visits.engine_intent(self.engine))
        self.price_sens = rng.betavariate(2.0, 2.2)
        self.anxiety = min(1.0, rng.betavariate(2.0, 2.5) + (0.12 if proj.surgical else 0.0))
        self.urgency = min(0.98, max(0.02, proj.urgency + rng.gauss(0.0, 0.2)))
        self.chattiness = rng.betavariate(1.6, 2.2)
        self.split_rate = 0.04 + 0.3 * self.chattiness
        self.locality = rng.choices(LOCALITIES, _LOCALITY_WEIGHTS.get(dept.name, (0.6, 0.2, 0.12, 0.08)))[0]
        self.female = rng.random() < dept.female
        self.age = dept.age[0] + int(rng.random() * (dept.age[1] - dept.age[0] + 1))
        self.visits_before = min(9, int(rng.expovariate(1.0 / (0.1 + 1.4 * self.intent**2))))
        self.device = sim.visits.draw_device(rng, self.engine)
        self.kw_type = sim.visits.keyword_type(
            rng,
            self.engine,
            self.intent,
            self.price_sens,
            self.anxiety,
            self.urgency,
            dept,
            self.visits_before,
        )
        self.region = sim.visits.region(rng, self.locality)
        self.t0 = draw_start(rng)
        self.style = sim.typist.draw_style(rng)
        self.voice = sim.variety.visitor_voice(rng)
        self.cvoice = sim.variety.consultant_voice(rng)
        hosp = sim.hospital
        here = sim.variety.hospital(rng, sim.visits.city_short, dept.name, sim.landline_area)
        lo, hi = proj.price
        self.slots: dict[str, str] = {
            "addr": "",
            "hospital": here["hospital"],
            "hshort": here["hshort"],
            "cname": sim.variety.consultant_name(rng),
            "project": proj.name,
            "syn": self.pick(proj.synonyms) if rng.random() < 0.7 else proj.name,
            "dept": _DEPT_SHORT.get(dept.name, dept.name),
            "department": dept.name,
            "doctor": self.pick(dept.doctors),
            "price_lo": str(lo),
            "price_hi": str(hi),
            "recovery": proj.recovery,
            "address": here["address"],
            "metro": here["metro"],
            "station": hosp["station"],
            "landline": here["landline"],
            "landmark": here["landmark"],
            "region_city": sim.visits.region_city(self.region, self.locality, rng),
            "hcity": sim.visits.city_short,
            "when": "",
            "other_price": str(int(lo * (0.5 + 0.4 * rng.random())) // 100 * 100 or lo // 2),
        }

    def _agenda(self) -> list[tuple[str, str]]:
        """The questions and concerns this visitor will raise, in order."""
        rng, ps, anx, urg, intent = self.rng, self.price_sens, self.anxiety, self.urgency, self.intent
        dept, proj = self.dept.name, self.project
        items: list[tuple[float, tuple[str, str]]] = []

        def add(prio: float, item: tuple[str, str]) -> None:
            items.append((prio + 1.5 * rng.random(), item))

        if rng.random() < 0.3 + 0.55 * ps:
            add(0.0, ("ask", "price"))
            if rng.random() < 0.85 * ps:
                add(0.6, ("concern", "price"))
        if rng.random() < 0.08 + 0.3 * ps:
            add(1.0, ("compare", "compare"))
        if rng.random() < anx * (0.75 if proj.surgical else 0.35):
            add(1.0, ("concern", "safety"))
        if proj.surgical and rng.random() < anx * 0.6:
            add(1.2, ("concern", "pain"))
        if rng.random() < 0.12 + 0.3 * urg:
            add(1.4, ("concern", "recovery"))
        if dept == "整形美容" and rng.random() < 0.5 or proj.name == "牙齿矫正" and rng.random() < 0.3:
            add(1.2, ("concern", "effect"))
        if dept in _PRIVATE and rng.random() < 0.4:
            add(0.8, ("concern", "privacy"))
        if self.locality != "local" and rng.random() < 0.7:
            add(1.5, ("concern", "distance"))
        if rng.random() < 0.08 + 0.55 * intent:
            add(2.2, ("ask", "address"))
        if rng.random() < 0.08 + 0.3 * urg + 0.25 * intent:
            add(2.0, ("ask", "time"))
        if rng.random() < 0.2:
            add(1.5, ("ask", "doctor"))
        if rng.random() < (0.22 if dept in _INSURED else 0.06):
            add(1.6, ("ask", "insurance"))
        if rng.random() < 0.3 * intent + 0.15 * urg:
            add(2.8, ("propose_time", ""))
        if rng.random() < 0.12 * intent:
            add(3.0, ("volunteer_contact", ""))
        if rng.random() < 0.5 * self.chattiness:
            add(1.0, ("chitchat", ""))
        if rng.random() < 0.3:  # something off the consultant's script
            add(
                0.5 + 2.5 * rng.random(),
                ("offscript", str(int(rng.random() * len(self.sim.variety.offscript)))),
            )
        # chatty visitors come back to things and ask follow-up questions
        for _ in range(int(self.chattiness**2.5 * rng.random() * 30)):
            add(0.5 + 2.0 * rng.random(), self.pick(_FOLLOW_UPS))
        items.sort(key=lambda x: x[0])
        agenda = [it for _, it in items]
        if rng.random() < 0.1 + 0.6 * (1 - intent) ** 1.5:
            agenda.append(("hesitate", ""))
        return agenda

    def _playbook(self) -> list[str]:
        """The consultant's planned steps for this chat."""
        rng, s, p = self.rng, self.skill, self.pushy
        steps: list[str] = []

        def maybe(prob: float, step: str) -> None:
            if rng.random() < prob and (not steps or steps[-1] != step):
                steps.append(step)

        maybe(0.1 + 0.85 * s, "ask_name")
        maybe(0.9 * p, "contact")
        maybe(0.3 + 0.65 * s, "probe_status")
        maybe(0.05 + 0.6 * s, "probe_expectation")
        maybe(0.7 * p, "contact")
        maybe(0.45 + 0.5 * s, "explain_treatment")
        maybe(0.15 + 0.6 * s, "describe_outcome")
        maybe(0.6 * p, "contact")
        maybe(0.2 + 0.6 * s, "recommend_expert")
        maybe(0.3, "promotion")
        maybe(0.5 * p, "contact")
        maybe(0.3 + 0.65 * s, "book")
        maybe(0.35 + 0.6 * s + 0.3 * p, "contact")
        steps.append("directions")
        steps.append("close")
        return steps

    # -- the visitor ------------------------------------------------------------------------------

    @property
    def trust(self) -> float:
        ev = self.ev
        return (
            0.45 * (ev.concerns_resolved + ev.asks_answered)
            + 0.3 * ev.name_given
            - 0.55 * (ev.concerns_ignored + ev.asks_deflected)
            - 0.35 * max(0, ev.contact_asks - 1)
        )

    def _drops_out(self) -> bool:
        ev = self.ev
        h = (
            0.012
            + 0.09 * (1 - self.intent) ** 2
            + 0.12 * self.last_bad
            + 0.07 * self.pushy_ask * (ev.contact_asks > 1)
            + 0.05 * (ev.contact_refusals > 0)
        ) * (1.0 - 0.6 * self.chattiness)
        return self.rng.random() < h

    def _give_name(self) -> None:
        rng = self.rng
        surname = self.pick(self.sim.surnames)
        self.slots["surname"] = surname
        titles = ("女士", "姐", "小姐") if self.female else ("先生", "哥")
        title = self.pick(titles)
        self.slots["title"] = title
        form = self.V["name"]["titled" if rng.random() < 0.5 else "surname"]
        idx = self.v(self.pick(form))
        self.plant(idx, "surname", surname)
        self.ev.name_given = True
        self.slots["addr"] = surname + (
            title if title in ("姐", "哥") else ("女士" if self.female else "先生")
        )

    def _give_contact(self) -> None:
        rng, V = self.rng, self.V["contact"]
        r = rng.random()
        qq_share = 0.16 if self.dept.name == "男科" else 0.07
        if r < qq_share:
            qq = qq_number(rng)
            self.slots["qq"] = qq
            self.plant(self.v(self.pick(V["qq"])), "qq", qq)
            kind = "qq"
        elif r < qq_share + 0.3:
            if rng.random() < 0.2:
                phone = phone_number(rng)
                self.slots["phone"] = spell_phone(phone, rng)
                self.plant(self.v(self.pick(V["wechat_phone"])), "phone", phone)
                kind = "phone"
            else:
                wx = wechat_id(rng, self.sim.stems)
                self.slots["wechat"] = wx
                self.plant(self.v(self.pick(V["wechat"])), "wechat", wx)
                kind = "wechat"
        else:
            phone = phone_number(rng)
            self.slots["phone"] = spell_phone(phone, rng)
            if not self.ev.name_given and rng.random() < 0.25:
                surname = self.pick(self.sim.surnames)
                self.slots["surname"] = surname
                self.slots["title"] = "女士" if self.female else "先生"
                idx = self.v(self.pick(V["phone_named"]))
                self.plant(idx, "phone", phone)
                self.plant(idx, "surname", surname)
                self.ev.name_given = True
                self.slots["addr"] = surname + self.slots["title"]
            else:
                self.plant(self.v(self.pick(V["phone"])), "phone", phone)
            kind = "phone"
        self.contact_kinds.add(kind)
        if kind == "phone" and rng.random() < 0.08:  # and a WeChat id as well
            wx = wechat_id(rng, self.sim.stems)
            self.slots["wechat"] = wx
            self.plant(self.v(self.pick(V["wechat"])), "wechat", wx)
        self.ev.contact = True

    def _maybe_lookalike(self, kind: str, prob: float) -> None:
        if self.rng.random() >= prob:
            return
        rng = self.rng
        if kind == "age":
            self.slots["age"] = str(self.age)
        elif kind == "date":
            self.slots["date"] = iso(self.t0 + 86400 * int(rng.random() * 40) - 86400 * 20)[:10]
        elif kind == "price":
            lo, hi = self.project.price
            self.slots["price"] = str((lo + int(rng.random() * (hi - lo))) // 100 * 100 or lo)
        elif kind == "order":
            self.slots["order"] = order_number(rng)
        self.v(self.pick(self.V["lookalike"][kind]))

    def _react(self) -> tuple[str, str] | None:
        """The visitor's turn after the consultant: answer, raise something, or drop out."""
        if self.ended:
            return None
        rng, V = self.rng, self.V
        if self._drops_out():
            self._dropout()
            return None
        expect, self.expect = self.expect, None
        follow: tuple[str, str] | None = None
        if expect == "which":
            self.v(self.pick(V["open_project"]))
            self.project_known = True
        elif expect == "name":
            if rng.random() < 0.5 + 0.4 * self.intent:
                self._give_name()
                if rng.random() < 0.6:
                    follow = ("ack_name", "")
            elif rng.random() < 0.5:
                self.v(self.pick(V["name"]["refuse"]))
                follow = ("no_name", "")
        elif expect == "status":
            proj = self.project
            first = self.pick(proj.status_a)
            if rng.random() < 0.04 + 0.12 * self.anxiety:  # pastes a long description of the situation
                concerns = [self.pick(V["concern"][k]) for k in ("safety", "recovery", "price")]
                first = self.sim.variety.pasted(rng, proj.status_a, concerns)
            self.v(first)
            self._maybe_lookalike("age", 0.2)
            if rng.random() < self.chattiness * 0.6:
                second = self.pick(proj.status_a)
                if second != first:
                    self.v(second)
        elif expect == "expect":
            self.v(self.pick(self.project.expect_a))
        elif expect == "contact":
            return self._answer_contact()
        elif expect == "book":
            return self._answer_time()
        if follow:
            return follow
        raising = bool(self.agenda) and rng.random() < 0.5 + 0.35 * self.chattiness
        if expect == "bad" and rng.random() < 0.55:
            self.v(self.pick(V["unresolved"]))
        elif expect == "good" and rng.random() < (0.15 if raising else 0.5):
            if not (raising and self.agenda[0][0] in ("concern", "compare", "hesitate")):
                self.v(self.pick(V["resolved"]))
        # raise the next thing on the agenda, or just acknowledge
        if raising:
            return self._raise(self.agenda.pop(0))
        if expect is None and rng.random() < 0.45:
            self.v(self.pick(V["ack"]) if rng.random() < 0.4 else self.sim.variety.ack(rng))
        return None

    def _raise(self, item: tuple[str, str]) -> tuple[str, str] | None:
        kind, key = item
        V, rng = self.V, self.rng
        if kind == "hesitate" and self.ev.time_agreed:
            return None
        if kind == "propose_time" and self.ev.time_agreed:
            return None
        if kind == "offscript":
            self.v(self.pick(self.sim.variety.offscript[int(key)]["q"]))
            return item
        self.ev.raised.append(key or kind)
        if kind in ("ask", "concern"):
            line = self.pick(V[kind][key])
            nxt = self.agenda[0] if self.agenda else None
            if nxt and nxt[0] in ("ask", "concern") and nxt != item and rng.random() < 0.2:
                self.agenda.pop(0)  # asks two things in one message
                self.ev.raised.append(nxt[1])
                line = self.sim.variety.join(line, self.pick(V[nxt[0]][nxt[1]]), rng)
                self.extra = nxt
            self.v(line)
        elif kind == "compare":
            self.v(self.pick(V["compare"]))
            self.ev.compared = True
        elif kind == "propose_time":
            when = self.pick(appointment_slots(self.msgs[-1][0]))
            self.when = when
            self.slots["when"] = when[0]
            self.v(self.pick(V["time"]["propose"]))
            self.ev.time_proposed += 1
        elif kind == "volunteer_contact":
            self.v(self.pick(V["contact"]["volunteer"]))
        elif kind == "chitchat":
            self.v(self.pick(V["chitchat"]))
            if rng.random() < 0.6:  # comes back a while later
                self._add(
                    "visitor",
                    self.sim.typist.render(self.pick(V["ack"]), self.style, rng),
                    None,
                    gap=40 + rng.expovariate(1 / 120),
                )
            return None
        elif kind == "hesitate":
            self.v(self.pick(V["hesitate"]))
            self.ev.hesitated = True
        return item

    def _answer_contact(self) -> tuple[str, str] | None:
        rng, ev = self.rng, self.ev
        privacy_worry = "privacy" in ev.raised and ev.concerns_ignored > 0
        p = _sigmoid(
            -0.45
            + _CONTACT_WILLINGNESS.get(self.dept.name, 0.0)
            + 3.2 * (self.intent - 0.5)
            + 0.6 * self.trust
            + 1.3 * ev.time_agreed
            + 0.5 * (not self.pushy_ask)
            - 0.9 * privacy_worry
            - 0.7 * ev.contact_refusals
        )
        if rng.random() < p:
            self._give_contact()
            return ("contact_thanks", "")
        ev.contact_refusals += 1
        if rng.random() < 0.75:
            self.v(self.pick(self.V["contact"]["refuse"]))
            return ("contact_refused", "")
        return None  # just does not answer that

    def _answer_time(self) -> tuple[str, str] | None:
        rng, ev = self.rng, self.ev
        far = {"local": 0.0, "province": 0.4, "neighbor": 0.8, "far": 1.4}[self.locality]
        p = _sigmoid(
            -0.7
            + 3.6 * (self.intent - 0.5)
            + 1.8 * (self.urgency - 0.5)
            + 0.35 * self.trust
            - far
            - 0.8 * ev.hesitated
        )
        T = self.V["time"]
        if rng.random() < p:
            if rng.random() < 0.3:
                self.when = self.pick(appointment_slots(self.msgs[-1][0]))
                self.slots["when"] = self.when[0]
                self.v(self.pick(T["propose"]))
            else:
                self.v(self.pick(T["accept"]))
            return ("confirm_time", "")
        self.v(self.pick(T["decline"] if rng.random() < 0.6 else self.V["hesitate"]))
        self._maybe_lookalike("date", 0.08)
        return ("later", "")

    def _dropout(self) -> None:
        """The visitor stops answering; the consultant may try once or twice more."""
        rng = self.rng
        self.ev.dropout = True
        if rng.random() < 0.7:
            self.c("close", self.pick(self.C["follow_up"]), gap=60 + rng.expovariate(1 / 120))
            if rng.random() < self.pushy * 0.6 and not self.ev.contact:
                self.c(
                    "collect_contact",
                    self.pick(self.C["collect_contact"]["pushy"]),
                    gap=30 + rng.expovariate(1 / 90),
                )
        self.ended = True

    # -- the consultant ---------------------------------------------------------------------------

    def _handle(self, item: tuple[str, str]) -> None:
        """The consultant's answer to something the visitor raised (or to an answer)."""
        kind, key = item
        rng, C, ev, s = self.rng, self.C, self.ev, self.skill
        self.last_bad = False
        if kind == "ask":
            good = rng.random() < (0.3 + 0.65 * s if key == "price" else 0.5 + 0.5 * s)
            bank = C["answer"][key]
            self.c(_ASK_STAGE[key], self.pick(bank["good" if good else "bad"]))
            if good:
                ev.asks_answered += 1
                ev.directions_given |= key == "address"
            else:
                ev.asks_deflected += 1
                self.last_bad = True
            self.expect = "good" if good else "bad"
        elif kind in ("concern", "compare"):
            ev.concerns_raised += 1
            good = rng.random() < 0.12 + 0.85 * s
            if good:
                self.c("resolve_concern", self.pick(C["resolve_concern"][key]["good"]))
                stubborn = 0.45 * self.price_sens if key in ("price", "compare") else 0.08
                if rng.random() >= stubborn:
                    ev.concerns_resolved += 1
                    self.expect = "good"
                else:
                    ev.price_unresolved |= key in ("price", "compare")
                    self.expect = "bad"
                    if self.rng.random() < 0.5:
                        self.agenda.insert(0, ("hesitate", ""))
            else:
                ev.concerns_ignored += 1
                ev.price_unresolved |= key in ("price", "compare")
                self.last_bad = True
                if rng.random() < 0.55:
                    self.c("resolve_concern", self.pick(C["resolve_concern"][key]["bad"]))
                    self.expect = "bad"
                else:  # ignores it and carries on with the script
                    self._next_step()
        elif kind == "offscript":
            q = self.sim.variety.offscript[int(key)]
            self.c(q["stage"], self.pick(q["a"]))
        elif kind == "propose_time":
            self._confirm_time()
        elif kind == "confirm_time":
            self._confirm_time()
        elif kind == "later":
            if rng.random() < 0.4 + 0.5 * s:
                self.c("book", self.pick(C["book"]["later"]))
            if "book" in self.steps:
                self.steps.remove("book")
        elif kind == "volunteer_contact":
            self.c("collect_contact", self.pick(C["collect_contact"]["send_it"]))
            self._give_contact()
            self.c("collect_contact", self.pick(C["collect_contact"]["thanks"]))
        elif kind == "contact_thanks":
            self.c("collect_contact", self.pick(C["collect_contact"]["thanks"]))
            if ev.time_agreed and rng.random() < 0.1:
                self._volunteer_id()
        elif kind == "contact_refused":
            if self.pushy < 0.5 or rng.random() < 0.3:
                self.c("collect_contact", self.pick(C["collect_contact"]["respect_refusal"]))
            else:
                self._next_step()
        elif kind == "ack_name":
            self.c("greet", self.pick(C["greet"]["ack_name"]))
        elif kind == "no_name":
            self.c("greet", self.pick(C["greet"]["ack_no_name"]))
        elif kind == "hesitate":
            if not ev.contact and (rng.random() < 0.4 + 0.5 * self.pushy):
                self._step("contact")
                if self.expect == "contact":
                    follow = self._react()
                    if follow and follow[0] in ("contact_thanks", "contact_refused"):
                        self._handle(follow)
            else:
                self.c("book", self.pick(C["book"]["later"]))
            if not self.ended:
                self._finish()

    def _volunteer_id(self) -> None:
        rng = self.rng
        region = self.pick(self.sim.id_local if self.locality == "local" else self.sim.id_other)
        number = id_card_number(rng, region, 2025 - self.age, self.female)
        self.slots["idcard"] = number if rng.random() < 0.8 else number.lower()
        self.plant(self.v(self.pick(self.V["id_card"])), "id_card", number)
        self.c("book", self.pick(self.C["book"]["id_reply"]))

    def _confirm_time(self) -> None:
        self.ev.time_agreed = True
        self.c("book", self.pick(self.C["book"]["confirm"]))
        if "book" in self.steps:
            self.steps.remove("book")

    def _next_step(self) -> None:
        while self.steps and not self.ended:
            if self._step(self.steps.pop(0)):
                return

    def _step(self, step: str) -> bool:
        """Run one playbook step; False when it does not apply now."""
        rng, C, ev, s = self.rng, self.C, self.ev, self.skill
        proj, dept = self.project, self.dept
        if step == "ask_name":
            if ev.name_given:
                return False
            self.c("greet", self.pick(C["greet"]["ask_name"]))
            self.expect = "name"
        elif step == "contact":
            if ev.contact or (self.pushy < 0.5 and ev.contact_refusals and not ev.time_agreed):
                return False
            early = not (ev.time_agreed or ev.concerns_resolved + ev.asks_answered >= 1)
            self.pushy_ask = early or rng.random() < self.pushy * 0.5
            bank = C["collect_contact"]["pushy" if self.pushy_ask else "good"]
            self.c("collect_contact", self.pick(bank))
            ev.contact_asks += 1
            self.expect = "contact"
        elif step == "probe_status":
            r = rng.random()
            pool = (
                proj.status_q if r < 0.7 else (dept.probe_status if r < 0.9 else C["probe_status"]["generic"])
            )
            self.c("probe_status", self.pick(pool or C["probe_status"]["generic"]))
            self.expect = "status"
        elif step == "probe_expectation":
            pool = proj.expect_q if rng.random() < 0.8 else C["probe_expectation"]["generic"]
            self.c("probe_expectation", self.pick(pool or C["probe_expectation"]["generic"]))
            self.expect = "expect"
        elif step == "explain_treatment":
            if rng.random() < 0.3:
                self.c("explain_treatment", self.pick(C["explain_treatment"]["intro"]))
            self.c("explain_treatment", list(self.pick(proj.treatment)))
        elif step == "describe_outcome":
            self.c("describe_outcome", self.pick(proj.outcome or C["describe_outcome"]["generic"]))
        elif step == "recommend_expert":
            self.c("recommend_expert", list(self.pick(C["recommend_expert"])))
        elif step == "promotion":
            self.c("promotion", self.pick(C["promotion"]))
        elif step == "book":
            if ev.time_agreed:
                return False
            slots = appointment_slots(self.msgs[-1][0])
            self.when = slots[0] if self.urgency > 0.7 and rng.random() < 0.5 else self.pick(slots)
            self.slots["when"] = self.when[0]
            self.c("book", self.pick(C["book"]["propose"]))
            ev.time_proposed += 1
            self.expect = "book"
        elif step == "directions":
            if not (ev.time_agreed or rng.random() < 0.15 * s) or ev.directions_given:
                return False
            local = self.locality == "local"
            self.c("directions", list(self.pick(C["directions"]["local" if local else "remote"])))
            ev.directions_given = True
        elif step == "close":
            self._finish()
        return True

    def _finish(self) -> None:
        rng = self.rng
        if rng.random() < 0.5:
            self.v(self.pick(self.V["goodbye"]))
        if rng.random() < 0.85:
            self.c("close", self.pick(self.C["close"]))
        if rng.random() < 0.2:
            self.v(self.pick(self.V["goodbye"]))
        self.ended = True

    # -- the whole chat ---------------------------------------------------------------------------

    def _opening(self) -> tuple[str, str] | None:
        rng, V, C = self.rng, self.V, self.C
        consultant_first = rng.random() < 0.55
        if consultant_first:
            self.c("greet", self.pick(C["greet"]["hello"]))
        vague = rng.random() < 0.15
        pending: tuple[str, str] | None = None
        if rng.random() < (0.15 if consultant_first else 0.45):
            self.v(self.pick(V["greeting"]))
        if vague:
            self.v(self.pick(V["open_vague"]))
            self.project_known = False
        elif self.agenda and self.agenda[0] == ("ask", "price") and rng.random() < 0.6:
            self.v(self.pick(V["open_project_price"]))
            self.agenda.pop(0)
            self.ev.raised.append("price")
            pending = ("ask", "price")
        else:
            self.v(self.pick(V["open_project"]))
        self._maybe_lookalike("order", 0.03)
        if rng.random() < 0.05 + 0.3 * (1 - self.intent) ** 2:  # leaves almost at once
            self.ev.bounced = True
            if not consultant_first or rng.random() < 0.5:
                self.c(
                    "greet",
                    self.pick(C["greet"]["hello"] if not consultant_first else C["greet"]["ask_name"]),
                )
            if rng.random() < 0.35:
                self.v(self.pick(V["bounce"]))
            if rng.random() < 0.5:
                self.c("close", self.pick(C["follow_up"]), gap=60 + rng.expovariate(1 / 120))
            self.ended = True
            return None
        if not consultant_first and rng.random() < 0.6:
            self.c("greet", self.pick(C["greet"]["hello"]))
        if vague:
            self.c("probe_status", self.pick(C["probe_status"]["which"]))
            self.expect = "which"
            return self._react()
        return pending

    def play(self) -> dict[str, Any]:
        self._draw_people()
        self.agenda = self._agenda()
        self.steps = self._playbook()
        self.project_known = True
        self.when = None
        pending = self._opening()
        self.extra = None
        while not self.ended and len(self.msgs) < _MAX_MESSAGES:
            if pending:
                self._handle(pending)
                pending = None
                if self.extra is not None and not self.ended:
                    extra, self.extra = self.extra, None
                    self._handle(extra)
            elif self.steps == ["close"] and self.agenda:
                # the consultant has said everything; the visitor still has questions
                pending = self._raise(self.agenda.pop(0))
                continue
            elif self.steps:
                self._next_step()
            else:
                self._finish()
            if not self.ended:
                pending = self._react()
        return self._record()

    def _record(self) -> dict[str, Any]:
        rng, ev, sim = self.rng, self.ev, self.sim
        if self.carry is not None:
            text, stage = self.carry
            self.carry = None
            self._add("consultant", text, stage)
        messages = []
        for t, role, text, stage in self.msgs:
            m = {"at": iso(t), "role": role, "text": text}
            if stage:
                m["stage"] = stage
            messages.append(m)
        t_end = self.msgs[-1][0]
        p_book = round(
            booking_probability(
                intent=self.intent,
                urgency=self.urgency,
                price_sens=self.price_sens,
                locality=self.locality,
                department=self.dept.name,
                skill=self.skill,
                visits_before=self.visits_before,
                ev=ev,
                shift=sim.book_shift,
            ),
            6,
        )
        p_agb = round(
            arrival_probability(
                intent=self.intent,
                urgency=self.urgency,
                price_sens=self.price_sens,
                locality=self.locality,
                skill=self.skill,
                visits_before=self.visits_before,
                ev=ev,
                shift=sim.arrive_shift,
            ),
            6,
        )
        booked = rng.random() < p_book
        outcome: dict[str, Any] = {"contact": ev.contact, "booked": booked, "arrived": False}
        if booked:
            booked_t = t_end if ev.time_agreed else t_end + 600 + int(rng.expovariate(1 / 86400))
            outcome["booked_at"] = iso(min(booked_t, t_end + 20 * 86400))
            if rng.random() < 0.05:
                outcome["arrived"] = None
            else:
                arrived = rng.random() < p_agb
                outcome["arrived"] = arrived
                if arrived:
                    if ev.time_agreed and self.when:
                        _, a, b = self.when
                        at = a + int(rng.random() * max(1, b - a))
                    else:
                        day = booked_t - booked_t % 86400 + 86400 * (1 + int(rng.random() * 10))
                        at = day + 9 * 3600 + int(rng.random() * 8 * 3600)
                    outcome["arrived_at"] = iso(max(at, t_end))
        dept, proj = self.dept, self.project
        record: dict[str, Any] = {
            "conversation_id": f"{sim.id_prefix}{self.seed}-{self.index:07d}",
            "hospital": sim.hospital_code,
            "department": dept.name,
        }
        if self.project_known and rng.random() >= 0.04:
            record["project"] = proj.name
        record["consultant_id"] = self.consultant.id
        record["started_at"] = messages[0]["at"]
        record["visit"] = sim.visits.build(
            rng,
            t0=self.msgs[0][0],
            engine=self.engine,
            device=self.device,
            kw_type=self.kw_type,
            dept=dept,
            project=proj,
            intent=self.intent,
            price_sens=self.price_sens,
            anxiety=self.anxiety,
            locality=self.locality,
            visits_before=self.visits_before,
            region=self.region,
        )
        record["messages"] = messages
        record["outcome"] = outcome
        if rng.random() < 0.6:
            record["grade"] = consultant_grade(ev, len(messages))
        record["truth"] = {
            "p_book": p_book,
            "p_arrive": round(p_book * p_agb, 6),
            "p_arrive_given_booked": p_agb,
            "latents": {
                "intent": round(self.intent, 4),
                "price_sensitivity": round(self.price_sens, 4),
                "urgency": round(self.urgency, 4),
                "anxiety": round(self.anxiety, 4),
                "chattiness": round(self.chattiness, 4),
                "locality": self.locality,
                "female": self.female,
                "age": self.age,
                "project": proj.name,
                "keyword_type": self.kw_type,
                "consultant_skill": self.skill,
                "consultant_pushy": self.pushy,
            },
            "events": ev.as_dict(),
            "entities": self.entities,
        }
        return record
