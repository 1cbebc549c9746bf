"""YuyueModel: everything the service needs, trained together and loaded as one.

One bundle holds the feature space, the booking and arrival scorers with their
reason explainers, the stage model, the hint rules and the reply suggester. It
saves to and loads from one directory (logged to MLflow as one model), and
offers the per-message step the console calls: fold a message into the chat's
session, then return scores with reasons, stage, hints, entities and replies.
Parts the training data could not support are ``None`` and simply skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import joblib
import msgpack
import numpy as np

from yuyue.data.contract import Visit
from yuyue.features.rows import FeatureSpace
from yuyue.features.signals import CONCERNS
from yuyue.features.state import ConversationState, MessageAnalysis
from yuyue.models.hints import Hint, HintEngine
from yuyue.models.legacy import old_module_names
from yuyue.models.reasons import Reason, ReasonExplainer
from yuyue.models.replies.suggest import ReplySuggester, Suggestion, booking_confirmed
from yuyue.models.scorer import OutcomeScorer
from yuyue.models.stages import ChatStageTracker, StageClassifier

TARGETS = ("booked", "arrived")
CONTEXT_MESSAGES = 6
# the last characters of a message kept as context (stage model, reply suggestions, the stored
# session): a 10,000-character message would otherwise be re-read by the chat's next steps
CONTEXT_CHARS = 500
# the stage model reads at most this many characters of a consultant message
STAGE_CHARS = 1000
# features + scores (+ stage) past this many milliseconds: the optional parts are skipped
DEFAULT_BUDGET_MS = 50.0
SUGGESTED_IDS = 40  # suggestion ids a chat session remembers (repeats are counted over these)
BUNDLE_FORMAT = 2  # 2: classes pickled under the yuyue namespace; 1: under the old top-level names


@dataclass
class Scored:
    """A calibrated probability with its top reasons."""

    probability: float
    reasons: list[Reason]

    def as_dict(self) -> dict[str, Any]:
        return {
            "probability": round(self.probability, 4),
            "reasons": [
                {"group": r.group, "text": r.render(), "delta": round(r.delta, 4)} for r in self.reasons
            ],
        }


@dataclass
class ChatSession:
    """What the service keeps per chat between messages (a few hundred bytes to a few KB)."""

    state: ConversationState
    tracker: ChatStageTracker
    context: list[tuple[str, str]] = field(default_factory=list)  # last messages (role, raw text)
    last: dict[str, float] = field(default_factory=dict)  # last probabilities, for the change
    # what the suggester needs beyond the state: the chat's department and project (from its opening),
    # how often each reply id was suggested (at most SUGGESTED_IDS ids) and whether a booking was confirmed
    department: str | None = None
    project: str | None = None
    suggested: dict[str, int] = field(default_factory=dict)
    confirmed: bool = False

    def to_bytes(self) -> bytes:
        extra = [self.department, self.project, self.suggested, self.confirmed]
        blob: bytes = msgpack.packb(
            [2, self.state.to_bytes(), self.tracker.to_dict(), self.context, self.last, extra],
            use_bin_type=True,
        )
        return blob

    @classmethod
    def from_bytes(cls, blob: bytes) -> ChatSession:
        version, state, tracker, context, last, *rest = msgpack.unpackb(blob, raw=False)
        if version not in (1, 2):
            raise ValueError(f"chat session version {version} not in (1, 2)")
        department, project, suggested, confirmed = rest[0] if version == 2 else (None, None, {}, False)
        return cls(
            ConversationState.from_bytes(state),
            ChatStageTracker.from_dict(tracker),
            [tuple(x) for x in context],
            dict(last),
            department,
            project,
            dict(suggested),
            bool(confirmed),
        )

    def remember(self, suggestions: list[Suggestion]) -> None:
        """Count the suggestions shown (the oldest ids are forgotten past SUGGESTED_IDS)."""
        for s in suggestions:
            self.suggested[s.id] = self.suggested.pop(s.id, 0) + 1  # re-inserted: most recent last
        while len(self.suggested) > SUGGESTED_IDS:
            del self.suggested[next(iter(self.suggested))]


@dataclass
class MessageInsight:
    """The console's view after one message."""

    scores: dict[str, Scored]
    changes: dict[str, float]
    stage: str | None
    stage_probability: float
    stage_reached: str | None
    stages_done: list[str]
    hints: list[Hint]
    analysis: MessageAnalysis
    suggestions: list[Suggestion]
    timings_ms: dict[str, float] = field(default_factory=dict)
    # optional parts skipped because the message's time budget was spent (e.g. ["suggestions"])
    degraded: list[str] = field(default_factory=list)


def band(p_booked: float) -> str:
    """A/B/C band of a booking probability for the console (A: act now)."""
    return "A" if p_booked >= 0.35 else "B" if p_booked >= 0.12 else "C"


class YuyueModel:
    """The predictor bundle (see the module docstring)."""

    #: time source of the per-message budget (seconds); tests replace it
    clock: Callable[[], float] = staticmethod(time.perf_counter)

    def __init__(
        self,
        space: FeatureSpace,
        scorers: dict[str, OutcomeScorer],
        explainers: dict[str, ReasonExplainer],
        stage_model: StageClassifier | None,
        suggester: ReplySuggester | None,
        hints: HintEngine | None = None,
        hospital: dict[str, str] | None = None,
        info: dict[str, Any] | None = None,
    ):
        self.space = space
        self.scorers = scorers
        self.explainers = explainers
        self.stage_model = stage_model
        self.suggester = suggester
        self.hints = hints or HintEngine.default()
        self.hospital = dict(hospital or {})
        self.info = dict(info or {})

    # ---- chats ---------------------------------------------------------
    def open_chat(
        self,
        *,
        started_at: datetime,
        visit: Visit | None = None,
        department: str | None = None,
        project: str | None = None,
        consultant_id: str | None = None,
    ) -> tuple[ChatSession, dict[str, Scored]]:
        """A new session and its first scores, from the visit trace alone."""
        state = ConversationState.start(
            started_at=started_at,
            visit=visit,
            department=department,
            project=project,
            consultant_id=consultant_id,
            **{
                k: v
                for k, v in self.hospital.items()
                if k in ("hospital_name", "hospital_city", "hospital_province")
            },
        )
        session = ChatSession(state, ChatStageTracker.start(), department=department, project=project)
        scores = self.score(state)
        session.last = {k: s.probability for k, s in scores.items()}
        return session, scores

    def score(
        self,
        state: ConversationState,
        *,
        closed: bool = False,
        top: int = 4,
        features: dict[str, float] | None = None,
    ) -> dict[str, Scored]:
        """Calibrated scores with reasons for the chat so far (``closed``: the chat has ended).

        ``features``: ``state.features(closed=closed)`` when the caller has it already.
        """
        if not self.scorers:
            return {}
        struct = np.zeros((1, self.space.n_struct), dtype=np.float32)
        self.space.struct_row(features if features is not None else state.features(closed=closed), struct[0])
        text = self.space.state_text(state)
        out = {}
        for name, scorer in self.scorers.items():
            p, reasons = self.explainers[name].explain(scorer, struct, text, top=top)
            out[name] = Scored(p, reasons)
        return out

    def on_message(
        self,
        session: ChatSession,
        role: str,
        text: str,
        at: datetime,
        *,
        k: int = 3,
        suggest: bool = True,
        budget_ms: float | None = DEFAULT_BUDGET_MS,
    ) -> MessageInsight:
        """Fold one message into ``session`` (in place) and return the console's view.

        ``budget_ms``: when features, scores and stage have taken longer than this (a very long
        message), the reply suggestions are skipped and named in ``degraded``; the scores, stage
        and hints are always computed. ``None``: no budget.
        """
        clock = self.clock
        t0 = clock()
        analysis = session.state.update(role, text, at)
        t1 = clock()
        stage, stage_p = None, 0.0
        if role == "consultant" and self.stage_model is not None:
            context = next((t for r, t in reversed(session.context) if r == "visitor"), None)
            stage, stage_p = self.stage_model.predict_one(text[:STAGE_CHARS], context)
            session.tracker.update(stage, stage_p)
        if role == "consultant" and session.state.flags.get("visit_time_agreed") and booking_confirmed(text):
            session.confirmed = True
        if role != "system":
            session.context.append((role, text[-CONTEXT_CHARS:]))
            del session.context[:-CONTEXT_MESSAGES]
        feats = session.state.features()
        scores = self.score(session.state, features=feats)
        t2 = clock()
        changes = {n: round(s.probability - session.last.get(n, s.probability), 4) for n, s in scores.items()}
        session.last = {n: s.probability for n, s in scores.items()}
        done = session.tracker.stages_done
        hints = self.hints.hints(feats, done)
        suggestions: list[Suggestion] = []
        degraded: list[str] = []
        if suggest and role == "visitor" and self.suggester is not None:
            if budget_ms is not None and (t2 - t0) * 1e3 > budget_ms:
                degraded.append("suggestions")
            else:
                # the safety trigger reads the whole new message; the retrieval context its last part
                suggestions = self.suggester.suggest(
                    session.context,
                    self._facts(session, hints),
                    k=k,
                    latest_visitor=_latest_visitor(session, text),
                )
                session.remember(suggestions)
        t3 = clock()
        return MessageInsight(
            scores=scores,
            changes=changes,
            stage=stage,
            stage_probability=round(float(stage_p), 4),
            stage_reached=session.tracker.reached,
            stages_done=sorted(done),
            hints=hints,
            analysis=analysis,
            suggestions=suggestions,
            timings_ms={
                "features": round((t1 - t0) * 1e3, 3),
                "scores": round((t2 - t1) * 1e3, 3),
                "hints_replies": round((t3 - t2) * 1e3, 3),
            },
            degraded=degraded,
        )

    def _facts(self, session: ChatSession, hints: list[Hint]) -> dict[str, Any]:
        facts = dict(session.state.revealed)
        flags = session.state.flags
        facts["concerns_open"] = [c for c in CONCERNS if flags.get("concern_open_" + c)]
        if facts.get("projects"):
            facts["project"] = facts["projects"][0]
        elif session.project:
            facts["project"] = session.project
        if session.department:
            facts["department"] = session.department
        # the stage of the chat and what was offered already (see ReplySuggester.suggest)
        facts["consultant_spoke"] = session.state.n.get("consultant", 0) > 0
        facts["visit_time_agreed"] = bool(flags.get("visit_time_agreed"))
        facts["booking_confirmed"] = session.confirmed
        facts["suggested"] = session.suggested
        next_stages = [h.stage for h in hints if getattr(h, "stage", None)]
        if next_stages:
            facts["next_stage"] = next_stages[0]
        return facts

    # ---- persistence ---------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        joblib.dump(
            {
                "format": BUNDLE_FORMAT,
                "names": self.space.names,
                "scorers": self.scorers,
                "explainers": self.explainers,
                "stage_model": self.stage_model,
                "hospital": self.hospital,
            },
            d / "bundle.joblib",
            compress=3,
        )
        if self.suggester is not None:
            self.suggester.save(d / "replies")
        (d / "info.json").write_text(
            json.dumps(self.info, ensure_ascii=False, indent=2, default=str), encoding="utf-8"
        )
        return d

    @classmethod
    def load(cls, directory: str | Path) -> YuyueModel:
        d = Path(directory)
        if not (d / "bundle.joblib").exists():
            raise FileNotFoundError(f"{d}: not a Yuyue model directory (no bundle.joblib)")
        try:
            parts = joblib.load(d / "bundle.joblib")
        except (ModuleNotFoundError, AttributeError):  # pickled before the yuyue namespace (format 1)
            with old_module_names():
                parts = joblib.load(d / "bundle.joblib")
        if parts.get("format") not in (1, BUNDLE_FORMAT):
            raise ValueError(f"{d}: bundle format {parts.get('format')} != {BUNDLE_FORMAT}")
        suggester = ReplySuggester.load(d / "replies") if (d / "replies").exists() else None
        info = json.loads((d / "info.json").read_text(encoding="utf-8")) if (d / "info.json").exists() else {}
        return cls(
            FeatureSpace(parts["names"]),
            parts["scorers"],
            parts["explainers"],
            parts["stage_model"],
            suggester,
            hospital=parts["hospital"],
            info=info,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "scorers": {k: type(v).__name__ + ":" + v.kind for k, v in self.scorers.items()},
            "stage_model": self.stage_model is not None,
            "replies": self.suggester is not None,
            **{k: v for k, v in self.info.items() if k not in ("metrics", "profile")},
        }


def _latest_visitor(session: ChatSession, text: str) -> str:
    """The visitor's messages since the consultant's last one, the newest in full (the rest as kept)."""
    texts = [text]
    for role, t in reversed(session.context[:-1]):
        if role != "visitor":
            break
        texts.append(t)
    return "\n".join(reversed(texts))


def insight_dict(insight: MessageInsight) -> dict[str, Any]:
    """A JSON-ready form of an insight (entities left to the caller, who decides on masking)."""
    return {
        "scores": {k: s.as_dict() for k, s in insight.scores.items()},
        "changes": insight.changes,
        "stage": insight.stage,
        "stage_probability": insight.stage_probability,
        "stage_reached": insight.stage_reached,
        "stages_done": insight.stages_done,
        # flat dataclasses: their __dict__ is what asdict would build, without its deep copy
        "hints": [dict(vars(h)) for h in insight.hints],
        "suggestions": [dict(vars(s)) for s in insight.suggestions],
        "degraded": list(insight.degraded),
    }
