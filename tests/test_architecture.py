"""The import rules of docs/architecture.md, read from the source with ``ast`` (imports inside functions count)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "robustscale"


def _module_name(path: Path) -> tuple[str, list[str]]:
    """(dotted module name, package parts that relative imports start from)."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), parts
    return ".".join(parts), parts[:-1]


def _imports(path: Path) -> set[str]:
    """Every ``robustscale.*`` module ``path`` imports (``from . import x`` counts as ``<package>.x``)."""
    _, package = _module_name(path)
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            if node.module is None or node.level:
                out.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m == "robustscale" or m.startswith("robustscale.")}


def _area(module: str) -> str:
    """``robustscale.train.loop`` -> ``train``; ``robustscale.rundir`` -> ``rundir``; the package -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


FILES = sorted(PACKAGE.rglob("*.py"))
GRAPH = {path: _imports(path) for path in FILES}


def _violations(area: str, allowed: set[str] | None = None, forbidden: set[str] | None = None) -> list[str]:
    bad = []
    for path, imports in GRAPH.items():
        if _area(_module_name(path)[0]) != area:
            continue
        for module in sorted(imports):
            other = _area(module)
            if other == area or other == "__version__":
                continue
            if (allowed is not None and other not in allowed) or (forbidden is not None and other in forbidden):
                bad.append(f"{path.relative_to(SRC)} imports {module}")
    return bad


def test_the_import_graph_is_read():
    # The parser sees relative imports, imports inside functions and `from .. import x`.
    train_loop = PACKAGE / "train" / "loop.py"
    assert "robustscale.rundir" in GRAPH[train_loop]
    assert "robustscale.store" in GRAPH[train_loop]
    assert any(m.startswith("robustscale.tasks") for m in GRAPH[train_loop])  # imported inside a method
    assert len(FILES) > 50


TRAINING = {"train", "tasks", "attacks", "models", "bench", "evaluation", "data", "rundir", "sweep", "study"}


@pytest.mark.parametrize("area,allowed,forbidden,why", [
    ("scaling", None, TRAINING | {"report"}, "the fitting code imports no training code"),
    ("attacks", {"errors"}, None, "attacks are pure functions of (model, x, y, parameters)"),
    ("store", {"", "config", "schema", "errors"}, None, "the store is a leaf"),
    ("models", {"errors"}, None, "models know nothing of datasets (callers pass mean/std)"),
    ("data", {"errors", "config"}, None, "datasets know nothing of models or training"),
    ("schema", set(), None, "the run columns are plain data"),
    ("errors", set(), None, "errors are a leaf"),
    ("rundir", {"", "config", "errors", "data", "models"}, None, "the run folder module sits below train"),
    ("train", None, {"bench", "sweep", "study", "evaluation", "report"}, "training does not know its users"),
])
def test_layer_rules(area, allowed, forbidden, why):
    assert not _violations(area, allowed, forbidden), why


def test_the_library_never_imports_the_cli():
    bad = []
    for path, imports in GRAPH.items():
        area = _area(_module_name(path)[0])
        if area in ("cli", "commands", "__main__"):
            continue
        bad += [f"{path.relative_to(SRC)} imports {m}" for m in imports if _area(m) in ("cli", "commands")]
    assert not bad


def test_one_home_per_concept_has_no_stale_modules():
    # The old homes of moved concepts stay gone (robustscale.evaluation, train/, bench/, published_runs).
    for old in ("evaluate.py", "train.py", "bench.py", "scaling/paper.py", "study/paper.py"):
        assert not (PACKAGE / old).exists(), old
