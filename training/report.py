"""A self-contained HTML evaluation report comparing model versions on the same data."""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path
from typing import Any

from yuyue.training.registry import plot_curves

HEADLINE = [
    "n_conversations",
    "booked.auc",
    "booked.auc_oracle",
    "booked.ece",
    "booked.brier",
    "booked.lift_at_10pct",
    "booked.auc_open",
    "arrived.auc",
    "arrived.auc_oracle",
    "arrived.ece",
    "stage.macro_f1",
    "reply.r10_at_1",
    "reply.mrr",
    "reply.hit_at_3",
    "pii.recall",
    "pii.precision",
]


def write_report(path: str | Path, runs: dict[str, dict[str, Any]], data: str | Path) -> Path:
    """Write ``path``: a metric table (one column per model) and each model's curves."""
    path = Path(path)
    labels = list(runs)
    rows = []
    for key in HEADLINE:
        if not any(key in m for m in runs.values()):
            continue
        cells = "".join(f"<td>{html.escape(str(runs[label].get(key, '–')))}</td>" for label in labels)
        rows.append(f"<tr><th>{html.escape(key)}</th>{cells}</tr>")
    for target in ("booked", "arrived"):
        key = f"{target}.auc_by_visitor_turn"
        if any(key in m for m in runs.values()):
            cells = "".join(f"<td>{html.escape(str(runs[label].get(key, '–')))}</td>" for label in labels)
            rows.append(f"<tr><th>{key}</th>{cells}</tr>")
    images = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, metrics in runs.items():
            out = Path(tmp) / label.replace(" ", "_").replace("(", "").replace(")", "")
            out.mkdir()
            for png in plot_curves(metrics, out):
                b64 = base64.b64encode(png.read_bytes()).decode()
                images.append(
                    f"<h3>{html.escape(label)}: {png.stem}</h3><img src='data:image/png;base64,{b64}'>"
                )
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    doc = f"""<!doctype html><html lang="zh"><meta charset="utf-8"><title>Yuyue evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
th:first-child{{text-align:left}}img{{max-width:100%}}</style>
<h1>Yuyue evaluation</h1><p>data: {html.escape(str(data))}</p>
<table><tr><th>metric</th>{head}</tr>{"".join(rows)}</table>{"".join(images)}</html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path
