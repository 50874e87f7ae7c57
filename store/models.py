"""The durable state of the loop. The database is the truth; Celery messages only ring the bell."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def _json() -> Any:
    return Column(JSON, nullable=False)


def utcnow() -> datetime:
    """Aware UTC; SQLModel's UTCDateTime stores it as UTC on every backend and returns it aware."""
    return datetime.now(UTC)


class Chat(SQLModel, table=True):
    """One customer chat; ``source_id`` is the id in the source system (unique)."""

    id: int | None = Field(default=None, primary_key=True)
    source_id: str = Field(index=True, unique=True, max_length=255)
    text: str
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=_json())
    received_at: datetime = Field(default_factory=utcnow)
    ingested_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Prediction(SQLModel, table=True):
    """A model version's opinion of a chat; one row per (chat, version)."""

    __table_args__ = (UniqueConstraint("chat_id", "model_version", name="uq_prediction"),)

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(foreign_key="chat.id", index=True)
    model_version: int = Field(index=True)
    p_negative: float
    p_neutral: float
    p_positive: float
    label: str = Field(max_length=16)
    score: float
    uncertainty: float = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)


class SelectionRound(SQLModel, table=True):
    """One selection: the strategy, its options and the model version that chose a batch,
    from how many candidates, and the stopping signal at that moment. The chosen chats
    are the label tasks that point here (with their selection scores)."""

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(index=True)
    cycle_id: str | None = Field(default=None, max_length=64)
    model_version: int | None = None
    strategy: str = Field(max_length=32)
    options: dict[str, Any] = Field(default_factory=dict, sa_column=_json())
    candidates: int = 0
    requested: int = 0
    chosen: int = 0
    stopping: dict[str, Any] = Field(default_factory=dict, sa_column=_json())
    created_at: datetime = Field(default_factory=utcnow)


#: The status of a distillation teacher: a registered version that is never served.
TEACHER = "teacher"
#: The strategy of a review task: a likely label error asked again in the review project; its
#: answer replaces the chat's label.
REVIEW = "review"
#: Task states that hold their chat (at most one such task per chat and project) ...
ACTIVE_TASK_STATES = ("pending", "pushed", "annotated", "skipped")
#: ... and those that no longer do: history, the chat may be asked again.
INACTIVE_TASK_STATES = ("requeued", "deleted", "superseded", "moved")
ACTIVE_TASK_SQL = text("state IN ('pending', 'pushed', 'annotated', 'skipped')")


class LabelTask(SQLModel, table=True):
    """A chat sent to Label Studio. Written as ``pending`` before the import so a crash between
    import and bookkeeping is reconciled instead of producing a duplicate task.

    States: ``pending`` (reserved, not imported yet), ``pushed`` (waiting for an annotator),
    ``annotated``, ``skipped`` (every annotation cancelled; re-queued after
    SENTILOOP_SKIP_REQUEUE_SECONDS), and history: ``requeued`` (a new task asks again),
    ``deleted`` (gone from Label Studio), ``superseded`` (the chat's text changed: its labels
    leave the training set), ``moved`` (re-created on another Label Studio by a resync).
    ``ls_instance`` names the Label Studio project the task lives in (see labeling);
    ``overlap`` is how many annotators it asks: it stays ``pushed`` until that many answered
    (or that many tried, one at least answering)."""

    __table_args__ = (
        Index(
            "uq_label_task_active",
            "chat_id",
            "project_id",
            unique=True,
            sqlite_where=ACTIVE_TASK_SQL,
            postgresql_where=ACTIVE_TASK_SQL,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(foreign_key="chat.id", index=True)
    project_id: int
    ls_instance: str = Field(default="", max_length=128)
    ls_task_id: int | None = Field(default=None, index=True)
    state: str = Field(default="pending", max_length=16)
    state_at: datetime | None = None
    strategy: str = Field(default="", max_length=32)
    model_version: int | None = None
    selection_score: float | None = None
    round_id: int | None = Field(default=None, foreign_key="selectionround.id", index=True)
    selected_at: datetime = Field(default_factory=utcnow)
    pushed_at: datetime | None = None
    overlap: int = 1


class Annotation(SQLModel, table=True):
    """A human label pulled from Label Studio, keyed by the Label Studio project it came from
    and its annotation id there (ids restart on a new instance)."""

    __table_args__ = (
        UniqueConstraint("ls_instance", "ls_annotation_id", name="uq_annotation_instance_ls_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ls_instance: str = Field(default="", max_length=128)
    ls_annotation_id: int
    ls_task_id: int
    project_id: int
    chat_id: int = Field(foreign_key="chat.id", index=True)
    label: str | None = Field(default=None, max_length=16)
    annotator: str | None = Field(default=None, max_length=255)
    cancelled: bool = False
    revision: int = 1
    created_at: datetime
    updated_at: datetime
    pulled_at: datetime = Field(default_factory=utcnow)
    lead_time: float | None = None  # seconds the annotator spent (Label Studio's lead time)


#: The states of a consensus: trained on; too uncertain, another annotator is asked; too
#: uncertain with every annotator asked that may be (left out of training, for a person).
CONSENSUS_STATES = ("accepted", "reask", "disputed")


class ConsensusLabel(SQLModel, table=True):
    """The label a chat's several annotators agree on, with its quality (quality.consensus),
    as of the answers it was reached from: ``answers`` holds their (record id, revision)
    pairs, so a new or changed answer makes it stale until it is reached again.
    ``model_version`` names the model whose out-of-sample probabilities it used."""

    chat_id: int = Field(foreign_key="chat.id", primary_key=True)
    label: str = Field(max_length=16)
    quality: float
    agreement: float
    votes: int
    method: str = Field(max_length=16)
    model_version: int | None = None
    answers: list[list[int]] = Field(default_factory=list, sa_column=_json())
    state: str = Field(default="accepted", max_length=16)
    decided_at: datetime = Field(default_factory=utcnow)


class AnnotationHistory(SQLModel, table=True):
    """The earlier value of an annotation that was later changed in Label Studio."""

    id: int | None = Field(default=None, primary_key=True)
    annotation_id: int = Field(foreign_key="annotation.id", index=True)
    revision: int
    label: str | None = Field(default=None, max_length=16)
    annotator: str | None = Field(default=None, max_length=255)
    cancelled: bool = False
    updated_at: datetime
    replaced_at: datetime = Field(default_factory=utcnow)


class ModelVersion(SQLModel, table=True):
    """A trained, complete checkpoint and everything needed to trust it (lineage, metrics).

    A partial unique index makes "exactly one production version" a database guarantee, so
    concurrent promotions cannot both win."""

    __table_args__ = (
        Index(
            "uq_modelversion_one_production",
            "status",
            unique=True,
            sqlite_where=text("status = 'production'"),
            postgresql_where=text("status = 'production'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    number: int = Field(unique=True, index=True)
    parent: int | None = None
    base_model: str
    checkpoint_path: str
    weights_sha256: str = Field(max_length=64)
    data_fingerprint: str = Field(unique=True, max_length=64)
    train_config: dict[str, Any] = Field(default_factory=dict, sa_column=_json())
    annotation_ids: list[int] = Field(default_factory=list, sa_column=_json())
    # the revision of each annotation the version learned, by the store's annotation id
    # ({"record id": revision}): a label edited while the version trained is a new revision,
    # so the next one learns it; Label Studio's own ids restart after a reset
    annotation_revisions: dict[str, int] = Field(default_factory=dict, sa_column=_json())
    n_train: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=_json())
    # candidate | production | archived, or teacher: a distillation teacher, never served
    status: str = Field(default="candidate", max_length=16)
    train_seconds: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    promoted_at: datetime | None = None
    mode: str = Field(default="full", max_length=16)  # full | incremental
    temperature: float = 1.0
    gate: dict[str, Any] = Field(default_factory=dict, sa_column=_json())
    checkpoint_deleted: bool = False
    # distillation: the teacher whose soft labels it learned, and the unlabelled chats they
    # were on (its lineage, beside the annotations: an erased chat among them is flagged)
    teacher: int | None = None
    pool_chat_ids: list[int] = Field(default_factory=list, sa_column=_json())


class Promotion(SQLModel, table=True):
    """Audit record of every promotion and rollback: who, when, why, and the gate figures."""

    id: int | None = Field(default=None, primary_key=True)
    version: int = Field(index=True)
    previous: int | None = None
    action: str = Field(max_length=16)  # promote | rollback
    actor: str = Field(max_length=255)  # the operator's name, or the scheduler
    operator_id: int | None = Field(default=None, foreign_key="operator.id")
    reason: str = ""
    forced: bool = False
    gate: dict[str, Any] = Field(default_factory=dict, sa_column=_json())
    at: datetime = Field(default_factory=utcnow)


class CycleRun(SQLModel, table=True):
    """One run of one step of a cycle, with what it did (counts) or why it failed."""

    __table_args__ = (Index("ix_cyclerun_step_started", "step", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    cycle_id: str = Field(index=True, max_length=64)
    step: str = Field(max_length=32)
    trigger: str = Field(default="manual", max_length=32)
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    # running | ok | skipped | failed | died (its worker died) | lost (its lease was taken over)
    status: str = Field(default="running", max_length=16)
    counts: dict[str, Any] = Field(default_factory=dict, sa_column=_json())
    error: str | None = None
    owner: str | None = Field(default=None, max_length=128)  # the lease held: host:pid:token


class Lease(SQLModel, table=True):
    """A named, expiring lock so that two concurrent cycles never run the same step twice."""

    name: str = Field(primary_key=True, max_length=64)
    owner: str = Field(max_length=128)
    host: str = Field(max_length=255)
    pid: int
    acquired_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class SyncCursor(SQLModel, table=True):
    """Where the last incremental pull stopped, per Label Studio project."""

    name: str = Field(primary_key=True, max_length=128)
    value: datetime


class CheckpointIntent(SQLModel, table=True):
    """A retrain's claim on a checkpoint directory, recorded before anything is written.

    Registering the version deletes it in the same transaction, so an intent that outlives
    its run names the only directories this installation may delete as unreferenced. The
    ``token`` is also written into the checkpoint's manifest: a directory is deleted only
    when it carries the token of a dead intent, never because the store does not know it."""

    id: int | None = Field(default=None, primary_key=True)
    number: int = Field(unique=True)
    name: str = Field(max_length=64)
    path: str
    token: str = Field(unique=True, max_length=32)
    owner: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow)


class LoopState(SQLModel, table=True):
    """A named piece of the loop's state that is no table of its own (e.g. automatic
    promotion paused by a manual rollback: who, when, why)."""

    name: str = Field(primary_key=True, max_length=64)
    value: dict[str, Any] = Field(default_factory=dict, sa_column=_json())
    updated_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    """A key the chat platform sends to the service. Only its sha256 is kept: the key itself
    is shown once, at creation. A revoked key stays for the audit; its name may be reused."""

    __table_args__ = (
        Index(
            "uq_apikey_active_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    key_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)  # the key's first characters, to tell keys apart
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    created_by: str | None = Field(default=None, max_length=64)  # operator names, for the audit
    revoked_by: str | None = Field(default=None, max_length=64)


class Operator(SQLModel, table=True):
    """A person (or a job) allowed to act on the loop: promote, roll back, manage keys, erase.
    Identified by a key of its own (only its sha256 is kept); the audit names the operator."""

    __table_args__ = (
        Index(
            "uq_operator_active_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    role: str = Field(max_length=32)
    key_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str | None = Field(default=None, max_length=64)  # None: the first admin
    revoked_at: datetime | None = None
    revoked_by: str | None = Field(default=None, max_length=64)


class Erasure(SQLModel, table=True):
    """An erasure on request: who, when, why and what was removed, never the content. The
    store ids of the erased annotations let `models show` name the versions that learned them."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(max_length=64)
    operator_id: int | None = Field(default=None, foreign_key="operator.id")
    reason: str = ""
    selector: str = Field(max_length=16)  # chat | customer
    chats: int = 0
    annotations: int = 0
    predictions: int = 0
    label_studio_tasks: int = 0
    annotation_ids: list[int] = Field(default_factory=list, sa_column=_json())
    chat_ids: list[int] = Field(default_factory=list, sa_column=_json())


class ErasedSource(SQLModel, table=True):
    """The sha256 of an erased chat's source id: a file or feed that brings the chat again
    is refused that row instead of storing the customer's data anew."""

    source_hash: str = Field(primary_key=True, max_length=64)
    erasure_id: int = Field(foreign_key="erasure.id", index=True)


class ShadowStat(SQLModel, table=True):
    """How a candidate version answered live traffic beside production (shadow scoring):
    counts summed over every service process, per (candidate, production) pair."""

    __table_args__ = (UniqueConstraint("version", "production", name="uq_shadowstat_pair"),)

    id: int | None = Field(default=None, primary_key=True)
    version: int = Field(index=True)
    production: int
    messages: int = 0
    agreed: int = 0  # same label as production
    escalated: int = 0  # turns the candidate would escalate on its own
    production_escalated: int = 0
    updated_at: datetime = Field(default_factory=utcnow)
