"""Do the desk report's ADJUSTED rates rank consultants by their true skill better than the raw rates?

Issue 17: "adjusted rates on simulated data where consultant skill is known (the adjusted rate ranks
consultants by their true skill better than the raw rate; report the rank correlation for both)".

Generates ``--n`` simulated chats per seed (``data.simulator``; each consultant has a ``skill``, read
from the record's ``truth`` block, evaluation only), scores each chat at open time exactly as
``ChatService.open`` does (``YuyueModel.open_chat`` with the chat's start in the desk's zone, visit,
department, project and consultant), builds the report's :class:`~yuyue.serving.reports.Chat` rows
and folds them per consultant with the report's own ``_fold`` / ``_Group`` (so ``booked_rate`` and
``booked_rate_adjusted`` = (actual − Σ expected p) / scored chats are the report's numbers). Prints
the Spearman rank correlation of skill with the raw and the adjusted booking and arrival rates,
a bootstrap interval (chats resampled with replacement) and the share of resamples where the adjusted
rate beats the raw one.

Expected bookings are computed twice: ``served``, what ``ChatService.open`` stores and the report
reads (``serving.service.lead_scores``: the opening scored again without the consultant, the lead
alone), and ``with consultant``, the open-time score the desk sees (the consultant's id is one of the
model's open-time features), which the report subtracted before 2026-11-30: a model that knows the
consultant puts part of the consultant's skill into the expected bookings it subtracts. ``served`` is
checked against a direct ``open_chat(consultant_id=None)`` on the first chats, and the time of the
extra scoring call per opened chat is printed (the cost of storing the lead's score).

    .venv/bin/python bench/bench_report_skill.py --n 6000 --seeds 5 --model /tmp/ymodel/bundle
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from typing import Any

import numpy as np
from scipy.stats import spearmanr

RATES = ("booked", "arrived")


def open_scores(model: Any, rec: dict[str, Any], blind: bool = False) -> tuple[dict[str, Any], ...]:
    """The chat's open-time scores (``blind``: without the consultant) and ``open_chat``'s arguments."""
    from yuyue.data.contract import Visit
    from yuyue.serving.service import LOCAL_TZ

    chat = {
        "started_at": datetime.fromisoformat(rec["started_at"]).astimezone(LOCAL_TZ),
        "visit": Visit.model_validate(rec["visit"]) if rec.get("visit") else None,
        "department": rec.get("department"),
        "project": rec.get("project"),
    }
    _, scores = model.open_chat(**chat, consultant_id=None if blind else rec.get("consultant_id"))
    return scores, chat


def _pair(scores: dict[str, Any]) -> tuple[float | None, float | None]:
    b, a = scores.get("booked"), scores.get("arrived")
    return (b.probability if b else None, a.probability if a else None)


def served_and_open(model: Any, rec: dict[str, Any]) -> tuple[Any, Any, float]:
    """(expected as the service stores it, the open-time score with the consultant) and the seconds of
    the service's extra call (``lead_scores``, exactly as ``ChatService.open`` makes it)."""
    from yuyue.serving.service import lead_scores

    scores, chat = open_scores(model, rec)
    t0 = time.perf_counter()
    lead = lead_scores(model, scores, chat, rec.get("consultant_id"))
    spent = time.perf_counter() - t0
    return (lead["p_booked_lead"], lead["p_arrived_lead"]), _pair(scores), spent


def report_chat(rec: dict[str, Any], p_b: float | None, p_a: float | None) -> Any:
    """The report's row for one simulated chat (only what the rates read is filled)."""
    from yuyue.serving.reports import Chat

    out = rec.get("outcome") or {}
    booked = bool(out.get("booked") or out.get("arrived"))  # the service: an arrival implies the booking
    return Chat(
        rec["conversation_id"], rec.get("consultant_id"), rec["started_at"][:10], None, None, None, None,
        None, len(rec["messages"]), any(m["role"] == "visitor" for m in rec["messages"]),
        bool(out.get("contact")) or booked, booked, bool(out.get("arrived")), None, p_b, p_a,
    )  # fmt: skip


def load(model: Any, n: int, seed: int) -> dict[str, Any]:
    """Per chat arrays for one seed: consultant index, chatted, booked, arrived, p (served, with)."""
    from yuyue.data.simulator.generate import iter_records

    recs = list(iter_records(n, seed))
    both = [served_and_open(model, r) for r in recs]
    for r, (served, _, _) in zip(recs[:100], both, strict=False):  # served = the lead alone
        direct = _pair(open_scores(model, r, blind=True)[0])
        assert all(abs((x or 0) - (y or 0)) < 1e-12 for x, y in zip(served, direct, strict=True))
    skill = {r["consultant_id"]: r["truth"]["latents"]["consultant_skill"] for r in recs}
    names = sorted(skill)
    extra = [b[2] for b, r in zip(both, recs, strict=True) if r.get("consultant_id")]
    return {
        "recs": recs,
        "served": [b[0] for b in both],
        "with": [b[1] for b in both],
        "extra_ms": 1000 * np.array(extra),
        "names": names,
        "skill": np.array([skill[c] for c in names]),
    }


def report_rates(data: dict[str, Any], which: str) -> dict[str, dict[str, float]]:
    """Per consultant: the report's raw and adjusted rates (``_fold``, keyed by consultant)."""
    from yuyue.serving.reports import _fold

    chats = [report_chat(r, *p) for r, p in zip(data["recs"], data[which], strict=True)]
    rows, _, _ = _fold(chats, lambda c: c.consultant_id, 10_000, lambda kv: kv[0] or "")
    return {cons: view for cons, view in rows}


def arrays(data: dict[str, Any], which: str) -> dict[str, np.ndarray]:
    """The same quantities as flat arrays (for the bootstrap): chatted chats with both scores."""
    idx = {c: i for i, c in enumerate(data["names"])}
    keep = [
        i
        for i, r in enumerate(data["recs"])
        if any(m["role"] == "visitor" for m in r["messages"]) and None not in data[which][i]
    ]
    recs = [data["recs"][i] for i in keep]
    out = [r.get("outcome") or {} for r in recs]
    return {
        "cons": np.array([idx[r["consultant_id"]] for r in recs]),
        "booked": np.array([bool(o.get("booked") or o.get("arrived")) for o in out], dtype=float),
        "arrived": np.array([bool(o.get("arrived")) for o in out], dtype=float),
        "p_booked": np.array([data[which][i][0] for i in keep]),
        "p_arrived": np.array([data[which][i][1] for i in keep]),
    }


def correlations(a: dict[str, np.ndarray], skill: np.ndarray, pick: np.ndarray) -> dict[str, float]:
    """Spearman of skill with each raw and adjusted rate over the chats ``pick`` (indices)."""
    k = len(skill)
    n = np.bincount(a["cons"][pick], minlength=k)
    out = {}
    for rate in RATES:
        actual = np.bincount(a["cons"][pick], weights=a[rate][pick], minlength=k)
        expected = np.bincount(a["cons"][pick], weights=a["p_" + rate][pick], minlength=k)
        ok = n > 0
        out[rate + "_raw"] = float(spearmanr(skill[ok], actual[ok] / n[ok]).statistic)
        out[rate + "_adjusted"] = float(spearmanr(skill[ok], (actual[ok] - expected[ok]) / n[ok]).statistic)
    return out


def check_against_report(data: dict[str, Any], a: dict[str, np.ndarray], which: str) -> None:
    """The flat arrays give the report's own per-consultant numbers (so the bootstrap measures them)."""
    views = report_rates(data, which)
    for i, cons in enumerate(data["names"]):
        m = a["cons"] == i
        raw = a["booked"][m].mean()
        adj = (a["booked"][m].sum() - a["p_booked"][m].sum()) / m.sum()
        v = views[cons]
        assert abs(v["booked_rate"] - raw) < 1e-3, (cons, v["booked_rate"], raw)
        assert abs(v["booked_rate_adjusted"] - adj) < 1e-3, (cons, v["booked_rate_adjusted"], adj)


def bootstrap(a: dict[str, np.ndarray], skill: np.ndarray, reps: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(a["cons"])
    runs = [correlations(a, skill, rng.integers(0, n, n)) for _ in range(reps)]
    return {k: np.array([r[k] for r in runs]) for k in runs[0]}


def print_table(data: dict[str, Any], which: str) -> None:
    views = report_rates(data, which)
    print(
        f"  {'cons':5} {'skill':>5} {'chats':>6} {'booked':>7} {'expect':>7} {'adj':>7}   {'arrived':>7} {'adj':>7}"
    )
    for cons, skill in sorted(zip(data["names"], data["skill"], strict=True), key=lambda x: -x[1]):
        v = views[cons]
        exp = v["expected_booked"] / v["scored_chats"] if v["scored_chats"] else float("nan")
        print(
            f"  {cons:5} {skill:5.2f} {v['chats']:6d} {v['booked_rate']:7.3f} {exp:7.3f} "
            f"{v['booked_rate_adjusted']:+7.3f}   {v['arrived_rate']:7.3f} {v['arrived_rate_adjusted']:+7.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6000, help="simulated chats per seed")
    ap.add_argument("--seeds", default="5", help="comma-separated simulator seeds")
    ap.add_argument("--model", default="/tmp/ymodel/bundle", help="a saved model bundle directory")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples per seed")
    ap.add_argument("--table", action="store_true", help="print the per-consultant rates")
    args = ap.parse_args()

    from yuyue.models.bundle import YuyueModel

    model = YuyueModel.load(args.model)
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.perf_counter()
        data = load(model, args.n, seed)
        ms = data["extra_ms"]
        print(
            f"seed {seed}: {args.n} chats, {len(data['names'])} consultants ({time.perf_counter() - t0:.0f} s); "
            f"extra scoring call per open: mean {ms.mean():.2f} ms, p50 {np.median(ms):.2f}, "
            f"p99 {np.percentile(ms, 99):.2f} ({len(ms)} chats with a consultant)"
        )
        for which in ("served", "with"):
            a = arrays(data, which)
            check_against_report(data, a, which)
            point = correlations(a, data["skill"], np.arange(len(a["cons"])))
            boot = bootstrap(a, data["skill"], args.boot, seed)
            label = (
                "expected as served (the lead's score, without the consultant)"
                if which == "served"
                else "expected = open-time score with the consultant (before 2026-11-30)"
            )
            print(f" {label}: {len(a['cons'])} scored chats")
            if args.table:
                print_table(data, which)
            for rate in RATES:
                raw, adj = boot[rate + "_raw"], boot[rate + "_adjusted"]
                print(
                    f"  {rate:8} spearman raw {point[rate + '_raw']:+.3f} "
                    f"[{np.percentile(raw, 2.5):+.2f}, {np.percentile(raw, 97.5):+.2f}]  "
                    f"adjusted {point[rate + '_adjusted']:+.3f} "
                    f"[{np.percentile(adj, 2.5):+.2f}, {np.percentile(adj, 97.5):+.2f}]  "
                    f"adjusted > raw in {np.mean(adj > raw):.0%} of {args.boot} resamples"
                )


if __name__ == "__main__":
    main()
