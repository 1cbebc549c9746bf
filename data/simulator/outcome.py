"""How a simulated chat turns into probabilities of booking and arriving.

The probabilities depend on the visitor's latent traits *and* on what happened in
the chat (contact left, concerns answered or brushed off, a time agreed, dropout),
so most of what drives them is visible in the conversation and the visit trace.
The outcome draw on top of ``p_book`` is the only other noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

LOCALITY_BOOK = {"local": 0.0, "province": -0.35, "neighbor": -0.7, "far": -1.3}
LOCALITY_ARRIVE = {"local": 0.0, "province": -0.45, "neighbor": -0.8, "far": -1.3}
DEPARTMENT_BOOK = {
    "整形美容": -0.35, "男科": 0.0, "妇科": 0.35, "口腔": 0.2, "皮肤科": 0.0, "眼科": 0.05, "肝病": 0.2,
}  # fmt: skip


@dataclass
class ChatEvents:
    """What happened in one simulated chat (the simulator's bookkeeping)."""

    bounced: bool = False  # left right after opening
    dropout: bool = False  # stopped answering mid-chat
    name_given: bool = False
    contact: bool = False
    contact_asks: int = 0
    contact_refusals: int = 0
    asks_answered: int = 0
    asks_deflected: int = 0
    concerns_raised: int = 0
    concerns_resolved: int = 0
    concerns_ignored: int = 0
    price_unresolved: bool = False
    hesitated: bool = False
    compared: bool = False
    time_proposed: int = 0
    time_agreed: bool = False
    directions_given: bool = False
    raised: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "raised"} | {"raised": list(self.raised)}


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def booking_probability(
    *,
    intent: float,
    urgency: float,
    price_sens: float,
    locality: str,
    department: str,
    skill: float,
    visits_before: int,
    ev: ChatEvents,
    shift: float = 0.0,
) -> float:
    """Probability that the visitor books, given the latents and the chat.

    ``shift`` moves the log-odds of every chat (a world with more or fewer bookings).
    """
    z = (
        -2.4
        + shift
        + 2.0 * (intent - 0.5)
        + 1.1 * (urgency - 0.5)
        + DEPARTMENT_BOOK.get(department, 0.0)
        + LOCALITY_BOOK[locality]
        + 0.6 * (skill - 0.5)
        + 0.25 * min(visits_before, 3)
        + 1.5 * ev.time_agreed
        + 0.9 * ev.contact
        + 0.3 * min(ev.concerns_resolved + ev.asks_answered, 4)
        - 0.45 * min(ev.concerns_ignored + ev.asks_deflected, 3)
        - 0.8 * ev.price_unresolved * price_sens
        - 0.6 * (ev.hesitated and not ev.time_agreed)
        - 0.35 * min(ev.contact_refusals, 2)
        - 1.0 * ev.bounced
        - 0.6 * ev.dropout
    )
    return min(0.98, max(0.002, _sigmoid(z)))


def arrival_probability(
    *,
    intent: float,
    urgency: float,
    price_sens: float,
    locality: str,
    skill: float,
    visits_before: int,
    ev: ChatEvents,
    shift: float = 0.0,
) -> float:
    """Probability that a booked visitor comes to the hospital (``shift`` as for booking)."""
    z = (
        0.05
        + shift
        + 1.8 * (intent - 0.5)
        + 0.9 * (urgency - 0.5)
        + LOCALITY_ARRIVE[locality]
        + 0.5 * (skill - 0.5)
        + 0.15 * min(visits_before, 2)
        + 0.5 * ev.time_agreed
        + 0.35 * ev.directions_given
        + 0.3 * ev.contact
        - 0.6 * ev.price_unresolved * price_sens
        - 0.4 * ev.dropout
    )
    return min(0.97, max(0.03, _sigmoid(z)))


def consultant_grade(ev: ChatEvents, n_messages: int) -> str:
    """The consultant's own grade of the chat (极佳/较好/一般), from what is visible in it."""
    if ev.contact and ev.time_agreed:
        return "极佳"
    if ev.contact or ev.time_agreed or (n_messages >= 14 and ev.concerns_resolved + ev.asks_answered >= 2):
        return "较好"
    return "一般"
