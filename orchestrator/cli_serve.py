"""`sentiloop serve` (the sentiment and routing service) and `sentiloop keys ...` (its API keys)."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from orchestrator.cli_common import acting, console, err, load_or_exit, open_store, or_exit
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from serving import Service

keys_app = typer.Typer(no_args_is_help=True, help="API keys of the service.")


def build_service(settings: Settings) -> Service:
    """The service on these settings (one place, shared by `serve`, the demo and tests)."""
    from serving import Limits, RoutingPolicy, Service, ServiceOptions, scorer_factory

    options = ServiceOptions(
        limits=Limits(
            max_messages=settings.serve_max_messages, max_text_chars=settings.serve_max_text_chars
        ),
        policy=RoutingPolicy(
            strong_negative=settings.route_strong_negative,
            low_mean=settings.route_low_mean,
            fall=settings.route_fall,
            window=settings.route_window,
            min_turns=settings.route_min_turns,
        ),
        poll_seconds=settings.serve_poll_seconds,
        retry_seconds=settings.serve_retry_seconds,
        max_batch=settings.serve_max_batch,
        batch_wait_s=settings.serve_batch_wait_ms / 1000,
        shadow_share=settings.serve_shadow_share,
        feed_pool=settings.serve_feed_pool,
        history_turns=settings.serve_history_turns,
        history_ttl_seconds=settings.serve_history_ttl_seconds,
        max_conversations=settings.serve_max_conversations,
        mask=settings.masker.mask if settings.pii == "mask-at-ingest" else None,
    )
    make_scorer = scorer_factory(
        device=settings.device,
        batch_size=settings.score_batch_size,
        max_length=settings.max_length,
        precision=settings.score_precision,
    )
    return Service(open_store(settings), make_scorer, options)


def serve(
    host: Annotated[str | None, typer.Option(help="Default SENTILOOP_SERVE_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default SENTILOOP_SERVE_PORT.")] = None,
) -> None:
    """Serve sentiment and escalation routing from the production version over HTTP; follows
    every promotion and rollback without a restart."""
    # torch's OpenMP threads spin while they wait for each other; next to a worker or a load
    # balancer on the same cores that made one message take 505 ms instead of 9 ms (measured,
    # docs/benchmarks/serving.md). Passive waiting costs nothing measurable when alone.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import uvicorn

    from serving import create_app

    settings = load_or_exit()
    store = open_store(settings)
    or_exit(store.init)
    store.dispose()
    access = logging.getLogger("sentiloop.access")
    access.propagate = False
    if settings.serve_access_log:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
    logging.getLogger("serving").setLevel(logging.INFO)
    service = build_service(settings)
    from orchestrator.tasks import ring_for_labels

    app = create_app(
        service,
        max_body_bytes=settings.serve_max_body_bytes,
        on_annotation=ring_for_labels(service.store),
        ml_backend_auth=settings.ml_backend_auth,
        predict_max_body_bytes=settings.ml_backend_max_body_bytes,
    )
    bind_host = host or settings.serve_host
    bind_port = settings.serve_port if port is None else port
    err.print(f"sentiloop serve: http://{bind_host}:{bind_port} (store {store.safe_url})")
    config = uvicorn.Config(
        app,
        host=bind_host,
        port=bind_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=int(settings.serve_graceful_seconds),
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise typer.Exit(1)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who uses it, e.g. chat-platform.")],
) -> None:
    """Create a key; it is printed once (only its hash is stored)."""
    from serving import new_key

    if not name.strip() or len(name) > 64 or not name.isprintable():
        err.print("[red]error:[/] a key name is 1 to 64 printable characters")
        raise typer.Exit(2)
    settings = load_or_exit()
    store = open_store(settings)
    or_exit(store.init)
    admin = acting(settings, store, "keys")
    key, key_hash, prefix = new_key()
    or_exit(lambda: store.add_api_key(name, key_hash, prefix, by=admin.name))
    err.print(f"API key {name!r} created; it is shown once, keep it secret:")
    print(key)


@keys_app.command("list")
def keys_list() -> None:
    """Every key: name, first characters, created, revoked."""
    store = open_store(load_or_exit())
    table = Table("name", "key starts", "created", "by", "revoked", "by")
    for k in or_exit(store.api_keys):
        table.add_row(
            k.name,
            k.prefix + "…",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            k.created_by or "-",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-",
            k.revoked_by or "-",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: str) -> None:
    """Revoke the active key of that name (services stop accepting it within a poll)."""
    settings = load_or_exit()
    store = open_store(settings)
    admin = acting(settings, store, "keys")
    if not or_exit(lambda: store.revoke_api_key(name, by=admin.name)):
        err.print(f"[red]error:[/] no active API key named {name!r}")
        raise typer.Exit(2)
    console.print(f"revoked {name!r}")
