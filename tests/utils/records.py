"""Factories for contract records used across tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson


def record(**overrides: Any) -> dict[str, Any]:
    """A small valid conversation record; keyword arguments replace top-level fields."""
    base: dict[str, Any] = {
        "conversation_id": "c-1",
        "hospital": "hz01",
        "department": "整形美容",
        "project": "隆鼻",
        "consultant_id": "kf01",
        "started_at": "2025-03-05T14:02:11+08:00",
        "visit": {
            "visitor_id": "v-1",
            "engine": "baidu",
            "keyword": "杭州隆鼻多少钱",
            "landing_url": "https://www.example-hospital.com/longbi/?bdjj",
            "pages": [
                {"url": "https://www.example-hospital.com/anli/1.html", "title": "隆鼻案例", "dwell_s": 35}
            ],
            "region": "浙江省杭州市 西湖区",
            "device": "mobile",
            "visits_before": 1,
        },
        "messages": [
            {"at": "2025-03-05T14:02:11+08:00", "role": "visitor", "text": "你好，隆鼻多少钱"},
            {
                "at": "2025-03-05T14:02:30+08:00",
                "role": "consultant",
                "text": "您好，请问怎么称呼？",
                "stage": "greet",
            },
            {"at": "2025-03-05T14:03:02+08:00", "role": "visitor", "text": "姓王"},
        ],
        "outcome": {"contact": False, "booked": False, "arrived": False},
    }
    base.update(copy.deepcopy(overrides))
    return base


def write_lines(path: Path, items: list[Any]) -> Path:
    """Write items as JSONL; bytes and str items are written as given (for broken lines)."""
    with open(path, "wb") as fh:
        for item in items:
            if isinstance(item, bytes):
                fh.write(item)
            elif isinstance(item, str):
                fh.write(item.encode())
            else:
                fh.write(orjson.dumps(item))
            fh.write(b"\n")
    return path
