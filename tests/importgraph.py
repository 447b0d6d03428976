"""The package's import graph, read from the source with ast (nothing is imported).

Used by tests that hold the architecture to its rules: the CLI has no import
cycle, ``router/`` never imports ``learning/``. Imports inside functions count
too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ruvllm_edge"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _resolve(current: str, is_pkg: bool, level: int, target: str | None) -> str:
    base = current.split(".")
    if not is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (``from x import y`` counts x.y if it is one)."""
    mods = modules()
    out: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                src = (_resolve(name, is_pkg, node.level, node.module) if node.level
                       else node.module or "")
                subs = {f"{src}.{a.name}" for a in node.names}
                deps.update(subs)
                if not subs <= set(mods):     # names from the module itself, not submodules
                    deps.add(src)
        out[name] = {d for d in deps if d in mods and d != name}
    return out


def reachable(g: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for d in g.get(todo.pop(), ()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def cycles_through(g: dict[str, set[str]], prefix: str) -> list[str]:
    """Modules in package ``prefix`` that can reach themselves again (are on a cycle)."""
    return sorted(m for m in g if (m == prefix or m.startswith(prefix + "."))
                  and m in reachable(g, m))
