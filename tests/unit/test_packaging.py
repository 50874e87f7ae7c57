"""The wheel's metadata against its code: every third-party import declared, every package and
data file it names present. A missing declaration only shows on a machine that lacks the module,
so it is checked here, statically, rather than hoped for in the install test."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import PYPROJECT, REPO_ROOT, TOP_LEVEL_PACKAGES

pytestmark = pytest.mark.unit

PACKAGES: list[str] = PYPROJECT["tool"]["setuptools"]["packages"]
TOP_LEVEL = TOP_LEVEL_PACKAGES
#: Imported by a verb that tells the user to run it from a checkout when it is absent.
SOURCE_ONLY = {"benchmarks"}


def _imports(root: Path) -> dict[str, set[str]]:
    """Top-level modules imported anywhere under ``root``, with the files importing them."""
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def _declared() -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    providers = metadata.packages_distributions()
    declared = _declared()
    missing: list[str] = []
    for top in TOP_LEVEL:
        for module, files in _imports(REPO_ROOT / top).items():
            if module in sys.stdlib_module_names or module in TOP_LEVEL or module in SOURCE_ONLY:
                continue
            dists = {canonicalize_name(d) for d in providers.get(module, [])}
            if not dists:
                missing.append(f"{module} (no installed distribution provides it; {sorted(files)})")
            elif not dists & declared:
                missing.append(f"{module} from {sorted(dists)} in {sorted(files)[:3]}")
    assert not missing, "imported but not in [project] dependencies:\n" + "\n".join(missing)


def test_every_package_with_code_is_listed_and_every_data_file_exists() -> None:
    on_disk = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for top in TOP_LEVEL
        for init in (REPO_ROOT / top).rglob("__init__.py")
    }
    assert on_disk == set(PACKAGES)
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            assert list((REPO_ROOT / package).glob(pattern)), f"{package}/{pattern} does not exist"
