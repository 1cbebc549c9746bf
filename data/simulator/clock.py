"""Simulated time: when chats happen, and cheap ISO formatting in China time (+08:00).

Times are integer seconds since 2025-01-01 00:00 local time; formatting looks the
date up in a precomputed table instead of building datetime objects.
"""

from __future__ import annotations

import random
from bisect import bisect
from datetime import date, timedelta
from itertools import accumulate

YEAR = 2025
DAYS = 365
_EPOCH = date(YEAR, 1, 1)
_PAD = 7  # days kept before 1 January for page views just before a New Year chat
_DATES = tuple((_EPOCH + timedelta(days=d)).isoformat() for d in range(-_PAD, DAYS + 60))
_WEEKDAY0 = _EPOCH.weekday()  # Monday = 0

# Chats by hour of day: quiet at night, peaks late morning, afternoon and evening.
_HOUR_WEIGHTS = (
    1.2, 0.7, 0.4, 0.25, 0.2, 0.25, 0.5, 1.0, 2.2, 3.6, 4.6, 4.8,
    3.6, 3.8, 4.4, 4.6, 4.4, 4.0, 3.6, 4.0, 4.8, 5.0, 4.2, 2.6,
)  # fmt: skip
_HOUR_CUM = tuple(accumulate(_HOUR_WEIGHTS))
# Relative traffic by month (Spring Festival dip in late Jan/Feb; summer and year-end peaks).
_MONTH_WEIGHTS = (0.85, 0.8, 1.0, 1.0, 1.0, 1.05, 1.2, 1.2, 1.0, 0.95, 1.0, 1.1)
_DAY_CUM = tuple(
    accumulate(
        _MONTH_WEIGHTS[(_EPOCH + timedelta(days=d)).month - 1] * (0.9 if (_WEEKDAY0 + d) % 7 >= 5 else 1.0)
        for d in range(DAYS)
    )
)
WEEKDAY_NAMES = ("一", "二", "三", "四", "五", "六", "日")


def iso(t: int) -> str:
    """ISO-8601 with +08:00 for simulated seconds ``t``."""
    d, s = divmod(t, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{_DATES[d + _PAD]}T{h:02d}:{m:02d}:{s:02d}+08:00"


def weekday(t: int) -> int:
    return (_WEEKDAY0 + t // 86400) % 7


def draw_start(rng: random.Random) -> int:
    """A chat start time in 2025 with realistic day and hour-of-day mix."""
    day = bisect(_DAY_CUM, rng.random() * _DAY_CUM[-1])
    hour = bisect(_HOUR_CUM, rng.random() * _HOUR_CUM[-1])
    return day * 86400 + hour * 3600 + int(rng.random() * 3600)


def appointment_slots(t: int) -> list[tuple[str, int, int]]:
    """Times a consultant or visitor might propose, as ``(words, start_s, end_s)``.

    ``start_s``/``end_s`` bound the simulated seconds of the slot.
    """
    day0 = t - t % 86400
    hour = (t % 86400) // 3600
    wd = weekday(t)
    morning, afternoon = (9 * 3600, 11 * 3600 + 1800), (14 * 3600, 17 * 3600)
    slots: list[tuple[str, int, int]] = []
    if hour < 15:
        slots.append(("今天下午", day0 + max(afternoon[0], (hour + 1) * 3600), day0 + afternoon[1]))
    for label, offset in (("明天", 1), ("后天", 2)):
        for part, (a, b) in (("上午", morning), ("下午", afternoon)):
            slots.append((label + part, day0 + offset * 86400 + a, day0 + offset * 86400 + b))
    for target in (5, 6, 2, 0):  # 周六 周日 周三 周一
        offset = target - wd if target > wd else 7 - wd + target
        name = ("周" if target > wd else "下周") + WEEKDAY_NAMES[target]
        part, (a, b) = (("上午", morning), ("下午", afternoon))[int(offset) % 2]
        slots.append((name + part, day0 + offset * 86400 + a, day0 + offset * 86400 + b))
    return slots
