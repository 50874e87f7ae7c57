"""Secrets stay secret: URLs with passwords are typed as secrets, the demo does not print the
Label Studio password, and the credentials file is private from its creation (issue #11,
item 6)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from orchestrator.demo import where_to_look
from orchestrator.settings import Settings
from store import Store

pytestmark = pytest.mark.unit

PASSWORD = "hunter2-very-secret"


def test_urls_with_passwords_never_show_in_the_settings_repr(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        database_url=f"postgresql://loop:{PASSWORD}@db.internal/sentiloop",
        broker_url=f"amqp://loop:{PASSWORD}@mq.internal//",
        result_backend=f"redis://:{PASSWORD}@cache.internal/0",
    )
    for shown in (repr(settings), str(settings), str(settings.model_dump())):
        assert PASSWORD not in shown
    assert PASSWORD in settings.db_url and PASSWORD in settings.broker  # for the engines only


def test_the_credentials_file_is_private_from_its_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not written readable and chmod-ed afterwards: with chmod doing nothing it is private."""
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    settings = Settings(home=tmp_path)
    token, password = settings.ls_token, settings.ls_password
    path = settings.label_studio_dir / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings(home=tmp_path).ls_password == password  # kept, not made anew
    assert Settings(home=tmp_path).ls_token == token


def test_the_demo_says_where_the_password_is_but_not_what_it_is(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, label_studio_password=PASSWORD)
    store = Store(settings.db_url)
    store.init()
    text = where_to_look(settings, "http://127.0.0.1:8080", store)
    assert PASSWORD not in text
    assert "credentials.json" in text
    store.dispose()


def test_a_label_studio_url_with_a_password_is_never_shown(tmp_path: Path) -> None:
    import socket

    from labeling import LabelStudioClient, LabelStudioUnavailable

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://annotator:{PASSWORD}@127.0.0.1:{port}"
    settings = Settings(home=tmp_path, label_studio_url=url, label_studio_token="t" * 40)
    assert PASSWORD not in repr(settings) and PASSWORD not in settings.ls_url_shown
    client = LabelStudioClient(settings.ls_url, settings.ls_token, max_retries=0)
    with pytest.raises(LabelStudioUnavailable) as info:
        client.check()
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(client)
    assert f"127.0.0.1:{port}" in str(info.value)
    client.close()
