"""ReplyPool: the replies a consultant can be offered, mined from past chats plus the script library.

Past consultant messages are normalised, masked (no personal data ever reaches the pool file), the
visitor's masked form of address (``*女士``, ``小*``) is turned into the ``{address_form}`` slot, and near
duplicates are collapsed: exact duplicates of the canonical text first, then char-bigram MinHash with
LSH banding proposes candidate pairs whose true Jaccard similarity is checked before clusters are
joined (union-find). Each cluster is shown by its most frequent member.

Per entry the pool keeps how often the reply was used, the majority stage annotation and a smoothed
booking prior (how often chats in which it was used ended booked). Supervisors review entries:
``unreviewed`` (mined), ``allowed`` (scripts, or approved) and ``blocked`` (never suggested).
The pool persists as JSONL: a header line, then one entry per line.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from yuyue.data.contract import Conversation
from yuyue.features.normalize import normalize
from yuyue.features.pii import mask_text

POOL_FORMAT = "yuyue-reply-pool"
POOL_VERSION = 1
STATUSES = ("unreviewed", "allowed", "blocked")
SOURCES = ("mined", "script")
GENERIC_DEPARTMENTS = 3  # a reply mined in this many departments is generic

# a masked surname inside a form of address → the {address_form} slot (138****5678 is left alone)
_MASKED_ADDR = re.compile(
    r"(?<![0-9A-Za-z*])(?:(?:小|老)\*{1,2}|\*{1,3}(?:女士|先生|小姐|姐姐|姐|哥|总|老师|阿姨|叔叔|大夫))"
    r"(?![0-9A-Za-z*])"
)
_NOT_CANON = re.compile(r"\{\w*\}|[\s\W_]+")

# a hospital's own name in a mined reply: 2-8 name chars before one of these suffixes (longest first)
_HOSPITAL_SUFFIXES = (
    "医疗美容医院",
    "医疗美容门诊部",
    "中西医结合医院",
    "泌尿专科医院",
    "皮肤专科医院",
    "肝病专科医院",
    "皮肤科门诊部",
    "眼科门诊部",
    "口腔门诊部",
    "整形门诊部",
    "眼视光中心",
    "皮肤病医院",
    "医美诊所",
    "整形医院",
    "男科医院",
    "男子医院",
    "妇产医院",
    "女子医院",
    "妇科医院",
    "口腔医院",
    "眼科医院",
    "肝病医院",
    "专科医院",
    "齿科",
    "医院",
    "门诊部",
    "诊所",
)
_HOSPITAL = re.compile(r"([\u4e00-\u9fa5]{2,14}?)(" + "|".join(_HOSPITAL_SUFFIXES) + ")")
# words that end the part of a phrase that can be a name (我是|欢迎咨询 … X医院) or make it generic (我们医院)
_NAME_BREAK = re.compile(
    r"欢迎咨询|欢迎来到|欢迎|这里是|我是|我们|咱们|导航搜|搜索|搜|咨询|来|到|去|在|是|的|了|和|或|您|你|我|这|那|个|家|有|没|就|"
    r"也|还|要|会|能|可|请|附近|当地|本地|外地|别|其他|其它"
)
_NAME_ENDINGS = ("和",)  # break words that also end hospital names (安和, 仁和, 协和)
_GENERIC_NAME = re.compile(
    r"^(?:正规|公立|私立|民营|综合|三甲|大型|专业|专科|普通|一般|市|省|县|区|市里|省里|大|小|新)+$"
)
_ROLE = r"(?:在线咨询|咨询师|咨询顾问|在线客服|线上客服|顾问|客服|助理)"
_NOT_NAME = r"(?!(?:助理|客服|顾问|医生|老师|专员|人员|小姐|真人|本人|机器|咨询|这边|那边|为您|给您|帮您)(?![\u4e00-\u9fa5]))"
_NAME = (
    r"(?:小[\u4e00-\u9fa5]|[\u4e00-\u9fa5]老师|[A-Z][a-z]{1,9}|"
    + _NOT_NAME
    + r"[\u4e00-\u9fa5]{2}(?=[，,。！!~～\s]|$))"
)
_CONSULTANT_AFTER = re.compile(r"(" + _ROLE + r"(?:的)?|我是|我叫)(" + _NAME + r")")
_CONSULTANT_ALONE = re.compile(
    r"(?<![\u4e00-\u9fa5A-Za-z])(小[\u4e00-\u9fa5]|[\u4e00-\u9fa5]老师|[A-Z][a-z]{2,9})"
    r"(?=随时|一直|在线|会|给您|帮您|为您|在呢|[，,。！!]|$)"
)
_DOCTOR = re.compile(
    r"(?:(?<=[的是找由请约挂,，。！？!?\s])|^)(?!科室|专家|副|学科)[\u4e00-\u9fa5]{2,3}(?:主任|院长|教授)"
)
_ENGLISH = re.compile(r"(?<![A-Za-z{])[A-Z][a-z]{2,9}(?![A-Za-z}])")
_ADDRESS = re.compile(
    r"[\u4e00-\u9fa5]{2,4}(?:区|县)[\u4e00-\u9fa5]{1,8}?(?:路|街|大道|大街)\d+号"
    r"(?:[\u4e00-\u9fa5A-Za-z0-9]{0,10}?(?:楼|层|座|大厦|中心|广场|室))?"
)
# a mined reply that stops mid-sentence (a turn split over several messages): trailing comma and the like
_CUT_END = re.compile(r"[，,、：:；;（(“\s]+$")
_SENTENCE_END = re.compile(r"[。！？!?～~…]")
_DANGLING = re.compile(r"(?:的话|如果|因为|但是|而且|比如|包括|还有|以及|或者|和|跟|及)$")


def slot_names(text: str) -> str:
    """Another hospital's name → ``{hospital}``, a consultant's name → ``{consultant}``, a named doctor
    (王立新主任) → ``{doctor}``, a street address → ``{address}`` (the hospital the reply was mined from is never the one it is offered for)."""

    def hospital(m: re.Match[str]) -> str:
        head = m.group(1)
        breaks = list(_NAME_BREAK.finditer(head))
        name = head[breaks[-1].end() :] if breaks else head
        if not name and breaks[-1].group() in _NAME_ENDINGS:  # 安和男科医院: 和 ends the name here
            name = head[breaks[-2].end() if len(breaks) > 1 else 0 :]
        if len(name) < 2 or _GENERIC_NAME.match(name):
            return m.group(0)
        return m.group(1)[: len(m.group(1)) - len(name)] + "{hospital}"

    text = _ADDRESS.sub("{address}", text)
    text = _HOSPITAL.sub(hospital, text)
    text = _DOCTOR.sub("{doctor}", text)
    text = _CONSULTANT_AFTER.sub(lambda m: m.group(1) + "{consultant}", text)
    text = _CONSULTANT_ALONE.sub("{consultant}", text)
    return _ENGLISH.sub("{consultant}", text)


def whole_sentences(text: str) -> str:
    """``text`` without a trailing fragment: a reply cut at a comma ends at its last full sentence, or
    gets a full stop when what precedes the comma reads as complete; ``""`` when nothing is left."""
    if not _CUT_END.search(text):
        return text
    body = _CUT_END.sub("", text)
    ends = list(_SENTENCE_END.finditer(body))
    if ends:
        return body[: ends[-1].end()]
    if not body or _DANGLING.search(body):
        return ""
    return body + "。"


# ------------------------------------------------------------------------------------------- text helpers


def char_bigrams(text: str) -> frozenset[str]:
    """Char bigrams of the canonical form (punctuation and spaces dropped); one char → itself."""
    return _key_bigrams(canonical_key(text))


def _key_bigrams(s: str) -> frozenset[str]:
    if len(s) < 2:
        return frozenset([s]) if s else frozenset()
    return frozenset(s[i : i + 2] for i in range(len(s) - 1))


def jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter) if inter else 0.0


def bigram_jaccard(a: str, b: str) -> float:
    """Char-bigram Jaccard similarity of two texts (the project's near-duplicate measure)."""
    return jaccard(char_bigrams(a), char_bigrams(b))


def canonical_key(text: str) -> str:
    """What two replies must share to be exact duplicates: lower case, no slots, punctuation or spaces."""
    return _NOT_CANON.sub("", text.lower())


def reply_text(raw: str) -> str:
    """The form a consultant message is stored in: normalised, masked, form of address as ``{address_form}``,
    other hospitals' and consultants' names slotted (:func:`slot_names`), no trailing fragment."""
    text = mask_text(normalize(raw)).replace("{", "(").replace("}", ")")
    return whole_sentences(slot_names(_MASKED_ADDR.sub("{address_form}", text)))


def entry_id(text: str, prefix: str = "m") -> str:
    """Stable id of a reply: a hash of its canonical text."""
    return prefix + hashlib.blake2b(canonical_key(text).encode("utf-8"), digest_size=6).hexdigest()


# ------------------------------------------------------------------------------------------- examples


@dataclass(frozen=True)
class ReplyExample:
    """One consultant message with what came before it in its chat."""

    conversation_id: str
    context: tuple[tuple[str, str], ...]  # (role, raw text) of earlier messages, oldest first
    reply: str  # raw text
    stage: str | None
    booked: bool | None
    department: str | None = None
    project: str | None = None


def iter_reply_examples(
    records: Iterable[Conversation | dict[str, Any]], max_context: int = 6
) -> Iterator[ReplyExample]:
    """Every consultant message of ``records`` with up to ``max_context`` earlier messages.

    Consecutive consultant messages are one turn split over several messages; each still counts as a
    reply (the first of them is the one that answers the visitor).
    """
    for rec in records:
        conv = rec if isinstance(rec, Conversation) else Conversation.model_validate(rec)
        booked = conv.outcome.booked if conv.outcome is not None else None
        msgs = [(m.role, m.text, m.stage.value if m.stage else None) for m in conv.messages]
        for i, (role, text, stage) in enumerate(msgs):
            if role != "consultant":
                continue
            ctx = tuple((r, t) for r, t, _ in msgs[max(0, i - max_context) : i] if r != "system")
            yield ReplyExample(conv.conversation_id, ctx, text, stage, booked, conv.department, conv.project)


# ------------------------------------------------------------------------------------------- entries


@dataclass
class PoolEntry:
    """One reply the consultant may be offered."""

    id: str
    text: str
    source: str  # 'mined' | 'script'
    stage: str | None = None
    count: int = 0
    booked_after: float = 0.0  # smoothed share of chats using it that ended booked
    n_booked: int = 0
    n_outcome: int = 0  # chats using it with a known booking outcome
    status: str = "unreviewed"
    concern: str | None = None
    department: str | None = None
    project: str | None = None
    # the departments a mined reply was used in, when fewer than GENERIC_DEPARTMENTS (else generic: None)
    departments: list[str] | None = None
    # a reply that entered the pool from the desk: a consultant's edit of the entry with this id
    # (serving/reviews.py adds these to a running server's pool; a retrain mines them as sent messages)
    edited_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PoolEntry:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in obj.items() if k in names})


class UnknownReplyError(KeyError):
    """Raised when ids given to :meth:`ReplyPool.set_status` are not in the pool."""

    def __init__(self, ids: Sequence[str]):
        self.ids = list(ids)
        super().__init__(f"unknown reply id(s): {', '.join(self.ids)}")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class ReplyPool:
    """The reviewed-or-not set of replies, keyed by id; persists to a JSONL file."""

    entries: dict[str, PoolEntry] = field(default_factory=dict)
    base_rate: float = 0.0  # booking rate over all mined chats with a known outcome
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[PoolEntry]:
        return iter(self.entries.values())

    def __contains__(self, reply_id: object) -> bool:
        return reply_id in self.entries

    def get(self, reply_id: str) -> PoolEntry | None:
        return self.entries.get(reply_id)

    def suggestible(self, reply_id: str, allow_unreviewed: bool = True) -> PoolEntry | None:
        """The entry when it may be suggested (never when blocked)."""
        e = self.entries.get(reply_id)
        if e is None or e.status == "blocked" or (e.status == "unreviewed" and not allow_unreviewed):
            return None
        return e

    def select(self, status: str | None = None, limit: int | None = None) -> list[PoolEntry]:
        """Entries (optionally of one status), most used first."""
        rows = [e for e in self.entries.values() if status is None or e.status == status]
        rows.sort(key=lambda e: (-e.count, e.id))
        return rows[:limit] if limit is not None else rows

    def set_status(self, ids: Sequence[str], status: str, save: bool = True) -> None:
        """Set the review status of ``ids``; all or nothing: unknown ids raise and change nothing."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        missing = [i for i in ids if i not in self.entries]
        if missing:
            raise UnknownReplyError(missing)
        for i in ids:
            self.entries[i].status = status
        if save and self.path is not None:
            self.save(self.path)

    def swap_entries(self, add: Iterable[PoolEntry] = (), drop: Iterable[str] = ()) -> None:
        """Add (or replace) and remove entries in one step: the dict is replaced, never changed in
        place, so a suggester iterating over the old one meanwhile is not disturbed."""
        entries = dict(self.entries)
        for rid in drop:
            entries.pop(rid, None)
        for e in add:
            entries[e.id] = e
        self.entries = entries

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the pool (header line, then entries) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        header = {"format": POOL_FORMAT, "version": POOL_VERSION, "base_rate": self.base_rate}
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(header) + b"\n")
            for e in self.entries.values():
                fh.write(orjson.dumps(e.to_json()) + b"\n")
        os.replace(tmp, path)
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReplyPool:
        path = Path(path)
        with open(path, "rb") as fh:
            lines = [ln for ln in fh if ln.strip()]
        if not lines:
            raise ValueError(f"{path}: empty reply pool file")
        header = orjson.loads(lines[0])
        if header.get("format") != POOL_FORMAT or header.get("version") != POOL_VERSION:
            raise ValueError(f"{path}: not a reply pool file of version {POOL_VERSION}")
        entries = {}
        for ln in lines[1:]:
            e = PoolEntry.from_json(orjson.loads(ln))
            entries[e.id] = e
        return cls(entries=entries, base_rate=float(header.get("base_rate", 0.0)), path=path)


# ------------------------------------------------------------------------------------------- clustering

_SEP = "\x00"
_FILL = "\x01"


def _bigram_codes(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every char bigram of every key as one int (two code points), and where each key's run starts.

    Keys shorter than two chars are padded with a filler char, so each key owns at least one code.
    """
    padded = [k if len(k) >= 2 else (k + _FILL if k else _FILL + _FILL) for k in keys]
    cps = np.frombuffer(_SEP.join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    codes = (cps[:-1] << np.uint64(21)) | cps[1:]
    keep = (cps[:-1] != 0) & (cps[1:] != 0)
    per_key = np.fromiter((len(k) - 1 for k in padded), dtype=np.int64, count=len(padded))
    offsets = np.zeros(len(padded), dtype=np.int64)
    offsets[1:] = np.cumsum(per_key)[:-1]
    return codes[keep], offsets


def minhash_signatures(keys: Sequence[str], num_perm: int = 32, seed: int = 1) -> np.ndarray:
    """MinHash signatures (``len(keys) × num_perm``, uint64) of the char-bigram sets of canonical keys."""
    if not keys:
        return np.zeros((0, num_perm), dtype=np.uint64)
    codes, offsets = _bigram_codes(keys)
    rng = np.random.default_rng(seed)
    # multiply-shift hashing; uint64 products wrap, which is what the scheme wants
    a = rng.integers(1, 1 << 63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
    sig = np.empty((len(keys), num_perm), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(num_perm):
            hashed = (codes * a[j] + b[j]) >> np.uint64(32)
            sig[:, j] = np.minimum.reduceat(hashed, offsets)
    return sig


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        p = self.parent
        while p[i] != i:
            p[i] = p[p[i]]
            i = p[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def cluster_near_duplicates(
    keys: Sequence[str], threshold: float = 0.7, num_perm: int = 32, bands: int = 16
) -> list[int]:
    """Cluster label per key: keys whose char-bigram Jaccard ≥ ``threshold`` end up together.

    LSH banding over MinHash proposes pairs (each bucket links its members to its first member),
    and every proposed pair is checked with the exact Jaccard similarity, so nothing below the
    threshold is joined directly; clusters are the connected components.
    """
    n = len(keys)
    if n == 0:
        return []
    rows = num_perm // bands
    sig = minhash_signatures(keys, num_perm=num_perm)
    gram_cache: dict[int, frozenset[str]] = {}

    def grams(i: int) -> frozenset[str]:
        g = gram_cache.get(i)
        if g is None:
            g = gram_cache[i] = _key_bigrams(keys[i])
        return g

    uf = _UnionFind(n)
    checked: set[tuple[int, int]] = set()
    for band in range(bands):
        block = np.ascontiguousarray(sig[:, band * rows : (band + 1) * rows])
        bucket_keys = block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel()
        order = np.argsort(bucket_keys, kind="stable")
        sorted_keys = bucket_keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], n]
        for s, e in zip(starts, ends, strict=True):
            if e - s < 2:
                continue
            members = order[s:e]
            head = int(members[0])
            for m in members[1:]:
                m = int(m)
                pair = (head, m)
                if pair in checked or uf.find(head) == uf.find(m):
                    continue
                checked.add(pair)
                if jaccard(grams(head), grams(m)) >= threshold:
                    uf.union(head, m)
    return [uf.find(i) for i in range(n)]


# ------------------------------------------------------------------------------------------- building


def build_pool(
    examples: Iterable[ReplyExample],
    scripts: Iterable[Any] = (),
    *,
    threshold: float = 0.7,
    prior_strength: float = 5.0,
    min_count: int = 1,
    min_chars: int = 2,
    dept_share: float = 0.95,
    previous: ReplyPool | None = None,
) -> tuple[ReplyPool, list[str | None]]:
    """A pool from consultant messages and script-library entries.

    Returns the pool and, aligned with ``examples``, the id of the entry each message fell into
    (None for messages too short to keep or in clusters seen fewer than ``min_count`` times).
    ``booked_after`` is ``(n_booked + prior_strength * base_rate) / (n_outcome + prior_strength)``.
    An entry gets a department only when at least ``dept_share`` of its uses were in that
    department (generic replies are used everywhere), and a project only when its text names the
    project of the chats it was used in (a price quoted for 双眼皮 must not be offered for 隆鼻).
    Review statuses of ``previous`` carry over to the clusters that contain their text.
    """
    # exact duplicates first: most consultant messages are templates typed again and again
    cache: dict[str, str] = {}
    key_index: dict[str, int] = {}
    key_text: list[Counter[str]] = []
    key_of_example: list[int] = []
    ex_stage: list[str | None] = []
    ex_booked: list[bool | None] = []
    ex_conv: list[str] = []
    ex_dept: list[str | None] = []
    ex_project: list[str | None] = []
    for ex in examples:
        text = cache.get(ex.reply)
        if text is None:
            text = cache[ex.reply] = reply_text(ex.reply)
        key = canonical_key(text)
        if len(key) < min_chars:
            key_of_example.append(-1)
        else:
            k = key_index.get(key)
            if k is None:
                k = key_index[key] = len(key_text)
                key_text.append(Counter())
            key_text[k][text] += 1
            key_of_example.append(k)
        ex_stage.append(ex.stage)
        ex_booked.append(ex.booked)
        ex_conv.append(ex.conversation_id)
        ex_dept.append(ex.department)
        ex_project.append(ex.project)

    keys = list(key_index)
    labels = cluster_near_duplicates(keys, threshold=threshold)

    # aggregate per cluster; booking counted once per (cluster, conversation)
    texts: dict[int, Counter[str]] = {}
    stages: dict[int, Counter[str]] = {}
    depts: dict[int, Counter[str]] = {}
    projects: dict[int, Counter[str]] = {}
    counts: Counter[int] = Counter()
    outcomes: dict[int, dict[str, bool]] = {}
    conv_outcome: dict[str, bool] = {}
    for i, k in enumerate(key_of_example):
        if ex_booked[i] is not None:
            conv_outcome[ex_conv[i]] = bool(ex_booked[i])
        if k < 0:
            continue
        c = labels[k]
        counts[c] += 1
        if stage := ex_stage[i]:
            stages.setdefault(c, Counter())[stage] += 1
        if dept := ex_dept[i]:
            depts.setdefault(c, Counter())[dept] += 1
        if project := ex_project[i]:
            projects.setdefault(c, Counter())[project] += 1
        if ex_booked[i] is not None:
            outcomes.setdefault(c, {})[ex_conv[i]] = bool(ex_booked[i])
    for k, tc in enumerate(key_text):
        texts.setdefault(labels[k], Counter()).update(tc)
    base_rate = sum(conv_outcome.values()) / len(conv_outcome) if conv_outcome else 0.0

    pool = ReplyPool(base_rate=base_rate)
    cluster_id: dict[int, str] = {}
    for c, n in counts.items():
        if n < min_count:
            continue
        text = max(texts[c].items(), key=lambda kv: (kv[1], -len(kv[0]), kv[0]))[0]
        rid = entry_id(text)
        outs = outcomes.get(c, {})
        nb, no = sum(outs.values()), len(outs)
        pool.entries[rid] = PoolEntry(
            id=rid,
            text=text,
            source="mined",
            stage=stages[c].most_common(1)[0][0] if c in stages else None,
            count=n,
            booked_after=(nb + prior_strength * base_rate) / (no + prior_strength),
            n_booked=nb,
            n_outcome=no,
            status="unreviewed",
            department=_dominant(depts.get(c), n, dept_share),
            project=_mentioned_project(text, projects.get(c)),
            departments=sorted(depts[c]) if c in depts and len(depts[c]) < GENERIC_DEPARTMENTS else None,
        )
        cluster_id[c] = rid
    for s in scripts:
        sid = "s-" + str(s.id)
        pool.entries[sid] = PoolEntry(
            id=sid,
            text=str(s.text),
            source="script",
            stage=_plain(getattr(s, "stage", None)),
            count=0,
            booked_after=base_rate,
            status="allowed",
            concern=_plain(getattr(s, "concern", None)),
            department=getattr(s, "department", None),
            project=getattr(s, "project", None),
        )
    if previous is not None:
        _carry_statuses(pool, previous, key_index, labels, cluster_id)
    assignments = [cluster_id.get(labels[k]) if k >= 0 else None for k in key_of_example]
    return pool, assignments


def _dominant(counts: Counter[str] | None, n: int, share: float) -> str | None:
    if not counts:
        return None
    value, c = counts.most_common(1)[0]
    return value if c >= share * n else None


def _mentioned_project(text: str, counts: Counter[str] | None) -> str | None:
    for project, _ in (counts or Counter()).most_common():
        if project in text:
            return project
    return None


def _plain(value: Any) -> str | None:
    """Enum members (Stage, Concern) as their plain string value."""
    return None if value is None else str(getattr(value, "value", value))


def _carry_statuses(
    pool: ReplyPool,
    previous: ReplyPool,
    key_index: dict[str, int],
    labels: list[int],
    cluster_id: dict[int, str],
) -> None:
    rank = {"unreviewed": 0, "allowed": 1, "blocked": 2}  # blocked wins over allowed
    for old in previous:
        if old.status == "unreviewed":
            continue
        rid = old.id if old.id in pool.entries else None
        if rid is None:
            k = key_index.get(canonical_key(old.text))
            rid = cluster_id.get(labels[k]) if k is not None else None
        if rid is not None and rank[old.status] > rank[pool.entries[rid].status]:
            pool.entries[rid].status = old.status


__all__ = [
    "GENERIC_DEPARTMENTS",
    "POOL_FORMAT",
    "POOL_VERSION",
    "PoolEntry",
    "ReplyExample",
    "ReplyPool",
    "STATUSES",
    "UnknownReplyError",
    "bigram_jaccard",
    "build_pool",
    "canonical_key",
    "char_bigrams",
    "cluster_near_duplicates",
    "entry_id",
    "iter_reply_examples",
    "jaccard",
    "minhash_signatures",
    "reply_text",
    "slot_names",
    "whole_sentences",
]
