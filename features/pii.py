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
from dataclasses import dataclass, replace
from datetime import date
from functools import lru_cache
from importlib import resources

from yuyue.features.normalize import normalize, normalize_mapped

PII_TYPES = ("phone", "wechat", "qq", "id_card", "surname", "email", "address")
# the types that let the hospital reach the visitor (a chat holding one has left a contact)
CONTACT_TYPES = ("phone", "wechat", "qq", "email")
# the placeholder each type is replaced by in `yuyue pii mask`
TYPE_PLACEHOLDERS = {t: f"<{t}>" for t in PII_TYPES}


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
#
# Every pattern below is linear in the text: each repetition is bounded or unambiguous (what a repetition
# consumes cannot also end it), no pattern is searched backwards with ``$`` over an unbounded stretch, and
# every loop over matches does constant work per match (see tests/features/test_pii_linear.py).

_ANY_DIGIT = re.compile(r"[0-9零〇一二三四五六七八九幺两壹贰叁肆伍陆柒捌玖]")
_ANY_LATIN = re.compile(r"[A-Za-z]")

# digits as visitors type them (NFKC already folded full-width and circled digits to ASCII)
_CN_DIGITS = {
    **dict.fromkeys("零〇", "0"),
    **dict.fromkeys("一幺壹", "1"),
    **dict.fromkeys("二两贰", "2"),
    "三": "3",
    "叁": "3",
    "四": "4",
    "肆": "4",
    "五": "5",
    "伍": "5",
    "六": "6",
    "陆": "6",
    "七": "7",
    "柒": "7",
    "八": "8",
    "捌": "8",
    "九": "9",
    "玖": "9",
}
_D = "0-9" + "".join(_CN_DIGITS)
# what may stand between two digits of one number: spaces, dashes, dots and zero-width characters
_S = r" \-.\u2010-\u2015\u200b\u200c\u200d\u2060\ufeff"
_CN = "".join(_CN_DIGITS)
# one number is written in one script: 13008780031一天 is a phone and a word, not a 12-digit number
_RUN = re.compile(rf"[0-9](?:[{_S}]{{0,3}}[0-9])*|[{_CN}](?:[{_S}]{{0,3}}[{_CN}])*")
_NUMBER = (
    rf"(?:[0-9](?:[{_S}]{{0,3}}[0-9]){{4,10}}(?![{_S}]{{0,3}}[0-9])"
    rf"|[{_CN}](?:[{_S}]{{0,3}}[{_CN}]){{4,10}}(?![{_S}]{{0,3}}[{_CN}]))"
)

# what right before a number says it is not a phone: money, an order / tracking / card number
_PHONE_BAD_BEFORE = re.compile(
    r"(?:[¥$￥]|订单号?|单号|编号|运单|快递|卡号|账号|帐号|流水号|尾号|工号|学号|编码|券码)[:：]?\s?$"
)
_PHONE_BAD_AFTER = re.compile(r"^\s?(?:元|块|万|亿|次|个|年|岁|人|kg|cm|ml)")
_CC_BEFORE = re.compile(r"(?:\(\s?\+?\s?86\s?\)|\+\s?)\s?(?:-\s?)?$")
_LANDLINE_CUE = re.compile(r"(?:电话|座机|固话|手机|号码|联系|打|tel|phone)[^\d]{0,4}$", re.IGNORECASE)
_AREA_BEFORE = re.compile(r"\(0[1-9]\d{1,2}\)\s?$")

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

_QQ_CUE = r"(?<![A-Za-z])(?:qq|q q|扣扣|抠抠|企鹅|q号)"
_FILL = r"\s?(?:吧|呀|啊|哈|哦|呢)?\s?(?:是|为|:|：|就是|号是|号码是|is|:)?\s?[:：]?\s?"
_QQ = re.compile(
    _QQ_CUE + r"(?:号码?|号|账号|帐号|\s?number|\s?no\.?)?" + _FILL + "(" + _NUMBER + ")",
    re.IGNORECASE,
)

_WECHAT_CUE = r"(?<![A-Za-z])(?:微信|威信|薇信|徽信|魏信|微x|wx|vx|v信|wei\s?xin|we\s?chat|加v|加我|加这个)"
_WECHAT = re.compile(
    _WECHAT_CUE
    + r"(?:号码?|号|\s?id|账号|\s?number|\s?account)?"
    + _FILL
    + r"(?!(?:wechat|weixin)(?![A-Za-z0-9_-]))([A-Za-z][A-Za-z0-9_-]{5,19})(?![A-Za-z0-9_-])",
    re.IGNORECASE,
)
_WXID = re.compile(r"(?<![A-Za-z0-9_-])(wxid_[A-Za-z0-9_-]{4,30})(?![A-Za-z0-9_-])", re.IGNORECASE)
# a phone given as WeChat: 微信就是手机号138…, 微信13812345678, 加我138…; also 微信同号 anywhere
_WECHAT_BEFORE_PHONE = re.compile(_WECHAT_CUE + r"[^\d。！？!?]{0,8}$", re.IGNORECASE)
_WECHAT_SAME_NUMBER = re.compile(r"(?:微信|vx|wx)同号|同微信|微信也是这个|也是微信", re.IGNORECASE)

_ID_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL_DOMAIN = re.compile(r"[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,4}")
_URL_CHUNK = re.compile(r"[^\s\u4e00-\u9fff，。！？]+")
_URL_START = re.compile(r"https?://|www\.|\.(?:com|cn|net|org|html?)\b", re.IGNORECASE)
_URL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")

# addresses: a road / street and a house number (解放路12号), or a compound with building / unit / room
_NOT_PLACE = "在住我是的到去址家从近离往和跟送寄发给了就"
_PLACE_CHAR = rf"(?:(?![{_NOT_PLACE}])[\u4e00-\u9fff])"
_HOUSE_PART = r"(?:\s?[0-9A-Za-z一二三四五六七八九十]{1,5}\s?(?:号楼|栋|幢|座|单元|楼|层|室|号|户))"
_ADDRESS = re.compile(
    _PLACE_CHAR
    + r"{1,8}?(?:大街|大道|路|街|巷|胡同|弄)\s?[0-9一二三四五六七八九十百零]{1,5}\s?号(?!线)(?:院|楼)?"
    + _HOUSE_PART
    + "{0,4}"
    + "|"
    + _PLACE_CHAR
    + r"{1,8}?(?:小区|花园|公寓|大厦|家园|新村|社区|苑)"
    + _HOUSE_PART
    + "{1,4}"
    + r"|(?<![0-9A-Za-z])[0-9A-Za-z]{1,4}\s?(?:号楼|栋|幢|座)\s?[0-9]{1,3}\s?单元(?:\s?[0-9]{1,5}\s?(?:室|号))?"
)
_MAYBE_ADDRESS = re.compile(r"号|栋|幢|单元|室")

_MAYBE_SURNAME = re.compile(
    r"姓|叫|女士|小姐|先生|阿姨|太太|大姐|大哥|夫人|名字|联系人|称呼|我是|本人是|姐|哥"
)
# titles a visitor gives after the surname; the second group only in a form of address (叫我王姐)
_TITLE = "女士|小姐|先生|阿姨|太太|大姐|大哥|夫人"
_TITLE_CUED = "姐姐|哥哥|姐|哥|总|叔|老师|师傅"
_ADDRESS_CUE = r"(?:叫我|喊我|称呼我|称我|我是|本人是|我叫)"
# what ends a given name after 我叫王…: particles, pronouns, time words, verbs that follow a name
# characters that do not occur in a given name (they end the word before a title or a time word)
_GIVEN_STOP = frozenset(
    "的了呢吧啊呀哦嗯噢哈在想要我你他她它们是和就可吗么也都还有这那个请问咨做去来到说看过会能以很太好不没"
    "医生院科术后前今昨天年月日号点时分岁元块钱多少几么什怎样为因所但而且或与及对于从把被让给向上下里外"
    "先女小老大哥姐叔姨师总"
)
# two characters after a surname that are a role, not a given name (王主任下午坐诊)
_ROLES = frozenset(
    "主任 院长 护士 教授 医师 专家 经理 老板 总监 老师 医生 大夫 师傅 阿姨 同学 律师 顾问 小姐 先生 女士 助理 客服".split()
)
# what may stand right before a full name: a break, or 好的 / 嗯 / 是 / 叫 / 找 / 给 / 跟 / 问
_NAME_BEFORE = frozenset("的好嗯哦是叫找给跟问和")
# what follows a full name given without a cue: 张海涛明天过去, 李文博下午到
_NAME_FOLLOW = "明天|今天|后天|下午|上午|中午|晚上|下周|周末|过去|过来|到了|来了|预约|已经|本人"
_MAYBE_BARE_NAME = re.compile(_NAME_FOLLOW)
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
    bare_full_name: re.Pattern[str]  # 张海涛明天过去 (a break before, a time word or arrival after)


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
        bare_full_name=re.compile(
            r"(?:(?<![\u4e00-\u9fff])|(?<=[好嗯哦是]))(?P<s>[" + "".join(s.safe_single) + r"])"
            r"(?P<g>[\u4e00-\u9fff]{2})(?=" + _NAME_FOLLOW + r")"
        ),
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


class _Taken:
    """Character positions already covered: an overlap test costs the span's length, not the span count."""

    def __init__(self, n: int) -> None:
        self.used = bytearray(n)

    def free(self, start: int, end: int) -> bool:
        return self.used.find(1, start, end) == -1

    def take(self, start: int, end: int) -> None:
        self.used[start:end] = b"\x01" * (end - start)


def _url_mask(text: str) -> _Taken | None:
    """Positions inside a URL or a domain name (numbers there are not personal data)."""
    if "." not in text and "/" not in text:
        return None
    mask = _Taken(len(text))
    for chunk in _URL_CHUNK.finditer(text):
        m = _URL_START.search(text, chunk.start(), chunk.end())
        if not m:
            continue
        start = m.start()
        if text[start] == ".":  # a bare domain: it starts where its run of domain characters starts
            while start > chunk.start() and text[start - 1] in _URL_CHARS:
                start -= 1
        mask.take(start, chunk.end())
    return mask


def _in_url(urls: _Taken | None, start: int, end: int) -> bool:
    return urls is not None and not urls.free(start, end)


def _digits(text: str, start: int, end: int) -> str:
    return "".join(_CN_DIGITS.get(c, c) for c in text[start:end] if c.isdigit() or c in _CN_DIGITS)


def _phone_ok(text: str, start: int, end: int) -> bool:
    before, after = text[max(0, start - 6) : start], text[end : end + 4]
    return not (_PHONE_BAD_BEFORE.search(before) or _PHONE_BAD_AFTER.match(after))


def _mobile(digits: str) -> bool:
    return len(digits) == 11 and digits[0] == "1" and digits[1] in "3456789"


def _find_runs(text: str, urls: _Taken | None, out: list[tuple[int, PiiSpan]]) -> None:
    """Phones, landlines and ID-card numbers: each maximal run of digits (ASCII, full-width, circled or
    Chinese numerals) joined by separators is read once and classified as a whole."""
    for m in _RUN.finditer(text):
        start, end = m.span()
        if end - start < 5 or _in_url(urls, start, end):
            continue
        raw = m.group()
        ascii_only = raw.isascii()
        digits = _digits(text, start, end)
        n = len(digits)
        if n < 7:
            continue
        # ID card: 18 digits, or 17 and a check letter X
        if ascii_only and n in (17, 18):
            x_at = end + (1 if text[end : end + 1] == " " else 0)
            if n == 17 and text[x_at : x_at + 1] in ("X", "x"):
                number, id_end = digits + "X", x_at + 1
            else:
                number, id_end = digits, end
            if len(number) == 18 and not text[id_end : id_end + 1].isalnum() and _valid_id_card(number):
                if start == 0 or not text[start - 1].isalpha() or not text[start - 1].isascii():
                    out.append((0, PiiSpan("id_card", start, id_end, number)))
                    continue
        # mobile, with a country code in front (8613…, 0086 13…, +86 138-…, (+86)138…)
        if "." in raw and any(len(p.group()) < 3 for p in _split_pieces(raw)):
            continue  # a decimal or a version (1.3966012847, 2025.3.5), not a phone
        off = 4 if n == 15 and digits.startswith("0086") else 2 if n == 13 and digits.startswith("86") else 0
        if _mobile(digits[off:]):
            cc = _CC_BEFORE.search(text, max(0, start - 10), start)
            first = cc.start() if cc and (off or text[cc.start()] == "(") else start
            if off and text[start - 1 : start] == "+":
                first = start - 1
            if _phone_ok(text, first, end):
                out.append((2, PiiSpan("phone", first, end, digits[off:])))
            continue
        pieces = [(p.start() + start, p.end() + start) for p in _split_pieces(raw)]
        # an unseparated 11-digit mobile at the head of a longer run (13812345678 2个人), or a run made
        # of such numbers only (13812345678 13912345678); a spaced run that goes on is a card number
        heads = [p for p in pieces if p[1] - p[0] == 11 and _mobile(text[p[0] : p[1]])]
        if heads and (heads[0] == pieces[0] or len(heads) == len(pieces)):
            for a, b in heads if len(heads) == len(pieces) else heads[:1]:
                if _phone_ok(text, a, b):
                    out.append((2, PiiSpan("phone", a, b, text[a:b])))
            continue
        # landline: 0 + area code + 7-8 digits, only after a cue (a bare 0571-88888888 is often the clinic's)
        if ascii_only and 10 <= n <= 12 and digits[0] == "0" and digits[1] != "0":
            if _LANDLINE_CUE.search(text, max(0, start - 12), start) and _phone_ok(text, start, end):
                out.append((2, PiiSpan("phone", start, end, digits)))
            continue
        if ascii_only and n in (7, 8):
            area = _AREA_BEFORE.search(text, max(0, start - 7), start)
            if area and _LANDLINE_CUE.search(text, max(0, area.start() - 12), area.start()):
                value = _digits(text, area.start(), end)
                out.append((2, PiiSpan("phone", area.start(), end, value)))


def _split_pieces(raw: str) -> list[re.Match[str]]:
    return list(re.finditer(rf"[^{_S}]+", raw))


def _find_qq_email(text: str, urls: _Taken | None, out: list[tuple[int, PiiSpan]]) -> None:
    for m in _QQ.finditer(text):
        if not _in_url(urls, *m.span(1)):
            out.append((1, PiiSpan("qq", m.start(1), m.end(1), _digits(text, *m.span(1)))))
    at = text.find("@")
    while at != -1:
        start = at
        while start > 0 and at - start < 64 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        dm = _EMAIL_DOMAIN.match(text, at + 1)
        if start < at and dm:
            local, domain = text[start:at], dm.group()
            if domain.lower() == "qq.com" and local.isdigit() and 5 <= len(local) <= 11:
                out.append((1, PiiSpan("qq", start, at, local)))
            elif "." in domain:
                out.append((3, PiiSpan("email", start, dm.end(), text[start : dm.end()])))
        at = text.find("@", at + 1)


def _find_wechat(text: str, urls: _Taken | None, out: list[tuple[int, PiiSpan]]) -> None:
    for rank, pattern in ((4, _WXID), (5, _WECHAT)):
        for m in pattern.finditer(text):
            if not _in_url(urls, *m.span(1)):
                out.append((rank, PiiSpan("wechat", m.start(1), m.end(1), m.group(1))))


def _find_addresses(text: str, out: list[tuple[int, PiiSpan]]) -> None:
    for m in _ADDRESS.finditer(text):
        out.append((6, PiiSpan("address", m.start(), m.end(), m.group().replace(" ", ""))))


def _find_surnames(text: str, out: list[tuple[int, PiiSpan]]) -> None:
    p = _surname_patterns()
    not_names = _surnames().not_names
    for m in p.cue.finditer(text):
        # 姓张的医生 is someone else; 我姓张的 is the visitor
        if m.group("de") and not m.group("pre"):
            continue
        out.append((7, PiiSpan("surname", m.start("s"), m.end("s"), m.group("s"))))
    for m in p.small_old.finditer(text):
        if text.startswith(not_names, m.start("form")):
            continue
        out.append((8, PiiSpan("surname", m.start("s"), m.end("s"), m.group("s"))))
    for m in p.cued_title.finditer(text):
        if text.startswith(not_names, m.start("s")):
            continue
        out.append((8, PiiSpan("surname", m.start("s"), m.end("s"), m.group("s"))))
    s = _surnames()
    for m in p.title.finditer(text):
        at = m.start()
        if text[max(0, at - 2) : at] in s.safe_compound:
            out.append((9, PiiSpan("surname", at - 2, at, text[at - 2 : at])))
        elif at > 0 and text[at - 1] in s.safe_single:
            out.append((9, PiiSpan("surname", at - 1, at, text[at - 1])))
        else:  # a full name before the title: 好的张海涛先生, 李明女士
            for size in (3, 2):
                first = at - size
                if first < 0 or text[first] not in s.safe_single:
                    continue
                given = text[first + 1 : at]
                if given in _ROLES or any(c in _GIVEN_STOP or not "\u4e00" <= c <= "\u9fff" for c in given):
                    continue
                if (
                    first == 0
                    or text[first - 1] in _NAME_BEFORE
                    or not "\u4e00" <= text[first - 1] <= "\u9fff"
                ):
                    out.append((9, PiiSpan("surname", first, at, text[first])))
                    break
    for m in p.full_name.finditer(text):
        if text.startswith(not_names, m.start("s")):
            continue
        out.append((10, PiiSpan("surname", m.start("s"), m.end("g"), m.group("s"))))
    for m in p.greeting.finditer(text):
        if not text.startswith(not_names, m.start("s")):
            out.append((11, PiiSpan("surname", m.start("s"), m.end("s"), m.group("s"))))
    if not _MAYBE_BARE_NAME.search(text):
        return
    for m in p.bare_full_name.finditer(text):
        given = m.group("g")
        if (
            any(c in _GIVEN_STOP for c in given)
            or given in _ROLES
            or text.startswith(not_names, m.start("s"))
        ):
            continue
        if _common_word(m.group("s") + given, given):  # 高血压已经… is a word, not a name
            continue
        out.append((12, PiiSpan("surname", m.start("s"), m.end("g"), m.group("s"))))


def _common_word(word: str, given: str) -> bool:
    """A frequent word in the tokenizer's dictionary (高血压, 血压), which a name without a cue is not."""
    from yuyue.features.tokenize import _tokenizer  # already loaded on the message path

    freq = _tokenizer().FREQ
    return freq.get(word, 0) >= 50 or freq.get(given, 0) >= 200


def _repeat_mentions(text: str, spans: list[PiiSpan]) -> list[PiiSpan]:
    """Other places where an already found WeChat / QQ id is repeated without a cue (one pass over the text)."""
    values = {s.value: s.type for s in spans if s.type in ("wechat", "qq")}
    starts = {s.start for s in spans}
    return [
        PiiSpan(values[m.group()], m.start(), m.end(), m.group())
        for m in _ID_TOKEN.finditer(text)
        if m.group() in values and m.start() not in starts
    ]


_FILLER = r"(?:呃|嗯|哦|额|噢|那个|我|就|\s|,|，)*"


@lru_cache(maxsize=1)
def _name_answer() -> re.Pattern[str]:
    """A reply that is only a form of address: 邓 / 小毛 / 王姐 / 李女士 (after 怎么称呼您)."""
    return re.compile(
        r"^"
        + _FILLER
        + r"(?P<form>[小老]?(?P<s>"
        + _surnames().all_re
        + r")(?:"
        + _TITLE
        + "|"
        + _TITLE_CUED
        + r")?)"
        r"(?:就行|就好|吧|啊|呀|哈|。|\.|!|！)*$"
    )


def find_pii(text: str, name_answer: bool = False) -> list[PiiSpan]:
    """Personal data in normalised ``text`` (from :func:`features.normalize.normalize`): non-overlapping
    spans into ``text``, sorted by start. For raw text (as stored or typed) use :func:`find_pii_raw`.

    Where candidates overlap the stronger one wins: ID card, QQ (a cued number), phone, e-mail, WeChat,
    address, then surname forms (姓 cue, 叫我小王/王姐, 王女士, 张海涛先生, 我叫王小明, greetings, a full
    name before a time word). ``name_answer``: the message answers a question for the visitor's name, so a
    bare surname (邓, 小毛, 王姐) counts too. Linear in ``len(text)``.
    """
    if not text:
        return []
    found: list[tuple[int, PiiSpan]] = []
    if name_answer and len(text) <= 12:
        m = _name_answer().match(text)
        if m and not text.startswith(_surnames().not_names, m.start("form")):
            found.append((7, PiiSpan("surname", m.start("s"), m.end("s"), m.group("s"))))
    urls = _url_mask(text)
    if _ANY_DIGIT.search(text):
        _find_runs(text, urls, found)
        _find_qq_email(text, urls, found)
        if _MAYBE_ADDRESS.search(text):
            _find_addresses(text, found)
    elif "@" in text:
        _find_qq_email(text, urls, found)
    if _ANY_LATIN.search(text):
        _find_wechat(text, urls, found)
    if _MAYBE_SURNAME.search(text) or _MAYBE_BARE_NAME.search(text):
        _find_surnames(text, found)
    if not found:
        return []
    found.sort(key=lambda item: (item[0], item[1].start))
    taken: list[PiiSpan] = []
    used = _Taken(len(text))
    for _, span in found:
        if used.free(span.start, span.end):
            used.take(span.start, span.end)
            taken.append(span)
    if any(t.type in ("wechat", "qq") for t in taken):
        for span in _repeat_mentions(text, taken):
            if used.free(span.start, span.end):
                used.take(span.start, span.end)
                taken.append(span)
    taken.sort(key=lambda s: s.start)
    return taken


def raw_spans(raw: str, spans: list[PiiSpan] | tuple[PiiSpan, ...]) -> list[PiiSpan]:
    """``spans`` found on ``normalize(raw)`` moved onto ``raw`` through the exact offset map: each covers
    every raw character its normalised characters came from (emoji, emoticons, zero-width characters and
    spaces inside it included). Values stay normalised."""
    if not spans:
        return []
    _, lo, hi = normalize_mapped(raw)
    return [replace(s, start=lo[s.start], end=hi[s.end - 1]) for s in spans]


def find_pii_raw(raw: str, name_answer: bool = False) -> list[PiiSpan]:
    """Personal data in raw ``raw`` (as stored or typed): detection on its normalised form, spans into ``raw``."""
    return raw_spans(raw, find_pii(normalize(raw), name_answer=name_answer))


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
    if type == "email":
        local, _, domain = value.partition("@")
        return local[:1] + "****@" + domain
    if type == "address":
        return value[:2] + "****"
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
