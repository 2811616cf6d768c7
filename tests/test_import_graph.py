"""No import circles in poisonlab: the module graph, read with ast, has no strongly connected component.

Every ``import``/``from ... import`` statement counts, at any depth (inside functions too), except
those under ``if TYPE_CHECKING:``. An edge goes to each module a statement names: ``import a.b.c``
-> ``a.b.c`` (not its parents, which Python also runs); ``from a.b import c`` -> ``a.b.c`` when c is
a module, else ``a.b`` (c is then a name defined by ``a/b/__init__.py``). Relative imports are resolved. A module importing its own package
(``from poisonlab.fl.attacks import ATTACKS`` inside ``fl/attacks/ipm.py``) is an edge like any
other: with the package's ``__init__`` importing the member back, that is a circle (the pattern a
leaf ``registry.py`` module avoids).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "poisonlab"


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package directory root."""
    mods = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes in the body of an ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) block."""
    skip = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and (
                (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
                or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")):
            skip.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return skip


def _known(name: str, mods: dict[str, Path]) -> str | None:
    """The module name itself, or its longest prefix that is a module of the package (None: outside)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _base(module: str, node: ast.ImportFrom, mods: dict[str, Path]) -> str:
    """The absolute module a ``from`` statement imports from (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    package = module if mods[module].name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def named_modules(module: str, node: ast.Import | ast.ImportFrom, mods: dict[str, Path]) -> set[str]:
    """The package's modules one import statement names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = _base(module, node, mods)
        subs = [f"{base}.{alias.name}" for alias in node.names]
        names = [sub if sub in mods else base for sub in subs]  # a submodule, else an attribute of base
    return {m for m in (_known(n, mods) for n in names) if m is not None and m != module}


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports, for the package directory root."""
    mods = module_files(root)
    graph = {}
    for module, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _type_checking_only(tree)
        graph[module] = {target for node in ast.walk(tree)
                         if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skip
                         for target in named_modules(module, node, mods)}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative), sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def assert_no_circles(root: Path) -> None:
    """Fail listing every import circle among the modules of the package directory root."""
    found = circles(import_graph(root))
    assert not found, f"{len(found)} import circle(s):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_poisonlab_has_no_import_circles():
    assert_no_circles(PACKAGE)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "fake"


def test_the_checker_finds_circles_in_a_fake_package(tmp_path):
    pkg = _write(tmp_path, {
        "fake/__init__.py": "",
        "fake/a.py": "def f():\n    from fake import b, VALUE  # inside a function: counts\n",
        "fake/b.py": "from .c import thing\n",
        "fake/c.py": "import fake.a\nthing = 1\n",
        "fake/kinds/__init__.py": "from fake.kinds import member  # the package imports its member ...\n",
        "fake/kinds/member.py": "from fake.kinds import REGISTRY  # ... which imports the package back\n",
        "fake/leaf.py": "x = 1\n",
    })
    graph = import_graph(pkg)
    assert graph["fake.a"] == {"fake", "fake.b"} and graph["fake.b"] == {"fake.c"} and graph["fake.c"] == {"fake.a"}
    assert circles(graph) == [["fake.a", "fake.b", "fake.c"], ["fake.kinds", "fake.kinds.member"]]
    try:
        assert_no_circles(pkg)
    except AssertionError as err:
        assert "2 import circle(s)" in str(err) and "fake.a <-> fake.b <-> fake.c" in str(err)
    else:
        raise AssertionError("assert_no_circles passed on a package with circles")


def test_type_checking_imports_do_not_count_and_a_leaf_registry_breaks_the_circle(tmp_path):
    pkg = _write(tmp_path, {
        "fake/__init__.py": "",
        "fake/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fake.b import B\nelse:\n    import fake.leaf\n",
        "fake/b.py": "import fake.a\n",
        "fake/leaf.py": "",
        "fake/kinds/__init__.py": "from fake.kinds.registry import REGISTRY\nfrom fake.kinds import member\n",
        "fake/kinds/other.py": "from fake.kinds import member  # a submodule: no edge to fake.kinds\n",
        "fake/kinds/registry.py": "REGISTRY = {}\n",
        "fake/kinds/member.py": "from fake.kinds.registry import REGISTRY\n",
    })
    graph = import_graph(pkg)
    assert graph["fake.a"] == {"fake.leaf"}  # the TYPE_CHECKING body is skipped, its else branch is not
    assert graph["fake.kinds.member"] == {"fake.kinds.registry"}  # the parent package is not an edge by itself
    assert graph["fake.kinds.other"] == {"fake.kinds.member"}
    assert circles(graph) == []
    assert_no_circles(pkg)
