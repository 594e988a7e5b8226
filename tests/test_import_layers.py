"""dplab's imports run one way, by book part, and never reach into another module's privates.

The layers (a package may import only those listed for it; ``base`` is the argument checks and
atomic file writing every layer uses)::

    ops <- optics <- render <- xin                 (the optics half of the book)
    ops <- models <- training <- eval <- cli/book  (the network half)

with ``metrics`` and ``data`` just above ``ops``. The test reads the source with :mod:`ast`,
so it sees imports inside functions too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dplab"

#: package -> the packages it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "ops": {"base"},
    "metrics": {"base", "ops"},
    "data": {"base", "ops"},
    "optics": {"base", "ops", "metrics"},
    "render": {"base", "ops", "data", "optics"},
    "xin": {"base", "ops", "metrics", "data", "optics", "render"},
    "models": {"base", "ops"},
    "training": {"base", "ops", "metrics", "data", "models"},
    "eval": {"base", "ops", "metrics", "data", "optics", "render", "xin", "models", "training"},
    "cli": {"base", "ops", "metrics", "data", "optics", "render", "xin", "models", "training", "eval"},
    "book": {"base", "ops", "metrics", "data", "optics", "render", "xin", "models", "training", "eval"},
}
#: top-level modules (``dplab/<name>.py``) that form the base layer.
BASE_MODULES = {"dplab", "dplab._validate", "dplab._io", "dplab._provenance", "dplab.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> str:
    if module in BASE_MODULES:
        return "base"
    return module.split(".")[1]


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = all_modules()


def resolve(target: str) -> str | None:
    """The dplab module an import statement loads (``dplab.a.b`` or its package)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def imports_of(path: Path):
    """Yield ``(line, imported module, imported names, aliases)`` for each dplab import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, None, [a.name for a in node.names], {}
            elif node.module and (node.module == "dplab" or node.module.startswith("dplab.")):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    if sub in MODULES:  # ``from dplab.x import module``
                        yield node.lineno, sub, [], {alias.asname or alias.name: sub}
                    else:
                        yield node.lineno, node.module, [alias.name], {}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dplab"):
                    yield node.lineno, alias.name, [], {alias.asname or alias.name.split(".")[0]: alias.name}


def private_attribute_uses(path: Path, aliases: dict[str, str]):
    """``alias._name`` where ``alias`` is another dplab module (a private reach by attribute)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            yield node.lineno, aliases[node.value.id], node.attr


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for _, target, _, _ in imports_of(path):
            mod = resolve(target) if target else None
            if mod and mod != name:
                edges[name].add(mod)
    return edges


def test_imports_are_absolute():
    relative = [f"{name}:{line}" for name, path in MODULES.items()
                for line, target, _, _ in imports_of(path) if target is None]
    assert not relative, "use absolute imports (from dplab.pkg.module import name): " + ", ".join(relative)


def test_no_private_names_across_modules():
    bad = []
    for name, path in MODULES.items():
        aliases = {}
        for line, target, names, alias in imports_of(path):
            aliases.update(alias)
            mod = resolve(target) if target else None
            if mod is None or mod == name:
                continue
            bad += [f"{name}:{line} imports {n} from {mod}" for n in names
                    if n.startswith("_") and not n.startswith("__")]
        bad += [f"{name}:{line} uses {mod}.{attr}" for line, mod, attr in private_attribute_uses(path, aliases)
                if mod != name]
    assert not bad, "private names reached from another module:\n" + "\n".join(bad)


def test_layer_order():
    bad = []
    for name, targets in graph().items():
        src = layer(name)
        for target in targets:
            dst = layer(target)
            if dst != src and dst not in ALLOWED[src] and name != "dplab.__main__":
                bad.append(f"{name} ({src}) imports {target} ({dst})")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
])
def test_cycle_finder(edges, expected):
    assert find_cycle(edges) == expected


def test_no_module_is_too_long():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 500}
    assert not long, f"split these modules (over 500 lines): {long}"
