"""Connecting sentiloop's ML backend to a Label Studio project, and asking Label Studio for
its predictions. The backend itself is served by ``sentiloop serve`` (``serving``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from label_studio_sdk.core.api_error import ApiError

from labeling.client import LabelStudioClient
from labeling.errors import LabelingError

__all__ = ["BACKEND_TITLE", "BackendLink", "connect_ml_backend", "retrieve_predictions"]

logger = logging.getLogger(__name__)

#: The backend's title in Label Studio; also the project's ``model_version`` setting, which
#: tells Label Studio to ask this backend when a task without a prediction is opened.
BACKEND_TITLE = "sentiloop"


@dataclass(frozen=True)
class BackendLink:
    backend_id: int
    created: bool
    state: str
    model_version: str | None


def connect_ml_backend(
    client: LabelStudioClient,
    project_id: int,
    url: str,
    *,
    auth: tuple[str, str] | None = None,
    title: str = BACKEND_TITLE,
) -> BackendLink:
    """Register the backend at ``url`` on the project (or update the one already there):
    Label Studio validates it by calling its ``/health`` and ``/setup`` first, and adds a
    project webhook to ``{url}/webhook``. Then the project asks it for pre-annotations."""
    ls = client._ls
    credentials: dict[str, Any] = (
        {"auth_method": "BASIC_AUTH", "basic_auth_user": auth[0], "basic_auth_pass": auth[1]}
        if auth is not None
        else {"auth_method": "NONE"}
    )
    with client._errors("list the project's ML backends"):
        existing = [
            b
            for b in ls.ml.list(project=project_id)
            if (b.url or "").rstrip("/") == url.rstrip("/")
        ]
    action = "connect the ML backend (Label Studio calls its /health and /setup)"
    with client._errors(action), _local_addresses_refused(client):
        if existing:
            backend = ls.ml.update(  # its validation needs the project, even unchanged
                int(existing[0].id or 0),
                project=project_id,
                url=url,
                title=title,
                auto_update=True,
                **credentials,
            )
        else:
            backend = ls.ml.create(
                project=project_id,
                url=url,
                title=title,
                is_interactive=False,
                auto_update=True,
                **credentials,
            )
    if backend.id is None:
        raise LabelingError(f"Label Studio at {client.shown} made an ML backend without an id")
    with client._errors("let the project ask the ML backend"):
        ls.projects.update(
            id=project_id,
            show_collab_predictions=True,
            evaluate_predictions_automatically=True,
            model_version=title,
        )
    state = str(getattr(backend, "state", "") or "")
    logger.info("ML backend %s on project %d: %s", title, project_id, state)
    return BackendLink(
        int(backend.id), not existing, state, getattr(backend, "model_version", None)
    )


@contextmanager
def _local_addresses_refused(client: LabelStudioClient) -> Iterator[None]:
    """Label Studio refuses ML backends on private or loopback addresses (SSRF protection)
    with a 403, which would otherwise read as a rejected token."""
    try:
        yield
    except ApiError as exc:
        detail = str(exc.body)
        if exc.status_code == 403 and "reserved network address" in detail:
            raise LabelingError(
                f"Label Studio at {client.shown} refuses ML backends on local or private "
                "addresses; start it with ML_BLOCK_LOCAL_IP=false (the local Label Studio "
                "sentiloop starts has it) or give a public --backend-url"
            ) from exc
        raise


def retrieve_predictions(client: LabelStudioClient, project_id: int, task_ids: list[int]) -> None:
    """Label Studio's "Retrieve predictions" action on these tasks: it asks the backend for
    every task whose predictions lack the backend's current model version."""
    from label_studio_sdk.actions.types import PrepareParamsRequestRequestSelectedItemsIncluded

    with client._errors("retrieve predictions"):
        client._ls.actions.create(
            id="retrieve_tasks_predictions",
            project=project_id,
            selected_items=PrepareParamsRequestRequestSelectedItemsIncluded(
                all_=False, included=task_ids
            ),
            request_options={"timeout_in_seconds": 120},
        )
