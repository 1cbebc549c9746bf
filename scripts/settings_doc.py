"""Write docs/settings.md from the settings object, so the table cannot drift from the code.

Run: .venv/bin/python scripts/settings_doc.py  (tests/test_docs.py checks the file is current)
"""

from __future__ import annotations

import sys
from pathlib import Path

from yuyue.config import Settings

OUT = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
HEADER = """# Settings

Every setting lives in one typed object (`config/settings.py`). Values come from environment
variables with the prefix `YUYUE_` (e.g. `YUYUE_DATABASE_URL`), or from an optional `yuyue.toml`
(another path in `YUYUE_CONFIG`). This file is written by `scripts/settings_doc.py`.

| setting | default | meaning |
|---|---|---|
"""


def _default(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, Path):
        return f"`{value}`"
    return f"`{value!r}`" if not isinstance(value, str) else (f"`{value}`" if value else "–")


def render() -> str:
    rows = [
        f"| `{name}` | {_default(field.default)} | {(field.description or '').replace('|', '/')} |"
        for name, field in Settings.model_fields.items()
    ]
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stderr)
