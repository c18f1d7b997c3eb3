"""The package layout holds: library users' imports stay light, the training spine and the
experiment wiring never pull in ImpHMR's model or losses (NeuHMR imports them), there are no import
cycles, and no module grows past ~500 lines without saying why at its top."""
import ast
import os
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"imphmr_jax": os.path.join(ROOT, "imphmr_jax"),
            "neuhmr_jax": os.path.join(ROOT, "neuhmr_jax"),
            "smpl_jax": os.path.join(ROOT, "third_party", "smpl_jax", "smpl_jax")}
HEAVY = ("tensorflow_datasets", "grain", "orbax", "optax", "matplotlib", "torch", "tensorflow")
MAX_LINES = 500
SIZE_REASON = "Why one module:"


def _loaded_after(imports):
    """The sys.modules of a fresh interpreter after `imports` (so earlier tests cannot leak)."""
    code = ("import sys\n" + "".join(f"import {m}\n" for m in imports)
            + "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return set(out.stdout.split())


def _has(loaded, prefix):
    return sorted(m for m in loaded if m == prefix or m.startswith(prefix + "."))


LIGHT = ["smpl_jax", "imphmr_jax.render", "imphmr_jax.geometry", "imphmr_jax.metrics"]


def test_library_imports_stay_light():
    """SMPL, rendering, cameras and metrics import without the data/training/plotting stack (all
    four in one fresh interpreter: if together they load none of it, neither does each)."""
    loaded = _loaded_after(LIGHT)
    heavy = {h: _has(loaded, h)[:3] for h in HEAVY if _has(loaded, h)}
    assert not heavy, f"import {', '.join(LIGHT)} pulls in {heavy}"


def test_spine_and_wiring_do_not_import_the_imphmr_model():
    """What NeuHMR builds on: the training spine and the experiment wiring."""
    spine = ["imphmr_jax.training." + m[:-3] for m in
             sorted(os.listdir(os.path.join(PACKAGES["imphmr_jax"], "training")))
             if m.endswith(".py") and m != "__init__.py"]
    loaded = _loaded_after(spine + ["imphmr_jax.experiment", "imphmr_jax.evaluation",
                                    "imphmr_jax.render.volume", "neuhmr_jax"])
    assert len(spine) >= 6
    for method_specific in ("imphmr_jax.models", "imphmr_jax.losses", "imphmr_jax.train",
                            "imphmr_jax.pretrained"):
        assert not _has(loaded, method_specific), method_specific


def _modules():
    """{dotted name: path} of every module of the three packages."""
    out = {}
    for pkg, root in PACKAGES.items():
        for dirpath, _, files in os.walk(root):
            for f in files:
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join([pkg] + rel)] = os.path.join(dirpath, f)
    return out


def _imports(path, name, modules):
    """Project modules `path` imports anywhere in its body (function-level imports included)."""
    is_pkg = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level + is_pkg]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_no_import_cycles():
    modules = _modules()
    graph = {m: _imports(p, m, modules) for m, p in modules.items()}
    # A package's __init__ importing its own submodules is how re-exports work, not a cycle.
    graph = {m: {t for t in deps if not (m and t.startswith(m + "."))} for m, deps in
             graph.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_large_modules_say_why():
    too_big = []
    for name, path in _modules().items():
        text = open(path, encoding="utf-8").read()
        n = text.count("\n")
        head = ast.get_docstring(ast.parse(text)) or ""
        if n > MAX_LINES and SIZE_REASON not in head:
            too_big.append(f"{name} ({n} lines)")
    assert not too_big, (f"modules over {MAX_LINES} lines without '{SIZE_REASON} ...' in their "
                         f"docstring: {too_big}")
