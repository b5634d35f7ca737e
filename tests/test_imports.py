"""Imports flow one way: no package's modules import each other in a circle, no project import
hides inside a function (where a cycle would only show at run time), and models/ keeps its layers
(helpers never import a model; the builder never imports what builds on it)."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "datasets", "engine", "tools", "preprocess")
ENTRY_POINTS = ("run_finetune.py", "run_pretrain.py")


def _module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources():
    files = [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]
    return {_module_name(p): p for p in files + [REPO / e for e in ENTRY_POINTS]}


SOURCES = _sources()


def _targets(module, path, node):
    """The project modules an import statement loads (not the packages above ``module``, which
    Python has initialised before it)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[:len(package) - node.level + 1]
            base = ".".join(package + ([node.module] if node.module else []))
        # ``from pkg import name``: the submodule ``pkg.name`` if there is one, else pkg itself
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in SOURCES else base for a in node.names]
    out = set()
    for name in names:
        while name and name not in SOURCES:
            name = name.rpartition(".")[0]
        if name and name != module and not module.startswith(name + "."):
            out.add(name)
    return out


def _imports(module, path):
    """``(module-level imports, [(line, import) inside a function]``) of one source file."""
    tree = ast.parse(path.read_text(), str(path))
    top, hidden = set(), []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = _targets(module, path, child)
                if in_function:
                    hidden.extend((child.lineno, t) for t in sorted(targets))
                else:
                    top.update(targets)
            visit(child, inside)

    visit(tree, False)
    return top, hidden


GRAPH, HIDDEN = {}, {}
for _name, _path in SOURCES.items():
    GRAPH[_name], HIDDEN[_name] = _imports(_name, _path)


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_checks_see_the_imports(tmp_path):
    # the graph is built from the sources: a parser that saw nothing would pass the other tests
    assert len(SOURCES) > 60 and sum(map(len, GRAPH.values())) > 150
    assert {"models.factory", "models.keymap"} <= GRAPH["models.from_checkpoint"]
    assert "models.layers" in GRAPH["models.tpsbt"] and "engine.cli" in GRAPH["preprocess.common"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = "def f():\n    from engine.cli import UserError\n    from . import metrics\n    import numpy\n"
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    assert _imports("engine.probe", probe) == (set(), [(2, "engine.cli"), (3, "engine.metrics")])


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("package", PACKAGES + ("entry points",))
def test_no_project_import_inside_a_function(package):
    # Third-party imports inside functions are fine (optional or slow ones: peft, matplotlib, decord).
    hidden = {name: lines for name, lines in HIDDEN.items() if lines and
              (name.split(".")[0] == package or (package == "entry points" and "." not in name and
                                                 name not in PACKAGES))}
    assert hidden == {}


# models/, bottom to top: a module imports only modules of the layers below its own.
MODELS_LAYERS = [
    ("models._helpers", "models.variants", "models.layers", "models.flops"),
    ("models.tpsbt",),
    ("models.pretrain", "models.tuning", "models.videomae"),
    ("models.keymap",),
    ("models.factory",),
    ("models.from_checkpoint",),
    ("models",),
]


def test_models_keep_their_layers():
    layer_of = {m: i for i, layer in enumerate(MODELS_LAYERS) for m in layer}
    assert set(layer_of) == {m for m in SOURCES if m.split(".")[0] == "models"}, "a new module needs a layer"
    upward = [(m, t) for m in layer_of for t in GRAPH[m] if t.startswith("models") and layer_of[t] >= layer_of[m]]
    assert upward == []
    assert not {t for m in MODELS_LAYERS[0] for t in GRAPH[m]}  # the bottom imports nothing of the project
    # nothing of models/ reaches up into the packages built on it
    assert not {t for m in layer_of for t in GRAPH[m] if not t.startswith("models")}
