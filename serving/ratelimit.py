"""Per-key rate limits: a token bucket of ``per_minute`` requests.

Each key has a bucket holding at most ``per_minute`` tokens, refilled at
``per_minute / 60`` tokens a second; a request takes one token. A fresh key can
therefore burst ``per_minute`` requests, then proceeds at the steady rate.

``RateLimiter(None)`` keeps buckets in this process (one worker).
``RateLimiter("redis://...")`` keeps them in Redis, updated atomically by a Lua
script that uses the Redis clock, so every worker and machine shares one budget
per key. If Redis cannot be reached the limiter falls back to in-process buckets
(logging a warning at most once a minute) rather than failing requests.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import redis

from yuyue.serving.cache import UNREACHABLE, Breaker, redis_client

log = logging.getLogger(__name__)

_TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local per_sec = capacity / 60.0
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * per_sec)
end
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = (1 - tokens) / per_sec
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return {allowed, tostring(retry)}
"""


class _Bucket:
    __slots__ = ("tokens", "ts")

    def __init__(self, tokens: float, ts: float):
        self.tokens = tokens
        self.ts = ts


class _LocalBuckets:
    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def check(self, key: str, per_minute: int) -> tuple[bool, float]:
        per_sec = per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                b = self._buckets[key] = _Bucket(float(per_minute), now)
            b.tokens = min(float(per_minute), b.tokens + (now - b.ts) * per_sec)
            b.ts = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return True, 0.0
            return False, (1.0 - b.tokens) / per_sec

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


class RateLimiter:
    """``check(key_id, per_minute)`` → ``(allowed, retry_after_seconds)``."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str = "yuyue:ratelimit:",
        timeout: float = 0.3,
        cooldown_s: float = 5.0,
    ):
        self.prefix = prefix
        self._local = _LocalBuckets()
        self._redis: redis.Redis | None = None
        self._script = None
        self._last_warning = -math.inf
        if redis_url:
            # bounded calls, and after a timeout Redis is skipped for cooldown_s (in-process buckets)
            self._redis = redis_client(redis_url, timeout)
            self._script = self._redis.register_script(_TOKEN_BUCKET_LUA)
        # after a failure, Redis is tried again by a background ping, never by a caller: check() runs on the
        # event loop, so a paused Redis costs one timeout per outage there, not one per cool-down
        self._breaker = Breaker(cooldown_s, probe=self._ping)

    def _ping(self) -> bool:
        try:
            return self._redis is not None and bool(self._redis.ping())
        except redis.RedisError:
            return False

    @property
    def shared(self) -> bool:
        """True when the buckets live in Redis."""
        return self._redis is not None

    def check(self, key_id: str | int, per_minute: int | None) -> tuple[bool, float]:
        """Take one token from ``key_id``'s bucket. ``per_minute=None`` means no limit."""
        if per_minute is None:
            return True, 0.0
        if isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute < 1:
            raise ValueError(f"per_minute must be a positive integer or None, got {per_minute!r}")
        key = f"{self.prefix}{key_id}"
        if self._script is not None and self._breaker.allow():
            try:
                allowed, retry = self._script(keys=[key], args=[per_minute])
                self._breaker.reset()
                return bool(int(allowed)), float(retry)
            except redis.RedisError as exc:
                if isinstance(exc, UNREACHABLE):
                    self._breaker.trip()
                now = time.monotonic()
                if now - self._last_warning > 60:
                    self._last_warning = now
                    log.warning("rate limiter: Redis unavailable (%s); limiting per process", exc)
        return self._local.check(key, per_minute)

    def reset(self, key_id: str | int | None = None) -> None:
        """Forget one key's bucket (or every in-process bucket when ``key_id`` is None)."""
        if key_id is None:
            self._local.reset()
            return
        key = f"{self.prefix}{key_id}"
        with self._local._lock:
            self._local._buckets.pop(key, None)
        if self._redis is not None:
            try:
                self._redis.delete(key)
            except redis.RedisError:
                pass

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
