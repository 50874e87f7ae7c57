"""What a step needs, built once per process from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.settings import Settings
from store import Store

if TYPE_CHECKING:
    from labeling import LabelStudioClient
    from training import Scorer

logger = logging.getLogger(__name__)


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
            self._client = LabelStudioClient(self.settings.ls_url, self.settings.ls_token)
        client: LabelStudioClient = self._client
        return client

    def scorer(self, checkpoint: str) -> Scorer:
        """A scorer for this checkpoint; the previous one is dropped so memory does not grow."""
        from training import Scorer

        if checkpoint not in self._scorers:
            self._scorers.clear()
            self._scorers[checkpoint] = Scorer(
                checkpoint,
                device=self.settings.device,
                batch_size=self.settings.score_batch_size,
                max_length=self.settings.max_length,
            )
        return self._scorers[checkpoint]
