"""What a step needs, built once per process from the settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.settings import Settings
from store import ModelVersion, Store

if TYPE_CHECKING:
    from labeling import LabelStudioClient
    from training import Scorer

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""(stage, done, total): how long work reports that it advances."""


@dataclass
class Context:
    """Per-process resources; the scorer cache keeps a loaded model across cycles."""

    settings: Settings
    store: Store
    _scorers: dict[str, Scorer] = field(default_factory=dict)
    _client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        return cls(settings=settings, store=Store(settings.db_url))

    def labeling(self) -> LabelStudioClient:
        from labeling import LabelStudioClient

        if self._client is None:
            where = (
                "SENTILOOP_LABEL_STUDIO_URL"
                if not self.settings.local_label_studio
                else "the local server, not running? start it with `sentiloop labelstudio up`"
            )
            self._client = LabelStudioClient(
                self.settings.ls_url, self.settings.ls_token, where=where
            )
        client: LabelStudioClient = self._client
        return client

    def verify(self, version: ModelVersion) -> None:
        """Refuse a checkpoint whose bytes differ from what the registry recorded."""
        from training import CheckpointError, verify_checkpoint

        if version.checkpoint_deleted:
            raise CheckpointError(f"v{version.number}'s checkpoint was deleted by retention")
        verify_checkpoint(Path(version.checkpoint_path), version.weights_sha256)

    def base_scorer(self) -> Scorer:
        """The base model's encoder, for sentence embeddings: the cold start's coverage
        and near-duplicate checks (it was trained for similarity, a fine-tuned model's
        embeddings are not). Kept beside the current version's scorer."""
        from training import Scorer

        key = f"base:{self.settings.base_model}"
        if key not in self._scorers:
            self._scorers[key] = Scorer(
                self.settings.base_model,
                device=self.settings.device,
                batch_size=self.settings.score_batch_size,
                max_length=self.settings.max_length,
                precision=self.settings.score_precision,
                encoder_only=True,
            )
        return self._scorers[key]

    def scorer(self, version: ModelVersion) -> Scorer:
        """A scorer for this version, its checkpoint verified against the registry's sha256
        first; the previous scorer is dropped so memory does not grow over cycles."""
        from training import Scorer

        key = f"{version.checkpoint_path}@{version.weights_sha256}"
        if key not in self._scorers:
            self.verify(version)
            for old in [k for k in self._scorers if not k.startswith("base:")]:
                del self._scorers[old]
            self._scorers[key] = Scorer(
                version.checkpoint_path,
                device=self.settings.device,
                batch_size=self.settings.score_batch_size,
                max_length=self.settings.max_length,
                precision=self.settings.score_precision,
            )
        return self._scorers[key]
