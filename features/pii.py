"""Personal data in a message: find phone numbers, WeChat / QQ ids, ID-card numbers and surnames, and mask them.

Input is text already passed through :func:`features.normalize.normalize` (NFKC, so digits are ASCII and
runs of spaces are one space). Detection favours precision: a bare digit run is a phone only when it is a
mainland mobile (``1[3-9]`` + 9 digits) standing alone, QQ numbers and WeChat ids need a cue word, ID-card
numbers must pass the GB 11643 checksum and carry a real birth date, and a surname counts only in a form
that names the visitor (我姓王, 王女士, 叫我小王, 我叫王小明) with the surname list in
``features/lexicon/surnames.txt``.

Masks (``mask_value``), chosen so that the raw value never survives:

- phone ``13812345678`` → ``138****5678`` (first 3, last 4)
- wechat ``wang_xm88`` → ``wa****`` (first 2; the length is hidden too)
- qq ``123456789`` → ``12****`` (first 2 only: QQ numbers are short, so more digits would make them guessable)
- id_card ``11010519491231002X`` → ``1101************2X`` (region prefix and last 2; the birth date is hidden)
- surname → one ``*`` per character of the span (王女士 → ``*女士``; 我叫王小明 → ``我叫***``)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources

PII_TYPES = ("phone", "wechat", "qq", "id_card", "surname")


@dataclass(frozen=True)
class PiiSpan:
    """One piece of personal data: ``text[start:end]`` holds it, ``value`` is its normalised form."""

    type: str
    start: int
    end: int
    value: str

    def overlaps(self, other: PiiSpan) -> bool:
        return self.start < other.end and other.start < self.end


# ---------------------------------------------------------------------------------------------- patterns

_ANY_DIGIT = re.compile(r"\d")
_ANY_LATIN = re.compile(r"[A-Za-z]")

# a separator between digits of a phone number: one space, or a hyphen with optional spaces around it
_SEP = r"(?: ?- ?| )?"
_PHONE = re.compile(
    r"(?<![\d_])(?<!\d )(?<!\d-)"
    r"(?P<cc>(?:\(\s?\+?86\s?\)|\+ ?86|0086|86)\s?(?:-\s?)?)?"
    r"(?P<num>1" + _SEP + r"[3-9](?:" + _SEP + r"\d){9})"
    r"(?!\d)"
)
_NOT_DIGIT = re.compile(r"\D")
# what right before a number says it is not a phone: money, an order / tracking / card number
_PHONE_BAD_BEFORE = re.compile(
    r"(?:[¥$￥]|订单号?|单号|编号|运单|快递|卡号|账号|帐号|流水号|尾号|工号|学号|编码|券码)[:：]?\s?$"
)
_PHONE_BAD_AFTER = re.compile(r"^\s?(?:元|块|万|亿|次|个|年|岁|人|kg|cm|ml)")
_DIGIT_CONT = re.compile(r"^(?: ?- ?| )\d")
_DIGIT_BEFORE = re.compile(r"\d(?: ?- ?| )$")

_ID_CARD = re.compile(
    r"(?<![\dA-Za-z])([1-9]\d{5}) ?((?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])) ?(\d{3}[\dXx])(?![\dA-Za-z])"
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

_QQ_CUE = r"(?<![A-Za-z])(?:qq|扣扣|企鹅|q号)"
_QQ = re.compile(
    _QQ_CUE + r"(?:号码?|号|账号|帐号)?\s?(?:吧|呀|啊|哈|哦|呢)?\s?(?:是|为|:|：|就是|号是|号码是)?\s?[:：]?\s?(\d{5,11})(?!\d)",
    re.IGNORECASE,
)
_QQ_MAIL = re.compile(r"(?<![\dA-Za-z])(\d{5,11})@qq\.com", re.IGNORECASE)

_WECHAT_CUE = r"(?<![A-Za-z])(?:微信|威信|薇信|徽信|微x|wx|vx|v信|weixin|wechat|加v|加我|加这个)"
_WECHAT = re.compile(
    _WECHAT_CUE + r"(?:号码?|号|id|账号)?\s?(?:吧|呀|啊|哈|哦|呢)?\s?(?:是|为|:|：|就是|号是|搜|加)?\s?[:：]?\s?"
    r"(?!(?:wechat|weixin)(?![A-Za-z0-9_-]))([A-Za-z][A-Za-z0-9_-]{5,19})(?![A-Za-z0-9_-])",
    re.IGNORECASE,
)
_WXID = re.compile(r"(?<![A-Za-z0-9_-])(wxid_[A-Za-z0-9_-]{4,30})(?![A-Za-z0-9_-])", re.IGNORECASE)
# a phone given as WeChat: 微信就是手机号138…, 微信13812345678, 加我138…; also 微信同号 anywhere
_WECHAT_BEFORE_PHONE = re.compile(_WECHAT_CUE + r"[^\d。！？!?]{0,8}$", re.IGNORECASE)
_WECHAT_SAME_NUMBER = re.compile(r"(?:微信|vx|wx)同号|同微信|微信也是这个|也是微信", re.IGNORECASE)

_ID_CHAR = re.compile(r"[A-Za-z0-9_-]")
_URL = re.compile(
    r"(?:https?://|www\.)[^\s\u4e00-\u9fff，。！？]+|[A-Za-z0-9.-]+\.(?:com|cn|net|org|html?)\b[^\s\u4e00-\u9fff，。！？]*",
    re.IGNORECASE,
)

_MAYBE_SURNAME = re.compile(r"姓|叫|女士|小姐|先生|阿姨|太太|大姐|大哥|夫人|名字|联系人|称呼|我是|本人是|姐|哥")
# titles a visitor gives after the surname; the second group only in a form of address (叫我王姐)
_TITLE = "女士|小姐|先生|阿姨|太太|大姐|大哥|夫人"
_TITLE_CUED = "姐姐|哥哥|姐|哥|总|叔|老师|师傅"
_ADDRESS_CUE = r"(?:叫我|喊我|称呼我|称我|我是|本人是|我叫)"
# what ends a given name after 我叫王…: particles, pronouns, time words, verbs that follow a name
_NAME_STOP = "今天|明天|后天|昨天|今年|医生|大夫|[的了呢吧啊呀哦嗯噢哈在想要我你他她是和就可吗么也都还有这那请问咨做去来到说,，。!！?？]"


@dataclass(frozen=True)
class _Surnames:
    compound: tuple[str, ...]
    safe_compound: frozenset[str]
    safe_single: frozenset[str]
    all_re: str  # alternation of every surname, compound ones first
    safe_re: str  # same without the cue-only ones
    not_names: tuple[str, ...]


@lru_cache(maxsize=1)
def _surnames() -> _Surnames:
    text = resources.files("yuyue.features.lexicon").joinpath("surnames.txt").read_text(encoding="utf-8")
    compound: list[str] = []
    single_all: list[str] = []
    single_safe: list[str] = []
    compound_safe: list[str] = []
    not_names: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            not_names.append(line[1:])
            continue
        name, _, flag = line.partition("\t")
        name, cue_only = name.strip(), flag.strip() == "cue_only"
        if len(name) > 1:
            compound.append(name)
            if not cue_only:
                compound_safe.append(name)
        else:
            single_all.append(name)
            if not cue_only:
                single_safe.append(name)

    def alternation(comp: list[str], single: list[str]) -> str:
        parts = [re.escape(c) for c in comp] + ["[" + "".join(single) + "]"]
        return "(?:" + "|".join(parts) + ")"

    return _Surnames(
        tuple(compound),
        frozenset(compound_safe),
        frozenset(single_safe),
        alternation(compound, single_all),
        alternation(compound_safe, single_safe),
        tuple(not_names),
    )


@dataclass(frozen=True)
class _SurnamePatterns:
    cue: re.Pattern[str]  # 我姓王 / 免贵姓欧阳
    title: re.Pattern[str]  # 女士 in 王女士 (the surname before it is checked in code: faster than a regex)
    small_old: re.Pattern[str]  # 叫我小王 / 老王
    cued_title: re.Pattern[str]  # 叫我王姐
    full_name: re.Pattern[str]  # 我叫王小明
    greeting: re.Pattern[str]  # 王姐您好 / 好的李哥， (a consultant addressing the visitor)
    form_after: re.Pattern[str]  # title right after a surname span (for address_form)


@lru_cache(maxsize=1)
def _surname_patterns() -> _SurnamePatterns:
    s = _surnames()
    given = "[\u4e00-\u9fff]"
    return _SurnamePatterns(
        cue=re.compile(
            r"(?P<pre>我|本人|免贵|鄙人|俺)?(?<!百)(?<![^免]贵)姓\s?(?:是)?\s?(?P<s>"
            + s.all_re
            + r")(?P<de>的)?"
        ),
        title=re.compile(_TITLE),
        small_old=re.compile(_ADDRESS_CUE + r"\s?(?P<form>[小老](?P<s>" + s.safe_re + r"))"),
        cued_title=re.compile(_ADDRESS_CUE + r"\s?(?P<s>" + s.safe_re + r")(?:" + _TITLE_CUED + r")"),
        full_name=re.compile(
            r"(?:我叫|我叫做|本人叫|(?:我的)?名字(?:是|叫)?[:：]?|姓名(?:是)?[:：]?|联系人(?:是)?[:：]?)\s?"
            r"(?P<s>" + s.safe_re + r")"
            r"(?P<g>(?:(?!" + _NAME_STOP + r")" + given + r"){0,2})"
        ),
        form_after=re.compile(r"(?:" + _TITLE + "|" + _TITLE_CUED + ")"),
        # without a cue, 姐/哥 after a surname is a form of address only where a greeting puts it:
        # after a break or 好的/嗯, and before one, 您/你, 好/早 or 在吗 (表姐, 空姐, 王姐姐家 are not)
        greeting=re.compile(
            r"(?:(?<![\u4e00-\u9fff])|(?<=[的好嗯哦啊呀]))(?P<s>" + s.safe_re + r")(?:姐姐|哥哥|姐|哥)"
            r"(?=[您你好早]|在吗|[^\u4e00-\u9fff]|$)"
        ),
    )


# ---------------------------------------------------------------------------------------------- detection


def _valid_id_card(number: str) -> bool:
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    if _ID_CHECK[total % 11] != number[17]:
        return False
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return born.year >= 1900 and born <= date.today()


def _url_spans(text: str) -> list[tuple[int, int]]:
    if "." not in text and "/" not in text:
        return []
    return [m.span() for m in _URL.finditer(text)]


def _inside(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in spans)


def _find_digits(text: str, out: list[tuple[int, PiiSpan]]) -> None:
    urls = _url_spans(text)
    for m in _ID_CARD.finditer(text):
        number = (m.group(1) + m.group(2) + m.group(3)).upper()
        if _valid_id_card(number) and not _inside(urls, *m.span()):
            out.append((0, PiiSpan("id_card", m.start(), m.end(), number)))
    for m in _PHONE.finditer(text):
        start, end = m.span()
        raw = m.group("num")
        if _inside(urls, start, end):
            continue
        before, after = text[max(0, start - 6) : start], text[end : end + 4]
        if _PHONE_BAD_BEFORE.search(before) or _PHONE_BAD_AFTER.match(after):
            continue
        # a spaced number that runs on (6222 1381 2345 6789 012) is a card number, not a phone
        if not raw.isdigit() and (_DIGIT_CONT.match(after) or _DIGIT_BEFORE.search(before)):
            continue
        out.append((2, PiiSpan("phone", start, end, _NOT_DIGIT.sub("", raw))))
    for m in _QQ.finditer(text):
        if not _inside(urls, *m.span(1)):
            out.append((1, PiiSpan("qq", m.start(1), m.end(1), m.group(1))))
    if "@" in text:
        for m in _QQ_MAIL.finditer(text):
            out.append((1, PiiSpan("qq", m.start(1), m.end(1), m.group(1))))


def _find_wechat(text: str, out: list[tuple[int, PiiSpan]]) -> None:
    urls = _url_spans(text)
    for rank, pattern in ((3, _WXID), (4, _WECHAT)):
        for m in pattern.finditer(text):
            if not _inside(urls, *m.span(1)):
                out.append((rank, PiiSpan("wechat", m.start(1), m.end(1), m.group(1))))


def _find_surnames(text: str, out: list[tuple[int, PiiSpan]]) -> None:
    p = _surname_patterns()
    not_names = _surnames().not_names
    for m in p.cue.finditer(text):
        # 姓张的医生 is someone else; 我姓张的 is the visitor
        if m.group("de") and not m.group("pre"):
            continue
        out.append((5, PiiSpan("surname", m.start("s"), m.end("s"), m.group("s"))))
    for m in p.small_old.finditer(text):
        if text.startswith(not_names, m.start("form")):
            continue
        out.append((6, PiiSpan("surname", m.start("s"), m.end("s"), m.group("s"))))
    for m in p.cued_title.finditer(text):
        if text.startswith(not_names, m.start("s")):
            continue
        out.append((6, PiiSpan("surname", m.start("s"), m.end("s"), m.group("s"))))
    s = _surnames()
    for m in p.title.finditer(text):
        at = m.start()
        if text[max(0, at - 2) : at] in s.safe_compound:
            out.append((7, PiiSpan("surname", at - 2, at, text[at - 2 : at])))
        elif at > 0 and text[at - 1] in s.safe_single:
            out.append((7, PiiSpan("surname", at - 1, at, text[at - 1])))
    for m in p.full_name.finditer(text):
        if text.startswith(not_names, m.start("s")):
            continue
        out.append((8, PiiSpan("surname", m.start("s"), m.end("g"), m.group("s"))))
    for m in p.greeting.finditer(text):
        if not text.startswith(not_names, m.start("s")):
            out.append((9, PiiSpan("surname", m.start("s"), m.end("s"), m.group("s"))))


def _repeat_mentions(text: str, spans: list[PiiSpan]) -> list[PiiSpan]:
    """Other places where an already found WeChat / QQ id is repeated without a cue."""
    extra: list[PiiSpan] = []
    for span in spans:
        if span.type not in ("wechat", "qq"):
            continue
        at = text.find(span.value)
        while at != -1:
            end = at + len(span.value)
            edge_ok = (at == 0 or not _ID_CHAR.match(text, at - 1)) and not _ID_CHAR.match(text, end)
            if at != span.start and edge_ok:
                extra.append(PiiSpan(span.type, at, end, span.value))
            at = text.find(span.value, end)
    return extra


_FILLER = r"(?:呃|嗯|哦|额|噢|那个|我|就|\s|,|，)*"


@lru_cache(maxsize=1)
def _name_answer() -> re.Pattern[str]:
    """A reply that is only a form of address: 邓 / 小毛 / 王姐 / 李女士 (after 怎么称呼您)."""
    return re.compile(
        r"^" + _FILLER + r"(?P<form>[小老]?(?P<s>" + _surnames().all_re + r")(?:" + _TITLE + "|" + _TITLE_CUED + r")?)"
        r"(?:就行|就好|吧|啊|呀|哈|。|\.|!|！)*$"
    )


def find_pii(text: str, name_answer: bool = False) -> list[PiiSpan]:
    """Personal data in normalised ``text``: non-overlapping spans sorted by start.

    Where candidates overlap the stronger one wins: ID card, QQ (a cued number), phone, WeChat, then
    surname forms (姓 cue, 叫我小王/王姐, 王女士, 我叫王小明). ``name_answer``: the message answers a
    question for the visitor's name, so a bare surname (邓, 小毛, 王姐) counts too.
    """
    if not text:
        return []
    found: list[tuple[int, PiiSpan]] = []
    if name_answer and len(text) <= 12:
        m = _name_answer().match(text)
        if m and not text.startswith(_surnames().not_names, m.start("form")):
            found.append((5, PiiSpan("surname", m.start("s"), m.end("s"), m.group("s"))))
    has_digit = _ANY_DIGIT.search(text) is not None
    if has_digit:
        _find_digits(text, found)
    if _ANY_LATIN.search(text):
        _find_wechat(text, found)
    if _MAYBE_SURNAME.search(text):
        _find_surnames(text, found)
    if not found:
        return []
    found.sort(key=lambda item: (item[0], item[1].start))
    taken: list[PiiSpan] = []
    for _, span in found:
        if not any(span.overlaps(t) for t in taken):
            taken.append(span)
    if any(t.type in ("wechat", "qq") for t in taken):
        for span in _repeat_mentions(text, taken):
            if not any(span.overlaps(t) for t in taken):
                taken.append(span)
    taken.sort(key=lambda s: s.start)
    return taken


def contact_kinds(text: str, spans: list[PiiSpan]) -> list[str]:
    """Contact channels the spans give, in first-seen order: ``phone``, ``wechat``, ``qq``.

    A phone number given as the WeChat id (微信就是手机号138…, 加我138…, …微信同号) adds ``wechat``.
    """
    kinds: list[str] = []

    def add(kind: str) -> None:
        if kind not in kinds:
            kinds.append(kind)

    for span in spans:
        if span.type == "phone":
            add("phone")
            if _WECHAT_BEFORE_PHONE.search(text, max(0, span.start - 14), span.start):
                add("wechat")
        elif span.type in ("wechat", "qq"):
            add(span.type)
    if "phone" in kinds and _WECHAT_SAME_NUMBER.search(text):
        add("wechat")
    return kinds


def address_form(text: str, span: PiiSpan) -> str | None:
    """The form of address a surname span sits in (王女士, 王姐, 小王, 老王), or None (我姓王, 我叫王小明)."""
    if span.type != "surname" or span.end - span.start != len(span.value):
        return None
    m = _surname_patterns().form_after.match(text, span.end)
    if m:
        return text[span.start : m.end()]
    if span.start > 0 and text[span.start - 1] in "小老":
        return text[span.start - 1 : span.end]
    return None


# ---------------------------------------------------------------------------------------------- masking


def mask_address_form(form: str) -> str:
    """A form of address with its surname masked, whichever surname it holds: 王女士 → *女士,
    欧阳先生 → **先生, 小王 → 小*. A form of any other shape is masked whole."""
    if len(form) in (2, 3) and form[0] in "小老":
        return form[0] + "*" * (len(form) - 1)
    cut = 2 if form[:2] in _surnames().compound else 1  # 欧阳先生 is ** + 先生, 王小姐 is * + 小姐
    if len(form) > cut and _surname_patterns().form_after.fullmatch(form, cut):
        return "*" * cut + form[cut:]
    return "*" * len(form)


def mask_value(type: str, value: str) -> str:
    """Masked form of one normalised value (see the module docstring for each type)."""
    if type == "phone":
        return value[:3] + "****" + value[-4:]
    if type == "wechat":
        return value[:2] + "****"
    if type == "qq":
        return value[:2] + "****"
    if type == "id_card":
        return value[:4] + "*" * 12 + value[-2:]
    if type == "surname":
        return "*" * len(value)
    raise ValueError(f"unknown personal-data type: {type!r}")


def mask_text(text: str, spans: list[PiiSpan] | None = None) -> str:
    """``text`` with every personal-data span masked; ``spans`` from :func:`find_pii` when already known."""
    if spans is None:
        spans = find_pii(text)
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for span in sorted(spans, key=lambda s: s.start):
        if span.start < pos:
            continue
        parts.append(text[pos : span.start])
        if span.type == "surname":
            parts.append("*" * (span.end - span.start))
        else:
            parts.append(mask_value(span.type, span.value))
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)
