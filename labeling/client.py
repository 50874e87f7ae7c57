"""Thin, typed wrapper around the Label Studio SDK for the sentiloop loop.

It speaks only sentiloop's vocabulary (chats, sentiment labels, model predictions), maps
transport/auth failures to our own exceptions with actionable messages, and pulls
annotations incrementally with a server-side filter so each poll stays cheap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, BinaryIO, cast

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from labeling.config import LABEL_CONFIG
from labeling.errors import LabelingError, LabelStudioAuthError, LabelStudioUnavailable
from labeling.payloads import (
    IMPORT_CHUNK_SIZE,
    AnnotationOut,
    TaskIn,
    _annotator,
    _as_utc,
    _choices_result,
    _format_filter_datetime,
    _label_from_result,
    _seconds,
    _task_payload,
    shown_url,
)

__all__ = ["LabelStudioClient"]

logger = logging.getLogger(__name__)

_PAGE_SIZE = 500


class LabelStudioClient:
    """Client for one Label Studio server; use as a context manager or call ``close()``."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 30,
        max_retries: int = 2,
        where: str = "SENTILOOP_LABEL_STUDIO_URL",
    ) -> None:
        """``max_retries`` covers connection errors and 5xx/429 with backoff (SDK default);
        ``where`` tells a user whose server cannot be reached where its URL came from."""
        self.url = url.rstrip("/")
        self.shown = shown_url(self.url)  # for messages: no user or password in them
        self._where = where
        self._http = httpx.Client(timeout=timeout)
        self._ls = LabelStudio(  # type: ignore[no-untyped-call]
            base_url=self.url,
            api_key=token,
            httpx_client=self._http,
            max_retries=max_retries,
        )

    def __repr__(self) -> str:  # never show the token
        return f"LabelStudioClient(url={self.shown!r})"

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate SDK/httpx failures into LabelingError subclasses with clear messages."""
        try:
            yield
        except httpx.TransportError as exc:  # ConnectError, timeouts, protocol errors
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, httpx.ConnectError) and "refused" in reason.lower():
                reason = "connection refused"
            elif isinstance(exc, httpx.TimeoutException):
                reason = f"timed out ({type(exc).__name__})"
            raise LabelStudioUnavailable(self.shown, reason, self._where) from exc
        except ApiError as exc:
            status = exc.status_code or 0
            if status in (401, 403):
                raise LabelStudioAuthError(self.shown, status) from exc
            body = str(exc.body)[:300]
            raise LabelingError(
                f"Label Studio at {self.shown} failed to {action}: HTTP {status}: {body}"
            ) from exc

    def check(self) -> None:
        """Fail fast with LabelStudioUnavailable / LabelStudioAuthError before real work."""
        with self._errors("authenticate"):
            self._ls.users.whoami()

    def ensure_project(self, title: str, description: str = "", instructions: str = "") -> int:
        """Return the id of the project with exactly ``title``, creating it if missing.
        ``instructions`` (HTML) are the labelling guidelines annotators see before they
        start and from the labelling screen; an existing project gets them when they
        changed."""
        found = self._find_project(title)
        if found is not None:
            if instructions and (found.expert_instruction or "") != instructions:
                with self._errors("update the project's instructions"):
                    self._ls.projects.update(
                        id=found.id, expert_instruction=instructions, show_instruction=True
                    )
            return int(found.id)
        with self._errors("create project"):
            created = self._ls.projects.create(
                title=title,
                description=description,
                label_config=LABEL_CONFIG,
                expert_instruction=instructions,
                show_instruction=bool(instructions),
            )
        if created.id is None:
            raise LabelingError(f"Label Studio at {self.shown} created a project without an id")
        logger.info("Created Label Studio project %r (id %d)", title, created.id)
        return int(created.id)

    def instructions(self, project_id: int) -> str:
        """The labelling guidelines the project shows ("" when none)."""
        with self._errors("get project"):
            project = self._ls.projects.get(id=project_id)
        return str(project.expert_instruction or "") if project.show_instruction else ""

    def find_project(self, title: str) -> int | None:
        """The id of the project with exactly ``title``, or None (never creates one)."""
        found = self._find_project(title)
        return None if found is None else int(found.id)

    def _find_project(self, title: str) -> Any:
        with self._errors("list projects"):
            projects: Iterator[Any] = iter(self._ls.projects.list(title=title, page_size=100))
            for project in projects:
                if project.title == title and project.id is not None:
                    return project
        return None

    def export_project(self, project_id: int, out: BinaryIO, *, timeout: float = 600) -> None:
        """Write Label Studio's JSON export of every task of the project, with its
        annotations and predictions, to ``out`` (streamed: a large project is not held in
        memory). The caller chooses the file and its permissions."""
        with self._errors("export the project"):
            for chunk in self._ls.projects.exports.download_sync(
                project_id,
                export_type="JSON",
                download_all_tasks=True,
                request_options={"timeout_in_seconds": int(timeout), "chunk_size": 1 << 20},
            ):
                out.write(chunk)

    def import_tasks(self, project_id: int, tasks: Sequence[TaskIn]) -> list[int]:
        """Create one task per chat (with the prediction as pre-annotation).

        Returns task ids in input order. Label Studio does not de-duplicate: importing a
        chat twice creates two tasks, so callers reconcile with ``tasks_by_chat_id``.
        """
        task_ids: list[int] = []
        for start in range(0, len(tasks), IMPORT_CHUNK_SIZE):
            chunk = tasks[start : start + IMPORT_CHUNK_SIZE]
            payload = [_task_payload(task) for task in chunk]
            with self._errors("import tasks"):
                response = self._ls.projects.import_tasks(
                    id=project_id, request=cast(Any, payload), return_task_ids=True
                )
            # task_ids is an extra field of the response model (return_task_ids=True)
            ids = list(getattr(response, "task_ids", None) or [])
            if len(ids) != len(chunk):
                raise LabelingError(
                    f"Label Studio at {self.shown} returned {len(ids)} task ids "
                    f"for {len(chunk)} imported tasks"
                )
            task_ids.extend(int(i) for i in ids)
        logger.info("Imported %d tasks into project %d", len(task_ids), project_id)
        return task_ids

    def _iter_tasks(
        self, project_id: int, *, fields: str, query: dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        with self._errors("list tasks"):
            pager: Iterator[Any] = iter(
                self._ls.tasks.list(
                    project=project_id,
                    fields=cast(Any, fields),
                    page_size=_PAGE_SIZE,
                    query=json.dumps(query) if query is not None else None,
                )
            )
            for task in pager:
                yield task.model_dump()

    def tasks_by_chat_id(self, project_id: int) -> dict[str, list[int]]:
        """Map every task's ``data.chat_id`` to its task ids (several if imported twice)."""
        mapping: dict[str, list[int]] = {}
        for task in self._iter_tasks(project_id, fields="task_only"):
            chat_id = (task.get("data") or {}).get("chat_id")
            if chat_id is None:
                continue
            mapping.setdefault(str(chat_id), []).append(int(task["id"]))
        for ids in mapping.values():
            ids.sort()
        return mapping

    def annotations_since(self, project_id: int, cursor: datetime | None) -> list[AnnotationOut]:
        """Every annotation on tasks annotated or re-annotated at/after ``cursor``.

        Filters server-side on the task's ``updated_at``, which Label Studio bumps both
        when an annotation is created and when it is updated (``completed_at`` is not
        changed by updates). Returns all annotations of matching tasks, so results may
        overlap with the previous pull; upsert by ``annotation_id``. Use ``next_cursor``
        to advance. ``cursor=None`` returns everything.
        """
        if cursor is None:
            query: dict[str, Any] = {
                "filters": {
                    "conjunction": "or",
                    "items": [
                        {
                            "filter": "filter:tasks:total_annotations",
                            "operator": "greater",
                            "type": "Number",
                            "value": 0,
                        },
                        {
                            "filter": "filter:tasks:cancelled_annotations",
                            "operator": "greater",
                            "type": "Number",
                            "value": 0,
                        },
                    ],
                }
            }
        else:
            query = {
                "filters": {
                    "conjunction": "and",
                    "items": [
                        {
                            "filter": "filter:tasks:updated_at",
                            "operator": "greater_or_equal",
                            "type": "Datetime",
                            "value": _format_filter_datetime(cursor),
                        }
                    ],
                }
            }
        out: list[AnnotationOut] = []
        for task in self._iter_tasks(project_id, fields="all", query=query):
            chat_id = str((task.get("data") or {}).get("chat_id", ""))
            for annotation in task.get("annotations") or []:
                annotation_id = int(annotation["id"])
                cancelled = bool(annotation.get("was_cancelled"))
                out.append(
                    AnnotationOut(
                        annotation_id=annotation_id,
                        task_id=int(task["id"]),
                        chat_id=chat_id,
                        label=None
                        if cancelled
                        else _label_from_result(annotation.get("result"), annotation_id),
                        annotator=_annotator(annotation),
                        created_at=_as_utc(annotation["created_at"]),
                        updated_at=_as_utc(annotation["updated_at"]),
                        cancelled=cancelled,
                        lead_time=_seconds(annotation.get("lead_time")),
                    )
                )
        out.sort(key=lambda a: (a.updated_at, a.annotation_id))
        logger.debug("Pulled %d annotations from project %d since %s", len(out), project_id, cursor)
        return out

    def annotate(
        self,
        task_id: int,
        label: str,
        *,
        lead_time: float | None = None,
        user: int | None = None,
    ) -> int:
        """Annotate a task as the token's user, or on behalf of ``user`` (an id from
        ``ensure_user``): the simulated annotators of the demo, tests and benchmarks."""
        result = _choices_result(label)
        extra: dict[str, Any] = {}
        if lead_time is not None:
            extra["lead_time"] = lead_time
        if user is not None:
            extra["completed_by"] = user
        with self._errors("create annotation"):
            annotation = self._ls.annotations.create(id=task_id, result=result, **extra)
        if annotation.id is None:
            raise LabelingError(f"Label Studio at {self.shown} created an annotation without id")
        return int(annotation.id)

    def ensure_user(self, email: str) -> int:
        """The id of the Label Studio user with this e-mail, created (without a password: it
        cannot log in) when missing; a simulated annotator of the demo, tests, benchmarks."""
        with self._errors("list users"):
            for user in self._ls.users.list():
                if user.email == email and user.id is not None:
                    return int(user.id)
        with self._errors("create a user"):
            created = self._ls.users.create(username=email, email=email)
        if created.id is None:
            raise LabelingError(f"Label Studio at {self.shown} created a user without an id")
        return int(created.id)

    def set_overlap(self, task_id: int, overlap: int) -> None:
        """Ask ``overlap`` annotators for a task (Label Studio's per-task overlap); it goes
        back to the annotators' queue until that many answered. Setting it again is a no-op."""
        if overlap < 1:
            raise ValueError(f"overlap must be at least 1, got {overlap}")
        with self._errors("set a task's overlap"):
            self._ls.tasks.update(id=str(task_id), overlap=overlap, is_labeled=False)

    def skip(self, task_id: int) -> int:
        """Skip a task as an annotator who cannot tell would (a cancelled annotation)."""
        with self._errors("skip a task"):
            annotation = self._ls.annotations.create(id=task_id, result=[], was_cancelled=True)
        if annotation.id is None:
            raise LabelingError(f"Label Studio at {self.shown} created an annotation without id")
        return int(annotation.id)

    def delete_task(self, task_id: int) -> None:
        """Delete a task and its annotations; one already gone is fine (idempotent)."""
        with self._errors("delete a task"):
            try:
                self._ls.tasks.delete(id=str(task_id))
            except ApiError as exc:
                if exc.status_code != 404:
                    raise

    def project_identity(self, project_id: int) -> str:
        """Who this project is, across URL changes: its id and creation time. A Label Studio
        that was reset or replaced has a project of that title created at another moment, and
        its task and annotation ids mean other things."""
        with self._errors("get project"):
            project = self._ls.projects.get(id=project_id)
        created = project.created_at
        stamp = _as_utc(created).isoformat() if created is not None else "unknown"
        return f"project {project_id} created {stamp}"

    def update_annotation(self, annotation_id: int, label: str) -> None:
        """Change an annotation's label (as an annotator correcting themselves would)."""
        result = _choices_result(label)
        with self._errors("update annotation"):
            self._ls.annotations.update(id=annotation_id, result=result)

    def task_count(self, project_id: int) -> int:
        """Number of tasks in the project."""
        with self._errors("get project"):
            project = self._ls.projects.get(id=project_id)
        if project.task_number is not None:
            return int(project.task_number)
        return sum(1 for _ in self._iter_tasks(project_id, fields="task_only"))
