"""Who may act: operator accounts and roles on a real SQLite store, and the CLI refusing a
role that may not (issue #15, "who may act")."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domain import PERMISSIONS, ROLES
from orchestrator.access import authorize, create_operator, identify
from orchestrator.cli import app
from orchestrator.errors import AccessDenied
from orchestrator.settings import load_settings
from store import Store, StoreError
from tests.conftest import make_context, version_row

pytestmark = pytest.mark.unit


def _operators(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, dict[str, str]]:
    """A store with one operator per role; their keys by role."""
    ctx = make_context(tmp_path, monkeypatch)
    keys = {"admin": create_operator(ctx.settings, ctx.store, "root", "admin")[0]}
    monkeypatch.setenv("SENTILOOP_OPERATOR_KEY", keys["admin"])
    for role in ROLES:
        if role != "admin":
            keys[role] = create_operator(load_settings(), ctx.store, f"a-{role}", role)[0]
    monkeypatch.delenv("SENTILOOP_OPERATOR_KEY")
    return ctx.store, keys


def test_each_role_may_do_what_its_permissions_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, keys = _operators(tmp_path, monkeypatch)
    for role, key in keys.items():
        monkeypatch.setenv("SENTILOOP_OPERATOR_KEY", key)
        settings = load_settings()
        assert identify(settings, store).role == role  # type: ignore[union-attr]
        for action, allowed in PERMISSIONS.items():
            if role in allowed:
                assert authorize(settings, store, action).role == role
            else:
                with pytest.raises(AccessDenied, match=rf"\({role}\) may not do this"):
                    authorize(settings, store, action)


def test_no_key_a_wrong_key_or_no_operator_at_all_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context(tmp_path, monkeypatch)
    with pytest.raises(AccessDenied, match="none exists yet: create the first admin"):
        authorize(ctx.settings, ctx.store, "promote")
    with pytest.raises(AccessDenied, match="the first operator is the admin"):
        create_operator(ctx.settings, ctx.store, "bob", "promoter")
    create_operator(ctx.settings, ctx.store, "root", "admin")
    with pytest.raises(AccessDenied, match="set SENTILOOP_OPERATOR_KEY"):
        authorize(ctx.settings, ctx.store, "promote")
    with pytest.raises(AccessDenied, match="set SENTILOOP_OPERATOR_KEY"):
        create_operator(ctx.settings, ctx.store, "eve", "admin")  # no second bootstrap
    monkeypatch.setenv("SENTILOOP_OPERATOR_KEY", "slo_not-a-key-of-this-store")
    with pytest.raises(AccessDenied, match="not the key of an active operator"):
        authorize(load_settings(), ctx.store, "promote")


def test_a_revoked_operator_is_refused_and_the_last_admin_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, keys = _operators(tmp_path, monkeypatch)
    assert store.revoke_operator("a-promoter", by="root")
    monkeypatch.setenv("SENTILOOP_OPERATOR_KEY", keys["promoter"])
    with pytest.raises(AccessDenied, match="not the key of an active operator"):
        authorize(load_settings(), store, "promote")
    with pytest.raises(StoreError, match="last admin"):
        store.revoke_operator("root", by="root")
    assert not store.revoke_operator("nobody", by="root")
    (row,) = [o for o in store.operators() if o.name == "a-promoter"]
    assert row.revoked_by == "root" and row.revoked_at is not None


def test_only_hashes_of_operator_keys_are_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, keys = _operators(tmp_path, monkeypatch)
    raw = (tmp_path / "sentiloop.db").read_bytes()
    assert all(key.encode() not in raw for key in keys.values())
    with sqlite3.connect(tmp_path / "sentiloop.db") as db:
        assert db.execute("SELECT count(*) FROM operator").fetchone() == (len(ROLES),)


def test_the_cli_refuses_a_viewer_and_audits_the_promoter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, keys = _operators(tmp_path, monkeypatch)
    for n in (1, 2):
        store.add_version(version_row(n))
        store.promote(n, actor="setup")
    runner = CliRunner()
    monkeypatch.setenv("SENTILOOP_OPERATOR_KEY", keys["viewer"])
    for args in (["models", "rollback"], ["models", "promote", "1"], ["keys", "create", "x"]):
        refused = runner.invoke(app, args)
        assert refused.exit_code == 2, refused.output
        assert "a-viewer (viewer) may not do this" in " ".join(refused.output.split())
    assert store.production().number == 2  # type: ignore[union-attr]
    monkeypatch.setenv("SENTILOOP_OPERATOR_KEY", keys["promoter"])
    done = runner.invoke(app, ["models", "rollback", "--reason", "v2 misroutes"])
    assert done.exit_code == 0, done.output
    record = store.promotions()[0]
    promoter = next(o for o in store.operators() if o.role == "promoter")
    assert (record.action, record.actor, record.operator_id) == (
        "rollback",
        "a-promoter",
        promoter.id,
    )
    shown = runner.invoke(app, ["models", "show", "1"])
    assert "by a-promoter" in shown.output


def test_an_annotator_admin_looks_up_a_pseudonym_a_viewer_may_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privacy import pseudonym

    store, keys = _operators(tmp_path, monkeypatch)
    runner = CliRunner()
    monkeypatch.setenv("SENTILOOP_OPERATOR_KEY", keys["annotator-admin"])
    before = runner.invoke(app, ["annotators", "id", "ann@example.com"])
    assert before.exit_code == 1 and "no annotation has been pulled yet" in before.output
    key = store.pseudonym_key(None)
    found = runner.invoke(app, ["annotators", "id", "Ann@Example.com"])
    assert found.exit_code == 0 and found.output.strip() == pseudonym(key, "ann@example.com")
    monkeypatch.setenv("SENTILOOP_OPERATOR_KEY", keys["viewer"])
    assert runner.invoke(app, ["annotators", "id", "ann@example.com"]).exit_code == 2
