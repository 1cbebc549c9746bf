"""Cache of per-chat sessions.

The cache is only an accelerator: the event store stays the source of truth, so
a miss (or :class:`CacheUnavailable`) means "rebuild the session from the events".

- :class:`MemoryCache`: LRU in this process, thread-safe (one worker). It keeps
  the session objects themselves (``shared = False``): no encoding per message.
- :class:`RedisCache`: shared by every worker, so it keeps encoded session blobs
  (``shared = True``; ``Live.to_bytes()``, a few KB each); each write resets the
  entry's TTL (one day by default), so an active chat never expires. Any Redis
  failure (down, timeout, refused) raises :class:`CacheUnavailable`.
- :func:`make_cache` picks one from the ``redis_url`` setting.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Protocol, runtime_checkable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class CacheUnavailable(RuntimeError):
    """The shared cache could not be reached; fall back to rebuilding from the event store."""


@runtime_checkable
class SessionCache(Protocol):
    shared: bool  # True: other processes read the entries, so they must be bytes

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
        try:
            return self._client.get(self._key(conversation_id))
        except redis.RedisError as exc:
            raise CacheUnavailable(f"Redis session cache: get failed: {exc}") from exc

    def set(self, conversation_id: str, blob: bytes) -> None:
        try:
            self._client.set(self._key(conversation_id), bytes(blob), ex=self.ttl_seconds)
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


def make_cache(redis_url: str | None, **kwargs) -> MemoryCache | RedisCache:
    """A :class:`RedisCache` when ``redis_url`` is set, else a :class:`MemoryCache`.

    Keyword arguments go to the chosen class (``ttl_seconds``/``prefix`` or ``max_items``).
    """
    if redis_url:
        return RedisCache(redis_url, **kwargs)
    return MemoryCache(**kwargs)
