"""Data-subject rights under PIPL on the event store: erasure, access, retention, and the audit log.

- :func:`erase`: irreversibly masks a chat's raw text wherever the store keeps it -- the message
  events' text (their stored personal-data offsets are dropped: the masked text holds none), the
  suggestions shown (a reply filled with the visitor's name: ``王女士您好``) and the text the consultant
  sent instead (``final_text``, also in the feedback events) -- and drops the chat's cached session
  (this worker's copy and Redis'), which holds what the visitor revealed. The statistics stay: the
  chat's row (outcome, scores, counts, funnel facts) and every event's other fields are untouched.
  The chat is linked to its patient first (keyed hashes only), so it still counts in the patient's
  history. An ``erase`` event is appended to the chat's log, the chat is listed in ``erasures``, and an
  ``erase`` row is written to the audit log. Idempotent: masking masked text changes nothing. The chat
  stays usable: its next message rebuilds the session by replaying the masked messages.
- :func:`personal_data`: what the store holds about the visitor of one chat (the messages they sent,
  what was detected in them, the entities Yuyue derived, the visit, outcomes, scores and times), for a
  data-subject access request; recorded as ``access``.
- :func:`purge`: retention -- every chat last active before a cutoff is masked as :func:`erase` does
  (analysts keep the masked chats as training data), each linked to its patient first; chats that received messages since an earlier
  erasure are masked again. One ``purge`` audit row with the counts.

Masking is the project's (``features/pii.py``): each text is masked by :func:`service.masked_text`
(today's detector through the exact offset map, plus the spans stored when the message was received),
then every value detected anywhere in the chat (a phone, a WeChat id, a full name ≥ 2 characters) is
masked wherever else it appears verbatim (the consultant repeating the number, a suggestion quoting it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from yuyue.data.contract import Visit
from yuyue.features.normalize import normalize
from yuyue.features.pii import PiiSpan, find_pii_raw, mask_text
from yuyue.serving.audit import AuditAction
from yuyue.serving.auth import Caller
from yuyue.serving.cache import CacheUnavailable, SessionCache
from yuyue.serving.service import ChatService, masked_text
from yuyue.serving.store import EventStore, NotFound

log = logging.getLogger("yuyue.serving")

MIN_VALUE_CHARS = 5  # a contact value this long is also masked wherever else it appears verbatim
MIN_NAME_CHARS = 2  # a full name (not a bare surname) likewise


# ---- masking a chat -----------------------------------------------------------------------------
def _spans(message: dict[str, Any]) -> list[PiiSpan]:
    """The personal data of one stored message: today's detector, plus the spans stored with it."""
    text = message["text"]
    found = find_pii_raw(text)
    for t, a, b in message.get("pii") or []:
        if 0 <= a < b <= len(text):
            span = PiiSpan(t, a, b, text[a:b])
            if not any(span.overlaps(f) for f in found):
                found.append(span)
    return found


def chat_values(messages: Iterable[dict[str, Any]]) -> dict[str, str]:
    """``{raw value: its mask}`` for the values found in a chat's messages that are long enough to be
    masked wherever they appear (contacts, ids, full names), longest first."""
    out: dict[str, str] = {}
    for m in messages:
        text = m["text"]
        for span in _spans(m):
            raw = text[span.start : span.end].strip()
            if span.type == "surname":
                if len(raw) >= MIN_NAME_CHARS:
                    out[raw] = "*" * len(raw)
                continue
            if len(raw) < MIN_VALUE_CHARS:
                continue
            value = normalize(raw)
            mask = mask_text(raw, [PiiSpan(span.type, 0, len(raw), value)]) if value else "*" * len(raw)
            out[raw] = mask
            if value and len(value) >= MIN_VALUE_CHARS and value not in mask:
                out[value] = mask
    # a masked value never contains another chat value raw (masks hide all but a few characters)
    return dict(sorted(out.items(), key=lambda kv: -len(kv[0])))


def scrub(text: str | None, values: dict[str, str], stored: list[list[Any]] | None = None) -> str | None:
    """``text`` masked: detected spans (and ``stored`` ones: ``[type, start, end]``), then ``values``."""
    if not text:
        return text
    out = masked_text({"text": text, "pii": stored or []})
    for raw, mask in values.items():
        if raw in out:
            out = out.replace(raw, mask)
    return out


def _mask_rows(
    store: EventStore, conversation_id: str
) -> tuple[dict[int, str], dict[str, dict[str, Any]], int, int]:
    """What masking one chat rewrites: ``({event id: new payload}, {suggestion id: new texts},
    messages in the chat, messages changed)``, only the rows that change."""
    rows, shown = store.chat_texts(conversation_id)
    payloads = {r["id"]: orjson.loads(r["payload"]) for r in rows}
    messages = [p for r, p in zip(rows, payloads.values(), strict=True) if r["kind"] == "message"]
    values = chat_values(messages)
    new_events: dict[int, str] = {}
    changed = 0
    for r in rows:
        p = payloads[r["id"]]
        if r["kind"] == "message":
            masked = {**p, "text": scrub(p.get("text"), values, p.get("pii")), "pii": []}
        elif r["kind"] == "feedback" and p.get("final_text"):
            masked = {**p, "final_text": scrub(p["final_text"], values)}
        else:
            continue
        if masked != p:
            new_events[r["id"]] = orjson.dumps(masked).decode()
            changed += r["kind"] == "message"
    new_shown: dict[str, dict[str, Any]] = {}
    for s in shown:
        text, final = scrub(s["text"], values), scrub(s["final_text"], values)
        if (text, final) != (s["text"], s["final_text"]):
            new_shown[s["id"]] = {"text": text, "final_text": final}
    return new_events, new_shown, len(messages), changed


def mask_chat(
    store: EventStore,
    conversation_id: str,
    *,
    reason: str,
    actor: str | None,
    audit: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Mask one chat's raw text in the store (one transaction, with ``audit`` when given); the counts
    of rows changed."""
    new_events, new_shown, n_messages, changed = _mask_rows(store, conversation_id)
    counts = {
        "messages": changed,
        "events": len(new_events),
        "suggestions": len(new_shown),
    }
    store.rewrite_texts(
        conversation_id,
        new_events,
        new_shown,
        reason=reason,
        actor=actor,
        n_messages=n_messages,
        event_payload={"reason": reason, **counts},
        audit=audit,
    )
    return counts


def _drop_session(cache: SessionCache | None, conversation_id: str) -> bool:
    if cache is None:
        return False
    try:
        cache.delete(conversation_id)
        return True
    except CacheUnavailable as exc:
        log.warning("erasure of %s: the session cache could not be reached (%s)", conversation_id, exc)
        return False


def link_patient(settings: Any, store: EventStore, conversation_id: str) -> str | None:
    """Link the chat to its patient (``serving/patients.py``) from its raw text, before the text is
    masked: only keyed hashes are kept, and an erased chat still counts in its patient's history (its
    no-shows, its chats). The patient's id (None: nothing to link it by, or linking failed -- logged:
    erasure is a right and never waits on the history)."""
    from yuyue.serving.patients import Patients

    try:
        return Patients(settings, store).link(conversation_id)
    except NotFound:
        raise
    except Exception:  # noqa: BLE001  (the erasure goes on; the chat just stays unlinked)
        log.exception("could not link %s to its patient before masking it", conversation_id)
        return None


# ---- the rights ---------------------------------------------------------------------------------
def erase(service: ChatService, caller: Caller, conversation_id: str) -> dict[str, Any]:
    """Erase the personal data of one chat (see the module docstring); :class:`NotFound` for an
    unknown chat."""
    store = service.store
    store.conversation(conversation_id)  # NotFound
    # this worker's message path holds the same lock: no message can put a raw session back in the
    # cache between the rewrite and the drop
    with service._lock(conversation_id):  # noqa: SLF001
        patient_id = link_patient(service.settings, store, conversation_id)
        counts = mask_chat(
            store,
            conversation_id,
            reason="erase",
            actor=caller.name,
            audit=audit_row(caller, AuditAction.ERASE, conversation_id=conversation_id),
        )
        dropped = _drop_session(service.cache, conversation_id)
    return {
        "conversation_id": conversation_id,
        "erased": True,
        "changed": counts,
        "session_dropped": dropped,
        "patient_id": patient_id,
    }


def _detected(visitor: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The personal data found in the visitor's messages, each (type, value) once, in order."""
    detected, seen = [], set()
    for m in visitor:
        for span in sorted(_spans(m), key=lambda s: s.start):
            raw = m["text"][span.start : span.end]
            key = (span.type, span.value)
            if key in seen:
                continue
            seen.add(key)
            detected.append({"type": span.type, "value": span.value, "text": raw, "message": m["seq"]})
    return detected


def _outcome(chat: dict[str, Any]) -> dict[str, Any]:
    return {
        "contact": chat.get("contact"),
        "contact_seen": bool(chat.get("contact_seen")),
        "booked": chat.get("booked"),
        "arrived": chat.get("arrived"),
        "booked_at": _iso(chat.get("booked_at")),
        "arrived_at": _iso(chat.get("arrived_at")),
        "closed": bool(chat.get("closed")),
    }


def personal_data(service: ChatService, caller: Caller, conversation_id: str) -> dict[str, Any]:
    """The visitor's data held for one chat, for a data-subject access request (recorded)."""
    store = service.store
    chat = store.conversation(conversation_id)
    messages = store.messages(conversation_id)
    visitor = [m for m in messages if m.get("role") == "visitor"]
    detected = _detected(visitor)
    entities = None
    if service.models.ready:
        model, _version = service.models.get()
        entities = ChatService.entities(service.rebuild(chat, model), raw=True)
    erasure = store.erasure(conversation_id)
    out = {
        "conversation_id": conversation_id,
        "hospital": chat.get("hospital"),
        "department": chat.get("department"),
        "project": chat.get("project"),
        "consultant_id": chat.get("consultant_id"),
        "started_at": _iso(chat["started_at"]),
        "last_at": _iso(chat["last_at"]),
        "visit": Visit.model_validate_json(chat["visit"]).model_dump(mode="json", exclude_none=True)
        if chat.get("visit")
        else None,
        "messages": [{"seq": m["seq"], "at": m["at"], "text": m["text"]} for m in visitor],
        "n_messages": chat["n_messages"],
        "detected": detected,
        "entities": entities,
        "outcome": _outcome(chat),
        "scores": {
            "p_booked": chat.get("p_booked"),
            "p_arrived": chat.get("p_arrived"),
            "model_version": chat.get("model_version"),
        },
        "erased": {"at": _iso(erasure["at"]), "reason": erasure["reason"]} if erasure else None,
        "generated_at": datetime.now(UTC).isoformat(),
    }
    store.audit(
        audit_row(
            caller,
            AuditAction.ACCESS,
            conversation_id=conversation_id,
            detail={"messages": len(visitor), "detected": len(detected)},
        )
    )
    return out


def purge(
    store: EventStore,
    older_than_days: float,
    *,
    actor: str | None,
    role: str | None = None,
    cache: SessionCache | None = None,
    now: datetime | None = None,
    batch: int = 200,
    settings: Any | None = None,
) -> dict[str, Any]:
    """Retention: mask the raw text of every chat last active more than ``older_than_days`` ago, each
    linked to its patient first (with ``settings``' patient key; default: :func:`get_settings`, as
    ``yuyue store purge`` runs)."""
    if not older_than_days > 0:
        raise ValueError(f"older than must be a positive number of days, got {older_than_days!r}")
    if settings is None:
        from yuyue.config import get_settings

        settings = get_settings()
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    totals = {"conversations": 0, "messages": 0, "events": 0, "suggestions": 0}
    while True:
        due = store.erasure_due(cutoff, batch)
        if not due:
            break
        for conversation_id in due:
            try:
                link_patient(settings, store, conversation_id)
                counts = mask_chat(store, conversation_id, reason="purge", actor=actor)
            except NotFound:  # pragma: no cover - deleted meanwhile
                continue
            _drop_session(cache, conversation_id)
            totals["conversations"] += 1
            for k, v in counts.items():
                totals[k] += v
    scope = f"last_at < {cutoff.isoformat()}"
    store.audit(
        {
            "actor": actor,
            "role": role,
            "action": AuditAction.PURGE.value,
            "scope": scope,
            "detail": orjson.dumps({"older_than_days": older_than_days, **totals}).decode(),
        }
    )
    return {"cutoff": cutoff.isoformat(), **totals}


# ---- the audit log ------------------------------------------------------------------------------
def audit_row(
    caller: Caller,
    action: AuditAction,
    *,
    conversation_id: str | None = None,
    scope: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An audit row of ``caller`` doing ``action`` (for :meth:`EventStore.audit`)."""
    return {
        "actor": caller.name,
        "role": caller.role,
        "action": action.value,
        "conversation_id": conversation_id,
        "scope": scope[:512] if scope else None,
        "detail": orjson.dumps(detail).decode() if detail else None,
    }


def record(store: EventStore, caller: Caller, action: AuditAction, **kw: Any) -> None:
    """Write one audit row (see :func:`audit_row`)."""
    store.audit(audit_row(caller, action, **kw))


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None
