"""`sentiloop annotators` (who labels how well) and `sentiloop annotators id` (an
annotator's pseudonymous id)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from domain import LABELS
from orchestrator.cli_common import acting, console, err, load_or_exit, open_store, or_exit

annotators_app = typer.Typer(
    help="Annotators, known by pseudonymous ids: how much and how well they label."
)


def _figure(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@annotators_app.callback(invoke_without_command=True)
def annotators(ctx: typer.Context) -> None:
    """Per annotator: labels, class distribution, agreement with the consensus of chats
    several annotators answered, Cohen's kappa with each peer, median seconds per label;
    then the project's Krippendorff's alpha week by week."""
    if ctx.invoked_subcommand is not None:
        return
    from orchestrator.annotators import report
    from orchestrator.context import Context

    settings = load_or_exit()
    store = open_store(settings)
    got = or_exit(lambda: report(Context(settings=settings, store=store)))
    if not got.annotators:
        console.print("no answers pulled yet: `sentiloop pull` brings them from Label Studio")
        return
    table = Table(title="annotators")
    for name in ("annotator", "labels", *LABELS, "agrees with consensus", "kappa with peers"):
        left = name.startswith(("annotator", "kappa"))
        table.add_column(name, justify="left" if left else "right")
    table.add_column("median s", justify="right")
    for a in got.annotators:
        agreement = f"{a.agreement:.0%} of {a.shared_items}" if a.agreement is not None else "-"
        peers = ", ".join(f"{peer[:14]}: {_figure(k)}" for peer, k in a.kappa.items()) or "-"
        table.add_row(
            a.annotator,
            str(a.labels),
            *(str(a.distribution[lab]) for lab in LABELS),
            agreement,
            peers,
            _figure(a.median_seconds, 1),
        )
    console.print(table)
    states = ", ".join(f"{n} {state}" for state, n in sorted(got.states.items())) or "none yet"
    console.print(f"consensus of chats several annotators answered: {states}")
    console.print(f"Krippendorff's alpha (nominal), all chats: {_figure(got.alpha, 3)}")
    if got.weeks:
        weeks = Table("week", "chats", "alpha that week", "alpha to date", title="agreement")
        for w in got.weeks:
            weeks.add_row(
                w.week, str(w.chats), _figure(w.alpha_week, 3), _figure(w.alpha_to_date, 3)
            )
        console.print(weeks)


@annotators_app.command("id")
def annotators_id(
    email: Annotated[str, typer.Argument(help="The annotator's Label Studio e-mail address.")],
) -> None:
    """The pseudonymous id the store knows this annotator by (annotator-admins only: it
    links a person to their labels)."""
    from privacy import pseudonym

    settings = load_or_exit()
    store = open_store(settings)
    acting(settings, store, "annotators")
    key = or_exit(lambda: store.kept_pseudonym_key(settings.configured_pseudonym_key))
    if key is None:
        err.print("no annotation has been pulled yet: no annotator has an id here")
        raise typer.Exit(1)
    print(pseudonym(key, email))
