"""serving.cache: the in-process LRU, the shared Redis cache of session blobs, and the two tiered."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone

import pytest

from yuyue.serving.cache import (
    CacheUnavailable,
    Codec,
    MemoryCache,
    RedisCache,
    SessionCache,
    TieredCache,
    make_cache,
)

BLOB = os.urandom(4096)


def test_memory_round_trip():
    cache = MemoryCache()
    assert isinstance(cache, SessionCache)
    assert cache.get("c-1") is None
    cache.set("c-1", BLOB)
    assert cache.get("c-1") == BLOB
    cache.set("c-1", b"v2")
    assert cache.get("c-1") == b"v2"
    cache.delete("c-1")
    cache.delete("c-1")  # deleting a missing entry is fine
    assert cache.get("c-1") is None


def test_memory_lru_eviction():
    cache = MemoryCache(max_items=3)
    for cid in ("a", "b", "c"):
        cache.set(cid, cid.encode())
    assert cache.get("a") == b"a"  # "a" is now the most recently used
    cache.set("d", b"d")  # evicts "b", the least recently used
    assert cache.get("b") is None
    assert [cache.get(c) for c in ("a", "c", "d")] == [b"a", b"c", b"d"]
    assert len(cache) == 3
    cache.set("c", b"c2")  # rewriting refreshes too
    cache.set("e", b"e")  # evicts "a"
    assert cache.get("a") is None and cache.get("c") == b"c2"


def test_memory_is_thread_safe():
    cache = MemoryCache(max_items=500)

    def work(t: int):
        for i in range(2000):
            cache.set(f"{t}-{i % 700}", b"x")
            cache.get(f"{(t + 1) % 4}-{i % 700}")
            if i % 7 == 0:
                cache.delete(f"{t}-{i % 300}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(cache) <= 500


def test_make_cache_picks_the_backend(redis_url, redis_prefix):
    assert isinstance(make_cache(None), MemoryCache)
    assert make_cache(None, max_items=7).max_items == 7
    cache = make_cache(redis_url, prefix=redis_prefix, ttl_seconds=60)
    assert isinstance(cache, RedisCache) and isinstance(cache, SessionCache)
    cache.close()


@pytest.fixture
def rcache(redis_url, redis_prefix):
    cache = RedisCache(redis_url, ttl_seconds=3600, prefix=redis_prefix)
    yield cache
    cache.close()


def test_redis_round_trip(rcache):
    assert rcache.ping()
    assert rcache.get("c-1") is None
    rcache.set("c-1", BLOB)
    assert rcache.get("c-1") == BLOB
    rcache.set("c-1", b"\x00\xffv2")
    assert rcache.get("c-1") == b"\x00\xffv2"
    rcache.delete("c-1")
    rcache.delete("c-1")
    assert rcache.get("c-1") is None


def test_redis_sets_ttl_and_writes_refresh_it(redis_url, redis_prefix):
    import redis

    cache = RedisCache(redis_url, ttl_seconds=100, prefix=redis_prefix)
    cache.set("会话-1", BLOB)
    assert 90 <= cache.ttl("会话-1") <= 100
    raw = redis.Redis.from_url(redis_url)
    try:
        assert 90 <= raw.ttl(f"{redis_prefix}会话-1") <= 100  # stored under the prefix
        raw.expire(f"{redis_prefix}会话-1", 5)
        cache.set("会话-1", BLOB)
        assert cache.ttl("会话-1") > 5
    finally:
        raw.close()
        cache.close()
    assert cache.ttl("missing") is None if cache.ping() else True


def test_redis_entries_expire(redis_url, redis_prefix):
    import time

    cache = RedisCache(redis_url, ttl_seconds=1, prefix=redis_prefix)
    cache.set("short", b"x")
    assert cache.get("short") == b"x"
    time.sleep(1.3)
    assert cache.get("short") is None
    cache.close()


def test_two_redis_caches_share_data(redis_url, redis_prefix):
    a = RedisCache(redis_url, prefix=redis_prefix)
    b = RedisCache(redis_url, prefix=redis_prefix)
    other = RedisCache(redis_url, prefix=redis_prefix + "other:")
    try:
        a.set("c-9", BLOB)
        assert b.get("c-9") == BLOB
        assert other.get("c-9") is None  # prefixes isolate
        b.delete("c-9")
        assert a.get("c-9") is None
    finally:
        for c in (a, b, other):
            c.close()


def test_redis_down_raises_cache_unavailable():
    cache = RedisCache("redis://127.0.0.1:1/0", timeout=0.2)  # nothing listens on port 1
    assert cache.ping() is False
    with pytest.raises(CacheUnavailable, match="get failed"):
        cache.get("c-1")
    with pytest.raises(CacheUnavailable, match="set failed"):
        cache.set("c-1", b"x")
    with pytest.raises(CacheUnavailable, match="delete failed"):
        cache.delete("c-1")
    cache.close()


def test_session_blob_round_trip(redis_url, redis_prefix):
    """A real ChatSession blob survives both caches byte for byte."""
    from yuyue.features.state import ConversationState
    from yuyue.models.bundle import ChatSession
    from yuyue.models.stages import ChatStageTracker

    state = ConversationState.start(
        started_at=datetime(2025, 3, 5, 14, 2, 11, tzinfo=timezone(timedelta(hours=8))),
        department="整形美容",
        project="隆鼻",
        consultant_id="kf01",
    )
    session = ChatSession(state, ChatStageTracker.start())
    session.context.append(("visitor", "你好，隆鼻多少钱？"))
    session.last["booked"] = 0.42
    blob = session.to_bytes()
    mem, red = MemoryCache(), RedisCache(redis_url, prefix=redis_prefix)
    try:
        for cache in (mem, red):
            cache.set("c-42", blob)
            back = ChatSession.from_bytes(cache.get("c-42"))
            assert back.context == session.context and back.last == session.last
    finally:
        red.close()


def test_make_cache_tiers_redis_when_given_a_codec(redis_url, redis_prefix):
    cache = make_cache(redis_url, CODEC, prefix=redis_prefix, max_items=5)
    assert isinstance(cache, TieredCache) and isinstance(cache, SessionCache)
    assert cache.near.max_items == 5 and cache.far.prefix == redis_prefix
    cache.close()
    with pytest.raises(TypeError, match="prefix"):
        make_cache(None, prefix=redis_prefix)


def test_redis_blobs_carry_a_version(rcache):
    assert rcache.version("c-v") is None and rcache.fetch("c-v") is None
    rcache.set("c-v", BLOB, version=41)
    assert rcache.version("c-v") == 41
    assert rcache.fetch("c-v") == (41, BLOB) and rcache.get("c-v") == BLOB
    rcache.set("c-v", b"", version=2**40)
    assert rcache.fetch("c-v") == (2**40, b"")
    rcache._client.set(rcache._key("c-v"), b"short")  # not written by this class
    assert rcache.version("c-v") is None and rcache.fetch("c-v") is None


# ---- the tiered cache: decoded objects here, versioned blobs in Redis ------------------------
class Counter:
    """A stand-in for a chat session: a version and a payload; counts its decodings."""

    loads = 0

    def __init__(self, n: int, payload: str = ""):
        self.n, self.payload = n, payload


def _loads(blob: bytes) -> Counter:
    if not blob.startswith(b"C:"):
        raise ValueError("not a counter")
    Counter.loads += 1
    n, payload = blob[2:].decode().split(":", 1)
    return Counter(int(n), payload)


CODEC = Codec(lambda c: f"C:{c.n}:{c.payload}".encode(), _loads, lambda c: c.n)


@pytest.fixture
def tiers(redis_url, redis_prefix):
    """Two workers' tiered caches over one Redis."""
    a, b = (TieredCache(RedisCache(redis_url, prefix=redis_prefix), CODEC) for _ in range(2))
    yield a, b
    a.close()
    b.close()


def test_tiered_hit_returns_the_object_without_decoding(tiers):
    a, _ = tiers
    assert a.get("c-1") is None
    obj = Counter(3, "三条")
    a.set("c-1", obj)
    before = Counter.loads
    assert a.get("c-1") is obj and a.get("c-1") is obj
    assert Counter.loads == before  # the version matched: nothing fetched or decoded
    assert a.far.fetch("c-1") == (3, "C:3:三条".encode())  # and Redis holds it for the other workers


def test_tiered_picks_up_what_another_worker_wrote(tiers):
    a, b = tiers
    a.set("c-2", Counter(1, "a"))
    seen = b.get("c-2")  # b has no copy yet: decoded from Redis
    assert (seen.n, seen.payload) == (1, "a")
    seen.n, seen.payload = 2, "b"  # b takes the next message
    b.set("c-2", seen)
    newer = a.get("c-2")  # a's own copy is one behind: it must not use it
    assert (newer.n, newer.payload) == (2, "b")
    assert a.get("c-2") is newer  # and keeps the decoded one
    b.delete("c-2")
    assert a.get("c-2") is None  # gone from Redis: a's copy is not trusted either


def test_tiered_treats_unreadable_or_mislabelled_blobs_as_missing(tiers, caplog):
    a, b = tiers
    a.far.set("c-3", b"garbage", version=1)
    assert b.get("c-3") is None
    a.far.set("c-3", b"C:5:x", version=4)  # stamped 4, holds 5
    assert b.get("c-3") is None
    assert "unreadable cached entry c-3" in caplog.text and "stamped 4, holds 5" in caplog.text


def test_tiered_uses_its_own_copy_when_redis_is_down():
    cache = TieredCache(RedisCache("redis://127.0.0.1:1/0", timeout=0.2), CODEC)
    obj = Counter(1)
    cache.set("c-4", obj)  # Redis is away: the local copy is kept, nothing raised
    assert cache.far.breaker.trips == 1 and not cache.far.breaker.allow()
    assert cache.get("c-4") is obj  # the caller's conditional store write guards against staleness
    cache.delete("c-4")
    assert "c-4" not in cache.near
    with pytest.raises(CacheUnavailable, match="get failed"):
        cache.get("c-4")  # nothing here and nothing reachable: the caller rebuilds
    assert cache.ping() is False
    cache.close()


# ---- a Redis that does not answer: bounded calls and a circuit breaker ------------------------
class SilentServer:
    """Accepts connections and reads what is sent, never answers (a paused Redis, as after SIGSTOP)."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.commands = 0  # RESP arrays received (one per command)
        self._conns: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.commands += data.count(b"*") if data.startswith(b"*") else 0

    def close(self) -> None:
        self.sock.close()
        for c in self._conns:
            c.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


def test_breaker_skips_a_silent_redis_after_one_timeout(silent):
    import time

    cache = RedisCache(f"redis://127.0.0.1:{silent.port}/0", timeout=0.2, cooldown_s=30)
    with pytest.raises(CacheUnavailable, match="get failed: Timeout"):
        cache.get("c-1")
    sent = silent.commands
    assert cache.breaker.trips == 1 and sent >= 1
    for _ in range(50):  # every further call is answered at once, without touching the socket
        with pytest.raises(CacheUnavailable, match="skipped"):
            cache.version("c-1")
        with pytest.raises(CacheUnavailable, match="skipped"):
            cache.set("c-1", b"x", 1)
    assert cache.ping() is False
    time.sleep(0.05)
    assert silent.commands == sent and cache.breaker.trips == 1
    cache.close()


def test_breaker_lets_one_call_through_after_the_cooldown(silent, redis_url, redis_prefix):
    import time

    cache = RedisCache(f"redis://127.0.0.1:{silent.port}/0", timeout=0.2, cooldown_s=0.1)
    with pytest.raises(CacheUnavailable):
        cache.get("c-1")
    time.sleep(0.15)
    with pytest.raises(CacheUnavailable, match="Timeout"):  # half-open: tried again, failed again
        cache.get("c-1")
    assert cache.breaker.trips == 2
    cache.close()
    good = RedisCache(redis_url, prefix=redis_prefix, cooldown_s=30)
    good.breaker.trip()
    assert good.ping() is False  # open: not even asked
    good.breaker.reset()
    assert good.ping() is True and good.breaker.allow()
    good.close()


def test_tiered_answers_from_its_own_copy_while_redis_is_silent(silent):
    cache = TieredCache(RedisCache(f"redis://127.0.0.1:{silent.port}/0", timeout=0.2, cooldown_s=30), CODEC)
    obj = Counter(1)
    cache.set("c-5", obj)  # the first call times out and opens the breaker
    sent = silent.commands
    for n in range(2, 40):
        assert cache.get("c-5") is obj
        obj.n = n
        cache.set("c-5", obj)
    assert silent.commands == sent and cache.far.breaker.trips == 1
    cache.close()


# ---- encrypted blobs: nothing a visitor revealed lies in Redis in the clear ---------------------
def test_cipher_blobs_hold_no_plaintext_and_bind_key_and_version(redis_url, redis_prefix):
    import base64

    import redis

    from yuyue.serving.cache import SessionCipher

    key = base64.b64encode(os.urandom(32)).decode()
    cache = RedisCache(redis_url, prefix=redis_prefix, cipher=SessionCipher.from_text(key))
    secret = "我的电话13966012847，微信lucy_0921".encode()
    cache.set("c-1", secret, version=3)
    raw = redis.Redis.from_url(redis_url)
    try:
        stored = raw.get(f"{redis_prefix}c-1")
        assert b"13966012847" not in stored and b"lucy_0921" not in stored and secret not in stored
        assert cache.fetch("c-1") == (3, secret) and cache.version("c-1") == 3
        # the same blob under another chat's key, or with another version stamp, does not decrypt
        raw.set(f"{redis_prefix}c-2", stored)
        assert cache.fetch("c-2") is None
        raw.set(f"{redis_prefix}c-1", (4).to_bytes(8, "big") + stored[8:])
        assert cache.fetch("c-1") is None
        # another key (another machine's) cannot read it either; a cipher-less reader sees ciphertext
        cache.set("c-1", secret, version=3)
        other = RedisCache(redis_url, prefix=redis_prefix, cipher=SessionCipher(os.urandom(32)))
        assert other.fetch("c-1") is None
        plain = RedisCache(redis_url, prefix=redis_prefix)
        assert plain.get("c-1") != secret
    finally:
        raw.close()
        cache.close()


def test_cipher_key_setting_is_checked():
    from yuyue.serving.cache import SessionCipher

    with pytest.raises(ValueError, match="session_key must be 32 random bytes in base64"):
        SessionCipher.from_text("too short")
    with pytest.raises(ValueError, match="32 random bytes"):
        SessionCipher.from_text("YWJj")  # valid base64, 3 bytes


def test_cipher_key_file_is_generated_owner_only(tmp_path):
    import stat

    from yuyue.config import Settings
    from yuyue.serving.cache import redis_options, session_cipher

    settings = Settings(var_dir=tmp_path / "var", redis_url="redis://127.0.0.1:6379/15")
    first = session_cipher(settings)
    path = tmp_path / "var" / "secrets" / "session.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    blob = first.encrypt(b"x", b"ctx")
    assert session_cipher(settings).decrypt(blob, b"ctx") == b"x"  # the same key on the next start
    path.chmod(0o644)
    session_cipher(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tightened
    opts = redis_options(settings)
    assert opts["timeout"] == settings.redis_timeout_s and opts["cooldown_s"] == settings.redis_cooldown_s
    assert redis_options(Settings(var_dir=tmp_path / "v2")) == {}
    assert not (tmp_path / "v2").exists()  # no Redis: no key file either
