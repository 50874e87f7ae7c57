"""The active-learning benchmark's report: the table, the verdict on each target, where the
stopping rule would stop each curve, and the learning-curve plot (from the rows of a run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from domain import LABELS

STOP_THRESHOLDS = (0.8, 0.85, 0.9, 0.95, 0.99)
"""Kappa thresholds at which the stopping rule is replayed on each curve."""


def _stopping_lines(rows: list[dict[str, Any]], strategies: list[str], window: int) -> list[str]:
    """Where the stabilising-predictions rule would stop each curve, for a few thresholds:
    mean labels at the stop (the budget when it never fires) and macro-F1 given up."""
    from training import stabilised

    out = []
    for s in strategies:
        cells = []
        for threshold in STOP_THRESHOLDS:
            stops, lost, fired = [], [], 0
            for seed in sorted({int(r["seed"]) for r in rows if r["strategy"] == s}):
                curve = [r for r in rows if r["strategy"] == s and int(r["seed"]) == seed]
                kappas: list[float] = []
                stop = curve[-1]
                for r in curve:
                    if r["kappa_previous"] is not None:
                        kappas.append(float(r["kappa_previous"]))
                    if stabilised(kappas, threshold, window):
                        stop, fired = r, fired + 1
                        break
                stops.append(int(stop["labels"]))
                lost.append(float(curve[-1]["macro_f1"]) - float(stop["macro_f1"]))
            cells.append(
                f">= {threshold}: {np.mean(stops):.0f} labels ({fired}/{len(stops)} fired), "
                f"{100 * np.mean(lost):.1f} points short of the last"
            )
        out.append(f"stopping rule, {window} successive kappas, {s}: " + "; ".join(cells))
    return out


class Curves:
    """The run's rows, by strategy, seed and budget."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.budgets = sorted({int(r["labels"]) for r in rows})

    def values(self, strategy: str, key: str, budget: int) -> list[float]:
        return [
            float(r[key])
            for r in self.rows
            if r["strategy"] == strategy and r["labels"] == budget and r.get(key) is not None
        ]

    def mean(self, strategy: str, key: str, budget: int) -> float:
        vals = self.values(strategy, key, budget)
        return float(np.mean(vals)) if vals else float("nan")

    def cell(self, strategy: str, key: str, budget: int) -> str:
        vals = self.values(strategy, key, budget)
        return f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if vals else "-"

    def by_seed(self, strategy: str, key: str, budget: int | None = None) -> dict[int, float]:
        """Per seed: the figure at ``budget``, or the area under the curve (the mean over
        the budgets, which are equally spaced)."""
        out: dict[int, float] = {}
        for seed in sorted({int(r["seed"]) for r in self.rows if r["strategy"] == strategy}):
            curve = {
                int(r["labels"]): float(r[key])
                for r in self.rows
                if r["strategy"] == strategy and int(r["seed"]) == seed and r.get(key) is not None
            }
            if budget is None and len(curve) == len(self.budgets):
                out[seed] = float(np.mean(list(curve.values())))
            elif budget is not None and budget in curve:
                out[seed] = curve[budget]
        return out

    def auc(self, strategy: str, key: str = "macro_f1") -> tuple[float, float]:
        vals = list(self.by_seed(strategy, key).values())
        return (float(np.mean(vals)), float(np.std(vals))) if vals else (np.nan, np.nan)

    def paired(
        self, strategy: str, key: str, budget: int | None = None
    ) -> tuple[float, float, int, int]:
        """``strategy`` minus random on the same seeds: mean, std, seeds better, seeds."""
        ours, theirs = self.by_seed(strategy, key, budget), self.by_seed("random", key, budget)
        diffs = [ours[s] - theirs[s] for s in ours if s in theirs]
        if not diffs:
            return np.nan, np.nan, 0, 0
        better = sum(d > 0 for d in diffs)
        return float(np.mean(diffs)), float(np.std(diffs)), better, len(diffs)


def _points(mean: float, std: float) -> str:
    return f"{100 * mean:+.1f} ± {100 * std:.1f} points"


def summarise(
    rows: list[dict[str, Any]],
    strategies: list[str],
    full: list[dict[str, float]],
    stop_window: int = 3,
) -> list[str]:
    """The table and the verdict on each target, as printed lines."""
    data = Curves(rows)
    budgets, mean = data.budgets, data.mean
    top = budgets[-1]
    out: list[str] = []
    head = (
        "| strategy | "
        + " | ".join(str(b) for b in budgets)
        + " | AUC | AUC on dev | labels to random@max |"
    )
    out += [head, "|" + "---|" * (len(budgets) + 4)]
    random_final = mean("random", "macro_f1", top) if "random" in strategies else float("nan")
    reach: dict[str, int | None] = {}
    for s in strategies:
        curve = [mean(s, "macro_f1", b) for b in budgets]
        reach[s] = next((b for b, v in zip(budgets, curve, strict=True) if v >= random_final), None)
        cells = " | ".join(data.cell(s, "macro_f1", b) for b in budgets)
        auc, auc_sd = data.auc(s)
        dev, dev_sd = data.auc(s, "dev_macro_f1")
        out.append(
            f"| {s} | {cells} | {100 * auc:.1f} ± {100 * auc_sd:.1f} | "
            f"{100 * dev:.1f} ± {100 * dev_sd:.1f} | "
            f"{reach[s] if reach[s] is not None else f'> {top}'} |"
        )
    out.append("")
    out.append(
        "macro-F1 on test.csv (reported only), mean ± std over seeds; AUC: mean macro-F1 over "
        "the budgets, x100; AUC on dev: the same on dev.csv, where settings are chosen"
    )
    for c in LABELS:
        out.append(
            f"F1 {c} at each budget: "
            + "; ".join(
                f"{s} " + " ".join(f"{mean(s, f'f1_{c}', b):.2f}" for b in budgets)
                for s in strategies
            )
        )
    out.append(
        "labelled by the final budget, the first batch included (true labels): "
        + "; ".join(
            f"{s} " + "/".join(str(round(mean(s, f"picked_{c}", top))) for c in LABELS)
            for s in strategies
        )
        + " (negative/neutral/positive)"
    )
    out.append(
        "stopping kappa between successive models: "
        + "; ".join(
            f"{s} "
            + " ".join(
                "-" if np.isnan(k := mean(s, "kappa_previous", b)) else f"{k:.2f}" for b in budgets
            )
            for s in strategies
        )
    )
    out += _stopping_lines(rows, strategies, stop_window)
    full_f1 = float(np.mean([f["macro_f1"] for f in full])) if full else float("nan")
    if full:
        out.append(
            f"whole pool ({len(full)} run(s)): macro-F1 {full_f1:.3f}, accuracy "
            f"{np.mean([f['accuracy'] for f in full]):.3f}"
        )
    if "random" not in strategies:
        return out
    out.append("")
    second = budgets[1] if len(budgets) > 1 else top
    for s in strategies:
        if s == "random":
            continue
        paired: list[str] = []
        for label, key in (("test", "macro_f1"), ("dev", "dev_macro_f1")):
            points = {"AUC": None, f"at {second}": second, f"at {top}": top}
            for what, budget in points.items():
                m, sd, better, n = data.paired(s, key, budget)
                paired.append(f"{label} {what} {_points(m, sd)} (better on {better}/{n} seeds)")
        out.append(f"paired with random, same seeds, {s}: " + "; ".join(paired))
    out.append("")
    for s in strategies:
        if s == "random":
            continue
        r = reach[s]
        out.append(
            f"target {s}: reaches random's macro-F1 at {top} ({random_final:.3f}) with <= 600 "
            f"labels: {r if r is not None else f'not by {top}'} -> "
            f"{'met' if r is not None and r <= 600 else 'MISSED'}"
        )
        gain = data.paired(s, "macro_f1")[0]
        out.append(
            f"target {s}: AUC beats random by >= 3 points: {100 * gain:+.1f} points -> "
            f"{'met' if gain >= 0.03 else 'MISSED'}"
        )
        early = data.paired(s, "macro_f1", second)[0]
        out.append(
            f"target {s}: macro-F1 at {second} labels beats random by >= 5 points: "
            f"{100 * early:+.1f} points -> {'met' if early >= 0.05 else 'MISSED'}"
        )
        if full:
            gap = mean(s, "macro_f1", top) - full_f1
            out.append(
                f"target {s}: within 0.5 points of the whole pool at {top}: {100 * gap:+.1f} "
                f"points -> {'met' if gap >= -0.005 else 'MISSED'}"
            )
        worst = min(
            (mean(s, f"f1_{c}", b) - mean("random", f"f1_{c}", b), c, b)
            for c in LABELS
            for b in budgets
        )
        out.append(
            f"target {s}: no class F1 below random at any budget: worst {100 * worst[0]:+.1f} "
            f"points ({worst[1]} at {worst[2]}) -> {'met' if worst[0] >= 0 else 'MISSED'}"
        )
    return out


def plot(
    rows: list[dict[str, Any]], strategies: list[str], full_f1: float | None, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((axes[0], "macro_f1", "test.csv"), (axes[1], "dev_macro_f1", "dev.csv"))
    for ax, key, split in panels:
        for s in strategies:
            budgets = sorted({int(r["labels"]) for r in rows if r["strategy"] == s})
            vals = [
                [
                    float(r[key])
                    for r in rows
                    if r["strategy"] == s and r["labels"] == b and r.get(key) is not None
                ]
                for b in budgets
            ]
            m = np.array([np.mean(v) for v in vals])
            sd = np.array([np.std(v) for v in vals])
            ax.plot(budgets, m, marker="o", label=s)
            ax.fill_between(budgets, m - sd, m + sd, alpha=0.15)
        if full_f1 is not None and key == "macro_f1":
            ax.axhline(full_f1, color="grey", linestyle="--", label="whole pool")
        ax.set_xlabel("labels")
        ax.set_ylabel(f"macro-F1 on {split}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("sentiloop active learning on airline tweets (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
