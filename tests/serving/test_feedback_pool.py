"""The desk's feedback reaches the reply pool of a running server (issue 18, "feedback into training"):
a reply dismissed again and again sinks below another for the same chat, one used again and again
rises, an edited suggestion's final text enters the pool masked and as the chat's department's, and an
edited text the compliance guard blocks does not. Through the API, on SQLite and PostgreSQL."""

# ruff: noqa: F811  (the api/backend fixtures come from conftest)
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.serving.test_api import _at, _open
from yuyue.models.replies.rank import RankWeights, feedback_shift
from yuyue.serving.store import suggestions

ASK = "你好，隆鼻大概多少钱？疼不疼"
FACTS = {"department": "整形美容", "project": "隆鼻"}


@pytest.fixture
def live(api, model):
    """The session's model is shared: no hook nor edited reply outlives the test."""
    api.state.reviews.refresh_s = 0.0  # read the feedback at every suggestion (a server: every 2 s)
    yield
    api.state.reviews.detach(model)


def _suggest(api, who="c01"):
    """Open a chat, send ASK; the suggestions shown as [(suggestion id, pool reply id)] by rank."""
    cid = _open(api, who=who)
    r = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": "visitor", "text": ASK, "at": _at(3)},
        headers=api.keys[who],
    )
    assert r.status_code == 200, r.text
    with api.state.engine.connect() as cx:
        rows = cx.execute(
            sa.select(suggestions.c.id, suggestions.c.reply_id)
            .where(suggestions.c.conversation_id == cid)
            .order_by(suggestions.c.rank)
        ).all()
    return [tuple(row) for row in rows]


def _feedback(api, sid, action, text=None, who="c01"):
    body = {"action": action} | ({"final_text": text} if text is not None else {})
    r = api.post(f"/v1/suggestions/{sid}/feedback", json=body, headers=api.keys[who])
    assert r.status_code == 200, r.text


@pytest.fixture
def scored(live, model, monkeypatch):
    """The scores of the suggestions the API showed last, by pool reply id (as the ranker made them)."""
    last: dict[str, float] = {}
    suggest = model.suggester.suggest

    def recording(*args, **kwargs):
        out = suggest(*args, **kwargs)
        last.clear()
        last.update({s.id: s.score for s in out})
        return out

    monkeypatch.setattr(model.suggester, "suggest", recording)
    return last


def _listed(api):
    """Every reply GET /v1/replies lists (page by page)."""
    items: list[dict] = []
    while True:
        r = api.get("/v1/replies", params={"limit": 500, "offset": len(items)}, headers=api.keys["sup"])
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        if len(items) >= r.json()["total"] or not r.json()["items"]:
            return items


def _two(api):
    shown = _suggest(api)
    if len(shown) < 2:
        pytest.skip("the test bundle suggests fewer than two replies for this chat")
    return shown


def test_the_shift_is_smoothed_and_bounded():
    w = RankWeights()
    assert feedback_shift(0, 0, 0.4, w) == 0.0
    one = feedback_shift(0, 1, 0.4, w)
    many = feedback_shift(0, 200, 0.4, w)
    assert -w.feedback <= many < one < 0  # one dismissal moves a little, many up to the bound
    assert abs(one) < w.feedback / 5
    assert 0 < feedback_shift(3, 3, 0.4, w) < feedback_shift(200, 200, 0.4, w) <= w.feedback
    assert feedback_shift(4, 10, 0.4, w) == pytest.approx(0.0)  # at the desk's rate: no shift


def test_a_reply_dismissed_again_and_again_sinks_below_another(api, live, scored):
    shown = _two(api)
    top = shown[0][1]
    before = dict(scored)
    book = api.state.reviews
    _feedback(api, shown[1][0], "used")  # the desk uses other replies now and then
    for _ in range(25):
        now = _suggest(api)
        if now[0][1] != top:
            break
        _feedback(api, now[0][0], "dismissed")
    after = _suggest(api)
    assert after[0][1] != top, "dismissed again and again, yet still first"
    assert book.feedback_shift(top) < 0
    assert top not in scored or scored[top] < before[top]


def test_a_reply_used_again_and_again_rises(api, live, scored):
    shown = _two(api)
    before = dict(scored)
    # the shown reply closest below the one above it: the bounded shift can lift it over that one
    gaps = {shown[i][1]: before[shown[i - 1][1]] - before[shown[i][1]] for i in range(1, len(shown))}
    low = min(gaps, key=gaps.__getitem__)
    if gaps[low] >= 0.6 * RankWeights().feedback:
        pytest.skip(f"the shown replies are {gaps[low]:.2f} apart: more than feedback may move")
    above = shown[[rid for _, rid in shown].index(low) - 1][1]
    for _ in range(15):  # the desk dismisses others now and then: its overall rate is below 1
        other = [sid for sid, rid in _suggest(api) if rid not in (low, above)]
        if not other:
            break
        _feedback(api, other[0], "dismissed")
    for _ in range(25):
        now = _suggest(api)
        ids = [rid for _, rid in now]
        if low in ids and (above not in ids or ids.index(low) < ids.index(above)):
            break
        if low in ids:
            _feedback(api, now[ids.index(low)][0], "used")
    ids = [rid for _, rid in _suggest(api)]
    book = api.state.reviews
    assert low in ids and (above not in ids or ids.index(low) < ids.index(above)), "used, yet not higher"
    assert book.feedback_shift(low) > 0 and scored[low] > before[low]


def test_an_edited_final_text_enters_the_pool_masked_and_a_blocked_one_does_not(api, live):
    shown = _two(api)
    phone = "13812345678"
    edited = f"您好，隆鼻费用要看方案，面诊后医生给您详细说明，您方便留个电话吗？我的电话是{phone}"
    _feedback(api, shown[0][0], "edited", edited)
    _feedback(api, shown[1][0], "edited", "我们保证治愈，效果百分百，您放心来做")
    items = _listed(api)
    texts = {i["id"]: i for i in items}
    made = [i for i in items if "面诊后医生给您详细说明" in i["text"]]
    assert len(made) == 1, "the edited text is not in the pool"
    item = made[0]
    # masked as mined replies are (138****5678); a reply holding masked data is listed, never offered
    assert phone not in item["text"] and "****" in item["text"]
    assert item["status"] == "unreviewed" and item["source"] == "mined"
    assert item["department"] == "整形美容"
    assert not any("保证治愈" in i["text"] for i in texts.values()), "a text the guard blocks entered"
    # the reply it was edited from counts the edit as half accepted; the new entry one use
    book = api.state.reviews
    assert book.feedback_counts(shown[0][1]) == (0.5, 1.0)
    assert book.feedback_counts(item["id"]) == (1.0, 1.0)
    assert item["id"] in book.variants(shown[0][1])


def test_an_edit_without_personal_data_is_suggested_where_its_original_was(api, live):
    shown = _two(api)
    edited = "您好，隆鼻的费用要看您的鼻子条件和方案，面诊后医生会给您详细说明，您看周几方便过来？"
    _feedback(api, shown[0][0], "edited", edited)
    for _ in range(3):  # the edit credited as a use: offered for the same chat
        _feedback(api, _suggest(api)[0][0], "edited", edited)
    book = api.state.reviews
    eid = next(iter(book.variants(shown[0][1])))
    model, _ = api.state.models.get()
    assert model.suggester.pool.get(eid) is not None
    ids = [rid for _, rid in _suggest(api)]
    assert eid in ids, "the edited reply is not offered where the reply it edited was"
    # a changed mind: the same suggestion dismissed afterwards withdraws its edit
    accepted, answered = book.feedback_counts(eid)
    _feedback(api, shown[0][0], "dismissed")
    _suggest(api)
    assert book.feedback_counts(eid) == (accepted - 1, answered - 1)
