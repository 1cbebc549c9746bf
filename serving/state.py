"""What the endpoints share, one per app: :class:`Yuyue` (reached as ``app.state.yuyue``, see
``serving/deps.py``).

It holds the database engine, the API keys, the rate limiter and its edge blocklist, the model
(swappable at run time, :meth:`Yuyue.reload`), the chat service and the metrics.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from yuyue.config import Settings
from yuyue.models.bundle import YuyueModel
from yuyue.models.replies.guard import check_consultant_message
from yuyue.serving.auth import KeyStore, hash_key
from yuyue.serving.cache import make_cache, redis_options
from yuyue.serving.db import create_all, engine_options, make_engine
from yuyue.serving.edge import Blocklist, client_address
from yuyue.serving.metrics import Metrics
from yuyue.serving.ratelimit import RateLimiter
from yuyue.serving.service import LIVE_CODEC, ChatService, ModelHolder
from yuyue.serving.store import EventStore

if TYPE_CHECKING:  # they import this module's neighbours; set by their install(state)
    from yuyue.serving.reviews import ReviewBook
    from yuyue.serving.tasks import Desk

log = logging.getLogger("yuyue.serving")


class Yuyue:
    """Everything the endpoints share (one per app)."""

    reviews: ReviewBook  # serving.reviews.install (from create_app)
    desk: Desk  # serving.tasks.install (from create_app)

    def __init__(self, settings: Settings, model: YuyueModel | None = None, version: str | None = None):
        self.settings = settings
        self.engine = make_engine(settings.resolved_database_url, **engine_options(settings))
        import yuyue.serving.auth  # noqa: F401  (declares its tables)

        create_all(self.engine)
        self.keys = KeyStore(self.engine)
        self.limiter = RateLimiter(
            settings.redis_url,
            timeout=settings.ratelimit_redis_timeout_s,
            cooldown_s=settings.redis_cooldown_s,
        )
        self.blocked = Blocklist()
        self.models = ModelHolder(model, version)
        self.service = ChatService(
            settings,
            EventStore(self.engine),
            make_cache(settings.redis_url, LIVE_CODEC, **redis_options(settings)),
            self.models,
        )
        self.metrics = Metrics()
        if model is not None:
            self.metrics.set_model(self.models.version or "local")
            warm_up(model)
        self._stop = threading.Event()
        self._reload_lock = threading.Lock()

    def reload(self) -> dict[str, Any]:
        """Load the registry's champion if it differs from the model in use, and the hospitals' and
        departments' own models (the ``hospital-*`` and ``department-*`` aliases, training/per_hospital.py)
        if they changed: new ones loaded, removed ones dropped (their chats go back to the next model)."""
        from yuyue.training import registry

        with self._reload_lock:
            version = registry.alias_version(registry.CHAMPION, self.settings)
            if version is None:
                return {
                    "version": self.models.version,
                    "changed": False,
                    "hospitals": self.models.hospitals,
                    "departments": self.models.departments,
                    "detail": "no champion registered",
                }
            wanted = {kind: registry.segment_versions(kind, self.settings) for kind in registry.SEGMENTS}
            out: dict[str, Any] = {"version": version, "changed": False}
            if version != self.models.version:
                model, version = registry.load(version, self.settings)
                warm_up(model)  # first-use costs (tokeniser dictionaries, caches) before any request sees it
                previous = self.models.version
                self.models.set(model, version)
                self.metrics.set_model(version)
                log.info("model switched from %s to %s", previous, version)
                out = {"version": version, "changed": True, "previous": previous}
            for kind, versions in wanted.items():
                if versions != self.models.serving(kind):
                    self._load_own(kind, versions)
                    out["changed"] = True
            out["hospitals"] = self.models.hospitals
            out["departments"] = self.models.departments
            return out

    def _load_own(self, kind: str, wanted: dict[str, str]) -> None:
        """Serve each hospital (or department, by ``kind``) in ``wanted`` (code -> version) by that version;
        a model already loaded is reused, one that fails to load leaves its chats on the next model
        (logged, retried next poll)."""
        from yuyue.training import registry

        loaded = {v: m for k in registry.SEGMENTS for m, v in self.models.own_models(k).values()}
        models: dict[str, tuple[YuyueModel, str]] = {}
        for hospital, version in wanted.items():
            model = loaded.get(version)
            if model is None:
                try:
                    model, version = registry.load(version, self.settings)
                except registry.RegistryError as exc:
                    log.warning(
                        "%s %s: cannot load its model %s (%s); the next model serves it",
                        kind,
                        hospital,
                        version,
                        exc,
                    )
                    continue
                warm_up(model)
                reviews = getattr(self, "reviews", None)  # serving.reviews: its decisions reach every model
                if reviews is not None:
                    reviews.attach(model)
                loaded[version] = model
            models[hospital] = (model, version)
        before = self.models.serving(kind)
        self.models.set_own(kind, models)
        log.info("%s models: %s (were %s)", kind, self.models.serving(kind) or "none", before or "none")

    def poll(self) -> None:
        interval = self.settings.model_poll_seconds
        while interval > 0 and not self._stop.wait(interval):
            try:
                self.reload()
            except Exception as exc:  # keep serving the current model
                log.warning("registry poll failed: %s", exc)

    def gate(self, scope: dict[str, Any], raw: str | None) -> tuple[float, str] | None:
        """Who the limiter refused (a key over its limit, an address over its failed authentications):
        ``(retry_after, detail)`` until its retry time, answered 429 at the edge without reading the
        body or asking Redis (see :class:`~yuyue.serving.edge.EdgeMiddleware`); None to let it in."""
        if not self.blocked:
            return None
        if raw is not None:
            digest = hash_key(raw.strip())
            hit = self.blocked.blocked("key:" + digest)
            if hit is not None or self.keys.known(digest):
                return hit
        elif not scope["path"].startswith("/v1/"):
            return None
        return self.blocked.blocked("addr:" + client_address(scope))

    def close(self) -> None:
        self._stop.set()
        self.engine.dispose()


def warm_up(model: YuyueModel) -> None:
    """Run one throw-away chat through ``model`` so the first real request is not the slow one."""
    now = datetime.now(UTC)
    session, _ = model.open_chat(started_at=now)
    for role, text in (
        ("visitor", "你好，想了解一下价格"),
        ("consultant", "您好，请问怎么称呼？"),
        ("visitor", "姓李"),
    ):
        model.on_message(session, role, text, now)
    # the compliance guard's classifier trains from the repo's red-team data on first use (~2-3 s):
    # here, not in the first consultant's message
    check_consultant_message("您好，请问怎么称呼？")
