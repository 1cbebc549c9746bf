"""ConversationState: incremental equals from-scratch, no look-ahead, compact, invariant to PII digits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.utils.records import record
from yuyue.data.contract import Conversation
from yuyue.features.state import MAX_GRAM_CHARS, ConversationState, char_grams, replay

TZ = timezone(timedelta(hours=8))


def _chat(turns: list[tuple[str, str]], start: datetime | None = None) -> Conversation:
    start = start or datetime(2025, 3, 5, 14, 0, tzinfo=TZ)
    msgs = [
        {"at": (start + timedelta(seconds=30 * i)).isoformat(), "role": role, "text": text}
        for i, (role, text) in enumerate(turns)
    ]
    return Conversation.model_validate(record(messages=msgs, started_at=msgs[0]["at"]))


LONG_TURNS = [
    ("visitor", "你好，隆鼻多少钱啊"),
    ("consultant", "您好，请问怎么称呼您？"),
    ("visitor", "我姓王"),
    ("consultant", "王女士您好，您现在鼻子是什么情况呢？"),
    ("visitor", "鼻梁有点低，会不会很疼，恢复要多久"),
    ("consultant", "手术在麻醉下进行，术中基本感觉不到疼，一般7到10天拆线消肿。"),
    ("visitor", "价格大概多少？"),
    ("consultant", "价格要看方案，医生面诊后会给您具体报价。方便留个电话吗？"),
    ("visitor", "我电话 138 1234 5678"),
    ("consultant", "好的，明天下午有时间来院吗？"),
    ("visitor", "可以"),
]


@pytest.fixture(scope="module")
def simulated() -> list[Conversation]:
    sim = pytest.importorskip("yuyue.data.simulator")
    return [Conversation.model_validate(r) for r in sim.iter_records(40, seed=3)]


def _check_incremental(conv: Conversation) -> None:
    live = ConversationState.for_conversation(conv)
    for i, m in enumerate(conv.messages):
        # the service stores the state between messages: round-trip it every time
        live = ConversationState.from_bytes(live.to_bytes())
        live.update(m.role, m.text, m.at)
        fresh = replay(conv, upto=i + 1)
        assert live.features() == fresh.features(), f"message {i}"
        assert live.text_bag() == fresh.text_bag()
        assert live.recent_bag() == fresh.recent_bag()
        assert live.recent_grams() == fresh.recent_grams()
        assert live.revealed == fresh.revealed


def test_incremental_equals_recompute_handwritten():
    _check_incremental(_chat(LONG_TURNS))


def test_incremental_equals_recompute_simulated(simulated):
    for conv in simulated[:15]:
        _check_incremental(conv)


def test_prefix_features_do_not_depend_on_later_messages(simulated):
    for conv in simulated[:10]:
        for k in range(1, len(conv.messages) + 1):
            truncated = conv.model_copy(
                update={"messages": conv.messages[:k], "outcome": None, "truth": None}
            )
            assert replay(truncated).features() == replay(conv, upto=k).features()


def test_counts_match_an_independent_tally():
    conv = _chat(LONG_TURNS)
    f = replay(conv).features()
    assert f["dlg.n_visitor"] == sum(1 for r, _ in LONG_TURNS if r == "visitor")
    assert f["dlg.n_consultant"] == sum(1 for r, _ in LONG_TURNS if r == "consultant")
    assert f["ent.has_contact"] == 1.0 and f["ent.contact.phone"] == 1.0
    assert f["flow.asked_name"] == 1.0
    assert f["concern.pain.raised"] == 1.0 and f["concern.pain.answered"] == 1.0
    assert f.get("concern.price.raised") == 1.0


def test_contact_appears_only_after_it_is_given():
    conv = _chat(LONG_TURNS)
    idx = next(i for i, (_, t) in enumerate(LONG_TURNS) if "138" in t)
    assert "ent.has_contact" not in replay(conv, upto=idx).features()
    assert replay(conv, upto=idx + 1).features()["ent.has_contact"] == 1.0


def test_phone_digits_do_not_change_features():
    a = _chat(LONG_TURNS)
    b = _chat([(r, t.replace("138 1234 5678", "139-8765-4321")) for r, t in LONG_TURNS])
    sa, sb = replay(a), replay(b)
    assert sa.features() == sb.features()
    assert sa.text_bag() == sb.text_bag()


def test_surname_does_not_change_features():
    a = _chat(LONG_TURNS)
    b = _chat([(r, t.replace("王", "李")) for r, t in LONG_TURNS])
    assert replay(a).features() == replay(b).features()
    assert replay(a).text_bag() == replay(b).text_bag()


def test_serialised_state_is_compact():
    conv = _chat(LONG_TURNS * 10)
    blob = replay(conv).to_bytes()
    assert len(blob) < 4096, len(blob)


def test_state_version_mismatch_is_a_clear_error():
    import msgpack

    with pytest.raises(ValueError, match="state version"):
        ConversationState.from_bytes(msgpack.packb([999]))


def test_state_round_trip_keeps_the_latest_message_bags():
    state = replay(_chat(LONG_TURNS))
    back = ConversationState.from_bytes(state.to_bytes())
    assert back.recent_bag() == state.recent_bag()
    assert all(state.recent_bag())
    assert back.recent_grams() == state.recent_grams()
    assert all(state.recent_grams())


def test_latest_message_grams_are_its_masked_characters():
    """Character 1-3-grams of the latest message per side, from the text with personal data replaced."""
    with_phone = replay(_chat([("visitor", "我的电话13812345678"), ("consultant", "好的")]))
    other_phone = replay(_chat([("visitor", "我的电话13987654321"), ("consultant", "好的")]))
    assert with_phone.recent_grams() == other_phone.recent_grams()  # the digits never reach the bag
    grams_v, grams_c = with_phone.recent_grams()
    assert sum(grams_c.values()) == len(char_grams("好的")) == 3  # 好, 的, 好的
    assert char_grams("a  b", 2) == ["a", " ", "b", "a ", " b"]  # whitespace runs read as one space
    assert len(char_grams("字" * 5000)) == 3 * MAX_GRAM_CHARS - 3  # bounded however long the message
    # a message of punctuation alone has no word token but has grams
    state = replay(_chat([("visitor", "？？？")]))
    assert state.recent_grams()[0] and state.recent_bag()[0] == {}


def test_version_1_states_load_with_empty_latest_message_bags():
    import msgpack

    state = replay(_chat(LONG_TURNS))
    payload = msgpack.unpackb(state.to_bytes(), raw=False, strict_map_key=False)
    old = msgpack.packb([1, *payload[1:9]], use_bin_type=True)
    back = ConversationState.from_bytes(old)
    assert back.text_bag() == state.text_bag()
    assert back.recent_bag() == ({}, {})
    assert back.recent_grams() == ({}, {})
    v2 = ConversationState.from_bytes(msgpack.packb([2, *payload[1:11]], use_bin_type=True))
    assert v2.recent_bag() == state.recent_bag()
    assert v2.recent_grams() == ({}, {})
    with pytest.raises(ValueError, match="version"):
        ConversationState.from_bytes(msgpack.packb([99, *payload[1:]], use_bin_type=True))


def test_a_buying_question_keeps_the_latest_visitor_bag():
    """Asking the way, a time or what to bring is read by its signal columns, not as the latest mood."""
    before = replay(_chat([("visitor", "好的，就这么定了")]))
    for question in ("你们医院地址在哪里？", "明天几点可以过去？", "去的时候需要带什么吗？"):
        after = replay(_chat([("visitor", "好的，就这么定了"), ("visitor", question)]))
        assert after.recent_bag()[0] == before.recent_bag()[0], question
        assert after.text_bag()[0] != before.text_bag()[0]  # the chat's bag still has the question
    moved = replay(_chat([("visitor", "好的，就这么定了"), ("visitor", "太远了，算了不去了")]))
    assert moved.recent_bag()[0] != before.recent_bag()[0]
