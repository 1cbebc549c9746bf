"""What one message reveals: the visitor's surname, form of address, gender, age and region, the projects
talked about, the contact channels left, and a proposed or agreed visit time.

Who counts for what:

- surname, gender, age, regions and contact kinds come from visitor messages only (a consultant's 我们在上海
  or the desk's own phone number says nothing about the visitor);
- ``address_form`` comes from the visitor (叫我王姐) and also from the consultant addressing the visitor
  (王女士您好 → 王女士), but the consultant's form never sets ``surname``;
- projects and the visit time come from both roles (the consultant proposes 明天下午, the visitor agrees).

Visit times are parsed by a compact rule-based parser, not a library. jionlp's ``parse_time`` handles the
expressions well, but it costs about 235 µs per already-extracted expression and ``extract_time`` about
450 µs per message (plus a 0.8 s import and ~270 MB of dependencies), an order above this module's
budget of 40 µs per message. The rules resolve an expression relative to the message time ``at`` (its
timezone is kept):

- days: 今天/明天/后天/大后天 (今晚, 明早 …); 周六/星期六/礼拜六 is the coming one (a week ahead when said on a
  Saturday), 这周六/本周六 the one in the current Monday-based week, 下周六 the one in the next week;
  周末/这周末 is this week's Saturday (today on a Sunday), 下周末 next week's; 3号 is the next 3rd of a month
  (this month if not passed); 3月5号/3月5日 the next such date (this year if not passed); 2025年3月5日 and
  2025-03-05 as written;
- parts of the day with no clock time: 上午/早上 09:00, 中午 12:00, 下午 14:00, 傍晚 17:00, 晚上 19:00;
  a day with no part or time is 09:00 (today: the next full hour, at least 09:00);
- clock times: 10点, 10点半, 10点15(分), 下午3点 (15:00), 15:30; a bare hour 1–7 is afternoon (desks work by
  day); a time with no day is today when still ahead of ``at``, else tomorrow;
- an expression counts only with a visit word next to it (来, 到, 预约, 有空, 方便, 可以, 吧 … within 6
  characters before or 8 after) or in a short message (a bare 明天下午); 每周六, 上周六, 昨天晚上, 后天性,
  3号楼/3号线 and 周一到周五 are not visit times. In medical Q&A text (no visits at all) about 0.5% of
  messages still yield one, mostly symptom timing next to 来/可以;
- when several expressions qualify, the most specific wins (clock > part of day > day), then the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from importlib import resources
from typing import Literal

from yuyue.features.pii import PiiSpan, address_form, contact_kinds, find_pii
from yuyue.features.tokenize import domain_hits, tokenize

Gender = Literal["female", "male"]


@dataclass
class MessageEntities:
    """Facts extracted from one message."""

    surname: str | None = None
    address_form: str | None = None
    gender: Gender | None = None
    age: int | None = None
    projects: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    contact_kinds: list[str] = field(default_factory=list)
    visit_time: datetime | None = None
    visit_time_text: str | None = None


# ---------------------------------------------------------------------------------------------- gender, age

_FEMALE_FORMS = ("女士", "小姐", "阿姨", "太太", "大姐", "姐姐", "姐", "夫人")
_MALE_FORMS = ("先生", "大哥", "哥哥", "哥", "叔")
_GENDER = re.compile(
    r"(?P<m>我是男|本人男|我男的|性别[:：]?男|我老婆|我媳妇|我女朋友|我女友|我妻子|我太太|我爱人是女)"
    r"|(?P<f>我是女|本人女|我女的|性别[:：]?女|我老公|我男朋友|我男友|我丈夫|我先生|我家先生|我爱人是男|我怀孕|我月经|我例假|我是宝妈)"
)
_MAYBE_GENDER = re.compile(r"[男女]|老婆|媳妇|妻子|太太|老公|丈夫|先生|怀孕|月经|例假|宝妈")

_CN_DIGIT = {
    "零": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_NUM = r"(?:\d{1,2}|[一二两三四五六七八九十]{1,4})"
_AGE = re.compile(
    r"(?P<a>" + _NUM + r")\s?(?:多|来)?\s?(?:周|虚)?岁(?!月)"
    r"|今年\s?(?P<b>\d{1,2})(?![\d年月号日点:.%])"
    r"|年龄\s?(?:是|[:：])?\s?(?P<c>\d{1,2})(?!\d)"
)
# someone else's age: 孩子3岁, 我老公35岁
_AGE_OTHER = re.compile(
    r"孩子|儿子|女儿|宝宝|小孩|孩|老公|老婆|爱人|丈夫|妻子|妈|爸|爷|奶|他|她|朋友|闺蜜|同事|姐|哥|弟|妹"
)
_AGE_RANGE = range(12, 91)


def cn_number(text: str) -> int | None:
    """Integer value of ``25``, ``二十五``, ``三十``, ``十八``, ``两`` or ``二十七八`` (→ 27); None if not a number."""
    if text.isdigit():
        return int(text)
    if not text or any(c not in _CN_DIGIT and c != "十" for c in text):
        return None
    if "十" in text:
        tens_text, _, units_text = text.partition("十")
        tens = _CN_DIGIT.get(tens_text, 0) if tens_text else 1
        if tens_text and tens_text not in _CN_DIGIT:
            return None
        units = _CN_DIGIT[units_text[0]] if units_text else 0
        return tens * 10 + units
    return _CN_DIGIT[text[0]]


def _gender(text: str) -> Gender | None:
    if not _MAYBE_GENDER.search(text):
        return None
    m = _GENDER.search(text)
    if m is None:
        return None
    return "male" if m.group("m") else "female"


def _gender_of_form(form: str) -> Gender | None:
    if form.endswith(_FEMALE_FORMS):
        return "female"
    if form.endswith(_MALE_FORMS):
        return "male"
    return None


def _age(text: str) -> int | None:
    if "岁" not in text and "今年" not in text and "年龄" not in text:
        return None
    for m in _AGE.finditer(text):
        if _AGE_OTHER.search(text, max(0, m.start() - 6), m.start()):
            continue
        value = cn_number(m.group("a") or m.group("b") or m.group("c"))
        if value is not None and value in _AGE_RANGE:
            return value
    return None


# ---------------------------------------------------------------------------------------------- regions


_PLACE_CUE_BEFORE = ("在", "来自", "住", "住在", "老家", "我是", "从", "到")
_PLACE_CUE_AFTER = ("省", "市", "自治区", "人", "的", "这边", "那边", "本地", "地区")


@dataclass(frozen=True)
class _Places:
    names: frozenset[str]
    first_chars: frozenset[str]
    lengths: tuple[int, ...]  # longest first
    cue_only: frozenset[str]


@lru_cache(maxsize=1)
def _places() -> _Places:
    text = resources.files("yuyue.features.lexicon").joinpath("places.txt").read_text(encoding="utf-8")
    names: set[str] = set()
    cue_only: set[str] = set()
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")]
        names.add(parts[0])
        if len(parts) > 2 and parts[2] == "cue_only":
            cue_only.add(parts[0])
    return _Places(
        frozenset(names),
        frozenset(n[0] for n in names),
        tuple(sorted({len(n) for n in names}, reverse=True)),
        frozenset(cue_only),
    )


def _regions(text: str) -> list[str]:
    """Provinces and cities named in ``text``, longest name first at each position (a dictionary scan:
    a regex alternation of 340 names costs ~10x more per message)."""
    places = _places()
    found: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] not in places.first_chars:
            i += 1
            continue
        for length in places.lengths:
            name = text[i : i + length]
            if len(name) == length and name in places.names:
                break
        else:
            i += 1
            continue
        end = i + length
        cued = text[max(0, i - 2) : i].endswith(_PLACE_CUE_BEFORE) or text.startswith(_PLACE_CUE_AFTER, end)
        if (cued or name not in places.cue_only) and name not in found:
            found.append(name)
        i = end
    return found


# ---------------------------------------------------------------------------------------------- visit time

_DAY = (
    r"(?P<rel>大后天|后天|明天|明日|今天|今日|今晚|明晚|明早|今早)"
    r"|(?P<wkmod>这|本|下下|下)?个?(?:周|星期|礼拜)(?P<wd>[一二三四五六日天1-7])"
    r"|(?P<we>(?P<wemod>这|本|下)?个?周末)"
    r"|(?:(?P<y>\d{4})年)?(?P<mo>\d{1,2}|十[一二]?|[一二三四五六七八九])月(?P<md>\d{1,2}|[一二三]?十[一二三四五六七八九]?|[一二三四五六七八九])[日号]?"
    r"|(?P<iy>\d{4})-(?P<im>\d{1,2})-(?P<id>\d{1,2})"
    r"|(?P<dd>\d{1,2})[号日]"
)
_PERIOD = r"(?P<per>上午|早上|早晨|中午|下午|傍晚|晚上|夜里)"
_CLOCK = (
    r"(?P<h>\d{1,2}|[一二两三四五六七八九十]{1,3})\s?(?:点|(?<=\d)时)"
    r"(?:(?P<half>半)|(?P<q1>一刻)|(?P<q3>三刻)|(?P<mi>\d{1,2})分?|钟)?"
    r"|(?P<h2>\d{1,2}):(?P<m2>\d{2})(?!\d)"
)
_TIME = re.compile(
    r"(?=[今明后大这本下周星礼\d上早中傍晚夜一二两三四五六七八九十])"
    r"(?:" + _DAY + r")?\s?(?:" + _PERIOD + r")?\s?(?:" + _CLOCK + r")?"
)
_MAYBE_TIME = re.compile(r"[天周星礼末点时:午晚早夜]|[\d一二三四五六七八九十]\s?[号日月]|\d{4}-\d")
# a visit word near the expression (6 characters before, 8 after); 起来/原来/来说 are not coming over,
# 能去掉/能去除/能去斑 (can remove), 能去上班 (back to work) and 不能去 are not a visit
_VISIT_CUE = re.compile(
    r"(?<![起出以后本原看下带未])来(?![说源自])|(?<=[点半午上天])到|到院|到医院|到店|去医院|预约|约个|约好|约在"
    r"|有空|有时间|方便|可以|行吗|行的|好的|吧|就诊|面诊|见面|挂号|安排|过去看|过去一趟"
    r"|(?<![不没])能去(?![掉除痘斑疤皱纹印黑红眼上])"
)
_VISIT_CUE_BEFORE, _VISIT_CUE_AFTER = 6, 8
# 明天能去游泳吗 / 后天可以洗澡吗: a day for an activity after treatment (next to the expression, in the
# cue window), not for coming over, unless the message also says coming (来, 到院, 面诊 …): 明天下午来，
# 之后能吃辣吗 is still a visit. (上班 is not here: 周末上班吗 asks the desk's hours; 能去上班 is above.)
_ACTIVITY = re.compile(
    r"游泳|健身|运动|锻炼|跑步|喝酒|饮酒|喝|吃|洗澡|洗头|泡澡|温泉|桑拿|汗蒸|化妆|出差|旅游|旅行|坐飞机"
)
_COMING = re.compile(
    r"(?<![起出以后本原看下带未])来(?![说源自])|到院|到医院|到店|去医院|去你们|到你们|预约|约个|约好|约在"
    r"|就诊|面诊|见面|挂号|复诊|复查|过去看|过去一趟|过去"
)
# 后天性 (acquired), 后天的因素: not the day after tomorrow
_NOT_DAY_AFTER = ("性", "形成", "构成", "因素", "引起", "导致", "的因", "原因")
# 每周六, 上周六, 第3天, 每天晚上, 昨天晚上, 11.8日: not a time to come
_NOT_TIME_BEFORE = ("每", "上", "第", "上个", "隔", "天", "昨", ".", "/")
_NOT_DATE_AFTER = re.compile(
    r"楼|线|床|房|窗|门|口|诊室|位|包|机|字|码|店|院|馆|厅|车|台|卡|病|人|元|块|以内|内|之内|左右|天|个"
)
_PERIOD_HOUR = {"上午": 9, "早上": 9, "早晨": 9, "中午": 12, "下午": 14, "傍晚": 17, "晚上": 19, "夜里": 19}
_PM = frozenset({"下午", "傍晚", "晚上", "夜里"})
_REL_DAYS = {
    "今天": 0,
    "今日": 0,
    "今晚": 0,
    "今早": 0,
    "明天": 1,
    "明日": 1,
    "明晚": 1,
    "明早": 1,
    "后天": 2,
    "大后天": 3,
}
_REL_PERIOD = {"今晚": "晚上", "明晚": "晚上", "今早": "上午", "明早": "上午"}
_WEEKDAY = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6, "7": 6}
_SHORT_MESSAGE = 8


def _weekday_index(text: str) -> int:
    return _WEEKDAY[text] if text in _WEEKDAY else int(text) - 1


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _resolve_day(g: dict[str, str | None], today: date) -> date | None:
    """The date a day expression names, or None if it names none."""
    if g["rel"]:
        return today + timedelta(days=_REL_DAYS[g["rel"]])
    monday = today - timedelta(days=today.weekday())
    if g["wd"]:
        wd, mod = _weekday_index(g["wd"]), g["wkmod"]
        if mod in ("这", "本"):
            return monday + timedelta(days=wd)
        if mod == "下":
            return monday + timedelta(days=7 + wd)
        if mod == "下下":
            return monday + timedelta(days=14 + wd)
        return today + timedelta(days=(wd - today.weekday()) % 7 or 7)
    if g["we"]:
        if g["wemod"] == "下":
            return monday + timedelta(days=12)
        return today if today.weekday() == 6 else monday + timedelta(days=5)
    if g["mo"]:
        month, day = cn_number(g["mo"]), cn_number(g["md"] or "")
        if month is None or day is None:
            return None
        if g["y"]:
            return _safe_date(int(g["y"]), month, day)
        when = _safe_date(today.year, month, day)
        if when is not None and when < today:
            when = _safe_date(today.year + 1, month, day)
        return when
    if g["iy"]:
        return _safe_date(int(g["iy"]), int(g["im"] or 0), int(g["id"] or 0))
    if g["dd"]:
        day = int(g["dd"])
        year, month = today.year, today.month
        if day < today.day:
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return _safe_date(year, month, day)
    return None


def _clock(g: dict[str, str | None], period: str | None) -> tuple[int, int] | None:
    if g["h2"]:
        hour, minute = int(g["h2"]), int(g["m2"] or 0)
    else:
        h = cn_number(g["h"] or "")
        if h is None:
            return None
        hour = h
        if g["half"]:
            minute = 30
        elif g["q1"]:
            minute = 15
        elif g["q3"]:
            minute = 45
        elif g["mi"]:
            minute = int(g["mi"])
        else:
            minute = 0
        if period in _PM and hour < 12:
            hour += 12
        elif period == "中午" and hour <= 2:
            hour += 12
        elif period is None and 1 <= hour <= 7:
            hour += 12
    if hour == 24 and minute == 0:
        hour = 0
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    return hour, minute


def _candidate(
    text: str, m: re.Match[str], at: datetime, short: bool, coming: bool
) -> tuple[int, datetime] | None:
    """(specificity, datetime) of one time expression: specificity 2 with a clock time, 1 a part of day, 0 a day.

    ``coming``: the message says coming over somewhere (then an activity nearby does not rule it out)."""
    g = m.groupdict()
    has_day = bool(g["rel"] or g["wd"] or g["we"] or g["mo"] or g["iy"] or g["dd"])
    has_clock = g["h"] is not None or g["h2"] is not None
    start, end = m.start(), m.end()
    lo, hi = max(0, start - _VISIT_CUE_BEFORE), end + _VISIT_CUE_AFTER
    if not short and not _VISIT_CUE.search(text, lo, hi):
        return None
    if not coming and _ACTIVITY.search(text, lo, hi):
        return None
    if text[max(0, start - 2) : start].endswith(_NOT_TIME_BEFORE):
        return None
    if g["rel"] == "后天" and text.startswith(_NOT_DAY_AFTER, m.end("rel")):
        return None
    if g["wd"] and start > 0 and text[start - 1].isdigit():
        return None  # 打48周一般…: weeks counted, not a weekday
    if g["h"] is not None:
        if not g["h"].isdigit() and not (has_day or g["per"] or g["half"]):
            # 有一点疼, 差一点: a Chinese numeral before 点 is a clock time only next to a day or part of day
            return None
        if not (has_day or g["per"]) and _NOT_DATE_AFTER.match(text, end):
            return None
    elif g["dd"] and not (g["per"] or has_clock) and _NOT_DATE_AFTER.match(text, end):
        return None
    if g["wd"] and not (g["per"] or has_clock) and text.startswith(("次", "到", "至", "-", "~"), end):
        # 一周一次, 周一到周五 (opening hours), not a day to come
        return None
    today = at.date()
    day = _resolve_day(g, today) if has_day else None
    if has_day and day is None:
        return None
    period = g["per"] or _REL_PERIOD.get(g["rel"] or "")
    hm = _clock(g, period) if has_clock else None
    if has_clock and hm is None:
        return None
    if hm is None:
        if period:
            hm = (_PERIOD_HOUR[period], 0)
        elif day == today:
            hm = (min(max(9, at.hour + 1), 23), 0)
        else:
            hm = (9, 0)
    if day is None:
        when = datetime(today.year, today.month, today.day, hm[0], hm[1], tzinfo=at.tzinfo)
        if when <= at:
            when += timedelta(days=1)
    else:
        when = datetime(day.year, day.month, day.day, hm[0], hm[1], tzinfo=at.tzinfo)
    return (2 if has_clock else 1 if period else 0), when


def parse_visit_time(text: str, at: datetime) -> tuple[datetime | None, str | None]:
    """A proposed or agreed visit time in normalised ``text`` resolved against the message time ``at``.

    Returns the datetime (in ``at``'s timezone) and the expression it came from, or ``(None, None)``.
    """
    if not _MAYBE_TIME.search(text):
        return None, None
    short = len(text) <= _SHORT_MESSAGE
    coming = _COMING.search(text) is not None
    best: tuple[int, datetime, str] | None = None
    for m in _TIME.finditer(text):
        if m.end() == m.start():
            continue
        found = _candidate(text, m, at, short, coming)
        if found is not None and (best is None or found[0] > best[0]):
            best = (found[0], found[1], m.group(0).strip())
    if best is None:
        return None, None
    return best[1], best[2]


# ---------------------------------------------------------------------------------------------- all together


def _projects(tokens: list[str]) -> list[str]:
    projects: list[str] = []
    for term in domain_hits(tokens):
        if term.category == "project" and term.canonical not in projects:
            projects.append(term.canonical)
    return projects


def extract_entities(
    text: str,
    role: str,
    at: datetime,
    tokens: list[str] | None = None,
    pii: list[PiiSpan] | None = None,
) -> MessageEntities:
    """Entities in one normalised message sent by ``role`` at ``at`` (timezone-aware).

    ``tokens`` (from :func:`features.tokenize.tokenize`) and ``pii`` (from :func:`features.pii.find_pii`)
    are reused when the caller already has them.
    """
    if pii is None:
        pii = find_pii(text)
    if tokens is None:
        tokens = tokenize(text)
    out = MessageEntities(projects=_projects(tokens))
    out.visit_time, out.visit_time_text = parse_visit_time(text, at)
    if role == "consultant":
        for span in pii:
            form = address_form(text, span) if span.type == "surname" else None
            if form:
                out.address_form = form
                break
        return out
    if role != "visitor":
        return out
    for span in pii:
        if span.type != "surname":
            continue
        form = address_form(text, span)
        if out.surname is None:
            out.surname = span.value
        if form and out.address_form is None:
            out.address_form = form
    out.contact_kinds = contact_kinds(text, pii)
    out.gender = _gender(text)
    if out.gender is None and out.address_form:
        out.gender = _gender_of_form(out.address_form)
    out.age = _age(text)
    out.regions = _regions(text)
    return out
