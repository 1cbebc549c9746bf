"""Several hospitals' knowledge (issue 17): a chat's replies are filled from its hospital's document, a chat
without a hospital or of a hospital without a document from the default one (the ``hospital_id``
setting's); ``?hospital=`` on ``/v1/knowledge``; scoped admins write their own hospital's document only.
On SQLite and PostgreSQL + Redis (the ``api`` fixture)."""

from __future__ import annotations

import uuid

import pytest

from yuyue.serving import knowledge as kb

H1, H2, H3 = "Hosp-1", "Hosp-2", "Hosp-3"
# per document: hospital name, address, doctor, price range, activity title
FACTS = {
    H1: ("东城示例医院", "东城路1号", "甲东", (300, 3000), "东城春季活动"),
    H2: ("西城示例医院", "西城路2号", "乙西", (500, 5000), "西城夏季活动"),
    None: ("总院示例医院", "总院路9号", "丙总", (800, 8000), "总院秋季活动"),
}
MESSAGES = [
    "脸上长痘痘好几个月了",
    "哪个医生看痘痘比较好？",
    "祛痘大概多少钱？",
    "医院在哪里，怎么过去？",
]


def _doc(name: str, address: str, doctor: str, price: tuple[int, int], activity: str) -> dict:
    """皮肤科 with one doctor on duty all day every day, one project and one activity valid for years."""
    return {
        "hospital": {"name": name, "address": address, "directions": f"{address}，地铁站出口步行5分钟"},
        "departments": [
            {
                "name": "皮肤科",
                "projects": [
                    {
                        "name": "痤疮治疗",
                        "aliases": ["痘痘", "祛痘"],
                        "price_low": price[0],
                        "price_high": price[1],
                    }
                ],
            }
        ],
        "doctors": [
            {
                "name": doctor,
                "title": "主任医师",
                "department": "皮肤科",
                "specialties": ["痤疮治疗"],
                "duty": [{"weekday": d, "hours": "00:00-24:00"} for d in range(1, 8)],
            }
        ],
        "activities": [
            {
                "id": "season",
                "title": activity,
                "wording": "首次面诊可预约皮肤检测",
                "valid_from": "2020-01-01",
                "valid_to": "2040-12-31",
            }
        ],
    }


def _put(api, headers, hospital: str | None, facts: tuple) -> object:
    params = {"hospital": hospital} if hospital else {}
    return api.put("/v1/knowledge", params=params, json=_doc(*facts), headers=headers)


def _texts(api, hospital: str | None) -> str:
    """Every suggestion of a 皮肤科 chat of ``hospital`` asking the price, the way and for a doctor (the
    activities reach the replies through the same hook; these questions do not ask for them)."""
    h = api.keys["sup"]
    body = {"conversation_id": "kh-" + uuid.uuid4().hex[:10], "department": "皮肤科"}
    if hospital:
        body["hospital"] = hospital
    r = api.post("/v1/conversations", json=body, headers=h)
    assert r.status_code == 201, r.text
    out = []
    for text in MESSAGES:
        r = api.post(
            f"/v1/conversations/{body['conversation_id']}/messages",
            json={"role": "visitor", "text": text, "k": 5},
            headers=h,
        )
        assert r.status_code == 200, r.text
        out += [s["text"] for s in r.json()["suggestions"]]
    return "\n".join(out)


def _seen(texts: str) -> dict[object, set[str]]:
    """Which document's name, doctor, price range and activity the texts hold."""
    out: dict[object, set[str]] = {}
    for who, (name, _, doctor, (lo, hi), activity) in FACTS.items():
        found = {"name"} if name in texts else set()
        found |= {"doctor"} if doctor in texts else set()
        found |= {"price"} if f"{lo}到{hi}元" in texts else set()
        found |= {"activity"} if activity in texts else set()
        if found:
            out[who] = found
    return out


def test_each_hospitals_chats_get_its_own_knowledge(api) -> None:
    adm = api.keys["adm"]
    for hospital in (None, H1, H2):
        r = _put(api, adm, hospital, FACTS[hospital])
        assert r.status_code == 200, r.text
        assert r.json()["hospital_id"] == (hospital or api.state.settings.hospital_id)
        assert r.json()["default"] is (hospital is None)
    want = {"name", "doctor", "price"}
    # H3 has no document, and a chat without a hospital: both served from the default document
    for hospital, source in ((H1, H1), (H2, H2), (H3, None), (None, None)):
        seen = _seen(_texts(api, hospital))
        assert seen == {source: want}, (hospital, seen)
    # a write to H2 reaches H2's next chat at once; H1's are unchanged
    changed = ("西城新院", "西城路3号", "丁新", (600, 6000), "西城冬季活动")
    assert _put(api, adm, H2, changed).status_code == 200
    texts = _texts(api, H2)
    assert "丁新" in texts and "600到6000元" in texts and "乙西" not in texts, texts
    assert _seen(_texts(api, H1)) == {H1: want}


def test_the_book_serves_a_hospital_its_document_else_the_default(api) -> None:
    adm = api.keys["adm"]
    assert _put(api, adm, None, FACTS[None]).status_code == 200
    assert _put(api, adm, H1, FACTS[H1]).status_code == 200
    book = kb.KnowledgeBook(api.state.engine, api.state.settings.hospital_id)
    doctor = {h: book.for_chat(h).knowledge.doctors[0].name for h in (H1, H3, None)}
    assert doctor == {H1: "甲东", H3: "丙总", None: "丙总"}
    loads = book.loads
    for _ in range(100):  # cached: no further reads within the refresh period
        book.for_chat(H1), book.for_chat(H3)
    assert book.loads == loads


def test_knowledge_routes_take_the_hospital(api) -> None:
    """``?hospital=`` reads and writes that hospital's document; a key scoped to one hospital gets it by
    default; another hospital's is a 403 naming it, and the default document needs a group-level key."""
    keys = api.state.keys
    a_adm = {"X-API-Key": keys.create("h1-admin", "admin", hospitals=[H1])[1]}
    a_con = {"X-API-Key": keys.create("h1-wang", "consultant", consultant_id="c09", hospitals=[H1])[1]}
    both = {"X-API-Key": keys.create("h12-admin", "admin", hospitals=[H1, H2])[1]}
    default_id = api.state.settings.hospital_id
    r = _put(api, a_adm, None, FACTS[H1])  # no ?hospital=: the key's only hospital
    assert r.status_code == 200 and r.json()["hospital_id"] == H1 and r.json()["rev"] == 1, r.text
    assert _put(api, both, H2, FACTS[H2]).status_code == 200
    for headers in (a_adm, both):
        r = _put(api, headers, default_id, FACTS[None])
        assert r.status_code == 403 and "group-level key" in r.json()["detail"], r.text
    r = _put(api, both, None, FACTS[None])  # several hospitals, none named: the default document
    assert r.status_code == 403 and "group-level key" in r.json()["detail"], r.text
    r = _put(api, a_adm, H2, FACTS[H2])
    assert r.status_code == 403 and f"hospital {H2!r} is outside key" in r.json()["detail"], r.text
    assert _put(api, api.keys["adm"], None, FACTS[None]).json()["hospital_id"] == default_id
    assert _put(api, a_con, H1, FACTS[H1]).status_code == 403  # admins only
    # reads: the key's hospital by default, another's refused, the default document for group keys
    r = api.get("/v1/knowledge", headers=a_con)
    assert r.json()["hospital_id"] == H1 and r.json()["knowledge"]["doctors"][0]["name"] == "甲东"
    r = api.get("/v1/knowledge", params={"hospital": H2}, headers=a_con)
    assert r.status_code == 403 and repr(H2) in r.json()["detail"], r.text
    r = api.get("/v1/knowledge", headers=api.keys["c01"])
    assert r.json()["hospital_id"] == default_id and r.json()["default"] is True
    r = api.get("/v1/knowledge", params={"hospital": default_id}, headers=a_con)  # shared: read by all
    assert r.status_code == 200 and r.json()["knowledge"]["doctors"][0]["name"] == "丙总", r.text
    # the documents each key may pick (the console's picker), and whether it may write the one shown
    assert r.json()["hospitals"] == [default_id, H1]
    r = api.get("/v1/knowledge", params={"hospital": default_id}, headers=a_adm)
    assert r.json()["editable"] is False and r.json()["hospitals"] == [default_id, H1]
    assert api.get("/v1/knowledge", headers=a_adm).json()["editable"] is True
    assert api.get("/v1/knowledge", headers=both).json()["hospitals"] == [default_id, H1, H2]
    r = api.get("/v1/knowledge", headers=api.keys["adm"])
    assert r.json()["hospitals"] == [default_id, H1, H2] and r.json()["editable"] is True
    r = api.get("/v1/knowledge", params={"hospital": H3}, headers=api.keys["c01"])
    assert r.json()["rev"] == 0 and r.json()["hospital_id"] == H3 and r.json()["default"] is False
    day = {"date": "2026-12-02", "department": "皮肤科"}
    r = api.get("/v1/knowledge/day", params={**day, "hospital": H2}, headers=api.keys["sup"])
    assert [d["name"] for d in r.json()["on_duty"]] == ["乙西"], r.text
    assert [a["title"] for a in r.json()["activities"]] == ["西城夏季活动"], r.text
    r = api.get("/v1/knowledge/day", params=day, headers=a_con)
    assert [d["name"] for d in r.json()["on_duty"]] == ["甲东"], r.text
    r = api.get("/v1/knowledge/day", params={**day, "hospital": H2}, headers=a_con)
    assert r.status_code == 403 and repr(H2) in r.json()["detail"], r.text
    r = api.get("/v1/knowledge", params={"hospital": ""}, headers=api.keys["c01"])
    assert r.status_code == 422 and "hospital" in r.text, r.text


@pytest.mark.parametrize("hospital", [None, H1])
def test_a_write_reaches_other_workers(api, hospital) -> None:
    """Another process's book sees a write within its refresh period (here 0 s)."""
    book = kb.KnowledgeBook(api.state.engine, api.state.settings.hospital_id, refresh_s=0)
    assert book.for_chat(H1) is None
    assert _put(api, api.keys["adm"], hospital, FACTS[hospital]).status_code == 200
    assert book.for_chat(H1).knowledge.hospital.name == FACTS[hospital][0]


def test_a_hospital_with_the_longest_code_a_chat_allows_has_its_own_document(api) -> None:
    """A chat's hospital may be 128 characters (conversations.hospital): such a hospital's document is
    stored (on PostgreSQL too: hospital_knowledge.hospital_id is as wide) and read back; longer is refused."""
    long_code = "H" * 128
    key = {"X-API-Key": api.state.keys.create("long-admin", "admin", hospitals=[long_code])[1]}
    r = _put(api, key, None, FACTS[H1])
    assert r.status_code == 200, r.text
    got = api.get("/v1/knowledge", headers=key).json()
    assert got["hospital_id"] == long_code and got["rev"] == 1
    assert got["knowledge"]["hospital"]["name"] == FACTS[H1][0]
    r = _put(api, api.keys["adm"], "H" * 129, FACTS[H1])
    assert r.status_code == 422 and "hospital" in r.text, r.text


def test_cli_imports_and_exports_a_hospitals_document(tmp_path) -> None:
    from typer.testing import CliRunner

    from yuyue.serving.knowledge_cli import knowledge_app

    url = f"sqlite:///{tmp_path / 'k.db'}"
    runner = CliRunner()
    for hospital in (None, H1):
        path = tmp_path / f"{hospital}.yaml"
        path.write_text(kb.to_yaml(kb.parse(_doc(*FACTS[hospital]))), encoding="utf-8")
        args = ["import", str(path), "--url", url] + (["--hospital", hospital] if hospital else [])
        r = runner.invoke(knowledge_app, args)
        assert r.exit_code == 0 and "revision 1" in r.output, r.output
    r = runner.invoke(knowledge_app, ["export", "--hospital", H1, "--url", url])
    assert r.exit_code == 0 and f"hospital {H1!r}" in r.output, r.output
    assert kb.parse_yaml(r.output) == kb.parse(_doc(*FACTS[H1]))
    r = runner.invoke(knowledge_app, ["export", "--url", url])  # the default document, unchanged
    assert kb.parse_yaml(r.output) == kb.parse(_doc(*FACTS[None]))
    r = runner.invoke(knowledge_app, ["export", "--hospital", H2, "--url", url])
    assert r.exit_code == 0 and "revision 0" in r.output and kb.parse_yaml(r.output) == kb.Knowledge()
    for bad in (" ", "H" * 129):
        r = runner.invoke(knowledge_app, ["export", "--hospital", bad, "--url", url])
        assert r.exit_code == 2 and "1 to 128 characters" in r.output, r.output


def test_the_chats_hospital_is_looked_up_only_once_a_hospital_has_a_document(api, model) -> None:
    """One document (the default): the message path does not look up the chat's hospital; once another
    hospital has a document (written through this process: at once), it does."""
    from datetime import datetime

    assert _put(api, api.keys["adm"], None, FACTS[None]).status_code == 200
    book = kb.book(api.state.service)
    hook = kb.KnowledgeHook(book)
    asked = []

    def hospital() -> str:
        asked.append(1)
        return H1

    facts = {"department": "皮肤科"}
    messages = [("visitor", "祛痘大概多少钱？")]
    with kb.message_time(datetime.now(kb.LOCAL_TZ), hospital):
        assert hook.facts(facts, messages)["slots"]["price_range"] == "800到8000元"
    assert asked == []
    assert _put(api, api.keys["adm"], H1, FACTS[H1]).status_code == 200
    with kb.message_time(datetime.now(kb.LOCAL_TZ), hospital):
        assert hook.facts(facts, messages)["slots"]["price_range"] == "300到3000元"
    assert asked == [1]
