"""Per-hospital models at serve time (issue 17): a chat of a hospital with its own model is scored by it,
every other chat by the champion; the stored model version names the model that scored; reload follows
the ``hospital-*`` aliases (new ones loaded, removed ones dropped)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from yuyue.serving.app import create_app
from yuyue.training import registry

T0 = "2025-03-05T14:02:00+08:00"


def _open(client, headers, hospital, department="整形美容"):
    body = {"started_at": T0, "department": department, "project": "隆鼻"}
    if hospital is not None:
        body["hospital"] = hospital
    r = client.post("/v1/conversations", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def _say(client, headers, cid, seq, text):
    r = client.post(
        f"/v1/conversations/{cid}/messages",
        json={
            "role": "visitor",
            "text": text,
            "at": f"2025-03-05T14:{3 + seq:02d}:00+08:00",
        },
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return r.json()


def _stored_version(client, headers, cid):
    return client.get(f"/v1/conversations/{cid}", headers=headers).json()["conversation"]["model_version"]


def test_a_hospitals_own_model_scores_its_chats_and_reload_follows_the_aliases(
    model, registry_settings, tmp_path
):
    settings = registry_settings(0)  # no polling: each reload below is the one that follows the aliases
    bundle = model.save(tmp_path / "bundle")
    _, champion = registry.log_and_register(model, bundle, {}, settings=settings)
    registry.promote(champion, settings)
    _, own = registry.log_and_register(
        model, bundle, {}, settings=settings, tags={registry.HOSPITAL_TAG: "hz-a"}
    )
    assert registry.set_hospital_alias("hz-a", own, settings) == "hospital-hz-a"
    # a hospital's model serves that hospital only: it cannot become champion, nor serve another hospital
    with pytest.raises(registry.RegistryError, match="hz-a"):
        registry.promote(own, settings)
    with pytest.raises(registry.RegistryError, match="not hospital 'sh-b'"):
        registry.set_hospital_alias("sh-b", own, settings)
    assert registry.hospital_versions(settings) == {"hz-a": own}

    app = create_app(settings)
    h = {"X-API-Key": app.state.yuyue.keys.create("boss", "supervisor")[1]}
    adm = {"X-API-Key": app.state.yuyue.keys.create("root", "admin")[1]}
    with TestClient(app) as client:  # start-up loads the champion and the hospitals' models
        holder = app.state.yuyue.models
        assert holder.version == champion and holder.hospitals == {"hz-a": own}
        assert holder.model_for("hz-a")[1] == own and holder.model_for("sh-b")[1] == champion
        assert holder.model_for(None)[1] == champion

        chats = {hospital: _open(client, h, hospital) for hospital in ("hz-a", "sh-b", None)}
        expected = {"hz-a": own, "sh-b": champion, None: champion}
        for hospital, opened in chats.items():
            assert opened["model_version"] == expected[hospital], hospital
            answer = _say(client, h, opened["conversation_id"], 0, "你好，隆鼻大概多少钱？")
            assert answer["model_version"] == expected[hospital], hospital
            assert _stored_version(client, h, opened["conversation_id"]) == expected[hospital], hospital
        assert client.post("/v1/admin/reload", headers=adm).json() == {
            "version": champion,
            "changed": False,
            "hospitals": {"hz-a": own},
            "departments": {},
        }

        # the alias removed: the next reload drops the model, and hz-a's chats go back to the champion
        assert registry.remove_hospital_alias("hz-a", settings) == own
        assert registry.remove_hospital_alias("hz-a", settings) is None
        assert client.post("/v1/admin/reload", headers=adm).json() == {
            "version": champion,
            "changed": True,
            "hospitals": {},
            "departments": {},
        }
        assert holder.hospitals == {} and holder.model_for("hz-a")[1] == champion
        cid = chats["hz-a"]["conversation_id"]
        assert _say(client, h, cid, 1, "姓李")["model_version"] == champion
        assert _stored_version(client, h, cid) == champion

        # a new alias is picked up by the next reload, for chats already open too
        registry.set_hospital_alias("hz-a", own, settings)
        assert client.post("/v1/admin/reload", headers=adm).json()["hospitals"] == {"hz-a": own}
        assert _say(client, h, cid, 2, "明天下午可以过来")["model_version"] == own


def test_a_departments_own_model_scores_its_chats_unless_the_hospital_has_one(
    model, registry_settings, tmp_path
):
    """``department-*`` aliases (``train --per-department``): a chat of that department is scored by the
    department's model, unless its hospital has its own (the tenant's own data comes first); every other
    chat by the champion; reload reports and follows the departments' aliases."""
    settings = registry_settings(0)
    bundle = model.save(tmp_path / "bundle")
    _, champion = registry.log_and_register(model, bundle, {}, settings=settings)
    registry.promote(champion, settings)
    _, hosp = registry.log_and_register(
        model, bundle, {}, settings=settings, tags={registry.HOSPITAL_TAG: "hz-a"}
    )
    registry.set_hospital_alias("hz-a", hosp, settings)
    _, dept = registry.log_and_register(
        model, bundle, {}, settings=settings, tags={registry.DEPARTMENT_TAG: "整形美容"}
    )
    alias = registry.set_segment_alias("department", "整形美容", dept, settings)
    assert alias.startswith("department-") and alias.isascii()
    with pytest.raises(registry.RegistryError, match="department '整形美容'"):
        registry.promote(dept, settings)
    with pytest.raises(registry.RegistryError, match="not department '妇科'"):
        registry.set_segment_alias("department", "妇科", dept, settings)
    assert registry.segment_versions("department", settings) == {"整形美容": dept}
    assert registry.hospital_versions(settings) == {"hz-a": hosp}  # the kinds do not mix

    app = create_app(settings)
    h = {"X-API-Key": app.state.yuyue.keys.create("boss", "supervisor")[1]}
    adm = {"X-API-Key": app.state.yuyue.keys.create("root", "admin")[1]}
    with TestClient(app) as client:
        holder = app.state.yuyue.models
        assert holder.departments == {"整形美容": dept} and holder.hospitals == {"hz-a": hosp}
        expected = {
            ("hz-a", "整形美容"): hosp,
            ("sh-b", "整形美容"): dept,
            (None, "整形美容"): dept,
            ("sh-b", "妇科"): champion,
        }
        chats = {}
        for (hospital, department), version in expected.items():
            opened = _open(client, h, hospital, department)
            chats[hospital, department] = opened["conversation_id"]
            assert opened["model_version"] == version, (hospital, department)
            assert _say(client, h, opened["conversation_id"], 0, "你好，多少钱？")["model_version"] == version
        assert client.post("/v1/admin/reload", headers=adm).json() == {
            "version": champion,
            "changed": False,
            "hospitals": {"hz-a": hosp},
            "departments": {"整形美容": dept},
        }
        # the department's alias removed: its chats go back to the champion (hz-a keeps its own)
        assert registry.remove_segment_alias("department", "整形美容", settings) == dept
        assert client.post("/v1/admin/reload", headers=adm).json()["departments"] == {}
        cid = chats["sh-b", "整形美容"]
        assert _say(client, h, cid, 1, "姓李")["model_version"] == champion
        assert _say(client, h, chats["hz-a", "整形美容"], 1, "姓王")["model_version"] == hosp
