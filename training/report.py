"""A self-contained HTML report comparing model versions on the same chats.

Side by side: every headline metric with a one-sentence definition, each model's value, the
difference (first model − second) with its 95 % bootstrap interval over chats and the verdict
(``training/compare.py``); AUC by visitor turn as a table; booked AUC by department and by engine;
and plots where the models share each axes (one colour per model, fixed axis ranges).
"""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from yuyue.training.compare import EXPLAIN, compare  # noqa: E402
from yuyue.training.evaluate import VISITOR_TURNS  # noqa: E402

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
    "arrived.brier",
    "stage.macro_f1",
    "reply.r10_at_1",
    "reply.mrr",
    "reply.hit_at_3",
    "pii.recall",
    "pii.precision",
]
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
VERDICT_COLOUR = {
    "better": "#1a7f37",
    "worse": "#cf222e",
    "mixed": "#9a6700",
    "no clear difference": "#57606a",
}


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.4f}"
    return str(x)


def _signed(x: float | None) -> str:
    return "–" if x is None else f"{x:+.4f}"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def plot_targets(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Per target one row of four plots, every model on the same axes with fixed ranges."""
    images = []
    for target in ("booked", "arrived"):
        present = {label: m["_curves." + target] for label, m in runs.items() if m.get("_curves." + target)}
        if not present:
            continue
        fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
        for i, (label, c) in enumerate(present.items()):
            colour = COLOURS[i % len(COLOURS)]
            m = runs[label]
            y, p = np.asarray(c["y"]), np.asarray(c["p"])
            if len(np.unique(y)) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, p)
            axes[0].plot(fpr, tpr, color=colour, label=f"{label}: AUC {_fmt(m.get(target + '.auc'))}")
            frac, mean = calibration_curve(y, p, n_bins=10, strategy="quantile")
            axes[1].plot(mean, frac, "o-", color=colour, label=f"{label}: ECE {_fmt(m.get(target + '.ece'))}")
            turns = m.get(target + ".auc_by_visitor_turn", {})
            ks = [k for k in map(str, VISITOR_TURNS) if turns.get(k) is not None]
            axes[2].plot([int(k) for k in ks], [turns[k] for k in ks], "o-", color=colour, label=label)
            order = np.argsort(-p)
            cum = np.cumsum(y[order]) / max(1, y.sum())
            axes[3].plot(np.arange(1, len(y) + 1) / len(y), cum, color=colour, label=label)
        for ax in (axes[0], axes[1], axes[3]):
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        axes[0].set(
            title=f"{target}: ROC (closed chats)", xlabel="false positive rate", ylabel="true positive rate"
        )
        axes[1].set(title=f"{target}: reliability", xlabel="predicted probability", ylabel="observed rate")
        axes[2].set(title=f"{target}: AUC by visitor turn", xlabel="visitor messages so far", ylabel="AUC")
        axes[3].set(
            title=f"{target}: cumulative gain",
            xlabel="share of chats, best scored first",
            ylabel=f"share of {target}",
        )
        for ax in axes:
            ax.set_ylim(0, 1.02)
            ax.legend(loc="lower right", fontsize=8)
        for ax in (axes[0], axes[3]):
            ax.set_xlim(0, 1)
        axes[1].set_xlim(0, 1)
        axes[2].set_xticks(list(VISITOR_TURNS))
        axes[2].set_ylim(0.4, 1.0)
        fig.tight_layout()
        images.append(f"<h3>{_e(target)}</h3>{_png(fig)}")
    return images


def plot_slices(comparison: dict[str, Any]) -> list[str]:
    """Booked AUC of both models per department and per engine, as grouped bars on one AUC axis."""
    images = []
    labels = comparison.get("labels", ["candidate", "champion"])
    for key, rows in comparison.get("slices", {}).items():
        numbered = [(i, r) for i, r in enumerate(rows) if r["auc"][0] is not None and r["auc"][1] is not None]
        rows = [r for _, r in numbered]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 3.6))
        x = np.arange(len(rows))
        for i in (0, 1):
            ax.bar(x + (i - 0.5) * 0.38, [r["auc"][i] for r in rows], 0.38, color=COLOURS[i], label=labels[i])
        names = [r["group"] if _has_glyphs(r["group"]) else f"#{i + 1}" for i, r in numbered]
        ax.set_xticks(x, [f"{name}\n(n={r['n']})" for name, r in zip(names, rows, strict=True)], fontsize=8)
        ax.set(ylim=(0.4, 1.0), ylabel="booked AUC", title=f"booked AUC by {key}")
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
        ax.legend(fontsize=8)
        fig.tight_layout()
        images.append(_png(fig))
    return images


def _has_glyphs(text: str) -> bool:
    """Whether the plot font draws ``text`` (department names are Chinese; without a CJK font the bars
    are numbered as the rows of the slice table)."""
    return text.isascii() or _CJK[0]


_CJK = [False]


def _plain_font() -> None:
    # department names are Chinese: use a CJK font when one is installed (the plots still draw without)
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    for name in ("Noto Sans CJK SC", "WenQuanYi Zen Hei", "Source Han Sans SC", "SimHei"):
        if name in names:
            plt.rcParams["font.sans-serif"] = [name, *plt.rcParams["font.sans-serif"]]
            _CJK[0] = True
            return


def _metric_table(runs: dict[str, dict[str, Any]], comparison: dict[str, Any] | None) -> str:
    labels = list(runs)
    two = len(labels) == 2
    head = "".join(f"<th>{_e(label)}</th>" for label in labels)
    if two:
        head += f"<th>Δ {_e(labels[0])} − {_e(labels[1])} [95 % CI]</th>"
    rows = []
    cmp_metrics = (comparison or {}).get("metrics", {})
    for key in HEADLINE:
        if not any(key in m for m in runs.values()):
            continue
        cells = "".join(f"<td>{_e(_fmt(runs[label].get(key)))}</td>" for label in labels)
        if two:
            c = cmp_metrics.get(key)
            if c is not None and c["delta"] is not None:
                ci = f" [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]" if c["ci95"] else ""
                cls = {"better": "good", "worse": "bad"}.get(c["clearly"] or "", "")
                cells += f"<td class='{cls}'>{c['delta']:+.4f}{ci}</td>"
            else:
                a, b = runs[labels[0]].get(key), runs[labels[1]].get(key)
                both = isinstance(a, int | float) and isinstance(b, int | float)
                cells += f"<td>{f'{float(a or 0) - float(b or 0):+.4f}' if both else '–'}</td>"
        rows.append(f"<tr><th>{_e(key)}<div class='why'>{_e(EXPLAIN.get(key, ''))}</div></th>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _turn_table(runs: dict[str, dict[str, Any]]) -> str:
    parts = []
    for target in ("booked", "arrived"):
        key = f"{target}.auc_by_visitor_turn"
        if not any(key in m for m in runs.values()):
            continue
        head = "".join(f"<th>after {k}</th>" for k in VISITOR_TURNS)
        rows = "".join(
            f"<tr><th>{_e(label)}</th>"
            + "".join(f"<td>{_fmt(m.get(key, {}).get(str(k)))}</td>" for k in VISITOR_TURNS)
            + "</tr>"
            for label, m in runs.items()
        )
        parts.append(
            f"<h3>{target}: AUC by visitor turn</h3><table><tr><th>model</th>{head}</tr>{rows}</table>"
        )
    if parts:
        parts.insert(0, f"<p class='why'>{_e(EXPLAIN['auc_by_visitor_turn'])}</p>")
    return "".join(parts)


def _slice_tables(comparison: dict[str, Any]) -> str:
    labels = comparison.get("labels", ["candidate", "champion"])
    parts = []
    for key, rows in comparison.get("slices", {}).items():
        head = (
            f"<tr><th>{_e(key)}</th><th>chats</th><th>booked rate</th><th>AUC {_e(labels[0])}</th>"
            f"<th>AUC {_e(labels[1])}</th><th>Δ AUC</th><th>mean p {_e(labels[0])}</th><th>mean p {_e(labels[1])}</th></tr>"
        )
        body = "".join(
            f"<tr{' class=small' if r['small'] else ''}><th>#{i + 1} {_e(r['group'])}</th><td>{r['n']}</td>"
            f"<td>{_fmt(r['booked_rate'])}</td><td>{_fmt(r['auc'][0])}</td><td>{_fmt(r['auc'][1])}</td>"
            f"<td>{_signed(r['delta_auc'])}</td>"
            f"<td>{_fmt(r['mean_p'][0])}</td><td>{_fmt(r['mean_p'][1])}</td></tr>"
            for i, r in enumerate(rows)
        )
        parts.append(f"<h3>by {_e(key)}</h3><table>{head}{body}</table>")
    if parts:
        parts.insert(
            0,
            "<p class='why'>Booked AUC, observed booking rate and mean predicted probability of each model on "
            "the closed chats of each group (grey: fewer than 20 chats, read with care).</p>",
        )
    return "".join(parts)


def write_report(
    path: str | Path,
    runs: dict[str, dict[str, Any]],
    data: str | Path,
    comparison: dict[str, Any] | None = None,
    *,
    verdict: str | None = None,
) -> Path:
    """Write ``path``. ``runs``: label → ``evaluate`` result (with its ``_`` arrays), on the same data;
    with two runs the comparison (deltas, CIs, verdict, slices) is computed when not given."""
    path = Path(path)
    labels = list(runs)
    if comparison is None and len(labels) == 2:
        comparison = compare(runs[labels[0]], runs[labels[1]], labels=(labels[0], labels[1]))
    _plain_font()
    top = ""
    if comparison is not None:
        colour = VERDICT_COLOUR.get(comparison["verdict"], "#57606a")
        top += f"<p class='verdict' style='border-color:{colour}'><b>{_e(comparison['verdict'])}</b> — {_e(comparison['verdict_line'])}</p>"
        top += (
            f"<p class='why'>Δ is {_e(labels[0])} − {_e(labels[1])} on the same {comparison['n_chats']} chats; the "
            f"interval is the 2.5–97.5 percentile of {comparison['n_boot']} bootstrap draws of chats (seed "
            f"{comparison['seed']}); green / red: the interval lies wholly on the better / worse side of zero.</p>"
        )
    if verdict:
        top += f"<p class='decision'>{_e(verdict)}</p>"
    sections = [
        "<h2>Metrics</h2>",
        _metric_table(runs, comparison),
        "<h2>AUC by visitor turn</h2>"
        if any("booked.auc_by_visitor_turn" in m for m in runs.values())
        else "",
        _turn_table(runs),
    ]
    if comparison is not None and comparison.get("slices"):
        sections += ["<h2>Slices</h2>", _slice_tables(comparison), *plot_slices(comparison)]
    sections += ["<h2>Curves (models on shared axes)</h2>", *plot_targets(runs)]
    doc = f"""<!doctype html><html lang="zh"><meta charset="utf-8"><title>Yuyue evaluation</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right;vertical-align:top}}th:first-child{{text-align:left}}
.why{{font-weight:normal;color:#57606a;font-size:.85em;max-width:36em}}td.good{{background:#dafbe1}}td.bad{{background:#ffebe9}}
tr.small{{color:#8c959f}}.verdict{{border-left:6px solid;padding:.4em .8em;font-size:1.1em}}.decision{{font-family:monospace}}
img{{max-width:100%}}</style>
<h1>Yuyue evaluation</h1><p>data: {_e(data)} · written {datetime.now(UTC).isoformat(timespec="seconds")}</p>
{top}{"".join(sections)}</html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path
