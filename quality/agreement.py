"""How far annotators agree: with the consensus, with each other (Cohen's kappa per pair) and
as a project (Krippendorff's alpha, nominal), chance agreement taken out of the last two.

Only items two or more annotators answered say anything about agreement; a figure that has
too little to stand on is None rather than a number that looks meaningful.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from domain import LABELS
from quality.consensus import Consensus, Vote, latest_per_annotator

__all__ = ["AnnotatorSummary", "cohen_kappa", "krippendorff_alpha", "summarise"]


@dataclass(frozen=True)
class AnnotatorSummary:
    """One annotator's figures. ``agreement``: the share of their answers on items with a
    consensus of several annotators that match it; ``kappa``: Cohen's kappa with each peer
    they share at least two items with; ``median_seconds``: their median lead time."""

    annotator: str
    labels: int
    distribution: dict[str, int]
    agreement: float | None
    shared_items: int
    kappa: dict[str, float | None] = field(default_factory=dict)
    median_seconds: float | None = None


def cohen_kappa(a: Mapping[int, str], b: Mapping[int, str]) -> float | None:
    """Cohen's kappa of two annotators on the items both answered; None with fewer than two
    such items, or when chance alone explains all agreement (both always gave one label)."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return None
    n = len(common)
    observed = sum(a[i] == b[i] for i in common) / n
    count_a, count_b = Counter(a[i] for i in common), Counter(b[i] for i in common)
    expected = sum(count_a[lab] * count_b[lab] for lab in LABELS) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def krippendorff_alpha(votes: Sequence[Vote]) -> float | None:
    """Krippendorff's alpha (nominal) over the items with two or more annotators; None when
    there are none, or no variation at all to judge agreement against."""
    coincidence: defaultdict[tuple[str, str], float] = defaultdict(float)
    for answers in latest_per_annotator(votes).values():
        labels = [v.label for v in answers.values()]
        m = len(labels)
        if m < 2:
            continue
        for x, y in combinations(range(m), 2):
            coincidence[labels[x], labels[y]] += 1 / (m - 1)
            coincidence[labels[y], labels[x]] += 1 / (m - 1)
    totals: defaultdict[str, float] = defaultdict(float)
    for (c, _), value in coincidence.items():
        totals[c] += value
    n = sum(totals.values())
    if n <= 1:
        return None
    disagree = sum(v for (c, k), v in coincidence.items() if c != k)
    chance = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if chance == 0:
        return None
    return 1.0 - (n - 1) * disagree / chance


def summarise(votes: Sequence[Vote], consensus: Mapping[int, Consensus]) -> list[AnnotatorSummary]:
    """Per annotator (most labels first): counts, class distribution, agreement with the
    consensus of multi-annotated items, kappa with each peer and median lead time."""
    latest = latest_per_annotator(votes)
    answers: dict[str, dict[int, str]] = {}
    seconds: dict[str, list[float]] = {}
    for item, by_annotator in latest.items():
        for name, vote in by_annotator.items():
            answers.setdefault(name, {})[item] = vote.label
            if vote.seconds is not None:
                seconds.setdefault(name, []).append(vote.seconds)
    out = []
    for name, given in answers.items():
        judged = [
            i for i in given if i in consensus and consensus[i].votes >= 2 and len(latest[i]) >= 2
        ]
        agreement = (
            sum(given[i] == consensus[i].label for i in judged) / len(judged) if judged else None
        )
        kappa = {
            peer: cohen_kappa(given, other)
            for peer, other in sorted(answers.items())
            if peer != name and len(set(given) & set(other)) >= 2
        }
        times = seconds.get(name)
        out.append(
            AnnotatorSummary(
                annotator=name,
                labels=len(given),
                distribution={lab: sum(v == lab for v in given.values()) for lab in LABELS},
                agreement=agreement,
                shared_items=len(judged),
                kappa=kappa,
                median_seconds=statistics.median(times) if times else None,
            )
        )
    return sorted(out, key=lambda s: (-s.labels, s.annotator))
