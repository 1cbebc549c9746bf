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


# ---- at the API: failed authentications per address, and keys over their limit refused at the edge ----
@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.integration)])
def limited_api(request, tmp_path, test_settings, model):
    from fastapi.testclient import TestClient

    from yuyue.serving.app import create_app

    update = {"var_dir": tmp_path / "var", "model_poll_seconds": 0, "auth_failures_per_minute": 5}
    if request.param == "redis":
        update["redis_url"] = request.getfixturevalue("redis_url")
    app = create_app(test_settings.model_copy(update=update), model, "t1")
    state = app.state.yuyue
    if request.param == "redis":
        state.limiter.prefix = request.getfixturevalue("redis_prefix")  # this test's keys only
        assert state.limiter.shared
    calls = {"check": 0, "authenticate": 0}
    check, authenticate = state.limiter.check, state.keys.authenticate

    def counted_check(*a, **kw):
        calls["check"] += 1
        return check(*a, **kw)

    def counted_authenticate(*a, **kw):
        calls["authenticate"] += 1
        return authenticate(*a, **kw)

    state.limiter.check, state.keys.authenticate = counted_check, counted_authenticate
    with TestClient(app) as client:
        client.calls = calls
        yield client


def test_failed_authentications_are_limited_per_address(limited_api):
    api = limited_api
    good = api.app.state.yuyue.keys.create("desk", "consultant", consultant_id="c01")[1]
    assert api.get("/v1/model", headers={"X-API-Key": good}).status_code == 200
    bad = {"X-API-Key": "yy_0badbad0_" + "x" * 43}  # well-formed: each costs a database look-up
    for _ in range(5):
        r = api.get("/v1/model", headers=bad)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = api.get("/v1/model", headers=bad)
    assert r.status_code == 429 and "too many failed authentications" in r.json()["detail"], r.text
    assert int(r.headers["Retry-After"]) >= 1
    # from now on the address's unknown keys (and requests without one) are refused before any look-up
    seen = dict(api.calls)
    for headers in (bad, {"Authorization": "Bearer yy_12345678_" + "y" * 43}, {}):
        r = api.post("/v1/conversations/x/messages", json={"role": "visitor", "text": "hi"}, headers=headers)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    assert api.calls == seen
    # a key that authenticated before still works from that address; unprotected paths too
    assert api.get("/v1/model", headers={"X-API-Key": good}).status_code == 200
    assert api.get("/healthz").status_code == 200


def test_a_key_flooding_at_its_limit_is_refused_at_the_edge(limited_api):
    api = limited_api
    keys = api.app.state.yuyue.keys
    flood = {"X-API-Key": keys.create("flood", "supervisor", rate_per_minute=3)[1]}
    other = {"X-API-Key": keys.create("other", "supervisor")[1]}
    assert [api.get("/v1/model", headers=flood).status_code for _ in range(4)] == [200, 200, 200, 429]
    seen = dict(api.calls)
    # 200 more: each answered 429 without looking the key up, asking the limiter (Redis) or reading the body
    for _ in range(100):
        r = api.get("/v1/model", headers=flood)
        assert r.status_code == 429 and "rate limit of 3/min" in r.json()["detail"]
        assert 1 <= int(r.headers["Retry-After"]) <= 20
        r = api.post("/v1/conversations/x/messages", content=b"{not json", headers=flood)
        assert r.status_code == 429  # a body that would be a 422 is never parsed
    assert api.calls == seen
    # the other key is unaffected
    assert api.get("/v1/model", headers=other).status_code == 200
    assert api.calls["check"] == seen["check"] + 1


def test_the_edge_block_ends_when_the_bucket_refills(limited_api):
    api = limited_api
    key = {"X-API-Key": api.app.state.yuyue.keys.create("fast", "supervisor", rate_per_minute=600)[1]}
    codes = []
    while 429 not in codes and len(codes) < 2000:
        codes.append(api.get("/v1/model", headers=key).status_code)
    assert codes[-1] == 429 and len(codes) > 600  # the burst, plus what refilled meanwhile
    time.sleep(0.25)  # 10 tokens a second: one is back after 0.1 s
    assert api.get("/v1/model", headers=key).status_code == 200
