"""The visit trace (访问轨迹) that the chat tool records before a chat starts.

Engine, keyword, pages, dwell times, earlier visits, region and device all depend
on the visitor's latent traits, so a model can learn something from them.
"""

from __future__ import annotations

import random
from urllib.parse import quote

from yuyue.data.simulator.bank import Department, PhraseBank, Project
from yuyue.data.simulator.clock import iso

LOCALITIES = ("local", "province", "neighbor", "far")

_KEYWORD_FORMS = {
    "brand": ("{hospital}", "{hospital}怎么样", "{hospital}地址", "{short}医院{project}", "{hospital}电话"),
    "city_project": (
        "{city}{project}",
        "{city}哪家医院{project}好",
        "{city}{project}医院",
        "{city}做{project}",
    ),
    "price": (
        "{project}多少钱",
        "{project}价格",
        "{project}费用",
        "{city}{project}价格表",
        "{project}大概要多少钱",
    ),
    "symptom": ("{symptom}怎么回事", "{symptom}是什么原因", "{symptom}怎么办"),
    "risk": ("{project}有什么风险", "{project}安全吗", "{project}后遗症", "{project}疼吗"),
}


class VisitBuilder:
    """Builds visit traces for one hospital site."""

    def __init__(self, bank: PhraseBank, city: str, province: str):
        w = bank.world
        self.hospital = w["hospital"]
        self.site = self.hospital["site"]
        self.msite = self.hospital["mobile_site"]
        self.engines = tuple(w["engines"])
        self.engine_info = w["engines"]
        self.engine_weights = tuple(float(e["weight"]) for e in w["engines"].values())
        self.city = city
        self.province = province
        self.city_short = city.removesuffix("市")
        self.districts = tuple(w["districts"].get(city, ()))
        self.province_cities = tuple(c for c in w["province_cities"].get(province, ()) if c != city)
        local_prefix = province + city
        self.neighbors = tuple(r for r in w["neighbor_regions"] if not r.startswith(local_prefix))
        self.far = tuple(r for r in w["far_regions"] if not r.startswith(local_prefix))

    def draw_engine(self, rng: random.Random) -> str:
        return rng.choices(self.engines, self.engine_weights)[0]

    def engine_intent(self, engine: str) -> float:
        return float(self.engine_info[engine]["intent"])

    def draw_device(self, rng: random.Random, engine: str) -> str:
        r = rng.random()
        if r < 0.01:
            return "unknown"
        if r < 0.04:
            return "tablet"
        return "mobile" if rng.random() < self.engine_info[engine]["mobile"] else "pc"

    def region(self, rng: random.Random, locality: str) -> str | None:
        """The region string as the chat tool shows it; ``None`` when it reports nothing."""
        r = rng.random()
        if r < 0.06:
            return None
        if r < 0.10:
            return "未知"
        if locality == "local":
            base = self.city if self.province == self.city else self.province + self.city
            if self.districts and rng.random() < 0.75:
                return f"{base} {self.districts[int(rng.random() * len(self.districts))]}"
            return base
        if locality == "province" and self.province_cities:
            return self.province + self.province_cities[int(rng.random() * len(self.province_cities))]
        pool = self.neighbors if locality in ("province", "neighbor") else self.far
        return pool[int(rng.random() * len(pool))]

    def region_city(self, region: str | None, locality: str, rng: random.Random) -> str:
        """A short place name a visitor would type for where they are."""
        if not region or region == "未知":
            pool = self.neighbors if locality in ("province", "neighbor") else self.far
            region = pool[int(rng.random() * len(pool))] if locality != "local" else self.city
        place = region.split(" ")[-1] if locality == "local" else region
        for sep in ("省", "自治区"):
            if sep in place:
                place = place.split(sep, 1)[1]
        return place.removesuffix("市").removesuffix("区") or self.city_short

    def keyword_type(
        self,
        rng: random.Random,
        engine: str,
        intent: float,
        price_sens: float,
        anxiety: float,
        urgency: float,
        dept: Department,
        visits_before: int,
    ) -> str:
        if engine == "direct":
            return "none"
        if engine == "toutiao" or (engine == "other" and rng.random() < 0.6):
            return "none"
        symptom_ok = dept.name != "整形美容"
        weights = (
            0.04 + 0.45 * intent + 0.25 * (visits_before > 0),
            0.25 + 0.1 * (1 - price_sens),
            0.06 + 0.45 * price_sens,
            (0.12 + 0.35 * urgency) if symptom_ok else 0.0,
            0.03 + 0.3 * anxiety,
        )
        return rng.choices(("brand", "city_project", "price", "symptom", "risk"), weights)[0]

    def build(
        self,
        rng: random.Random,
        *,
        t0: int,
        engine: str,
        device: str,
        kw_type: str,
        dept: Department,
        project: Project,
        intent: float,
        price_sens: float,
        anxiety: float,
        locality: str,
        visits_before: int,
        region: str | None,
    ) -> dict:
        """The ``visit`` object; pages end shortly before ``t0``."""
        hosp = self.hospital
        mobile = device in ("mobile", "tablet")
        site = self.msite if mobile else self.site
        keyword = ""
        if kw_type != "none":
            forms = _KEYWORD_FORMS[kw_type]
            form = forms[int(rng.random() * len(forms))]
            syn = project.synonyms[int(rng.random() * len(project.synonyms))]
            symptom = project.status_a[int(rng.random() * len(project.status_a))] if project.status_a else syn
            keyword = form.format(
                hospital=hosp["display_name"],
                short=hosp["short_name"],
                city=self.city_short,
                project=syn,
                symptom=symptom.replace(" ", ""),
            )
        # landing page by keyword type
        pslug = f"/{dept.slug}/{project.slug}"
        if kw_type == "brand" or engine == "direct":
            pages = [(f"{site}/", f"{hosp['display_name']}-首页")]
        elif kw_type == "price":
            pages = [
                (
                    f"{site}/jiage/{project.slug}.html",
                    f"{project.name}价格_{project.name}多少钱-{hosp['short_name']}",
                )
            ]
        elif kw_type in ("symptom", "risk"):
            aid = 100 + int(rng.random() * 9000)
            pages = [(f"{site}{pslug}/{aid}.html", f"{keyword or project.name}_{hosp['display_name']}")]
        else:
            pages = [(f"{site}{pslug}/", f"{project.name}_{dept.name}_{hosp['display_name']}")]
        # further pages, driven by the latents
        n_more = min(12, int(rng.expovariate(1.0 / (0.6 + 2.5 * intent))))
        for _ in range(n_more):
            r = rng.random() * (1.0 + intent + price_sens + 0.8 * anxiety)
            if r < 0.6:
                cid = 100 + int(rng.random() * 900)
                pages.append((f"{site}/anli/{cid}.html", f"{project.name}真人案例{cid}"))
            elif r < 0.6 + 0.8 * intent:
                did = 1 + int(rng.random() * 30)
                pages.append(
                    (f"{site}/zhuanjia/{did}.html", f"专家团队_{dept.doctors[did % len(dept.doctors)]}")
                )
            elif r < 0.6 + 0.8 * intent + price_sens:
                pages.append((f"{site}/jiage/{project.slug}.html", f"{project.name}价格表"))
            elif r < 1.0 + intent + price_sens:
                aid = 100 + int(rng.random() * 9000)
                pages.append((f"{site}{pslug}/{aid}.html", f"{project.name}常见问题"))
            else:
                pages.append((f"{site}/{dept.slug}/", f"{dept.name}_{hosp['display_name']}"))
        if rng.random() < 0.05 + 0.5 * intent * intent * (1.0 if locality == "local" else 0.5):
            pages.insert(len(pages) - (1 if len(pages) > 1 else 0), (f"{site}/luxian/", "来院路线_地址交通"))
        # dwell times, walking backwards from the chat start
        dwell = [round(rng.expovariate(1.0 / (15 + 60 * intent)), 1) for _ in pages]
        t = t0 - 5 - int(rng.random() * 40)
        stamps = []
        for d in reversed(dwell):
            t -= int(d) + 1
            stamps.append(t)
        stamps.reverse()
        page_objs = [
            {"url": url, "title": title, "at": iso(ts), "dwell_s": d}
            for (url, title), ts, d in zip(pages, stamps, dwell, strict=True)
        ]
        info = self.engine_info[engine]
        landing = pages[0][0] + (info["ad"] if info["ad"] else "")
        visit: dict = {
            "visitor_id": "v" + f"{rng.getrandbits(48):012x}",
            "engine": engine,
            "keyword": keyword,
            "landing_url": landing,
        }
        ref = info["m_referrer"] if mobile else info["referrer"]
        if ref:
            visit["referrer"] = ref + quote(keyword) if ref.endswith("=") else ref
        visit["pages"] = page_objs
        if region is not None:
            visit["region"] = region
        visit["device"] = device
        visit["visits_before"] = visits_before
        return visit
