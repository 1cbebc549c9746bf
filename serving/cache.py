"""Cache of per-chat sessions.

The cache is only an accelerator: the event store stays the source of truth, so
a miss (or :class:`CacheUnavailable`) means "rebuild the session from the events".

- :class:`MemoryCache`: LRU in this process, thread-safe (one worker). It keeps
  the session objects themselves (``shared = False``): no encoding per message.
- :class:`RedisCache`: shared by every worker, so it keeps encoded blobs (a few KB
  each), each stamped with a version (for sessions, the chat's message count);
  each write resets the entry's TTL (one day by default), so an active chat never
  expires. Any Redis failure (down, timeout, refused) raises :class:`CacheUnavailable`.
  Every call is bounded by a short socket timeout (``redis_timeout_s``, 0.3 s), and a
  :class:`Breaker` skips Redis for ``redis_cooldown_s`` after a timeout or a refused
  connection, so a paused or unreachable Redis costs one timeout per cool-down, not one
  per request. With a :class:`SessionCipher` the blobs are encrypted (AES-GCM, bound to
  their key and version): the sessions hold what visitors revealed (phone, WeChat, name),
  and nothing raw may live outside the event store.
- :class:`TieredCache`: this process's decoded objects in front of a
  :class:`RedisCache`. A read first asks Redis only for the entry's version (8
  bytes); when it matches the copy held here, that copy is used, so a chat that
  stays on one worker costs no blob transfer and no decoding per message. When
  another worker has moved the chat on, the newer blob is fetched and decoded.
- :func:`make_cache` picks one from the ``redis_url`` setting; :func:`redis_options`
  gives the timeout, cool-down and cipher from the settings.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from yuyue.config import Settings

log = logging.getLogger(__name__)

_VERSION = struct.Struct(">q")  # the version stamp in front of every RedisCache blob


class CacheUnavailable(RuntimeError):
    """The shared cache could not be reached; fall back to rebuilding from the event store."""


# the failures that say "Redis is not answering" (a refused connection, a timeout); they open the breaker
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


class Breaker:
    """A circuit breaker: after a failure, :meth:`allow` says no for ``cooldown_s`` seconds.

    Then one call may try again (half-open); its failure opens the breaker for another
    cool-down, its success (:meth:`reset`) closes it. With a ``probe`` (a function that
    returns True when the dependency answers, bounded by its own timeout), the try is made by
    a background thread instead, and callers keep hearing no until it succeeds: for callers on
    the event loop, which must never wait on the dependency. Thread-safe enough without a lock:
    the worst race lets two calls through at the end of a cool-down.
    """

    def __init__(self, cooldown_s: float = 5.0, probe: Callable[[], bool] | None = None):
        if cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")
        self.cooldown_s = float(cooldown_s)
        self.probe = probe
        self._open_until = 0.0
        self._probing = threading.Lock()
        self.trips = 0  # how many times it opened (for tests and metrics)

    def allow(self) -> bool:
        if time.monotonic() < self._open_until:
            return False
        if self.probe is None or self._open_until == 0.0:
            return True
        if self._probing.acquire(blocking=False):  # half-open: one background try at a time
            threading.Thread(target=self._try_probe, name="yuyue-breaker-probe", daemon=True).start()
        return False

    def _try_probe(self) -> None:
        probe = self.probe
        try:
            ok = probe is not None and bool(probe())
        except Exception:
            ok = False
        finally:
            self._probing.release()
        if ok:
            self.reset()
        else:
            self.trip()

    def left_s(self) -> float:
        return max(0.0, self._open_until - time.monotonic())

    def trip(self) -> None:
        self._open_until = time.monotonic() + self.cooldown_s
        self.trips += 1

    def reset(self) -> None:
        self._open_until = 0.0


def redis_client(url: str, timeout: float) -> redis.Redis:
    """A client whose every call is bounded by ``timeout`` seconds (connect and read).

    One quick retry on a dropped connection (a stale pooled socket), none on a timeout:
    a Redis that does not answer in ``timeout`` is treated as away.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    )


def read_key_file(path: Path, what: str) -> str:
    """The text of the key file ``path``, created if missing (32 random bytes in base64, owner-only,
    in an owner-only folder; atomic, so the first of several workers wins); a file readable by others
    is made owner-only with a warning naming ``what``."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, base64.b64encode(os.urandom(32)) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic; another worker that got there first wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s %s was readable by others (mode %o); making it owner-only", what, path, mode)
        path.chmod(0o600)
    return path.read_text()


class SessionCipher:
    """AES-256-GCM for cached blobs; the associated data binds a blob to its Redis key and version,
    so a blob copied under another chat's key (or version) does not decrypt."""

    MAGIC = b"\x01"
    NONCE = 12

    def __init__(self, key: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise ValueError(f"session key must be 32 bytes, got {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def from_text(cls, text: str) -> SessionCipher:
        """From the ``session_key`` setting: 32 bytes in base64 (urlsafe or standard)."""
        raw = None
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                raw = decode(text.strip().encode())
                break
            except ValueError:
                continue
        if raw is None or len(raw) != 32:
            raise ValueError(
                "session_key must be 32 random bytes in base64 (44 characters), e.g. the output of "
                '`python -c "import os, base64; print(base64.b64encode(os.urandom(32)).decode())"`'
            )
        return cls(raw)

    @classmethod
    def from_file(cls, path: Path) -> SessionCipher:
        """The key in ``path``, created (32 random bytes, owner-only, in an owner-only folder) if missing."""
        return cls.from_text(read_key_file(Path(path), "session key"))

    def encrypt(self, blob: bytes, context: bytes) -> bytes:
        nonce = os.urandom(self.NONCE)
        return self.MAGIC + nonce + self._aead.encrypt(nonce, blob, context)

    def decrypt(self, data: bytes, context: bytes) -> bytes:
        """The blob; ValueError when it was not written with this key for this context."""
        from cryptography.exceptions import InvalidTag

        if not data.startswith(self.MAGIC) or len(data) < 1 + self.NONCE + 16:
            raise ValueError("not an encrypted session blob")
        try:
            return self._aead.decrypt(data[1 : 1 + self.NONCE], data[1 + self.NONCE :], context)
        except InvalidTag:
            raise ValueError(
                "session blob does not decrypt with this key (another key, or tampered)"
            ) from None


@runtime_checkable
class SessionCache(Protocol):
    """What the chat service needs: objects in, objects out (encoding is the cache's business)."""

    shared: bool  # True: other processes see the entries

    def get(self, conversation_id: str) -> Any | None: ...

    def set(self, conversation_id: str, value: Any) -> None: ...

    def delete(self, conversation_id: str) -> None: ...

    def ping(self) -> bool: ...


class MemoryCache:
    """A thread-safe LRU of at most ``max_items`` entries (session objects or blobs), for one process."""

    shared = False

    def __init__(self, max_items: int = 50_000):
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.max_items = max_items
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, conversation_id: str) -> Any | None:
        with self._lock:
            value = self._items.get(conversation_id)
            if value is not None:
                self._items.move_to_end(conversation_id)
            return value

    def set(self, conversation_id: str, value: Any) -> None:
        with self._lock:
            self._items[conversation_id] = value
            self._items.move_to_end(conversation_id)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def delete(self, conversation_id: str) -> None:
        with self._lock:
            self._items.pop(conversation_id, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._items


class RedisCache:
    """Session blobs in Redis under ``prefix + conversation_id``, expiring ``ttl_seconds`` after the last write."""

    shared = True

    def __init__(
        self,
        url: str,
        ttl_seconds: int = 86400,
        prefix: str = "yuyue:session:",
        *,
        timeout: float = 0.3,
        cooldown_s: float = 5.0,
        cipher: SessionCipher | None = None,
    ):
        if ttl_seconds < 1:
            raise ValueError("ttl_seconds must be at least 1")
        self.url = url
        self.ttl_seconds = int(ttl_seconds)
        self.prefix = prefix
        self.cipher = cipher
        self.breaker = Breaker(cooldown_s)
        try:
            self._client = redis_client(url, timeout)
        except (ValueError, redis.RedisError) as exc:
            raise CacheUnavailable(f"invalid Redis URL {url!r}: {exc}") from exc

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args)`` unless the breaker is open; any Redis error becomes :class:`CacheUnavailable`."""
        if not self.breaker.allow():
            raise CacheUnavailable(
                f"Redis session cache: {what} failed: "
                f"skipped for {self.breaker.left_s():.1f}s after a failure"
            )
        try:
            out = fn(*args, **kwargs)
        except redis.RedisError as exc:
            if isinstance(exc, UNREACHABLE):
                self.breaker.trip()
            raise CacheUnavailable(f"Redis session cache: {what} failed: {exc}") from exc
        self.breaker.reset()
        return out

    def _context(self, conversation_id: str, version: int) -> bytes:
        return self._key(conversation_id).encode() + _VERSION.pack(version)

    def _key(self, conversation_id: str) -> str:
        return f"{self.prefix}{conversation_id}"

    def get(self, conversation_id: str) -> bytes | None:
        """The blob, without its version (None when absent)."""
        got = self.fetch(conversation_id)
        return None if got is None else got[1]

    def fetch(self, conversation_id: str) -> tuple[int, bytes] | None:
        """``(version, blob)``, or None when absent (or too short to hold a version, or not readable
        with this cache's cipher)."""
        raw = self._call("get", self._client.get, self._key(conversation_id))
        if raw is None or len(raw) < _VERSION.size:
            return None
        version, blob = _VERSION.unpack_from(raw)[0], raw[_VERSION.size :]
        if self.cipher is not None:
            try:
                blob = self.cipher.decrypt(blob, self._context(conversation_id, version))
            except ValueError as exc:
                log.warning("cached entry %s: %s; treating it as missing", conversation_id, exc)
                return None
        return version, blob

    def version(self, conversation_id: str) -> int | None:
        """The entry's version stamp alone (one 8-byte read), or None when absent."""
        head = self._call("get", self._client.getrange, self._key(conversation_id), 0, _VERSION.size - 1)
        return _VERSION.unpack(head)[0] if len(head) == _VERSION.size else None

    def set(self, conversation_id: str, blob: bytes, version: int = 0) -> None:
        blob = bytes(blob)
        if self.cipher is not None:
            blob = self.cipher.encrypt(blob, self._context(conversation_id, version))
        self._call(
            "set",
            self._client.set,
            self._key(conversation_id),
            _VERSION.pack(version) + blob,
            ex=self.ttl_seconds,
        )

    def delete(self, conversation_id: str) -> None:
        self._call("delete", self._client.delete, self._key(conversation_id))

    def ttl(self, conversation_id: str) -> int | None:
        """Seconds left before the entry expires (None when absent or without expiry)."""
        left = self._call("ttl", self._client.ttl, self._key(conversation_id))
        return left if left is not None and left >= 0 else None

    def ping(self) -> bool:
        """True when Redis answers (for readiness checks; never raises, no wait while the breaker is open)."""
        try:
            return bool(self._call("ping", self._client.ping))
        except CacheUnavailable:
            return False

    def close(self) -> None:
        self._client.close()


class Codec(NamedTuple):
    """How a :class:`TieredCache` turns its objects into blobs and back, and reads their version."""

    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]  # raises ValueError (or TypeError) on a blob it cannot read
    version: Callable[[Any], int]  # grows with every change the shared copy must reflect


class TieredCache:
    """Decoded objects in this process (an LRU of ``max_items``) in front of a shared :class:`RedisCache`.

    ``get`` returns the local copy when Redis holds the same version, else decodes Redis's blob
    (and keeps it); ``set`` keeps the object and writes its blob to Redis. Objects are shared with
    the caller, who must ``delete`` an entry it changed without ``set``-ting it. When Redis cannot
    be reached (or its breaker is open), ``get`` falls back to the local copy (the caller must
    tolerate a stale one: the chat service's conditional store write does) and ``set``/``delete``
    update the local copy only (a warning a minute at most). A Redis copy left behind is older
    by its version, so whoever reads it later sees it is stale (the store's conditional write).
    """

    shared = True

    def __init__(self, far: RedisCache, codec: Codec, max_items: int = 50_000):
        self.far = far
        self.codec = codec
        self.near = MemoryCache(max_items)
        self._last_warning = -float("inf")

    def get(self, conversation_id: str) -> Any | None:
        near = self.near.get(conversation_id)
        if near is not None:
            try:
                if self.far.version(conversation_id) == self.codec.version(near):
                    return near
            except CacheUnavailable as exc:
                self._warn(exc)
                return near
            self.near.delete(conversation_id)  # another worker moved on (or the entry expired)
        got = self.far.fetch(conversation_id)
        if got is None:
            return None
        version, blob = got
        try:
            value = self.codec.loads(blob)
        except (ValueError, TypeError) as exc:
            log.warning("unreadable cached entry %s (%s); treating it as missing", conversation_id, exc)
            return None
        if self.codec.version(value) != version:
            log.warning(
                "cached entry %s: stamped %s, holds %s; treating it as missing",
                conversation_id,
                version,
                self.codec.version(value),
            )
            return None
        self.near.set(conversation_id, value)
        return value

    def set(self, conversation_id: str, value: Any) -> None:
        self.near.set(conversation_id, value)
        if not self.far.breaker.allow():
            return  # skip the encoding too
        try:
            self.far.set(conversation_id, self.codec.dumps(value), self.codec.version(value))
        except CacheUnavailable as exc:
            self._warn(exc)

    def delete(self, conversation_id: str) -> None:
        self.near.delete(conversation_id)
        try:
            self.far.delete(conversation_id)
        except CacheUnavailable as exc:
            self._warn(exc)

    def ping(self) -> bool:
        return self.far.ping()

    def close(self) -> None:
        self.near.clear()
        self.far.close()

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning > 60:
            self._last_warning = now
            log.warning("session cache: Redis unavailable (%s); using this worker's copies", exc)


def make_cache(
    redis_url: str | None, codec: Codec | None = None, *, max_items: int = 50_000, **redis_kwargs: Any
) -> MemoryCache | RedisCache | TieredCache:
    """Where sessions live, from the ``redis_url`` setting.

    No URL: a :class:`MemoryCache` of ``max_items``. A URL: a :class:`TieredCache` over a
    :class:`RedisCache` (``ttl_seconds``, ``prefix``, ``timeout``, ``cooldown_s``, ``cipher``) when
    ``codec`` is given, else the bare :class:`RedisCache` (bytes in, bytes out).
    """
    if not redis_url:
        if redis_kwargs:
            raise TypeError(f"options for Redis given without a Redis URL: {sorted(redis_kwargs)}")
        return MemoryCache(max_items)
    far = RedisCache(redis_url, **redis_kwargs)
    return TieredCache(far, codec, max_items) if codec is not None else far


def session_cipher(settings: Settings) -> SessionCipher:
    """The cipher of cached sessions: the ``session_key`` setting, else the key in
    ``var_dir/secrets/session.key`` (generated on first use, owner-only)."""
    if settings.session_key is not None:
        return SessionCipher.from_text(settings.session_key.get_secret_value())
    return SessionCipher.from_file(settings.var_dir / "secrets" / "session.key")


def redis_options(settings: Settings) -> dict[str, Any]:
    """:func:`make_cache`'s Redis options from the settings (none without ``redis_url``)."""
    if not settings.redis_url:
        return {}
    return {
        "timeout": settings.redis_timeout_s,
        "cooldown_s": settings.redis_cooldown_s,
        "cipher": session_cipher(settings),
    }
