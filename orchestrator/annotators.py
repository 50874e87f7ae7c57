"""`sentiloop annotators`: per annotator (by pseudonymous id) labels, class distribution,
agreement with the consensus, Cohen's kappa with each peer and speed; the project's
Krippendorff's alpha week by week. Read-only: it reads the stored consensus, never reaches
a new one."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from orchestrator.consensus import votes
from orchestrator.context import Context
from quality import AnnotatorSummary, Consensus, krippendorff_alpha, summarise
from store import Answer


@dataclass(frozen=True)
class AlphaWeek:
    """Krippendorff's alpha over the chats several annotators had answered by a week's end
    (``to_date``), and over those whose last answer came that week (``week``)."""

    week: str
    chats: int
    alpha_week: float | None
    alpha_to_date: float | None


@dataclass(frozen=True)
class AnnotatorReport:
    annotators: list[AnnotatorSummary]
    weeks: list[AlphaWeek]
    states: dict[str, int]  # consensus state -> chats
    alpha: float | None


def _week(at: datetime) -> str:
    year, week, _ = at.isocalendar()
    return f"{year}-W{week:02d}"


def report(ctx: Context) -> AnnotatorReport:
    store = ctx.store
    answers = store.answers()
    every = votes([a for group in answers.values() for a in group])
    stored = store.consensus_labels()
    agreed = {
        c: Consensus(c, row.label, row.quality, row.agreement, row.votes, row.method)
        for c, row in stored.items()
    }
    several = {c: g for c, g in answers.items() if len({a.voter for a in g}) > 1}
    by_week: dict[str, list[Answer]] = {}
    for group in several.values():
        by_week.setdefault(_week(max(a.updated_at for a in group)), []).extend(group)
    weeks, so_far = [], []
    for week in sorted(by_week):
        so_far.extend(by_week[week])
        weeks.append(
            AlphaWeek(
                week,
                len({a.chat_id for a in by_week[week]}),
                krippendorff_alpha(votes(by_week[week])),
                krippendorff_alpha(votes(so_far)),
            )
        )
    return AnnotatorReport(
        annotators=summarise(every, agreed),
        weeks=weeks,
        states=dict(Counter(row.state for row in stored.values())),
        alpha=krippendorff_alpha(every),
    )
