"""Suggestion quality on hand-written desk chats: what a consultant would (not) click.

Plays every chat of ``tests/data/chats/desk_chats.jsonl`` message by message through a trained bundle
(opened with the chat's department and project, as the service opens a chat) and counts, over the
suggestions shown after each visitor message:

- wrong_department: the pool entry is tagged with another department, or the text names terms of
  another department and none of the chat's own;
- late_greetings: an opening greeting offered after the consultant has spoken;
- ask_name_known: asking for the form of address after the visitor gave it;
- foreign_names: another hospital's name (one not configured for this hospital) or a consultant's name;
- cut: text ending mid-sentence (comma, colon, enumeration mark);
- over_twice: the same suggestion offered more than twice in one chat;
- same_intent_turns: turns whose suggestions share an intent (stage, and concern for concern replies);
- directions_before_confirm: after a time was agreed and contact given, a directions reply ranked first
  before the booking was confirmed;
- answered / asked: the visitor's last message asked about price, address or pain and the first
  suggestion answers that;
- empty_turns: visitor messages with no suggestion at all (the trigger's sensitive topics included);
- distinct ratio: distinct suggestion texts / suggestions (distinct_texts: their number).

Usage::

    YUYUE_TEST_MODEL_DIR=/work/scratch/testmodel .venv/bin/python bench/bench_suggest_quality.py [MODEL_DIR] [CHATS]

The checks here are deliberately independent of the suggester's own filters (own word lists).
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
CHATS = ROOT / "tests" / "data" / "chats" / "desk_chats.jsonl"
HOSPITAL = {"hospital": "仁爱口碑医院", "address": "滨江区江南大道88号", "phone": "0571-88886666"}

DEPT_TERMS = {
    "整形美容": ("整形", "双眼皮", "隆鼻", "玻尿酸", "吸脂", "假体", "医美", "鼻综合", "热玛吉"),
    "男科": ("男科", "前列腺", "阳痿", "早泄", "包皮", "勃起", "阴囊", "性功能"),
    "妇科": ("妇科", "月经", "白带", "宫颈", "阴道", "人流", "盆腔", "卵巢", "子宫", "妇检"),
    "口腔": ("口腔", "种植", "矫正", "正畸", "根管", "牙齿", "洗牙", "补牙", "拔牙", "种牙"),
    "皮肤科": ("皮肤科", "痘痘", "湿疹", "白癜风", "脱发", "痤疮"),
    "眼科": ("眼科", "近视", "白内障", "斜视", "散光", "眼底"),
    "肝病": ("肝病", "乙肝", "肝功能", "转氨酶"),
}
_GREETING = re.compile(
    r"欢迎咨询|很高兴为您服务|这里是.{0,16}(?:在线|咨询)|有什么可以帮您|^(?:您好|你好)[，,！!]?(?:我是|这里是|欢迎)"
)
_ASK_NAME = re.compile(r"怎么称呼|如何称呼|贵姓|叫您什么")
_HOSPITAL_NAME = re.compile(r"[\u4e00-\u9fa5]{2,8}(?:医院|门诊部|诊所|齿科|眼视光中心|医疗美容)")
_GENERIC_HOSPITAL = re.compile(
    r"(?:我们|咱们|本|贵|这家|那家|别的|其他|正规|公立|大|去|到|在|来|的|家|间|个|是)(?:医院|诊所|门诊部)"
)
_CONSULTANT_NAME = re.compile(
    r"(?:我是|我叫|咨询师|客服|助理|顾问|在线咨询)(?:的)?(?:小[\u4e00-\u9fa5]|[A-Z][a-z]{1,9})(?![\u4e00-\u9fa5])"
    r"|[\u4e00-\u9fa5]老师(?:在|会|随时)|(?<![A-Za-z])(?:Lisa|Amy|Coco|Vivian|Emma|Lily|Ada|Cindy|Grace|Kelly)(?![A-Za-z])"
)
_CUT = re.compile(r"[，,、：:（(“]\s*$")
_QUESTIONS = {
    "price": (re.compile(r"多少钱|价格|费用|贵不贵|贵多少"), re.compile(r"价格|费用|收费|价目|报价|多少钱")),
    "address": (
        re.compile(r"地址|在哪|怎么走|怎么过去|停车|地铁"),
        re.compile(r"地址|位于|地铁|导航|路|停车|到院"),
    ),
    "pain": (re.compile(r"疼不疼|疼吗|痛不痛|痛吗|怕疼"), re.compile(r"疼|痛|麻醉|感觉")),
}


def load_chats(path: Path = CHATS) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def foreign_name(text: str, hospital: str) -> str | None:
    """Another hospital's or a consultant's name in ``text`` (None when clean)."""
    for m in _HOSPITAL_NAME.finditer(text.replace(hospital, "")):
        span = text[max(0, m.start() - 1) : m.end()]
        if not _GENERIC_HOSPITAL.search(m.group(0)) and not _GENERIC_HOSPITAL.search(span[:3]):
            return m.group(0)
    m = _CONSULTANT_NAME.search(text)
    return m.group(0) if m else None


def wrong_department(text: str, entry_dept: str | None, dept: str) -> bool:
    if entry_dept and entry_dept != dept:
        return True
    own = any(t in text for t in DEPT_TERMS.get(dept, ()))
    other = any(t in text for d, terms in DEPT_TERMS.items() if d != dept for t in terms)
    return other and not own


def question_kind(text: str) -> str | None:
    for kind, (ask, _) in _QUESTIONS.items():
        if ask.search(text):
            return kind
    return None


def play(model: Any, chats: list[dict[str, Any]], hospital: dict[str, str] | None = None) -> dict[str, Any]:
    """Play ``chats`` through ``model`` and return the counts (see the module docstring) and examples."""
    hospital = dict(HOSPITAL if hospital is None else hospital)
    sug = model.suggester
    old = sug.hospital
    sug.hospital = hospital
    c: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    texts: list[str] = []

    def bad(kind: str, chat: str, text: str) -> None:
        c[kind] += 1
        examples.setdefault(kind, []).append(f"{chat}: {text}")

    try:
        for chat in chats:
            dept = chat.get("department") or ""
            session, _ = model.open_chat(
                started_at=datetime.fromisoformat(chat["started_at"]),
                department=chat.get("department"),
                project=chat.get("project"),
            )
            consultant_spoke = False
            per_chat: Counter[str] = Counter()
            cid = chat["conversation_id"]
            for m in chat["messages"]:
                name_known = bool(
                    session.state.facts.get("address_form") or session.state.facts.get("surname")
                )
                ins = model.on_message(
                    session, m["role"], m["text"], datetime.fromisoformat(m["at"]), budget_ms=None
                )
                if m["role"] == "consultant":
                    consultant_spoke = True
                    continue
                name_known = name_known or bool(session.state.facts.get("address_form"))
                s = ins.suggestions
                if not s:
                    c["empty_turns"] += 1
                c["turns"] += 1
                stages = []
                for x in s:
                    entry = sug.pool.get(x.id)
                    c["suggestions"] += 1
                    texts.append(x.text)
                    per_chat[x.text] += 1
                    if wrong_department(x.text, entry.department if entry else None, dept):
                        bad("wrong_department", cid, x.text)
                    if consultant_spoke and (x.stage == "greet" or _GREETING.search(x.text)):
                        bad("late_greetings", cid, x.text)
                    if name_known and _ASK_NAME.search(x.text):
                        bad("ask_name_known", cid, x.text)
                    name = foreign_name(x.text, hospital["hospital"])
                    if name:
                        bad("foreign_names", cid, f"{name} in {x.text}")
                    if _CUT.search(x.text):
                        bad("cut", cid, x.text)
                    stages.append((x.stage, entry.concern if entry else None))
                known = [st for st in stages if st[0]]
                if len(known) != len(set(known)):
                    bad("same_intent_turns", cid, " | ".join(x.text for x in s))
                flags, facts = session.state.flags, session.state.facts
                if s and flags.get("visit_time_agreed") and facts.get("contact_kinds"):
                    c["booked_turns"] += 1
                    if s[0].stage == "directions" and not c.get(f"confirmed:{cid}"):
                        bad("directions_before_confirm", cid, s[0].text)
                    if s[0].stage == "book":
                        c[f"confirmed:{cid}"] = 1
                kind = question_kind(m["text"])
                if kind:
                    c["asked"] += 1
                    if s and _QUESTIONS[kind][1].search(s[0].text):
                        c["answered"] += 1
                    else:
                        examples.setdefault("unanswered", []).append(
                            f"{cid}: {m['text']} -> {s[0].text if s else '-'}"
                        )
            for text, n in per_chat.items():
                if n > 2:
                    bad("over_twice", cid, f"{n}x {text}")
    finally:
        sug.hospital = old
    counts = {k: v for k, v in c.items() if not k.startswith("confirmed:")}
    counts["distinct_ratio"] = round(len(set(texts)) / len(texts), 3) if texts else 0.0
    counts["distinct_texts"] = len(set(texts))
    counts["chats"] = len(chats)
    return {"counts": counts, "examples": examples}


KEYS = (
    "chats",
    "turns",
    "suggestions",
    "empty_turns",
    "distinct_ratio",
    "distinct_texts",
    "wrong_department",
    "late_greetings",
    "ask_name_known",
    "foreign_names",
    "cut",
    "over_twice",
    "same_intent_turns",
    "booked_turns",
    "directions_before_confirm",
    "asked",
    "answered",
)


def main(argv: list[str]) -> int:
    from yuyue.models.bundle import YuyueModel

    model_dir = argv[1] if len(argv) > 1 else os.environ.get("YUYUE_TEST_MODEL_DIR", "")
    if not model_dir:
        print("usage: bench_suggest_quality.py MODEL_DIR [CHATS]", file=sys.stderr)
        return 2
    chats = load_chats(Path(argv[2])) if len(argv) > 2 else load_chats()
    result = play(YuyueModel.load(model_dir), chats)
    for k in KEYS:
        print(f"{k:28s} {result['counts'].get(k, 0)}")
    for kind, rows in result["examples"].items():
        print(f"\n{kind} ({len(rows)}):")
        for r in rows[:4]:
            print("  ", r)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
