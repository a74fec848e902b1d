"""The house's rules, checked so that they stay true: imports flow one way (import-linter's
contracts in pyproject.toml: the layers, and no circle among any package's modules), an import
inside a function says why it is there, no module grows past 450 lines, and ugro's top level
stays small."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "ugro"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
# Where deferring every import is the point, as their docstrings say: the CLI imports each
# verb's module when it runs (`ugro --help` loads click only), Ansible loads the plugins for
# every play.
DEFERRING = ("cli", "ansible_plugins")
MAX_LINES = 450
MAX_TOP_LEVEL_MODULES = 12


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=120,
        check=False,
    )


def test_the_import_contracts_hold() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # A circle inside a package: the retry rules would import the loop that applies them.
        (
            "controller/retry.py",
            "import ugro.controller.loop",
            "no import circle among the modules of any package",
        ),
        # A lower layer reaching up: the history would import the queue.
        ("records/history.py", "import ugro.queue.schedule", "ugro's layers"),
    ],
)
def test_a_circle_or_an_upward_import_breaks_the_contracts(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    shutil.copytree(
        PACKAGE, tmp_path / "ugro", ignore=shutil.ignore_patterns("static", "__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "ugro" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert f"{broken} BROKEN" in done.stdout


def _function_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each import inside a function with no comment saying why: on its line,
    or on the line above its block of imports (blank lines between them allowed)."""
    lines = path.read_text().splitlines()
    found = []
    for function in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            above = node.lineno - 2
            while above >= 0 and lines[above].strip().startswith(("import ", "from ", ")", "")):
                if not lines[above].strip() or lines[above].strip().startswith(("import", "from")):
                    above -= 1
                else:
                    break
            said = "#" in lines[node.lineno - 1] or (above >= 0 and "#" in lines[above])
            if not said:
                found.append((node.lineno, lines[node.lineno - 1].strip()))
    return found


def test_an_import_inside_a_function_says_why() -> None:
    unexplained = {
        str(path.relative_to(REPO)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in DEFERRING
        and (found := _function_imports(path))
    }
    assert unexplained == {}


def test_modules_stay_small_and_the_top_level_short() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["-m", "ugro.controller"], "usage: python -m ugro.controller EXPERIMENT_DIR"),
        (["-m", "ugro.daemon", "--help"], "usage: python -m ugro.daemon [-h] [--config CONFIG]"),
    ],
)
def test_the_entry_points_running_jobs_and_units_name_still_answer(
    argv: list[str], usage: str
) -> None:
    """`python -m ugro.controller DIR` is in every running job's controller command line,
    `python -m ugro.daemon` in installed systemd units: they outlive the package's moves."""
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert usage in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
