"""The package's architecture rules, checked statically (AST only: nothing is imported or run).

* no import cycle among lora_np's modules, counting imports inside functions and the package
  ``__init__`` that importing ``lora_np.pkg.mod`` runs first (below the top-level ``lora_np``);
* no ``import`` inside a function, except of an optional dependency (``OPTIONAL_IMPORTS``);
* base models import nothing from ``lora_np.lora`` or ``lora_np.quant`` (LoRA acts on a model from
  outside, so every model gets adapters, QLoRA and mixed-adapter batches without code of its own);
* no function longer than ``MAX_FUNCTION_LINES`` lines; ``backend.py`` at most ``MAX_BACKEND_LINES``;
* no module assigns an attribute of an imported module or class at import time (module top level),
  so importing one module never changes what another does;
* no ``isinstance(x, <family class>)`` outside ``lora_np/models/``: io/, lora/ and app/ ask the
  family's spec (``models.family_of``), so a new family needs no new branch there;
* one key/value cache class in the whole package (``models/cache.py``'s ``KVCache``).

Each failure names the file and the function or line.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lora_np"
OPTIONAL_IMPORTS = {"cupy", "cupyx", "threadpoolctl", "mpi4py", "gguf"}  # optional: imported where used
BASE_MODELS = ("lora_np/models/gpt2.py", "lora_np/models/llama.py")
ADAPTER_PACKAGES = ("lora_np.lora", "lora_np.quant")
MAX_FUNCTION_LINES = 50
MAX_BACKEND_LINES = 160


def _modules():
    """module name ('lora_np.lora.layer') -> (path relative to ROOT, parsed tree), for every .py file."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), filename=str(path)))
    return out


MODULES = _modules()


def _package_of(name):
    """The package a module's relative imports are resolved against."""
    path, _ = MODULES[name]
    return name if path.endswith("__init__.py") else name.rpartition(".")[0]


def _imported_names(name, node):
    """The absolute dotted names an Import/ImportFrom node names (a ``from x import y`` gives x.y too,
    which only counts when x.y is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = _package_of(name).split(".")
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _ancestors(name):
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _imports(name, tree):
    """[(imported lora_np module, line)] of every import anywhere in the module, with the packages
    (below ``lora_np``) that Python initialises before it; the importer's own packages are already
    initialised when it runs, so they are no dependency."""
    edges = []
    own = _ancestors(name)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _imported_names(name, node):
                for ancestor in _ancestors(target) - own:
                    if ancestor in MODULES and ancestor.count("."):
                        edges.append((ancestor, node.lineno))
    return edges


def _import_graph():
    return {name: sorted({t for t, _ in _imports(name, tree)}) for name, (_, tree) in MODULES.items()}


def _find_cycle(graph):
    """One import cycle as a list of module names (first == last), or None (iterative DFS)."""
    state = {}
    for start in graph:
        if start in state:
            continue
        stack, path = [(start, iter(graph[start]))], [start]
        state[start] = "open"
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = "done"
            elif state.get(child) == "open":
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = "open"
                stack.append((child, iter(graph.get(child, ()))))
                path.append(child)
    return None


def _functions(tree):
    """(qualified name, node) of every function and method, nested ones included."""
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((prefix + child.name, child))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def test_the_checks_see_the_package():
    assert "lora_np.lora.layer" in MODULES and "lora_np.autograd" in MODULES
    graph = _import_graph()
    assert "lora_np.autograd" in graph["lora_np.lora.layer"]


def test_the_cycle_finder_finds_cycles():
    assert _find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None


def test_no_import_cycles():
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{m} ({MODULES[m][0]})" for m in cycle)


def _imports_in_functions(name, path, tree):
    """'path:line in function(): import ...' for every import inside a function that is not of an
    optional dependency (relative imports never are)."""
    found = []
    for qualname, fn in _functions(tree):
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                roots = {n.split(".")[0] for n in _imported_names(name, node)}
                if getattr(node, "level", 0) or not roots <= OPTIONAL_IMPORTS:
                    found.append(f"{path}:{node.lineno} in {qualname}(): {ast.unparse(node)}")
    return sorted(set(found))


def test_the_function_import_check_sees_late_imports():
    MODULES["lora_np.fake"] = ("lora_np/fake.py", None)
    try:
        tree = ast.parse("def f():\n    import cupy\n    from threadpoolctl import x\n"
                         "class C:\n    def g(self):\n        from .mixed import y\n        import json\n")
        found = _imports_in_functions("lora_np.fake", "lora_np/fake.py", tree)
    finally:
        del MODULES["lora_np.fake"]
    assert found == ["lora_np/fake.py:6 in C.g(): from .mixed import y", "lora_np/fake.py:7 in C.g(): import json"]


def test_imports_inside_functions_are_optional_dependencies_only():
    offenders = [line for name, (path, tree) in MODULES.items() for line in _imports_in_functions(name, path, tree)]
    assert not offenders, ("imports inside functions (allowed only for " + ", ".join(sorted(OPTIONAL_IMPORTS))
                           + "):\n  " + "\n  ".join(offenders))


@pytest.mark.parametrize("model_path", BASE_MODELS)
def test_base_models_import_nothing_from_lora_or_quant(model_path):
    matches = [name for name, (path, _) in MODULES.items() if path == model_path]
    if not matches:
        pytest.skip(f"{model_path} does not exist")
    name = matches[0]
    offenders = [f"{model_path}:{line} imports {target}" for target, line in _imports(name, MODULES[name][1])
                 if target.startswith(ADAPTER_PACKAGES)]
    assert not offenders, "a base model must not know about adapters:\n  " + "\n  ".join(offenders)


def test_no_function_is_longer_than_the_limit():
    long = []
    for _, (path, tree) in MODULES.items():
        for qualname, fn in _functions(tree):
            lines = fn.end_lineno - fn.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{path}:{fn.lineno} {qualname}() is {lines} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n  " + "\n  ".join(long)


def test_backend_is_the_switch_alone():
    lines = len((PACKAGE / "backend.py").read_text().splitlines())
    assert lines <= MAX_BACKEND_LINES, f"lora_np/backend.py is {lines} lines (at most {MAX_BACKEND_LINES})"


def _top_level_statements(tree):
    """Statements that run at import: the module body, descending into if/try/with/for blocks
    (not into functions or class bodies, whose own attributes are the class's business)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                pending.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            pending.extend(node.body)


def _imported_bindings(tree):
    """Names a module binds by importing (modules, classes, functions of other modules)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
    return names


def _assigned_roots(target):
    """For ``a.b[c].d = ...`` the root name ``a`` when the target is an attribute or item of it."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return [r for t in target.elts for r in _assigned_roots(t)]
    if isinstance(target, (ast.Attribute, ast.Subscript)):
        node = target
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        return [node.id] if isinstance(node, ast.Name) else []
    return []


def _statements_run_at_import(tree):
    """The module body's statements, and those of the module's own functions that the body calls
    (``_install()`` at the bottom of a module runs at import just as its lines would)."""
    local = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for node in _top_level_statements(tree):
        yield node
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name) \
                and node.value.func.id in local:
            yield from ast.walk(local[node.value.func.id])


def _assignment_targets(node):
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        return [node.target]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" and node.args:
        return [ast.Attribute(value=node.args[0], attr="?")]  # setattr(imported, name, value)
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        return _assignment_targets(node.value)
    return []


def _changes_at_import(path, tree):
    imported = _imported_bindings(tree)
    offenders = []
    for node in _statements_run_at_import(tree):
        for root in (r for t in _assignment_targets(node) for r in _assigned_roots(t)):
            if root in imported:
                offenders.append(f"{path}:{node.lineno} changes {root!r} at import: {ast.unparse(node)[:100]}")
    return list(dict.fromkeys(offenders))  # a setattr(...) is seen as a statement and as its call


def test_the_import_time_check_sees_patching():
    patching = ast.parse("from .weight import W\nfrom . import lib\nimport os\nW.kind = 1\nlib.TABLE[W] = 2\n"
                         "def _install():\n    setattr(W, 'f', len)\n_install()\nos.environ['X'] = '1'\n")
    found = _changes_at_import("m.py", patching)
    assert [line.split(" changes ")[0] for line in found] == ["m.py:4", "m.py:5", "m.py:7", "m.py:9"]
    clean = ast.parse("from .weight import W\nTABLE = {W: 1}\nclass X:\n    kind = W\ndef f():\n    W.kind = 2\n")
    assert _changes_at_import("m.py", clean) == []


# The one deliberate exception: ``lora_np/ops/__init__.py`` gives Tensor its operator syntax
# (``x + y`` is ``ops.add``, ``x @ w`` is ``ops.matmul``). The operators *are* the ops, which build
# Tensors, so autograd.py cannot define them without importing ops (a cycle); PyTorch attaches its
# Tensor methods the same way. It is the package's own class, done once, in the package's __init__,
# and autograd.Tensor's docstring says so. Nothing else may do it.
ALLOWED_AT_IMPORT = {("lora_np/ops/__init__.py", "Tensor")}


def test_no_module_changes_another_at_import():
    offenders = [line for name, (path, tree) in MODULES.items() for line in _changes_at_import(path, tree)
                 if (path, line.split(" changes ")[1].split("'")[1]) not in ALLOWED_AT_IMPORT]
    assert not offenders, ("modules that change an imported module or class at import:\n  "
                           + "\n  ".join(offenders))


def _family_classes():
    """The model and config class names every ``ModelFamily(...)`` in lora_np/models/ names."""
    names = set()
    for path, tree in MODULES.values():
        if path.startswith("lora_np/models/"):
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ModelFamily":
                    names |= {kw.value.id for kw in node.keywords if kw.arg in ("model_class", "config_class")}
    return names


def _isinstance_of(tree, names):
    """(line, source) of every isinstance(x, C) or isinstance(x, (..., C, ...)) with C in ``names``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
            classes = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            if any((getattr(c, "id", None) or getattr(c, "attr", None)) in names for c in classes):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_family_check_sees_isinstance():
    assert {"GPT", "GPTConfig", "Llama", "LlamaConfig"} <= _family_classes()
    tree = ast.parse("isinstance(m, Llama)\nisinstance(m, (int, ln.GPT))\nisinstance(m, Linear)\n")
    assert [line for line, _ in _isinstance_of(tree, _family_classes())] == [1, 2]


def test_no_family_dispatch_outside_models():
    names = _family_classes()
    offenders = [f"{path}:{line} {source}" for path, tree in MODULES.values() if not path.startswith("lora_np/models/")
                 for line, source in _isinstance_of(tree, names)]
    assert not offenders, ("isinstance on a model family outside lora_np/models/ (ask models.family_of(x) for its "
                           "spec instead):\n  " + "\n  ".join(offenders))


def test_one_cache_class():
    caches = [f"{path}:{node.lineno} {node.name}" for path, tree in MODULES.values() for node in ast.walk(tree)
              if isinstance(node, ast.ClassDef) and "cache" in node.name.lower()]
    assert caches == ["lora_np/models/cache.py:" + caches[0].split(":")[1].split()[0] + " KVCache"], (
        "one key/value cache class, models/cache.py's KVCache; found:\n  " + "\n  ".join(caches))
