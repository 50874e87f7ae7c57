"""Escalation routing on dev.csv: precision and recall of each threshold and window.

The tables behind ``docs/routing.md``. A model like the loop's production model (1,000 random
pool labels, the loop's training recipe, scored in precision ``auto`` as the service does,
temperature fitted on dev.csv as the loop calibrates on its evaluation set) scores every dev
tweet once. Table 1 treats each tweet as one message; table 2 runs ``serving.routing.decide``
over simulated conversations of dev tweets. dev.csv has no conversations: see ``simulate``.

    .venv/bin/python -m benchmarks.routing [--checkpoint DIR] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.airline import read_split
from domain import LABELS
from serving.routing import RoutingPolicy, Turn, decide

Row = tuple[str, ...]
DEFAULT = RoutingPolicy()


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def train(n: int, seed: int, root: Path, name: str) -> Path:
    """Fine-tune on ``n`` random pool labels with the loop's full-retrain recipe (settings
    defaults: 3 epochs, lr 1e-4, batch 16, at least 100 steps)."""
    from training import DEFAULT_BASE_MODEL, TrainConfig, fine_tune, save_checkpoint

    texts, labels = read_split("pool")
    pick = np.random.default_rng(seed).choice(len(texts), size=n, replace=False)
    config = TrainConfig(epochs=3, learning_rate=1e-4, batch_size=16, min_steps=100, seed=seed)
    model, tokenizer = fine_tune(
        DEFAULT_BASE_MODEL,
        [texts[i] for i in pick],
        [labels[i] for i in pick],
        config,
        device="cpu",
    )
    meta: dict[str, object] = {"n_train": n, "seed": seed, "benchmark": "routing"}
    return save_checkpoint(model, tokenizer, root, name, meta).path


def score_dev(checkpoint: Path) -> tuple[npt.NDArray[np.float64], list[str], float, str]:
    """Calibrated dev probabilities, gold labels, the temperature and the precision used."""
    from training import Scorer, apply_temperature, fit_temperature

    texts, labels = read_split("dev")
    scorer = Scorer(checkpoint, device="cpu", precision="auto")
    raw = scorer.predict_proba(texts)
    temperature = fit_temperature(raw, labels)
    return (
        apply_temperature(raw, temperature),
        labels,
        temperature,
        scorer.effective_precision or "",
    )


def prf(pred: npt.NDArray[np.bool_], gold: npt.NDArray[np.bool_]) -> tuple[float, float, float]:
    """Precision, recall and F1 of escalating ``pred`` when ``gold`` needed it."""
    tp = float((pred & gold).sum())
    precision = tp / pred.sum() if pred.any() else float("nan")
    recall = tp / gold.sum() if gold.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return precision, recall, f1


def _cells(pred: npt.NDArray[np.bool_], gold: npt.NDArray[np.bool_]) -> Row:
    p, r, f1 = prf(pred, gold)
    return f"{p:.3f}", f"{r:.3f}", f"{f1:.3f}", f"{pred.mean():.1%}"


def message_table(
    probs: npt.NDArray[np.float64], negative: npt.NDArray[np.bool_], args: argparse.Namespace
) -> list[Row]:
    """Table 1: each dev tweet alone, escalated on P(negative) >= t or on score <= t."""
    from training import sentiment_score

    score = sentiment_score(probs)
    rows: list[Row] = []
    for t in args.strong:
        mark = " (default)" if t == DEFAULT.strong_negative else ""
        rows.append((f"P(negative) >= {t:g}{mark}", *_cells(probs[:, 0] >= t, negative)))
    for t in args.low_mean:
        mark = " (default low_mean)" if t == DEFAULT.low_mean else ""
        rows.append((f"score <= {t:g}{mark}", *_cells(score <= t, negative)))
    rows.append(("predicted label negative (argmax)", *_cells(probs.argmax(1) == 0, negative)))
    return rows


def simulate(
    negative: npt.NDArray[np.bool_], n: int, seed: int, args: argparse.Namespace
) -> list[list[int]]:
    """``n`` conversations of dev-tweet indices, 3-5 customer turns each.

    Each conversation's mood is a two-state Markov chain: the first turn is negative with
    probability ``--p-start``, a non-negative turn is followed by a negative one with
    probability ``--p-turn``, a negative one by another with ``--p-stay``. Each turn is then a
    random dev tweet (with replacement) of that gold mood: negative, or neutral/positive in
    dev's proportions. So conversations stay calm, turn angry, recover or flare once.
    """
    rng = np.random.default_rng(seed)
    neg_idx, calm_idx = np.flatnonzero(negative), np.flatnonzero(~negative)
    out: list[list[int]] = []
    for _ in range(n):
        mood = [bool(rng.random() < args.p_start)]
        for _ in range(int(rng.integers(3, 6)) - 1):
            mood.append(bool(rng.random() < (args.p_stay if mood[-1] else args.p_turn)))
        out.append([int(rng.choice(neg_idx if m else calm_idx)) for m in mood])
    return out


def conversation_table(
    probs: npt.NDArray[np.float64],
    negative: npt.NDArray[np.bool_],
    conversations: Sequence[Sequence[int]],
    args: argparse.Namespace,
) -> tuple[list[Row], dict[str, Any]]:
    """Table 2: ``decide`` at each conversation's last customer turn, over the policy grid.

    Gold "needs a senior agent": the last two customer turns are both gold negative (anger that
    outlasted an agent's reply). The last column is the precision against a laxer gold, the
    last turn alone gold negative, which also credits escalating a conversation that has just
    turned angry.
    """
    from training import sentiment_score

    score = sentiment_score(probs)
    turns = [
        [Turn(f"m{j}", float(score[i]), float(probs[i, 0]), float(j)) for j, i in enumerate(c)]
        for c in conversations
    ]
    gold = np.array([bool(negative[c[-1]] and negative[c[-2]]) for c in conversations])
    last = np.array([bool(negative[c[-1]]) for c in conversations])
    grid = itertools.product(args.strong, args.low_mean, args.window, args.fall, args.min_turns)
    rows: list[Row] = []
    info: dict[str, Any] = {"gold_share": float(gold.mean()), "default": None, "best": None}
    best_f1 = -1.0
    for strong, low, window, fall, min_turns in grid:
        policy = RoutingPolicy(strong, low, fall, window, min_turns)
        pred = np.array([decide(t, policy).decision == "escalate" for t in turns])
        f1 = prf(pred, gold)[2]
        name = f"{strong:g} / {low:g} / {window} / {fall:g} / {min_turns}"
        mark = " **default**" if policy == DEFAULT else ""
        rows.append((name + mark, *_cells(pred, gold), f"{prf(pred, last)[0]:.3f}"))
        if policy == DEFAULT:
            info["default"] = rows[-1]
        if f1 > best_f1:
            best_f1, info["best"] = f1, rows[-1]
    return rows, info


def markdown(header: Row, rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--checkpoint", type=Path, default=None, help="default: fine-tune one first")
    p.add_argument("--save", type=Path, default=None, help="keep the fine-tuned checkpoint here")
    p.add_argument("--n-train", type=int, default=1000, help="pool labels to fine-tune on")
    p.add_argument("--seed", type=int, default=0, help="training sample and simulation seed")
    p.add_argument("--conversations", type=int, default=2000)
    p.add_argument("--p-start", type=float, default=0.3, help="first turn negative")
    p.add_argument("--p-turn", type=float, default=0.2, help="non-negative -> negative")
    p.add_argument("--p-stay", type=float, default=0.6, help="negative -> negative")
    p.add_argument("--strong", type=_floats, default=_floats("0.5,0.6,0.7,0.8,0.85,0.9,0.95,0.98"))
    p.add_argument("--low-mean", type=_floats, default=_floats("0.1,0.2,0.3,0.4,0.5"))
    p.add_argument("--grid-strong", type=_floats, default=_floats("0.8,0.85,0.9,0.95"))
    p.add_argument("--grid-low-mean", type=_floats, default=_floats("0.1,0.2,0.3,0.4"))
    p.add_argument("--window", type=_ints, default=_ints("2,3,4"))
    p.add_argument("--fall", type=_floats, default=_floats("0.4"))
    p.add_argument("--min-turns", type=_ints, default=_ints("2"))
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    program = ["-m", "benchmarks.routing"] if __package__ else [sys.argv[0]]
    command = shlex.join(["python", *program, *(sys.argv[1:] if argv is None else argv)])
    lines = [f"command: `PYTHONPATH=. HF_HUB_OFFLINE=1 {command}`"]
    print(lines[0], flush=True)
    with tempfile.TemporaryDirectory(prefix="sentiloop-bench-routing-") as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            root, name = (args.save.parent, args.save.name) if args.save else (Path(tmp), "bench")
            print(f"fine-tuning on {args.n_train} pool labels into {root / name} ...", flush=True)
            t0 = time.perf_counter()
            checkpoint = train(args.n_train, args.seed, root, name)
            lines.append(
                f"checkpoint: fine-tuned on {args.n_train} random pool labels (seed {args.seed}; "
                f"3 epochs, lr 1e-4, batch 16, min 100 steps) in {time.perf_counter() - t0:.0f} s"
            )
        else:
            lines.append(f"checkpoint: {checkpoint}")
        probs, labels, temperature, precision = score_dev(checkpoint)
    negative = np.array([lb == "negative" for lb in labels])
    gold_index = np.array([LABELS.index(lb) for lb in labels])
    accuracy = float((probs.argmax(1) == gold_index).mean())
    q50, q80, q90 = np.quantile(probs[:, 0], [0.5, 0.8, 0.9])
    lines.append(
        f"dev.csv: {len(labels)} tweets, {negative.mean():.1%} gold negative; precision "
        f"{precision}, temperature {temperature:.3f} (fitted on dev), accuracy {accuracy:.3f}; "
        f"calibrated P(negative) median {q50:.3f}, 80th pct {q80:.4f}, 90th pct {q90:.4f}, "
        f"max {probs[:, 0].max():.4f}"
    )
    table1 = markdown(
        ("escalate a message when", "precision", "recall", "F1", "escalated"),
        message_table(probs, negative, args),
    )
    conversations = simulate(negative, args.conversations, args.seed, args)
    grid_args = argparse.Namespace(
        strong=args.grid_strong,
        low_mean=args.grid_low_mean,
        window=args.window,
        fall=args.fall,
        min_turns=args.min_turns,
    )
    rows, info = conversation_table(probs, negative, conversations, grid_args)
    lengths = np.bincount([len(c) for c in conversations], minlength=6)[3:]
    angry = sum(not negative[c[0]] and negative[c[-1]] for c in conversations)
    lines.append(
        f"simulated: {len(conversations)} conversations (seed {args.seed}; {lengths.tolist()} of "
        f"3/4/5 customer turns; mood chain p_start {args.p_start:g}, p_turn {args.p_turn:g}, "
        f"p_stay {args.p_stay:g}); {info['gold_share']:.1%} need a senior agent (last two turns "
        f"gold negative); {angry / len(conversations):.1%} start non-negative and end negative"
    )
    table2 = markdown(
        (
            "strong_negative / low_mean / window / fall / min_turns",
            "precision",
            "recall",
            "F1",
            "escalated",
            "precision, last turn negative",
        ),
        rows,
    )
    summary = []
    if info["default"] is not None:
        summary.append("defaults: " + _describe(info["default"]))
    if info["best"] is not None:
        summary.append("best F1 in the grid: " + _describe(info["best"]))
    text = "\n\n".join(
        [
            "\n".join(f"- {line}" for line in lines),
            "Table 1: single messages (dev.csv), gold = the tweet is labelled negative\n\n"
            + table1,
            "Table 2: simulated conversations, decide() at the last customer turn\n\n" + table2,
            "\n".join(summary),
        ]
    )
    print()
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
        print(f"\nwrote {args.markdown}")
    return 0


def _describe(row: Row) -> str:
    return f"{row[0]}: precision {row[1]}, recall {row[2]}, F1 {row[3]}, escalated {row[4]}"


if __name__ == "__main__":
    sys.exit(main())
