"""The import rules of docs/architecture.md, read from the source with ``ast`` (imports inside functions count).

Besides the layer rules: the module graph has no cycle (an import at any depth of a function counts, and so does
the ``__init__`` of every package an import enters), every intra-package import made inside a function is on
:data:`LAZY_IMPORTS`, and no private name (``_x``) is imported from another module unless it is on
:data:`PRIVATE_IMPORTS`. Both lists are exact: an entry that no longer occurs fails too, so they only shrink.
"""
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
    assert any(m.startswith("robustscale.tasks") for m in GRAPH[PACKAGE / "train" / "setup.py"])
    assert "robustscale.train" in GRAPH[PACKAGE / "commands" / "train.py"]
    assert len(FILES) > 50


TRAINING = {"train", "tasks", "attacks", "models", "bench", "evaluation", "data", "rundir", "sweep", "study"}
USERS = {"train", "bench", "sweep", "study", "report", "plan", "leaderboard", "cli", "commands"}


@pytest.mark.parametrize("area,allowed,forbidden,why", [
    ("scaling", None, TRAINING | {"report"}, "the fitting code imports no training code"),
    ("attacks", {"errors"}, None, "attacks are pure functions of (model, x, y, parameters)"),
    ("store", {"", "config", "schema", "errors"}, None, "the store is a leaf"),
    ("models", {"errors"}, None, "models know nothing of datasets (callers pass mean/std)"),
    ("data", {"errors", "config"}, None, "datasets know nothing of models or training"),
    ("schema", set(), None, "the run columns are plain data"),
    ("errors", set(), None, "errors are a leaf"),
    ("config", {"errors"}, None, "the config is the bottom layer: its vocabularies (tracker names too) are its own"),
    ("rundir", {"", "config", "errors", "data", "models"}, None, "the run folder module sits below train"),
    ("tasks", {"attacks", "config", "errors"}, None, "a training method is an attack plus a loss"),
    ("cost", {"config", "errors"}, None, "pricing imports no torch, so that the fitting code can price compute"),
    ("compute", {"attacks", "config", "cost", "data", "errors", "models", "tasks"}, None,
     "compute measures models and tasks; it knows nothing of runs, evaluations or their users"),
    ("trackers", {"", "config", "rundir", "errors"}, None, "trackers read the run folder, nothing else"),
    ("evaluation", None, USERS | {"hub"}, "evaluation reads every checkpoint format itself; export (hub) builds on it"),
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




# ---------------------------------------------------------------------------------------------- the module graph
def _module_names(src: Path, package: str) -> dict[str, Path]:
    return {_dotted(path, src)[0]: path for path in sorted((src / package).rglob("*.py"))}


def _dotted(path: Path, src: Path) -> tuple[str, list[str]]:
    """(dotted module name, the package parts its relative imports start from), relative to ``src``."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), parts[:-1]
    return ".".join(parts), parts[:-1]


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` lives in: the longest prefix of it that is a module (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or None


def _imports_of(path: Path, src: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """``(module, line, inside a function)`` for each package module ``path`` imports (``from m import name``
    imports ``m.name`` when that is a module, else ``m``)."""
    me, base = _dotted(path, src)
    package = me.split(".")[0]
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                stem = base[:len(base) - child.level + 1] if child.level else []
                module = ".".join(stem + ([child.module] if child.module else []))
                names = [f"{module}.{a.name}" for a in child.names]
            for name in names:
                target = _resolve(name, modules) if name.split(".")[0] == package else None
                if target is not None and target != me:
                    out.append((target, child.lineno, inside))
            visit(child, inside)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return out


def _edges(src: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules importing it runs. Importing ``a.b.c`` from outside package ``a.b`` first runs
    ``a/b/__init__.py``, so that counts as an edge to ``a.b`` too (a cycle through an ``__init__`` fails at
    import time just the same)."""
    modules = _module_names(src, package)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for me, path in modules.items():
        for target, _, _ in _imports_of(path, src, modules):
            edges[me].add(target)
            parts = target.split(".")
            for i in range(2, len(parts)):
                enclosing = ".".join(parts[:i])
                if not me.startswith(enclosing + "."):
                    edges[me].add(enclosing)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(found)


def _lazy_imports(src: Path, package: str) -> dict[str, set[str]]:
    """File (relative to the package) -> the package modules it imports inside a function (package prefix off)."""
    modules = _module_names(src, package)
    out: dict[str, set[str]] = {}
    for me, path in modules.items():
        for target, _, inside in _imports_of(path, src, modules):
            if inside:
                out.setdefault(path.relative_to(src / package).as_posix(), set()).add(
                    target.partition(".")[2] or package)
    return out


def _private_imports(src: Path, package: str) -> dict[str, set[str]]:
    """File -> ``module._name`` of every private name it imports from another module of the package."""
    modules = _module_names(src, package)
    out: dict[str, set[str]] = {}
    for me, path in modules.items():
        _, base = _dotted(path, src)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            stem = base[:len(base) - node.level + 1] if node.level else []
            module = ".".join(stem + ([node.module] if node.module else []))
            if module.split(".")[0] != package:
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and f"{module}.{alias.name}" not in modules:  # a private module is a module's name
                    out.setdefault(path.relative_to(src / package).as_posix(), set()).add(
                        f"{module.partition('.')[2]}.{alias.name}")
    return out


EDGES = _edges(SRC, "robustscale")

def test_the_module_graph_sees_lazy_and_package_cycles(tmp_path):
    # The checker itself, on a package with one cycle through a function-level import and one through an
    # __init__ (b imports a.x, which runs a/__init__, which imports b), and one clean module.
    pkg = tmp_path / "demo"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from ..b import g\n")
    (pkg / "a" / "x.py").write_text("def f():\n    return 1\n")
    (pkg / "b.py").write_text("from .a.x import f\n\ndef g():\n    return f()\n")
    (pkg / "c.py").write_text("def h():\n    from .d import k\n    return k()\n")
    (pkg / "d.py").write_text("def k():\n    from . import c\n    return c\n")
    (pkg / "e.py").write_text("from ._f import _hidden\nfrom .c import _also_hidden\n")
    (pkg / "_f.py").write_text("_hidden = 1\n")
    cycles = _cycles(_edges(tmp_path, "demo"))
    assert cycles == [["demo.a", "demo.b"], ["demo.c", "demo.d"]]
    assert _lazy_imports(tmp_path, "demo") == {"c.py": {"d"}, "d.py": {"c"}}
    assert _private_imports(tmp_path, "demo") == {"e.py": {"_f._hidden", "c._also_hidden"}}


def test_no_import_cycles():
    cycles = [" ".join(c) for c in _cycles(EDGES)]
    assert len(EDGES) > 50 and "robustscale.rundir" in EDGES["robustscale.trackers"]
    assert cycles == [], "import cycle (imports inside functions count)"


# ---------------------------------------------------------------------------------------------- allowed exceptions
# An intra-package import inside a function hides a dependency from the top of the module; a private name imported
# by another module is a public function that has not admitted it. What remains keeps a heavy third-party library
# (torch, timm, pandas, scipy) off a light command or option that does not need it; docs/architecture.md lists the
# same entries.

# file under src/robustscale -> (the package modules it imports inside functions, why)
LAZY_IMPORTS: dict[str, tuple[str, str]] = {
    "commands/runs.py": ("rundir scaling", "rundir imports torch (safetensors, the models) and scaling pandas and "
                                           "scipy: only `runs export` (atomic_write) and `runs import --paper` "
                                           "(load_paper_runs) pay for them; `runs list/show/sync` import neither"),
    "study/scaling.py": ("models", "robustscale.models imports torch and timm: only a spec with study.scaling.models "
                                   "pays for them"),
}

# file under src/robustscale -> (the private names it imports from other modules, why); none are left
PRIVATE_IMPORTS: dict[str, tuple[str, str]] = {}


def _unlisted_and_stale(found: dict[str, set[str]], allowed: dict[str, tuple[str, str]]) -> tuple[list, list]:
    listed = {f: set(names.split()) for f, (names, _) in allowed.items()}
    unlisted = sorted(f"{f}: {m}" for f, ms in found.items() for m in ms - listed.get(f, set()))
    stale = sorted(f"{f}: {m}" for f, ms in listed.items() for m in ms - found.get(f, set()))
    return unlisted, stale


def test_intra_package_imports_inside_functions_are_listed():
    unlisted, stale = _unlisted_and_stale(_lazy_imports(SRC, "robustscale"), LAZY_IMPORTS)
    assert not unlisted, "import these at the top of the module (or list them in LAZY_IMPORTS with the reason)"
    assert not stale, "no longer imported inside a function: delete from LAZY_IMPORTS"


def test_private_names_stay_in_their_module():
    unlisted, stale = _unlisted_and_stale(_private_imports(SRC, "robustscale"), PRIVATE_IMPORTS)
    assert not unlisted, "a private name imported by another module: make it public (or move the caller)"
    assert not stale, "no longer imported: delete from PRIVATE_IMPORTS"


def test_one_home_per_concept_has_no_stale_modules():
    # The old homes of moved concepts stay gone (robustscale.evaluation, train/, bench/, published_runs).
    for old in ("evaluate.py", "train.py", "bench.py", "scaling/paper.py", "study/paper.py"):
        assert not (PACKAGE / old).exists(), old
