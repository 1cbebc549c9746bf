"""Cache of per-chat sessions.

The cache is only an accelerator: the event store stays the source of truth, so
a miss (or :class:`CacheUnavailable`) means "rebuild the session from the events".

- :class:`MemoryCache`: LRU in this process, thread-safe (one worker). It keeps
  the session objects themselves (``shared = False``): no encoding per message.
- :class:`RedisCache`: shared by every worker, so it keeps encoded blobs (a few KB
  each), each stamped with a version (for sessions, the chat's message count);
  each write resets the entry's TTL (one day by default), so an active chat never
  expires. Any Redis failure (down, timeout, refused) raises :class:`CacheUnavailable`.
- :class:`TieredCache`: this process's decoded objects in front of a
  :class:`RedisCache`. A read first asks Redis only for the entry's version (8
  bytes); when it matches the copy held here, that copy is used, so a chat that
  stays on one worker costs no blob transfer and no decoding per message. When
  another worker has moved the chat on, the newer blob is fetched and decoded.
- :func:`make_cache` picks one from the ``redis_url`` setting.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

_VERSION = struct.Struct(">q")  # the version stamp in front of every RedisCache blob


class CacheUnavailable(RuntimeError):
    """The shared cache could not be reached; fall back to rebuilding from the event store."""


@runtime_checkable
class SessionCache(Protocol):
    """What the chat service needs: objects in, objects out (encoding is the cache's business)."""

    shared: bool  # True: other processes see the entries

    def get(self, conversation_id: str) -> Any | None: ...

    def set(self, conversation_id: str, value: Any) -> None: ...

    def delete(self, conversation_id: str) -> None: ...


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
        timeout: float = 1.0,
    ):
        if ttl_seconds < 1:
            raise ValueError("ttl_seconds must be at least 1")
        self.url = url
        self.ttl_seconds = int(ttl_seconds)
        self.prefix = prefix
        try:
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=30,
                retry=Retry(NoBackoff(), 1),  # one quick retry (stale connection), then CacheUnavailable
            )
        except (ValueError, redis.RedisError) as exc:
            raise CacheUnavailable(f"invalid Redis URL {url!r}: {exc}") from exc

    def _key(self, conversation_id: str) -> str:
        return f"{self.prefix}{conversation_id}"

    def get(self, conversation_id: str) -> bytes | None:
        """The blob, without its version (None when absent)."""
        got = self.fetch(conversation_id)
        return None if got is None else got[1]

    def fetch(self, conversation_id: str) -> tuple[int, bytes] | None:
        """``(version, blob)``, or None when absent (or too short to hold a version)."""
        try:
            raw = self._client.get(self._key(conversation_id))
        except redis.RedisError as exc:
            raise CacheUnavailable(f"Redis session cache: get failed: {exc}") from exc
        if raw is None or len(raw) < _VERSION.size:
            return None
        return _VERSION.unpack_from(raw)[0], raw[_VERSION.size :]

    def version(self, conversation_id: str) -> int | None:
        """The entry's version stamp alone (one 8-byte read), or None when absent."""
        try:
            head = self._client.getrange(self._key(conversation_id), 0, _VERSION.size - 1)
        except redis.RedisError as exc:
            raise CacheUnavailable(f"Redis session cache: get failed: {exc}") from exc
        return _VERSION.unpack(head)[0] if len(head) == _VERSION.size else None

    def set(self, conversation_id: str, blob: bytes, version: int = 0) -> None:
        try:
            self._client.set(
                self._key(conversation_id), _VERSION.pack(version) + bytes(blob), ex=self.ttl_seconds
            )
        except redis.RedisError as exc:
            raise CacheUnavailable(f"Redis session cache: set failed: {exc}") from exc

    def delete(self, conversation_id: str) -> None:
        try:
            self._client.delete(self._key(conversation_id))
        except redis.RedisError as exc:
            raise CacheUnavailable(f"Redis session cache: delete failed: {exc}") from exc

    def ttl(self, conversation_id: str) -> int | None:
        """Seconds left before the entry expires (None when absent or without expiry)."""
        try:
            left = self._client.ttl(self._key(conversation_id))
        except redis.RedisError as exc:
            raise CacheUnavailable(f"Redis session cache: ttl failed: {exc}") from exc
        return left if left is not None and left >= 0 else None

    def ping(self) -> bool:
        """True when Redis answers (for health checks; never raises)."""
        try:
            return bool(self._client.ping())
        except redis.RedisError:
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
    be reached, ``get`` falls back to the local copy (the caller must tolerate a stale one: the
    chat service's conditional store write does) and ``set``/``delete`` raise
    :class:`CacheUnavailable` after updating the local copy.
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
        self.far.set(conversation_id, self.codec.dumps(value), self.codec.version(value))

    def delete(self, conversation_id: str) -> None:
        self.near.delete(conversation_id)
        self.far.delete(conversation_id)

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
    :class:`RedisCache` (``ttl_seconds``, ``prefix``, ``timeout``) when ``codec`` is given, else
    the bare :class:`RedisCache` (bytes in, bytes out).
    """
    if not redis_url:
        if redis_kwargs:
            raise TypeError(f"options for Redis given without a Redis URL: {sorted(redis_kwargs)}")
        return MemoryCache(max_items)
    far = RedisCache(redis_url, **redis_kwargs)
    return TieredCache(far, codec, max_items) if codec is not None else far
