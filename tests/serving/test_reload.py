"""The server loads the registry's champion, waits without one, and follows promotions (reload and polling)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from yuyue.serving.app import create_app
from yuyue.training import registry


def test_start_without_champion_then_reload_then_poll(model, registry_settings, tmp_path):
    settings = registry_settings(0.5)
    bundle = model.save(tmp_path / "bundle")
    app = create_app(settings)
    analyst = app.state.yuyue.keys.create("ana", "analyst")[1]
    h = {"X-API-Key": analyst}
    with TestClient(app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "no model loaded" in ready.json()["problems"]
        r = client.post("/v1/conversations", json={}, headers=h)
        assert r.status_code == 503 and "no model loaded" in r.json()["detail"]
        assert client.post("/v1/admin/reload", headers=h).json() == {
            "version": None,
            "changed": False,
            "hospitals": {},
            "departments": {},
            "detail": "no champion registered",
        }

        _, v1 = registry.log_and_register(model, bundle, {}, settings=settings)
        registry.promote(v1, settings)
        # the poller may win the race; either way the champion is in use afterwards
        client.post("/v1/admin/reload", headers=h)
        assert client.get("/readyz").json()["model_version"] == v1
        assert client.post("/v1/admin/reload", headers=h).json() == {
            "version": v1,
            "changed": False,
            "hospitals": {},
            "departments": {},
        }

        _, v2 = registry.log_and_register(model, bundle, {}, settings=settings)
        registry.promote(v2, settings)
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["model_version"] != v2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get("/readyz").json()["model_version"] == v2
        assert f'yuyue_model_info{{version="{v2}"}} 1.0' in client.get("/metrics").text
        # and it serves with it
        assert client.post("/v1/conversations", json={}, headers=h).status_code == 403  # analysts do not chat
