"""`sentiloop operators ...` (who may act) and `sentiloop erase` (erasure on request)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from domain import ROLES
from orchestrator.cli_common import acting, console, err, load_or_exit, open_store, or_exit

operators_app = typer.Typer(no_args_is_help=True, help="Operator accounts and their roles.")


@operators_app.command("create")
def operators_create(
    name: Annotated[str, typer.Argument(help="Who, e.g. a person's login.")],
    role: Annotated[str, typer.Option(help=f"One of {', '.join(ROLES)}.")],
) -> None:
    """Create an operator; the key is printed once (only its hash is kept). The first
    operator of a store is its admin and needs no key; later ones need an admin's."""
    from orchestrator.access import create_operator

    settings = load_or_exit()
    store = open_store(settings)
    or_exit(store.init)
    key, operator = or_exit(lambda: create_operator(settings, store, name, role))
    err.print(
        f"operator {escape(operator.name)!r} ({operator.role}) created; the key is shown once: "
        "keep it secret, use it as SENTILOOP_OPERATOR_KEY"
    )
    print(key)


@operators_app.command("list")
def operators_list() -> None:
    """Every operator: name, role, key's first characters, who created and revoked it."""
    store = open_store(load_or_exit())
    table = Table("name", "role", "key starts", "created", "by", "revoked", "by")
    for o in or_exit(store.operators):
        table.add_row(
            o.name,
            o.role,
            o.prefix + "…",
            f"{o.created_at:%Y-%m-%d %H:%M}",
            o.created_by or "-",
            f"{o.revoked_at:%Y-%m-%d %H:%M}" if o.revoked_at else "-",
            o.revoked_by or "-",
        )
    console.print(table)


@operators_app.command("revoke")
def operators_revoke(name: str) -> None:
    """Revoke an operator's key (an admin's job; the last admin stays)."""
    settings = load_or_exit()
    store = open_store(settings)
    admin = acting(settings, store, "operators")
    if not or_exit(lambda: store.revoke_operator(name, by=admin.name)):
        err.print(f"[red]error:[/] no active operator named {escape(name)!r}")
        raise typer.Exit(2)
    console.print(f"revoked {name!r}", markup=False)


@operators_app.command("whoami")
def operators_whoami() -> None:
    """The operator SENTILOOP_OPERATOR_KEY belongs to, and the role."""
    from orchestrator.access import identify

    settings = load_or_exit()
    operator = or_exit(lambda: identify(settings, open_store(settings)))
    if operator is None:
        err.print("no operator: SENTILOOP_OPERATOR_KEY is not set")
        raise typer.Exit(1)
    console.print(f"{operator.name} ({operator.role})", markup=False)


def erase(
    chat: Annotated[
        list[str] | None, typer.Option(help="A chat's id in the source system (repeatable).")
    ] = None,
    customer: Annotated[
        str | None, typer.Option(help="Every chat of this customer (SENTILOOP_CUSTOMER_FIELD).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit (e.g. the request's id).")] = "",
    wait: Annotated[float, typer.Option(help="Seconds to wait for a running push or pull.")] = 600,
) -> None:
    """Erase chats on request: from Label Studio, the store and every later training set;
    audited (who, when, how many, never what). Needs an admin's key."""
    from orchestrator.context import Context
    from orchestrator.erasure import erase as run_erase

    ctx = Context.from_settings(load_or_exit())
    admin = acting(ctx.settings, ctx.store, "erase")
    report = or_exit(
        lambda: run_erase(
            ctx, by=admin, chats=chat or (), customer=customer, reason=reason, wait_s=wait
        )
    )
    e = report.erasure
    console.print(
        f"erasure #{e.id}: {e.chats} chats, {e.annotations} annotations, {e.predictions} "
        f"predictions and {e.label_studio_tasks} Label Studio tasks erased",
        markup=False,
    )
    if report.tasks_elsewhere:
        err.print(
            f"[yellow]note:[/] {report.tasks_elsewhere} of their tasks were made in another "
            "Label Studio than the configured one: erase them there too"
        )
    if report.versions:
        names = ", ".join(f"v{n}" for n in report.versions)
        console.print(
            f"model versions that learned from erased chats: {names}; `sentiloop cycle` "
            "retrains from the base model without them (then promote the new version)",
            markup=False,
        )
