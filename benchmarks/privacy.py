"""Masking personal data (issue #15): recall on planted PII, false positives on real chats,
cost against the push it guards, and what masking does to the model.

1. Recall per kind on a planted-PII corpus (``benchmarks.pii_corpus``: airline pool chats with
   synthetic e-mails, phones of 12 countries in international, national and E.164 formats,
   Luhn-valid cards, configured order ids, IBANs, IPs, URLs with queries, street addresses):
   a value counts as found when one masked span covers all of it.
2. The airline pool unchanged: chats with anything masked, per 1,000. Every one is counted as a
   false positive, an upper bound: the pool holds some real phone numbers and e-mails.
3. Speed: chats masked per second, and the masking of one push batch against the push itself
   (Label Studio's import of the same batch, from ``--push-ms``, measured by the loop's tests).
4. With ``--train N``: test.csv macro-F1 of MiniLM fine-tuned on N random pool labels, on the
   original text and on the text masked at ingest (test.csv masked the same way), same seed.

    .venv/bin/python -m benchmarks.privacy [--chats 2000] [--train 2000] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.airline import read_split
from benchmarks.pii_corpus import KINDS, ORDER_PATTERN, corpus
from privacy import Masker

#: Label Studio's import of a 40-task batch on this machine (the push step's log, 2 cores).
PUSH_BATCH = 40


def recall(masker: Masker, texts: list[str], seed: int) -> dict[str, tuple[int, int]]:
    """Per kind: values planted, values wholly covered by one masked span."""
    planted, found = Counter[str](), Counter[str]()
    for text, values in corpus(texts, seed):
        spans = masker.find(text)
        for v in values:
            planted[v.kind] += 1
            found[v.kind] += any(s.start <= v.start and v.end <= s.end for s in spans)
    return {k: (planted[k], found[k]) for k in KINDS}


def false_positives(masker: Masker, texts: list[str]) -> tuple[int, Counter[str]]:
    flagged, kinds = 0, Counter[str]()
    for text in texts:
        spans = masker.find(text)
        flagged += bool(spans)
        kinds.update(s.kind for s in spans)
    return flagged, kinds


def speed(masker: Masker, texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        masker.mask(text)
    return len(texts) / (time.perf_counter() - start)


def macro_f1(n: int, seed: int, masker: Masker | None) -> float:
    """Fine-tune on ``n`` random pool labels and score test.csv, both masked when asked."""
    from training import DEFAULT_BASE_MODEL, Scorer, TrainConfig, fine_tune, save_checkpoint
    from training.evaluate import evaluate
    from training.labels import predicted_labels

    texts, labels = read_split("pool")
    pick = np.random.default_rng(seed).choice(len(texts), size=n, replace=False)
    train = [texts[i] for i in pick]
    test_texts, test_labels = read_split("test")
    if masker is not None:
        train, test_texts = [masker.mask(t) for t in train], [masker.mask(t) for t in test_texts]
    config = TrainConfig(epochs=3, learning_rate=1e-4, batch_size=16, min_steps=100, seed=seed)
    model, tokenizer = fine_tune(
        DEFAULT_BASE_MODEL, train, [labels[i] for i in pick], config, device="cpu"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        path = save_checkpoint(model, tokenizer, Path(root), "m", {}).path
        probs = Scorer(path, device="cpu", precision="fp32").predict_proba(test_texts)
    return float(evaluate(test_labels, predicted_labels(probs))["macro_f1"])  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=2000, help="Pool chats to plant PII in.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=0, help="Labels for the macro-F1 arms.")
    parser.add_argument("--push-ms", type=float, default=0.0, help="A push of 40 tasks, in ms.")
    parser.add_argument("--markdown", type=Path, help="Also write the tables here.")
    args = parser.parse_args(argv)

    masker = Masker(ORDER_PATTERN)
    pool, _ = read_split("pool")
    masker.mask("warm up: load the recognisers once")
    sample = random.Random(args.seed).sample(pool, min(args.chats, len(pool)))
    lines = [f"`{shlex.join(['python', '-m', 'benchmarks.privacy', *sys.argv[1:]])}`", ""]
    lines += ["| kind | planted | found | recall |", "|---|---:|---:|---:|"]
    for kind, (n, hit) in recall(masker, sample, args.seed).items():
        lines.append(f"| {kind} | {n} | {hit} | {hit / n:.2%} |")
    flagged, kinds = false_positives(masker, pool)
    lines += [
        "",
        f"airline pool unchanged: {flagged} of {len(pool):,} chats had something masked = "
        f"{1000 * flagged / len(pool):.1f} per 1,000 (an upper bound on false positives; "
        f"by kind: {dict(kinds.most_common())})",
    ]
    rate = speed(masker, pool)
    batch_ms = 1000 * PUSH_BATCH / rate
    lines.append(
        f"masking speed: {rate:,.0f} chats/s; a push batch of {PUSH_BATCH}: {batch_ms:.1f} ms"
    )
    if args.push_ms:
        lines.append(
            f"against a push of {PUSH_BATCH} tasks taking {args.push_ms:.0f} ms: "
            f"+{batch_ms / args.push_ms:.1%}"
        )
    if args.train:
        plain = macro_f1(args.train, args.seed, None)
        masked = macro_f1(args.train, args.seed, masker)
        lines += [
            "",
            f"| text ({args.train} pool labels, seed {args.seed}) | test macro-F1 |",
            "|---|---:|",
            f"| original | {plain:.4f} |",
            f"| masked at ingest | {masked:.4f} |",
            f"| difference | {100 * (masked - plain):+.2f} points |",
        ]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(["# Masking personal data", "", *lines, ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
