"""The short chaos run (`make chaos` runs 50 cycles): a few cycles with a worker, the cycle
client or Label Studio killed at random moments, then the checks: nothing lost or duplicated,
no chat with two tasks, no half-written checkpoint, production loads (issue #12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.integration.conftest import TEST_PASSWORD, TEST_TOKEN, free_port

pytestmark = pytest.mark.integration


def test_a_short_chaos_run_loses_and_duplicates_nothing(
    tmp_path: Path, airline: Path, labelstudio_bin: Path, labelstudio_template: Path
) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.chaos",
            *("--cycles", "4", "--clean", "1", "--seed", "1", "--pool-size", "300"),
            *("--home", str(tmp_path / "home"), "--port", str(free_port())),
            *("--labelstudio-template", str(labelstudio_template)),
            *("--token", TEST_TOKEN, "--password", TEST_PASSWORD),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "| annotations lost (in Label Studio, not in the store) | 0 | yes |" in out.stdout
    assert "| chats with two tasks in Label Studio | 0 | yes |" in out.stdout
