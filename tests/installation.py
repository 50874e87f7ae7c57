"""A small installation written without training: chats, versions with checkpoints (fake
weights, real manifests) and cards, for tests of what happens around models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.settings import Settings
from store import Chat, ModelVersion, Store
from training import save_checkpoint


class _Model:
    """Writes the files save_pretrained would (the bytes differ per version)."""

    def __init__(self, weights: bytes) -> None:
        self.weights = weights

    def save_pretrained(self, directory: str) -> None:
        (Path(directory) / "model.safetensors").write_bytes(self.weights)
        (Path(directory) / "config.json").write_text("{}")


class _Tokenizer:
    def save_pretrained(self, directory: str) -> tuple[str, ...]:
        (Path(directory) / "tokenizer.json").write_text("{}")
        return ()


def install(settings: Settings) -> Store:
    """Chats, three versions (v1's files deleted by retention, v3 production), cards and a
    chat file waiting in the inbox."""
    store = Store(settings.db_url)
    store.init()
    with store.session() as s:
        for n in range(25):
            s.add(Chat(source_id=f"c{n}", text=f"chat number {n}"))
        s.commit()
    store.add_version(  # its files were deleted by retention: the row stays
        ModelVersion(
            number=1,
            base_model="b",
            checkpoint_path=str(settings.models_dir / "v0001"),
            weights_sha256="0" * 64,
            data_fingerprint="fp1",
            checkpoint_deleted=True,
        )
    )
    for n in (2, 3):
        model: Any = _Model(f"weights {n}".encode() * 1000)
        tokenizer: Any = _Tokenizer()
        info = save_checkpoint(model, tokenizer, settings.models_dir, f"v{n:04d}", {})
        store.add_version(
            ModelVersion(
                number=n,
                base_model="b",
                checkpoint_path=str(info.path),
                weights_sha256=info.sha256,
                data_fingerprint=f"fp{n}",
            )
        )
        (settings.models_dir / f"v{n:04d}.card.json").write_text(json.dumps({"version": n}))
    store.promote(3, actor="test")
    settings.inbox_dir.mkdir(parents=True)
    (settings.inbox_dir / "waiting.csv").write_text("chat_id,text\nx1,not ingested yet\n")
    return store


def installed_state(store: Store) -> dict[str, Any]:
    production = store.production()
    return {
        "chats": store.counts()["chats"],
        "versions": [(v.number, v.status, v.weights_sha256) for v in store.versions()],
        "production": production.number if production else None,
    }
