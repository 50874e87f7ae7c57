"""Masking personal data (issue #15): recall on planted PII, false positives on real chats,
cost against the push it guards, and what masking does to the model.

1. Recall per kind on a planted-PII corpus (``benchmarks.pii_corpus``: airline pool chats with
   synthetic e-mails, phones of 12 countries in international, national and E.164 formats,
   Luhn-valid cards, configured order ids, IBANs, IPs, URLs with queries, street addresses):
   a value counts as found when one masked span covers all of it.
2. The airline pool unchanged: chats with anything masked, per 1,000. Every one is counted as a
   false positive, an upper bound: the pool holds some real phone numbers and e-mails.
3. Speed: chats masked per second. With ``--label-studio``: the push step's import of 40
   reserved pool chats (the loop's own code, from the store into a throwaway local Label
   Studio: ``SENTILOOP_LABEL_STUDIO_BIN``, its first start migrates for about a minute), with
   and without masking of text and meta line, interleaved, fresh chats each push; medians and
   their ratio. (The step's selection comes before and takes longer still: not counted.)
4. With ``--train N``: test.csv macro-F1 of MiniLM fine-tuned on N random pool labels, on the
   original text and on the text masked at ingest (test.csv masked the same way), same seed.

    .venv/bin/python -m benchmarks.privacy [--chats 2000] [--train 2000] [--label-studio]
        [--markdown PATH]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import secrets
import shlex
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.airline import DATA_DIR, REPO_ROOT, read_split
from benchmarks.pii_corpus import KINDS, ORDER_PATTERN, corpus
from privacy import Masker

#: Chats per timed push; pushes per arm.
PUSH_BATCH, PUSH_ROUNDS = 40, 15


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


class _Unmasked(Masker):
    """A masker that masks nothing: the push without masking, formatted the same way."""

    def mask(self, text: str) -> str:
        return text


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def push_ms(seed: int) -> dict[str, tuple[list[float], list[float]]]:
    """Per arm (unmasked, masked): milliseconds of the push step's import of ``PUSH_BATCH``
    reserved chats (the loop's own code: read the chats and predictions from the store, build
    the tasks with text and meta line, import them into a throwaway local Label Studio, record
    them), and of those the masking. ``PUSH_ROUNDS`` pushes per arm, ABBA, fresh chats each."""
    from labeling import LabelStudioServer
    from orchestrator.context import Context
    from orchestrator.settings import Settings
    from orchestrator.step_sync import push_pending
    from store import ChatIn, Store

    class Timed(Masker):
        """The arm's masker, timing itself."""

        def __init__(self, inner: Masker) -> None:
            self.inner, self.seconds = inner, 0.0

        def mask(self, text: str) -> str:
            start = time.perf_counter()
            try:
                return self.inner.mask(text)
            finally:
                self.seconds += time.perf_counter() - start

    class ArmSettings(Settings):
        @property
        def masker(self) -> Masker:
            return timed[arm]

    with (DATA_DIR / "pool.csv").open(newline="", encoding="utf-8") as fh:
        rows = random.Random(seed).sample(
            list(csv.DictReader(fh)), 2 * (PUSH_ROUNDS + 1) * PUSH_BATCH
        )
    default_bin = REPO_ROOT / ".venv-labelstudio" / "bin" / "label-studio"
    executable = Path(os.environ.get("SENTILOOP_LABEL_STUDIO_BIN", default_bin))
    token = secrets.token_hex(20)
    timed = {"unmasked": Timed(_Unmasked()), "masked": Timed(Masker(ORDER_PATTERN))}
    times: dict[str, tuple[list[float], list[float]]] = {a: ([], []) for a in timed}
    with tempfile.TemporaryDirectory() as root:
        server = LabelStudioServer(
            executable,
            Path(root) / "labelstudio",
            port=_free_port(),
            username="bench@sentiloop.local",
            password=secrets.token_urlsafe(16),
            token=token,
        )
        try:
            url = server.start(timeout=300)
            settings = ArmSettings(
                home=Path(root) / "home", label_studio_url=url, label_studio_token=token
            )
            store = Store(settings.db_url)
            store.init()
            store.add_chats(
                [
                    ChatIn(
                        r["chat_id"],
                        r["text"],
                        {k: v for k, v in r.items() if k not in ("chat_id", "text")},
                        None,
                    )
                    for r in rows
                ]
            )
            ids = list(store.chat_ids_by_source([r["chat_id"] for r in rows]).values())
            ctx = Context(settings=settings, store=store)
            client = ctx.labeling()
            project = client.ensure_project(settings.project_title)
            instance = client.project_identity(project)
            for i in range(2 * (PUSH_ROUNDS + 1)):
                arm = list(timed)[(i + i // 2) % 2]  # ABBA: neither arm always goes first
                batch = ids[i * PUSH_BATCH : (i + 1) * PUSH_BATCH]
                store.reserve_tasks(
                    project,
                    batch,
                    strategy="random",
                    model_version=None,
                    selection_scores=[None] * len(batch),
                    instance=instance,
                )
                timed[arm].seconds = 0.0
                start = time.perf_counter()
                assert push_pending(ctx, project, instance) == len(batch)
                if i >= 2:  # the first push of each arm warms up
                    times[arm][0].append(1000 * (time.perf_counter() - start))
                    times[arm][1].append(1000 * timed[arm].seconds)
            client.close()
            store.dispose()
        finally:
            server.stop()
    return times


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
    with tempfile.TemporaryDirectory() as root:
        path = save_checkpoint(model, tokenizer, Path(root), "m", {}).path
        probs = Scorer(path, device="cpu", precision="fp32").predict_proba(test_texts)
    return float(evaluate(test_labels, predicted_labels(probs))["macro_f1"])  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=2000, help="Pool chats to plant PII in.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=0, help="Labels for the macro-F1 arms.")
    parser.add_argument(
        "--label-studio", action="store_true", help="Time pushes to a local Label Studio."
    )
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
    if args.label_studio:
        times = push_ms(args.seed)
        med = {arm: statistics.median(push) for arm, (push, _) in times.items()}
        lines += [
            "",
            f"| the push step's import of {PUSH_BATCH} chats into a local Label Studio "
            f"({PUSH_ROUNDS} per arm, interleaved) | median ms | quartiles ms | "
            "of which masking, median ms |",
            "|---|---:|---:|---:|",
        ]
        for arm, label in (("unmasked", "unmasked"), ("masked", "text and meta line masked")):
            q1, _, q3 = statistics.quantiles(times[arm][0], n=4)
            mask_ms = statistics.median(times[arm][1])
            lines.append(f"| {label} | {med[arm]:.0f} | {q1:.0f}-{q3:.0f} | {mask_ms:.1f} |")
        masking = statistics.median(times["masked"][1])
        lines += [
            "",
            f"masking adds {masking:.1f} ms to a push of {med['unmasked']:.0f} ms: "
            f"+{masking / med['unmasked']:.1%} (the arms' medians differ by "
            f"{med['masked'] / med['unmasked'] - 1:+.1%}; their quartiles above)",
        ]
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
