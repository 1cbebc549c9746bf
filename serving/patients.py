"""Patients (issue 16): a returning visitor's chats linked together, their history and the flag rule.

Linking. A chat is linked to a patient by what identifies its visitor: the phones, WeChat ids, QQ
numbers and e-mail addresses the visitor wrote in it (detected by ``features/pii.py``, as the live
view detects them) and the visit's ``visitor_id``. Each is normalised (a phone to its 11 digits
without country code, a WeChat id or e-mail to lower case; a WeChat or QQ id that is a mobile number
also counts as that phone) and stored only as a keyed hash, ``HMAC-SHA256(patient key,
"<kind>:<value>")``: the raw number is never stored here, and without the key a dump of the table
cannot be matched against the 10^10 possible phone numbers. The key is the ``patient_key`` setting
when there is one, else ``var_dir/secrets/patient.key`` (32 random bytes made on first use,
owner-only): keep it with the backups, and give every machine that shares the database the same key.

Tables (on :data:`serving.db.metadata`, under migration since ``0006_patients``):

- ``patients``: one row per patient; ``merged_into`` names the patient it became when one chat showed
  that two patients were one person (its keys, chats and incidents moved there); ``flags_cleared_*``:
  the last time a supervisor cleared its flag;
- ``patient_keys``: ``key_hash`` (primary key) → ``patient_id``, with the kind and the first chat;
- ``patient_chats``: ``conversation_id`` → ``patient_id`` (None: the chat revealed nothing to link
  it by), with the chat's message count when it was read (a chat that has grown is read again);
- ``patient_incidents``: complaints and unpaid visits recorded by supervisors.

The links stay when a chat's personal data is erased: only hashes are kept, and the chat's row keeps
its link. Erasure and retention (``serving/privacy.py``) link a chat before masking it, so an
erased chat still counts in its patient's history; messages a chat receives after an erasure link it
too.

When chats are linked (:meth:`Patients.link`): when an outcome is recorded, when an appointment is
booked or proposed, when a patient is looked up by chat, and by the sweep (``POST /v1/tasks/sweep``,
``yuyue tasks sweep``: :meth:`Patients.link_pending`, chats not linked yet or grown since).

The flag rule (:meth:`Patients.flag`): a patient is flagged once, since the last time its flag was
cleared, it has ``no_show`` no-shows (appointments marked no-show, by hand or automatically), or
``complaint`` complaints, or ``unpaid`` unpaid visits (``DEFAULT_FLAG_AFTER``; the
``patient_flag_after`` setting changes them). A flag never refuses care: it is shown, with its
reasons, to consultants and supervisors, and booking a flagged patient (a new appointment or a
call's rebooking) asks for confirmation (``confirmed: true``, else 409 naming the reasons); the
reasons confirmed are kept with the appointment (``flag_ack``).

Who reads a patient: supervisors and admins, and a consultant who serves one of its chats or is
assigned one of its tasks. Personal data (contacts, notes) is masked except for the chat's own
consultant, whose raw read is recorded in the audit log as for ``GET /v1/conversations/{id}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from yuyue.serving.auth import Caller, Role, check_hospital
from yuyue.serving.cache import read_key_file
from yuyue.serving.db import UTCDateTime, metadata
from yuyue.serving.errors import Forbidden, InvalidInput
from yuyue.serving.store import Conflict, EventStore, NotFound, conversations

log = logging.getLogger("yuyue.serving")

CONTACT_KINDS = ("phone", "wechat", "qq", "email")
KEY_KINDS = (*CONTACT_KINDS, "visitor")
INCIDENT_KINDS = ("complaint", "unpaid")
FLAG_KINDS = ("no_show", *INCIDENT_KINDS)
DEFAULT_FLAG_AFTER = {"no_show": 2, "complaint": 1, "unpaid": 1}
FLAG_WORDS = {
    "no_show": "no-shows (爽约)",
    "complaint": "complaints (投诉)",
    "unpaid": "unpaid visits (欠费)",
}

patients = sa.Table(
    "patients",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("merged_into", sa.String(32), index=True),  # the patient this one turned out to be
    sa.Column("flags_cleared_at", UTCDateTime),
    sa.Column("flags_cleared_by", sa.String(128)),
    sa.Column("flags_cleared_note", sa.Text),
)

patient_keys = sa.Table(
    "patient_keys",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),  # HMAC-SHA256 hex of "<kind>:<value>"
    sa.Column("kind", sa.String(16), nullable=False),  # phone | wechat | qq | email | visitor
    sa.Column("patient_id", sa.String(32), nullable=False, index=True),
    sa.Column("conversation_id", sa.String(128)),  # the chat it was first seen in
    sa.Column("created_at", UTCDateTime, nullable=False),
)

patient_chats = sa.Table(
    "patient_chats",
    metadata,
    sa.Column("conversation_id", sa.String(128), primary_key=True),
    sa.Column("patient_id", sa.String(32), index=True),  # None: nothing to link the chat by
    sa.Column("n_messages", sa.Integer, nullable=False),  # the chat's messages when it was read
    sa.Column("kinds", sa.String(64)),  # what linked it: "phone,visitor"
    sa.Column("linked_at", UTCDateTime, nullable=False),
)

patient_incidents = sa.Table(
    "patient_incidents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("patient_id", sa.String(32), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # complaint | unpaid
    sa.Column("conversation_id", sa.String(128)),
    sa.Column("note", sa.Text),
    sa.Column("created_by", sa.String(128)),
    sa.Column("role", sa.String(16)),
    sa.Column("created_at", UTCDateTime, nullable=False),
)


# ---- the key ----------------------------------------------------------------------------------------
def _key_from_text(text: str) -> bytes:
    text = text.strip()
    try:
        key = base64.b64decode(
            text + "=" * (-len(text) % 4),
            altchars=b"-_" if "-" in text or "_" in text else None,
            validate=True,
        )
    except (binascii.Error, ValueError):
        key = text.encode("utf-8")
    if len(key) < 16:
        raise ValueError("patient_key must be at least 16 bytes (32 random bytes in base64 recommended)")
    return key


def _key_file(path: Path) -> bytes:
    """The key in ``path``, created (32 random bytes, owner-only, in an owner-only folder) if missing."""
    return _key_from_text(read_key_file(path, "patient key"))


def patient_key(settings: Any) -> bytes:
    """The key of the contact hashes: the ``patient_key`` setting, else ``var_dir/secrets/patient.key``."""
    configured = getattr(settings, "patient_key", None)
    if configured is not None:
        text = configured.get_secret_value() if hasattr(configured, "get_secret_value") else str(configured)
        return _key_from_text(text)
    return _key_file(Path(settings.var_dir) / "secrets" / "patient.key")


# ---- normalising what identifies a visitor ----------------------------------------------------------
_MOBILE = re.compile(r"^1[3-9]\d{9}$")


def normalise(kind: str, value: str) -> str | None:
    """The form of ``value`` that is hashed (None when nothing usable is left)."""
    value = (value or "").strip()
    if kind in ("phone", "qq"):
        digits = re.sub(r"\D", "", value)
        if kind == "phone":
            if len(digits) == 15 and digits.startswith("0086"):
                digits = digits[4:]
            elif len(digits) == 13 and digits.startswith("86"):
                digits = digits[2:]
        return digits if len(digits) >= 5 else None
    if kind in ("wechat", "email"):
        return value.lower() or None
    if kind == "visitor":
        return value or None
    raise ValueError(f"unknown key kind {kind!r}")


def identifiers(kind: str, value: str) -> set[tuple[str, str]]:
    """``{(kind, normalised value)}`` one detected value links by (a WeChat or QQ id that is a mobile
    number links as that phone too)."""
    v = normalise(kind, value)
    if v is None:
        return set()
    out = {(kind, v)}
    if kind in ("wechat", "qq") and _MOBILE.match(re.sub(r"\D", "", v) or "-") and v.isdigit():
        out.add(("phone", v))
    return out


def contact_spans(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The contacts the visitor wrote in a chat's stored messages, first seen first, once each:
    ``{"type", "value" (normalised, raw), "message" (seq)}``."""
    from yuyue.features.pii import find_pii_raw

    out, seen = [], set()
    for m in messages:
        if m.get("role") != "visitor" or not m.get("text"):
            continue
        for span in find_pii_raw(m["text"]):
            if span.type not in CONTACT_KINDS or (span.type, span.value) in seen:
                continue
            seen.add((span.type, span.value))
            out.append({"type": span.type, "value": span.value, "message": m["seq"]})
    return out


def masked(type_: str, value: str) -> str:
    from yuyue.features.pii import mask_value

    return mask_value(type_, value)


def mask_note(note: str | None) -> str | None:
    """A free-text note (a call's, an appointment's) with any personal data in it masked."""
    if not note:
        return note
    from yuyue.serving.service import masked_text

    return masked_text({"text": note, "pii": []})


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


class Patients:
    """Links, history, incidents and flags (see the module docstring), over the event store."""

    def __init__(self, settings: Any, store: EventStore, clock: Callable[[], datetime] | None = None):
        self.settings = settings
        self.store = store
        self.engine = store.engine
        self.clock = clock or (lambda: datetime.now(UTC))
        self.flag_after = {**DEFAULT_FLAG_AFTER, **(getattr(settings, "patient_flag_after", None) or {})}
        self._key: bytes | None = None

    # ---- hashing ---------------------------------------------------------------------------------
    def hash(self, kind: str, value: str) -> str:
        if self._key is None:
            self._key = patient_key(self.settings)
        return hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def _erased(self, ids: list[str]) -> set[str]:
        """The chats among ``ids`` whose text was masked (erasure, retention): their masked text holds
        no contact, and a mask must not be read as one."""
        from yuyue.serving.audit import erasures

        if not ids:
            return set()
        with self.engine.connect() as cx:
            return set(
                cx.execute(
                    sa.select(erasures.c.conversation_id).where(erasures.c.conversation_id.in_(ids))
                ).scalars()
            )

    def _identifiers(self, chat: dict[str, Any]) -> set[tuple[str, str]]:
        """What links a chat: contacts in its raw messages (those received after an erasure, when it
        was erased), and its visitor id."""
        found: set[tuple[str, str]] = set()
        erasure = self.store.erasure(chat["id"])
        messages = self.store.messages(chat["id"])
        if erasure is not None:  # the masked ones hold no contact, and a mask must not be read as one
            messages = messages[int(erasure["n_messages"]) :]
        for c in contact_spans(messages):
            found |= identifiers(c["type"], c["value"])
        if chat.get("visit"):
            try:
                visitor = orjson.loads(chat["visit"]).get("visitor_id")
            except (orjson.JSONDecodeError, AttributeError):
                visitor = None
            if visitor:
                found |= identifiers("visitor", str(visitor))
        return found

    # ---- linking ---------------------------------------------------------------------------------
    def link(self, conversation_id: str, chat: dict[str, Any] | None = None) -> str | None:
        """Link a chat to its patient (created, or several merged, as its identifiers say); the patient's
        id, None when the chat reveals nothing to link it by. Reads the chat again only when it has
        grown since it was last linked."""
        chat = chat or self.store.conversation(conversation_id)
        with self.engine.connect() as cx:
            done = (
                cx.execute(sa.select(patient_chats).where(patient_chats.c.conversation_id == conversation_id))
                .mappings()
                .first()
            )
        if done is not None and done["n_messages"] >= chat["n_messages"]:
            return self._resolve(done["patient_id"]) if done["patient_id"] else None
        found = self._identifiers(chat)
        for attempt in range(4):
            try:
                with self.engine.begin() as cx:
                    return self._link(cx, chat, found)
            except IntegrityError:  # another request linked the same identifier or chat meanwhile
                if attempt == 3:
                    raise
        return None  # pragma: no cover

    def _link(self, cx: Connection, chat: dict[str, Any], found: set[tuple[str, str]]) -> str | None:
        now = self.clock()
        hashes = {self.hash(kind, value): kind for kind, value in found}
        k, pc = patient_keys.c, patient_chats.c
        owners = set()
        if hashes:
            owners = {r[0] for r in cx.execute(sa.select(k.patient_id).where(k.key_hash.in_(list(hashes))))}
        before = cx.execute(sa.select(pc.patient_id).where(pc.conversation_id == chat["id"])).first()
        if before is not None and before[0]:
            owners.add(before[0])
        owners = {self._resolve(p, cx) for p in owners}
        patient_id = None
        if owners:
            rows = cx.execute(
                sa.select(patients.c.id)
                .where(patients.c.id.in_(owners))
                .order_by(patients.c.created_at, patients.c.id)
            ).all()
            patient_id = rows[0][0]
            for (other,) in rows[1:]:
                self._merge(cx, other, patient_id, now)
        elif hashes:
            patient_id = uuid.uuid4().hex
            cx.execute(patients.insert().values(id=patient_id, created_at=now, updated_at=now))
        if patient_id is not None:
            known = {r[0] for r in cx.execute(sa.select(k.key_hash).where(k.key_hash.in_(list(hashes))))}
            new = [
                {
                    "key_hash": h,
                    "kind": kind,
                    "patient_id": patient_id,
                    "conversation_id": chat["id"],
                    "created_at": now,
                }
                for h, kind in hashes.items()
                if h not in known
            ]
            if new:
                cx.execute(patient_keys.insert(), new)
            cx.execute(patients.update().where(patients.c.id == patient_id).values(updated_at=now))
        row = {
            "patient_id": patient_id,
            "n_messages": chat["n_messages"],
            "kinds": ",".join(sorted({kind for kind, _ in found}))[:64] or None,
            "linked_at": now,
        }
        if before is None:
            cx.execute(patient_chats.insert().values(conversation_id=chat["id"], **row))
        else:
            cx.execute(patient_chats.update().where(pc.conversation_id == chat["id"]).values(**row))
        return patient_id

    @staticmethod
    def _merge(cx: Connection, other: str, into: str, now: datetime) -> None:
        cx.execute(patient_keys.update().where(patient_keys.c.patient_id == other).values(patient_id=into))
        cx.execute(patient_chats.update().where(patient_chats.c.patient_id == other).values(patient_id=into))
        cx.execute(
            patient_incidents.update().where(patient_incidents.c.patient_id == other).values(patient_id=into)
        )
        cx.execute(patients.update().where(patients.c.id == other).values(merged_into=into, updated_at=now))
        cx.execute(patients.update().where(patients.c.merged_into == other).values(merged_into=into))

    def _resolve(self, patient_id: str, cx: Connection | None = None) -> str:
        """The patient ``patient_id`` is now (a merged patient's survivor); NotFound for none."""
        if cx is None:
            with self.engine.connect() as c:
                return self._resolve(patient_id, c)
        row = cx.execute(
            sa.select(patients.c.id, patients.c.merged_into).where(patients.c.id == patient_id)
        ).first()
        if row is None:
            raise NotFound(f"no patient {patient_id!r}")
        survivor: str = row.merged_into or row.id
        return survivor

    def link_pending(self, limit: int | None = None, batch: int = 200) -> int:
        """Link the chats never linked, or grown since, that may hold something to link by (a contact
        seen or left, a booking, a visit trace); at most ``limit`` (None: all). The number linked."""
        c, pc = conversations.c, patient_chats.c
        query = (
            sa.select(conversations)
            .select_from(conversations.outerjoin(patient_chats, pc.conversation_id == c.id))
            .where(
                sa.or_(pc.conversation_id.is_(None), pc.n_messages < c.n_messages),
                sa.or_(
                    c.contact_seen.is_(True), c.contact.is_(True), c.booked.is_(True), c.visit.is_not(None)
                ),
            )
            .order_by(c.started_at, c.id)
        )
        n = 0
        last: tuple[datetime, str] | None = None
        while limit is None or n < limit:
            q = query if last is None else query.where(sa.tuple_(c.started_at, c.id) > sa.tuple_(*last))
            take = batch if limit is None else min(batch, limit - n)
            with self.engine.connect() as cx:
                rows = [dict(r) for r in cx.execute(q.limit(take)).mappings()]
            for chat in rows:
                self.link(chat["id"], chat)
                n += 1
            if len(rows) < take:
                break
            last = (rows[-1]["started_at"], rows[-1]["id"])
        return n

    def patient_of(self, conversation_id: str) -> str | None:
        """The patient a chat is linked to (linking it first when needed)."""
        return self.link(conversation_id)

    # ---- flags -----------------------------------------------------------------------------------
    def _counts(
        self,
        cx: Connection,
        patient_id: str,
        since: datetime | None,
        hospitals: tuple[str, ...] | None = None,
    ) -> dict[str, int]:
        """No-shows and incidents by kind since ``since``; ``hospitals``: the no-shows of appointments in
        these hospitals only (None: every hospital)."""
        from yuyue.serving.appointments import appointments

        a, pc, i = appointments.c, patient_chats.c, patient_incidents.c
        q = (
            sa.select(sa.func.count())
            .select_from(appointments.join(patient_chats, pc.conversation_id == a.conversation_id))
            .where(pc.patient_id == patient_id, a.status == "no_show")
        )
        if since is not None:
            q = q.where(a.status_at > since)
        if hospitals is not None:
            q = q.where(a.hospital.in_(hospitals))
        counts = {"no_show": int(cx.execute(q).scalar() or 0)}
        by_kind = sa.select(i.kind, sa.func.count()).where(i.patient_id == patient_id).group_by(i.kind)
        if since is not None:
            by_kind = by_kind.where(i.created_at > since)
        counts.update({kind: 0 for kind in INCIDENT_KINDS})
        counts.update({kind: int(n) for kind, n in cx.execute(by_kind)})
        return counts

    def flag(self, patient_id: str, cx: Connection | None = None) -> dict[str, Any]:
        """``{"flagged", "reasons": [{"kind", "count", "after", "text"}], "cleared_at", "cleared_by"}``."""
        if cx is None:
            with self.engine.connect() as c:
                return self.flag(patient_id, c)
        row = cx.execute(sa.select(patients).where(patients.c.id == patient_id)).mappings().first()
        if row is None:
            raise NotFound(f"no patient {patient_id!r}")
        since = row["flags_cleared_at"]
        counts = self._counts(cx, patient_id, since)
        reasons = []
        for kind in FLAG_KINDS:
            after = int(self.flag_after.get(kind, 0) or 0)
            if after > 0 and counts[kind] >= after:
                reasons.append(
                    {
                        "kind": kind,
                        "count": counts[kind],
                        "after": after,
                        "text": f"{counts[kind]} {FLAG_WORDS[kind]}"
                        + (f" since the flag was cleared on {since.date().isoformat()}" if since else "")
                        + f" (flagged from {after})",
                    }
                )
        return {
            "flagged": bool(reasons),
            "reasons": reasons,
            "cleared_at": _iso(since),
            "cleared_by": row["flags_cleared_by"],
            "cleared_note": row["flags_cleared_note"],
        }

    def check_booking(self, patient_id: str | None, confirmed: bool) -> str | None:
        """Before booking a patient: :class:`Conflict` naming the flag's reasons when it is flagged and
        the booking is not ``confirmed``; the reasons confirmed (kept with the appointment), else None."""
        if patient_id is None:
            return None
        flag = self.flag(patient_id)
        if not flag["flagged"]:
            return None
        reasons = "; ".join(r["text"] for r in flag["reasons"])
        if not confirmed:
            raise Conflict(
                f"patient {patient_id!r} is flagged ({reasons}): a flag never refuses care, but confirm the "
                "booking with the patient first, then send confirmed=true"
            )
        return reasons[:500]

    def summary(
        self, patient_id: str | None, hospitals: tuple[str, ...] | None = None
    ) -> dict[str, Any] | None:
        """What the console shows next to a chat, a task or a booking: the patient, its chat count
        (``returning`` when more than one), its no-shows and its flag. ``hospitals``: the chats and
        no-shows in these hospitals only (a scoped key's, or those a group key asks for; None: every
        hospital); the flag stays the group's (a no-show elsewhere still asks to confirm a booking)."""
        if patient_id is None:
            return None
        pc, c = patient_chats.c, conversations.c
        with self.engine.connect() as cx:
            pid = self._resolve(patient_id, cx)
            chats = sa.select(sa.func.count()).where(pc.patient_id == pid)
            if hospitals is None:
                chats = chats.select_from(patient_chats)
            else:
                chats = chats.select_from(
                    patient_chats.join(conversations, c.id == pc.conversation_id)
                ).where(c.hospital.in_(hospitals))
            n_chats = cx.execute(chats).scalar() or 0
            flag = self.flag(pid, cx)
            no_shows = self._counts(cx, pid, None, hospitals)["no_show"]
        return {
            "id": pid,
            "chats": int(n_chats),
            "returning": n_chats > 1,
            "no_shows": no_shows,
            "flagged": flag["flagged"],
            "flag_reasons": [r["text"] for r in flag["reasons"]],
        }

    def returning(self, conversation_id: str) -> int:
        """How many earlier chats the visitor of this chat had (0: a first visit or unknown): the
        returning-visitor signal."""
        pid = self.link(conversation_id)
        if pid is None:
            return 0
        c, pc = conversations.c, patient_chats.c
        with self.engine.connect() as cx:
            started = cx.execute(sa.select(c.started_at).where(c.id == conversation_id)).scalar_one()
            return int(
                cx.execute(
                    sa.select(sa.func.count())
                    .select_from(patient_chats.join(conversations, c.id == pc.conversation_id))
                    .where(pc.patient_id == pid, c.started_at < started)
                ).scalar()
                or 0
            )

    def flagged(self, limit: int, offset: int, hospitals: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The patients flagged now, most recent activity first; ``hospitals``: only patients with a
        chat in one of them (None: every hospital)."""
        from yuyue.serving.appointments import appointments

        a, pc, i = appointments.c, patient_chats.c, patient_incidents.c
        with self.engine.connect() as cx:
            ids = {
                r[0]
                for r in cx.execute(
                    sa.select(pc.patient_id)
                    .distinct()
                    .select_from(appointments.join(patient_chats, pc.conversation_id == a.conversation_id))
                    .where(a.status == "no_show", pc.patient_id.is_not(None))
                )
            }
            ids |= {r[0] for r in cx.execute(sa.select(i.patient_id).distinct())}
            if hospitals is not None and ids:
                c = conversations.c
                ids &= {
                    r[0]
                    for r in cx.execute(
                        sa.select(pc.patient_id)
                        .distinct()
                        .select_from(patient_chats.join(conversations, c.id == pc.conversation_id))
                        .where(c.hospital.in_(hospitals), pc.patient_id.in_(ids))
                    )
                }
            rows = (
                cx.execute(
                    sa.select(patients.c.id)
                    .where(patients.c.id.in_(ids), patients.c.merged_into.is_(None))
                    .order_by(patients.c.updated_at.desc(), patients.c.id)
                ).all()
                if ids
                else []
            )
            hits = [pid for (pid,) in rows if self.flag(pid, cx)["flagged"]]
        items = [self.summary(pid, hospitals) for pid in hits[offset : offset + limit]]
        return {"total": len(hits), "limit": limit, "offset": offset, "items": items}

    # ---- who may read --------------------------------------------------------------------------
    def check_scope(self, who: Caller, patient_id: str, cx: Connection | None = None) -> str:
        """The patient's id (merges followed) when ``who``'s key may see it: a group-level key sees every
        patient, a key scoped to hospitals the patients with a chat in one of them (403 otherwise)."""
        if cx is None:
            with self.engine.connect() as cx:
                return self.check_scope(who, patient_id, cx)
        pid = self._resolve(patient_id, cx)
        if who.hospitals is None:
            return pid
        c, pc = conversations.c, patient_chats.c
        seen = cx.execute(
            sa.select(pc.conversation_id)
            .select_from(patient_chats.join(conversations, c.id == pc.conversation_id))
            .where(pc.patient_id == pid, c.hospital.in_(who.hospitals))
            .limit(1)
        ).first()
        if seen is None:
            scope = ", ".join(repr(h) for h in who.hospitals)
            raise Forbidden(f"patient {pid!r} has no chat in key {who.name!r}'s hospitals ({scope})")
        return pid

    @staticmethod
    def _in_scope(who: Caller, rec: _HistoryRecords) -> _HistoryRecords:
        """``rec`` narrowed to the chats of ``who``'s hospitals (their appointments, tasks and calls;
        the incidents about them or about no chat). The flag stays the group's: see docs/decisions.md."""
        if who.hospitals is None:
            return rec
        chats = [ch for ch in rec.chats if who.in_scope(ch["hospital"])]
        ids = {ch["id"] for ch in chats}
        task_rows = [t for t in rec.tasks if t["conversation_id"] in ids]
        task_ids = {t["id"] for t in task_rows}
        return _HistoryRecords(
            rec.patient,
            chats,
            [ap for ap in rec.appointments if ap["conversation_id"] in ids],
            task_rows,
            [call for call in rec.calls if call["task_id"] in task_ids],
            [i for i in rec.incidents if i["conversation_id"] is None or i["conversation_id"] in ids],
        )

    @staticmethod
    def _check_reads(
        who: Caller, patient_id: str, chats: list[dict[str, Any]], task_rows: list[dict[str, Any]]
    ) -> None:
        if who.role != Role.CONSULTANT:
            return
        me = who.consultant_id
        if any(c["consultant_id"] == me for c in chats) or any(t["assignee"] == me for t in task_rows):
            return
        raise Forbidden(
            f"patient {patient_id!r}: consultant {me!r} serves none of its chats and is assigned none of its tasks"
        )

    # ---- history ---------------------------------------------------------------------------------
    def history(self, who: Caller, patient_id: str) -> dict[str, Any]:
        """Everything the desk knows of one patient, oldest first: chats with their outcomes,
        appointments, call tasks with every call, incidents, contacts; counts and the flag."""
        with self.engine.connect() as cx:
            pid = self.check_scope(who, patient_id, cx)
            rec = self._in_scope(who, _history_records(cx, pid))
            flag = self.flag(pid, cx)
        self._check_reads(who, pid, rec.chats, rec.tasks)
        raw = {ch["id"]: who.sees_raw(ch) for ch in rec.chats}
        contacts = self._contacts(rec.chats, raw)
        notes = _Notes(raw)
        out_appts = [
            {**{k: _iso(v) for k, v in ap.items()}, "note": notes(ap["note"], ap["conversation_id"])}
            for ap in rec.appointments
        ]
        out_tasks = _history_tasks(rec.tasks, rec.calls, notes)
        out_chats = [_history_chat(ch) for ch in rec.chats]
        read_raw = [cid for cid, r in raw.items() if r]
        self._audit_raw_reads(who, pid, read_raw)
        return {
            "id": pid,
            "created_at": _iso(rec.patient["created_at"]),
            "returning": len(rec.chats) > 1,
            "flag": flag,
            "counts": _history_counts(rec),
            "chats": out_chats,
            "appointments": out_appts,
            "tasks": out_tasks,
            "incidents": [_history_incident(i, notes) for i in rec.incidents],
            "contacts": contacts,
            "masked": len(read_raw) < len(rec.chats),
        }

    def _contacts(self, chats: list[dict[str, Any]], raw: dict[str, bool]) -> list[dict[str, Any]]:
        """The contacts visitors wrote in ``chats`` (none from an erased chat), masked unless ``raw``."""
        contacts = []
        erased = self._erased([ch["id"] for ch in chats])
        for ch in chats:
            if ch["id"] in erased:
                continue
            for s in contact_spans(self.store.messages(ch["id"])):
                value = s["value"] if raw[ch["id"]] else masked(s["type"], s["value"])
                contacts.append(
                    {"type": s["type"], "value": value, "conversation_id": ch["id"], "message": s["message"]}
                )
        return contacts

    def _audit_raw_reads(self, who: Caller, patient_id: str, read_raw: list[str]) -> None:
        """Raw personal data read: recorded, as for GET /v1/conversations/{id}."""
        from yuyue.serving.audit import AuditAction
        from yuyue.serving.privacy import audit_row

        for cid in read_raw:
            self.store.audit(
                audit_row(
                    who,
                    AuditAction.READ_RAW,
                    conversation_id=cid,
                    detail={"via": "patient", "patient_id": patient_id},
                )
            )

    # ---- supervisors' records ---------------------------------------------------------------------
    def record_incident(
        self, who: Caller, patient_id: str, kind: str, note: str | None, conversation_id: str | None
    ) -> dict[str, Any]:
        if kind not in INCIDENT_KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(INCIDENT_KINDS)}, got {kind!r}")
        now = self.clock()
        with self.engine.begin() as cx:
            pid = self.check_scope(who, patient_id, cx)
            if conversation_id is not None:
                hospital = cx.execute(
                    sa.select(conversations.c.hospital).where(conversations.c.id == conversation_id)
                ).scalar()
                check_hospital(who, hospital, f"conversation {conversation_id!r}")
                linked = cx.execute(
                    sa.select(patient_chats.c.patient_id).where(
                        patient_chats.c.conversation_id == conversation_id
                    )
                ).first()
                if linked is None or linked[0] is None or self._resolve(linked[0], cx) != pid:
                    raise InvalidInput(
                        f"conversation_id: {conversation_id!r} is not one of patient {pid!r}'s chats"
                    )
            cx.execute(
                patient_incidents.insert().values(
                    patient_id=pid,
                    kind=kind,
                    conversation_id=conversation_id,
                    note=note,
                    created_by=who.name,
                    role=who.role,
                    created_at=now,
                )
            )
            cx.execute(patients.update().where(patients.c.id == pid).values(updated_at=now))
        return self.summary(pid, who.hospitals) or {}

    def clear_flag(self, who: Caller, patient_id: str, note: str) -> dict[str, Any]:
        """Clear a patient's flag: the counts that flag start again from now (the history keeps all)."""
        if not note or not note.strip():
            raise InvalidInput("note: say why the flag is cleared")
        now = self.clock()
        with self.engine.begin() as cx:
            pid = self.check_scope(who, patient_id, cx)
            if not self.flag(pid, cx)["flagged"]:
                raise Conflict(f"patient {pid!r} is not flagged: nothing to clear")
            cx.execute(
                patients.update()
                .where(patients.c.id == pid)
                .values(
                    flags_cleared_at=now,
                    flags_cleared_by=who.name,
                    flags_cleared_note=note.strip(),
                    updated_at=now,
                )
            )
        return self.summary(pid, who.hospitals) or {}


# ---- a patient's history: its rows, and how each is shown ------------------------------------------
_TASK_FIELDS = (
    "id",
    "kind",
    "state",
    "conversation_id",
    "appointment_id",
    "assignee",
    "detail",
    "due_at",
    "attempts",
    "last_result",
    "closed_reason",
    "created_at",
    "done_at",
)
_CHAT_FIELDS = (
    "hospital",
    "department",
    "project",
    "consultant_id",
    "started_at",
    "last_at",
    "n_messages",
    "closed",
    "contact",
    "contact_seen",
    "booked",
    "arrived",
    "booked_at",
    "arrived_at",
    "p_booked",
    "p_arrived",
)


@dataclass(frozen=True)
class _HistoryRecords:
    """One patient's rows, as read in one connection: its own row, its chats (with ``kinds``, what
    linked them), their appointments, call tasks and the tasks' calls, and its incidents."""

    patient: RowMapping
    chats: list[dict[str, Any]]
    appointments: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    incidents: list[dict[str, Any]]


def _dicts(cx: Connection, stmt: sa.Select[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in cx.execute(stmt).mappings()]


def _history_records(cx: Connection, pid: str) -> _HistoryRecords:
    from yuyue.serving.appointments import appointments
    from yuyue.serving.tasks import task_attempts, tasks

    c, pc, a, t, ta = conversations.c, patient_chats.c, appointments.c, tasks.c, task_attempts.c
    row = cx.execute(sa.select(patients).where(patients.c.id == pid)).mappings().one()
    chats = _dicts(
        cx,
        sa.select(conversations, pc.kinds)
        .select_from(conversations.join(patient_chats, pc.conversation_id == c.id))
        .where(pc.patient_id == pid)
        .order_by(c.started_at, c.id),
    )
    ids = [ch["id"] for ch in chats]
    appts = (
        _dicts(cx, sa.select(appointments).where(a.conversation_id.in_(ids)).order_by(a.time, a.id))
        if ids
        else []
    )
    task_rows = (
        _dicts(cx, sa.select(tasks).where(t.conversation_id.in_(ids)).order_by(t.created_at, t.id))
        if ids
        else []
    )
    calls = (
        _dicts(
            cx,
            sa.select(task_attempts).where(ta.task_id.in_([x["id"] for x in task_rows])).order_by(ta.id),
        )
        if task_rows
        else []
    )
    incidents = _dicts(
        cx,
        sa.select(patient_incidents)
        .where(patient_incidents.c.patient_id == pid)
        .order_by(patient_incidents.c.id),
    )
    return _HistoryRecords(row, chats, appts, task_rows, calls, incidents)


class _Notes:
    """A note as the caller may read it: raw in a chat the caller sees raw, else masked."""

    def __init__(self, raw: dict[str, bool]):
        self.raw = raw

    def __call__(self, text: str | None, conversation_id: str) -> str | None:
        return text if self.raw.get(conversation_id) else mask_note(text)


def _history_tasks(
    task_rows: list[dict[str, Any]], calls: list[dict[str, Any]], notes: _Notes
) -> list[dict[str, Any]]:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        by_task.setdefault(call["task_id"], []).append(call)
    out = []
    for x in task_rows:
        item = {k: _iso(x[k]) for k in _TASK_FIELDS}
        item["calls"] = [
            {
                "at": _iso(call["at"]),
                "actor": call["actor"],
                "result": call["result"],
                "note": notes(call["note"], x["conversation_id"]),
                "appointment_id": call["appointment_id"],
            }
            for call in by_task.get(x["id"], [])
        ]
        out.append(item)
    return out


def _history_chat(ch: dict[str, Any]) -> dict[str, Any]:
    return {
        "conversation_id": ch["id"],
        **{k: _iso(ch[k]) for k in _CHAT_FIELDS},
        "linked_by": ch["kinds"].split(",") if ch["kinds"] else [],
    }


def _history_incident(incident: dict[str, Any], notes: _Notes) -> dict[str, Any]:
    cid = incident["conversation_id"]
    return {
        **{k: _iso(v) for k, v in incident.items() if k != "patient_id"},
        "note": notes(incident["note"], cid) if cid else mask_note(incident["note"]),
    }


def _history_counts(rec: _HistoryRecords) -> dict[str, int]:
    appts, incidents = rec.appointments, rec.incidents
    return {
        "chats": len(rec.chats),
        "appointments": len(appts),
        "booked": sum(ap["status"] == "booked" for ap in appts),
        "arrived": sum(ap["status"] == "arrived" for ap in appts),
        "no_shows": sum(ap["status"] == "no_show" for ap in appts),
        "cancelled": sum(ap["status"] == "cancelled" for ap in appts),
        "calls": len(rec.calls),
        "complaints": sum(i["kind"] == "complaint" for i in incidents),
        "unpaid": sum(i["kind"] == "unpaid" for i in incidents),
    }


__all__ = [
    "DEFAULT_FLAG_AFTER",
    "INCIDENT_KINDS",
    "KEY_KINDS",
    "Patients",
    "contact_spans",
    "identifiers",
    "normalise",
    "patient_chats",
    "patient_incidents",
    "patient_key",
    "patient_keys",
    "patients",
]
