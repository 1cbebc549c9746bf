"""``yuyue serve --workers 2``: two processes on PostgreSQL + Redis, one chat across both, metrics that add up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.utils.bench import load_bench

pytestmark = pytest.mark.integration


def _bench_serve():
    return load_bench("bench_serve")


@pytest.fixture(scope="module")
def bundle_dir(request, tmp_path_factory) -> Path:
    if os.environ.get("YUYUE_TEST_MODEL_DIR"):
        return Path(os.environ["YUYUE_TEST_MODEL_DIR"])
    return request.getfixturevalue("model").save(tmp_path_factory.mktemp("workers") / "bundle")


def _request_count(metrics_text: str) -> float:
    return sum(float(m) for m in re.findall(r"^yuyue_request_seconds_count\{.*\} (\S+)$", metrics_text, re.M))


def test_two_workers_share_chats_and_add_up_their_metrics(bundle_dir, pg_url, redis_url, tmp_path):
    bs = _bench_serve()
    server = bs.Server(bundle_dir, tmp_path / "var", database_url=pg_url, redis_url=redis_url, workers=2)
    key = server.create_key("workers-admin", "admin", 1_000_000)
    server.start()
    try:
        headers = {"X-API-Key": key}
        sent = 0
        pids = set()
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
            opened = client.post("/v1/conversations", json={"conversation_id": "w-1", "department": "男科"})
            assert opened.status_code == 201, opened.text
            cid = opened.json()["conversation_id"]
            sent += 1
            for i in range(30):  # new connections, so the kernel spreads them over both workers
                with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as one:
                    role = "visitor" if i % 2 == 0 else "consultant"
                    r = one.post(
                        f"/v1/conversations/{cid}/messages",
                        json={"role": role, "text": f"第{i}条消息", "seq": i},
                    )
                    sent += 1
                    assert r.status_code == 200, r.text
            chat = client.get(f"/v1/conversations/{cid}").json()
            sent += 1
            assert [m["seq"] for m in chat["messages"]] == list(range(30))
            scrapes = [_request_count(client.get("/metrics").text) for _ in range(6)]
        children = subprocess.run(
            ["pgrep", "-P", str(server.pid)], capture_output=True, text=True
        ).stdout.split()
        pids.update(children)
        assert len(pids) >= 2, f"expected 2 worker processes under {server.pid}, got {children}"
        # every scrape, whichever worker answers it, counts the requests of both workers
        assert all(s >= sent for s in scrapes), (sent, scrapes)
        assert scrapes == sorted(scrapes), scrapes
    finally:
        server.stop()


def test_more_than_one_worker_needs_postgresql_and_redis(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("YUYUE_")}
    env.update(YUYUE_VAR_DIR=str(tmp_path), YUYUE_CONFIG=str(tmp_path / "none.toml"))
    out = subprocess.run(
        [sys.executable, "-m", "yuyue.cli.main", "serve", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert (
        "--workers 2 needs" in out.stderr
        and "YUYUE_DATABASE_URL" in out.stderr
        and "YUYUE_REDIS_URL" in out.stderr
    )
    assert not (tmp_path / "data").exists()  # refused before generating or training anything
