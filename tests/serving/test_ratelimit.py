"""serving.ratelimit: per-key token buckets, in process and shared through Redis."""

from __future__ import annotations

import threading
import time

import pytest

from yuyue.serving.ratelimit import RateLimiter


def _drain(limiter: RateLimiter, key, per_minute: int, n: int) -> list[tuple[bool, float]]:
    return [limiter.check(key, per_minute) for _ in range(n)]


def test_in_process_allows_n_then_refuses():
    limiter = RateLimiter(None)
    assert not limiter.shared
    results = _drain(limiter, 1, 5, 5)
    assert all(ok for ok, _ in results) and all(r == 0.0 for _, r in results)
    ok, retry = limiter.check(1, 5)
    assert not ok and 0 < retry <= 12.0  # one token every 12 s at 5/min
    assert limiter.check(2, 5)[0]  # other keys have their own bucket


def test_in_process_refills():
    limiter = RateLimiter(None)
    assert all(ok for ok, _ in _drain(limiter, "k", 600, 600))  # 10 tokens a second
    ok, retry = limiter.check("k", 600)
    assert not ok and 0 < retry <= 0.1
    time.sleep(retry + 0.05)
    assert limiter.check("k", 600)[0]


def test_no_limit_and_bad_limits():
    limiter = RateLimiter(None)
    assert all(limiter.check("k", None) == (True, 0.0) for _ in range(1000))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            limiter.check("k", bad)


def test_in_process_is_thread_safe():
    limiter = RateLimiter(None)
    allowed = []

    def work():
        allowed.append(sum(limiter.check("k", 100)[0] for _ in range(100)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 100 <= sum(allowed) <= 102  # the bucket plus what refills during the run


@pytest.fixture
def rlimiter(redis_url, redis_prefix):
    limiter = RateLimiter(redis_url, prefix=redis_prefix)
    yield limiter
    limiter.close()


def test_redis_allows_n_then_refuses(rlimiter):
    assert rlimiter.shared
    results = _drain(rlimiter, 7, 10, 10)
    assert all(ok for ok, _ in results)
    ok, retry = rlimiter.check(7, 10)
    assert not ok and 0 < retry <= 6.0
    assert rlimiter.check(8, 10)[0]
    rlimiter.reset(7)
    assert rlimiter.check(7, 10)[0]


def test_redis_refills(rlimiter):
    assert all(ok for ok, _ in _drain(rlimiter, "k", 120, 120))  # 2 tokens a second
    for _ in range(10):  # a token or two may have refilled during the burst
        ok, retry = rlimiter.check("k", 120)
        if not ok:
            break
    assert not ok and 0 < retry <= 0.5
    time.sleep(retry + 0.05)
    assert rlimiter.check("k", 120)[0]


def test_two_redis_limiters_share_the_budget(redis_url, redis_prefix):
    a = RateLimiter(redis_url, prefix=redis_prefix)
    b = RateLimiter(redis_url, prefix=redis_prefix)
    try:
        got = [(a if i % 2 else b).check("shared", 6)[0] for i in range(6)]
        assert all(got)
        ok_a, retry_a = a.check("shared", 6)
        ok_b, retry_b = b.check("shared", 6)
        assert not ok_a and not ok_b and retry_a > 0 and retry_b > 0
    finally:
        a.close()
        b.close()


def test_redis_limiter_keys_expire(redis_url, redis_prefix):
    import redis

    limiter = RateLimiter(redis_url, prefix=redis_prefix)
    limiter.check("exp", 5)
    raw = redis.Redis.from_url(redis_url)
    try:
        assert 0 < raw.ttl(f"{redis_prefix}exp") <= 120
    finally:
        raw.close()
        limiter.close()


def test_redis_down_falls_back_to_in_process():
    limiter = RateLimiter("redis://127.0.0.1:1/0", timeout=0.2)  # nothing listens on port 1
    assert all(ok for ok, _ in _drain(limiter, "k", 3, 3))
    ok, retry = limiter.check("k", 3)
    assert not ok and retry > 0
    limiter.close()
