"""The challenger in the shadow: a second model version scores every message too, never shown.

``yuyue models shadow VERSION`` points the registry alias ``challenger`` at a version (``--off`` removes
it); the server follows the alias (checked every ``model_poll_seconds``, in a background thread, so no
message waits for the registry). While a challenger is set, every scored message's event payload gets
``"shadow": {"version": V, "scores": {"booked": p, "arrived": p}}``: the challenger's calibrated
probabilities for the same chat state the champion scored (one struct row and one text row from the
session's :class:`~yuyue.features.state.ConversationState`, no reasons, no suggestions). The answer to
the consultant is unchanged. ``GET /v1/model/health`` compares both on the same chats as outcomes
arrive (``serving/monitoring.py``).

The hook (:func:`shadow_scores`) costs one feature dict, one text row (:func:`fast_text`) and the
challenger's scorers per message;
its time is kept in :attr:`Shadow.timings` (the last 1,000 messages, in the health report). A
challenger that fails to score is logged and skipped: the champion's path never fails because of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from yuyue.features.rows import TEXT_DIM
from yuyue.models.bundle import ChatSession, YuyueModel

if TYPE_CHECKING:
    from yuyue.config import Settings

log = logging.getLogger("yuyue.serving")

CHALLENGER = "challenger"
TIMINGS_KEPT = 1000
# fast_text is checked against FeatureSpace.state_text on a challenger's first messages and every
# CHECK_EVERY-th one after; scores further apart than CHECK_TOLERANCE turn it off for good
CHECK_FIRST = 20
CHECK_EVERY = 1000
CHECK_TOLERANCE = 1e-5


class Shadow:
    """The challenger model held by the server (None when no challenger is set)."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings
        self._current: tuple[YuyueModel, str] | None = None
        self._last: tuple[YuyueModel, str] | None = None
        self._lock = threading.Lock()
        self._checked = 0.0
        self._refreshing = False
        self.timings: deque[float] = deque(maxlen=TIMINGS_KEPT)  # milliseconds per shadow-scored message
        self.failures = 0
        self.fast = True  # fast_text until a check finds a difference
        self.scored = 0

    # ---- which model ----------------------------------------------------------------------
    def get(self) -> tuple[YuyueModel, str] | None:
        return self._current

    @property
    def version(self) -> str | None:
        current = self._current
        return current[1] if current else None

    def set(self, model: YuyueModel, version: str) -> None:
        with self._lock:
            if (model, version) != self._last:  # another challenger (not the same one set again)
                self.timings.clear()
                self.scored = 0  # check the fast text row again on its first messages
                self._last = (model, version)
            self._current = (model, version)

    def clear(self) -> None:
        with self._lock:
            self._current = None

    def refresh(self) -> dict[str, Any]:
        """Follow the registry's ``challenger`` alias: load the version it names, drop it when unset."""
        from yuyue.training import registry

        self._checked = time.monotonic()
        version = registry.alias_version(CHALLENGER, self.settings)
        if version is None:
            previous = self.version
            self.clear()
            return {"challenger": None, "changed": previous is not None}
        if version == self.version:
            return {"challenger": version, "changed": False}
        model, version = registry.load(version, self.settings)
        self.set(model, version)
        log.info("challenger %s scores every message in the shadow", version)
        return {"challenger": version, "changed": True}

    def _due(self) -> bool:
        poll = self.settings.model_poll_seconds if self.settings is not None else 0
        return poll > 0 and not self._refreshing and time.monotonic() - self._checked > poll

    def _refresh_in_background(self) -> None:
        self._refreshing = True
        self._checked = time.monotonic()

        def run() -> None:
            try:
                self.refresh()
            except Exception as exc:  # keep the challenger there is (or none)
                log.warning("challenger check failed: %s", exc)
            finally:
                self._refreshing = False

        threading.Thread(target=run, name="yuyue-challenger-poll", daemon=True).start()

    def poll(self) -> None:
        """Check the registry's alias in the background when ``model_poll_seconds`` have passed."""
        if self._due():
            self._refresh_in_background()

    # ---- scoring ------------------------------------------------------------------------------
    def score(self, session: ChatSession, message: dict[str, Any]) -> None:
        """Add the challenger's scores of ``session``'s current state to the ``message`` payload."""
        self.poll()
        current = self._current
        if current is None:
            return
        model, version = current
        if version == message.get("model_version") or not model.scorers:
            return  # the champion itself: nothing to compare
        t0 = time.perf_counter()
        try:
            message["shadow"] = {"version": version, "scores": self._probabilities(model, session)}
        except Exception as exc:
            self.failures += 1
            if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                log.warning(
                    "challenger %s could not score a message (%d failures): %s", version, self.failures, exc
                )
            return
        self.timings.append((time.perf_counter() - t0) * 1e3)

    def _probabilities(self, model: YuyueModel, session: ChatSession) -> dict[str, float]:
        if not self.fast:
            return probabilities(model, session)
        scores = probabilities(model, session, fast_text(model, session))
        self.scored += 1
        if self.scored <= CHECK_FIRST or self.scored % CHECK_EVERY == 0:
            exact = probabilities(model, session)
            if any(abs(scores[k] - exact[k]) > CHECK_TOLERANCE for k in exact):
                self.fast = False
                log.warning("the shadow's fast text row differs from the feature space's: using the latter")
                return exact
        return scores

    def timing(self) -> dict[str, Any]:
        """Milliseconds the challenger took per message (the last :data:`TIMINGS_KEPT`)."""
        ms = list(self.timings)
        if not ms:
            return {"n": 0, "p50_ms": None, "p90_ms": None}
        return {
            "n": len(ms),
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3),
        }


def probabilities(model: YuyueModel, session: ChatSession, text: Any = None) -> dict[str, float]:
    """``model``'s calibrated probabilities of the chat so far (what :meth:`YuyueModel.score` gives,
    without the reasons); ``text``: the chat's text row when the caller has it (else the space's)."""
    struct = np.zeros((1, model.space.n_struct), dtype=np.float32)
    model.space.struct_row(session.state.features(), struct[0])
    if text is None:
        text = model.space.state_text(session.state)
    return {
        name: round(float(scorer.predict_proba_arrays(struct, text)[0]), 6)
        for name, scorer in model.scorers.items()
    }


def _unit_bag(bag: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.fromiter(bag.keys(), dtype=np.int64, count=len(bag))
    vals = np.log1p(np.fromiter(bag.values(), dtype=np.float32, count=len(bag)))
    vals /= np.linalg.norm(vals) or 1.0
    return keys, vals


def fast_text(model: YuyueModel, session: ChatSession) -> Any:
    """The text row :meth:`FeatureSpace.state_text` builds, in one sparse construction instead of a
    dozen sparse operations (≈ 0.05 ms instead of ≈ 1 ms a message): the chat's bag plus each latest
    message's bags, each L2-normalised. :class:`Shadow` checks it against ``state_text`` (see
    :data:`CHECK_FIRST`) and falls back for good on any difference."""
    space, state = model.space, session.state
    row = space.text_row(*state.text_bag())
    if not space.recent_text:
        return row
    pairs = [state.recent_bag()]
    if getattr(space, "recent_grams", False):
        pairs.append(state.recent_grams())
    parts = [_unit_bag(bag) for pair in pairs for bag in pair if bag]
    if not parts:
        return row
    keys = np.concatenate([row.indices.astype(np.int64), *(k for k, _ in parts)])
    vals = np.concatenate([row.data.astype(np.float64), *(v.astype(np.float64) for _, v in parts)])
    index, where = np.unique(keys, return_inverse=True)
    summed = np.bincount(where, weights=vals).astype(np.float32)
    return sp.csr_matrix(
        (summed, index.astype(np.int32), np.array([0, len(index)], dtype=np.int64)), shape=(1, TEXT_DIM)
    )


_INSTALL = threading.Lock()


def shadow_of(service: Any) -> Shadow:
    """The chat service's :class:`Shadow`, created (empty) on first use."""
    shadow: Shadow | None = getattr(service, "shadow", None)
    if shadow is None:
        with _INSTALL:
            shadow = getattr(service, "shadow", None)
            if shadow is None:
                shadow = Shadow(getattr(service, "settings", None))
                service.shadow = shadow
    return shadow


def shadow_scores(service: Any, session: ChatSession, message: dict[str, Any]) -> None:
    """The message path's hook (``ChatService._append``): the challenger's scores into the payload."""
    shadow_of(service).score(session, message)
