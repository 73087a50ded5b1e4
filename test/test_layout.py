"""The package tree of docs/development.md: diffmf_core's top level holds at most eight modules,
and every import (module-level or inside a function) runs from a layer to one below it, never
upward or sideways between live/ and training/. Read from the source with ``ast``: nothing is
imported."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "diffmf_core"

# unit (a subpackage, or a top-level module) -> layer; a unit imports only units of a lower layer
LAYERS = {
    "common": 0,  # argtypes, color, outputs, paths: leaves
    "config": 1,
    "ops": 2,
    "modules": 3,
    "models": 4,
    "weights": 5,
    "baselines": 5,
    "fuser": 6,
    "live": 7,  # the live path and training never import each other
    "training": 7,
    "tools": 8,
    "cli": 9,
}
MAX_TOP_LEVEL = 8


def _unit(dotted: str) -> str:
    """The unit of ``diffmf_core.<unit>[.rest]``."""
    return dotted.split(".")[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``path``; ``from diffmf_core import x`` gives
    ``diffmf_core.x``."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] if base == "diffmf_core" else [base]
            found += [(node.lineno, name) for name in names]
    return found


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_top_level_holds_at_most_eight_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, f"diffmf_core/ has {len(top)} top-level modules: {top}"


def test_every_unit_has_a_layer():
    units = {p.stem for p in PACKAGE.glob("*.py")} | {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    units.discard("__init__")
    assert not units - LAYERS.keys(), f"place {sorted(units - LAYERS.keys())} in LAYERS (and docs/development.md)"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_downward(path):
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) == 1 and rel.name == "__init__.py":
        return
    source = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    upward = []
    for line, name in _imports(path):
        root = name.split(".")[0]
        if root in ("diffmf_ros", "rclpy"):
            upward.append(f"line {line}: {name} (diffmf_core never imports the ROS side)")
        elif root == "diffmf_core" and "." in name:
            target = _unit(name)
            if target != source and LAYERS.get(target, 99) >= LAYERS[source]:
                upward.append(f"line {line}: {name} ({target}, layer {LAYERS.get(target)}, from {source}, "
                              f"layer {LAYERS[source]})")
    assert not upward, f"{rel} imports upward or sideways:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The parser finds function-level, ``from diffmf_core import x`` and relative imports."""
    pkg = tmp_path / "diffmf_core" / "live"
    pkg.mkdir(parents=True)
    mod = pkg / "x.py"
    mod.write_text("def f():\n    from diffmf_core import training\n    from ..tools import fuse\n")
    monkeypatch.setitem(globals(), "PACKAGE", tmp_path / "diffmf_core")
    assert [name for _, name in _imports(mod)] == ["diffmf_core.training", "diffmf_core.tools"]
    with pytest.raises(AssertionError, match="imports upward"):
        test_imports_run_downward(mod)
