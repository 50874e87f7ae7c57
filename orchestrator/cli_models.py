"""`sentiloop models ...`: list, show, diff, promote, roll back and resume automatic
promotion."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from domain import LABELS
from orchestrator.cli_common import acting, console, err, fmt, load_or_exit, open_store, or_exit

models_app = typer.Typer(no_args_is_help=True, help="Model versions.")


@models_app.command("list")
def models_list() -> None:
    """Every model version with its status and metrics."""
    from orchestrator.context import Context
    from orchestrator.erasure import versions_with_erased

    ctx = Context.from_settings(load_or_exit())
    erased = or_exit(lambda: versions_with_erased(ctx))
    table = Table(
        "version", "status", "mode", "parent", "labels", "macro-F1", "accuracy", "created"
    )
    for v in or_exit(ctx.store.versions):
        table.add_row(
            f"v{v.number}",
            v.status
            + (" (files deleted)" if v.checkpoint_deleted else "")
            + (" (learned erased chats)" if v.number in erased else ""),
            v.mode + _learned_from(v),
            f"v{v.parent}" if v.parent else "-",
            str(v.n_train),
            fmt(v.metrics.get("macro_f1")),
            fmt(v.metrics.get("accuracy")),
            f"{v.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@models_app.command("promote")
def models_promote(
    number: int,
    force: Annotated[bool, typer.Option(help="Promote even if the gate fails.")] = False,
    reason: Annotated[str, typer.Option(help="Why (required with --force).")] = "",
) -> None:
    """Make version N production if it passes the gate against the current production."""
    from orchestrator.context import Context
    from orchestrator.registry import promote

    ctx = Context.from_settings(load_or_exit())
    who = acting(ctx.settings, ctx.store, "promote")
    record, gate = or_exit(lambda: promote(ctx, number, by=who, force=force, reason=reason))
    if record is None:
        err.print(
            f"[red]refused:[/] v{number} fails the gate: {gate['reason']} (use --force --reason)"
        )
        raise typer.Exit(1)
    prev = f" (was v{record.previous})" if record.previous else ""
    console.print(f"v{number} is production{prev}; gate: {gate['reason']}")


@models_app.command("rollback")
def models_rollback(
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
) -> None:
    """Make the previous production version production again (each rollback goes one
    further back); pauses automatic promotion until `models resume`."""
    from orchestrator.context import Context
    from orchestrator.registry import rollback

    ctx = Context.from_settings(load_or_exit())
    who = acting(ctx.settings, ctx.store, "promote")
    record = or_exit(lambda: rollback(ctx, by=who, reason=reason))
    console.print(
        f"rolled back: v{record.version} is production (was v{record.previous}); automatic "
        "promotion is paused until `sentiloop models resume`"
    )


@models_app.command("resume")
def models_resume() -> None:
    """Let the scheduler promote again after a manual rollback paused it."""
    settings = load_or_exit()
    store = open_store(settings)
    acting(settings, store, "promote")
    paused = or_exit(store.auto_promotion_paused)
    if not or_exit(store.resume_auto_promotion):
        console.print("automatic promotion was not paused")
        return
    console.print(
        f"automatic promotion resumed (paused by {paused.get('by') if paused else '?'}: "
        f"{paused.get('reason') if paused else '?'})",
        markup=False,
    )


@models_app.command("show")
def models_show(number: int) -> None:
    """Lineage, metrics, calibration and the gate result against production."""
    from orchestrator.context import Context
    from orchestrator.registry import card_data, gate

    ctx = Context.from_settings(load_or_exit())
    version = or_exit(lambda: ctx.store.version(number))
    if version is None:
        err.print(f"[red]error:[/] no model version {number}")
        raise typer.Exit(2)
    card = card_data(ctx, version)
    labels = _lineage_labels(ctx, version.annotation_ids)
    table = Table(title=f"model v{number}", show_header=False)
    table.add_row("status", version.status)
    table.add_row("mode", f"{version.mode} ({version.train_config.get('mode_reason', '-')})")
    table.add_row("parent", f"v{version.parent}" if version.parent else "-")
    distilled = version.train_config.get("distillation")
    if version.teacher is not None and distilled and distilled.get("self_training"):
        table.add_row(
            "self-training",
            f"{distilled.get('soft_labels')} unlabelled chats as v{version.teacher} read them "
            f"(weight {distilled.get('soft_weight')} of a human label): per class "
            f"{distilled.get('pseudo_labels')}, surest first down to "
            f"{distilled.get('pseudo_thresholds')}",
        )
    elif version.teacher is not None and distilled:
        table.add_row(
            "teacher",
            f"v{version.teacher}: {distilled.get('soft_labels')} unlabelled chats learned from "
            f"its soft labels (weight {distilled.get('soft_weight')} of a human label)",
        )
    table.add_row("base model", version.base_model)
    # versions from before masking existed learned the original text
    learned = version.train_config.get("pii", "mask-for-annotators")
    table.add_row(
        "text learned",
        "masked at ingest" if learned == "mask-at-ingest" else "original (masked for people)",
    )
    table.add_row("created", f"{version.created_at:%Y-%m-%d %H:%M:%S}")
    table.add_row(
        "training", f"{version.train_seconds:.1f} s, seed {version.train_config.get('seed')}"
    )
    table.add_row(
        "lineage",
        f"{card['trained_on_annotations']} annotations in this run "
        f"({', '.join(f'{k} {v}' for k, v in sorted(labels.items()))}); "
        f"{card['lineage_annotations']} in its whole lineage",
    )
    erased = or_exit(lambda: ctx.store.erased_learned(number))
    if erased:
        table.add_row(
            "ERASED DATA",
            f"learned {sum(erased.values())} labels or chats erased since (erasure "
            + ", ".join(f"#{e}" for e in sorted(erased))
            + "): retrain without them with `sentiloop cycle`",
        )
    table.add_row(
        "checkpoint", version.checkpoint_path + (" (deleted)" if version.checkpoint_deleted else "")
    )
    table.add_row("weights sha256", version.weights_sha256)
    m = version.metrics
    table.add_row(
        f"metrics ({m.get('eval_set', '-')})",
        f"macro-F1 {fmt(m.get('macro_f1'))}, accuracy {fmt(m.get('accuracy'))}",
    )
    for label, row in (m.get("per_class") or {}).items():
        table.add_row(
            f"  {label}",
            f"F1 {fmt(row['f1'])} P {fmt(row['precision'])} R {fmt(row['recall'])} "
            f"n {row['support']}",
        )
    table.add_row(
        "calibration",
        f"T {version.temperature:.3f}, ECE {fmt(m.get('ece_before'))} -> {fmt(m.get('ece'))}",
    )
    if "test" in m:
        table.add_row(
            "test",
            f"macro-F1 {fmt(m['test'].get('macro_f1'))}, accuracy {fmt(m['test'].get('accuracy'))}",
        )
    if m.get("confusion_matrix"):
        table.add_row(
            "confusion (rows true)",
            " | ".join(" ".join(f"{c:4d}" for c in row) for row in m["confusion_matrix"]),
        )
    table.add_row("gate at registration", str(version.gate.get("reason", "-")))
    production = ctx.store.production()
    if production is not None and production.number != number:
        now = or_exit(lambda: gate(ctx, version, production, persist=False))
        table.add_row(
            f"gate vs production v{production.number}",
            ("PASS " if now["passed"] else "FAIL ") + now["reason"],
        )
    for stat in or_exit(lambda: ctx.store.shadow_stats(number)):
        n = max(stat.messages, 1)
        table.add_row(
            f"shadow vs v{stat.production}",
            f"{stat.messages:,} live messages: agrees {stat.agreed / n:.1%}; strongly negative "
            f"{stat.escalated / n:.1%} (production {stat.production_escalated / n:.1%})",
        )
    for rec in ctx.store.promotions(limit=200):
        if rec.version == number:
            table.add_row(
                f"{rec.action}",
                f"{rec.at:%Y-%m-%d %H:%M:%S} by {rec.actor}"
                f"{' (forced)' if rec.forced else ''}: {rec.reason}",
            )
    console.print(table)


def _lineage_labels(ctx: Any, annotation_ids: list[int]) -> dict[str, int]:
    wanted = set(annotation_ids)
    counts: dict[str, int] = {}
    for e in ctx.store.training_examples():
        if e.annotation_id in wanted:
            counts[e.label] = counts.get(e.label, 0) + 1
    return counts


@models_app.command("diff")
def models_diff(a: int, b: int) -> None:
    """Two versions side by side: metrics, training config and the labels behind them."""
    from orchestrator.context import Context

    ctx = Context.from_settings(load_or_exit())
    va, vb = ctx.store.version(a), ctx.store.version(b)
    if va is None or vb is None:
        err.print(f"[red]error:[/] no model version {a if va is None else b}")
        raise typer.Exit(2)
    table = Table("", f"v{a}", f"v{b}", "b - a", title=f"v{a} vs v{b}")
    ma, mb = va.metrics, vb.metrics

    def row(name: str, x: Any, y: Any) -> None:
        delta = (
            f"{y - x:+.3f}" if isinstance(x, (int, float)) and isinstance(y, (int, float)) else ""
        )
        table.add_row(
            name,
            fmt(x) if isinstance(x, float) else str(x),
            fmt(y) if isinstance(y, float) else str(y),
            delta,
        )

    row("status", va.status, vb.status)
    row("mode", va.mode, vb.mode)
    row("macro-F1", ma.get("macro_f1"), mb.get("macro_f1"))
    row("accuracy", ma.get("accuracy"), mb.get("accuracy"))
    for label in LABELS:
        row(f"F1 {label}", _f1(ma, label), _f1(mb, label))
    row("ECE", ma.get("ece"), mb.get("ece"))
    row("temperature", va.temperature, vb.temperature)
    row("train seconds", va.train_seconds, vb.train_seconds)
    for key in sorted(set(va.train_config) | set(vb.train_config)):
        x, y = va.train_config.get(key), vb.train_config.get(key)
        if x != y:
            row(f"config {key}", x, y)
    la, lb = set(ctx.store.lineage(a)), set(ctx.store.lineage(b))
    row("lineage annotations", len(la), len(lb))
    table.add_row(
        "only in one lineage", f"{len(la - lb)}", f"{len(lb - la)}", f"common {len(la & lb)}"
    )
    if ma.get("eval_fingerprint") != mb.get("eval_fingerprint"):
        table.caption = "metrics were measured on different evaluation sets"
    console.print(table)


def _f1(metrics: dict[str, Any], label: str) -> Any:
    return (metrics.get("per_class") or {}).get(label, {}).get("f1")


def _learned_from(version: Any) -> str:
    """How a version learned from another's opinions of the unlabelled pool, if it did."""
    if version.teacher is None:
        return ""
    if (version.train_config.get("distillation") or {}).get("self_training"):
        return f", self-trained on v{version.teacher}"
    return f", distilled from v{version.teacher}"
