"""The dependency rules (README "Layout"), from the source: every import statement of every module,
those inside functions too, walked with `ast`.

* No cycle between files.
* No module imports a binary (a module with an `if __name__ == "__main__":` block).
* Packages import one way: `common` imports nothing of the project; `layers` only `common`;
  `trainer` no model family; `data` no model package; `noise2music` not `mulan`; nothing imports
  `music_eval`, `pseudo_labels` only `music_eval` does.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("common", "layers", "trainer", "data", "mulan", "pseudo_labels", "noise2music", "music_eval", "configs")
# package -> the project packages it may import
ALLOWED = {
    "common": set(),
    "configs": set(),
    "layers": {"common"},
    "trainer": {"common", "configs"},
    "data": {"common"},
    "mulan": {"common", "layers", "trainer", "data"},
    "noise2music": {"common", "layers", "trainer", "data"},
    "pseudo_labels": {"common", "trainer", "data", "mulan"},
    "music_eval": {"common", "layers", "trainer", "data", "mulan", "pseudo_labels"},
}


def _modules() -> dict[str, str]:
    mods = {}
    for pkg in PACKAGES:
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                    mods[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, f)
    return mods


def _graph():
    mods = _modules()

    def resolve(name):  # the longest prefix that is a project module
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in mods:
                return ".".join(parts[:i])
        return None

    edges, binaries = {m: set() for m in mods}, set()
    for m, path in mods.items():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        package = m if path.endswith("__init__.py") else m.rpartition(".")[0]
        for node in ast.walk(tree):
            if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                    and getattr(node.test.left, "id", None) == "__name__"):
                binaries.add(m)
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" for a in node.names]   # a module, or a name in `base`
            for t in targets:
                r = resolve(t)
                if r and r != m:
                    edges[m].add(r)
    return edges, binaries


def test_there_are_modules_to_check():
    edges, binaries = _graph()
    assert len(edges) > 80 and {"mulan.train", "noise2music.sample", "music_eval.evaluate"} <= binaries


def test_no_import_cycle():
    edges, _ = _graph()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_imports_a_binary():
    edges, binaries = _graph()
    bad = sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts if t in binaries)
    assert not bad, f"binaries imported as libraries (move what they share into a library): {bad}"


def test_packages_import_one_way():
    edges, _ = _graph()
    bad = sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts
                 if t.split(".")[0] != m.split(".")[0] and t.split(".")[0] not in ALLOWED[m.split(".")[0]])
    assert not bad, f"imports against the dependency direction: {bad}"
