"""``pip install .`` as a user outside the checkout would do it: the wheel is built, installed
into a fresh virtualenv in a temporary directory and its ``sentiloop`` command run from there.

The new venv borrows its dependencies from the project's pinned environment (a ``.pth`` file):
installing torch and the rest again would take minutes and, elsewhere, gigabytes for every test
run. What the wheel must declare is checked statically in tests/unit/test_packaging.py, and
``pip check`` here proves the borrowed environment satisfies what it does declare.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, TOP_LEVEL_PACKAGES

pytestmark = pytest.mark.integration


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args[1:]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_installs_a_working_sentiloop_command(tmp_path: Path) -> None:
    # the checkout's own modules must not leak in: no PYTHONPATH, and every command runs in tmp
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("SENTI")}
    env["SENTILOOP_HOME"] = str(tmp_path / "home")
    # built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    source = tmp_path / "source"
    for package in TOP_LEVEL_PACKAGES:
        shutil.copytree(
            REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    dist = tmp_path / "dist"
    build = ["wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dist)]
    _run([sys.executable, "-m", "pip", *build, str(source)], tmp_path, env)
    (wheel,) = dist.glob("sentiloop-*.whl")

    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    bin_dir = target / "bin"
    python = bin_dir / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            tmp_path,
            env,
        ).strip()
    )
    (site / "_sentiloop_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run([*pip, "install", "--quiet", "--no-deps", "--no-index", str(wheel)], tmp_path, env)
    # the MiniLM package's metadata asks for sentence-transformers, which setup deliberately
    # leaves out (we load its weights with transformers): only sentiloop's own lines count
    check = subprocess.run([*pip, "check"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "sentiloop" in _run([*pip, "list"], tmp_path, env)
    assert not [line for line in check.stdout.splitlines() if line.startswith("sentiloop ")]

    sentiloop = str(bin_dir / "sentiloop")
    where = _run(
        [str(python), "-c", "import orchestrator; print(orchestrator.__file__)"], tmp_path, env
    )
    assert Path(where.strip()).is_relative_to(site), where

    assert "ingest" in _run([sentiloop, "--help"], tmp_path, env)
    assert "store ready" in _run([sentiloop, "init"], tmp_path, env)
    chats = tmp_path / "chats.csv"
    chats.write_text("chat_id,text\nc1,my bag never arrived\nc2,thanks for the upgrade\n")
    assert "2 new" in _run([sentiloop, "ingest", str(chats)], tmp_path, env)
    assert "macro-F1" in _run([sentiloop, "models", "list"], tmp_path, env)

    bench = subprocess.run(
        [sentiloop, "bench", "active-learning"], cwd=tmp_path, env=env, capture_output=True
    )
    assert bench.returncode == 2
    assert b"source checkout" in bench.stderr
