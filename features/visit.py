"""Visit-trace features: where the visitor came from and what they looked at before the chat.

Rules are data in ``features/lexicon/``: ``regions.tsv`` (provinces, prefecture-level
cities and their short forms, foreign places), ``keywords.yaml`` (search-keyword
categories), ``pages.yaml`` (page categories, ad-click parameters). Project and
symptom terms come from the domain dictionary (:func:`features.tokenize.domain_terms`).

Feature names (:data:`VISIT_FEATURE_NAMES`; a missing field falls into its
``unknown``/``none`` bucket, never raises):

- ``visit.has_trace`` – 1 when the chat tool sent a visit object with any field set
- ``visit.engine=E`` – one-hot over the contract engines and ``unknown``
- ``visit.kw=K`` – one-hot search-keyword category (:data:`KEYWORD_CATEGORIES`)
- ``visit.landing=P`` – one-hot category of the landing page (:data:`PAGE_CATEGORIES` and ``none``)
- ``visit.ad_click`` – the landing URL carries a paid-search click parameter (``?bdjj`` …)
- ``visit.pages_n`` – pages viewed (capped at 50); ``visit.pages_n_log1p``
- ``visit.pages.P`` – pages viewed per page category (capped at 20)
- ``visit.dwell_total_log1p``, ``visit.dwell_max_log1p`` – seconds on pages (``dwell_s``, else
  the gap to the next page's ``at``)
- ``visit.browse_before_chat_log1p`` – seconds from the first page to the chat start (0 if unknown)
- ``visit.visits_before`` – earlier visits, capped at 10; ``visit.returning`` – 1 if any
- ``visit.local=L`` – one-hot locality of the region (:data:`LOCALITIES`)
- ``visit.device=D`` – one-hot over the contract devices (missing → ``unknown``)
- ``visit.hour_sin``, ``visit.hour_cos`` – chat start time of day, in the offset it carries
- ``visit.weekday=0`` … ``visit.weekday=6`` – one-hot chat start weekday (Monday = 0)
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from yuyue.data.contract import DEVICES, ENGINES, Visit
from yuyue.features.normalize import normalize
from yuyue.features.tokenize import domain_terms

LOCALITIES: tuple[str, ...] = ("local", "province", "remote", "unknown")
KEYWORD_CATEGORIES: tuple[str, ...] = (
    "brand",
    "city_project",
    "price",
    "symptom",
    "risk",
    "project",
    "other",
    "none",
)
PAGE_CATEGORIES: tuple[str, ...] = ("case", "expert", "price", "route", "project", "home", "other")

_PAGES_CAP = 50
_PAGE_CATEGORY_CAP = 20
_VISITS_CAP = 10
_NAME_SUFFIXES = ("特别行政区", "自治区", "地区", "林区", "省", "市", "盟")
_HOSPITAL_SUFFIX = re.compile(r"(?:医院|门诊部|门诊|诊所|医疗美容|医疗|整形|美容)+$")
# scheme, host, path, query, fragment; urllib.parse.urlsplit is ~10x slower and raises on odd input
_URL = re.compile(r"^(?:[a-z][a-z0-9+.\-]*:)?(?://[^/?#]*)?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$", re.DOTALL)
_REGION_NOISE = re.compile(r"^(?:中国|中华人民共和国|china)\s*|[()\[\]（）【】]")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().lower()


def _read(name: str) -> str:
    return resources.files("yuyue.features.lexicon").joinpath(name).read_text(encoding="utf-8")


# ---------------------------------------------------------------- regions


@dataclass(frozen=True)
class _Regions:
    province_re: re.Pattern[str]  # anchored at the start: province names and aliases
    province_of_alias: dict[str, str]
    city_re: re.Pattern[str]  # anchored: city names and aliases, all provinces
    city_of_alias: dict[str, tuple[str, str]]  # alias → (province, city)
    cities_of_province: dict[str, re.Pattern[str]]  # province → regex of its cities' aliases
    municipalities: frozenset[str]  # provinces whose only city is themselves (北京市, 香港特别行政区)
    abroad_re: re.Pattern[str]
    abroad_of_alias: dict[str, str]
    place_re: re.Pattern[str]  # any province/city alias anywhere (for keywords)


def _aliases(name: str, extra: str) -> list[str]:
    names = {name}
    for suffix in _NAME_SUFFIXES:
        if name.endswith(suffix) and len(name) - len(suffix) >= 2:
            names.add(name[: -len(suffix)])
            break
    names.update(a.strip() for a in extra.split(",") if a.strip())
    return sorted(names, key=len, reverse=True)


def _alternation(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


@lru_cache(maxsize=1)
def _regions() -> _Regions:
    province_of: dict[str, str] = {}
    city_of: dict[str, tuple[str, str]] = {}
    by_province: dict[str, set[str]] = {}
    abroad_of: dict[str, str] = {}
    for line in _read("regions.tsv").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, name, province, extra = (line.split("\t") + ["", "", "", ""])[:4]
        if kind == "province":
            for a in _aliases(name, extra):
                province_of[a] = name
        elif kind == "city":
            for a in _aliases(name, extra):
                by_province.setdefault(province, set()).add(a)
                # a city alias equal to a province alias (吉林) is read as the province
                city_of.setdefault(a, (province, name))
        elif kind == "abroad":
            for a in _aliases(name, extra):
                abroad_of[a] = name
    return _Regions(
        province_re=re.compile(f"(?:{_alternation(province_of)})"),
        province_of_alias=province_of,
        city_re=re.compile(f"(?:{_alternation(city_of)})"),
        city_of_alias=city_of,
        cities_of_province={p: re.compile(f"(?:{_alternation(a)})") for p, a in by_province.items()},
        municipalities=frozenset(p for p, c in city_of.values() if p == c),
        abroad_re=re.compile(f"(?:{_alternation(abroad_of)})"),
        abroad_of_alias=abroad_of,
        place_re=re.compile(_alternation(set(province_of) | {a for a in city_of if len(a) >= 2})),
    )


@lru_cache(maxsize=4096)
def parse_region(region: str | None) -> tuple[str | None, str | None]:
    """(province, city) from a chat tool's region string, full official names.

    ``浙江省杭州市 西湖区`` and ``浙江杭州`` give (浙江省, 杭州市); a municipality or
    special region gives itself twice (``北京市朝阳区`` → (北京市, 北京市)); a city
    alone gives its province (``杭州`` → (浙江省, 杭州市)); a province alone gives
    (province, None). A recognised foreign place gives (its name, None), e.g.
    ``美国`` → (美国, None). Anything else, empty or None gives (None, None).
    """
    if not region:
        return None, None
    text = _REGION_NOISE.sub("", _fold(region)).strip()
    if not text:
        return None, None
    reg = _regions()
    m = reg.province_re.match(text)
    if m:
        province = reg.province_of_alias[m.group()]
        rest = text[m.end() :].lstrip(" ,-/·")
        cities = reg.cities_of_province.get(province)
        if cities is not None:
            cm = cities.match(rest)
            if cm:
                return province, _city_name(reg, province, cm.group())
        if province in reg.municipalities:  # 北京市朝阳区: districts are not listed
            return province, province
        return province, None
    m = reg.city_re.match(text)
    if m:
        return reg.city_of_alias[m.group()]
    m = reg.abroad_re.match(text)
    if m:
        return reg.abroad_of_alias[m.group()], None
    return None, None


def _city_name(reg: _Regions, province: str, alias: str) -> str:
    hit = reg.city_of_alias.get(alias)
    if hit is not None and hit[0] == province:
        return hit[1]
    # alias shadowed by another province's city of the same short form: find it by name
    for suffix in ("", *_NAME_SUFFIXES, "自治州"):
        p_c = reg.city_of_alias.get(alias + suffix)
        if p_c is not None and p_c[0] == province:
            return p_c[1]
    return alias


def locality(region: str | None, hospital_city: str, hospital_province: str) -> str:
    """Where the visitor is, seen from the hospital.

    'local' (same city), 'province' (same province, another city or no city given),
    'remote' (another province or abroad) or 'unknown' (no region, or not recognised).
    """
    province, city = parse_region(region)
    if province is None:
        return "unknown"
    home_province, home_city = parse_region(hospital_province)[0], parse_region(hospital_city)[1]
    if province != home_province:
        return "remote"
    if city is None:  # same province, city not given
        return "local" if home_city == home_province else "province"
    return "local" if city == home_city else "province"


# ---------------------------------------------------------------- keywords and pages


@dataclass(frozen=True)
class _CategoryRules:
    keyword_order: tuple[str, ...]
    keyword_res: dict[str, re.Pattern[str]]
    domain_project: re.Pattern[str]
    domain_symptom: re.Pattern[str]
    page_order: tuple[str, ...]
    # one regex per category: separate searches measured faster than one grouped regex,
    # since each keeps its own first-character scan
    page_url: dict[str, re.Pattern[str]]
    page_title: dict[str, re.Pattern[str]]
    ad_param: re.Pattern[str]


def _any_of(patterns: list[str] | None) -> re.Pattern[str]:
    patterns = [str(p).lower() for p in patterns or []]
    return re.compile("|".join(f"(?:{p})" for p in patterns) if patterns else r"(?!)")


@lru_cache(maxsize=1)
def _rules() -> _CategoryRules:
    kw: dict[str, Any] = yaml.safe_load(_read("keywords.yaml"))
    pages: dict[str, Any] = yaml.safe_load(_read("pages.yaml"))
    terms = domain_terms()
    projects = {t for t, v in terms.items() if v.category in ("project", "treatment")}
    symptoms = {t for t, v in terms.items() if v.category == "symptom"}
    order = tuple(kw.get("order") or ())
    page_order = tuple(pages.get("order") or ())
    for name in (*order, *page_order):
        if name not in KEYWORD_CATEGORIES and name not in PAGE_CATEGORIES:
            raise ValueError(f"unknown category {name!r} in keywords.yaml/pages.yaml")
    return _CategoryRules(
        keyword_order=order,
        keyword_res={k: _any_of(kw.get(k)) for k in (*order, "place")},
        domain_project=re.compile(_alternation(projects) or r"(?!)"),
        domain_symptom=re.compile(_alternation(symptoms) or r"(?!)"),
        page_order=page_order,
        page_url={k: _any_of((pages.get(k) or {}).get("url")) for k in page_order},
        page_title={k: _any_of((pages.get(k) or {}).get("title")) for k in page_order},
        ad_param=re.compile(
            r"(?:^|[?&#])(?:"
            + "|".join(re.escape(p) for p in pages.get("ad_params") or ["(?!)"])
            + r")(?:=|&|$)"
        ),
    )


@lru_cache(maxsize=8)
def _brand_re(hospital_name: str) -> re.Pattern[str] | None:
    name = _fold(hospital_name)
    if not name or name == "本院":
        return None
    names = {name}
    short = _HOSPITAL_SUFFIX.sub("", name)
    # drop a leading place name (杭州某某医院 → 某某) so the brand alone also counts
    m = _regions().place_re.match(short)
    if m and len(short) - m.end() >= 2:
        names.add(short[m.end() :])
    if len(short) >= 2:
        names.add(short)
    return re.compile(_alternation(names))


@lru_cache(maxsize=4096)
def keyword_category(keyword: str | None, hospital_name: str) -> str:
    """Category of the search keyword (one of :data:`KEYWORD_CATEGORIES`)."""
    if not keyword or not keyword.strip():
        return "none"
    text = normalize(keyword).lower()
    rules = _rules()
    brand = _brand_re(hospital_name)
    for category in rules.keyword_order:
        if category == "brand":
            hit = (brand is not None and brand.search(text)) or rules.keyword_res["brand"].search(text)
        elif category == "city_project":
            hit = (rules.keyword_res["place"].search(text) or _regions().place_re.search(text)) and (
                rules.domain_project.search(text) or rules.keyword_res["project"].search(text)
            )
        elif category == "project":
            hit = rules.domain_project.search(text) or rules.keyword_res["project"].search(text)
        elif category == "symptom":
            hit = rules.keyword_res["symptom"].search(text) or rules.domain_symptom.search(text)
        else:
            hit = rules.keyword_res[category].search(text)
        if hit:
            return category
    return "other"


@lru_cache(maxsize=8192)
def page_category(url: str, title: str | None) -> str:
    """Category of a visited page (one of :data:`PAGE_CATEGORIES`) from its URL path and title."""
    rules = _rules()
    m = _URL.match(_fold(url or ""))
    path = m.group(1) if m else ""
    title_text = _fold(title or "")
    for category in rules.page_order:
        if rules.page_url[category].search(path) or (
            title_text and rules.page_title[category].search(title_text)
        ):
            return category
    if title_text and rules.domain_project.search(title_text):
        return "project"
    return "other"


def _is_ad_click(url: str | None) -> bool:
    if not url:
        return False
    m = _URL.match(_fold(url))
    if m is None:
        return False
    return bool(_rules().ad_param.search("?" + (m.group(2) or "") + "&" + (m.group(3) or "")))


# ---------------------------------------------------------------- features


def _feature_names() -> list[str]:
    names = ["visit.has_trace"]
    names += [f"visit.engine={e}" for e in (*ENGINES, "unknown")]
    names += [f"visit.kw={k}" for k in KEYWORD_CATEGORIES]
    names += [f"visit.landing={p}" for p in (*PAGE_CATEGORIES, "none")]
    names += ["visit.ad_click", "visit.pages_n", "visit.pages_n_log1p"]
    names += [f"visit.pages.{p}" for p in PAGE_CATEGORIES]
    names += ["visit.dwell_total_log1p", "visit.dwell_max_log1p", "visit.browse_before_chat_log1p"]
    names += ["visit.visits_before", "visit.returning"]
    names += [f"visit.local={x}" for x in LOCALITIES]
    names += [f"visit.device={d}" for d in DEVICES]
    names += ["visit.hour_sin", "visit.hour_cos"]
    names += [f"visit.weekday={d}" for d in range(7)]
    return names


VISIT_FEATURE_NAMES: list[str] = _feature_names()


def visit_features(
    visit: Visit | None,
    started_at: datetime,
    *,
    hospital_name: str,
    hospital_city: str,
    hospital_province: str,
) -> dict[str, float]:
    """Visit-trace features of one conversation; every key is in :data:`VISIT_FEATURE_NAMES`.

    Only non-zero one-hot entries and the numeric features are present; use
    :data:`VISIT_FEATURE_NAMES` for a fixed column set (absent = 0).
    """
    hour = started_at.hour + started_at.minute / 60.0
    f: dict[str, float] = {
        "visit.hour_sin": math.sin(2 * math.pi * hour / 24),
        "visit.hour_cos": math.cos(2 * math.pi * hour / 24),
        f"visit.weekday={started_at.weekday()}": 1.0,
    }
    v = visit if visit is not None else Visit()
    has_trace = any(
        value is not None
        for value in (
            v.engine,
            v.keyword,
            v.landing_url,
            v.referrer,
            v.pages,
            v.region,
            v.device,
            v.visits_before,
            v.visitor_id,
        )
    )
    f["visit.has_trace"] = 1.0 if has_trace else 0.0
    f[f"visit.engine={v.engine or 'unknown'}"] = 1.0
    f[f"visit.kw={keyword_category(v.keyword, hospital_name)}"] = 1.0
    f[f"visit.landing={page_category(v.landing_url, None) if v.landing_url else 'none'}"] = 1.0
    f["visit.ad_click"] = 1.0 if _is_ad_click(v.landing_url) else 0.0

    pages = v.pages or []
    f["visit.pages_n"] = float(min(len(pages), _PAGES_CAP))
    f["visit.pages_n_log1p"] = math.log1p(len(pages))
    counts = dict.fromkeys(PAGE_CATEGORIES, 0)
    dwell_total = dwell_max = 0.0
    for i, page in enumerate(pages):
        counts[page_category(page.url, page.title)] += 1
        dwell = page.dwell_s
        next_at = pages[i + 1].at if i + 1 < len(pages) else None
        if dwell is None and page.at is not None and next_at is not None:
            gap = (next_at - page.at).total_seconds()
            dwell = gap if 0 <= gap < 6 * 3600 else None
        if dwell is not None:
            dwell_total += dwell
            dwell_max = max(dwell_max, dwell)
    for category, n in counts.items():
        f[f"visit.pages.{category}"] = float(min(n, _PAGE_CATEGORY_CAP))
    f["visit.dwell_total_log1p"] = math.log1p(dwell_total)
    f["visit.dwell_max_log1p"] = math.log1p(dwell_max)
    first_at = next((p.at for p in pages if p.at is not None), None)
    browse = (started_at - first_at).total_seconds() if first_at is not None else 0.0
    f["visit.browse_before_chat_log1p"] = math.log1p(browse) if 0 < browse < 7 * 86400 else 0.0

    visits_before = v.visits_before or 0
    f["visit.visits_before"] = float(min(visits_before, _VISITS_CAP))
    f["visit.returning"] = 1.0 if visits_before > 0 else 0.0
    f[f"visit.local={locality(v.region, hospital_city, hospital_province)}"] = 1.0
    f[f"visit.device={v.device or 'unknown'}"] = 1.0
    return f
