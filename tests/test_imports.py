"""The import graph of ``eif``: no cycle, no import from a lower layer to a higher one, no eif import
inside a function (docs/architecture.md, "Layers").

Every ``import`` statement of every module counts, read with :mod:`ast` (nothing is imported): those at
module level, under ``if TYPE_CHECKING:`` (a type-only import still makes the importer depend on the
imported module's layer), inside functions and classes. ``from eif.a import b`` is an edge to the module
``eif.a.b`` when that is a module, else to ``eif.a``; importing ``eif.a.b`` also runs the package
``eif.a``, so it is an edge to that package too (unless the importer lies inside it). The stage registry
loads stage modules by name (``importlib``), which is no import statement and no edge.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "eif"

# eif's layers, lowest first (docs/architecture.md, "Layers"). A module may import modules of its own
# layer and of lower ones. A module belongs to the unit with the longest matching name (a package
# covers its submodules); every module must belong to one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("eif", "eif.utils", "eif.resolvers", "eif.stage_names"),  # no eif imports but these
    ("eif.settings",),  # typed settings, store-key declarations
    ("eif.data", "eif.losses", "eif.evaluation", "eif.logging", "eif.retrain", "eif.lds"),  # blocks
    ("eif.models", "eif.training"),  # models (their losses); the trainer, inference, test-set metrics
    ("eif.influence", "eif.mislabel"),  # attribution and detection on cached features
    # attribution methods; pages and tables of results; the W&B report of a sweep
    ("eif.methods", "eif.report", "eif.tables", "eif.dashboard"),
    ("eif.stages",),  # thin stages: settings and artifacts in, files out
    ("eif.config", "eif.resolve_auto"),  # the job: JobConfig, load_job, auto settings resolved
    ("eif.pipeline", "eif.sweep_outcome"),  # plans and runs a job; records a sweep's job outcomes
    ("eif.api",),  # the Python API on top of the pipeline
    ("eif.cli",),  # the command line: the top, imported by nothing in eif
)

# The eif imports inside a function that eif allows, both in the command line, to keep its startup
# free of torch: it reports a typo'd stage name before the pipeline (torch, faiss, every stage) is
# imported (tests/test_errors.py times it), and only `eif dashboard` pays for the dashboard's imports
# (torch through eif.utils.io, pandas through eif.logging: about 2 s).
STARTUP_DEFERRED = {("eif.cli", "eif.pipeline"), ("eif.cli", "eif.dashboard")}


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    in_function: bool
    direct: bool  # False: the package the named module lies in

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} ({module_path(self.importer)}:{self.line})"


def modules() -> dict[str, Path]:
    """Every module of eif by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = modules()


def module_path(name: str) -> str:
    return str(MODULES[name].relative_to(ROOT))


def _owner(name: str) -> str | None:
    """The eif module ``name`` refers to: itself, or the module defining it (``eif.a.func`` -> ``eif.a``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.Import | ast.ImportFrom, importer: str) -> Iterator[str]:
    """The eif modules one import statement names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the importer's package upwards
            package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
        ]
    for name in names:
        if name == "eif" or name.startswith("eif."):
            target = _owner(name)
            if target is not None:
                yield target


class _Imports(ast.NodeVisitor):
    def __init__(self, importer: str) -> None:
        self.importer = importer
        self.depth = 0  # functions entered
        self.edges: list[Edge] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def _add(self, node: ast.Import | ast.ImportFrom) -> None:
        for target in _targets(node, self.importer):
            packages = [".".join(target.split(".")[:k]) for k in range(2, target.count(".") + 1)]
            for imported in [target, *packages]:
                inside = self.importer == imported or self.importer.startswith(imported + ".")
                if not inside:
                    edge = Edge(self.importer, imported, node.lineno, self.depth > 0, imported == target)
                    self.edges.append(edge)

    visit_Import = _add
    visit_ImportFrom = _add


def edges() -> list[Edge]:
    """Every import edge between eif modules, once per statement."""
    out: set[Edge] = set()
    for name, path in MODULES.items():
        visitor = _Imports(name)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        out.update(visitor.edges)
    return sorted(out, key=lambda e: (e.importer, e.line, e.imported))


EDGES = edges()


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one node (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    nodes = sorted(set(graph) | {w for ws in graph.values() for w in ws})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.add(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def layer(module: str) -> int:
    """The layer of ``module``: that of the longest unit of :data:`LAYERS` that covers it."""
    best, where = "", -1
    for k, units in enumerate(LAYERS):
        for unit in units:
            if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best):
                best, where = unit, k
    return where


def package(module: str) -> str:
    """The subpackage (or top-level module) of eif a module belongs to: ``eif.influence.ihvp`` ->
    ``eif.influence``."""
    return ".".join(module.split(".")[:2])


def _shown(component: frozenset[str]) -> str:
    inner = [str(e) for e in EDGES if e.importer in component and e.imported in component]
    return "{" + ", ".join(sorted(component)) + "}: " + "; ".join(sorted(inner))


def test_the_graph_is_read() -> None:
    """The parser sees what is there: a known module-level, relative-free edge, a deferred one."""
    pairs = {(e.importer, e.imported, e.in_function) for e in EDGES}
    assert ("eif.pipeline", "eif.config", False) in pairs
    assert ("eif.cli", "eif.pipeline", True) in pairs
    assert ("eif.config", "eif.stages", False) in pairs  # the package, through eif.stages.mine
    assert len(MODULES) > 100 and len(EDGES) > 300


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for e in EDGES:
        graph.setdefault(e.importer, set()).add(e.imported)
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_shown(c) for c in found)


def test_no_cycles_between_packages() -> None:
    """Subpackages import each other in one direction only (e.g. report and tables)."""
    graph: dict[str, set[str]] = {}
    for e in EDGES:
        a, b = package(e.importer), package(e.imported)
        if a != b:
            graph.setdefault(a, set()).add(b)
    found = cycles(graph)
    assert not found, "package cycles:\n" + "\n".join(_package_arrows(c) for c in found)


def _package_arrows(component: frozenset[str]) -> str:
    """The package arrows inside a cycle of packages, each with one import that makes it."""
    first: dict[tuple[str, str], Edge] = {}
    for e in EDGES:
        pair = (package(e.importer), package(e.imported))
        if pair[0] != pair[1] and set(pair) <= component:
            first.setdefault(pair, e)
    return "; ".join(f"{a} -> {b} (e.g. {e})" for (a, b), e in sorted(first.items()))


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if layer(m) < 0] == []
    units = [u for units in LAYERS for u in units]
    assert len(units) == len(set(units))
    assert [u for u in units if u not in MODULES] == []


def test_no_import_goes_up_a_layer() -> None:
    upward = [e for e in EDGES if layer(e.imported) > layer(e.importer)]
    assert not upward, "imports from a lower layer to a higher one (docs/architecture.md, Layers):\n" + (
        "\n".join(f"{e} (layer {layer(e.importer)} -> {layer(e.imported)})" for e in upward)
    )


def test_no_eif_imports_inside_functions() -> None:
    """Function-level imports hide cycles and upward arrows; they are for optional dependencies only."""
    inside = {(e.importer, e.imported) for e in EDGES if e.in_function and e.direct}
    unexpected = [
        str(e)
        for e in EDGES
        if e.in_function and e.direct and (e.importer, e.imported) not in STARTUP_DEFERRED
    ]
    assert not unexpected, "eif imports inside functions (move them to the top):\n" + "\n".join(unexpected)
    stale = sorted(STARTUP_DEFERRED - inside)
    assert not stale, f"no longer imported inside a function, remove from STARTUP_DEFERRED: {stale}"
