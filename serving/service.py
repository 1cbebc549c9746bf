"""The chat service: what each endpoint does, without HTTP.

:class:`ChatService` ties the model (held by :class:`ModelHolder`, swappable at
run time), the event store and the session cache together:

- ``open``: a new chat with its visit trace, scored from the trace alone;
- ``message``: fold one message into the chat's session (from the cache, or
  rebuilt by replaying the stored messages on a miss), score it, store message,
  scores and suggestions in one transaction, then answer;
- ``outcome``, ``feedback``, ``followups``, ``funnel``, ``export``.

Masking: what the visitor revealed (surname, phone, WeChat …) is returned raw
only to the consultant serving the chat (``raw=True``); every other view and
the export get masked values and masked text.
"""

from __future__ import annotations

import logging
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import orjson

from yuyue.config import Settings
from yuyue.data.contract import Visit
from yuyue.features.pii import (
    CONTACT_TYPES,
    PiiSpan,
    find_pii_raw,
    mask_address_form,
    mask_text,
    mask_value,
    raw_spans,
)
from yuyue.features.signals import CONCERNS
from yuyue.features.visit import keyword_category, page_category, parse_region
from yuyue.models.bundle import ChatSession, MessageInsight, YuyueModel, band, insight_dict
from yuyue.models.replies.guard import check_consultant_message
from yuyue.serving import knowledge
from yuyue.serving.auth import Caller, chat_consultant, chat_hospital, check_hospital, check_read, check_write
from yuyue.serving.cache import CacheUnavailable, Codec, SessionCache
from yuyue.serving.errors import Forbidden, InvalidInput
from yuyue.serving.shadow import shadow_scores
from yuyue.serving.store import Conflict, EventStore, Filters

log = logging.getLogger("yuyue.serving")

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
MAX_TEXT = 10_000
N_LOCKS = 512
CACHE_FORMAT = 2


__all__ = ["Caller", "ChatService", "Forbidden", "InvalidInput", "LIVE_CODEC", "ModelHolder", "masked_text"]


class ModelHolder:
    """The models in use: the global one (the registry's champion) and, from :meth:`set_own`, the
    hospitals' and departments' own models (training/per_hospital.py); each
    swapped atomically (requests in flight keep the one they started with). :meth:`model_for` picks a
    chat's model: its hospital's, else its department's, else the global one."""

    def __init__(self, model: YuyueModel | None = None, version: str | None = None):
        self._current: tuple[YuyueModel, str] | None = (
            (model, version or "local") if model is not None else None
        )
        self._own: dict[str, dict[str, tuple[YuyueModel, str]]] = {"hospital": {}, "department": {}}
        self._lock = threading.Lock()

    def model_for(self, hospital: str | None, department: str | None = None) -> tuple[YuyueModel, str]:
        """The model (and its version) that scores a chat of ``hospital`` and ``department``: the
        hospital's own when it has one (the tenant's own data comes first), else the department's own,
        else the global one. At most two dict lookups."""
        if self._current is not None:
            for kind, code in (("hospital", hospital), ("department", department)):
                own = self._own[kind].get(code) if code is not None else None
                if own is not None:
                    return own
        return self.get()

    @property
    def has_own_models(self) -> bool:
        """Whether any hospital or department has its own model (else every chat gets the global one)."""
        return bool(self._own["hospital"] or self._own["department"])

    def serving(self, kind: str) -> dict[str, str]:
        """Code -> version of each hospital (``kind="hospital"``) or department served by its own model."""
        return {h: v for h, (_, v) in self._own[kind].items()}

    @property
    def hospitals(self) -> dict[str, str]:
        """Hospital code -> version of each hospital served by its own model."""
        return self.serving("hospital")

    @property
    def departments(self) -> dict[str, str]:
        """Department -> version of each department served by its own model."""
        return self.serving("department")

    def own_models(self, kind: str) -> dict[str, tuple[YuyueModel, str]]:
        return dict(self._own[kind])

    def set_own(self, kind: str, models: dict[str, tuple[YuyueModel, str]]) -> None:
        """Replace the hospitals' (or departments') own models; those left out get the next model again."""
        self._own = {**self._own, kind: dict(models)}

    def get(self) -> tuple[YuyueModel, str]:
        current = self._current
        if current is None:
            raise RuntimeError("no model loaded")
        return current

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def version(self) -> str | None:
        return self._current[1] if self._current else None

    def set(self, model: YuyueModel, version: str) -> None:
        with self._lock:
            self._current = (model, version)


@dataclass
class Live:
    """A chat's session as kept between messages: the model session, the contact data revealed,
    and what the message path checks before writing (the chat's consultant, its last message time).

    With it the message path reads nothing from the store; the store's conditional write still
    catches a closed chat or a stale copy (another worker moved on).
    """

    n_messages: int
    session: ChatSession
    contacts: list[list[Any]]  # [type, value, message seq]
    consultant_id: str | None
    last_at: datetime

    def to_bytes(self) -> bytes:
        blob: bytes = msgpack.packb(
            [
                CACHE_FORMAT,
                self.n_messages,
                self.session.to_bytes(),
                self.contacts,
                self.consultant_id,
                self.last_at.isoformat(),
            ],
            use_bin_type=True,
        )
        return blob

    @classmethod
    def from_bytes(cls, blob: bytes) -> Live:
        fmt, *rest = msgpack.unpackb(blob, raw=False)
        if fmt != CACHE_FORMAT:
            raise ValueError(f"cached session format {fmt} != {CACHE_FORMAT}")
        n, session, contacts, consultant_id, last_at = rest
        return cls(
            n, ChatSession.from_bytes(session), contacts, consultant_id, datetime.fromisoformat(last_at)
        )


def _live_loads(blob: bytes) -> Live:
    try:
        return Live.from_bytes(blob)
    except msgpack.UnpackException as exc:  # not all of msgpack's errors are ValueErrors
        raise ValueError(f"unreadable session blob: {exc}") from exc


# how the shared (Redis) cache stores sessions: the message count is the version, since the
# store accepts exactly one message at each position of a chat
LIVE_CODEC = Codec(Live.to_bytes, _live_loads, lambda live: live.n_messages)


class _Stale(Exception):
    """The cached session is behind the store (another worker wrote): rebuild it and try again."""


def _check_position(conversation_id: str, n_messages: int, expect_seq: int | None) -> None:
    if expect_seq is None or expect_seq == n_messages:
        return
    if expect_seq < n_messages:
        raise Conflict(
            f"conversation {conversation_id!r} already holds message {expect_seq} (it has {n_messages}): "
            "this one was probably stored already; GET the conversation before resending"
        )
    raise Conflict(
        f"conversation {conversation_id!r} has {n_messages} messages; seq {expect_seq} would leave a gap"
    )


def _closed(conversation_id: str) -> Conflict:
    return Conflict(f"conversation {conversation_id!r} is closed; no more messages can be added")


def _local_day(at: datetime) -> str:
    return _local(at).date().isoformat()


def _aware(at: datetime | None, default: datetime) -> datetime:
    """``at`` (or ``default``) in the desk's time zone.

    The model reads local clock time (hour of the visit, 明天下午 in a message), as the training
    chats carry it; a client may send any offset, and the store gives the chat's start back in
    UTC, so every time goes to the model in one zone: live and replayed sessions then agree.
    """
    if at is None:
        return _local(default)
    if at.tzinfo is None:
        raise InvalidInput(f"'at' must carry a timezone offset (got {at.isoformat()})")
    return _local(at)


def _local(at: datetime) -> datetime:
    return at.astimezone(LOCAL_TZ)


def _visit_columns(visit: Visit | None, hospital_name: str | None) -> dict[str, Any]:
    """A new chat's columns read from its visit trace (all None without one)."""
    pages = (visit.pages or []) if visit else []
    _, city = parse_region(visit.region) if visit and visit.region else (None, None)
    return {
        "visit": visit.model_dump_json(exclude_none=True) if visit else None,
        "engine": getattr(visit.engine, "value", visit.engine) if visit else None,
        "keyword": visit.keyword if visit else None,
        "keyword_category": keyword_category(visit.keyword, hospital_name)
        if visit and visit.keyword
        else None,
        "landing_page": page_category(visit.landing_url, None)
        if visit and visit.landing_url
        else (page_category(pages[0].url, pages[0].title) if pages else None),
        "region": city or (visit.region if visit else None),
    }


class ChatService:
    """See the module docstring."""

    def __init__(self, settings: Settings, store: EventStore, cache: SessionCache, models: ModelHolder):
        self.settings = settings
        self.store = store
        self.cache = cache
        self.models = models
        self._locks = [threading.Lock() for _ in range(N_LOCKS)]
        # conversation id -> (hospital, department), see segment_of
        self._segments: dict[str, tuple[str | None, str | None]] = {}
        self.cache_misses = 0
        # called after an outcome is recorded, with (caller, conversation_id, update): the desk's rules
        # (serving/tasks.py: a booking ends the lead's call task, contact left opens one)
        self.outcome_hooks: list[Any] = []
        # called when a chat opens, with (visit, started_at), each returning the visit to score and store
        # (serving/returning.py: the visits before it that the store links to the same visitor)
        self.visit_hooks: list[Callable[[Visit | None, datetime], Visit | None]] = []

    def _lock(self, conversation_id: str) -> threading.Lock:
        return self._locks[zlib.crc32(conversation_id.encode()) % N_LOCKS]

    # ---- open --------------------------------------------------------------
    def open(
        self,
        caller: Caller,
        *,
        conversation_id: str | None,
        started_at: datetime | None,
        visit: Visit | None,
        hospital: str | None,
        department: str | None,
        project: str | None,
        consultant_id: str | None,
    ) -> dict[str, Any]:
        consultant_id = chat_consultant(caller, consultant_id)
        hospital = chat_hospital(caller, hospital)
        model, version = self.models.model_for(hospital, department)
        started = _aware(started_at, datetime.now(UTC))
        for hook in self.visit_hooks:
            visit = hook(visit, started)
        cid = conversation_id or uuid.uuid4().hex
        chat: dict[str, Any] = dict(started_at=started, visit=visit, department=department, project=project)
        session, scores = model.open_chat(**chat, consultant_id=consultant_id)
        row = {
            "id": cid,
            "hospital": hospital,
            "department": department,
            "project": project,
            "consultant_id": consultant_id,
            "started_at": started,
            "last_at": started,
            "day": _local_day(started),
            **_visit_columns(visit, self.settings.hospital_name),
            "n_messages": 0,
            "n_visitor": 0,
            "closed": False,
            "contact_seen": False,
            "p_booked": scores["booked"].probability if "booked" in scores else None,
            "p_arrived": scores["arrived"].probability if "arrived" in scores else None,
            "reasons": _reasons_json(scores),
            "model_version": version,
        }
        lead = lead_scores(model, scores, chat, consultant_id)
        self.store.open(row, caller.name, started, extra=lead)
        self._remember(cid, hospital, department)
        self._cache_set(cid, Live(0, session, [], consultant_id, started))
        return {
            "conversation_id": cid,
            "model_version": version,
            "scores": {k: s.as_dict() for k, s in scores.items()},
            "band": band(scores["booked"].probability) if "booked" in scores else None,
        }

    # ---- messages ----------------------------------------------------------
    def message(
        self,
        caller: Caller,
        conversation_id: str,
        role: str,
        text: str,
        at: datetime | None,
        k: int = 3,
        expect_seq: int | None = None,
    ) -> dict[str, Any]:
        """Score and store one message. ``expect_seq``: the position the sender means it for; a chat
        holding another number of messages gets :class:`Conflict` (a resent message is not stored twice)."""
        if not text.strip():
            raise InvalidInput("text is empty")
        if len(text) > MAX_TEXT:
            raise InvalidInput(f"text is {len(text)} characters; the limit is {MAX_TEXT}")
        if caller.hospitals is not None:  # before a claim: a scoped key never touches another's chat
            check_hospital(caller, self.hospital_of(conversation_id), f"conversation {conversation_id!r}")
        with self._lock(conversation_id):
            # the chat's hospital's or department's own model when there are any (remembered in process)
            segment = self.segment_of(conversation_id) if self.models.has_own_models else (None, None)
            model, version = self.models.model_for(*segment)
            live = self._cached(conversation_id)
            for _ in range(3):
                cached = live is not None
                if live is None:
                    live = self._from_store(conversation_id, model)
                if cached and expect_seq is not None and expect_seq > live.n_messages:
                    live = None  # the sender has seen more than this copy: it may be behind the store
                    continue
                if caller.claims({"consultant_id": live.consultant_id}):
                    # the chat becomes the caller's; its session is rebuilt with its consultant, so live
                    # and replayed scores agree (the consultant is one of the model's features)
                    self.claim(caller, conversation_id)
                    live = None
                    continue
                try:
                    _check_position(conversation_id, live.n_messages, expect_seq)
                    return self._append(caller, conversation_id, live, model, version, role, text, at, k)
                except _Stale:
                    live = None
        raise Conflict(f"conversation {conversation_id!r} keeps changing under this request; retry")

    def hospital_of(self, conversation_id: str) -> str | None:
        """The chat's hospital (:class:`NotFound` without the chat); see :meth:`segment_of`."""
        return self.segment_of(conversation_id)[0]

    def segment_of(self, conversation_id: str) -> tuple[str | None, str | None]:
        """The chat's (hospital, department) (:class:`NotFound` without the chat), remembered in process:
        both are set when the chat opens and never change, so scoped keys' messages and the choice of an
        own model read them from the store once."""
        try:
            return self._segments[conversation_id]
        except KeyError:
            pass
        row = self.store.conversation(conversation_id)
        self._remember(conversation_id, row["hospital"], row.get("department"))
        return self._segments[conversation_id]

    def _remember(self, conversation_id: str, hospital: str | None, department: str | None) -> None:
        if len(self._segments) >= 100_000:
            self._segments.clear()
        self._segments[conversation_id] = (hospital, department)

    def claim(self, caller: Caller, conversation_id: str) -> None:
        """Make the calling consultant the consultant of a chat without one, for good; :class:`Forbidden`
        when another consultant claimed it first."""
        if caller.consultant_id is None:  # Caller.claims admits consultants only, and they have an id
            raise Forbidden("only a consultant's key can take a chat")
        owner = self.store.claim(conversation_id, caller.consultant_id, caller.name)
        self._cache_delete(conversation_id)
        if owner != caller.consultant_id:
            raise Forbidden(f"conversation {conversation_id!r} is served by another consultant")

    def _append(
        self,
        caller: Caller,
        conversation_id: str,
        live: Live,
        model: YuyueModel,
        version: str,
        role: str,
        text: str,
        at: datetime | None,
        k: int,
    ) -> dict[str, Any]:
        """Score and store one message on ``live`` (modified in place; dropped from the cache on failure)."""
        chat = {"id": conversation_id, "consultant_id": live.consultant_id}
        if caller.hospitals is not None:  # checked in message(); the hospital of a chat never changes
            chat["hospital"] = self.hospital_of(conversation_id)
        check_write(caller, conversation_id, chat, "write to")
        at = _aware(at, max(datetime.now(UTC), live.last_at))
        if at < live.last_at:
            raise InvalidInput(
                f"message time {at.isoformat()} is before the chat's last message at {live.last_at.isoformat()}"
            )
        seq = live.n_messages
        try:
            with knowledge.serving(self, model, at, lambda: self.hospital_of(conversation_id)):
                insight = model.on_message(live.session, role, text, at, k=k)
            for span in insight.analysis.pii if role == "visitor" else ():
                live.contacts.append([span.type, span.value, seq])
            live.n_messages, live.last_at = seq + 1, at
            shown, message, update = _message_rows(role, text, at, insight, version)
            shadow_scores(self, live.session, message)  # a challenger's scores, stored, never shown
            # a warning for the consultant (the message is stored and sent as typed), kept with the
            # message event for the supervisors' compliance report
            compliance = check_consultant_message(text) if role == "consultant" else None
            if compliance is not None:
                message["compliance"] = stored_compliance(compliance)
            try:
                self.store.append_message(conversation_id, seq, message, shown, update, caller.name)
            except Conflict:
                if self.store.conversation(conversation_id)["closed"]:
                    raise _closed(conversation_id) from None
                raise _Stale from None
        except BaseException:
            self._cache_delete(conversation_id)  # the session was modified: rebuild it next time
            raise
        self._cache_set(conversation_id, live)
        view = self._insight_view(caller, chat, live, insight, shown, seq, version)
        if compliance is not None:
            view["compliance"] = compliance
        return view

    def _cached(self, conversation_id: str) -> Live | None:
        try:
            return self.cache.get(conversation_id)
        except CacheUnavailable as exc:
            log.warning("session cache unavailable, rebuilding %s from the store: %s", conversation_id, exc)
            return None

    def _from_store(self, conversation_id: str, model: YuyueModel) -> Live:
        chat = self.store.conversation(conversation_id)
        if chat["closed"]:
            raise _closed(conversation_id)
        self.cache_misses += 1
        return self.rebuild(chat, model)

    def _insight_view(
        self,
        caller: Caller,
        chat: dict[str, Any],
        live: Live,
        insight: MessageInsight,
        shown: list[dict[str, Any]],
        seq: int,
        version: str,
    ) -> dict[str, Any]:
        raw = caller.sees_raw(chat)
        view = insight_dict(insight)
        form = None if raw else live.session.state.facts.get("address_form")  # filled into replies' slot
        masked_form = mask_address_form(form) if form else None
        view["suggestions"] = [
            {
                "id": s["id"],
                "text": s["text"].replace(form, masked_form) if form else s["text"],
                "source": s["source"],
                "stage": sug.stage,
            }
            for s, sug in zip(shown, insight.suggestions, strict=True)
        ]
        p = insight.scores.get("booked")
        return {
            "conversation_id": chat["id"],
            "seq": seq,
            "model_version": version,
            **view,
            "band": band(p.probability) if p else None,
            "entities": self.entities(live, raw),
            "message_pii": [
                {"type": s.type, "value": s.value if raw else mask_value(s.type, s.value)}
                for s in insight.analysis.pii
            ],
            "masked": not raw,
            "timings_ms": insight.timings_ms,
        }

    @staticmethod
    def entities(live: Live, raw: bool) -> dict[str, Any]:
        """What the visitor has revealed so far; masked unless ``raw``."""
        facts = live.session.state.revealed
        flags = live.session.state.flags
        surname = facts.get("surname")
        contacts, seen = [], set()
        for type_, value, seq in live.contacts:
            if type_ == "surname" or (type_, value) in seen:
                continue
            seen.add((type_, value))
            contacts.append(
                {"type": type_, "value": value if raw else mask_value(type_, value), "message": seq}
            )
        return {
            "surname": surname if raw else (mask_value("surname", surname) if surname else None),
            "address_form": facts.get("address_form")
            if raw
            else (mask_address_form(facts["address_form"]) if facts.get("address_form") else None),
            "gender": facts.get("gender"),
            "age": facts.get("age"),
            "projects": facts.get("projects", []),
            "contact_kinds": facts.get("contact_kinds", []),
            "contacts": contacts,
            "concerns": [c for c in CONCERNS if flags.get("concern_raised_" + c)],
            "concerns_open": [c for c in CONCERNS if flags.get("concern_open_" + c)],
        }

    def rebuild(self, chat: dict[str, Any], model: YuyueModel) -> Live:
        """The session of a stored chat, by replaying its stored messages (no suggestions computed)."""
        visit = Visit.model_validate_json(chat["visit"]) if chat.get("visit") else None
        session, _ = model.open_chat(
            started_at=_local(chat["started_at"]),
            visit=visit,
            department=chat.get("department"),
            project=chat.get("project"),
            consultant_id=chat.get("consultant_id"),
        )
        contacts: list[list[Any]] = []
        messages = self.store.messages(chat["id"])
        for m in messages:
            insight = model.on_message(
                session, m["role"], m["text"], _local(datetime.fromisoformat(m["at"])), suggest=False
            )
            if m["role"] == "visitor":
                contacts += [[s.type, s.value, m["seq"]] for s in insight.analysis.pii]
        last_at = datetime.fromisoformat(messages[-1]["at"]) if messages else chat["started_at"]
        return Live(len(messages), session, contacts, chat.get("consultant_id"), last_at)

    def _cache_set(self, conversation_id: str, live: Live) -> None:
        try:
            self.cache.set(conversation_id, live)
        except CacheUnavailable as exc:
            log.warning("session cache unavailable (%s); the chat will be rebuilt from the store", exc)

    def _cache_delete(self, conversation_id: str) -> None:
        try:
            self.cache.delete(conversation_id)
        except CacheUnavailable:
            pass

    # ---- reads ---------------------------------------------------------------
    def conversation(self, caller: Caller, conversation_id: str) -> dict[str, Any]:
        chat = self.store.conversation(conversation_id)
        check_read(caller, conversation_id, chat)
        raw = caller.sees_raw(chat)
        messages = []
        for m in self.store.messages(conversation_id):
            messages.append(
                {
                    "seq": m["seq"],
                    "role": m["role"],
                    "text": m["text"] if raw else masked_text(m),
                    "at": m["at"],
                    "stage": m.get("stage"),
                    "scores": m.get("scores"),
                }
            )
        return {"conversation": _chat_view(chat), "messages": messages, "masked": not raw}

    # ---- outcome -------------------------------------------------------------
    def outcome(
        self, caller: Caller, conversation_id: str, values: dict[str, Any], close: bool
    ) -> dict[str, Any]:
        with self._lock(conversation_id):
            chat = self.store.conversation(conversation_id)
            check_write(caller, conversation_id, chat, "record outcomes of")
            if caller.claims(chat):
                self.claim(caller, conversation_id)
            update = {k: v for k, v in values.items() if v is not None}
            if update.get("arrived") and not (update.get("booked") or chat["booked"]):
                update["booked"] = True  # an arrival implies the booking
            if update.get("booked") or update.get("arrived"):
                update.setdefault("contact", chat["contact"] if chat["contact"] is not None else True)
            if close:
                update["closed"] = True
            if not update:
                raise InvalidInput(
                    "nothing to record: give at least one of contact, booked, arrived, booked_at, arrived_at, close"
                )
            now = datetime.now(UTC)
            self.store.record(
                conversation_id, "outcome", {k: v for k, v in update.items()}, update, caller.name, now
            )
            if close:
                self._cache_delete(conversation_id)
        for hook in self.outcome_hooks:
            hook(caller, conversation_id, update)
        return _chat_view(self.store.conversation(conversation_id))

    def feedback(
        self, caller: Caller, suggestion_id: str, action: str, final_text: str | None
    ) -> dict[str, Any]:
        if action == "edited" and not (final_text and final_text.strip()):
            raise InvalidInput("action 'edited' needs final_text (the text the consultant sent)")
        if action != "edited" and final_text:
            raise InvalidInput(f"final_text is only for action 'edited', not {action!r}")
        # only the chat's consultant, or a supervisor or admin (recorded with their role)
        conversation_id = self.store.suggestion(suggestion_id)["conversation_id"]
        chat = self.store.conversation(conversation_id)
        check_write(caller, conversation_id, chat, "record feedback on suggestions of")
        if caller.claims(chat):
            with self._lock(conversation_id):
                self.claim(caller, conversation_id)
        row = self.store.feedback(suggestion_id, action, final_text, caller.name, role=caller.recorded_role)
        return {"suggestion_id": suggestion_id, "action": action, "conversation_id": row["conversation_id"]}

    # ---- supervisors -----------------------------------------------------------
    def followups(
        self, filters: Filters, limit: int, offset: int, now: datetime | None = None
    ) -> dict[str, Any]:
        """Follow-up queue ranked by the probability at stake (see :func:`followup_item`)."""
        now = now or datetime.now(UTC)
        items = [followup_item(row, now) for row in self.store.followup_candidates(filters)]
        items.sort(key=lambda x: (-x["priority"], x["conversation_id"]))
        return {
            "total": len(items),
            "limit": limit,
            "offset": offset,
            "items": items[offset : offset + limit],
        }

    def funnel(self, group_by: str | None, filters: Filters) -> dict[str, Any]:
        groups = []
        for row in self.store.funnel(group_by, filters):
            visits = row["visits"] or 0
            groups.append(
                {
                    "group": row["group"],
                    **{k: int(row[k] or 0) for k in ("visits", "chats", "contact", "booked", "arrived")},
                    "contact_rate": _rate(row["contact"], row["chats"]),
                    "booked_rate": _rate(row["booked"], row["chats"]),
                    "arrived_of_booked": _rate(row["arrived"], row["booked"]),
                    "arrived_of_visits": _rate(row["arrived"], visits),
                }
            )
        return {"group_by": group_by, "groups": groups, "suggestions": self.store.acceptance(filters)}

    def export(self, filters: Filters) -> Iterator[dict[str, Any]]:
        """Stored chats as contract records, personal data masked (training data for ``yuyue train``)."""
        for chat, messages in self.store.iter_conversations(filters):
            rec: dict[str, Any] = {
                "conversation_id": chat["id"],
                "started_at": chat["started_at"].astimezone(LOCAL_TZ).isoformat(),
                "messages": [],
            }
            for key in ("hospital", "department", "project", "consultant_id"):
                if chat.get(key):
                    rec[key] = chat[key]
            if chat.get("visit"):
                rec["visit"] = Visit.model_validate_json(chat["visit"]).model_dump(
                    mode="json", exclude_none=True
                )
            for m in messages:
                msg = {"at": m["at"], "role": m["role"], "text": masked_text(m)}
                if m.get("stage") and m["role"] == "consultant":
                    msg["stage"] = m["stage"]
                rec["messages"].append(msg)
            outcome = {k: chat[k] for k in ("contact", "booked", "arrived") if chat.get(k) is not None}
            for k in ("booked_at", "arrived_at"):
                if chat.get(k):
                    outcome[k] = chat[k].isoformat()
            if chat["contact_seen"] and "contact" not in outcome:
                outcome["contact"] = True
            if outcome:
                rec["outcome"] = outcome
            yield rec


def masked_text(message: dict[str, Any]) -> str:
    """A stored message's text with its personal data masked: the spans found when it was received
    (some need the chat's context, such as a bare surname answering 怎么称呼), plus whatever today's
    detector finds elsewhere in it, so messages stored before a detector improved are masked too.
    Today's spans (raw offsets, through the offset map) win where they overlap a stored one: rows stored
    before offsets were raw hold offsets into the normalised text."""
    text = message["text"]
    spans = find_pii_raw(text)
    stored = [PiiSpan(t, a, b, text[a:b]) for t, a, b in message.get("pii", [])]
    spans += [s for s in stored if not any(s.overlaps(f) for f in spans)]
    return mask_text(text, spans)


def stored_compliance(compliance: dict[str, Any]) -> dict[str, Any]:
    """What a consultant message's event keeps of its compliance check: the verdict and the rules
    that fired (id, category, citation, source); the alternative is looked up again when needed."""
    return {
        "allowed": compliance["allowed"],
        "rules": [
            {k: r[k] for k in ("id", "category", "citation", "source") if k in r} for r in compliance["rules"]
        ],
    }


def _message_rows(
    role: str, text: str, at: datetime, insight: MessageInsight, version: str
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """What storing a scored message writes: the suggestions shown, the message row, the chat's update."""
    shown = [
        {"id": uuid.uuid4().hex, "rank": i, "text": s.text, "source": s.source, "reply_id": s.id}
        for i, s in enumerate(insight.suggestions)
    ]
    scores = {n: s.probability for n, s in insight.scores.items()}
    message = {
        "role": role,
        "text": text,
        "at": at.isoformat(),
        "stage": insight.stage,
        "pii": [[s.type, s.start, s.end] for s in raw_spans(text, insight.analysis.pii)],  # raw offsets
        "scores": scores,
        "model_version": version,
        "suggestions": [s["id"] for s in shown],
    }
    update = {
        "last_at": at,
        "visitor": int(role == "visitor"),
        "contact": any(s.type in CONTACT_TYPES for s in insight.analysis.pii),
        "p_booked": scores.get("booked"),
        "p_arrived": scores.get("arrived"),
        "reasons": _reasons_json(insight.scores),
        "model_version": version,
    }
    return shown, message, update


def _rate(a: Any, b: Any) -> float | None:
    return round(int(a or 0) / int(b), 4) if b else None


def lead_scores(
    model: YuyueModel, scores: dict[str, Any], chat: dict[str, Any], consultant_id: str | None
) -> dict[str, float | None]:
    """The reports' expected values (``p_booked_lead`` / ``p_arrived_lead``, kept with the open event):
    the opening (``chat``: open_chat's arguments; ``scores``: with the consultant) scored without its
    consultant, the lead alone, not the consultant's skill the model learned from ``meta.consultant``."""
    if consultant_id is not None:
        _, scores = model.open_chat(**chat)
    return {f"p_{t}_lead": scores[t].probability if t in scores else None for t in ("booked", "arrived")}


def _reasons_json(scores: dict[str, Any]) -> str:
    return orjson.dumps({k: s.as_dict()["reasons"] for k, s in scores.items()}).decode()


def _chat_view(chat: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in chat.items() if k not in ("visit", "reasons")}
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat()
    out["visit"] = orjson.loads(chat["visit"]) if chat.get("visit") else None
    out["reasons"] = orjson.loads(chat["reasons"]) if chat.get("reasons") else {}
    out["band"] = band(chat["p_booked"]) if chat.get("p_booked") is not None else None
    return out


def followup_item(chat: dict[str, Any], now: datetime) -> dict[str, Any]:
    """One queue entry with its priority (the probability at stake) and why.

    - a lead (contact left, not booked): priority = p(booked), the chance a call turns it into a booking;
    - a booking whose arrival is unknown: priority = 1 - p(arrived | booked) ≈ 1 - p_arrived / p_booked,
      the chance the booking is lost without a reminder.
    """
    reasons = orjson.loads(chat["reasons"]) if chat.get("reasons") else {}
    pb, pa = chat.get("p_booked") or 0.0, chat.get("p_arrived") or 0.0
    if chat.get("booked"):
        p_arrive_given_booked = min(1.0, pa / pb) if pb > 0 else 0.0
        kind, priority = "booking_at_risk", 1.0 - p_arrive_given_booked
        why = [r for r in reasons.get("arrived", []) if r["delta"] < 0] or reasons.get("arrived", [])
        summary = f"已预约，到诊把握 {p_arrive_given_booked:.0%}"
        if chat.get("booked_at") and chat["booked_at"] < now - timedelta(days=3):
            summary += "，预约已超过3天"
    else:
        kind, priority = "lead_not_booked", pb
        why = [r for r in reasons.get("booked", []) if r["delta"] > 0] or reasons.get("booked", [])
        summary = f"留了联系方式未预约，预约可能性 {pb:.0%}"
    return {
        "conversation_id": chat["id"],
        "kind": kind,
        "priority": round(priority, 4),
        "summary": summary,
        "reasons": why[:3],
        "p_booked": pb,
        "p_arrived": pa,
        "consultant_id": chat.get("consultant_id"),
        "department": chat.get("department"),
        "hospital": chat.get("hospital"),
        "started_at": chat["started_at"].isoformat(),
        "last_at": chat["last_at"].isoformat(),
    }
