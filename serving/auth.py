"""API keys and authorization: one key per user, each with a role; who may do what.

Roles:

- ``consultant``: answers chats as one consultant (``consultant_id`` is required);
- ``supervisor``: reviews replies and watches the desk;
- ``analyst``: reads metrics and funnels, manages models;
- ``admin``: everything, including keys.

Hospitals (tenancy, issue 17): a key may be scoped to one or more hospitals (``hospitals``, stored as
a JSON list; empty: a group-level key that sees every hospital). A scoped key reads, writes, claims
and lists only chats whose ``hospital`` is one of its own (a chat without a hospital belongs to none,
so only group-level keys see it), gets 403 naming the hospital otherwise, and cannot change what every
hospital shares (the model, the knowledge, reply reviews, the audit log): see :meth:`Caller.in_scope`,
:func:`check_hospital` and :func:`require_group`.

A raw key looks like ``yy_<prefix>_<secret>``: ``prefix`` is 8 hex characters,
stored in clear to find the row and to tell keys apart in listings; ``secret``
comes from :func:`secrets.token_urlsafe` (256 bits). The raw key is returned once
by :meth:`KeyStore.create` and never stored: the table keeps only its SHA-256
digest (keys are random and long, so a slow password hash would add nothing), and
:meth:`KeyStore.authenticate` compares digests with :func:`hmac.compare_digest`.

Caching: :meth:`KeyStore.authenticate` remembers successful look-ups in process
for ``cache_ttl`` seconds (default 5). Revoking through the same ``KeyStore``
takes effect at once; revoking elsewhere (the CLI, another worker) takes effect
in every process within ``cache_ttl`` seconds. ``cache_ttl=0`` turns the cache off.

Authorization lives here too, on :class:`Caller` (who is calling) and the ``may_*`` / ``check_*``
functions: every rule names roles through :class:`Role`; the API's dependencies
(``serving/deps.py``) and the chat service only call them.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from yuyue.serving.db import UTCDateTime, create_all, metadata, utcnow
from yuyue.serving.errors import Forbidden, InvalidInput

KEY_TAG = "yy"
PREFIX_HEX = 8
DEFAULT_CACHE_TTL = 5.0
MAX_CACHE_ITEMS = 10_000
MAX_HOSPITALS = 50  # hospitals of one key
MAX_HOSPITAL_LEN = 128  # conversations.hospital is String(128)
_KEY_RE = re.compile(rf"^{KEY_TAG}_([0-9a-f]{{{PREFIX_HEX}}})_([A-Za-z0-9_-]{{20,200}})$")


class Role(enum.StrEnum):
    CONSULTANT = "consultant"
    SUPERVISOR = "supervisor"
    ANALYST = "analyst"
    ADMIN = "admin"


ROLES: tuple[str, ...] = tuple(r.value for r in Role)


class AuthError(ValueError):
    """Base class of every key-management error; the message names the problem."""


class UnknownRole(AuthError):
    pass


class MissingConsultantId(AuthError):
    pass


class DuplicateKeyName(AuthError):
    pass


class UnknownKey(AuthError):
    pass


class InvalidKeyField(AuthError):
    pass


api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("consultant_id", sa.String(64), nullable=True),
    sa.Column("key_prefix", sa.String(16), nullable=False, unique=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("rate_per_minute", sa.Integer, nullable=True),
    # the hospitals the key is scoped to, a JSON list of names; NULL: every hospital (group level)
    sa.Column("hospitals", sa.Text, nullable=True),
    sa.CheckConstraint(f"role IN ({', '.join(repr(r) for r in ROLES)})", name="role"),
    sa.CheckConstraint(
        f"role <> '{Role.CONSULTANT.value}' OR consultant_id IS NOT NULL", name="consultant_id"
    ),
    sa.CheckConstraint("rate_per_minute IS NULL OR rate_per_minute > 0", name="rate"),
)
# a name is unique among the active keys; revoked keys keep their name for the audit trail
sa.Index(
    "uq_api_keys_active_name",
    api_keys.c.name,
    unique=True,
    sqlite_where=api_keys.c.revoked_at.is_(None),
    postgresql_where=api_keys.c.revoked_at.is_(None),
)


@dataclass(frozen=True)
class ApiKey:
    """A key as the service sees it (never the raw key nor its hash)."""

    id: int
    name: str
    role: str
    consultant_id: str | None
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    rate_per_minute: int | None
    hospitals: tuple[str, ...] = ()  # empty: every hospital (a group-level key)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def has_role(self, *roles: str) -> bool:
        """True when the key's role is one of ``roles`` (admins pass every check)."""
        return self.role == Role.ADMIN or self.role in roles

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "consultant_id": self.consultant_id,
            "key_prefix": self.key_prefix,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "rate_per_minute": self.rate_per_minute,
            "hospitals": list(self.hospitals),
            "active": self.active,
        }


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def parse_key(raw: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed raw key, else None."""
    m = _KEY_RE.match(raw.strip()) if isinstance(raw, str) else None
    return (m.group(1), m.group(2)) if m else None


def _checked_key_fields(
    name: str, role: str, consultant_id: str | None, rate_per_minute: int | None
) -> tuple[str, str, str | None]:
    """``(name, role, consultant_id)`` of a new key, trimmed; :class:`AuthError` naming what is wrong."""
    name = (name or "").strip()
    if not name:
        raise InvalidKeyField("key name must not be empty")
    if len(name) > 100:
        raise InvalidKeyField("key name is longer than 100 characters")
    if name.isdigit():
        raise InvalidKeyField(f"key name {name!r} is all digits (reserved for key ids)")
    role = (role or "").strip().lower()
    if role not in ROLES:
        raise UnknownRole(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    consultant_id = (consultant_id or "").strip() or None
    if role == Role.CONSULTANT and consultant_id is None:
        raise MissingConsultantId("a consultant key needs the consultant id it serves as (--consultant-id)")
    if consultant_id is not None and len(consultant_id) > 64:
        raise InvalidKeyField("consultant id is longer than 64 characters")
    if rate_per_minute is not None and (
        isinstance(rate_per_minute, bool) or not isinstance(rate_per_minute, int) or rate_per_minute < 1
    ):
        raise InvalidKeyField(f"rate per minute must be a positive integer, got {rate_per_minute!r}")
    return name, role, consultant_id


def checked_hospitals(hospitals: Any) -> tuple[str, ...]:
    """The hospitals of a key, trimmed, deduplicated in order; :class:`InvalidKeyField` naming a name that
    is empty, too long or not text, or too many of them. Empty: every hospital."""
    if hospitals is None:
        return ()
    if isinstance(hospitals, str) or not isinstance(hospitals, (list, tuple)):
        raise InvalidKeyField(f"hospitals must be a list of hospital names, got {hospitals!r}")
    out: list[str] = []
    for h in hospitals:
        if not isinstance(h, str) or not h.strip():
            raise InvalidKeyField(f"hospital name must be non-empty text, got {h!r}")
        h = h.strip()
        if len(h) > MAX_HOSPITAL_LEN:
            raise InvalidKeyField(f"hospital name {h[:20]!r}... is longer than {MAX_HOSPITAL_LEN} characters")
        if h not in out:
            out.append(h)
    if len(out) > MAX_HOSPITALS:
        raise InvalidKeyField(f"a key is scoped to at most {MAX_HOSPITALS} hospitals, got {len(out)}")
    return tuple(out)


def _hospitals_column(hospitals: tuple[str, ...]) -> str | None:
    return json.dumps(list(hospitals), ensure_ascii=False) if hospitals else None


def _row_to_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        role=row.role,
        consultant_id=row.consultant_id,
        key_prefix=row.key_prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        rate_per_minute=row.rate_per_minute,
        hospitals=tuple(json.loads(row.hospitals)) if row.hospitals else (),
    )


_PUBLIC_COLUMNS = [c for c in api_keys.c if c.name != "key_hash"]


class KeyStore:
    """Create, revoke, list and check API keys in the ``api_keys`` table of ``engine``."""

    def __init__(self, engine: Engine, *, cache_ttl: float = DEFAULT_CACHE_TTL, create: bool = True):
        self.engine = engine
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, ApiKey]] = {}  # key hash -> (expires at, key)
        self._known: set[str] = set()  # hashes of keys that authenticated (see known())
        self._lock = threading.Lock()
        if create:
            create_all(engine, tables=[api_keys])

    # ---------------------------------------------------------------- management
    def create(
        self,
        name: str,
        role: str,
        consultant_id: str | None = None,
        rate_per_minute: int | None = None,
        hospitals: Any = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its raw value (show it once: it cannot be recovered); ``hospitals``: the
        hospitals it is scoped to (none: every hospital)."""
        name, role, consultant_id = _checked_key_fields(name, role, consultant_id, rate_per_minute)
        scoped = checked_hospitals(hospitals)
        for _attempt in range(5):  # prefix collisions are very unlikely; retry if one happens
            prefix = secrets.token_hex(PREFIX_HEX // 2)
            raw = f"{KEY_TAG}_{prefix}_{secrets.token_urlsafe(32)}"
            made = ApiKey(
                id=0,  # the database's
                name=name,
                role=role,
                consultant_id=consultant_id,
                key_prefix=prefix,
                created_at=utcnow(),
                revoked_at=None,
                rate_per_minute=rate_per_minute,
                hospitals=scoped,
            )
            values = {k: v for k, v in asdict(made).items() if k != "id"} | {
                "key_hash": hash_key(raw),
                "hospitals": _hospitals_column(scoped),
            }
            try:
                with self.engine.begin() as conn:
                    if self._active_by_name(conn, name) is not None:
                        raise DuplicateKeyName(f"an active key named {name!r} already exists")
                    key_id = conn.execute(
                        api_keys.insert().values(**values).returning(api_keys.c.id)
                    ).scalar_one()
            except IntegrityError as exc:
                with self.engine.connect() as conn:
                    if self._active_by_name(conn, name) is not None:
                        raise DuplicateKeyName(f"an active key named {name!r} already exists") from None
                if "prefix" in str(exc.orig) or "hash" in str(exc.orig):
                    continue
                raise
            return replace(made, id=key_id), raw
        raise RuntimeError("could not draw a unique key prefix")  # pragma: no cover

    def revoke(self, name_or_id: str | int) -> ApiKey:
        """Revoke the active key with this name, or the key with this id."""
        ident = str(name_or_id).strip()
        with self.engine.begin() as conn:
            if ident.isdigit():
                row = conn.execute(
                    sa.select(*_PUBLIC_COLUMNS).where(api_keys.c.id == int(ident))
                ).one_or_none()
                if row is None:
                    raise UnknownKey(f"no key with id {ident}")
                if row.revoked_at is not None:
                    raise UnknownKey(
                        f"key {ident} ({row.name}) was already revoked at {row.revoked_at.isoformat()}"
                    )
            else:
                row = self._active_by_name(conn, ident)
                if row is None:
                    raise UnknownKey(f"no active key named {ident!r}")
            now = utcnow()
            done = conn.execute(
                api_keys.update()
                .where(api_keys.c.id == row.id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            ).rowcount
            if done != 1:  # pragma: no cover - revoked concurrently
                raise UnknownKey(f"key {row.id} ({row.name}) was already revoked")
        with self._lock:
            for h, (_exp, key) in list(self._cache.items()):
                if key.id == row.id:
                    del self._cache[h]
                    self._known.discard(h)
        return replace(_row_to_key(row), revoked_at=now)

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        query = sa.select(*_PUBLIC_COLUMNS).order_by(api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_row_to_key(r) for r in conn.execute(query)]

    def get(self, name_or_id: str | int) -> ApiKey | None:
        """The key with this id, or the active key with this name."""
        ident = str(name_or_id).strip()
        with self.engine.connect() as conn:
            if ident.isdigit():
                row = conn.execute(
                    sa.select(*_PUBLIC_COLUMNS).where(api_keys.c.id == int(ident))
                ).one_or_none()
            else:
                row = self._active_by_name(conn, ident)
        return _row_to_key(row) if row is not None else None

    # ---------------------------------------------------------------- checking
    def authenticate(self, raw: str | None) -> ApiKey | None:
        """The active key matching ``raw``, else None (malformed, unknown or revoked)."""
        if not raw:
            return None
        parsed = parse_key(raw)
        if parsed is None:
            return None
        raw = raw.strip()
        digest = hash_key(raw)
        now = time.monotonic()
        if self.cache_ttl > 0:
            with self._lock:
                hit = self._cache.get(digest)
            if hit is not None:
                if hit[0] > now:
                    return hit[1]
                with self._lock:
                    self._cache.pop(digest, None)
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(api_keys).where(api_keys.c.key_prefix == parsed[0], api_keys.c.revoked_at.is_(None))
            ).one_or_none()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        key = _row_to_key(row)
        with self._lock:
            if len(self._known) >= MAX_CACHE_ITEMS:
                self._known.clear()
            self._known.add(digest)
            if self.cache_ttl > 0:
                if len(self._cache) >= MAX_CACHE_ITEMS:
                    self._cache.clear()
                self._cache[digest] = (now + self.cache_ttl, key)
        return key

    def cached(self, raw: str | None) -> ApiKey | None:
        """The key matching ``raw`` when :meth:`authenticate` found it within ``cache_ttl`` seconds,
        else None. No I/O, so safe on the event loop; on None, :meth:`authenticate` (which may wait on
        the database) tells a valid key from an invalid one."""
        if not raw or self.cache_ttl <= 0:
            return None
        with self._lock:
            hit = self._cache.get(hash_key(raw.strip()))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def known(self, digest: str) -> bool:
        """True when a key with this hash (:func:`hash_key`) authenticated in this process: the API lets
        such keys past the per-address block that failed authentications earn (an attacker cannot
        guess one), so consoles sharing an address with a misbehaving client keep working."""
        return digest in self._known

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _active_by_name(conn: sa.Connection, name: str) -> Any:
        return conn.execute(
            sa.select(*_PUBLIC_COLUMNS).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
        ).one_or_none()


# ---- authorization ------------------------------------------------------------------------------
# who may write to a chat besides its consultant
CHAT_WRITERS = (Role.SUPERVISOR, Role.ADMIN)


@dataclass
class Caller:
    """Who is calling: the key's name, role, (for consultants) the consultant id they serve as, and the
    hospitals the key is scoped to (None: every hospital)."""

    name: str
    role: str
    consultant_id: str | None = None
    hospitals: tuple[str, ...] | None = None

    def in_scope(self, hospital: str | None) -> bool:
        """True when a chat of ``hospital`` is within the key's hospitals. A chat without a hospital
        belongs to none: only group-level keys see it (as ``Filters.hospitals`` lists it)."""
        return self.hospitals is None or (hospital is not None and hospital in self.hospitals)

    def has_role(self, *roles: Role) -> bool:
        """True when the caller's role is one of ``roles`` (admins pass every check)."""
        return self.role == Role.ADMIN or self.role in roles

    def sees_raw(self, chat: dict[str, Any]) -> bool:
        """Raw personal data only in the live view of the consultant serving this chat."""
        return (
            self.role == Role.CONSULTANT
            and self.consultant_id is not None
            and chat.get("consultant_id") == self.consultant_id
        )

    def may_write(self, chat: dict[str, Any]) -> bool:
        """Its consultant (a chat without one is claimed by the first consultant who writes to it:
        see :meth:`ChatService.claim`), a supervisor or an admin; within the key's hospitals."""
        if not self.in_scope(chat.get("hospital")):
            return False
        if self.role == Role.CONSULTANT:
            return chat.get("consultant_id") in (None, self.consultant_id)
        return self.role in CHAT_WRITERS

    def may_read(self, chat: dict[str, Any]) -> bool:
        """Consultants read their own chats and unclaimed ones; every other role reads every chat; all
        within the key's hospitals."""
        if not self.in_scope(chat.get("hospital")):
            return False
        return self.role != Role.CONSULTANT or chat.get("consultant_id") in (None, self.consultant_id)

    def claims(self, chat: dict[str, Any]) -> bool:
        """True when this write makes the caller the consultant of a chat that has none."""
        return (
            self.role == Role.CONSULTANT
            and self.consultant_id is not None
            and chat.get("consultant_id") is None
            and self.in_scope(chat.get("hospital"))
        )

    @property
    def recorded_role(self) -> str | None:
        """The role recorded with feedback: none for consultants (the chat's own), else the caller's."""
        return None if self.role == Role.CONSULTANT else self.role


def require_role(caller: Caller, roles: tuple[Role, ...]) -> Caller:
    """``caller`` when its role is one of ``roles`` (or admin), else :class:`Forbidden`."""
    if not caller.has_role(*roles):
        needs = ", ".join((*roles, Role.ADMIN))
        raise Forbidden(f"role {caller.role!r} cannot do this (needs one of: {needs})")
    return caller


def chat_consultant(caller: Caller, consultant_id: str | None) -> str | None:
    """The consultant of a chat ``caller`` opens for ``consultant_id``: a consultant opens its own chats
    only; supervisors and admins open them for anyone; other roles cannot open chats."""
    if caller.role == Role.CONSULTANT:
        if consultant_id not in (None, caller.consultant_id):
            raise Forbidden(
                f"a consultant key for {caller.consultant_id!r} cannot open a chat for {consultant_id!r}"
            )
        return caller.consultant_id
    if caller.role not in CHAT_WRITERS:
        raise Forbidden(f"role {caller.role!r} cannot open chats")
    return consultant_id


def _scope_text(caller: Caller) -> str:
    return ", ".join(repr(h) for h in caller.hospitals or ())


def check_hospital(caller: Caller, hospital: str | None, what: str) -> None:
    """:class:`Forbidden` naming the hospital when ``what`` (e.g. "conversation 'x'") belongs to a
    hospital outside the caller's."""
    if caller.in_scope(hospital):
        return
    where = f"belongs to hospital {hospital!r}" if hospital is not None else "has no hospital"
    raise Forbidden(f"{what} {where}; key {caller.name!r} is scoped to hospitals {_scope_text(caller)}")


def require_group(caller: Caller, what: str) -> Caller:
    """``caller`` unless its key is scoped to hospitals: ``what`` (e.g. 'reloading the model') is shared
    by every hospital, so only a group-level key (no hospitals) may do it."""
    if caller.hospitals is not None:
        raise Forbidden(
            f"{what} concerns every hospital: key {caller.name!r} is scoped to hospitals "
            f"{_scope_text(caller)}; use a group-level key (one without hospitals)"
        )
    return caller


def chat_hospital(caller: Caller, hospital: str | None) -> str | None:
    """The hospital of a chat ``caller`` opens: a scoped key opens chats of its hospitals only, and one
    scoped to a single hospital gets it by default."""
    if caller.hospitals is None:
        return hospital
    if hospital is None:
        if len(caller.hospitals) == 1:
            return caller.hospitals[0]
        raise InvalidInput(
            f"hospital: key {caller.name!r} is scoped to hospitals {_scope_text(caller)}; say which one"
        )
    check_hospital(caller, hospital, "a new conversation")
    return hospital


def check_write(caller: Caller, conversation_id: str, chat: dict[str, Any], what: str) -> None:
    """:class:`Forbidden` unless ``caller`` may write to the chat; ``what``: e.g. 'write to'."""
    check_hospital(caller, chat.get("hospital"), f"conversation {conversation_id!r}")
    if not caller.may_write(chat):
        raise Forbidden(f"key {caller.name!r} may not {what} conversation {conversation_id!r}")


def check_read(caller: Caller, conversation_id: str, chat: dict[str, Any]) -> None:
    check_hospital(caller, chat.get("hospital"), f"conversation {conversation_id!r}")
    if not caller.may_read(chat):
        raise Forbidden(f"conversation {conversation_id!r} is served by another consultant")


def report_consultant(caller: Caller, consultant: str | None) -> str | None:
    """The consultant filter of a report (queue, funnel, export): consultants see their own chats only."""
    return caller.consultant_id if caller.role == Role.CONSULTANT else consultant
