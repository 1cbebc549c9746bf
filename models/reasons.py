"""Top reasons for a score: signed contributions measured on the model itself.

For each active reason group (``models/reasons.yaml``) the contribution is the
calibrated probability of the row minus the probability with that group's
features reset to their baseline. All perturbed rows are scored in one batch,
so a score with its reasons costs one extra model call.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import yaml

from yuyue.models.scorer import OutcomeScorer

TEXT_GROUP = "@text"
# one-hot values that say an input is missing: a group with nothing else set is not a reason
ABSENT_VALUES = frozenset({"unknown", "none", "other"})


@dataclass(frozen=True)
class Reason:
    """One signed contribution, e.g. ``留了联系方式 +0.21``."""

    group: str
    label: str
    delta: float

    def render(self) -> str:
        sign = "+" if self.delta >= 0 else "−"
        return f"{self.label} {sign}{abs(self.delta):.2f}"


@dataclass
class _Group:
    id: str
    label: str
    columns: np.ndarray
    text: bool
    values: dict[str, str]
    value_of: dict[int, str]  # column -> one-hot value, for labels with {value}
    last: bool = False  # pure length/tempo: listed after every other reason


class ReasonExplainer:
    """Computes and words the top reasons of a scorer for rows of one feature space."""

    def __init__(self, feature_names: list[str], baseline: np.ndarray, groups_file: str | Path | None = None):
        self.feature_names = list(feature_names)
        self.baseline = np.asarray(baseline, dtype=np.float32)
        spec = _load_spec(groups_file)
        self.groups: list[_Group] = []
        taken: set[int] = set()
        for g in spec["groups"]:
            patterns = g["features"]
            cols = [
                j
                for j, name in enumerate(self.feature_names)
                if j not in taken and any(fnmatch.fnmatchcase(name, p) for p in patterns if p != TEXT_GROUP)
            ]
            taken.update(cols)
            value_of = {
                j: self.feature_names[j].split("=", 1)[1] for j in cols if "=" in self.feature_names[j]
            }
            self.groups.append(
                _Group(
                    g["id"],
                    g["label"],
                    np.asarray(cols, dtype=np.int64),
                    TEXT_GROUP in patterns,
                    g.get("values", {}),
                    value_of,
                    g.get("rank") == "last",
                )
            )
        self.present = self._present_columns()

    def _present_columns(self) -> np.ndarray:
        """Columns that say an input is there (all but one-hot unknown/none/other values)."""
        return np.array(
            ["=" not in n or n.split("=", 1)[1] not in ABSENT_VALUES for n in self.feature_names], dtype=bool
        )

    @staticmethod
    def fit_baseline(struct: np.ndarray, feature_names: list[str]) -> np.ndarray:
        """Zeros, except one-hot groups take the most common value of the training rows."""
        base = np.zeros(struct.shape[1], dtype=np.float32)
        prefixes: dict[str, list[int]] = {}
        for j, name in enumerate(feature_names):
            if "=" in name:
                prefixes.setdefault(name.split("=", 1)[0], []).append(j)
        for cols in prefixes.values():
            counts = (struct[:, cols] > 0).sum(axis=0)
            base[cols[int(np.argmax(counts))]] = 1.0
        return base

    def explain(
        self,
        scorer: OutcomeScorer,
        struct: np.ndarray,
        text: sp.csr_matrix,
        top: int = 4,
        min_abs: float = 0.005,
    ) -> tuple[float, list[Reason]]:
        """The calibrated score of one row and its top reasons by absolute contribution."""
        x = np.asarray(struct, dtype=np.float32).reshape(-1)
        active = self._active_groups(x, text)
        variants = np.repeat(x[None, :], len(active) + 1, axis=0)
        with_text = np.ones(len(active) + 1, dtype=bool)
        for i, g in enumerate(active, start=1):
            if g.text:
                with_text[i] = False
            else:
                variants[i, g.columns] = self.baseline[g.columns]
        probs = scorer.predict_proba_variants(variants, text, with_text)
        p = float(probs[0])
        reasons = [
            Reason(g.id, self._label(g, x), float(p - probs[i + 1]))
            for i, g in enumerate(active)
            if abs(p - probs[i + 1]) >= min_abs
        ]
        last = {g.id for g in active if g.last}
        # length/tempo groups never crowd out a reason a consultant can act on
        reasons.sort(key=lambda r: (r.group in last, -abs(r.delta)))
        return p, reasons[:top]

    def _active_groups(self, x: np.ndarray, text: sp.csr_matrix) -> list[_Group]:
        """Groups whose inputs are present and differ from the baseline, in spec order.

        Present: some column of the group is non-zero other than a one-hot "unknown/none/other"
        (a chat opened with no pages has no pages reason); the text group: a non-empty bag.
        """
        group_of = getattr(self, "_group_of", None)
        if group_of is None:  # column -> index of its group (-1: in none); derived, not saved
            group_of = np.full(len(self.feature_names), -1, dtype=np.int64)
            for i, g in enumerate(self.groups):
                group_of[g.columns] = i
            self._group_of = group_of
        hit = np.zeros(len(self.groups) + 1, dtype=bool)
        hit[group_of[x != self.baseline]] = True  # -1 lands in the spare last slot
        present = np.zeros(len(self.groups) + 1, dtype=bool)
        present_cols = getattr(self, "present", None)
        if present_cols is None:  # explainers saved before presence was tracked
            present_cols = self.present = self._present_columns()
        on = (x != 0) & present_cols
        present[group_of[on]] = True
        return [g for i, g in enumerate(self.groups) if (text.nnz > 0 if g.text else hit[i] and present[i])]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_group_of", None)
        return state

    def _label(self, g: _Group, x: np.ndarray) -> str:
        if "{value}" not in g.label:
            return g.label
        on = [g.value_of[j] for j in g.columns if x[j] > 0 and j in g.value_of]
        value = on[0] if on else "unknown"
        return g.label.replace("{value}", g.values.get(value, value))


def _load_spec(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        text = resources.files("yuyue.models").joinpath("reasons.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict):
        raise ValueError(f"reasons spec: a mapping expected, got {type(spec).__name__}")
    for i, g in enumerate(spec.get("groups", [])):
        for key in ("id", "label", "features"):
            if key not in g:
                raise ValueError(f"reasons groups[{i}]: missing {key!r}")
    return spec
