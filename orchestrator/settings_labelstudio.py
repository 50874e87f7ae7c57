"""The Label Studio a Settings object points at, derived from its fields: the local server's
directory, executable, URL and credentials (made once and kept private), or a remote one's.
A mixin of :class:`orchestrator.settings.Settings`, kept apart so the settings module holds
the settings themselves."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

__all__ = ["LabelStudioAccess", "write_private"]

REPO_ROOT = Path(__file__).resolve().parent.parent


class LabelStudioAccess:
    """What Settings derives about Label Studio (the fields below are Settings')."""

    if TYPE_CHECKING:  # declared by Settings; annotations here would not be fields
        label_studio_url: SecretStr | None
        label_studio_token: SecretStr | None
        label_studio_password: SecretStr | None
        label_studio_port: int
        label_studio_bin: Path | None

        @property
        def home_dir(self) -> Path: ...

    @property
    def label_studio_dir(self) -> Path:
        return self.home_dir / "labelstudio"

    @property
    def local_label_studio(self) -> bool:
        return self.label_studio_url is None

    @property
    def label_studio_executable(self) -> Path:
        if self.label_studio_bin:
            return self.label_studio_bin.expanduser()
        local = REPO_ROOT / ".venv-labelstudio" / "bin" / "label-studio"
        if local.exists():
            return local
        found = shutil.which("label-studio")
        return Path(found) if found else local

    @cached_property
    def _local_credentials(self) -> dict[str, str]:
        """Token and password of the local server: from settings, else made once and kept in
        ``home/labelstudio/credentials.json`` (the server applies them only at first start)."""
        path = self.label_studio_dir / "credentials.json"
        stored: dict[str, str] = {}
        if path.exists():
            stored = json.loads(path.read_text())
        creds = {
            "token": self.label_studio_token.get_secret_value()
            if self.label_studio_token
            else stored.get("token") or secrets.token_hex(20),
            "password": self.label_studio_password.get_secret_value()
            if self.label_studio_password
            else stored.get("password") or secrets.token_urlsafe(12),
        }
        if creds != stored:
            write_private(path, json.dumps(creds))
        return creds

    @property
    def ls_url(self) -> str:
        if self.label_studio_url:
            return self.label_studio_url.get_secret_value().rstrip("/")
        state = self.label_studio_dir / "sentiloop-server.json"
        if state.exists():
            try:
                return str(json.loads(state.read_text())["url"]).rstrip("/")
            except (ValueError, KeyError):
                pass
        return f"http://127.0.0.1:{self.label_studio_port}"

    @property
    def ls_url_shown(self) -> str:
        """The Label Studio URL for messages: no user or password in it."""
        from labeling import shown_url

        return shown_url(self.ls_url)

    @property
    def ls_token(self) -> str:
        if self.label_studio_url:
            if self.label_studio_token is None:
                from orchestrator.settings import ConfigError

                raise ConfigError(
                    "SENTILOOP_LABEL_STUDIO_TOKEN must be set when SENTILOOP_LABEL_STUDIO_URL is"
                )
            return self.label_studio_token.get_secret_value()
        return self._local_credentials["token"]

    @property
    def ls_password(self) -> str:
        return self._local_credentials["password"]


def write_private(path: Path, content: str) -> None:
    """Write a file that holds secrets: private (0600) from its creation, never readable by
    others even for a moment, and replaced atomically so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
