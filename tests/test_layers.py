"""The layering contract: package dependencies point one way, and `calibration` knows no backend.

Every ``import sppquant.X`` (module level or inside a function: both are real
dependencies) is read from the source with `ast`. A top-level unit may import only
units at its own rank or below in `LAYERS`; that also rules out any cycle between them.
A new top-level module or package must be placed in `LAYERS` on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sppquant"

# Bottom to top. The flow: images -> preprocess -> feeds -> backend -> histograms ->
# thresholds -> table -> engines / Q/DQ -> report; verbs (pipeline) and the CLI on top.
LAYERS: list[set[str]] = [
    {"__init__", "errors", "atomic", "registry"},
    {"ops", "preprocess"},
    {"model"},
    {"calibration"},
    {"tasks"},
    {"backends"},
    {"quantize"},
    {"config"},
    {"data", "labels"},
    {"report"},
    {"pipeline"},
    {"cli", "__main__", "demo"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def unit_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _typing_only(tree: ast.AST) -> set[int]:
    """Nodes under ``if TYPE_CHECKING:``: annotations only, no runtime dependency."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING"):
            skip |= {id(n) for part in node.body for n in ast.walk(part)}
    return skip


def imported_units(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _typing_only(tree)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "sppquant":  # `from sppquant import x`: a unit if x is one, else the package itself
                names += [f"sppquant.{a.name}" if (PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").is_file()
                          else "sppquant.__init__" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "sppquant" and len(parts) > 1:
                found.add(parts[1])
    return found


def dependencies() -> dict[str, dict[str, set[str]]]:
    """``{unit: {imported unit: {files}}}`` for every module of the package."""
    deps: dict[str, dict[str, set[str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        unit = unit_of(path)
        for other in imported_units(path) - {unit}:
            deps.setdefault(unit, {}).setdefault(other, set()).add(str(path.relative_to(PACKAGE)))
    return deps


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(p) for p in PACKAGE.rglob("*.py")}
    assert units <= set(RANK), f"place these in LAYERS: {sorted(units - set(RANK))}"


def test_dependencies_point_down() -> None:
    wrong = [f"{unit} -> {other} ({', '.join(sorted(files))})"
             for unit, others in dependencies().items() for other, files in others.items()
             if other in RANK and RANK[other] > RANK[unit]]
    assert not wrong, "imports that point up the layers:\n" + "\n".join(wrong)


def test_calibration_knows_no_backend_and_no_pipeline() -> None:
    deps = dependencies().get("calibration", {})
    for forbidden in ("backends", "pipeline", "config", "data", "report"):
        assert forbidden not in deps, f"calibration imports {forbidden}: {deps.get(forbidden)}"


@pytest.mark.parametrize("upward", [("calibration", "backends"), ("ops", "calibration"), ("backends", "config")])
def test_the_check_catches_an_upward_import(tmp_path: Path, upward: tuple[str, str]) -> None:
    """The checker itself: an import planted in a copy of a lower unit is reported."""
    low, high = upward
    src = PACKAGE / low / "__init__.py"
    planted = tmp_path / "planted.py"
    planted.write_text(src.read_text(encoding="utf-8") + f"\n\ndef _f():\n    import sppquant.{high}.x  # noqa\n")
    assert high in imported_units(planted) and RANK[high] > RANK[low]
