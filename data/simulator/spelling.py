"""How simulated visitors type: punctuation habits, slips, traditional characters,
and the many ways contact details and look-alike numbers get written.

Style is applied to a line *before* slots are filled, so planted phone numbers,
ids and surnames are never altered by it; their spelling is chosen here instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FULLWIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")
_TO_HALF = str.maketrans({"，": ",", "？": "?", "。": ".", "！": "!", "：": ":"})
_TO_NONE = str.maketrans({"，": " ", "。": " ", "：": " "})
_END = "？。！?.! "

PHONE_PREFIXES = (
    "130", "131", "132", "133", "134", "135", "136", "137", "138", "139", "150", "151", "152", "153",
    "155", "156", "157", "158", "159", "166", "173", "177", "180", "181", "182", "183", "185", "186",
    "187", "188", "189", "191", "198", "199",
)  # fmt: skip
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class TypingStyle:
    """One visitor's way of typing."""

    punctuation: str  # full | half | none | mixed
    typo_rate: float
    traditional: bool
    filler_rate: float


class Typist:
    """Renders visitor line templates in a visitor's typing style."""

    def __init__(self, style_bank: dict, fillers: list[str]):
        self.typos = {k: tuple(v) for k, v in style_bank["typos"].items()}
        self.typo_keys = tuple(self.typos)
        self.traditional = str.maketrans(style_bank["traditional"])
        styles = style_bank["punctuation_styles"]
        self.punct_names = tuple(styles)
        self.punct_weights = tuple(float(w) for w in styles.values())
        self.fillers = tuple(fillers)

    def draw_style(self, rng: random.Random) -> TypingStyle:
        punct = rng.choices(self.punct_names, self.punct_weights)[0]
        typo = rng.random()
        return TypingStyle(
            punctuation=punct,
            typo_rate=0.0 if typo < 0.55 else (0.12 if typo < 0.9 else 0.35),
            traditional=rng.random() < 0.03,
            filler_rate=rng.random() * 0.25,
        )

    def render(self, template: str, style: TypingStyle, rng: random.Random) -> str:
        """Apply the style to a template (slots still unfilled)."""
        text = template
        if style.typo_rate and rng.random() < style.typo_rate:
            hits = [k for k in self.typo_keys if k in text]
            if hits:
                key = hits[int(rng.random() * len(hits))]
                alts = self.typos[key]
                text = text.replace(key, alts[int(rng.random() * len(alts))], 1)
        if style.traditional:
            text = text.translate(self.traditional)
        punct = style.punctuation
        if punct == "mixed":
            punct = "full" if rng.random() < 0.5 else "half"
        if punct == "half":
            text = text.translate(_TO_HALF)
        elif punct == "none":
            text = text.translate(_TO_NONE).rstrip(_END) or text
        if style.filler_rate and rng.random() < style.filler_rate:
            text = self.fillers[int(rng.random() * len(self.fillers))] + " " + text
        return text


# -- contact details and identity -------------------------------------------------------------


def phone_number(rng: random.Random) -> str:
    """A plausible mainland mobile number (11 digits)."""
    return PHONE_PREFIXES[int(rng.random() * len(PHONE_PREFIXES))] + f"{int(rng.random() * 1e8):08d}"


def spell_phone(number: str, rng: random.Random) -> str:
    """Write an 11-digit number the way visitors do."""
    a, b, c = number[:3], number[3:7], number[7:]
    r = rng.random()
    if r < 0.42:
        return number
    if r < 0.54:
        return f"{a} {b} {c}"
    if r < 0.64:
        return f"{a}-{b}-{c}"
    if r < 0.70:
        return f"+86 {number}"
    if r < 0.74:
        return f"86{number}"
    if r < 0.77:
        return f"+86-{a}-{b}-{c}"
    if r < 0.84:
        return number.translate(FULLWIDTH_DIGITS)
    if r < 0.88:
        return f"{a}　{b}　{c}".translate(FULLWIDTH_DIGITS)
    if r < 0.94:
        return f"{a} {number[3:]}"
    return f"{number[:7]} {c}"


def wechat_id(rng: random.Random, stems: tuple[str, ...]) -> str:
    """A WeChat id: 6-20 characters, a letter first, then letters, digits, _ or -."""
    r = rng.random()
    if r < 0.3:
        return "wxid_" + "".join(_ALNUM[int(rng.random() * 36)] for _ in range(14))
    stem = stems[int(rng.random() * len(stems))]
    if rng.random() < 0.3:
        stem = stem.capitalize()
    if r < 0.55:
        out = f"{stem}{int(rng.random() * 10000):d}"
    elif r < 0.75:
        out = f"{stem}_{1970 + int(rng.random() * 36)}"
    elif r < 0.9:
        out = f"{stem}-{stems[int(rng.random() * len(stems))]}{int(rng.random() * 100)}"
    else:
        out = f"{stem}{stem[:1]}{int(rng.random() * 1000):03d}_x"
    while len(out) < 6:
        out += str(int(rng.random() * 10))
    return out[:20]


def qq_number(rng: random.Random) -> str:
    """A QQ number, 6-10 digits (never 11, so it cannot pass for a phone number)."""
    length = rng.choice((6, 7, 8, 9, 9, 10, 10))
    return str(1 + int(rng.random() * 9)) + "".join(str(int(rng.random() * 10)) for _ in range(length - 1))


def id_card_number(rng: random.Random, region: str, birth_year: int, female: bool) -> str:
    """An 18-character resident ID number with a valid check character."""
    month = 1 + int(rng.random() * 12)
    day = 1 + int(rng.random() * 28)
    seq = int(rng.random() * 100) * 10 + (2 * int(rng.random() * 5) + (0 if female else 1))
    body = f"{region}{birth_year:04d}{month:02d}{day:02d}{seq:03d}"
    check = _ID_CHECK[sum(int(d) * w for d, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]
    return body + check


def id_card_valid(value: str) -> bool:
    """Whether an 18-character ID number's check character is right."""
    if len(value) != 18 or not value[:17].isdigit():
        return False
    return (
        _ID_CHECK[sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True)) % 11]
        == value[17].upper()
    )


def order_number(rng: random.Random) -> str:
    """An order number: long enough to look like an id, never a phone or an ID number."""
    if rng.random() < 0.5:
        return "".join(str(int(rng.random() * 10)) for _ in range(19))
    return "DD2025" + "".join(str(int(rng.random() * 10)) for _ in range(10))
