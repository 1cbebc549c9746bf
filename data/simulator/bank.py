"""The simulator's editable data: phrase banks and the simulated world, read from YAML.

Everything people may want to change (what visitors and consultants say, the
departments and projects, consultants and their skill, traffic sources, regions)
lives in ``phrases/*.yaml``; this module loads it once per process and checks
that the pieces fit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Any

import yaml

PHRASES_DIR = Path(__file__).parent / "phrases"


@dataclass(frozen=True)
class Project:
    """One consultable item (隆鼻, 前列腺炎 ...) and the lines that belong to it."""

    name: str
    department: str
    slug: str
    synonyms: tuple[str, ...]
    price: tuple[int, int]
    surgical: bool
    urgency: float
    recovery: str
    status_q: tuple[str, ...]
    status_a: tuple[str, ...]
    expect_q: tuple[str, ...]
    expect_a: tuple[str, ...]
    treatment: tuple[tuple[str, ...], ...]
    outcome: tuple[str, ...]


@dataclass(frozen=True)
class Department:
    name: str
    slug: str
    female: float
    age: tuple[int, int]
    doctors: tuple[str, ...]
    probe_status: tuple[str, ...]
    projects: tuple[Project, ...]
    project_cum: tuple[float, ...]


@dataclass(frozen=True)
class Consultant:
    id: str
    name: str
    skill: float
    pushy: float
    departments: tuple[str, ...]


@dataclass(frozen=True)
class PhraseBank:
    """All simulator data, loaded from one phrases directory."""

    world: dict[str, Any]
    departments: tuple[Department, ...]
    department_cum: tuple[float, ...]
    consultants: tuple[Consultant, ...]
    consultant: dict[str, Any]
    visitor: dict[str, Any]
    style: dict[str, Any]
    variety: dict[str, Any]
    variant: str = "default"

    def consultants_for(self, department: str) -> tuple[Consultant, ...]:
        return tuple(c for c in self.consultants if department in c.departments)


class PhraseBankError(ValueError):
    """The phrase files do not fit together."""


def _tuple(items: Any) -> tuple[Any, ...]:
    return tuple(items or ())


VARIANTS = ("default", "shifted")


def _merge(base: Any, over: Any) -> Any:
    """``over`` laid on ``base``: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return over


def _load_yaml(directory: Path, name: str, overlay: Path | None = None) -> dict[str, Any]:
    with open(directory / name, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise PhraseBankError(f"{directory / name}: expected a mapping at the top level")
    if overlay is not None and (overlay / name).exists():
        with open(overlay / name, encoding="utf-8") as fh:
            extra = yaml.safe_load(fh) or {}
        if not isinstance(extra, dict):
            raise PhraseBankError(f"{overlay / name}: expected a mapping at the top level")
        data = _merge(data, extra)
    return data


def _project(dept: str, name: str, raw: dict[str, Any]) -> Project:
    lo, hi = raw["price"]
    return Project(
        name=name,
        department=dept,
        slug=raw["slug"],
        synonyms=_tuple(raw.get("synonyms")) or (name,),
        price=(int(lo), int(hi)),
        surgical=bool(raw.get("surgical", False)),
        urgency=float(raw.get("urgency", 0.3)),
        recovery=str(raw.get("recovery", "")),
        status_q=_tuple(raw.get("status_q")),
        status_a=_tuple(raw.get("status_a")),
        expect_q=_tuple(raw.get("expect_q")),
        expect_a=_tuple(raw.get("expect_a")),
        treatment=tuple(tuple(parts) for parts in raw.get("treatment", ())),
        outcome=_tuple(raw.get("outcome")),
    )


@lru_cache(maxsize=8)
def load_bank(directory: str | Path | None = None, variant: str = "default") -> PhraseBank:
    """Read and check the phrase banks (cached per directory and variant).

    ``variant`` other than ``default`` lays the files of the sub-folder of that name (for
    ``shifted``: other phrasing, rates and consultants) over the default ones.
    """
    if variant not in VARIANTS:
        raise PhraseBankError(f"unknown simulator variant {variant!r}; known: {', '.join(VARIANTS)}")
    directory = Path(directory) if directory else PHRASES_DIR
    overlay = directory / variant if variant != "default" else None
    if overlay is not None and not overlay.is_dir():
        raise PhraseBankError(f"variant {variant!r}: no folder {overlay}")
    world = _load_yaml(directory, "world.yaml", overlay)
    dept_raw = _load_yaml(directory, "departments.yaml", overlay)
    shares = world["departments"]
    if set(shares) != set(dept_raw):
        raise PhraseBankError(
            f"world.yaml departments {sorted(shares)} != departments.yaml {sorted(dept_raw)}"
        )
    departments = []
    for name in shares:
        raw = dept_raw[name]
        projects = tuple(_project(name, pname, praw) for pname, praw in raw["projects"].items())
        if not projects:
            raise PhraseBankError(f"department {name} has no projects")
        weights = [float(raw["projects"][p.name].get("weight", 1.0)) for p in projects]
        departments.append(
            Department(
                name=name,
                slug=raw["slug"],
                female=float(raw["female"]),
                age=(int(raw["age"][0]), int(raw["age"][1])),
                doctors=_tuple(raw["doctors"]),
                probe_status=_tuple(raw.get("probe_status")),
                projects=projects,
                project_cum=tuple(accumulate(weights)),
            )
        )
    consultants = tuple(
        Consultant(
            id=c["id"],
            name=c["name"],
            skill=float(c["skill"]),
            pushy=float(c["pushy"]),
            departments=_tuple(c["departments"]),
        )
        for c in world["consultants"]
    )
    for d in departments:
        if not any(d.name in c.departments for c in consultants):
            raise PhraseBankError(f"no consultant works in department {d.name}")
    return PhraseBank(
        world=world,
        departments=tuple(departments),
        department_cum=tuple(accumulate(float(shares[d.name]) for d in departments)),
        consultants=consultants,
        consultant=_load_yaml(directory, "consultant.yaml", overlay),
        visitor=_load_yaml(directory, "visitor.yaml", overlay),
        style=_load_yaml(directory, "style.yaml", overlay),
        variety=_load_yaml(directory, "variety.yaml", overlay),
        variant=variant,
    )
