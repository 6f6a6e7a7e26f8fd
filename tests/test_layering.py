"""The layers of DESIGN.md: the kernel lives inside the training process, so it imports no
other package of this project and pulls in nothing heavy; the autopilot never imports the
offline harness above it (``autopilot eval`` joins the command line through an entry point)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

KERNEL = Path(__file__).resolve().parents[1] / "kernel"
UPPER_LAYERS = {"autopilot", "memory", "evals", "prompts"}
HEAVY = ["langgraph", "fastapi", "openai", "optuna", "uvicorn"]


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


KERNEL_MODULES = sorted(KERNEL.rglob("*.py"))


def test_the_kernel_has_modules_to_check():
    assert len(KERNEL_MODULES) >= 10


@pytest.mark.parametrize("path", KERNEL_MODULES, ids=lambda p: str(p.relative_to(KERNEL)))
def test_no_kernel_module_imports_an_upper_layer(path):
    assert not _imported_packages(path) & UPPER_LAYERS


def test_the_import_check_sees_nested_and_from_imports(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text(
        "def f():\n    import autopilot.cli\nfrom memory.sqlite import X\nfrom . import y\n"
    )
    assert _imported_packages(sample) == {"autopilot", "memory"}


def test_importing_the_kernel_pulls_in_nothing_heavy():
    code = (
        "import sys, kernel\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_reading_a_run_directory_does_not_load_torch(tmp_path):
    code = (
        f"import sys, kernel; kernel.read_ledger({str(tmp_path)!r}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


ROOT = KERNEL.parent
AUTOPILOT_MODULES = sorted((ROOT / "autopilot").rglob("*.py"))


@pytest.mark.parametrize("path", AUTOPILOT_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_autopilot_module_imports_the_harness(path):
    assert "evals" not in _imported_packages(path)


def test_the_eval_command_is_registered_through_the_entry_point():
    from importlib.metadata import entry_points

    [entry] = [e for e in entry_points(group="train_autopilot.commands") if e.name == "eval"]
    assert entry.value == "evals.cli:register"


def test_building_the_command_line_with_its_plugins_pulls_in_nothing_heavy():
    """Every ``autopilot`` command builds the whole parser, ``eval`` included: that must not
    cost the imports of numpy, torch or LangGraph (it once took a second)."""
    code = (
        "import sys\n"
        "from autopilot.cli._parser import build_parser\n"
        "build_parser()\n"
        "heavy = {'numpy', 'torch', 'langgraph', 'openai', 'matplotlib', 'optuna'}\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


LOWER_LAYERS = {"memory": {"autopilot", "evals"}, "prompts": {"autopilot", "evals", "memory"}}


@pytest.mark.parametrize(
    ("path", "forbidden"),
    [
        (p, banned)
        for name, banned in LOWER_LAYERS.items()
        for p in sorted((ROOT / name).rglob("*.py"))
    ],
    ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else "",
)
def test_memory_and_prompts_import_nothing_above_them(path, forbidden):
    assert not _imported_packages(path) & forbidden


PACKAGE_MODULES = sorted(
    p
    for name in ("autopilot", "kernel", "evals", "memory", "prompts")
    for p in (ROOT / name).rglob("*.py")
)
SUMMARY_HOME = KERNEL / "validation.py"


def _reads_validation_errors(path: Path) -> bool:
    """Whether the module calls ``<something>.errors()`` (a ValidationError's list)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "errors"
        and not node.args
        for node in ast.walk(tree)
    )


def test_validation_errors_are_summarised_in_one_place():
    """``kernel.validation.summarize_validation_error`` is the one summary of a pydantic
    ValidationError; four copies of it once disagreed on how a field is named."""
    readers = [p.relative_to(ROOT) for p in PACKAGE_MODULES if _reads_validation_errors(p)]
    assert readers == [SUMMARY_HOME.relative_to(ROOT)]
