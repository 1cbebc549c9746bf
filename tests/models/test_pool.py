"""Reply pool: clustering, masking, statuses, persistence and the review CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from yuyue.models.replies.pool import (
    ReplyExample,
    ReplyPool,
    UnknownReplyError,
    build_pool,
    cluster_near_duplicates,
    iter_reply_examples,
    reply_text,
)
from yuyue.models.replies.pool_cli import replies_app


def ex(reply: str, conv: str = "c1", booked: bool | None = None, stage: str | None = None) -> ReplyExample:
    return ReplyExample(conv, (("visitor", "你好"),), reply, stage, booked)


def test_near_duplicates_collapse_and_different_ones_do_not() -> None:
    keys = [
        "您好请问怎么称呼您",
        "您好请问怎么称呼您呢",
        "地址是西湖区文三路188号地铁2号线古荡站c口出来步行5分钟",
        "地址是西湖区文三路188号地铁2号线古荡站c口出来步行5分钟到",
        "隆鼻一般需要恢复一到两周",
    ]
    labels = cluster_near_duplicates(keys, threshold=0.7)
    assert labels[0] == labels[1]
    assert labels[2] == labels[3]
    assert len({labels[0], labels[2], labels[4]}) == 3


def test_build_pool_counts_stage_booking_prior_and_assignments() -> None:
    examples = [
        ex("好的王女士，请问怎么称呼您？", "a", True, "greet"),
        ex("好的李女士，请问怎么称呼您？", "b", True, "greet"),
        ex("好的，请问怎么称呼您呢？", "c", False, "greet"),
        ex("我们医院在文三路188号。", "d", False, "directions"),
        ex("嗯", "e", False),
    ]
    pool, assign = build_pool(examples, prior_strength=2.0)
    assert assign[0] == assign[1] and assign[0] is not None
    assert assign[4] is None  # too short to keep
    entry = pool.get(assign[0])
    assert entry.count == 3 and entry.stage == "greet" and entry.source == "mined"
    assert entry.status == "unreviewed"
    assert "{address_form}" in entry.text and "王" not in entry.text
    assert pool.base_rate == pytest.approx(2 / 5)
    assert entry.booked_after == pytest.approx((2 + 2 * 0.4) / (3 + 2))
    other = pool.get(assign[3])
    assert other.booked_after < entry.booked_after


def test_a_greeting_by_surname_becomes_the_slot() -> None:
    """A mined 顾姐您好 would greet the next visitor by someone else's surname (and keep personal data)."""
    assert reply_text("顾姐您好。") == "{address_form}您好。"
    assert reply_text("好的李哥，这边帮您登记") == "好的{address_form},这边帮您登记"  # normalised commas


def test_no_raw_phone_in_pool_file(tmp_path: Path) -> None:
    pool, _ = build_pool([ex("有问题打我电话13812345678，随时联系")])
    path = pool.save(tmp_path / "pool.jsonl")
    text = path.read_text(encoding="utf-8")
    assert "13812345678" not in text and "138****5678" in text


def test_scripts_are_allowed_entries() -> None:
    from yuyue.models.replies.scripts import load_library

    lib = load_library()
    pool, _ = build_pool([], lib)
    assert len(pool) == len(lib)
    assert all(e.status == "allowed" and e.source == "script" for e in pool)


def test_status_changes_persist_and_unknown_ids_change_nothing(tmp_path: Path) -> None:
    pool, assign = build_pool([ex("请问怎么称呼您？"), ex("我们医院在文三路188号。")])
    path = pool.save(tmp_path / "pool.jsonl")
    pool.set_status([assign[0]], "blocked")
    again = ReplyPool.load(path)
    assert again.get(assign[0]).status == "blocked"
    assert again.suggestible(assign[0]) is None
    with pytest.raises(UnknownReplyError):
        again.set_status([assign[1], "nope"], "allowed")
    assert ReplyPool.load(path).get(assign[1]).status == "unreviewed"


def test_statuses_carry_over_to_a_rebuilt_pool() -> None:
    old, assign = build_pool([ex("请问怎么称呼您？")])
    old.set_status([assign[0]], "blocked", save=False)
    new, assign2 = build_pool([ex("请问怎么称呼您呢？"), ex("请问怎么称呼您？")], previous=old)
    assert new.get(assign2[0]).status == "blocked"


def test_iter_reply_examples_reads_contract_records() -> None:
    from tests.utils.records import record

    rows = list(iter_reply_examples([record()]))
    assert rows and rows[0].context[0] == ("visitor", "你好，隆鼻多少钱")
    assert rows[0].stage == "greet"


def test_cli_list_allow_block(tmp_path: Path) -> None:
    """Decisions go to the database (``--database``), not the pool file; a rebuilt pool keeps them."""
    pool, assign = build_pool(
        [ex("请问怎么称呼您？"), ex("请问怎么称呼您？", "b"), ex("我们医院在文三路188号。")]
    )
    path = str(pool.save(tmp_path / "pool.jsonl"))
    db = ["--database", f"sqlite:///{tmp_path / 'yuyue.db'}"]
    runner = CliRunner()
    res = runner.invoke(replies_app, ["list", "--pool", path, *db])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(assign[0]) and "\tunreviewed\t" in lines[0]
    res = runner.invoke(replies_app, ["block", assign[0], "--pool", path, *db])
    assert res.exit_code == 0, res.output
    res = runner.invoke(replies_app, ["allow", assign[2], "--pool", path, *db])
    assert res.exit_code == 0
    res = runner.invoke(replies_app, ["list", "--status", "blocked", "--pool", path, *db])
    assert res.output.strip().startswith(assign[0]) and len(res.output.strip().splitlines()) == 1
    before = Path(path).read_bytes()
    res = runner.invoke(replies_app, ["allow", assign[0], "m000000000000", "--pool", path, *db])
    assert res.exit_code == 1 and "m000000000000" in res.output
    res = runner.invoke(replies_app, ["list", "--status", "blocked", "--pool", path, *db])
    assert res.output.strip().startswith(assign[0])  # the failed allow changed nothing
    assert Path(path).read_bytes() == before
    # a retrain mines the same reply again among other chats: the decision applies to the new pool
    rebuilt, assign2 = build_pool(
        [ex("您好，有什么可以帮您？"), ex("请问怎么称呼您？", "c"), ex("请问怎么称呼您？", "d")]
    )
    path2 = str(rebuilt.save(tmp_path / "pool2.jsonl"))
    res = runner.invoke(replies_app, ["list", "--status", "blocked", "--pool", path2, *db])
    assert res.output.strip().startswith(assign2[1]) and assign2[1] == assign[0]
    res = runner.invoke(replies_app, ["list", "--pool", str(tmp_path / "missing.jsonl"), *db])
    assert res.exit_code == 1
