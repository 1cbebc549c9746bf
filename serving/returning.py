"""The returning-visitor signal: how many earlier chats the store links to a new chat's visitor.

When a chat opens, its visitor id is looked up (by its keyed hash, as serving/patients.py links chats)
among the patients the store knows. The earlier chats of that patient raise the visit trace's
``visits_before`` (never lower it: the chat tool's own count may know more), so the scorers read
``visit.returning`` / ``visit.visits_before`` from it, and the stored visit (hence the export and the
next model's training data) carries it too. A visitor linked only later in the chat (by a phone left in
a message) counts from their next chat on: the score of a chat never depends on a lookup made after
it opened.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from yuyue.data.contract import Visit
from yuyue.serving.patients import Patients, identifiers, patient_chats, patient_keys, patients
from yuyue.serving.store import conversations

MAX_VISITS_BEFORE = 1000  # the contract has no upper bound; the feature caps at 10 anyway


class ReturningVisitors:
    """``enrich(visit, started)``: the visit with ``visits_before`` raised to the linked earlier chats."""

    def __init__(self, patients_: Patients):
        self.patients = patients_

    def earlier_chats(self, visitor_id: str, before: datetime) -> int:
        """Chats of the patient ``visitor_id`` links to that started before ``before`` (0: unknown)."""
        hashes = [self.patients.hash(k, v) for k, v in identifiers("visitor", visitor_id)]
        if not hashes:
            return 0
        k, p, pc, c = patient_keys.c, patients.c, patient_chats.c, conversations.c
        with self.patients.engine.connect() as cx:
            owner = cx.execute(
                sa.select(sa.func.coalesce(p.merged_into, p.id))
                .select_from(patient_keys.join(patients, p.id == k.patient_id))
                .where(k.key_hash.in_(hashes))
            ).scalar()
            if owner is None:
                return 0
            same = sa.select(p.id).where(sa.or_(p.id == owner, p.merged_into == owner))
            n = cx.execute(
                sa.select(sa.func.count())
                .select_from(patient_chats.join(conversations, c.id == pc.conversation_id))
                .where(pc.patient_id.in_(same), c.started_at < before)
            ).scalar()
        return min(int(n or 0), MAX_VISITS_BEFORE)

    def enrich(self, visit: Visit | None, started: datetime) -> Visit | None:
        if visit is None or not visit.visitor_id:
            return visit
        n = self.earlier_chats(visit.visitor_id, started)
        if n <= (visit.visits_before or 0):
            return visit
        return visit.model_copy(update={"visits_before": n})


def install(state: object) -> ReturningVisitors:
    """Hook the lookup into the service's chat opening (``state.service``, ``state.desk``)."""
    returning = ReturningVisitors(state.desk.patients)  # type: ignore[attr-defined]
    state.service.visit_hooks.append(returning.enrich)  # type: ignore[attr-defined]
    return returning


__all__ = ["ReturningVisitors", "install"]
