"""What every CLI module shares: the consoles, settings and store, and typed errors shown
as one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from domain import SentiloopError
from orchestrator.settings import ConfigError, Settings, load_settings

console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def load_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


def or_exit(fn: Callable[[], T]) -> T:
    """Turn our typed errors into a one-line message and exit code 2."""
    try:
        return fn()
    except SentiloopError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


def open_store(settings: Settings) -> Any:
    from store import Store

    return Store(settings.db_url)


def acting(settings: Settings, store: Any, action: str) -> Any:
    """The operator doing ``action`` (SENTILOOP_OPERATOR_KEY), or exit saying who may."""
    from orchestrator.access import authorize

    return or_exit(lambda: authorize(settings, store, action))


def fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
