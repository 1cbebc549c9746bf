"""serving.auth and ``yuyue keys``: API keys on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from yuyue.serving.auth import (
    ROLES,
    AuthError,
    DuplicateKeyName,
    InvalidKeyField,
    KeyStore,
    MissingConsultantId,
    UnknownKey,
    UnknownRole,
    parse_key,
)


@pytest.fixture
def store(engine):
    return KeyStore(engine)


def _all_database_text(engine) -> str:
    """Every value of every row of every table, as text."""
    meta = sa.MetaData()
    meta.reflect(engine)
    parts = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(sa.select(table)):
                parts.extend(str(v) for v in row)
    return "\n".join(parts)


def test_create_and_authenticate(store):
    key, raw = store.create("alice", "consultant", consultant_id="kf01", rate_per_minute=30)
    assert raw.startswith(f"yy_{key.key_prefix}_") and len(raw) > 40
    assert parse_key(raw) is not None
    assert key.role == "consultant" and key.consultant_id == "kf01" and key.rate_per_minute == 30
    assert key.active and key.created_at.tzinfo is not None

    got = store.authenticate(raw)
    assert got is not None and got.id == key.id and got.name == "alice" and got.consultant_id == "kf01"
    assert store.authenticate(f"  {raw}\n") is not None  # header whitespace is tolerated
    assert (
        store.authenticate(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    )  # same prefix, wrong secret
    assert store.authenticate("yy_00000000_" + "x" * 43) is None
    assert store.authenticate("garbage") is None
    assert store.authenticate("") is None and store.authenticate(None) is None


def test_every_role(store):
    for role in ROLES:
        key, raw = store.create(f"user-{role}", role, consultant_id="kf9" if role == "consultant" else None)
        assert store.authenticate(raw).role == role
    admin = store.authenticate(store.create("root", "ADMIN")[1])
    assert admin.role == "admin" and admin.has_role("analyst")
    sup = store.list()[1]
    assert sup.role == "supervisor" and sup.has_role("supervisor") and not sup.has_role("admin")


def test_raw_key_is_never_stored(store, engine, db_url):
    _key, raw = store.create("bob", "analyst")
    _prefix, secret = parse_key(raw)
    store.authenticate(raw)
    text = _all_database_text(engine)
    assert raw not in text and secret not in text
    if db_url.startswith("sqlite"):
        engine.dispose()
        path = db_url.removeprefix("sqlite:///")
        import pathlib

        for f in pathlib.Path(path).parent.iterdir():
            data = f.read_bytes()
            assert raw.encode() not in data and secret.encode() not in data


def test_validation_errors(store):
    with pytest.raises(UnknownRole, match="unknown role 'boss'"):
        store.create("x", "boss")
    with pytest.raises(MissingConsultantId, match="consultant id"):
        store.create("x", "consultant")
    with pytest.raises(MissingConsultantId):
        store.create("x", "consultant", consultant_id="  ")
    with pytest.raises(InvalidKeyField):
        store.create("  ", "admin")
    with pytest.raises(InvalidKeyField, match="digits"):
        store.create("123", "admin")
    with pytest.raises(InvalidKeyField, match="positive"):
        store.create("x", "admin", rate_per_minute=0)
    assert issubclass(UnknownRole, AuthError) and issubclass(AuthError, ValueError)
    assert store.list() == []


def test_duplicate_names_only_among_active_keys(store):
    first, raw1 = store.create("carol", "supervisor")
    with pytest.raises(DuplicateKeyName, match="carol"):
        store.create("carol", "analyst")
    store.revoke("carol")
    second, raw2 = store.create("carol", "analyst")  # the name is free again
    assert second.id != first.id
    assert store.authenticate(raw1) is None
    assert store.authenticate(raw2).role == "analyst"
    names = [(k.name, k.active) for k in store.list()]
    assert names == [("carol", False), ("carol", True)]
    assert [k.id for k in store.list(include_revoked=False)] == [second.id]


def test_revoke_by_name_and_id(store):
    a, raw_a = store.create("dan", "analyst")
    b, raw_b = store.create("eve", "consultant", consultant_id="kf02")
    assert store.authenticate(raw_a) and store.authenticate(raw_b)  # now cached
    revoked = store.revoke("dan")
    assert revoked.id == a.id and not revoked.active
    assert store.authenticate(raw_a) is None  # same store: immediate, cache or not
    assert store.revoke(str(b.id)).name == "eve"
    assert store.authenticate(raw_b) is None
    with pytest.raises(UnknownKey, match="already revoked"):
        store.revoke(b.id)
    with pytest.raises(UnknownKey, match="no active key named 'nobody'"):
        store.revoke("nobody")
    with pytest.raises(UnknownKey, match="no key with id 999"):
        store.revoke("999")


def test_revocation_elsewhere_takes_effect_within_ttl(engine):
    api = KeyStore(engine, cache_ttl=0.3)
    admin = KeyStore(engine, cache_ttl=0)
    _key, raw = admin.create("frank", "consultant", consultant_id="kf03")
    assert api.authenticate(raw) is not None
    admin.revoke("frank")
    time.sleep(0.4)
    assert api.authenticate(raw) is None


def test_authenticate_is_cached(engine):
    store = KeyStore(engine, cache_ttl=60)
    _key, raw = store.create("gina", "admin")
    assert store.authenticate(raw) is not None
    engine.dispose()
    start = time.perf_counter()
    for _ in range(1000):
        assert store.authenticate(raw) is not None
    assert time.perf_counter() - start < 0.5


def test_list_never_exposes_hashes(store):
    store.create("hal", "admin")
    for key in store.list():
        assert "key_hash" not in key.as_dict() and not hasattr(key, "key_hash")


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    from yuyue.config import get_settings

    monkeypatch.setenv("YUYUE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("YUYUE_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()


def _invoke(*args):
    from yuyue.cli.main import app

    return CliRunner().invoke(app, list(args))


def test_cli_create_list_revoke(cli_env):
    res = _invoke(
        "keys", "create", "王医生", "--role", "consultant", "--consultant-id", "kf07", "--rate", "20"
    )
    assert res.exit_code == 0, res.output
    raw = next(line for line in res.stdout.splitlines() if line.startswith("yy_"))
    assert "shown only once" in res.output
    assert (cli_env / "yuyue.db").exists()

    from yuyue.config import get_settings
    from yuyue.serving.db import make_engine

    engine = make_engine(get_settings().resolved_database_url)
    try:
        key = KeyStore(engine).authenticate(raw)
        assert (
            key is not None
            and key.name == "王医生"
            and key.consultant_id == "kf07"
            and key.rate_per_minute == 20
        )
    finally:
        engine.dispose()

    res = _invoke("keys", "list", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [(r["name"], r["role"], r["active"]) for r in rows] == [("王医生", "consultant", True)]
    assert raw not in res.output and "hash" not in res.output

    res = _invoke("keys", "list")
    assert res.exit_code == 0 and "王医生" in res.output and "active" in res.output and raw not in res.output

    res = _invoke("keys", "revoke", "王医生")
    assert res.exit_code == 0, res.output
    assert "revoked" in res.output
    rows = json.loads(_invoke("keys", "list", "--json").stdout)
    assert rows[0]["active"] is False and rows[0]["revoked_at"]
    assert json.loads(_invoke("keys", "list", "--json", "--active").stdout) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["keys", "create", "x", "--role", "boss"], "unknown role"),
        (["keys", "create", "x", "--role", "consultant"], "consultant id"),
        (["keys", "revoke", "ghost"], "no active key named 'ghost'"),
        (["keys", "revoke", "42"], "no key with id 42"),
    ],
)
def test_cli_errors_are_one_line(cli_env, args, message):
    res = _invoke(*args)
    assert res.exit_code == 1
    assert message in res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert len(res.output.strip().splitlines()) == 1


def test_cli_duplicate_name(cli_env):
    assert _invoke("keys", "create", "ivy", "--role", "analyst").exit_code == 0
    res = _invoke("keys", "create", "ivy", "--role", "admin")
    assert res.exit_code == 1 and "already exists" in res.output


@pytest.mark.parametrize("url", ["mysql://nobody@127.0.0.1/none", "postgresql://nobody@127.0.0.1:1/none"])
def test_cli_bad_database_url(cli_env, monkeypatch, url):
    from yuyue.config import get_settings

    monkeypatch.setenv("YUYUE_DATABASE_URL", url)
    get_settings.cache_clear()
    res = _invoke("keys", "list")
    assert res.exit_code == 1 and "cannot open the key database" in res.output
    assert len(res.output.strip().splitlines()) == 1
