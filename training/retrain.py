"""The analyst's loop: train from the event store, compare with the champion, promote through the gate.

- :func:`export_store` writes the store's chats as contract JSONL through the very function behind
  ``GET /v1/export`` (``ChatService.export``: personal data masked, outcomes with call results and
  arrivals) into ``var/data/store/store-<sha256[:12]>.jsonl``, kept so a version can be compared
  again on the data it saw.
- :func:`promote_gated` (``yuyue models promote``) and :func:`retrain` (``yuyue retrain``) compare a
  candidate with the champion on the same held-out chats (``training/compare.py``) and promote only
  when the gate passes, or when forced (recorded on the version: who, when, why).

Held-out chats of ``yuyue models promote``: with ``--data FILE``, every chat of FILE (as ``yuyue
evaluate``; give chats neither version trained on, e.g. a newer export); otherwise the candidate's own
test split, the latest 10 % of its training data by start time, which it never fitted on.

Held-out chats of ``yuyue retrain`` (:func:`split_holdout`): the export's latest chats by start time,
written to a file of their own before training, so the candidate never sees them: the latest
``max(HOLDOUT_MIN_CHATS, HOLDOUT_FRACTION · n)`` chats, or with ``--holdout-days N`` those started in
the last N days of the export; either way at most ``HOLDOUT_MAX_FRACTION`` of the chats (training keeps
the rest). When the held-out chats are too few for the gate to decide (fewer than
``DECIDE_MIN_LABELLED`` with a known booking, or fewer than ``DECIDE_MIN_CLASS`` booked or not booked),
the verdict is ``undecided``: nothing is promoted (``yuyue retrain`` exits ``UNDECIDED_EXIT``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from yuyue.config import Settings
from yuyue.training import registry
from yuyue.training.compare import AUC_TOLERANCE, ECE_TOLERANCE, N_BOOT, SEED, compare, gate
from yuyue.training.dataset import DatasetScan, scan, split_by_time
from yuyue.training.evaluate import evaluate, public
from yuyue.training.scorers import UnusableDataError
from yuyue.training.workflow import promotion_tags

DESK_TZ = ZoneInfo("Asia/Shanghai")  # a date without a zone is the desk's (as serving.service.LOCAL_TZ)


HOLDOUT_MIN_CHATS = 200  # the held-out chats of a retrain: at least this many ...
HOLDOUT_FRACTION = 0.2  # ... or this share of the export, whichever is larger ...
HOLDOUT_MAX_FRACTION = 0.5  # ... but never more than this share: training keeps the rest
DECIDE_MIN_LABELLED = 100  # held-out chats with a known booking the gate needs to decide
DECIDE_MIN_CLASS = 10  # ... of which at least this many booked and this many not booked
UNDECIDED_EXIT = 4  # ``yuyue retrain``: the held-out chats were too few to decide; nothing promoted


class HeldOutError(RuntimeError):
    """No held-out chats to compare on (named in the message)."""


def parse_since(text: str | None) -> datetime | None:
    """``2025-03-01`` (midnight, the desk's time zone) or an ISO 8601 time; None for None."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=DESK_TZ)
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since: not a date or an ISO 8601 time: {text!r} (e.g. 2025-03-01)") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=DESK_TZ)


def empty_store(since: datetime | None) -> UnusableDataError:
    """The error for a store without chats (started since ``since``)."""
    return UnusableDataError(
        "the event store has no chats" + (f" started since {since.isoformat()}" if since else "")
    )


def store_records(
    url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    settings: Settings | None = None,
    prepare: bool = True,
) -> Iterator[dict[str, Any]]:
    """The store's chats started in [``since``, ``until``) as contract records (what ``GET /v1/export``
    gives: personal data masked), oldest first (by start time, then id). ``prepare``: create or upgrade
    the schema first (a reader of a store another process prepared skips it)."""
    from yuyue.serving.cache import MemoryCache
    from yuyue.serving.db import make_engine, prepare_schema
    from yuyue.serving.service import ChatService, ModelHolder
    from yuyue.serving.store import EventStore, Filters

    engine = make_engine(url)
    try:
        if prepare:
            prepare_schema(engine)
        # the export reads the store only: no model and no session cache are needed
        service = ChatService(settings or Settings(), EventStore(engine), MemoryCache(16), ModelHolder())
        yield from service.export(Filters(since=since, until=until))
    finally:
        engine.dispose()


def export_store(
    settings: Settings, *, since: datetime | None = None, url: str | None = None, out_dir: Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """The store's chats (started at or after ``since``) as contract JSONL; returns (path, data tags)."""
    import hashlib

    import orjson

    out_dir = out_dir or settings.data_dir / "store"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".export-{time.time_ns()}.jsonl"
    digest = hashlib.sha256()
    n = labelled = 0
    first = last = None
    with open(tmp, "wb") as f:
        for rec in store_records(url or settings.resolved_database_url, since=since, settings=settings):
            line = orjson.dumps(rec) + b"\n"
            f.write(line)
            digest.update(line)
            n += 1
            labelled += "booked" in rec.get("outcome", {})
            first = first or rec["started_at"]
            last = rec["started_at"]
    if n == 0:
        tmp.unlink()
        raise empty_store(since)
    sha = digest.hexdigest()
    path = out_dir / f"store-{sha[:12]}.jsonl"
    tmp.replace(path)
    tags = {
        "data.source": "store",
        "data.since": since.isoformat() if since else "all",
        "data.n_chats": n,
        "data.n_labelled": labelled,
        "data.first_started_at": first,
        "data.last_started_at": last,
        "data.sha256": sha,
    }
    return path, tags


@dataclass
class HoldOut:
    """The export cut in two by time: ``fit`` (what the candidate trains on) and ``held_out``."""

    fit: Path
    held_out: Path
    n_fit: int
    n_held_out: int
    labelled: int  # held-out chats with a known booking
    booked: int
    first_started_at: str | None
    last_started_at: str | None
    rule: str  # how the held-out chats were chosen, in words
    capped: bool  # the rule asked for more than HOLDOUT_MAX_FRACTION of the chats

    @property
    def too_small(self) -> str | None:
        """Why the gate cannot decide on these chats, or None when it can."""
        not_booked = self.labelled - self.booked
        if self.labelled >= DECIDE_MIN_LABELLED and min(self.booked, not_booked) >= DECIDE_MIN_CLASS:
            return None
        return (
            f"the held-out set is too small for the gate to decide: {self.n_held_out} chats, "
            f"{self.labelled} with a known booking ({self.booked} booked, {not_booked} not); the gate needs "
            f"{DECIDE_MIN_LABELLED} with a known booking, at least {DECIDE_MIN_CLASS} booked and "
            f"{DECIDE_MIN_CLASS} not booked (more chats: a longer --holdout-days, or wait for more outcomes)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "chats": self.n_held_out,
            "with_booking_outcome": self.labelled,
            "booked": self.booked,
            "first_started_at": self.first_started_at,
            "last_started_at": self.last_started_at,
            "capped": self.capped,
            "fit_chats": self.n_fit,
            "file": str(self.held_out),
            "too_small": self.too_small,
        }


def split_holdout(path: Path, holdout_days: int | None = None) -> HoldOut:
    """Cut the export ``path`` by start time into ``<stem>-fit.jsonl`` and ``<stem>-holdout.jsonl``
    (see the module docstring for the rule); lines that do not parse go to the fit file (training
    skips and counts them)."""
    import orjson

    keys: list[tuple[float, str, int]] = []  # (start, chat id, line number) of the parseable lines
    meta: dict[int, tuple[str, bool | None]] = {}
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            try:
                rec = orjson.loads(line)
                at = datetime.fromisoformat(rec["started_at"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            at = at if at.tzinfo is not None else at.replace(tzinfo=DESK_TZ)
            keys.append((at.timestamp(), str(rec.get("conversation_id")), i))
            meta[i] = (rec["started_at"], (rec.get("outcome") or {}).get("booked"))
    keys.sort()
    n = len(keys)
    cap = int(n * HOLDOUT_MAX_FRACTION)
    if holdout_days is not None:
        since = keys[-1][0] - holdout_days * 86400 if keys else 0.0
        wanted = sum(1 for k in keys if k[0] > since)
        rule = f"the chats started in the last {holdout_days} days of the export"
    else:
        wanted = max(HOLDOUT_MIN_CHATS, math.ceil(HOLDOUT_FRACTION * n))
        rule = (
            f"the latest max({HOLDOUT_MIN_CHATS}, {HOLDOUT_FRACTION:.0%}) chats of the export by start time"
        )
    take = min(wanted, cap)
    if wanted > cap:
        rule += f", capped at {HOLDOUT_MAX_FRACTION:.0%} of its {n} chats so training keeps the rest"
    held = {k[2] for k in keys[n - take :]}
    fit_path = path.with_name(f"{path.stem}-fit.jsonl")
    held_path = path.with_name(f"{path.stem}-holdout.jsonl")
    with open(path, "rb") as f, open(fit_path, "wb") as fit, open(held_path, "wb") as out:
        for i, line in enumerate(f):
            (out if i in held else fit).write(line if line.endswith(b"\n") else line + b"\n")
    outcomes = [meta[i][1] for i in held]
    starts = [meta[k[2]][0] for k in keys[n - take :]]  # in time order
    return HoldOut(
        fit=fit_path,
        held_out=held_path,
        n_fit=sum(1 for _ in open(fit_path, "rb")),
        n_held_out=take,
        labelled=sum(o is not None for o in outcomes),
        booked=sum(o is True for o in outcomes),
        first_started_at=starts[0] if starts else None,
        last_started_at=starts[-1] if starts else None,
        rule=rule,
        capped=wanted > cap,
    )


def export_for_training(
    settings: Settings,
    *,
    since: datetime | None = None,
    url: str | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any]]:
    """:func:`export_store`, said in one line: (the exported file, the data tags its version carries)."""
    path, tags = export_store(settings, since=since, url=url)
    echo(
        f"exported {tags['data.n_chats']} chats from the store ({tags['data.n_labelled']} with a booking "
        f"outcome; {tags['data.first_started_at']} to {tags['data.last_started_at']}) to {path}"
    )
    return path, tags


def train_from_store(
    settings: Settings,
    *,
    since: datetime | None = None,
    url: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = "yuyue",
    promote_if_first: bool = True,
    workers: int = 2,
    echo: Callable[[str], None] = print,
) -> tuple[Any, str | None, Path]:
    """Export the store, train on it and register a version tagged with the data it saw."""
    from yuyue.training.workflow import train_and_register

    path, tags = export_for_training(settings, since=since, url=url, echo=echo)
    result, version = train_and_register(
        path,
        settings,
        experiment=experiment,
        tracking_uri=tracking_uri,
        promote_if_first=promote_if_first,
        workers=workers,
        echo=echo,
        tags=tags,
    )
    return result, version, path


def held_out(
    model_info: dict[str, Any], data: Path | None, max_conversations: int = 20000
) -> tuple[Path, DatasetScan, str, str]:
    """(file, scan with its split, split name, description) of the chats a comparison runs on."""
    if data is not None:
        s = scan(data)
        s.split = {m.index: "test" for m in s.metas[:max_conversations]}
        return data, s, "test", f"all {len(s.split)} chats of {data}"
    source = model_info.get("data")
    if not source or not Path(source).is_file():
        raise HeldOutError(
            f"the candidate's training data {source or '(not recorded)'} is not here to hold its latest chats "
            "out: give --data FILE (chats neither version trained on)"
        )
    s = split_by_time(scan(source))
    n = len(s.ids("test"))
    rng = model_info.get("test_range") or ["?", "?"]
    return (
        Path(source),
        s,
        "test",
        f"the latest {n} chats of {source} ({rng[0]} to {rng[1]}), held out of the candidate's training by time",
    )


def _champion_overlap(champion_info: dict[str, Any], s: DatasetScan, split: str) -> int:
    """Held-out chats that started before the champion's fitting data ended (it may have seen them)."""
    fit = champion_info.get("fit_range")
    if not fit:
        return 0
    until = datetime.fromisoformat(fit[1]).timestamp()
    return sum(1 for m in s.metas if s.split.get(m.index) == split and m.started_ts <= until)


def compare_versions(
    candidate: Any,
    champion: Any,
    path: Path,
    scan_: DatasetScan,
    split: str,
    *,
    labels: tuple[str, str],
    candidate_metrics: dict[str, Any] | None = None,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    workers: int = 2,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(candidate metrics, champion metrics, comparison) on the same chats."""
    cm = candidate_metrics or evaluate(candidate, path, scan_=scan_, split=split, workers=workers)
    hm = evaluate(champion, path, scan_=scan_, split=split, workers=workers)
    return cm, hm, compare(cm, hm, n_boot=n_boot, seed=seed, labels=labels)


def decide(
    version: str,
    champion_version: str | None,
    settings: Settings,
    tracking_uri: str | None,
    *,
    comparison: dict[str, Any] | None,
    candidate_metrics: dict[str, Any] | None,
    force: bool = False,
    reason: str | None = None,
    auc_tolerance: float = AUC_TOLERANCE,
    ece_tolerance: float = ECE_TOLERANCE,
) -> dict[str, Any]:
    """Apply the gate, promote or not, record the decision on the version; returns the verdict."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if champion_version is None:
        registry.promote(version, settings, tracking_uri)
        registry.set_version_tags(version, promotion_tags("first"), settings, tracking_uri)
        return {
            "decision": "promoted",
            "promoted": True,
            "message": f"no champion yet: version {version} is now champion (nothing to compare with)",
        }
    assert comparison is not None
    g = gate(
        comparison, auc_tolerance=auc_tolerance, ece_tolerance=ece_tolerance, candidate=candidate_metrics
    )
    booked = comparison["metrics"].get("booked.auc", {})
    record = {
        "gate.against": champion_version,
        "gate.at": now,
        "gate.passed": str(g.passed).lower(),
        "gate.verdict": comparison["verdict"],
        "gate.booked_auc_delta": booked.get("delta"),
        "gate.booked_auc_ci95": booked.get("ci95"),
    }
    if g.passed:
        registry.promote(version, settings, tracking_uri)
        registry.set_version_tags(version, {**record, **promotion_tags("gate")}, settings, tracking_uri)
        decision, message = (
            "promoted",
            f"version {version} is now champion (passed the gate against v{champion_version})",
        )
    elif force:
        why = reason or "forced without a reason given"
        registry.promote(version, settings, tracking_uri)
        tags = {**record, **promotion_tags("forced", why), "gate.refused_for": "; ".join(g.reasons)}
        registry.set_version_tags(version, tags, settings, tracking_uri)
        decision = "forced"
        message = (
            f"FORCED: version {version} is now champion although the gate refused it "
            f"({'; '.join(g.reasons)}); recorded on the version: by {tags['promoted_by']} at "
            f"{tags['promoted_at']}, reason: {why}"
        )
    else:
        registry.set_version_tags(version, record, settings, tracking_uri)
        decision = "refused"
        message = (
            f"refused: version {champion_version} stays champion; version {version} "
            f"{'; '.join(g.reasons)}. Promote anyway with `yuyue models promote {version} --force --reason TEXT`"
        )
    return {"decision": decision, "promoted": decision != "refused", "message": message, "gate": g.as_dict()}


def promote_gated(
    version: str,
    settings: Settings,
    tracking_uri: str | None = None,
    *,
    data: Path | None = None,
    force: bool = False,
    reason: str | None = None,
    auc_tolerance: float = AUC_TOLERANCE,
    ece_tolerance: float = ECE_TOLERANCE,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    report: Path | None = None,
    workers: int = 2,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``yuyue models promote VERSION``: compare with the champion on held-out chats, promote through the gate."""
    known = [v["version"] for v in registry.list_versions(settings, tracking_uri)]
    if str(version) not in known:
        raise registry.RegistryError(
            f"model {settings.model_name!r} has no version {version!r} (registered: {', '.join(known) or 'none'})"
        )
    champion_version = registry.alias_version(registry.CHAMPION, settings, tracking_uri)
    if champion_version == str(version):
        return {
            "decision": "unchanged",
            "promoted": False,
            "message": f"version {version} is already champion",
        }
    if champion_version is None:
        return {
            "candidate": str(version),
            "champion_before": None,
            **decide(str(version), None, settings, tracking_uri, comparison=None, candidate_metrics=None),
        }
    candidate, _ = registry.load(version, settings, tracking_uri)
    champion, _ = registry.load(champion_version, settings, tracking_uri)
    path, s, split, where = held_out(candidate.info, data)
    echo(f"comparing v{version} with champion v{champion_version} on {where} ...")
    labels = (f"v{version}", f"champion v{champion_version}")
    cm, hm, comparison = compare_versions(
        candidate, champion, path, s, split, labels=labels, n_boot=n_boot, seed=seed, workers=workers
    )
    echo(comparison["verdict_line"])
    out = {
        "candidate": str(version),
        "champion_before": champion_version,
        "held_out": where,
        "champion_may_have_seen": _champion_overlap(champion.info, s, split) if data is None else None,
        **decide(
            str(version),
            champion_version,
            settings,
            tracking_uri,
            comparison=comparison,
            candidate_metrics=cm,
            force=force,
            reason=reason,
            auc_tolerance=auc_tolerance,
            ece_tolerance=ece_tolerance,
        ),
        "comparison": comparison,
    }
    if report is not None:
        from yuyue.training.report import write_report

        write_report(report, {labels[0]: cm, labels[1]: hm}, path, comparison, verdict=out["message"])
    return out


def retrain(
    settings: Settings,
    *,
    since: datetime | None = None,
    holdout_days: int | None = None,
    url: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = "yuyue",
    json_out: Path | None = None,
    report: Path | None = None,
    auc_tolerance: float = AUC_TOLERANCE,
    ece_tolerance: float = ECE_TOLERANCE,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    workers: int = 2,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``yuyue retrain``: export the store, hold its latest chats out (:func:`split_holdout`), train on
    the rest, compare with the champion on the held-out chats, promote only through the gate (never when
    they are too few to decide); write the JSON verdict and the report."""
    from yuyue.training.workflow import train_and_register

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    path, tags = export_store(settings, since=since, url=url)
    cut = split_holdout(path, holdout_days)
    echo(
        f"exported {tags['data.n_chats']} chats from the store ({tags['data.n_labelled']} with a booking "
        f"outcome) to {path}; held out {cut.n_held_out} ({cut.rule}; {cut.labelled} with a booking outcome), "
        f"training on {cut.n_fit}"
    )
    held_tags = {
        "data.fit_chats": cut.n_fit,
        "data.held_out_chats": cut.n_held_out,
        "data.held_out_from": cut.first_started_at,
        "data.held_out_file": str(cut.held_out),
    }
    result, version = train_and_register(
        cut.fit,
        settings,
        experiment=experiment,
        tracking_uri=tracking_uri,
        promote_if_first=False,
        workers=workers,
        echo=echo,
        tags={**tags, **held_tags},
    )
    timings["export_train_register_s"] = round(time.perf_counter() - t0, 1)
    assert version is not None
    champion_version = registry.alias_version(registry.CHAMPION, settings, tracking_uri)
    out: dict[str, Any] = {
        "candidate": version,
        "champion_before": champion_version,
        "data": registry.version_tags(version, settings, tracking_uri),
        "held_out": f"{cut.n_held_out} chats: {cut.rule} ({cut.first_started_at} to {cut.last_started_at}), "
        "held out of the candidate's training",
        "held_out_set": cut.as_dict(),
    }
    comparison = cm = hm = None
    if champion_version is not None and cut.n_held_out:
        t = time.perf_counter()
        champion, _ = registry.load(champion_version, settings, tracking_uri)
        s = scan(cut.held_out)
        s.split = {m.index: "test" for m in s.metas}
        out["champion_may_have_seen"] = _champion_overlap(champion.info, s, "test")
        labels = (f"v{version}", f"champion v{champion_version}")
        cm, hm, comparison = compare_versions(
            result.model,
            champion,
            cut.held_out,
            s,
            "test",
            labels=labels,
            n_boot=n_boot,
            seed=seed,
            workers=workers,
        )
        echo(comparison["verdict_line"])
        timings["compare_s"] = round(time.perf_counter() - t, 1)
    out.update(
        _verdict(
            version,
            champion_version,
            settings,
            tracking_uri,
            cut,
            comparison=comparison,
            candidate_metrics=cm,
            auc_tolerance=auc_tolerance,
            ece_tolerance=ece_tolerance,
        )
    )
    out["champion"] = registry.alias_version(registry.CHAMPION, settings, tracking_uri)
    out["comparison"] = comparison
    if comparison is None:
        out["candidate_metrics"] = public(result.metrics)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    out["timings"] = timings
    if report is not None:
        from yuyue.training.report import write_report

        runs = {f"v{version}": cm or result.metrics}
        if hm is not None:
            runs[f"champion v{champion_version}"] = hm
        write_report(report, runs, cut.held_out if cm else cut.fit, comparison, verdict=out["message"])
        out["report"] = str(report)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(out, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    return out


def _verdict(
    version: str,
    champion_version: str | None,
    settings: Settings,
    tracking_uri: str | None,
    cut: HoldOut,
    **gate_args: Any,
) -> dict[str, Any]:
    """:func:`decide`, unless there is a champion and the held-out chats are too few to decide: then
    ``undecided`` (recorded on the version), and nothing is promoted."""
    why = cut.too_small
    if champion_version is None or why is None:
        return decide(version, champion_version, settings, tracking_uri, **gate_args)
    registry.set_version_tags(
        version,
        {
            "gate.against": champion_version,
            "gate.at": datetime.now(UTC).isoformat(timespec="seconds"),
            "gate.passed": "undecided",
            "gate.undecided_for": why,
        },
        settings,
        tracking_uri,
    )
    return {
        "decision": "undecided",
        "promoted": False,
        "message": f"undecided: version {champion_version} stays champion; {why}. Promote version {version} "
        f"by hand after a look with `yuyue models promote {version} --data FILE`",
        "undecided_reason": why,
    }
