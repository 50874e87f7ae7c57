"""Promotion and rollback through the gate, with an audit trail: compare-and-swap on the
version the gate compared against, rollback down the production history, automatic promotion
paused by a manual rollback. A person's promotion or rollback names the operator (see
access); the scheduler's names the scheduler."""

from __future__ import annotations

import logging
import socket
from typing import Any

from orchestrator.context import Context
from orchestrator.errors import StepError
from orchestrator.evaluation import gate
from store import (
    ModelVersion,
    Operator,
    Promotion,
    PromotionConflict,
    StoreError,
)
from store.models import TEACHER

logger = logging.getLogger(__name__)


# -- promotion and rollback ---------------------------------------------------------------


def promote(
    ctx: Context, number: int, *, by: Operator, force: bool = False, reason: str = ""
) -> tuple[Promotion | None, dict[str, Any]]:
    """Promote through the gate; ``force`` overrides a failed gate but needs a reason. The
    promotion happens only if production is still the version the gate compared against."""
    store = ctx.store
    candidate = store.version(number)
    if candidate is None:
        raise StepError(f"no model version {number}")
    if candidate.status == TEACHER:
        raise StepError(
            f"v{number} is a distillation teacher: it labels the pool for the model it "
            "teaches and is never served; promote its student"
        )
    production = store.production()
    if production is not None and production.number == number:
        raise StepError(f"v{number} is already production")
    result = gate(ctx, candidate, production)
    if not result["passed"] and not force:
        return None, result
    if force and not reason.strip():
        raise StepError("a forced promotion needs --reason")
    try:
        record = store.promote(
            number,
            actor=by.name,
            operator_id=by.id,
            reason=reason or ("gate passed" if result["passed"] else ""),
            action="promote",
            gate=result,
            forced=force and not result["passed"],
            expected=production.number if production else None,
        )
    except PromotionConflict as exc:
        raise StepError(f"{exc}; production changed while the gate ran: try again") from exc
    return record, result


def rollback(ctx: Context, *, by: Operator, reason: str = "") -> Promotion:
    """Make the version below the current one in the production history production again,
    and pause automatic promotion until someone resumes it (the scheduler must not promote
    over a person's decision)."""
    try:
        return ctx.store.rollback(
            actor=by.name, operator_id=by.id, reason=reason or "rollback", pause=True
        )
    except PromotionConflict as exc:
        raise StepError(f"{exc}: production changed meanwhile, try again") from exc
    except StoreError as exc:
        raise StepError(str(exc)) from exc


def auto_promote(
    ctx: Context, version: ModelVersion, production: ModelVersion | None, result: dict[str, Any]
) -> tuple[bool, str]:
    """The scheduler's promotion after a passed gate: not while paused by a manual rollback,
    and only over the production version the gate compared against. Returns (promoted, why)."""
    store = ctx.store
    if not result["passed"]:
        return False, "gate failed"
    if ctx.settings.promote != "auto":
        return False, "SENTILOOP_PROMOTE=manual"
    paused = store.auto_promotion_paused()
    if paused:
        return False, (
            f"automatic promotion paused by {paused.get('by')} ({paused.get('reason')}): "
            "`sentiloop models resume`"
        )
    try:
        store.promote(
            version.number,
            actor=f"scheduler@{socket.gethostname()}",
            reason="gate passed (auto)",
            action="promote",
            gate=result,
            expected=production.number if production else None,
        )
    except PromotionConflict as exc:
        return False, str(exc)
    return True, "gate passed"
